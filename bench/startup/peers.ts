// The lazy-pulling snapshotters users compare lazysnap with, as this
// benchmark makes their images and starts them: stargz-snapshotter
// (eStargz, `ctr-remote image convert --estargz --oci`) and soci-snapshotter
// (the OCI original plus a SOCI index, `soci create` + `soci push`). Their
// binaries come from scripts/peers.sh (Debian's packages, unpacked). Each
// daemon runs with its documented default config; only what this machine
// needs is set (socket, root, the test CA for soci).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { join, resolve } from 'node:path';
import type { Containerd } from '../../test/support/containerd';
import { isRunning, runOk, spawnDaemon, stopDaemon, tail } from '../../test/support/proc';
import { canConnect, waitFor } from '../../test/support/wait';

export type Peer = 'stargz' | 'soci';

const PEERS_SH = resolve(__dirname, '../../../scripts/peers.sh');

/** The directory with a peer's binaries (cached; fetched on the host, since the guest has no network). */
export function peerBinDir(peer: Peer): string {
  return execFileSync('bash', [PEERS_SH, peer], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

/** soci keeps its content store and artifacts db under this fixed path, whatever --root says. */
const SOCI_FIXED_ROOT = '/var/lib/soci-snapshotter-grpc';

export interface PeerDaemon {
  /** the proxy plugin's name in containerd's config, and CRI's snapshotter */
  name: Peer;
  socket: string;
  logPath: string;
  stop(): Promise<void>;
}

/**
 * Binds soci's fixed root to `dir` until the returned function is called, so
 * that neither the CLI nor the daemon writes to the machine's own /var/lib and
 * each run starts cold.
 */
async function bindSociRoot(dir: string): Promise<() => Promise<void>> {
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(SOCI_FIXED_ROOT, { recursive: true });
  await runOk('mount', ['--bind', dir, SOCI_FIXED_ROOT]);
  return async () => void (await runOk('umount', ['-l', SOCI_FIXED_ROOT]));
}

async function startPeerDaemon(name: Peer, bin: string, args: string[], dir: string, socket: string,
  o: { env?: NodeJS.ProcessEnv; stopSignal?: NodeJS.Signals } = {}): Promise<PeerDaemon> {
  const logPath = join(dir, `${name}.log`);
  const daemon = spawnDaemon(bin, args, logPath, o.env);
  await waitFor(async () => {
    if (!isRunning(daemon)) throw new Error(`${name} exited during startup:\n${await tail(logPath)}`);
    return canConnect(socket);
  }, { what: `${name} to listen on ${socket}`, timeoutMs: 30_000 });
  return { name, socket, logPath, stop: async () => void (await stopDaemon(daemon, o.stopSignal)) };
}

/**
 * containerd-stargz-grpc (scripts/stargz-grpc.sh builds it) with an empty
 * config: its defaults, prefetch of the landmark's files and background
 * fetch. SIGINT: on SIGTERM it leaves its FUSE mounts for a successor.
 */
export async function startStargz(dir: string): Promise<PeerDaemon> {
  fs.mkdirSync(dir, { recursive: true });
  const config = join(dir, 'stargz.toml');
  fs.writeFileSync(config, '');
  const socket = join(dir, 'stargz.sock');
  return startPeerDaemon('stargz', join(peerBinDir('stargz'), 'containerd-stargz-grpc'),
    ['--address', socket, '--root', join(dir, 'root'), '--config', config, '--log-level', 'info'], dir, socket, { stopSignal: 'SIGINT' });
}

/**
 * soci-snapshotter-grpc with an empty config (its defaults: background fetch).
 * caPath: soci 0.4.1 fetches its index over HTTPS even from 127.0.0.1 (see
 * dual-front.ts); Go takes extra roots from SSL_CERT_FILE.
 */
export async function startSoci(dir: string, caPath: string): Promise<PeerDaemon> {
  fs.mkdirSync(dir, { recursive: true });
  const config = join(dir, 'soci.toml');
  fs.writeFileSync(config, '');
  const socket = join(dir, 'soci.sock');
  const unbind = await bindSociRoot(join(dir, 'var-lib'));
  try {
    const d = await startPeerDaemon('soci', join(peerBinDir('soci'), 'soci-snapshotter-grpc'),
      ['--address', socket, '--root', join(dir, 'root'), '--config', config, '--log-level', 'info'], dir, socket,
      { env: { ...process.env, SSL_CERT_FILE: caPath } });
    return { ...d, stop: async () => {
      await d.stop();
      await unbind();
    } };
  } catch (e) {
    await unbind();
    throw e;
  }
}

/** The eStargz image of `src` (in `prep`'s content store), pushed as `dst`, converted with stargz's own tool. */
export async function pushEstargz(prep: Containerd, src: string, dst: string): Promise<void> {
  const ctrRemote = join(peerBinDir('stargz'), 'ctr-remote');
  const ctr = (args: string[]) => runOk(ctrRemote, ['--address', prep.address, '-n', prep.namespace, ...args], { timeoutMs: 1_800_000 });
  await ctr(['image', 'convert', '--estargz', '--oci', src, dst]);
  await ctr(['image', 'push', '--plain-http', dst]);
}

/**
 * A SOCI index for `ref` (in `prep`'s content store), pushed next to it as a
 * referrer (the registry has no referrers API: soci uses the tag fallback).
 * --min-layer-size 0: a ztoc for every layer. With the default (10 MiB) a
 * small layer takes soci 0.4.1's "local snapshot" path, which under CRI has
 * no layer size, resolves the layer digest as a manifest and gives up after
 * 9 attempts (8 s) before containerd unpacks the layer itself.
 */
export async function pushSociIndex(prep: Containerd, ref: string, workDir: string): Promise<void> {
  const soci = join(peerBinDir('soci'), 'soci');
  const cli = (args: string[]) => runOk(soci, ['--address', prep.address, '-n', prep.namespace, ...args], { timeoutMs: 1_800_000 });
  const unbind = await bindSociRoot(join(workDir, 'soci-cli'));
  try {
    await cli(['create', '--min-layer-size', '0', ref]);
    await cli(['push', '--plain-http', ref]);
  } finally {
    await unbind();
  }
}
