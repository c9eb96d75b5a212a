#!/usr/bin/env bash
# lazysnap convert vs mkfs.erofs on the debootstrap image (needs root, umoci,
# erofs-utils, debootstrap or the cached rootfs in /var/cache/lazysnap-test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
npx tsc -p tsconfig.json
exec node dist/bench/convert/run.js
