#!/usr/bin/env bash
# Runs one command inside lazysnap's UML test kernel and returns its output
# and exit status. For machines without ../shared/kernel; same contract.
#
#   kernel/uml-run.sh [-t SECS] [-m MEM] [-f FSCACHE_MB] [-k KERNEL] [--] CMD [ARG...]
#
# Exit status: the command's; 124 on timeout; 125 if the guest died first.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
secs=1800 mem=2G fsmb=256 kernel=${LAZYSNAP_KERNEL:-}
while getopts "t:m:f:k:" o; do
  case $o in t) secs=$OPTARG ;; m) mem=$OPTARG ;; f) fsmb=$OPTARG ;; k) kernel=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "uml-run.sh: no command" >&2; exit 2; }
[ -n "$kernel" ] || kernel=$("$here/build.sh") || exit 2

# UML maps a guest process's pages into its host process one mmap at a time:
# a guest process with a few hundred MiB in use passes the host's default
# vm.max_map_count (65530), and UML kills it with SIGSEGV ("UML ran out of
# memory on the host side"; bench/fscache's lazysnapd and its push did).
want_maps=1048576
if [ "$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)" -lt $want_maps ]; then
  echo $want_maps >/proc/sys/vm/max_map_count 2>/dev/null ||
    echo "uml-run.sh: vm.max_map_count is $(cat /proc/sys/vm/max_map_count) and cannot be raised (not root?): big guest processes may die of SIGSEGV" >&2
fi

run=$(mktemp -d /tmp/lazysnap-uml.XXXXXX) || exit 2
trap 'rm -rf "$run"' EXIT
for v in $(compgen -e); do
  case $v in PWD | OLDPWD | SHLVL | _ | BASH_*) continue ;; esac
  printf 'export %s=%q\n' "$v" "${!v}"
done >"$run/env.sh"
printf '%q ' "$@" >"$run/cmd.sh"
: >"$run/out"
: >"$run/err"
tail -n +1 -f "$run/out" &
t1=$!
tail -n +1 -f "$run/err" >&2 &
t2=$!
timeout -k 10 "$secs" "$kernel" mem="$mem" root=/dev/root rootfstype=hostfs rootflags=/ rw \
  init="$here/guest-init.sh" LS_RUN="$run" LS_CWD="$PWD" LS_FSCACHE_MB="$fsmb" \
  quiet loglevel=3 con=null ssl=null </dev/null >"$run/console" 2>&1
rc=$?
sleep 0.3 # let tail print the last lines
kill $t1 $t2 2>/dev/null
wait 2>/dev/null
if [ $rc = 124 ] || [ $rc = 137 ]; then echo "uml-run.sh: timed out after ${secs}s" >&2; exit 124; fi
[ -s "$run/status" ] && exit "$(cat "$run/status")"
echo "uml-run.sh: the guest ended (rc=$rc) before the command finished:" >&2
tail -20 "$run/console" >&2
exit 125
