#!/usr/bin/env bash
# The main job: install, build, and run lazysnapd in the foreground with the
# embedded default config (root /var/lib/lazysnap, socket
# /run/lazysnap/snapshotter.sock). Arguments go to lazysnapd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
cat >&2 <<'TOML'
lazysnapd is starting. Point containerd at it (/etc/containerd/config.toml, then restart containerd):

  version = 2
  [proxy_plugins.lazysnap]
    type = "snapshot"
    address = "/run/lazysnap/snapshotter.sock"

and pull/run with: ctr images pull --snapshotter lazysnap IMAGE; ctr run --snapshotter lazysnap IMAGE ID
TOML
exec node dist/cmd/lazysnapd.js "$@"
