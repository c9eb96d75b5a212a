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
if ! grep -q 'lazysnap: host xstate size' "$regs"; then
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
fi

# The 16 KiB FP buffer lives in struct uml_pt_regs, and two signal handlers
# (sig_handler_common, timer_real_alarm_handler) keep one on the signal stack:
# 16.6 KiB frames on a 32 KiB stack shared by nested signals (a SIGSEGV taken
# while a timer signal is handled). Two nested frames overflow it, over the
# thread_info at its bottom: `current` then reads as 0 and the guest loops in
# segv(). Kernel-mode signal regs never carry FP state, so fp moves to the end
# of the struct and those two handlers keep only the part before it.
ptrace=$src/arch/x86/um/shared/sysdep/ptrace.h
signal=$src/arch/um/os-Linux/signal.c
if ! grep -q 'lazysnap: fp last' "$ptrace"; then
  perl -0pi -e 's/struct uml_pt_regs \{\n\tunsigned long gp\[MAX_REG_NR\];\n\tunsigned long fp\[MAX_FP_NR\];\n\tstruct faultinfo faultinfo;\n\tlong syscall;\n\tint is_user;\n\};/struct uml_pt_regs {\n\tunsigned long gp[MAX_REG_NR];\n\tstruct faultinfo faultinfo;\n\tlong syscall;\n\tint is_user;\n\t\/* lazysnap: fp last, so signal handlers can keep only what comes before it *\/\n\tunsigned long fp[MAX_FP_NR];\n};/' "$ptrace"
  grep -q 'lazysnap: fp last' "$ptrace" || { echo "fix-uml-xstate: $ptrace changed upstream" >&2; exit 1; }
fi
if ! grep -q 'lazysnap: no fp on the signal stack' "$signal"; then
  perl -0pi -e '
    s/#include <stdlib.h>\n/#include <stdlib.h>\n#include <stddef.h>\n/;
    s/(static void sig_handler_common\(int sig, struct siginfo \*si, mcontext_t \*mc\)\n\{\n)\tstruct uml_pt_regs r;\n/$1\t\/* lazysnap: no fp on the signal stack (see kernel\/fix-uml-xstate.sh) *\/\n\tunsigned long r_head[offsetof(struct uml_pt_regs, fp) \/ sizeof(unsigned long)];\n\tstruct uml_pt_regs *r = (struct uml_pt_regs *) r_head;\n/;
    s/\tr\.is_user = 0;\n/\tr->is_user = 0;\n/;
    s/get_regs_from_mc\(&r, mc\);\n\t\tGET_FAULTINFO_FROM_MC\(r\.faultinfo, mc\);/get_regs_from_mc(r, mc);\n\t\tGET_FAULTINFO_FROM_MC(r->faultinfo, mc);/;
    s/\(\*sig_info\[sig\]\)\(sig, si, &r\);/(*sig_info[sig])(sig, si, r);/;
    s/(static void timer_real_alarm_handler\(mcontext_t \*mc\)\n\{\n)\tstruct uml_pt_regs regs;\n\n\tif \(mc != NULL\)\n\t\tget_regs_from_mc\(&regs, mc\);\n\telse\n\t\tmemset\(&regs, 0, sizeof\(regs\)\);\n\ttimer_handler\(SIGALRM, NULL, &regs\);/$1\t\/* lazysnap: no fp on the signal stack either *\/\n\tunsigned long r_head[offsetof(struct uml_pt_regs, fp) \/ sizeof(unsigned long)];\n\tstruct uml_pt_regs *regs = (struct uml_pt_regs *) r_head;\n\n\tif (mc != NULL)\n\t\tget_regs_from_mc(regs, mc);\n\telse\n\t\tmemset(r_head, 0, sizeof(r_head));\n\ttimer_handler(SIGALRM, NULL, regs);/;
  ' "$signal"
  [ "$(grep -c 'r_head\[offsetof' "$signal")" = 2 ] && ! grep -q 'struct uml_pt_regs r;\|struct uml_pt_regs regs;' "$signal" \
    || { echo "fix-uml-xstate: patching $signal failed" >&2; exit 1; }
fi
