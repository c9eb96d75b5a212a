#!/usr/bin/env bash
# debian-unpack.sh SUITE PACKAGE VERSION NAME
# One package of another Debian release (trixie, sid), downloaded and
# unpacked with dpkg-deb -x into $LAZYSNAP_CACHE/NAME, never installed:
# installing from a newer release would upgrade this machine's libc. Prints
# the unpacked root. The archive is the one this machine's apt sources
# already use (LAZYSNAP_DEBIAN_MIRROR overrides it); the suite gets private
# apt lists, so it need not be in the apt sources.
set -euo pipefail

mirror() {
  local uri=${LAZYSNAP_DEBIAN_MIRROR:-}
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}')
  [ -n "$uri" ] || { echo "debian-unpack: no Debian archive in this machine's apt sources; set LAZYSNAP_DEBIAN_MIRROR" >&2; exit 1; }
  echo "$uri"
}

# private_apt SUITE DIR [deb-src]: sets opts, the apt options for SUITE's
# lists kept in DIR (the machine's own apt state is left alone), and updates.
private_apt() {
  local uri; uri=$(mirror)
  mkdir -p "$2/lists/partial" "$2/cache/archives/partial" "$2/parts" "$2/prefs"
  echo "deb $uri $1 main" > "$2/sources.list"
  [ -z "${3:-}" ] || echo "deb-src $uri $1 main" >> "$2/sources.list"
  opts=(-q -o Dir::Etc::SourceList="$2/sources.list" -o Dir::Etc::SourceParts="$2/parts"
        -o Dir::Etc::PreferencesParts="$2/prefs" -o Dir::State::Lists="$2/lists" -o Dir::Cache="$2/cache")
  echo "private apt: $(cat "$2/sources.list" | xargs)" >&2
  apt-get "${opts[@]}" update >&2
}
# stargz-grpc.sh sources this file for the two functions above.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

[ $# -eq 4 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
suite=$1 pkg=$2 version=$3 name=$4
out=${LAZYSNAP_CACHE:-/var/cache/lazysnap}/$name
if [ -f "$out/.unpacked" ] && [ "$(cat "$out/.unpacked")" = "$pkg=$version" ]; then echo "$out"; exit 0; fi

apt=$(mktemp -d "/tmp/lazysnap-$suite-apt.XXXXXX")
trap 'rm -rf "$apt"' EXIT
echo "debian-unpack: $pkg=$version" >&2
private_apt "$suite" "$apt"
(cd "$apt" && apt-get "${opts[@]}" download "$pkg=$version" >&2) || {
  echo "debian-unpack: $suite has no $pkg=$version now; it has: $(apt-cache "${opts[@]}" madison "$pkg" | awk -F'|' '{print $2}' | xargs)" >&2
  exit 1
}
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
dpkg-deb -x "$apt"/"${pkg}"_*.deb "$out.tmp"
echo "$pkg=$version" > "$out.tmp/.unpacked"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
