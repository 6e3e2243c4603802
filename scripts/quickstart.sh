#!/usr/bin/env bash
# Build vrift and run its main job on the default store (~/.vrift/the_source): ingest a real
# dependency tree (cold, then a warm re-ingest) and restore it with checkout.
# The tree is a private copy of this machine's cargo registry sources (present once cargo has
# built vrift), kept in ~/.vrift/quickstart so the registered project stays valid and a second
# run is a warm re-ingest. Pass a directory to ingest a copy of it instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p vrift-cli -p vrift-shim
vrift=$PWD/target/release/vrift
src=${1:-${CARGO_HOME:-$HOME/.cargo}/registry/src}
[ -d "$src" ] || { echo "quickstart: no such directory: $src" >&2; exit 1; }
work=${VRIFT_QUICKSTART_DIR:-$HOME/.vrift/quickstart}
mkdir -p "$work"
if [ ! -d "$work/tree" ]; then
    echo "== copying $src to $work/tree"
    cp -a "$src" "$work/tree"
fi
echo "== ingest"
"$vrift" ingest "$work/tree" -o "$work/tree.manifest" --name quickstart
echo "== warm re-ingest"
"$vrift" ingest "$work/tree" -o "$work/tree.manifest" --name quickstart
echo "== checkout"
rm -rf "$work/restored"
"$vrift" checkout "$work/tree.manifest" "$work/restored"
if diff -r "$work/tree" "$work/restored" >/dev/null; then
    echo "restored tree is identical to the source"
else
    echo "restored tree differs from the source only where the security filter left files out:"
    diff -rq "$work/tree" "$work/restored" | head -10
fi
rm -rf "$work/restored"
echo "== store"
"$vrift" status
