// Bringing fscache up inside lazysnapd: take the /dev/cachefiles fd back from
// systemd's fd store if it kept one, or open and bind the device; hand the
// fd to systemd's fd store so an upgrade restart finds it again; start the
// worker supervisor.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/config';
import { sdListenFds, sdNotify } from '../native';
import { bindDevice, cullFile, loadCachefilesModule, openDevice } from './cachefiles';
import { credentialFileExposure } from '../registry/docker-config';
import { Mounter } from '../mounts/mounter';
import { FscacheSupervisor, heartbeatMsFor } from './supervisor';
import { previousWorkers, retireWorkers, takeFdFrom } from '../worker/takeover';
import { SnapshotMounts } from '../mounts/lazy-mounts';
import type { WorkerSettings } from '../worker/settings';
import { startFanotify } from './fanotify';
import { startDownload } from './download';
import { InstanceLockedError, takeLock } from './instance-lock';
import type { FscacheImages } from '../snapshotter/storage/images';

export const FDSTORE_NAME = 'cachefiles';

/** Where the lock on a cachefiles device lives: the same for every root, so two lazysnapds with different roots meet here. */
export function deviceLockFile(device: string): string {
  return path.join('/run/lazysnap/locks', `${device.replace(/^\/+/, '').replace(/[^A-Za-z0-9._-]/g, '_')}.lock`);
}

export class FscacheSetupError extends Error {}

export interface Fscache {
  supervisor?: FscacheSupervisor;
  mounter?: Mounter;
  /** lazy mounts for snapshots above a nydus bootstrap layer */
  lazy?: SnapshotMounts;
  /** why fscache is off, when it is */
  disabledReason?: string;
}

