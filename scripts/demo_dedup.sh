#!/usr/bin/env bash
# demo_dedup.sh — watch vrift deduplicate real node_modules trees, with numbers.
#
# usage: scripts/demo_dedup.sh [--quick] [--fresh-only | --rerun-only] [--json] [--yes]
#            [--corpus NAME]... [--corpora-dir DIR | --fixture DIR] [--demo-dir DIR] [--vrift PATH]
#
# Scenarios (the default runs both, fresh first):
#   fresh   a fresh start: the store is deleted, then fresh `cp -a` copies of the corpora are
#           ingested one after another, small to large (xsmall, small, medium, large), each
#           registered under its corpus name. Each later tree finds much of its content
#           already stored by the earlier ones (cross-project dedup).
#   rerun   the same corpora again, as fresh copies (what a new CI job has after `npm ci`),
#           into the warm store, registered as NAME-rerun: every file is a dedup hit, zero
#           new blobs, 100%. Rerun copies get their own names and paths so `vrift status`
#           keeps both generations side by side; a second --rerun-only replaces the -rerun
#           projects in place (same paths), so the registry does not grow.
#
# Flags:
#   --quick            only xsmall and small (what CI runs)
#   --fresh-only       only the fresh scenario (deletes the store first)
#   --rerun-only       only the rerun scenario, on the warm store a previous run left
#   --corpus NAME      dataset to use, repeatable, in ingest order (default: xsmall small medium
#                      large; the corpora of bench/corpora/)
#   --corpora-dir DIR  where corpora are installed: DIR/NAME/node_modules, made with
#                      bench/make-corpus.sh (npm ci from bench/corpora/NAME/package-lock.json)
#                      when missing or stale. Default: $VRIFT_BENCH_CORPORA, else DEMO_DIR/corpora
#   --fixture DIR      use the trees DIR/NAME/node_modules exactly as they are (nothing is
#                      installed; no npm needed): every such NAME in sorted order, or the
#                      --corpus names. For tests and trying your own trees.
#   --demo-dir DIR     the demo's working directory (env VRIFT_DEMO_DIR; default
#                      ${TMPDIR:-/tmp}/vrift-demo): its store (DIR/store), the ingested copies
#                      (DIR/projects), the run's records (DIR/records). Kept between runs, so
#                      --rerun-only finds the store warm; delete it when done.
#   --vrift PATH       use this vrift binary instead of building target/release/vrift
#   --json             print one JSON object with every row (and `vrift status --json`) on
#                      stdout instead of the tables; progress messages stay on stderr
#   --yes              do not ask before deleting a store named by VR_THE_SOURCE
#
# The store is DEMO_DIR/store, the demo's own, deleted without asking at each fresh start.
# If VR_THE_SOURCE is set, that store is used instead: a fresh start would delete it, so the
# demo asks first (type 'yes'), and without a terminal it refuses unless --yes is given.
# The default store (~/.vrift/the_source) is never touched.
#
# Table columns (per dataset; derived from `vrift ingest --json` and `vrift status --json` of
# the same run, cross-checked against each other — the demo fails loudly if they disagree):
#   files       regular files ingested
#   blobs       distinct contents of that tree
#   new blobs   contents the store did not have yet (status: blobs - shared_blobs, in registry
#               order; ingest: blobs_new)
#   dedup       files that cost no new blob / files (in-tree duplicates + contents already stored)
#   saved       bytes that needed no new storage (status: apparent_bytes - added_bytes)
#   files/s     vrift's own files per second;  time: vrift's own seconds (no process start-up)
# `vrift status` follows at the end.
#
# Disk: the corpora (about 1.6 GB for all four, installed once) plus the store (about the
# distinct content of all of them: copies that are ingested become hard links into it), on
# the demo dir's file system.
#
# Why bash + python3: the work is running cp and vrift, which bash does plainly; the JSON
# handling, cross-checks and tables are in scripts/demo_dedup_report.py (python3 is already a
# CI dependency, see .ci/apt-packages), so a fresh clone needs no extra build for the report.
set -euo pipefail

