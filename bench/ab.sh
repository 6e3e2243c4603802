#!/usr/bin/env bash
# ab.sh — interleaved A/B timing of two vrift binaries (or two sets of ingest flags) on one
# corpus, for deciding a code or default change. Rounds alternate A B A B … so this VM's
# write-speed drift (2–3× within minutes) hits both sides alike; medians are printed.
#
# usage: bench/ab.sh [options] BIN_A BIN_B
#   --corpus DIR     project dir holding node_modules (default $VRIFT_BENCH_CORPORA/medium,
#                    else <repo>/../corpora/medium)
#   --shared DIR     corpus the shared store holds (default: the `large` next to --corpus)
#   --rows LIST      comma list of: reingest, empty, shared, checkout (default reingest,shared)
#   --rounds N       rounds (default 5)
#   --args-a "…"     extra `vrift ingest` arguments for A (e.g. "--io-backend uring")
#   --args-b "…"     extra `vrift ingest` arguments for B
#   --work DIR       scratch dir on the corpus's file system (default: a new dir in /tmp)
#
# Rows:
#   reingest  a warm re-ingest of a tree ingested once (untimed) by the same binary;
#             `find -printf` of the same tree is timed alongside as the floor
#   empty     first ingest of a fresh `cp -a` copy into an empty store
#   shared    first ingest of a fresh copy into a store already holding the shared corpus
#             (hard-link clone of a template store each binary made once)
#   checkout  `vrift checkout` of the corpus's manifest into a new directory, from a store each
#             binary ingested once (untimed); `cp -al` of the tree is timed alongside as the floor
# Every timed command is preceded by `sync`; trees made in a round are parked in the work
# dir and deleted at the end (deleting them between rounds slows the next round's mkdirs on
# ext4 without a journal).
set -euo pipefail

die() { echo "ab: $*" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
corpora=${VRIFT_BENCH_CORPORA:-$here/../../corpora}
corpus=$corpora/medium
shared=""
rows=reingest,shared
rounds=5
args_a=""
args_b=""
work=""
while [ $# -gt 0 ]; do
    case $1 in
        --corpus) corpus=$2; shift 2 ;;
        --shared) shared=$2; shift 2 ;;
        --rows) rows=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --args-a) args_a=$2; shift 2 ;;
        --args-b) args_b=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) break ;;
    esac
done
[ $# -eq 2 ] || die "usage: $0 [options] BIN_A BIN_B"
bin_a=$(readlink -f "$1"); bin_b=$(readlink -f "$2")
[ -x "$bin_a" ] && [ -x "$bin_b" ] || die "both binaries must be executable"
src=$corpus/node_modules
[ -d "$src" ] || die "no corpus at $src (bench/make-corpus.sh medium DIR)"
shared=${shared:-$(dirname "$corpus")/large}
work=${work:-$(mktemp -d /tmp/vrift-ab.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# Private copies of the binaries: a rebuild during the run changes nothing.
cp "$bin_a" "$work/A"; cp "$bin_b" "$work/B"

now() { date +%s.%N; }
declare -A samples
record() { samples[$1]="${samples[$1]:-} $2"; }
timed() { # name cmd...
    local name=$1; shift
    sync
    local t0 t1
    t0=$(now); "$@" >/dev/null; t1=$(now)
    record "$name" "$(echo "$t1 - $t0" | bc -l)"
}
ingest() { # bin store tree manifest extra
    "$work/$1" --the-source-root "$2" --no-progress --json ingest "$3" -o "$4" $5
}
extra() { if [ "$1" = A ]; then echo "$args_a"; else echo "$args_b"; fi; }

if [[ $rows == *shared* ]]; then
    [ -d "$shared/node_modules" ] || die "no shared corpus at $shared/node_modules"
    echo "ab: template stores from $(basename "$shared") (untimed)" >&2
    # One per side: a store made by one binary need not be what the other makes (a newer
    # vrift may treat an older store's blobs as unchecked and re-hash them once).
    for s in A B; do
        cp -a "$shared/node_modules" "$work/template-tree-$s"
        ingest $s "$work/template-$s" "$work/template-tree-$s" "$work/template-$s.vrm" "" >/dev/null
    done
fi
if [[ $rows == *checkout* ]]; then
    for s in A B; do
        cp -a "$src" "$work/co-src-$s"
        ingest $s "$work/co-store-$s" "$work/co-src-$s" "$work/co-$s.vrm" "$(extra $s)" >/dev/null
    done
fi
if [[ $rows == *reingest* ]]; then
    for s in A B; do
        cp -a "$src" "$work/re-$s"
        ingest $s "$work/re-store-$s" "$work/re-$s" "$work/re-$s.vrm" "$(extra $s)" >/dev/null
    done
fi

for r in $(seq 1 "$rounds"); do
    for s in A B; do
        if [[ $rows == *reingest* ]]; then
            find "$work/re-$s" >/dev/null
            timed "reingest-$s" ingest $s "$work/re-store-$s" "$work/re-$s" "$work/re-$s.vrm" "$(extra $s)"
            timed "find-$s" find "$work/re-$s" -type f -printf '%s %T@\n'
        fi
        if [[ $rows == *empty* ]]; then
            d=$work/r$r-empty-$s
            cp -a "$src" "$d"
            timed "empty-$s" ingest $s "$d.store" "$d" "$d.vrm" "$(extra $s)"
        fi
        if [[ $rows == *shared* ]]; then
            d=$work/r$r-shared-$s
            cp -a "$src" "$d"
            mkdir -p "$d.store"
            cp -al "$work/template-$s/blake3" "$d.store/"
            cp -a "$work/template-$s/registry.json" "$work/template-$s/manifests" "$d.store/"
            [ -e "$work/template-$s/sealed-v1" ] && cp -a "$work/template-$s/sealed-v1" "$d.store/"
            timed "shared-$s" ingest $s "$d.store" "$d" "$d.vrm" "$(extra $s)"
        fi
        if [[ $rows == *checkout* ]]; then
            timed "checkout-$s" "$work/$s" --the-source-root "$work/co-store-$s" --no-progress \
                --json checkout "$work/co-$s.vrm" "$work/r$r-co-$s"
            timed "cp-al-$s" cp -al "$work/co-src-$s" "$work/r$r-cpal-$s"
        fi
    done
    echo "ab: round $r/$rounds done" >&2
done

files=$(find "$src" -type f | wc -l)
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "A = $bin_a ${args_a:+($args_a)}"
echo "B = $bin_b ${args_b:+($args_b)}"
echo "corpus $(basename "$corpus"): $files files; $rounds rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| row | A median s | B median s | B/A | A files/s | B files/s |\n|---|---:|---:|---:|---:|---:|\n'
for row in reingest find empty shared checkout cp-al; do
    [ -n "${samples[$row-A]:-}" ] || continue
    a=$(echo "${samples[$row-A]}" | median); b=$(echo "${samples[$row-B]}" | median)
    printf '| %s | %.3f | %.3f | %.2f | %.0f | %.0f |\n' "$row" "$a" "$b" \
        "$(echo "$b / $a" | bc -l)" "$(echo "$files / $a" | bc -l)" "$(echo "$files / $b" | bc -l)"
done
for row in reingest find empty shared checkout cp-al; do
    [ -n "${samples[$row-A]:-}" ] || continue
    echo "samples $row: A${samples[$row-A]} | B${samples[$row-B]}"
done
