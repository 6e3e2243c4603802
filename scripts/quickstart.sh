#!/usr/bin/env bash
# Build vrift and run its main job on the default store (~/.vrift/the_source): ingest a real
# dependency tree twice (cold, then warm re-ingest) and restore it with checkout.
# The tree is a private copy of this machine's cargo registry sources (present once cargo has
# built vrift), so nothing of yours is modified. Pass a directory to ingest a copy of it instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p vrift-cli
vrift=$PWD/target/release/vrift
src=${1:-${CARGO_HOME:-$HOME/.cargo}/registry/src}
[ -d "$src" ] || { echo "quickstart: no such directory: $src" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/vrift-quickstart.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
echo "== copying $src to $work/tree"
cp -a "$src" "$work/tree"
echo "== first ingest"
"$vrift" ingest "$work/tree" -o "$work/tree.manifest"
echo "== warm re-ingest"
"$vrift" ingest "$work/tree" -o "$work/tree.manifest"
echo "== checkout"
"$vrift" checkout "$work/tree.manifest" "$work/restored"
diff -r "$work/tree" "$work/restored" >/dev/null && echo "restored tree is identical"
