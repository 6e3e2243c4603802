#!/usr/bin/env bash
# isolate-bench.sh — how fast does `vrift run --isolate` get a node_modules tree in front of a
# program, next to the ways a CI job would otherwise get it there.
#
# usage: bench/isolate-bench.sh [--corpus NAME] [--runs N] [--warm-runs N] [--work DIR] [--vrift PATH] [--keep-work]
#
# Rows (each run N times, interleaved, the table shows median / min / max wall time):
#   vrift farm, cold    `vrift gc --farms --delete` first (untimed), then
#                       `vrift run --isolate --manifest M -- /bin/true`: materializes the link
#                       farm of the whole tree (hard links to blobs) + namespaces + exec + teardown.
#                       The farm-build part alone is reported too (VRIFT_ISOLATE_STATS).
#   vrift warm start    the same with the farm cached (--warm-runs, default 20), CMD =
#                       `date +%s%N`: time until CMD runs (the start: goal < 50 ms), and the
#                       whole run including the teardown of namespaces, mounts, scratch dir.
#   cp -al              `cp -al node_modules DST`: the floor for hard-linking every file.
#   pnpm install        `pnpm install --offline --frozen-lockfile --ignore-scripts` of the same
#   --offline           lock file (converted from package-lock.json by `pnpm import`) into an
#                       empty project, from a warm pnpm store (filled once, untimed, from the
#                       registry); pnpm links files out of its store (hard links on ext4).
#
# Corpus: $VRIFT_BENCH_CORPORA/NAME, else <repo>/../corpora/NAME, else installed with
# bench/make-corpus.sh into the work dir (needs npm and the registry). pnpm: if missing, install
# it with `npm i -g pnpm` (the script says so and stops). The work dir (default: a new dir in
# /var/tmp, which should be on the corpus's file system) holds a copy of the corpus, the store,
# the pnpm project and store: about 3x the corpus. Page caches are warm for every row ("cold"
# means no cached farm, not an empty page cache). Needs: user namespaces (see README,
# "Isolation").
set -euo pipefail

die() { echo "isolate-bench: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
corpus_name=medium
runs=5
warm_runs=20
work=
keep=0
vrift=${VRIFT:-$repo/target/release/vrift}
while [ $# -gt 0 ]; do
    case "$1" in
        --corpus) corpus_name=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --warm-runs) warm_runs=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --vrift) vrift=$2; shift 2 ;;
        --keep-work) keep=1; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done

[ -x "$vrift" ] || die "no vrift at $vrift (cargo build --release -p vrift-cli, or --vrift PATH)"
command -v pnpm >/dev/null || die "pnpm not found: install it with \`npm i -g pnpm\` and run again"

if [ -z "$work" ]; then
    work=$(mktemp -d /var/tmp/vrift-isolate-bench.XXXXXX)
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
cleanup() {
    if [ "$keep" = 0 ]; then
        chmod -R u+w "$work" 2>/dev/null || true
        rm -rf "$work"
    else
        echo "isolate-bench: work dir kept: $work" >&2
    fi
}
trap cleanup EXIT

corpus=${VRIFT_BENCH_CORPORA:+$VRIFT_BENCH_CORPORA/$corpus_name}
[ -n "$corpus" ] && [ -d "$corpus/node_modules" ] || corpus="$repo/../corpora/$corpus_name"
if [ ! -d "$corpus/node_modules" ]; then
    corpus="$work/corpus"
    "$repo/bench/make-corpus.sh" --no-count "$corpus_name" "$corpus"
fi
defs="$repo/bench/corpora/$corpus_name"

