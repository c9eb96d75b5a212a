#!/usr/bin/env bash
# containerd.sh 1.7|2.1: another containerd than bookworm's 1.6.20, unpacked
# by debian-unpack.sh (trixie's 1.7.24, sid's 2.1.9); prints its usr/bin.
# Both run on bookworm (they need glibc >= 2.34, bookworm has 2.36).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${1:-}" in
  1.7) root=$(bash "$here/debian-unpack.sh" trixie containerd '1.7.24~ds1-6+deb13u1' containerd-1.7.24) ;;
  2.1) root=$(bash "$here/debian-unpack.sh" sid containerd '2.1.9+ds1-5' containerd-2.1.9) ;;
  *) echo "usage: containerd.sh 1.7|2.1" >&2; exit 2 ;;
esac
"$root/usr/bin/containerd" --version >&2
echo "$root/usr/bin"
