// A node's pair, for tests through containerd's CRI: lazysnapd (its config
// from the caller, which is told the paths it needs) and containerd with CRI
// pulling into it; stopped in the right order, with the mounts and workers
// they leave. One fixture for the CRI tests on the host and in the guest.
import { join } from 'node:path';
import type { CriClient } from './cri';
import { startGuestContainerd, type GuestContainerd } from './guest-containerd';
import { killWorkers, startLazysnapd, type Lazysnapd } from './lazysnapd';
import { tail } from './proc';
import { unmountAll } from './tmp';

export interface CriNodePaths {
  /** lazysnapd's root */
  root: string;
  /** containerd's hosts.toml directory, for [registry] config_path */
  certsDir: string;
  /** containerd's socket (CRI is served on it too) */
  containerdSocket: string;
}

export interface CriNode {
  lazysnapd: Lazysnapd;
  ctrd: GuestContainerd;
  cri: CriClient;
  /** the ends of both logs, for a failure's message */
  logs(): Promise<string>;
  stop(): Promise<void>;
}

export async function startCriNode(o: {
  dir: string;
  registryHost: string;
  sandboxImage: string;
  /** lazysnapd's TOML (root = … included) */
  config: (p: CriNodePaths) => string;
  logPath?: string;
}): Promise<CriNode> {
  const ctrdDir = join(o.dir, 'containerd');
  const paths: CriNodePaths = { root: join(o.dir, 'lazysnap'), certsDir: join(ctrdDir, 'certs.d'), containerdSocket: join(ctrdDir, 'containerd.sock') };
  const lazysnapd = await startLazysnapd({ root: paths.root, address: join(o.dir, 'lazysnap.sock'), config: o.config(paths), logPath: o.logPath });
  let ctrd: GuestContainerd;
  try {
    ctrd = await startGuestContainerd({ dir: ctrdDir, snapshotterSocket: lazysnapd.address, registryHost: o.registryHost, sandboxImage: o.sandboxImage });
  } catch (e) {
    await lazysnapd.stop();
    throw e;
  }
  return {
    lazysnapd,
    ctrd,
    cri: ctrd.cri,
    logs: async () => `\n--- containerd ---\n${await tail(ctrd.logPath, 2500)}\n--- lazysnapd ---\n${await tail(lazysnapd.logPath, 4000)}`,
    stop: async () => {
      await ctrd.stop().catch(() => {});
      await lazysnapd.stop().catch(() => {});
      await unmountAll(o.dir).catch(() => {});
      killWorkers(lazysnapd.root); // stopped with images mounted, its worker kept serving
    },
  };
}
