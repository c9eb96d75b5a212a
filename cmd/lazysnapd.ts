#!/usr/bin/env node
// lazysnapd: the snapshotter daemon containerd dials as a [proxy_plugins] snapshotter.
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { applyFlags, ConfigError, MAX_CONFIG_BYTES, SYSTEM_CONFIG, configFile, loadConfig } from '../config/config';
import { readFailure, readRegularFile } from '../config/read-file';
import { CredentialProviderError, parseProviderConfig } from '../registry/credential-provider';
import { excerpt } from '../log/excerpt';
import { newLogger } from '../log/logger';
import { Snapshotter } from '../snapshotter/snapshotter';
import { serve, shutdown } from '../snapshotter/server';
import { SocketError } from '../snapshotter/socket';
import { adminService } from '../proto/load';
import { adminHandlers } from '../admin/service';
import { FscacheSetupError, cacheDirOf, criCredentialsDir, startFscache, traceDirOf, blobMetaDirOf, type Fscache } from '../supervisor/setup';
import { BlobMetaCache } from '../content/remote/meta-cache';
import { Learning } from '../mounts/learning';
import { serveCriImageProxy } from '../cri/image-proxy';
import { DaemonMetrics } from '../supervisor/metrics';
import { MetricsEndpointError, serveMetrics } from '../supervisor/metrics-endpoint';
import { diskUsage } from '../snapshotter/usage';
import { CacheBound } from '../mounts/cache-bound';
import { parseSize } from '../config/size';
import { VERSION } from './version';
import { runDoctor } from '../doctor/doctor';

/** containerd's config, which the start-up checks read */
const CONTAINERD_CONFIG = '/etc/containerd/config.toml';
import type { Config } from '../config/config';
import type { Logger } from 'pino';
import { sdNotify } from '../native';
import { InstanceLockedError, takeLock } from '../supervisor/instance-lock';

/** Startup problems an operator can fix: printed as one line, exit 1. */
class StartupError extends Error {}

function checkRoot(root: string) {
  const parent = path.dirname(root);
  if (!fs.existsSync(parent)) throw new StartupError(`root ${excerpt(root)}: parent directory ${excerpt(parent)} does not exist`);
  const st = fs.statSync(root, { throwIfNoEntry: false });
  if (!st) return;
  if (!st.isDirectory()) throw new StartupError(`root ${excerpt(root)} is not a directory`);
  // lazysnapd makes its root 0700: never a directory others share
  if (root === '/' || st.mode & 0o1000) throw new StartupError(`root ${excerpt(root)} is a shared directory; give lazysnapd one of its own`);
  if (st.uid !== process.getuid!()) throw new StartupError(`root ${excerpt(root)} is owned by uid ${st.uid}, not by lazysnapd's (${process.getuid!()})`);
}

