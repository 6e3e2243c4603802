#!/usr/bin/env bash
# release.sh — the archive people install: one tarball per target with the `vrift` binary,
# the shim library where the binary looks for it (`../lib`), man pages, shell completions,
# the licenses and the README, plus a SHA256SUMS file beside it.
#
#   scripts/release.sh [--profile dist|release] [--out DIR] [--no-build]
#
#   --profile   cargo profile to build (default `dist`: no debug info, stripped, one codegen
#               unit; `release` reuses what `cargo build --release` made, as the tests do)
#   --out DIR   where the archive goes (default target/release-archive)
#   --no-build  package what the profile's directory already holds
#   --bin-dir D package the binaries in D (implies --no-build; e.g. a CARGO_TARGET_DIR's)
#
# Layout of vrift-VERSION-TARGET.tar.gz:
#   vrift-VERSION-TARGET/bin/vrift
#   vrift-VERSION-TARGET/lib/libvrift_shim.so
#   vrift-VERSION-TARGET/share/man/man1/vrift.1, vrift-COMMAND.1
#   vrift-VERSION-TARGET/share/bash-completion/completions/vrift
#   vrift-VERSION-TARGET/share/zsh/site-functions/_vrift
#   vrift-VERSION-TARGET/share/fish/vendor_completions.d/vrift.fish
#   vrift-VERSION-TARGET/{LICENSE-MIT,LICENSE-APACHE,README.md}
# Unpack it anywhere (e.g. /usr/local or ~/.local with --strip-components=1).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
profile=dist
out="$repo/target/release-archive"
build=1
bin_dir=""
while [ $# -gt 0 ]; do
    case $1 in
        --profile) profile=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --bin-dir) bin_dir=$2; build=0; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "release.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
cd "$repo"
if [ "$build" = 1 ]; then
    cargo build --locked --profile "$profile" -p vrift-cli -p vrift-shim >&2
fi
bin_dir="${bin_dir:-$repo/target/$profile}"
for f in vrift libvrift_shim.so; do
    [ -f "$bin_dir/$f" ] || { echo "release.sh: $bin_dir/$f is missing (build with --profile $profile)" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
target="$(uname -m)-unknown-linux-gnu"
name="vrift-$version-$target"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/bin" "$root/lib" "$root/share/man/man1" "$root/share/bash-completion/completions" \
    "$root/share/zsh/site-functions" "$root/share/fish/vendor_completions.d"
install -m 0755 "$bin_dir/vrift" "$root/bin/vrift"
install -m 0755 "$bin_dir/libvrift_shim.so" "$root/lib/libvrift_shim.so"
"$root/bin/vrift" man --out "$root/share/man/man1" 2>/dev/null
"$root/bin/vrift" completions bash > "$root/share/bash-completion/completions/vrift"
"$root/bin/vrift" completions zsh > "$root/share/zsh/site-functions/_vrift"
"$root/bin/vrift" completions fish > "$root/share/fish/vendor_completions.d/vrift.fish"
install -m 0644 LICENSE-MIT LICENSE-APACHE README.md "$root/"
mkdir -p "$out"
# Same bytes for the same inputs: sorted names, fixed owner and times.
mtime="@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
# Modes fixed too (readable by all, writable by the owner), whatever the umask.
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="$mtime" \
    --mode='u+rwX,go+rX,go-w' -czf "$out/$name.tar.gz.tmp" "$name"
mv "$out/$name.tar.gz.tmp" "$out/$name.tar.gz"
# One checksum file for every archive in DIR (several targets may share it).
(cd "$out" && sha256sum vrift-*.tar.gz > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
echo "$out/$name.tar.gz"