now_ns() { date +%s%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

declare -A times
record() { times[$1]="${times[$1]:-} $2"; }

echo "== setup (untimed)" >&2
cp "$vrift" "$work/vrift"
V="$work/vrift"
mkdir -p "$work/proj"
cp -a "$corpus/node_modules" "$work/proj/node_modules"
files=$(find "$work/proj/node_modules" -type f | wc -l)
"$V" --the-source-root "$work/store" --no-progress ingest "$work/proj/node_modules" -o "$work/nm.manifest" >/dev/null
M="$work/nm.manifest"

mkdir -p "$work/pnpm-proj"
cp "$defs/package.json" "$defs/package-lock.json" "$work/pnpm-proj/"
(
    cd "$work/pnpm-proj"
    pnpm import >/dev/null 2>&1 || die "pnpm import failed"
    rm -f package-lock.json
    # Fill the pnpm store once (network), untimed.
    pnpm install --frozen-lockfile --ignore-scripts --store-dir "$work/pnpm-store" \
        --reporter=silent >/dev/null 2>&1 || die "pnpm install (filling the store) failed"
)
pnpm_files=$(find "$work/pnpm-proj/node_modules" -type f | wc -l)

run_isolate() {
    VRIFT_ISOLATE_STATS=1 "$V" --the-source-root "$work/store" run --isolate --manifest "$M" -- /bin/true 2>"$work/stats"
}

echo "== $runs rounds: farm cold, cp -al, pnpm --offline" >&2
for r in $(seq 1 "$runs"); do
    "$V" --the-source-root "$work/store" gc --farms --delete >/dev/null
    sync
    t0=$(now_ns); run_isolate; t1=$(now_ns)
    record cold "$(ms "$t0" "$t1")"
    build=$(grep -o '"seconds":[0-9.e-]*' "$work/stats" | head -1 | cut -d: -f2)
    record build "$(calc "$build * 1000" 1)"

    rm -rf "$work/cpal"; sync
    t0=$(now_ns); cp -al "$work/proj/node_modules" "$work/cpal"; t1=$(now_ns)
    record cpal "$(ms "$t0" "$t1")"

    rm -rf "$work/pnpm-proj/node_modules"; sync
    t0=$(now_ns)
    (cd "$work/pnpm-proj" && pnpm install --offline --frozen-lockfile --ignore-scripts \
        --store-dir "$work/pnpm-store" --reporter=silent >/dev/null 2>&1) || die "pnpm install --offline failed"
    t1=$(now_ns)
    record pnpm "$(ms "$t0" "$t1")"
    echo "   round $r: cold ${times[cold]##* } ms (build ${times[build]##* } ms), cp -al ${times[cpal]##* } ms, pnpm ${times[pnpm]##* } ms" >&2
done

echo "== $warm_runs warm starts" >&2
run_isolate
for _ in $(seq 1 "$warm_runs"); do
    # CMD prints the time it started: vrift's start-up cost is up to that, the rest is
    # teardown (namespace, mounts, scratch directory) until vrift exits.
    t0=$(now_ns)
    tc=$("$V" --the-source-root "$work/store" run --isolate --manifest "$M" -- /bin/date +%s%N)
    t1=$(now_ns)
    record start "$(ms "$t0" "$tc")"
    record warm "$(ms "$t0" "$t1")"
done

stat_of() { # median min max of the recorded list
    tr ' ' '\n' <<<"${times[$1]}" | grep -v '^$' | sort -n | awk '
        { v[NR] = $1 } END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.1f | %.1f | %.1f", m, v[1], v[NR] }'
}
median_of() { stat_of "$1" | cut -d'|' -f1 | tr -d ' '; }
rate() { calc "$2 * 1000 / $1" 0; }

echo
echo "Corpus \`$corpus_name\`: $files files ($pnpm_files in pnpm's layout); $(nproc) cores; $(uname -r); $runs rounds, $warm_runs warm starts."
echo
echo "| row | median ms | min ms | max ms | files/s (median) |"
echo "|---|---:|---:|---:|---:|"
echo "| vrift run --isolate, farm cold (build + start) | $(stat_of cold) | $(rate "$(median_of cold)" "$files") |"
echo "| … of which farm build | $(stat_of build) | $(rate "$(median_of build)" "$files") |"
echo "| cp -al | $(stat_of cpal) | $(rate "$(median_of cpal)" "$files") |"
echo "| pnpm install --offline (warm store) | $(stat_of pnpm) | $(rate "$(median_of pnpm)" "$pnpm_files") |"
echo "| vrift run --isolate, warm: until CMD runs | $(stat_of start) | — |"
echo "| vrift run --isolate, warm: whole run of \`date\` (start + teardown) | $(stat_of warm) | — |"
echo
echo "Ratios (median): farm cold / cp -al = $(calc "$(median_of cold) / $(median_of cpal)"), pnpm --offline / farm cold = $(calc "$(median_of pnpm) / $(median_of cold)"); warm start goal < 50 ms."
