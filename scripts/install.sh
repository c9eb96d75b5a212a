#!/usr/bin/env bash
# Installs everything lazysnap needs on a fresh Debian 12 machine, as root,
# then builds it. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "install: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root (containerd, mounts and /dev/cachefiles need it)"; exit 2; }

# Debian packages, always from bookworm: installing from trixie with a plain
# apt-get install upgrades libc (see docs/NOTES.md).
PKGS=(containerd runc docker-registry umoci busybox-static apache2-utils erofs-utils debootstrap g++ make python3 ca-certificates openssl curl libzstd-dev liblz4-dev autoconf automake libtool)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install -t bookworm ${missing[*]}"
  apt-get update -q -o DPkg::Lock::Timeout=600 >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2
fi

command -v node >/dev/null || { log "Node.js 20 (>= 20.18) is required and not installed"; exit 2; }
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=18)?0:1)' \
  || { log "Node.js >= 20.18 is required, found $(node --version)"; exit 2; }

# npm ci only when package-lock.json changed since the last install.
stamp=node_modules/.lazysnap-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "npm ci (builds better-sqlite3 from source: about a minute)"
  npm ci --no-fund --no-audit >&2
  echo "$want" > "$stamp"
fi
# The addon again when its sources changed since it was built (npm ci builds it only with the lock).
addon=native/build/Release/lazysnap_native.node
if [ ! -f "$addon" ] || [ -n "$(find native/src native/binding.gyp -newer "$addon" -print -quit)" ]; then
  log "building the native addon"
  npm run --silent install >&2
fi
# tsc (about 10 s) only when a source changed since the last build: a start of
# scripts/run.sh on a built tree takes about a second.
stamp=dist/.built
if [ ! -f "$stamp" ] || [ -n "$(find . -path ./node_modules -prune -o -path ./dist -prune -o -path ./.git -prune -o \( -name '*.ts' -o -name '*.json' -o -name '*.proto' \) -newer "$stamp" -print -quit)" ]; then
  npm run --silent build >&2
  touch "$stamp"
fi
log "ready: $(node --version), $(containerd --version | cut -d' ' -f3)"
