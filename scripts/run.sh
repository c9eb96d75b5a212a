#!/usr/bin/env bash
# The main job: install what is missing, build what changed (nothing, on a
# built tree: it starts in about a second), and run lazysnapd in the
# foreground. Arguments go to lazysnapd (--config, --root, --address, ...);
# its first log lines say where it serves and the containerd config for it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
exec node dist/cmd/lazysnapd.js "$@"
