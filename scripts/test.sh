#!/usr/bin/env bash
# Installs everything and runs every test: unit tests, then the integration
# tests against real containerd, docker-registry and containerd's own
# snapshotter suite (../shared/conformance). Needs root and ../shared.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
# The UML test kernel (cached after its first build; 6-10 minutes of both
# cores on a fresh machine) builds in the background at the lowest priority
# while the unit and host tests run; the kernel tests wait for it (its lock).
mkdir -p /var/tmp/lazysnap-kt-logs
( nice -n 19 bash kernel/build.sh >/var/tmp/lazysnap-kt-logs/kernel-build.log 2>&1 || true ) &
# Leftovers of an earlier, interrupted run would confuse containerd's shims.
for m in $(awk '$2 ~ /^\/tmp\/lazysnap-test-/ {print $2}' /proc/self/mounts | sort -r); do umount -l "$m" || true; done
rm -rf /tmp/lazysnap-test-* /var/tmp/lazysnap-converted-*
# Workers of an interrupted run keep serving (by design they outlive lazysnapd) and hold fanotify groups.
pkill -9 -f 'dist/cmd/lazysnap-fscache-worker.js' || true
# Unit tests first (fast), then the slower ones; one file at a time, since
# integration tests share containerd's /run/containerd and the machine's 2 cores. Kernel tests
# (dist/test/kernel) run inside the UML guest, from integration/kernel.test.js.
mapfile -t files < <(find dist/test/unit -name '*.test.js' | sort; find dist/test/integration -name '*.test.js' | sort)
exec node --test --test-concurrency=1 "${files[@]}"
