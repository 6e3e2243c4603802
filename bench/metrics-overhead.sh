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
# binary without flags, to see the cost of the extra per-outcome byte counters.
# Times are whole-process wall times (setup, endpoint, textfile and push included).
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

now() { date +%s.%N; }
# run ARM_BINARY STORE TREE OUT [flags...] -> prints seconds
run() {
    local bin=$1 store=$2 tree=$3 out=$4
    shift 4
    local t0 t1
    t0=$(now)
    "$bin" --the-source-root "$store" --no-progress ingest "$tree" -o "$out" "$@" >/dev/null 2>"$work/last.err" \
        || { cat "$work/last.err" >&2; exit 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

arms=(plain metrics)
[ -n "$base" ] && arms+=(baseline)
declare -A bin_of=([plain]=$vrift [metrics]=$vrift [baseline]=$base)
arm_flags() { [ "$1" = metrics ] && printf '%s\n' "${flags[@]}"; return 0; }

report() {
    local label=$1
    echo "== $label"
    for a in "${arms[@]}"; do
        printf '  %-9s median %8.3f s   runs: %s\n' "$a" "$(median <"$work/$label.$a")" "$(tr '\n' ' ' <"$work/$label.$a")"
    done
    local p m
    p=$(median <"$work/$label.plain")
    m=$(median <"$work/$label.metrics")
    printf '  metrics vs plain: %+.2f%%\n' "$(echo "($m - $p) / $p * 100" | bc -l)"
    if [ -n "$base" ]; then
        local b
        b=$(median <"$work/$label.baseline")
        printf '  plain vs baseline: %+.2f%%   metrics vs baseline: %+.2f%%\n' \
            "$(echo "($p - $b) / $b * 100" | bc -l)" "$(echo "($m - $b) / $b * 100" | bc -l)"
    fi
}

# --- cold: a fresh copy into a fresh store per run
for r in $(seq "$cold_rounds"); do
    # rotate the order so no arm always runs first after the copy
    for i in "${!arms[@]}"; do
        a=${arms[$(( (i + r) % ${#arms[@]} ))]}
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
