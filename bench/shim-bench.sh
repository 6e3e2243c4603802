#!/usr/bin/env bash
# shim-bench.sh — what the LD_PRELOAD shim costs (issue 5's performance bar).
#
#   1. start-up: `vrift run --manifest M -- true` with a 64k-entry manifest vs plain `true`
#      (bar: < 5 ms added);
#   2. a require-heavy node workload (200 modules of a corpus) on the virtual tree vs the
#      real tree (bar: < 1.3x);
#   3. stat-heavy loops (python os.stat and node fs.statSync over every file, `find -type f`)
#      on the virtual tree vs the real tree (bar: < 1.3x).
#
# usage: bench/shim-bench.sh [--corpus DIR] [--runs N]
#   --corpus DIR  a directory holding node_modules (default: an installed xsmall corpus:
#                 ../corpora/xsmall, bench/corpora/xsmall, or installed with
#                 ../shared/bench/make-corpus.sh xsmall)
#   --runs N      repetitions per measurement; the best (minimum) time is reported, which
#                 is the least disturbed by other load on the machine (default 15)
# Env: VRIFT (default target/release/vrift; the shim must sit beside it), WORK (scratch dir).
# Needs: python3, node (parts 2 and 3 are skipped without node).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
VRIFT=${VRIFT:-$repo/target/release/vrift}
RUNS=15
CORPUS=""
while [ $# -gt 0 ]; do
    case $1 in
        --corpus) CORPUS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "shim-bench: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$VRIFT" ] || { echo "shim-bench: $VRIFT not built (cargo build --release)" >&2; exit 1; }
[ -f "$(dirname "$VRIFT")/libvrift_shim.so" ] || [ -n "${VRIFT_SHIM:-}" ] || { echo "shim-bench: libvrift_shim.so missing beside $VRIFT" >&2; exit 1; }

