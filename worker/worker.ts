// The fscache worker: a process of its own, so that a crash or upgrade of the
// request-serving code never drops the /dev/cachefiles fd (lazysnapd keeps
// it). It receives the fd on its control socket (a standby may have it
// already and take over at the serving worker's death: handover.ts), writes
// `restore` (the kernel then re-sends what the previous worker left
// unanswered, and re-OPENs objects on demand), and serves. Its only state
// is rebuilt from OPENs and the metadata database.
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { CachefilesDevice } from './device';
import { FscacheDaemon } from './daemon';
import { BlobFile, ControlRequest, Heartbeat, MetricsReport, WorkerStatus, contentStatus, onJsonLines, sendJson } from './control';
import { WorkerMetrics } from './metrics';
import type { ReadObserver } from '../content/content';
import type { RemoteBlobContent } from '../content/remote';
import { serveFanotify } from './serve-fanotify';
import { deadJournals } from './fanotify/group';
import { cmd } from './protocol';
import { MetadataResolver, replayPlanOf } from './resolver';
import { remoteOpener, type RemoteOpener } from './remote-opener';
import type { WorkerSettings } from './settings';
import { reniceThreads } from './renice';
import { serveTakeover } from './takeover';
import { awaitDevice } from './handover';
import { TraceRecorder } from './learn/trace-recorder';
import { warmFetchPath } from './warm-up';

export interface WorkerOptions {
  controlFd: number;
  settings: WorkerSettings;
  log: Logger;
}

export async function runWorker(o: WorkerOptions): Promise<void> {
  // Before `ready`: a test may signal the worker the moment it serves.
  if (process.env[TEST_HOOKS_ENV] === '1') installTestHooks(o.log);
  // Loaded: from here on a death is a kill or a crash, not a worker that cannot start.
  fs.writeSync(o.controlFd, JSON.stringify({ event: 'loaded', pid: process.pid }) + '\n');
  const remote = remoteOpener(o.settings, o.log);
  // while it waits for the handover (or in its first moments): a first read then finds the fetch path compiled and set up
  const warmUpStop = new AbortController();
  const warmedUp = warmFetchPath(o.log, warmUpStop.signal);
  const metrics = new WorkerMetrics();
  const resolver = MetadataResolver.open(o.settings.dbPath, remote.open, { opened: (c, image) => metrics.label(c, image), closing: (c) => metrics.closing(c) });
  // A standby opens the mounted images' blobs while it waits: after a handover its first OPENs answer at once
  // (under repeated kills a successor that opened them only then did nothing else before it was killed too).
  if (o.settings.backend === 'fscache') {
    warmStandby(resolver, o.log).catch((err) => o.log.warn({ err: (err as Error).message }, 'standby: cannot open the mounted images\' blobs ahead'));
  }
  const dev = await awaitDevice(o.controlFd);
  if (!dev) {
    o.log.info('lazysnapd closed the control socket before a handover; exiting');
    process.exit(0);
  }
  const devFd = dev.fd;
  // lazysnapd set this standby's threads to nice 10 once it loaded and sets them back to 0 as it activates it; threads
  // started in between may have missed that (see worker/renice.ts), and an armed standby takes over before lazysnapd
  // has even seen the exit
  if (process.getuid?.() === 0) reniceThreads(process.pid, 0);
  if (dev.exitSeenAt !== undefined) o.log.info({ pid: process.pid }, 'the serving worker exited; this standby takes over');
  if (o.settings.backend === 'fanotify') {
    // A fanotify response names its event by fd number, and a successor holds its orphans' numbers before its first
    // read: a number held then by a passing fd of the warm-up would be freed later, and a new event could take it.
    // So a fanotify worker serves once the warm-up has closed its fds, stopped first if readers wait (orphans).
    // Waiting before serving, not before polling: a serving worker that does not poll its group is judged hung.
    if (deadJournals(o.settings.journalDir).orphans.length > 0) warmUpStop.abort();
    await warmedUp;
  }
  const recorder = o.settings.learn.dir ? new TraceRecorder(o.settings.learn.dir, o.log) : undefined;
  const serving = o.settings.backend === 'fanotify'
    ? serveFanotify(devFd, resolver, o.settings, o.log, metrics.read, recorder)
    : serveFscache(devFd, resolver, o.settings, o.log, metrics.read, recorder);

  const control = new net.Socket({ fd: o.controlFd, readable: true, writable: true });
  // requests lazysnapd sent before this armed standby saw the exit (worker/handover.ts): read first
  if (dev.early) control.unshift(dev.early);
  let retiring = false;
  onJsonLines(
    control,
    (m) => {
      const req = m as ControlRequest;
      if (req.op === 'status') {
        sendJson(control, { id: req.id, result: serving.status() });
      } else if (req.op === 'hold-prefetch') {
        if (Number.isFinite(req.ms) && req.ms > 0) remote.holdPrefetch(Math.min(req.ms, 60_000));
      } else if (req.op === 'prefetch-budget') {
        if (Number.isSafeInteger(req.bytes) && req.bytes >= 0) serving.setPrefetchBudget?.(req.bytes);
      } else if (req.op === 'open-blobs') {
        if (Array.isArray(req.blobs)) {
          serving.openBlobs?.(req.blobs.filter((b) => typeof b?.file === 'string' && Number.isSafeInteger(b?.size) && b.size > 0)
            .map((b) => ({ file: b.file, size: b.size, created: b.created === true })));
        }
      } else if (req.op === 'learn') {
        sendJson(control, { id: req.id, result: typeof req.file === 'string' && recorder ? recorder.learn(req.file) : false });
      } else if (req.op === 'retire') {
        retiring = true;
        clearInterval(heartbeat);
        clearInterval(reporting);
        serving.stop();
        const wait = setInterval(() => {
          if (serving.requests.pending > 0) return;
          clearInterval(wait);
          sendJson(control, { id: req.id, result: 'retired' });
          process.exit(0);
        }, 10);
      }
    },
    (line) => o.log.warn({ line: line.slice(0, 200) }, 'malformed control message'),
  );
  // Parent gone: keep serving; the fd stays bound as long as this process holds it.
  control.on('close', () => {
    if (!retiring) o.log.warn('control socket closed (lazysnapd exited?); still serving');
  });
  control.on('error', () => {});

  serving.start();
  // A warm-up not done yet stops at the first request: readers need the CPU more (kernel/hang: a successor still
  // warming up, its standby time starved by a spinning worker, stretched a failover's stall by 3 s on one CPU).
  stopWarmUpOnFirstRequest(serving.requests, warmedUp, warmUpStop);
  if (o.settings.takeoverPath) serveTakeover(o.settings.takeoverPath, devFd, o.log);
  sendJson(control, { event: 'ready', pid: process.pid, ...(dev.exitSeenAt !== undefined ? { exitSeenAt: dev.exitSeenAt } : {}) });
  const heartbeat = startHeartbeat(control, serving, o.settings.heartbeatMs);
  const reporting = startMetricsReports(control, metrics, remote, serving, o.settings.metricsMs, o.log);
  o.log.info({ pid: process.pid, backend: o.settings.backend }, 'worker serving');
}

