#!/usr/bin/env bash
# The guest soak (npm run test:soak): every guest suite and the failover test,
# SOAK_PASSES times in a row (default 10), as dist/test/integration/kernel.test.js
# runs them once in CI. Stops at the first failing pass. A guest that locks up
# ends in uml-run.sh's timeout, one that aborts in its "guest ended" line: both
# fail the pass. Prints one line per pass and a summary. SOAK_PATTERN narrows
# a pass to the tests it matches (node --test-name-pattern), e.g.
# 'kernel tests|failover' leaves out the reruns with containerd 1.7 and 2.1.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
passes=${SOAK_PASSES:-10}
log=${SOAK_LOG:-/var/tmp/lazysnap-soak-$(date +%Y%m%d-%H%M%S).log}
echo "soak: $passes passes${SOAK_PATTERN:+ of tests matching /$SOAK_PATTERN/}; full output in $log"
ok=0
for i in $(seq 1 "$passes"); do
  t0=$SECONDS
  out=$(node --test --test-concurrency=1 ${SOAK_PATTERN:+--test-name-pattern="$SOAK_PATTERN"} dist/test/integration/kernel.test.js 2>&1)
  rc=$?
  printf '%s\n' "--- pass $i (rc=$rc)" "$out" >>"$log"
  failover=$(grep -o 'failover: kills=[0-9]* reads_failed=[0-9]* mismatched_bytes=[0-9]* worst_stall_ms=[0-9]*' <<<"$out" | head -1)
  wedged=$(grep -c 'uml-run.sh: timed out\|uml-run.sh: the guest ended' <<<"$out")
  echo "soak: pass $i/$passes rc=$rc $((SECONDS - t0))s guest_lockups_or_aborts=$wedged ${failover:-failover: none}"
  [ "$rc" = 0 ] || break
  ok=$((ok + 1))
done
echo "soak: $ok passed, $((passes - ok)) failed"
[ "$ok" = "$passes" ]
