#!/usr/bin/env bash
# peers.sh stargz|soci: the lazy-pulling snapshotters users compare lazysnap
# with, unpacked by debian-unpack.sh (never installed: that would upgrade
# libc); prints the unpacked usr/bin. The versions #13 names (0.14.3-7,
# 0.4.1-6) are in sid now; trixie has 0.14.3-4+b6 and 0.4.1-5+b3. Both are
# static Go binaries and run on bookworm. Debian's stargz-snapshotter ships
# ctr-remote only: containerd-stargz-grpc is built by stargz-grpc.sh and
# linked into the same usr/bin.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${1:-}" in
  stargz) root=$(bash "$here/debian-unpack.sh" sid stargz-snapshotter '0.14.3-7' stargz-snapshotter-0.14.3)
    ln -sfn "$(bash "$here/stargz-grpc.sh")" "$root/usr/bin/containerd-stargz-grpc" ;;
  soci) root=$(bash "$here/debian-unpack.sh" sid soci-snapshotter '0.4.1-6' soci-snapshotter-0.4.1) ;;
  *) echo "usage: peers.sh stargz|soci" >&2; exit 2 ;;
esac
echo "$root/usr/bin"