function stopWarmUpOnFirstRequest(requests: RequestProgress, warmedUp: Promise<boolean>, stop: AbortController): void {
  const timer = setInterval(() => {
    if (requests.handled > 0 || requests.pending > 0) stop.abort();
  }, 10);
  void warmedUp.finally(() => clearInterval(timer));
}

/** Opens every mounted image's bootstrap and blobs into the resolver's cache (best effort, one at a time). */
async function warmStandby(resolver: MetadataResolver, log: Logger): Promise<void> {
  const t0 = Date.now();
  let opened = 0;
  const hosts = new Set<string>();
  for (const [volume, cookie] of resolver.mountedObjects()) {
    try {
      const c = await resolver.resolve(volume, cookie);
      // and one byte from each registry host: its connection and the fetch path are warm too
      const remote = c as Partial<RemoteBlobContent>;
      if (remote.reader && remote.hostKey && !hosts.has(remote.hostKey)) {
        hosts.add(remote.hostKey);
        await remote.reader.readRange(0, 1).catch(() => undefined);
      }
      resolver.release(c);
      opened++;
    } catch (err) {
      log.debug({ volume, cookie, err: (err as Error).message }, 'standby: cannot open this blob ahead');
    }
  }
  if (opened) log.debug({ opened, ms: Date.now() - t0 }, 'standby: blobs of mounted images opened ahead');
}

/** Progress of the kernel's requests, as either daemon keeps it. */
export interface RequestProgress {
  /** requests answered so far */
  readonly handled: number;
  /** in flight */
  readonly pending: number;
  /** how long the oldest read in flight has waited, ms (0: none) */
  oldestReadMs(now: number): number;
}

