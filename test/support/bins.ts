// Host binaries the integration tests need. A missing one is a setup error,
// reported with the apt command that installs it (tests fail, never skip).
import { accessSync, constants } from 'node:fs';

const APT = 'apt-get install -t bookworm --no-install-recommends';
/** Another containerd (e.g. trixie's 1.7.24, extracted by scripts/containerd17.sh): its usr/bin. */
export const CONTAINERD_DIR = process.env.LAZYSNAP_CONTAINERD_DIR || '/usr/bin';

export const BINARIES = {
  containerd: { path: `${CONTAINERD_DIR}/containerd`, install: `${APT} containerd runc` },
  ctr: { path: `${CONTAINERD_DIR}/ctr`, install: `${APT} containerd` },
  shim: { path: `${CONTAINERD_DIR}/containerd-shim-runc-v2`, install: `${APT} containerd` },
  runc: { path: '/usr/sbin/runc', install: `${APT} runc` },
  registry: { path: '/usr/bin/docker-registry', install: `${APT} docker-registry` },
  umoci: { path: '/usr/bin/umoci', install: `${APT} umoci` },
  busybox: { path: '/bin/busybox', install: `${APT} busybox-static` },
  htpasswd: { path: '/usr/bin/htpasswd', install: `${APT} apache2-utils` },
} as const;

export type BinaryName = keyof typeof BINARIES;

/** Throws one error naming every missing binary and the command that installs it. */
export function requireBinaries(names: BinaryName[]): void {
  const missing: string[] = [];
  for (const name of names) {
    const { path, install } = BINARIES[name];
    try {
      accessSync(path, constants.X_OK);
    } catch {
      missing.push(`  ${path} (${name}): ${install}`);
    }
  }
  if (missing.length > 0) {
    throw new Error(`integration test prerequisites missing; install them with:\n${missing.join('\n')}`);
  }
}

export function bin(name: BinaryName): string {
  return BINARIES[name].path;
}
