#!/usr/bin/env bash
# erofs-utils.sh: mkfs.erofs 1.9.4 for bench/convert (#15 compares the
# converter with its --tar mode), built from sid's source package: sid's
# binary needs glibc 2.38 and libxml2.so.16, which bookworm lacks. apt checks
# the source files against sid's signed index. Only mkfs, with zlib and zstd
# (no curl, xml, selinux: the bench needs none). Prints the binary's path;
# built once into $LAZYSNAP_CACHE/erofs-utils-1.9.4.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=1.9.4 debver=1.9.4-1
out=${LAZYSNAP_CACHE:-/var/cache/lazysnap}/erofs-utils-$version
if [ -x "$out/mkfs.erofs" ]; then echo "$out/mkfs.erofs"; exit 0; fi
# shellcheck source=debian-unpack.sh
source "$here/debian-unpack.sh"
work=$(mktemp -d /tmp/lazysnap-erofs-utils.XXXXXX)
trap 'rm -rf "$work"' EXIT
private_apt sid "$work/apt" deb-src
(cd "$work" && apt-get "${opts[@]}" source --download-only "erofs-utils=$debver" >&2)
tar -xzf "$work/erofs-utils_$version.orig.tar.gz" -C "$work"
cd "$work/erofs-utils-$version"
{
  ./autogen.sh
  ./configure --with-libzstd --disable-lzma --disable-fuse --without-libcurl --without-libxml2 \
    --without-json-c --without-libnl3 --without-openssl --without-selinux
  make -j"$(nproc)" -C lib
  make -j"$(nproc)" -C mkfs
} >&2
mkdir -p "$out.tmp"
cp mkfs/mkfs.erofs "$out.tmp/"
"$out.tmp/mkfs.erofs" -V >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out/mkfs.erofs"