/** What the control channel and the heartbeat need of either backend. */
export interface Serving {
  /** begins answering the kernel (fscache: after `restore`) */
  start(): void;
  /** stops taking new requests; those in flight finish */
  stop(): void;
  readonly requests: RequestProgress;
  /** still polling its device (the heartbeat's `reading`) */
  readonly reading: boolean;
  status(): WorkerStatus;
  /** bytes prefetch may still add to the cache (fscache: the only backend that prefetches) */
  setPrefetchBudget?(bytes: number): void;
  /** prefetches stopped at the cache's bound so far */
  prefetchesStopped?(): number;
  /** fanotify: opens these blob files' contents now (fscache opens them at the kernel's OPEN, at mount) */
  openBlobs?(blobs: BlobFile[]): void;
}

function serveFscache(devFd: number, resolver: MetadataResolver, s: WorkerSettings, log: Logger, onRead: ReadObserver, recorder?: TraceRecorder): Serving {
  const device = new CachefilesDevice(devFd);
  const daemon = new FscacheDaemon(device, resolver, log, {
    readAttempts: 4,
    retryDelayMs: 50,
    readDeadlineMs: s.readDeadlineMs,
    prefetch: s.prefetch,
    onRead,
    recorder,
    replayPlan: replayPlanOf(resolver, s.learn.replay, log),
  });
  return {
    start() {
      // journals first: READs the kernel re-sends after `restore` are recorded too
      recorder?.scan();
      device.command(cmd.restore());
      device.serve(
        (m) => void daemon.handle(m),
        (err) => log.error({ err: err.message }, 'bad message from /dev/cachefiles'),
      );
    },
    stop: () => device.stop(),
    requests: daemon,
    setPrefetchBudget: (bytes) => daemon.setPrefetchBudget(bytes),
    prefetchesStopped: () => daemon.prefetchesStopped,
    get reading() {
      return device.reading;
    },
    status: () => ({
      pid: process.pid,
      backend: 'fscache',
      stats: daemon.stats,
      pending: daemon.pending,
      objects: daemon.objects.all().map((x) => ({
        objectId: x.objectId,
        volume: x.volume,
        cookie: x.cookie,
        size: x.content.size,
        reads: x.reads,
        bytesWritten: x.bytesWritten,
        ...contentStatus(x.content),
      })),
    }),
  };
}

/** A timer on the event loop: when the loop stops, spins or blocks, the heartbeats stop too, and lazysnapd notices. */
function startHeartbeat(control: net.Socket, serving: Serving, everyMs: number): NodeJS.Timeout {
  let due = Date.now() + everyMs;
  let worstLoopStallMs = 0;
  const beat = () => {
    const now = Date.now();
    worstLoopStallMs = Math.max(worstLoopStallMs, now - due);
    due = now + everyMs;
    const hb: Heartbeat = {
      event: 'heartbeat',
      pid: process.pid,
      sentAt: now,
      handled: serving.requests.handled,
      inflight: serving.requests.pending,
      oldestReadMs: serving.requests.oldestReadMs(now),
      reading: serving.reading,
      worstLoopStallMs,
    };
    sendJson(control, hb);
  };
  beat();
  return setInterval(beat, everyMs);
}

/** Sends the metrics every `everyMs` (not at all when 0): a killed worker loses at most that much of its counts. */
function startMetricsReports(control: net.Socket, metrics: WorkerMetrics, remote: RemoteOpener, serving: Serving, everyMs: number, log: Logger): NodeJS.Timeout | undefined {
  if (everyMs <= 0) return undefined;
  const report = async () => {
    metrics.sample(remote.registryStats(), serving.prefetchesStopped?.() ?? 0);
    const m: MetricsReport = { event: 'metrics', pid: process.pid, metrics: await metrics.snapshot() };
    sendJson(control, m);
  };
  return setInterval(() => void report().catch((err) => log.warn({ err: (err as Error).message }, 'cannot report metrics')), everyMs);
}

/** Set in lazysnapd's environment (workers inherit it) by tests only. */
export const TEST_HOOKS_ENV = 'LAZYSNAP_TEST_HOOKS';

/** SIGUSR2 makes the loop spin (up to 2 min): a hung worker that is neither stopped nor dead. */
function installTestHooks(log: Logger): void {
  process.on('SIGUSR2', () => {
    log.warn('test hook: blocking the event loop');
    const until = Date.now() + 120_000;
    while (Date.now() < until) {
      // spin
    }
  });
}
