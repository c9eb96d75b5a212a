#!/usr/bin/env bash
# stargz-grpc.sh: builds containerd-stargz-grpc 0.14.3, the stargz-snapshotter
# daemon that Debian's stargz-snapshotter package leaves out, from Debian's
# own Go sources: sid's golang-*-dev packages (the library, patched by Debian)
# plus the daemon's main package from the source package's orig tarball, with
# sid's Go toolchain; all downloaded and unpacked, never installed (see
# debian-unpack.sh), GOPATH mode, no module proxy. Cached in
# $LAZYSNAP_CACHE/stargz-grpc-0.14.3; prints the binary's path.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
deb=0.14.3-7
out=${LAZYSNAP_CACHE:-/var/cache/lazysnap}/stargz-grpc-0.14.3
if [ -x "$out/containerd-stargz-grpc" ] && [ "$(cat "$out/.built" 2>/dev/null)" = "$deb" ]; then
  echo "$out/containerd-stargz-grpc"; exit 0
fi
source "$here/debian-unpack.sh" # mirror, private_apt

work=$(mktemp -d /tmp/lazysnap-stargz-grpc.XXXXXX)
trap 'rm -rf "$work"' EXIT
private_apt sid "$work/apt" deb-src
# Debian builds only ctr-remote; the daemon also imports these, which the
# source package doesn't Build-Depend on. docker/cli's config package has no
# -dev of its own: docker.io's golang-github-docker-docker-dev ships it.
extra=(golang-github-coreos-bbolt-dev golang-github-goccy-go-json-dev golang-k8s-cri-api-dev
       golang-k8s-client-go-dev golang-github-docker-docker-dev)
closure=$(apt-cache "${opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances golang-github-containerd-stargz-snapshotter-dev "${extra[@]}")
# The -dev sources plus the toolchain they pull in (sid's default Go).
pkgs=$(grep -E '^golang-(.*-dev|1\.[0-9]+-(go|src))$' <<< "$closure" | sort -u \
  | sed "s/^golang-github-containerd-stargz-snapshotter-dev\$/&=$deb/")
mkdir -p "$work/debs" "$work/go" "$work/gopath"
echo "stargz-grpc: downloading $(wc -l <<< "$pkgs") packages" >&2
(cd "$work/debs" && apt-get "${opts[@]}" download $pkgs >&2)
# The library in the -dev has Debian's patches; cmd/containerd-stargz-grpc is
# only in the orig tarball (Debian's own patches don't touch it).
(cd "$work" && apt-get "${opts[@]}" source --download-only --tar-only "golang-github-containerd-stargz-snapshotter=$deb" >&2)
for f in "$work"/debs/golang-1.*.deb; do dpkg-deb -x "$f" "$work/go"; done
for f in "$work"/debs/golang-*-dev_*.deb; do dpkg-deb -x "$f" "$work/gopath"; done
export GOPATH=$work/gopath/usr/share/gocode
src=$GOPATH/src/github.com/containerd/stargz-snapshotter
tar -xzf "$work"/golang-github-containerd-stargz-snapshotter_0.14.3.orig.tar.gz -C "$src" \
  --strip-components=1 stargz-snapshotter-0.14.3/cmd/containerd-stargz-grpc
# sid's k8s.io/cri-api (0.36) is newer than 0.14.3's: its generated code is
# google protobuf (no Marshal/Unmarshal methods) and ImageService has grown.
sed -i 's/^type instrumentedService struct {$/&\n\truntime.UnimplementedImageServiceServer/' \
  "$src/service/keychain/cri/cri.go"
sed -i -e 's/interface{ Unmarshal(_ \[\]byte) error }/protoreflect.ProtoMessage/; s/v1r\.Unmarshal(p)/proto.Unmarshal(p, v1r)/' \
  -e 's/interface{ Marshal() (\[\]byte, error) }/protoreflect.ProtoMessage/; s/v1res\.Marshal()/proto.Marshal(v1res)/' \
  "$src/util/criutil/alpha.go"

GOROOT=$(ls -d "$work"/go/usr/lib/go-1.* | sort -V | tail -1)
export GOROOT GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local GOENV=off GOFLAGS= CGO_ENABLED=0 GOCACHE=$work/gocache
echo "stargz-grpc: building with $("$GOROOT/bin/go" version)" >&2
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
v=github.com/containerd/stargz-snapshotter/version
nice -n 19 "$GOROOT/bin/go" build -trimpath -ldflags "-s -w -X $v.Version=v0.14.3 -X $v.Revision=debian-$deb" \
  -o "$out.tmp/containerd-stargz-grpc" github.com/containerd/stargz-snapshotter/cmd/containerd-stargz-grpc
"$out.tmp/containerd-stargz-grpc" --version >&2
ls "$work/debs" > "$out.tmp/debs.txt" # what it was built from
echo "$deb" > "$out.tmp/.built"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out/containerd-stargz-grpc"
