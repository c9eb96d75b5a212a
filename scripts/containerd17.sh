#!/usr/bin/env bash
# Debian trixie's containerd 1.7.24, unpacked (not installed: installing from
# trixie would upgrade libc) into /var/cache/lazysnap; prints its usr/bin.
# It runs on bookworm (it needs glibc >= 2.34). The tests run the lazy
# pull-and-run suite against it as well as against bookworm's 1.6.20.
set -euo pipefail
VERSION=1.7.24~ds1-6+deb13u1
out=${LAZYSNAP_CACHE:-/var/cache/lazysnap}/containerd-1.7.24
if [ -x "$out/usr/bin/containerd" ]; then echo "$out/usr/bin"; exit 0; fi
apt=$(mktemp -d /tmp/lazysnap-trixie-apt.XXXXXX)
trap 'rm -rf "$apt"' EXIT
mkdir -p "$apt/lists/partial" "$apt/cache"
echo "deb http://deb.debian.org/debian trixie main" > "$apt/sources.list"
opts=(-o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" -q)
apt-get "${opts[@]}" update >&2
(cd "$apt" && apt-get "${opts[@]}" download "containerd=$VERSION" >&2)
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
dpkg-deb -x "$apt"/containerd_*.deb "$out.tmp"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out/usr/bin"