async function main(argv: string[]) {
  const program = new Command('lazysnapd')
    .description('containerd remote snapshotter (proxy plugin) serving lazy nydus images and plain OCI images')
    .option('--config <file>', `TOML config file (default ${SYSTEM_CONFIG} if it exists, else the embedded defaults)`)
    .option('--root <dir>', 'state directory (overrides config "root")')
    .option('--address <socket>', 'unix socket to serve on (overrides config "address")')
    .option('--log-level <level>', 'overrides config log.level')
    .version(VERSION, '-v, --version', 'print the version and exit')
    .exitOverride()
    // commander's usage errors are one line too ("(Did you mean …?)" joins it)
    .configureOutput({ outputError: (str, write) => write(`lazysnapd: ${str.trim().replace(/\s*\n\s*/g, ' ')}\n`) })
    .parse(argv);
  const opts = program.opts<{ config?: string; root?: string; address?: string; logLevel?: string }>();
  const file = configFile(opts.config, fs.existsSync);
  const cfg = applyFlags(loadConfig(file), opts, (p) => path.resolve(p));
  const log = newLogger(cfg.log.level);
  checkCredentialProviders(cfg);

  checkRoot(cfg.root);
  // Before anything in the root is touched: a second lazysnapd must not take the running one's workers or socket.
  fs.mkdirSync(cfg.root, { recursive: true, mode: 0o700 });
  takeLock(path.join(cfg.root, 'lazysnapd.lock'), `root ${cfg.root}`, `serving ${cfg.address}`);
  const sn = Snapshotter.open(cfg.root, log);
  const images = () => sn.store.fscacheImages;
  const fscache = await startFscache(cfg, images, log);
  sn.lazy = fscache.lazy;
  fscache.lazy?.sweep();
  if (fscache.mounter) {
    // blob metadata kept for workers (content/remote/meta-cache.ts): only of blobs some image still has
    const keep = new Set(images().all().flatMap((i) => fscache.mounter!.deviceTags(i) ?? []));
    const meta = new BlobMetaCache(blobMetaDirOf(cfg));
    for (const id of meta.list()) if (!keep.has(id)) meta.drop(id);
  }
  const backend = fscache.mounter?.backend ?? 'none';
  const learning = fscache.lazy && fscache.supervisor && (backend === 'fscache' || backend === 'fanotify') && cfg.learn.record
    ? new Learning({ dir: traceDirOf(cfg), windowMs: cfg.learn.window_ms, images, traces: () => sn.store.traces, tell: (f) => fscache.supervisor!.learn(f, 1000), log })
    : undefined;
  if (learning && fscache.lazy) {
    learning.resume();
    fscache.lazy.learning = learning;
  }
  const metrics = cfg.metrics.address ? daemonMetrics(cfg, sn, fscache, backend, log) : undefined;
  const bound = cacheBound(cfg, sn, fscache, log, metrics);
  const admin = adminHandlers({
    mounter: fscache.mounter,
    supervisor: fscache.supervisor,
    images,
    fscacheDisabledReason: fscache.disabledReason,
    mountDirs: cfg.admin.mount_dirs,
    about: { version: VERSION, config: file ?? 'embedded defaults', root: cfg.root, address: cfg.address },
    snapshots: () => sn.store.view((tx) => tx.list()),
    traces: () => sn.store.traces,
    cache: async () => {
      return {
        dir: cacheDirOf(cfg),
        usage: await cacheUsage(cfg),
        maxBytes: bound?.maxBytes ?? 0,
        lowWaterBytes: bound?.lowWaterBytes ?? 0,
        evictions: bound?.evictions ?? 0,
      };
    },
    log,
  });
  // before the snapshotter's socket: an address in use stops the start with nothing served yet
  const metricsServer = metrics && (await serveMetrics(cfg.metrics.address, metrics));
  const criProxy = cfg.cri.image_proxy_address
    ? await serveCriImageProxy(cfg.cri.image_proxy_address, cfg.cri.containerd_address, criCredentialsDir(cfg), log)
    : undefined;
  const server = await serve(sn, cfg.address, log, [{ definition: adminService().service, handlers: admin }],
    metrics && ((method, ms, code) => {
      metrics.snapshotOps.observe({ snapshot_operation: method.toUpperCase() }, ms);
      if (code) metrics.snapshotErrors.inc({ snapshot_operation: method.toUpperCase(), code });
    }));
  log.info({ version: VERSION, root: cfg.root, address: cfg.address, fscache: fscache.disabledReason ?? 'enabled', backend, metrics: cfg.metrics.address || 'off' }, 'lazysnapd serving');
  if (criProxy) log.info({ address: cfg.cri.image_proxy_address, containerd: cfg.cri.containerd_address }, "serving CRI's ImageService in front of containerd (kubelet --image-service-endpoint)");
  sdNotify('READY=1');
  // what `lazysnap doctor --no-probes` would say, for the operator reading the log
  void runDoctor(cfg, { containerdConfig: CONTAINERD_CONFIG, probes: false }).then(
    (findings) => { for (const f of findings) if (f.verdict !== 'ok') log.warn({ check: f.check, fix: f.fix }, f.detail); },
    (err) => log.warn({ err: (err as Error).message }, 'the start-up checks failed'),
  );
  log.info(`point containerd at it: [proxy_plugins.lazysnap] type = "snapshot" address = "${cfg.address}" (the README shows the whole config for containerd 1.6, 1.7 and 2.x)`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    await shutdown(server);
    await criProxy?.close();
    metricsServer?.close();
    bound?.stop();
    learning?.stop();
    // With images mounted, the serving worker stays: containers keep reading, and the next lazysnapd takes over.
    await fscache.supervisor?.stop({ keepActive: images().all().length > 0 });
    sn.close();
    fs.rmSync(cfg.address, { force: true });
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

/** lazysnapd's metrics, fed by the snapshotter, the supervisor and its workers. */
function daemonMetrics(cfg: Config, sn: Snapshotter, fscache: Fscache, backend: string, log: Logger): DaemonMetrics {
  const m = new DaemonMetrics(VERSION, backend, log);
  if (fscache.supervisor) {
    fscache.supervisor.events = {
      metrics: (pid, values) => m.workerReport(pid, values),
      exited: (pid, how) => {
        m.workerExits.inc({ how });
        m.workerGone(pid);
      },
      failedOver: (ms) => m.failoverStall.observe(ms),
    };
  }
  sn.onLayer = (kind, refused) => {
    if (kind === 'oci') m.layers.inc({ mode: 'unpacked', reason: 'oci' });
    else if (refused) m.layers.inc({ mode: 'refused', reason: refused });
    else m.layers.inc({ mode: backend === 'download' ? 'download' : 'lazy', reason: backend });
  };
  m.gauge('snapshotter_cache_usage_kilobytes', 'Disk used by the blob cache, KiB (as nydus-snapshotter)',
    async () => (await cacheUsage(cfg)) / 1024);
  m.gauge('lazysnap_cache_max_bytes', 'The bound on the blob cache ([cache] max_size); 0: none', () => parseSize(cfg.cache.max_size));
  m.gauge('lazysnap_images_mounted', 'Nydus images mounted lazily (or from downloaded blobs) right now', () => sn.store.fscacheImages.all().filter((i) => i.mountpoint).length);
  return m;
}

/** kubelet's credential-provider config, read now so a bad one is a one-line error at start rather than at the first lazy read. */
function checkCredentialProviders(cfg: Config): void {
  const file = cfg.registry.credential_provider_config;
  if (!file) return;
  try {
    parseProviderConfig(readRegularFile(file, MAX_CONFIG_BYTES).toString('utf8'), file);
  } catch (e) {
    throw new ConfigError(e instanceof CredentialProviderError ? e.message : `${file}: ${readFailure(e)}`);
  }
}

/** Bytes the blob cache takes on disk (0 before it exists): for status, the metrics and the bound. */
async function cacheUsage(cfg: Config): Promise<number> {
  const dir = cacheDirOf(cfg);
  return fs.existsSync(dir) ? (await diskUsage(dir)).size : 0;
}

/** how often the cache's usage is measured against [cache] max_size */
const CACHE_CHECK_MS = 5000;

/** The cache's bound, when [cache] max_size sets one and images are served lazily. */
function cacheBound(cfg: Config, sn: Snapshotter, fscache: Fscache, log: Logger, metrics?: DaemonMetrics): CacheBound | undefined {
  const max = parseSize(cfg.cache.max_size);
  const lazy = fscache.lazy;
  if (max === 0 || !lazy || !fscache.mounter) return undefined;
  const cacheDir = cacheDirOf(cfg);
  const images = sn.store.fscacheImages;
  const inUse = (snapshotId: number) => sn.store.view((tx) => tx.inUse(snapshotId));
  if (metrics) fscache.mounter.onBlobsDropped = (n) => metrics.cacheEvictions.inc(n);
  const bound = new CacheBound(max, Math.floor((max * cfg.cache.low_water_percent) / 100), {
    usage: () => cacheUsage(cfg),
    // images a container pulled (never those `lazysnap mount` made for an operator), with no container on them now
    idle: () => images.all().flatMap((img) => (img.snapshotId !== null && !inUse(img.snapshotId)
      ? [{ fsid: img.fsid, lastUsedMs: lazy.lastUsedMs(img.snapshotId) || img.createdUs / 1000 }] : [])),
    evict: async (fsid) => {
      const id = images.get(fsid)?.snapshotId;
      return id !== null && id !== undefined && lazy.evict(id, () => !inUse(id));
    },
    budget: (bytes) => fscache.supervisor?.setPrefetchBudget(bytes),
    settleMs: fscache.mounter.backend === 'fscache' ? 1500 : 0,
    log,
  });
  bound.start(CACHE_CHECK_MS);
  log.info({ maxBytes: max, lowWaterBytes: bound.lowWaterBytes, cacheDir }, 'the cache is bounded');
  return bound;
}

main(process.argv).catch((err: Error & { code?: string }) => {
  if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') process.exit(0);
  if (err.code?.startsWith('commander.')) process.exit(1); // commander has printed it
  const known = err instanceof ConfigError || err instanceof SocketError || err instanceof StartupError || err instanceof FscacheSetupError || err instanceof InstanceLockedError || err instanceof MetricsEndpointError;
  process.stderr.write(`lazysnapd: ${known ? err.message : (err.stack ?? err.message)}\n`);
  process.exit(1);
});
