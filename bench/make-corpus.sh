#!/usr/bin/env bash
# make-corpus.sh — install one benchmark corpus (a real node_modules tree) from the
# definitions kept in this repository, so a fresh clone can rebuild every corpus.
#
# usage: bench/make-corpus.sh [--no-count] NAME DEST
#   NAME   a folder of bench/corpora/ (xsmall, small, medium, large) holding
#          package.json and package-lock.json
#   DEST   project directory; the tree ends up in DEST/node_modules
#
# The install is pinned by the lock file (`npm ci --ignore-scripts`: no lifecycle scripts,
# so no network or compiler beyond the npm registry). It is idempotent: DEST/.corpus-stamp
# holds the sha256 of package.json + package-lock.json, and a matching stamp with an existing
# node_modules means nothing is reinstalled. The stamp is the same one as the shared
# make-corpus.sh writes, so trees made by either are recognised by both.
# Afterwards it prints one line of counts (files, dirs, symlinks, bytes) unless --no-count.
#
# Env: NPM (default npm), CORPUS_FORCE=1 reinstalls whatever the stamp says.
set -euo pipefail

die() { echo "make-corpus: $*" >&2; exit 1; }

count=1
if [ "${1:-}" = "--no-count" ]; then
    count=0
    shift
fi
[ $# -eq 2 ] || die "usage: $0 [--no-count] NAME DEST"

name=$1
dest=$2
defs="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/corpora/$name"
npm_bin=${NPM:-npm}

[ -f "$defs/package.json" ] || die "unknown corpus '$name': no $defs/package.json"
[ -f "$defs/package-lock.json" ] || die "corpus '$name' has no $defs/package-lock.json"

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

want=$(cat "$defs/package.json" "$defs/package-lock.json" | sha256sum | cut -d' ' -f1)
have=$(cat "$dest/.corpus-stamp" 2>/dev/null || true)

if [ "${CORPUS_FORCE:-0}" != 1 ] && [ "$want" = "$have" ] && [ -d "$dest/node_modules" ]; then
    echo "make-corpus: $name already in $dest (stamp matches)" >&2
else
    command -v "$npm_bin" >/dev/null || die "npm not found (install Node.js + npm, or set NPM)"
    rm -f "$dest/.corpus-stamp"
    rm -f "$dest/package.json" "$dest/package-lock.json"
    cp "$defs/package.json" "$defs/package-lock.json" "$dest/"
    start=$(date +%s)
    # npm ci deletes any existing node_modules first, so a half-installed tree is replaced.
    (cd "$dest" && "$npm_bin" ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "make-corpus: installed $name in $(($(date +%s) - start)) s" >&2
    echo "$want" >"$dest/.corpus-stamp"
fi

if [ "$count" = 1 ]; then
    nm="$dest/node_modules"
    files=$(find "$nm" -type f | wc -l)
    dirs=$(find "$nm" -type d | wc -l)
    links=$(find "$nm" -type l | wc -l)
    bytes=$(find "$nm" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    printf 'corpus=%s dir=%s files=%s dirs=%s symlinks=%s bytes=%s\n' \
        "$name" "$nm" "$files" "$dirs" "$links" "$bytes"
fi
