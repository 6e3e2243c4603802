#!/usr/bin/env bash
# metrics-overhead.sh — what the --metrics-* flags cost an ingest (issue 4: must be < 3%).
#
# usage: bench/metrics-overhead.sh [-n ROUNDS] [--cold-rounds N] CORPUS_NODE_MODULES [VRIFT [BASELINE_VRIFT]]
#
# Interleaves runs with and without `--metrics-textfile F --metrics-push URL
# --metrics-listen 127.0.0.1:0` (the Pushgateway is a real `prometheus-pushgateway` on a free
# loopback port when installed; otherwise the push flag is left out) and prints medians:
#   cold   fresh `cp -a` of the corpus into a fresh store (the copy is not timed)
#   nocache  re-ingest of the same tree with --no-cache (every file hashed again, all dedup hits)
#   warm   re-ingest without changes (nothing hashed: fixed costs dominate)
# With BASELINE_VRIFT (e.g. a build of the commit before metrics) a third arm runs that
# binary without flags in the nocache and warm rounds, to see the cost of the extra
# per-outcome byte counters (cold rounds, which copy the whole corpus, stay two-armed).
# Times are whole-process wall and CPU (user+sys) times (setup, endpoint, textfile and push
# included); on a shared machine CPU time is the steadier of the two.
# The machine may be shared: rounds alternate the arms, and medians are reported.
set -euo pipefail

rounds=9
cold_rounds=5
while [ $# -gt 0 ]; do
    case "$1" in
        -n) rounds=$2; shift 2 ;;
        --cold-rounds) cold_rounds=$2; shift 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "usage: $0 [-n ROUNDS] [--cold-rounds N] CORPUS [VRIFT [BASELINE]]" >&2; exit 2; }
corpus=$(realpath "$1")
vrift=$(realpath "${2:-target/release/vrift}")
base=${3:+$(realpath "$3")}

work=$(mktemp -d /tmp/vrift-metrics-overhead.XXXXXX)
pg_pid=
cleanup() {
    [ -n "$pg_pid" ] && kill "$pg_pid" 2>/dev/null || true
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

push=()
if command -v prometheus-pushgateway >/dev/null; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    prometheus-pushgateway --web.listen-address="127.0.0.1:$port" \
        --persistence.file="$work/pg.data" >"$work/pg.log" 2>&1 &
    pg_pid=$!
    for _ in $(seq 50); do
        curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && break
        sleep 0.1
    done
    push=(--metrics-push "http://127.0.0.1:$port")
fi
flags=(--metrics-textfile "$work/vrift.prom" "${push[@]}" --metrics-listen 127.0.0.1:0)

# run ARM_BINARY STORE TREE OUT [flags...] -> prints "wall_seconds cpu_seconds" (cpu: user+sys)
run() {
    local bin=$1 store=$2 tree=$3 out=$4
    shift 4
    python3 - "$work/last.err" "$bin" --the-source-root "$store" --no-progress ingest "$tree" -o "$out" "$@" <<'PY'
import resource, subprocess, sys, time
err = open(sys.argv[1], "w")
r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.perf_counter()
rc = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=err)
t1 = time.perf_counter()
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
if rc != 0:
    sys.exit("ingest failed: " + open(sys.argv[1]).read())
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(f"{t1 - t0:.4f} {cpu:.4f}")
PY
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

arms=(plain metrics)
[ -n "$base" ] && arms+=(baseline)
declare -A bin_of=([plain]=$vrift [metrics]=$vrift [baseline]=$base)
arm_flags() { [ "$1" = metrics ] && printf '%s\n' "${flags[@]}"; return 0; }

# col FILE N -> the Nth column (1: wall, 2: cpu)
col() { awk -v c="$2" '{print $c}' "$1"; }
report() {
    local label=$1 c what
    echo "== $label ($(wc -l <"$work/$label.plain") runs per arm)"
    for c in 1 2; do
        what=$([ $c = 1 ] && echo wall || echo cpu)
        for a in "${arms[@]}"; do
            [ -f "$work/$label.$a" ] || continue
            printf '  %-4s %-9s median %8.3f s   runs: %s\n' "$what" "$a" "$(col "$work/$label.$a" $c | median)" \
                "$(col "$work/$label.$a" $c | tr '\n' ' ')"
        done
        local p m
        p=$(col "$work/$label.plain" $c | median)
        m=$(col "$work/$label.metrics" $c | median)
        printf '  %-4s metrics vs plain: %+.2f%%' "$what" "$(echo "($m - $p) / $p * 100" | bc -l)"
        if [ -f "$work/$label.baseline" ]; then
            local b
            b=$(col "$work/$label.baseline" $c | median)
            printf '   plain vs baseline: %+.2f%%   metrics vs baseline: %+.2f%%' \
                "$(echo "($p - $b) / $b * 100" | bc -l)" "$(echo "($m - $b) / $b * 100" | bc -l)"
        fi
        echo
    done
}

# --- cold: a fresh copy into a fresh store per run
for r in $(seq "$cold_rounds"); do
    # alternate the order so no arm always runs first
    for i in 0 1; do
        a=$([ $(( (i + r) % 2 )) = 0 ] && echo plain || echo metrics)
        rm -rf "$work/tree" "$work/store"
        mkdir -p "$work/tree"
        cp -a "$corpus" "$work/tree/node_modules"
        sync
        mapfile -t f < <(arm_flags "$a")
        run "${bin_of[$a]}" "$work/store" "$work/tree/node_modules" "$work/tree/m.vrm" "${f[@]}" >>"$work/cold.$a"
    done
done
report cold

# --- nocache and warm: the last tree, already in its store
for label in nocache warm; do
    extra=()
    [ "$label" = nocache ] && extra=(--no-cache)
    for r in $(seq "$rounds"); do
        for i in "${!arms[@]}"; do
            a=${arms[$(( (i + r) % ${#arms[@]} ))]}
            mapfile -t f < <(arm_flags "$a")
            run "${bin_of[$a]}" "$work/store" "$work/tree/node_modules" "$work/tree/m.vrm" "${extra[@]}" "${f[@]}" >>"$work/$label.$a"
        done
    done
    report "$label"
done
