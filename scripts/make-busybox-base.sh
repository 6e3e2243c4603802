#!/usr/bin/env bash
# make-busybox-base.sh — build a minimal root filesystem from Debian's `busybox-static` and
# ingest it as a base layer for `vrift run --isolate --base`.
#
# usage: scripts/make-busybox-base.sh [-o OUT] [--dir DIR] [--vrift PATH] [-- VRIFT-GLOBAL-ARGS...]
#   -o OUT        manifest to write (default: ./busybox.manifest)
#   --dir DIR     where the root tree is assembled and kept (default: OUT with .root instead of
#                 .manifest). It must stay: the store's registry points at it, and `vrift gc
#                 --prune-stale` would otherwise drop the project and let gc delete its blobs.
#   --vrift PATH  the vrift binary (default: $VRIFT, else `vrift` on PATH, else target/release/vrift)
#   after --       extra global arguments for vrift, e.g. --the-source-root /tmp/cas
#
# Where busybox comes from: $BUSYBOX if set; else /bin/busybox when it is the static build of
# the installed `busybox-static` package; else the package is fetched with `apt-get download
# busybox-static` (no root needed) and unpacked with `dpkg-deb -x`. Nothing is installed.
#
# The tree: bin/busybox plus a symlink per applet at the path busybox itself names
# (`busybox --list-full`: bin/sh, usr/bin/env, sbin/...), etc/passwd and etc/group (root,
# nobody and the invoking user), etc/hosts, and the empty directories a root needs (proc, dev,
# sys, tmp, root, home, var/tmp, run). Then `vrift ingest DIR -o OUT --name busybox-base`.
#
# Example:
#   scripts/make-busybox-base.sh -o busybox.manifest
#   vrift run --isolate --base busybox.manifest -- /bin/sh -c 'ls /; id'
set -euo pipefail

die() { echo "make-busybox-base: $*" >&2; exit 1; }

out=busybox.manifest
dir=
vrift_bin=${VRIFT:-}
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        -o|--output) out=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --vrift) vrift_bin=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

if [ -z "$vrift_bin" ]; then
    if command -v vrift >/dev/null; then
        vrift_bin=vrift
    else
        vrift_bin="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/vrift"
    fi
fi
command -v "$vrift_bin" >/dev/null || [ -x "$vrift_bin" ] || die "vrift not found ($vrift_bin); build it or pass --vrift"

[ -n "$dir" ] || dir="${out%.manifest}.root"
[ "$dir" != "$out" ] || dir="$out.root"

is_static() { file -L "$1" 2>/dev/null | grep -q 'statically linked' || ! ldd "$1" >/dev/null 2>&1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bb=${BUSYBOX:-}
if [ -z "$bb" ] && [ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1 && is_static /bin/busybox; then
    bb=/bin/busybox
fi
if [ -z "$bb" ]; then
    command -v apt-get >/dev/null || die "no static busybox: install busybox-static or set BUSYBOX"
    echo "make-busybox-base: fetching busybox-static with apt-get download" >&2
    (cd "$work" && apt-get download busybox-static >/dev/null) || die "apt-get download busybox-static failed (run apt-get update?)"
    dpkg-deb -x "$work"/busybox-static_*.deb "$work/pkg"
    bb="$work/pkg/bin/busybox"
fi
[ -x "$bb" ] || die "$bb is not executable"
is_static "$bb" || die "$bb is not statically linked (the base has no libc)"

if [ -e "$dir" ]; then
    # Rebuilding: the old tree's files are blobs without write bits; dirs are ours.
    chmod -R u+w "$dir" 2>/dev/null || true
    rm -rf "$dir"
fi
mkdir -p "$dir"
cd "$dir"
mkdir -p bin sbin usr/bin usr/sbin etc proc dev sys tmp root home var/tmp run
chmod 1777 tmp var/tmp
chmod 0700 root
cp "$bb" bin/busybox
chmod 0755 bin/busybox

n=0
while IFS= read -r applet; do
    [ -n "$applet" ] || continue
    [ "$applet" != bin/busybox ] || continue
    [ -e "$applet" ] || [ -L "$applet" ] && continue
    # a relative link to bin/busybox: one "../" per directory level of the applet
    d=${applet%/*}
    target=bin/busybox
    if [ "$d" != "$applet" ]; then
        [ -d "$d" ] || mkdir -p "$d"
        slashes=${d//[!\/]/}
        for _ in $(seq 0 ${#slashes}); do target=../$target; done
    fi
    ln -s "$target" "$applet"
    n=$((n + 1))
done < <("$bb" --list-full | sed -e 's|^/||')

uid=$(id -u)
gid=$(id -g)
{
    echo "root:x:0:0:root:/root:/bin/sh"
    if [ "$uid" != 0 ] && [ "$uid" != 65534 ]; then
        echo "$(id -un):x:$uid:$gid::/tmp:/bin/sh"
    fi
    echo "nobody:x:65534:65534:nobody:/nonexistent:/bin/false"
} > etc/passwd
{
    echo "root:x:0:"
    if [ "$gid" != 0 ] && [ "$gid" != 65534 ]; then
        echo "$(id -gn):x:$gid:"
    fi
    echo "nogroup:x:65534:"
} > etc/group
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' > etc/hosts
echo "vrift" > etc/hostname
cd - >/dev/null

echo "make-busybox-base: $dir: busybox $("$bb" | head -1 | awk '{print $2}') with $n applets" >&2
"$vrift_bin" "${extra[@]}" ingest "$dir" -o "$out" --name busybox-base --no-progress
