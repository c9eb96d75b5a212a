#!/usr/bin/env bash
# UML 6.12 saves a guest task's FPU state with PTRACE_{GET,SET}REGSET
# NT_X86_XSTATE into a fixed 2696-byte buffer. On hosts whose XSAVE area is
# larger (AMX: 10752 bytes), the host refuses SETREGSET of any size but its
# own (-EFAULT), and every guest process dies of SIGSEGV at its first context
# switch, init included. This makes the buffer big enough for any current
# host (16 KiB) and uses the size the host reports for both directions.
# Idempotent; fails loudly if the source does not look as expected.
set -euo pipefail
src=$1
offsets=$src/arch/x86/um/user-offsets.c
regs=$src/arch/x86/um/os-Linux/registers.c
grep -q 'lazysnap: host xstate size' "$regs" && exit 0

grep -q 'DEFINE_LONGS(HOST_FP_SIZE, 2696);' "$offsets" || { echo "fix-uml-xstate: $offsets changed upstream" >&2; exit 1; }
sed -i 's/DEFINE_LONGS(HOST_FP_SIZE, 2696);/DEFINE_LONGS(HOST_FP_SIZE, 16384);/' "$offsets"

n=$(grep -c 'iov.iov_len = FP_SIZE \* sizeof(unsigned long);' "$regs")
[ "$n" = 3 ] || { echo "fix-uml-xstate: $regs changed upstream ($n)" >&2; exit 1; }
# save/restore use the host's size; arch_init_registers learns it
perl -0pi -e '
  s/static int have_xstate_support;/static int have_xstate_support;\n\/* lazysnap: host xstate size, learned at init; SETREGSET wants exactly this *\/\nstatic unsigned long host_xstate_bytes;/;
  s/(int save_fp_registers.*?)iov\.iov_len = FP_SIZE \* sizeof\(unsigned long\);/$1iov.iov_len = host_xstate_bytes;/s;
  s/(int restore_fp_registers.*?)iov\.iov_len = FP_SIZE \* sizeof\(unsigned long\);/$1iov.iov_len = host_xstate_bytes;/s;
  s/if \(ptrace\(PTRACE_GETREGSET, pid, NT_X86_XSTATE, &iov\) == 0\)\n\t\thave_xstate_support = 1;/if (ptrace(PTRACE_GETREGSET, pid, NT_X86_XSTATE, &iov) == 0) {\n\t\thost_xstate_bytes = iov.iov_len;\n\t\thave_xstate_support = 1;\n\t}/;
' "$regs"
[ "$(grep -c 'host_xstate_bytes' "$regs")" = 4 ] || { echo "fix-uml-xstate: patching $regs failed" >&2; exit 1; }