/** Where lazysnapd keeps the backends' state (workers, takeover socket, journals, bootstraps): <root>/fscache, made 0700. */
export function stateDir(cfg: Config): string {
  const dir = path.join(cfg.root, 'fscache');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** Where the CRI image proxy keeps pulls' credentials: <root>/credentials, 0700. */
export function criCredentialsDir(cfg: Config): string {
  return path.join(cfg.root, 'credentials');
}

/** Where blobs are fetched from, as whoever fetches them (a worker, or lazysnapd downloading) is told. */
export function registrySettings(cfg: Config): WorkerSettings['registry'] {
  return {
    hostsDir: cfg.registry.config_path, dockerConfig: cfg.registry.docker_config, plainHttp: cfg.registry.plain_http, criCredentialsDir: criCredentialsDir(cfg),
    credentialProviderConfig: cfg.registry.credential_provider_config, credentialProviderBinDir: cfg.registry.credential_provider_bin_dir,
    badChunkCooldownMs: cfg.registry.bad_chunk_cooldown_ms,
  };
}

/** Where remote blobs' metadata is kept for workers that take over (content/remote/meta-cache.ts). */
export function blobMetaDirOf(cfg: Config): string {
  return path.join(cfg.root, 'blobmeta');
}

/** Where learning journals live while a start is recorded (mounts/learning.ts). */
export function traceDirOf(cfg: Config): string {
  return path.join(cfg.root, 'learn');
}

/** cachefiles' cache dir, or the blob files of file-backed mounts. */
export function cacheDirOf(cfg: Config): string {
  return cfg.fscache.cache_dir || path.join(cfg.root, 'cache');
}

/**
 * With prefetch "on-pull" an image is mounted when its bootstrap layer is
 * committed, so the worker opens and fetches its blobs before any container.
 * With "off" too was tried and gained too little (docs/NOTES.md).
 */
export function mountsOnPull(cfg: Config): boolean {
  return cfg.fscache.prefetch === 'on-pull';
}

/** The lazy mounts under containers' snapshots, over `mounter`; a container's start holds the workers' prefetch back. */
export function snapshotMounts(cfg: Config, mounter: Mounter, images: () => FscacheImages, log: Logger, supervisor?: FscacheSupervisor): SnapshotMounts {
  return new SnapshotMounts(mounter, images, path.join(cfg.root, 'mounts'), cfg.fscache.domain, log, mountsOnPull(cfg),
    supervisor && (() => supervisor.holdPrefetch(PREFETCH_HOLD_ON_START_MS)));
}

/**
 * How long prefetch holds back when a container starts on a lazy image: its
 * first seconds need the CPU and the network more than the rest of the
 * image does (bench/startup: prefetch during the start cost up to 2x).
 */
const PREFETCH_HOLD_ON_START_MS = 3000;

/** How often the serving worker sends its metrics: a scrape sees READs this late at most, and a killed worker loses this much. */
const METRICS_REPORT_MS = 1000;

export async function startFscache(cfg: Config, images: () => FscacheImages, log: Logger): Promise<Fscache> {
  const want = cfg.fscache.enabled;
  if (want === false) return { disabledReason: 'disabled in config (fscache.enabled = false)' };
  if (cfg.fscache.backend === 'fanotify') return startFanotify(cfg, images, log);
  if (cfg.fscache.backend === 'download') return startDownload(cfg, images, log, 'fscache.backend = "download" in config');
  const fail = (reason: string): Fscache | Promise<Fscache> => {
    if (cfg.fscache.backend === 'auto') {
      log.info({ reason }, 'fscache on-demand is not available here; trying fanotify pre-content');
      return startFanotify(cfg, images, log, reason);
    }
    if (want === true) throw new FscacheSetupError(reason);
    log.info({ reason }, 'fscache is off; lazy images cannot be served');
    return { disabledReason: reason };
  };

  const dir = stateDir(cfg);
  const takeoverPath = path.join(dir, 'takeover.sock');
  const pidFile = path.join(dir, 'workers.json');
  const stored = sdListenFds().find((f) => f.name === FDSTORE_NAME);
  if (!stored && !fs.existsSync(cfg.fscache.device)) {
    const notLoaded = loadCachefilesModule();
    if (!fs.existsSync(cfg.fscache.device)) {
      return fail(`${cfg.fscache.device} does not exist after modprobe cachefiles${notLoaded ? ` (${notLoaded})` : ''}: this kernel lacks CONFIG_CACHEFILES (lazysnap doctor says what it has)`);
    }
    log.info('loaded the cachefiles module');
  }
  try {
    // Held for lazysnapd's life; its workers do not inherit it.
    takeLock(deviceLockFile(cfg.fscache.device), cfg.fscache.device, `root ${cfg.root}`);
  } catch (err) {
    if (err instanceof InstanceLockedError) return fail(err.message);
    throw err;
  }
  const fromWorker = stored ? null : await takeFdFrom(takeoverPath);
  const cacheDir = cacheDirOf(cfg);
  let devFd: number;
  if (stored) {
    devFd = stored.fd;
    log.info({ fd: devFd }, 'took the /dev/cachefiles fd back from the systemd fd store');
  } else if (fromWorker !== null) {
    devFd = fromWorker;
    log.info({ fd: devFd }, 'took the /dev/cachefiles fd back from the running fscache worker');
  } else {
    try {
      devFd = openDevice(cfg.fscache.device);
    } catch (err) {
      const busy = (err as NodeJS.ErrnoException).code === 'EBUSY' ? ' (the device opens once: another cachefiles daemon, e.g. cachefilesd or nydusd, holds it)' : '';
      return fail(`cannot open ${cfg.fscache.device}: ${(err as Error).message}${busy}`);
    }
    try {
      fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
      bindDevice(devFd, cacheDir, cfg.fscache.tag);
    } catch (err) {
      fs.closeSync(devFd);
      const code = (err as NodeJS.ErrnoException).code;
      const hint = code === 'EOPNOTSUPP' || code === 'ENOTSUP' ? ' (no on-demand mode in this kernel, or a cache dir without xattrs: tmpfs and hostfs refuse)' : '';
      return fail(`cannot bind ${cfg.fscache.device} to ${cacheDir}: ${(err as Error).message}${hint}`);
    }
    log.info({ cacheDir, tag: cfg.fscache.tag }, 'bound /dev/cachefiles in on-demand mode');
  }
  if (sdNotify(`FDSTORE=1\nFDNAME=${FDSTORE_NAME}`, [devFd])) log.info('gave the /dev/cachefiles fd to the systemd fd store');
  // Workers of a previous lazysnapd may still serve (they outlive it); two readers of one device would split its requests.
  await retireWorkers(previousWorkers(pidFile), log);

  const supervisor = startSupervisor(cfg, devFd, { backend: 'fscache', blobDir: '', journalDir: '' }, log);
  const mounter = new Mounter(images, path.join(dir, 'images'), log, cacheDir, (d, name) => cullFile(devFd, d, name));
  return { supervisor, mounter, lazy: snapshotMounts(cfg, mounter, images, log, supervisor) };
}

/** Workers for `fd` (the device, or the fanotify group): one serving, one standby. */
export function startSupervisor(cfg: Config, fd: number, backend: Pick<WorkerSettings, 'backend' | 'blobDir' | 'journalDir'>, log: Logger): FscacheSupervisor {
  const dir = stateDir(cfg);
  // The worker reads registry credentials from here at fetch time; lazysnap never copies them.
  const exposed = credentialFileExposure(cfg.registry.docker_config);
  if (exposed) log.warn({ file: cfg.registry.docker_config }, exposed);
  const supervisor = new FscacheSupervisor({
    devFd: fd,
    log,
    standby: cfg.fscache.standby_worker,
    pidFile: path.join(dir, 'workers.json'),
    hangTimeoutMs: cfg.fscache.hang_timeout_ms,
    worker: {
      ...backend,
      dbPath: path.join(cfg.root, 'metadata.db'),
      takeoverPath: path.join(dir, 'takeover.sock'),
      logLevel: cfg.log.level,
      prefetch: cfg.fscache.prefetch !== 'off',
      blobMetaDir: blobMetaDirOf(cfg),
      learn: { dir: cfg.learn.record ? traceDirOf(cfg) : '', replay: cfg.learn.replay },
      readDeadlineMs: cfg.fscache.read_deadline_ms,
      heartbeatMs: heartbeatMsFor(cfg.fscache.hang_timeout_ms),
      metricsMs: cfg.metrics.address ? METRICS_REPORT_MS : 0,
      registry: registrySettings(cfg),
    },
  });
  supervisor.start();
  return supervisor;
}