die() { echo "demo_dedup: error: $*" >&2; exit 1; }
usage_error() { echo "demo_dedup: $*" >&2; echo "run $0 --help for usage" >&2; exit 2; }
say() { echo "demo_dedup: $*" >&2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
report_py="$repo/scripts/demo_dedup_report.py"

quick=0
fresh=1
rerun=1
json=0
yes=0
corpora=()
corpora_dir=
fixture=
demo_dir=${VRIFT_DEMO_DIR:-${TMPDIR:-/tmp}/vrift-demo}
vrift=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --fresh-only) rerun=0; shift ;;
        --rerun-only) fresh=0; shift ;;
        --json) json=1; shift ;;
        --yes|-y) yes=1; shift ;;
        --corpus) [ $# -ge 2 ] || usage_error "--corpus needs a NAME"; corpora+=("$2"); shift 2 ;;
        --corpora-dir) [ $# -ge 2 ] || usage_error "--corpora-dir needs a DIR"; corpora_dir=$2; shift 2 ;;
        --fixture) [ $# -ge 2 ] || usage_error "--fixture needs a DIR"; fixture=$2; shift 2 ;;
        --demo-dir) [ $# -ge 2 ] || usage_error "--demo-dir needs a DIR"; demo_dir=$2; shift 2 ;;
        --vrift) [ $# -ge 2 ] || usage_error "--vrift needs a PATH"; vrift=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
done
[ "$fresh" = 1 ] || [ "$rerun" = 1 ] || usage_error "--fresh-only and --rerun-only exclude each other"
[ -z "$fixture" ] || [ -z "$corpora_dir" ] || usage_error "--fixture and --corpora-dir exclude each other"
if [ "$quick" = 1 ] && { [ ${#corpora[@]} -gt 0 ] || [ -n "$fixture" ]; }; then
    usage_error "--quick goes with neither --corpus nor --fixture (it means --corpus xsmall --corpus small)"
fi
command -v python3 >/dev/null || die "python3 not found (the report needs it; apt-get install python3)"
[ -f "$report_py" ] || die "missing $report_py"

# Color only for people: a terminal, and NO_COLOR (https://no-color.org) unset or empty.
color=0
if [ "$json" = 0 ] && [ -t 1 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-}" != dumb ]; then
    color=1
fi
heading() {
    if [ "$json" = 1 ]; then
        say "$*"
    elif [ "$color" = 1 ]; then
        printf '\n\033[1m%s\033[0m\n' "$*"
    else
        printf '\n%s\n' "$*"
    fi
}

# ---- datasets -------------------------------------------------------------------------
if [ -n "$fixture" ]; then
    [ -d "$fixture" ] || die "--fixture: no such directory: $fixture"
    fixture=$(cd "$fixture" && pwd -P)
    if [ ${#corpora[@]} -eq 0 ]; then
        while IFS= read -r d; do
            corpora+=("$(basename "$(dirname "$d")")")
        done < <(find "$fixture" -mindepth 2 -maxdepth 2 -name node_modules -type d | LC_ALL=C sort)
        [ ${#corpora[@]} -gt 0 ] || die "--fixture: no DIR/NAME/node_modules under $fixture"
    fi
elif [ ${#corpora[@]} -eq 0 ]; then
    if [ "$quick" = 1 ]; then
        corpora=(xsmall small)
    elif [ "$fresh" = 0 ] && [ -s "$demo_dir/fresh-datasets" ]; then
        # --rerun-only on its own re-runs what the last fresh start ingested (--quick or not).
        read -r -a corpora <"$demo_dir/fresh-datasets"
    else
        corpora=(xsmall small medium large)
    fi
fi
declare -A seen=()
for name in "${corpora[@]}"; do
    case "$name" in
        ''|*/*|.|..|*-rerun) die "bad dataset name '$name' (no slashes; the -rerun suffix is the demo's)" ;;
    esac
    [ -z "${seen[$name]:-}" ] || die "dataset '$name' given twice"
    seen[$name]=1
    if [ -z "$fixture" ] && [ ! -f "$repo/bench/corpora/$name/package-lock.json" ]; then
        die "unknown corpus '$name': no $repo/bench/corpora/$name/package-lock.json (known: $(cd "$repo/bench/corpora" && echo *))"
    fi
done

# ---- the demo dir and the store ---------------------------------------------------------
mkdir -p "$demo_dir" || die "cannot create the demo dir $demo_dir"
demo_dir=$(cd "$demo_dir" && pwd -P)
marker="$demo_dir/.vrift-demo"
if [ ! -e "$marker" ]; then
    # Never treat a directory full of someone's files as ours: we delete things in here.
    if [ -n "$(ls -A "$demo_dir")" ]; then
        die "$demo_dir is not empty and was not made by this demo (no .vrift-demo in it); pick another --demo-dir"
    fi
    echo "made by vrift scripts/demo_dedup.sh; safe to delete" >"$marker"
fi
projects="$demo_dir/projects"
records="$demo_dir/records"
mkdir -p "$projects" "$records"

own_store=1
store="$demo_dir/store"
if [ -n "${VR_THE_SOURCE:-}" ]; then
    own_store=0
    store=$VR_THE_SOURCE
fi

# A fresh start deletes the store: ask before deleting one that is not the demo's own.
if [ "$fresh" = 1 ] && [ "$own_store" = 0 ] && [ -e "$store" ] && [ -n "$(ls -A "$store" 2>/dev/null)" ]; then
    if [ "$yes" = 0 ]; then
        if [ ! -t 0 ]; then
            die "a fresh start deletes the store at $store (VR_THE_SOURCE), and there is no terminal to ask; pass --yes to allow it, unset VR_THE_SOURCE to use the demo's own store ($demo_dir/store), or use --rerun-only"
        fi
        printf 'demo_dedup: a fresh start deletes the whole store at %s (VR_THE_SOURCE).\nType yes to delete it: ' "$store" >&2
        read -r answer || answer=
        [ "$answer" = yes ] || die "not confirmed; nothing deleted (unset VR_THE_SOURCE to use the demo's own store)"
    fi
fi

# ---- the vrift binary -------------------------------------------------------------------
if [ -z "$vrift" ]; then
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or pass --vrift PATH"
    say "building vrift (cargo build --release --locked -p vrift-cli)"
    (cd "$repo" && cargo build --release --locked -p vrift-cli >&2) || die "cargo build failed"
    # Where cargo put it (CARGO_TARGET_DIR or build.target-dir may move target/).
    target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps --locked \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') \
        || die "cargo metadata failed"
    vrift="$target/release/vrift"
fi
[ -x "$vrift" ] || die "no executable vrift at $vrift"
vrift=$(cd "$(dirname "$vrift")" && pwd -P)/$(basename "$vrift")
V() { "$vrift" --the-source-root "$store" "$@"; }

if [ "$fresh" = 0 ]; then
    # --rerun-only: the warm store must hold this demo's fresh ingest of every dataset.
    [ -d "$store/blake3" ] || die "no demo store at $store: run $0 without --rerun-only first (a fresh start fills it)"
    V --json status >"$records/before-rerun.status.json" || die "vrift status --json failed on $store"
    missing=$(python3 "$report_py" missing --status "$records/before-rerun.status.json" \
        --projects "$projects" "${corpora[@]}") || die "cannot read $records/before-rerun.status.json"
    [ -z "$missing" ] || die "the store at $store holds no fresh ingest of: $missing; run $0 without --rerun-only first (with the same datasets)"
fi

# ---- the corpora --------------------------------------------------------------------------
declare -A src=()
if [ -n "$fixture" ]; then
    for name in "${corpora[@]}"; do
        [ -d "$fixture/$name/node_modules" ] || die "--fixture: no directory $fixture/$name/node_modules"
        src[$name]="$fixture/$name/node_modules"
    done
else
    corpora_dir=${corpora_dir:-${VRIFT_BENCH_CORPORA:-$demo_dir/corpora}}
    mkdir -p "$corpora_dir" || die "cannot create $corpora_dir"
    # make-corpus.sh installs with `npm ci` when a corpus is missing or stale and does
    # nothing when its stamp matches. The installs run side by side (they mostly wait for
    # the registry); their output goes to a log each, shown when one fails.
    declare -A pids=()
    for name in "${corpora[@]}"; do
        log="$records/corpus-$name.log"
        say "corpus $name: $corpora_dir/$name (bench/make-corpus.sh; log: $log)"
        "$repo/bench/make-corpus.sh" --no-count "$name" "$corpora_dir/$name" >"$log" 2>&1 &
        pids[$name]=$!
    done
    failed=()
    for name in "${corpora[@]}"; do
        if wait "${pids[$name]}"; then
            sed 's/^/    /' "$records/corpus-$name.log" >&2
        else
            failed+=("$name")
            tail -n 20 "$records/corpus-$name.log" | sed "s/^/    $name: /" >&2
        fi
    done
    [ ${#failed[@]} -eq 0 ] || die "could not prepare corpus ${failed[*]} in $corpora_dir (needs Node.js with npm and the npm registry; logs above)"
    for name in "${corpora[@]}"; do
        src[$name]=$(cd "$corpora_dir/$name/node_modules" && pwd -P)
    done
fi

# ---- scenarios ----------------------------------------------------------------------------
now_ns() { date +%s%N; }
since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

# remove_tree DIR: rm -rf, with the subtrees three levels down (packages of a copied tree,
# shard directories of a store) removed several at a time: on a file system mounted with
# `discard` every freed file waits for the device, and parallel removals overlap the waits.
remove_tree() {
    [ -e "$1" ] || return 0
    find "$1" -mindepth 3 -maxdepth 3 -print0 2>/dev/null | xargs -0 -r -n 64 -P 8 rm -rf 2>/dev/null || true
    rm -rf "$1"
}

# ingest_copy PROJECT SOURCE_TREE: a fresh `cp -a` copy of the tree at projects/PROJECT,
# ingested into the store as PROJECT; the --json summary goes to records/PROJECT.ingest.json.
ingest_copy() {
    local project=$1 from=$2 dest="$projects/$1"
    remove_tree "$dest" || die "cannot remove the previous copy $dest"
    rm -f "$projects/$project.manifest"
    mkdir -p "$dest"
    local t0 t1
    t0=$(now_ns)
    cp -a "$from" "$dest/node_modules" || die "cp -a $from $dest/node_modules failed"
    t1=$(now_ns)
    say "$(printf '%-16s copied in %5.1f s; ingesting' "$project" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e9 }')")"
    sync # the copy's write-back is not the ingest's to pay
    V --json ingest "$dest/node_modules" -o "$projects/$project.manifest" --name "$project" \
        >"$records/$project.ingest.json" \
        || die "vrift ingest of $dest/node_modules failed (summary, if any: $records/$project.ingest.json)"
}

# report SCENARIO SUFFIX: cross-check and print the scenario's table (or keep its rows).
report() {
    local scenario=$1 suffix=$2 args=() name
    V --json status >"$records/$scenario.status.json" || die "vrift status --json failed"
    for name in "${corpora[@]}"; do
        args+=(--row "$name$suffix" "$projects/$name$suffix/node_modules" "$records/$name$suffix.ingest.json")
    done
    python3 "$report_py" scenario --scenario "$scenario" --status "$records/$scenario.status.json" \
        --out "$records/$scenario.rows.json" --color "$color" --quiet "$json" "${args[@]}" \
        || die "the $scenario numbers do not add up (records in $records)"
}

find "$records" -maxdepth 1 -name '*.json' ! -name before-rerun.status.json -delete
if [ "$fresh" = 1 ]; then
    t0=$(now_ns)
    say "fresh start: deleting the store at $store and the demo's copies in $projects"
    if [ "$own_store" = 1 ]; then
        remove_tree "$store" || die "could not delete $store"
    elif [ -d "$store/blake3" ]; then
        # Someone's store: vrift's own clean (it waits for running ingests, checks the layout).
        V clean --all --force --yes >/dev/null || die "could not delete the store at $store"
    elif [ -n "$(ls -A "$store" 2>/dev/null)" ]; then
        die "$store (VR_THE_SOURCE) is not a vrift store (no blake3/ in it); refusing to delete it"
    fi
    remove_tree "$projects" || die "could not delete $projects"
    rm -f "$demo_dir/fresh-datasets"
    mkdir -p "$projects"
    say "deleted in $(since "$t0") s"
    heading "Fresh start: ${corpora[*]} into an empty store ($store)"
    for name in "${corpora[@]}"; do
        ingest_copy "$name" "${src[$name]}"
    done
    report fresh ""
    echo "${corpora[*]}" >"$demo_dir/fresh-datasets"
fi

if [ "$rerun" = 1 ]; then
    heading "Re-run: fresh copies of ${corpora[*]} into the warm store"
    for name in "${corpora[@]}"; do
        ingest_copy "$name-rerun" "${src[$name]}"
    done
    report rerun "-rerun"
fi

if [ "$json" = 1 ]; then
    V --json status >"$records/final.status.json" || die "vrift status --json failed"
    parts=()
    [ "$fresh" = 0 ] || parts+=("$records/fresh.rows.json")
    [ "$rerun" = 0 ] || parts+=("$records/rerun.rows.json")
    python3 "$report_py" combine --demo-dir "$demo_dir" --store "$store" --vrift "$vrift" \
        --status "$records/final.status.json" "${parts[@]}"
else
    heading "vrift status"
    V status
    echo
    again=("$0" --rerun-only)
    [ -z "$fixture" ] || again+=(--fixture "$fixture")
    [ -z "${VRIFT_DEMO_DIR:-}" ] && [ "$demo_dir" != "$(cd "${TMPDIR:-/tmp}" && pwd -P)/vrift-demo" ] && again+=(--demo-dir "$demo_dir")
    echo "Demo dir: $demo_dir (store, copies, records; delete it when done)."
    echo "Again on the warm store: ${again[*]}"
fi
