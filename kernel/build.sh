#!/usr/bin/env bash
# Builds the User-Mode Linux kernel lazysnap's kernel tests boot: Debian's
# linux-source-6.12 (bookworm-security) with lazysnap-uml.config merged over
# defconfig. The result is cached by the hash of the config and the source
# version, so a rebuild happens only when either changes.
#
#   kernel/build.sh            build if needed; print the kernel's path
#   LAZYSNAP_KERNEL_CACHE=DIR  where builds go (default /var/cache/lazysnap/kernel)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${LAZYSNAP_KERNEL_CACHE:-/var/cache/lazysnap/kernel}
tarball=/usr/src/linux-source-6.12.tar.xz
log() { echo "kernel/build.sh: $*" >&2; }

# One build at a time: scripts/test.sh starts one in the background, and the
# kernel tests wait for it here rather than start a second.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

missing=()
[ -r "$tarball" ] || missing+=(linux-source-6.12)
for tool in make:make gcc:gcc flex:flex bison:bison bc:bc xz:xz-utils strip:binutils; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -q -o DPkg::Lock::Timeout=600 >&2
  # -t bookworm keeps every dependency on bookworm's libc; linux-source-6.12 itself is in bookworm-security.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2
fi

version=$(dpkg-query -W -f='${Version}' linux-source-6.12)
key=$( (echo "$version"; cat "$here/lazysnap-uml.config" "$here/fix-uml-xstate.sh") | sha256sum | cut -c1-16)
out=$cache/linux-uml-$key
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

build=$cache/build
src=$build/linux-source-6.12
if [ ! -f "$src/Makefile" ] || [ "$(cat "$build/.version" 2>/dev/null)" != "$version" ]; then
  log "extracting linux-source-6.12 $version"
  rm -rf "$build" && mkdir -p "$build"
  tar -C "$build" -xJf "$tarball"
  echo "$version" > "$build/.version"
fi
bash "$here/fix-uml-xstate.sh" "$src" >&2
obj=$build/obj-um
mkdir -p "$obj"
# make writes progress ("  LINK linux") to stdout even with -s: stdout is only the path printed at the end
make -s -C "$src" O="$obj" ARCH=um defconfig >&2
"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$here/lazysnap-uml.config" >/dev/null
make -s -C "$src" O="$obj" ARCH=um olddefconfig >&2
for opt in CACHEFILES_ONDEMAND EROFS_FS_ONDEMAND EROFS_FS HOSTFS OVERLAY_FS CGROUP_BPF; do
  grep -qx "CONFIG_$opt=y" "$obj/.config" || { log "CONFIG_$opt did not end up =y"; exit 1; }
done
start=$SECONDS
log "building (make -j$(nproc); 6-10 minutes on 2 cores)"
nice make -s -C "$src" O="$obj" ARCH=um -j"$(nproc)" linux >&2 2> >(tee "$obj/build-warnings.log" >&2)
# A signal handler with a frame this large overflows UML's 32 KiB signal stack when signals nest (fix-uml-xstate.sh).
if grep -A2 "os-Linux/signal.c" "$obj/build-warnings.log" | grep -q "frame size of"; then
  log "a signal handler's stack frame is too large again (see $obj/build-warnings.log)"
  exit 1
fi
cp "$obj/linux" "$out.tmp"
strip "$out.tmp"
cp "$obj/.config" "$out.config"
mv "$out.tmp" "$out"
log "built $out in $((SECONDS - start))s"
echo "$out"
