#!/usr/bin/env bash
# blake3-src.sh: prints the BLAKE3 C sources node-gyp compiles into the
# native addon (binding.gyp runs it). They are the BLAKE3 team's C
# implementation as Debian bookworm ships it, inside librust-blake3-dev
# 1.3.1-1, unpacked by debian-unpack.sh (no dependencies installed) and linked
# at native/deps/blake3. x86-64 gets the SSE2/SSE4.1/AVX2/AVX-512 assembly
# (chosen at run time by cpuid); other machines the portable C.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(bash "$here/debian-unpack.sh" bookworm librust-blake3-dev 1.3.1-1 blake3-c-1.3.1)
mkdir -p "$here/../native/deps"
ln -sfn "$root/usr/share/cargo/registry/blake3-1.3.1/c" "$here/../native/deps/blake3"
srcs=(blake3.c blake3_dispatch.c blake3_portable.c)
[ "$(uname -m)" != x86_64 ] || srcs+=(blake3_sse2_x86-64_unix.S blake3_sse41_x86-64_unix.S blake3_avx2_x86-64_unix.S blake3_avx512_x86-64_unix.S)
printf 'deps/blake3/%s\n' "${srcs[@]}"