WORK=${WORK:-$(mktemp -d /tmp/vrift-shim-bench.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
STORE=$WORK/store
export VR_THE_SOURCE=$STORE
unset VRIFT_UPPER VRIFT_MANIFESTS VRIFT_STORE

# best_ms CMD...: runs CMD $RUNS times, prints the best wall time and the best CPU time
# (user + system of the whole process tree) in ms: "WALL CPU". CPU time is what a busy
# machine (2 shared cores) disturbs least.
best_ms() {
    python3 - "$RUNS" "$@" <<'EOF'
import os, resource, subprocess, sys, time
n = int(sys.argv[1]); cmd = sys.argv[2:]
walls, cpus = [], []
for _ in range(n):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    walls.append((time.perf_counter() - t) * 1000)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpus.append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000)
print(f"{min(walls):.2f} {min(cpus):.2f}")
EOF
}

# best_out CMD...: runs CMD $RUNS times; each run prints "WALL CPU" (ms) last; the best of each.
best_out() {
    local vals=()
    for _ in $(seq "$RUNS"); do vals+=("$("$@" | tail -1)"); done
    printf '%s\n' "${vals[@]}" | python3 -c 'import sys; r=[l.split() for l in sys.stdin if l.strip()]; print(f"{min(float(x[0]) for x in r):.2f} {min(float(x[1]) for x in r):.2f}")'
}

# report LABEL "REAL_WALL REAL_CPU" "VIRT_WALL VIRT_CPU"
report() {
    python3 - "$@" <<'EOF'
import sys
label = sys.argv[1]
rw, rc = map(float, sys.argv[2].split())
vw, vc = map(float, sys.argv[3].split())
print(f"{label}: wall real {rw:.1f} ms, virtual {vw:.1f} ms (x{vw/rw:.2f}) | cpu real {rc:.1f} ms, virtual {vc:.1f} ms (x{vc/rc:.2f}) | bar x1.3")
EOF
}

echo "== vrift shim benchmark ($(nproc) cores, runs=$RUNS, $(date -u +%FT%TZ))"

# ---- 1. start-up with a 64k-entry manifest ---------------------------------------------
python3 - "$WORK/tree64k" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(256):
    p = os.path.join(root, f"pkg{d:03}", "lib")
    os.makedirs(p, exist_ok=True)
    for f in range(254):
        with open(os.path.join(p, f"m{f:03}.js"), "w") as fh:
            fh.write(f"module.exports = {d * 1000 + f};\n")
EOF
"$VRIFT" --no-progress ingest "$WORK/tree64k" -o "$WORK/m64k.vrm" >/dev/null
entries=$(find "$WORK/tree64k" | wc -l)
t_true=$(best_ms true)
t_run=$(best_ms "$VRIFT" run --manifest "$WORK/m64k.vrm" -- true)
t_pre=$(best_ms env LD_PRELOAD="$(dirname "$VRIFT")/libvrift_shim.so" VRIFT_MANIFESTS="$WORK/m64k.vrm" VRIFT_STORE="$STORE" true)
python3 - "$entries" "$t_true" "$t_run" "$t_pre" <<'EOF'
import sys
n = sys.argv[1]
(tw, tc), (rw, rc), (pw, pc) = (map(float, a.split()) for a in sys.argv[2:5])
print(f"start-up ({n}-entry manifest), best of runs: true: wall {tw:.2f} ms, cpu {tc:.2f} ms | "
      f"vrift run -- true: wall {rw:.2f} ms (+{rw-tw:.2f}), cpu {rc:.2f} ms (+{rc-tc:.2f}) | "
      f"true with the shim preloaded: wall {pw:.2f} ms (+{pw-tw:.2f}), cpu {pc:.2f} ms (+{pc-tc:.2f}) | bar +5 ms")
EOF

if ! command -v node >/dev/null; then
    echo "node not installed: skipping the node and stat workloads"
    exit 0
fi

# ---- corpus ---------------------------------------------------------------------------------
if [ -z "$CORPUS" ]; then
    for c in "$repo/../corpora/xsmall" "$repo/bench/corpora/xsmall"; do
        if [ -f "$c/node_modules/lodash/package.json" ]; then CORPUS=$c; break; fi
    done
fi
if [ -z "$CORPUS" ]; then
    CORPUS=$WORK/corpus
    bash "$repo/../shared/bench/make-corpus.sh" xsmall "$CORPUS" >&2
fi
REAL=$WORK/real
VIRT=$WORK/virt
mkdir -p "$REAL" "$VIRT"
cp -r "$CORPUS/node_modules" "$REAL/node_modules"
cp -r "$CORPUS/node_modules" "$VIRT/node_modules"
"$VRIFT" --no-progress ingest "$VIRT/node_modules" -o "$WORK/nm.vrm" --mode phantom >/dev/null
chmod -R u+w "$VIRT/node_modules" 2>/dev/null || true
rm -rf "$VIRT/node_modules"
files=$(find "$REAL/node_modules" -type f | wc -l)

# ---- 2. require-heavy node ------------------------------------------------------------------
cat > "$WORK/require.js" <<'EOF'
// Loads up to 200 modules of node_modules (top-level packages, then their files), prints ms.
const fs = require('fs'), path = require('path');
const nm = path.join(process.argv[2], 'node_modules');
const t0 = process.hrtime.bigint();
const c0 = process.cpuUsage();
let loaded = 0;
const names = [];
for (const n of fs.readdirSync(nm).sort()) {
  if (n.startsWith('.')) continue;
  if (n.startsWith('@')) { for (const s of fs.readdirSync(path.join(nm, n)).sort()) names.push(n + '/' + s); }
  else names.push(n);
}
for (const n of names) {
  if (loaded >= 200) break;
  try { require(path.join(nm, n)); loaded++; } catch (e) { /* packages without a CommonJS entry */ }
}
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
const c = process.cpuUsage(c0);
console.error(`loaded ${loaded} modules`);
console.log(ms.toFixed(2), ((c.user + c.system) / 1000).toFixed(2));
EOF
req_real=$(best_out node "$WORK/require.js" "$REAL")
req_virt=$(best_out "$VRIFT" run --manifest "$WORK/nm.vrm" -- node "$WORK/require.js" "$VIRT")
loaded=$(node "$WORK/require.js" "$REAL" 2>&1 >/dev/null | awk '{print $2}')
report "node require of $loaded modules ($files files)" "$req_real" "$req_virt"

# ---- 3. stat-heavy loops ----------------------------------------------------------------------
cat > "$WORK/stat.py" <<'EOF'
import os, sys, time
paths = []
for d, dirs, fs in os.walk(os.path.join(sys.argv[1], "node_modules")):
    paths.extend(os.path.join(d, f) for f in fs)
t, c = time.perf_counter(), time.process_time()
for _ in range(3):
    for p in paths:
        os.stat(p)
        os.lstat(p)
print(f"{(time.perf_counter() - t) * 1000:.2f} {(time.process_time() - c) * 1000:.2f}")
EOF
cat > "$WORK/stat.js" <<'EOF'
const fs = require('fs'), path = require('path');
const paths = [];
(function walk(d) { for (const e of fs.readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else paths.push(p); } })(path.join(process.argv[2], 'node_modules'));
const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
for (let i = 0; i < 3; i++) for (const p of paths) { fs.statSync(p); fs.existsSync(p + '.missing'); }
const c = process.cpuUsage(c0);
console.log((Number(process.hrtime.bigint() - t0) / 1e6).toFixed(2), ((c.user + c.system) / 1000).toFixed(2));
EOF
py_real=$(best_out python3 "$WORK/stat.py" "$REAL")
py_virt=$(best_out "$VRIFT" run --manifest "$WORK/nm.vrm" -- python3 "$WORK/stat.py" "$VIRT")
report "python os.stat+os.lstat of every file x3" "$py_real" "$py_virt"
js_real=$(best_out node "$WORK/stat.js" "$REAL")
js_virt=$(best_out "$VRIFT" run --manifest "$WORK/nm.vrm" -- node "$WORK/stat.js" "$VIRT")
report "node fs.statSync + existsSync(miss) of every file x3" "$js_real" "$js_virt"
find_real=$(best_ms find "$REAL/node_modules" -type f)
find_virt=$(best_ms "$VRIFT" run --manifest "$WORK/nm.vrm" -- find "$VIRT/node_modules" -type f)
report "find -type f (whole process, vrift run start-up included)" "$find_real" "$find_virt"
