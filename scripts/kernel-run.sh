#!/usr/bin/env bash
# Runs a command inside lazysnap's UML test kernel (kernel/build.sh builds it
# from Debian's linux-source-6.12 the first time, then it is cached).
#   scripts/kernel-run.sh [-t SECS] [-m MEM] [-f FSCACHE_MB] -- CMD [ARG...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kernel=${LAZYSNAP_KERNEL:-$(bash kernel/build.sh)}
exec bash kernel/uml-run.sh -k "$kernel" "$@"
