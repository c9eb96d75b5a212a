#!/usr/bin/env bash
# Chunk fetcher vs curl on a ~256 MiB nydus blob in docker-registry on
# 127.0.0.1, directly and through a +20 ms RTT / 200 Mbit/s shaping proxy.
# Needs docker-registry and curl. BENCH_REPS=N for more repetitions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
npx tsc -p tsconfig.json
# the fetcher runs in this process: give it the malloc settings a worker starts with
GLIBC_TUNABLES=$(node -e "process.stdout.write(require('./dist/supervisor/malloc-tunables').workerTunables(process.env.GLIBC_TUNABLES))")
export GLIBC_TUNABLES
exec node dist/bench/fetch/run.js
