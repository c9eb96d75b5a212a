// lazysnapd's side of fscache: it opens /dev/cachefiles once and holds the fd
// for its whole life, so a dying worker never unbinds the cache. Workers are
// child processes; one serves, one waits fully loaded as a standby, so a
// failover costs a `restore`, not a Node start. The loaded standby is armed
// (the device and a pidfd of the serving worker): it takes over at that
// worker's death by itself, and lazysnapd follows when it sees the exit.
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { pidfdOpen, sendFds, socketpair } from '../native';
import { reniceThreads } from '../worker/renice';
import { ARM_BYTE, BlobFile, ControlReply, HANDOVER_BYTE, Heartbeat, WorkerEvent, WorkerStatus, onJsonLines, sendJson } from '../worker/control';
import { SETTINGS_ENV, WorkerSettings, encodeSettings } from '../worker/settings';
import { judgeWorker } from './liveness';
import { workerTunables } from './malloc-tunables';

export interface SupervisorOptions {
  devFd: number;
  log: Logger;
  /** the worker entry point (dist/cmd/lazysnap-fscache-worker.js) */
  workerJs?: string;
  /** keep a loaded standby worker (default true) */
  standby?: boolean;
  /** the workers' pids, so a restarted lazysnapd can retire them */
  pidFile?: string;
  /** what every worker is started with */
  worker: WorkerSettings;
  /** a serving worker silent (or stuck) this long is killed and replaced (config fscache.hang_timeout_ms) */
  hangTimeoutMs: number;
}

export interface SupervisorEvents {
  /** a worker's cumulative metric values */
  metrics(pid: number, metrics: unknown): void;
  /** a worker ended: the serving one hung (killed by lazysnapd), killed (by a signal) or crashed (exited); a standby; or one retired */
  exited(pid: number, how: 'hung' | 'killed' | 'crashed' | 'standby' | 'retired'): void;
  /** the successor of a serving worker that ended serves, stallMs after that end */
  failedOver(stallMs: number): void;
}

/** Health of the serving worker as lazysnapd sees it, without asking it: for `lazysnap status`. */
export interface WorkerHealth {
  hangTimeoutMs: number;
  /** hung serving workers killed and replaced so far */
  hangsHealed: number;
  /** since the serving worker's last sign of life (heartbeat, load or activation), ms */
  silentMs: number | null;
  /** judged hung and being replaced */
  hung: boolean;
  /** from its last heartbeat: kernel messages the serving worker has handled to the end, and is handling */
  handled: number | null;
  inflight: number | null;
  oldestReadMs: number | null;
  /** the longest gap between a serving worker's heartbeats (or from its activation to the first), as sent: how close healthy workers came to the bound */
  worstSilenceMs: number;
  /** the longest event-loop stall any worker reported, ms */
  worstLoopStallMs: number;
  /** lazysnapd's own longest stall seen by its watchdog, ms (such a check is skipped: unread heartbeats are not silence) */
  worstOwnStallMs: number;
  /** the next failover's worker: loaded and waiting, still starting, or none (standby off, or being replaced) */
  standby: 'loaded' | 'starting' | 'none';
  /** the last failover: from the serving worker's end to its successor's `ready` (sent after its `restore`), ms (null: none yet) */
  lastFailoverStallMs: number | null;
}

interface Worker {
  proc: ChildProcess;
  control: net.Socket;
  ctrlFd: number;
  /** readable once it has exited (-1: none); what its standby is armed with */
  pidfd: number;
  /** a standby given the device and the serving worker's pidfd: it takes over by itself, and is never handed the device */
  armed: boolean;
  startedAt: number;
  activatedAt?: number;
  ready: Promise<void>;
  /** when it said it serves: an armed standby may before lazysnapd has seen its predecessor's exit */
  readyAt?: number;
  /** an armed standby that took over: when it saw its predecessor's exit */
  exitSeenAt?: number;
  /** its code loaded: a later death is a kill or a crash, not a failed start */
  loaded: boolean;
  loadedAt?: number;
  lastHeartbeatAt?: number;
  heartbeat?: Heartbeat;
  /** why it was killed as hung */
  hung?: string;
  pending: Map<number, (r: ControlReply) => void>;
}

const MAX_BACKOFF_MS = 30_000;
/** how often lazysnapd judges the serving worker; adds at most this to a hang's detection */
const CHECK_MS = 250;
/** a watchdog tick this late (or this long in the loop's poll phase) means lazysnapd itself stalled */
const OWN_STALL_MS = 250;
/** a worker whose Node has not even loaded this long after activation is hung (a start takes 1-3 s on a busy 2-core host) */
const START_TIMEOUT_MS = 30_000;
/**
 * After a failover, the next standby starts at once on a node of several CPUs, and a second later on a node of one:
 * there its Node start took the CPU from the successor's first READs (bench/fscache in the one-CPU guest, paired
 * runs: stall p50 425-443 ms at once, 310-351 ms a second later), while on the 2-core host starting it at once keeps
 * a loaded standby for kills that come fast (fanotify failover test: worst stall 113-124 ms at once, 341-381 ms a
 * second later).
 */
const STANDBY_REFILL_DELAY_MS = os.availableParallelism() > 1 ? 0 : 1000;
/** A standby's nice value; the serving worker's is 0. */
const STANDBY_NICE = 10;
const CAN_RENICE = process.getuid?.() === 0;

/** the heartbeat period: several per hang timeout, so one late beat is never a hang */
export function heartbeatMsFor(hangTimeoutMs: number): number {
  return Math.max(50, Math.min(250, Math.floor(hangTimeoutMs / 8)));
}

export class FscacheSupervisor {
  private active: Worker | undefined;
  private standby: Worker | undefined;
  private stopping = false;
  private nextId = 1;
  /** workers in a row that died before they were ready: a crash loop, not a kill */
  private failedStarts = 0;
  private timer: NodeJS.Timeout | undefined;
  private refillTimer: NodeJS.Timeout | undefined;
  /** how many times a worker was (re)activated; for status and tests */
  activations = 0;
  /** hung serving workers killed and replaced */
  hangsHealed = 0;
  private worstSilenceMs = 0;
  private worstLoopStallMs = 0;
  private worstOwnStallMs = 0;
  /** when the last serving worker ended, until its successor serves */
  private lastEndAt: number | undefined;
  private lastFailoverStallMs: number | null = null;
  private watchdog: NodeJS.Timeout | undefined;
  private lastTickAt = 0;
  private checksSkipped = 0;
  readonly workerJs: string;
  /** told of workers' metric reports, ends and failovers (lazysnapd's metrics), once set */
  events?: SupervisorEvents;

  /** what its log lines and errors call a worker: "fscache worker" or "fanotify worker" */
  private readonly name: string;

  constructor(private readonly o: SupervisorOptions) {
    this.name = `${o.worker.backend} worker`;
    // LAZYSNAP_FSCACHE_WORKER overrides the entry point (tests use it for a worker that cannot start).
    this.workerJs = o.workerJs ?? process.env.LAZYSNAP_FSCACHE_WORKER ?? path.resolve(__dirname, '../cmd/lazysnap-fscache-worker.js');
  }

  start(): void {
    this.activate(this.spawnWorker());
    this.refillStandby();
    // Judged in the check phase, after the poll phase has read the heartbeats already on the socket.
    this.watchdog = setInterval(() => {
      const firedAt = Date.now();
      const lateMs = this.lastTickAt ? firedAt - this.lastTickAt - CHECK_MS : 0;
      this.lastTickAt = firedAt;
      setImmediate(() => this.checkHang(Math.max(lateMs, Date.now() - firedAt)));
    }, CHECK_MS);
    this.watchdog.unref();
  }

  /** Kills the serving worker if it is hung; onExit then fails over as after a crash. */
  private checkHang(ownStallMs: number): void {
    const w = this.active;
    if (!w || this.stopping || w.hung !== undefined || w.activatedAt === undefined) return;
    this.worstOwnStallMs = Math.max(this.worstOwnStallMs, ownStallMs);
    // lazysnapd itself was blocked (a big synchronous copy, a GC): heartbeats may wait unread on the socket, so its
    // silence is not the worker's. The next turn of the loop reads them; past two skips lazysnapd is overloaded: judge.
    if (ownStallMs > OWN_STALL_MS && this.checksSkipped < 2) {
      this.checksSkipped++;
      return;
    }
    this.checksSkipped = 0;
    const facts = { activatedAt: w.activatedAt, loadedAt: w.loadedAt, lastHeartbeatAt: w.lastHeartbeatAt, heartbeat: w.heartbeat };
    const v = judgeWorker(facts, Date.now(), {
      hangTimeoutMs: this.o.hangTimeoutMs,
      startTimeoutMs: START_TIMEOUT_MS,
      readDeadlineMs: this.o.worker.readDeadlineMs,
    });
    if (!v.hung) return;
    w.hung = v.reason;
    this.hangsHealed++;
    this.o.log.warn({ pid: w.proc.pid, reason: v.reason, hangTimeoutMs: this.o.hangTimeoutMs, hangsHealed: this.hangsHealed },
      `${this.name} hung; killing it and failing over`);
    // SIGKILL also ends a stopped process; its exit takes the crash path (it had loaded, so no crash-loop backoff).
    w.proc.kill('SIGKILL');
  }

  health(now = Date.now()): WorkerHealth {
    const w = this.active;
    const lastSign = w?.activatedAt === undefined ? undefined : Math.max(w.activatedAt, w.loadedAt ?? 0, w.lastHeartbeatAt ?? 0);
    const hb = w?.lastHeartbeatAt !== undefined && w.activatedAt !== undefined && w.lastHeartbeatAt >= w.activatedAt ? w.heartbeat : undefined;
    return {
      hangTimeoutMs: this.o.hangTimeoutMs,
      hangsHealed: this.hangsHealed,
      silentMs: lastSign === undefined ? null : now - lastSign,
      hung: w?.hung !== undefined,
      handled: hb?.handled ?? null,
      inflight: hb?.inflight ?? null,
      oldestReadMs: hb?.oldestReadMs ?? null,
      worstSilenceMs: this.worstSilenceMs,
      worstLoopStallMs: this.worstLoopStallMs,
      worstOwnStallMs: this.worstOwnStallMs,
      standby: !this.standby ? 'none' : this.standby.loaded ? 'loaded' : 'starting',
      lastFailoverStallMs: this.lastFailoverStallMs,
    };
  }

  get workerPid(): number | undefined {
    return this.active?.proc.pid;
  }

  /** Resolves once the active worker serves (after its `restore`). */
  async whenReady(): Promise<void> {
    while (!this.stopping) {
      const w = this.active;
      if (w) {
        await w.ready;
        if (this.active === w) return;
      } else await new Promise((r) => setTimeout(r, 20));
    }
  }

  private spawnWorker(): Worker {
    const [mine, theirs] = socketpair('stream');
    const proc = spawn(process.execPath, [this.workerJs], {
      stdio: ['ignore', 'inherit', 'inherit', theirs],
      env: { ...process.env, [SETTINGS_ENV]: encodeSettings(this.o.worker), GLIBC_TUNABLES: workerTunables(process.env.GLIBC_TUNABLES) },
    });
    fs.closeSync(theirs);
    // now, before this loop can reap the child: the pidfd cannot name a later process with its pid
    let pidfd = -1;
    try {
      if (proc.pid) pidfd = pidfdOpen(proc.pid);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, `no pidfd for the ${this.name}; its standby will wait to be handed the device`);
    }
    const control = new net.Socket({ fd: mine, readable: true, writable: true });
    let resolveReady!: () => void;
    const w: Worker = {
      proc,
      control,
      ctrlFd: mine,
      pidfd,
      armed: false,
      startedAt: Date.now(),
      loaded: false,
      ready: new Promise((r) => (resolveReady = r)),
      pending: new Map(),
    };
    onJsonLines(
      control,
      (m) => {
        const msg = m as WorkerEvent | ControlReply;
        if ('event' in msg && msg.event === 'heartbeat') this.onHeartbeat(w, msg);
        else if ('event' in msg && msg.event === 'metrics') this.events?.metrics(proc.pid ?? 0, msg.metrics);
        else if ('event' in msg && msg.event === 'loaded') {
          w.loaded = true;
          // Loaded, a standby yields the CPU to the serving worker (its warm-up too) until activate() sets it back to
          // 0; one activated before it loaded stays at 0. Only root may lower it again.
          if (CAN_RENICE && w !== this.active && proc.pid) reniceThreads(proc.pid, STANDBY_NICE);
          w.loadedAt = Date.now();
          this.failedStarts = 0;
          if (w === this.standby) this.arm(w);
        } else if ('event' in msg && msg.event === 'ready') {
          w.readyAt = Date.now();
          if (Number.isSafeInteger(msg.exitSeenAt)) w.exitSeenAt = msg.exitSeenAt;
          resolveReady();
          if (w === this.active) this.serving(w);
        }
        else if ('id' in msg) {
          w.pending.get(msg.id)?.(msg);
          w.pending.delete(msg.id);
        }
      },
      (line) => this.o.log.warn({ line: line.slice(0, 200) }, `malformed message from the ${this.name}`),
    );
    control.on('error', () => {});
    proc.on('error', (err) => this.o.log.error({ err: err.message }, `cannot start the ${this.name}`));
    proc.on('exit', (code, signal) => {
      this.pids.delete(proc.pid!);
      this.writePids();
      this.onExit(w, code, signal);
    });
    if (proc.pid) this.pids.add(proc.pid);
    this.writePids();
    return w;
  }

  private readonly pids = new Set<number>();
  /** blob files of the fanotify backend told to workers (open-blobs), by path */
  private readonly blobFiles = new Map<string, BlobFile>();

  private onHeartbeat(w: Worker, hb: Heartbeat): void {
    const now = Date.now();
    if (w === this.active && w.activatedAt !== undefined && w.hung === undefined) {
      const prev = w.heartbeat && w.lastHeartbeatAt! >= w.activatedAt ? w.heartbeat.sentAt : Math.max(w.activatedAt, w.loadedAt ?? 0);
      this.worstSilenceMs = Math.max(this.worstSilenceMs, hb.sentAt - prev);
    }
    this.worstLoopStallMs = Math.max(this.worstLoopStallMs, hb.worstLoopStallMs);
    w.lastHeartbeatAt = now;
    w.heartbeat = hb;
  }

  private writePids(): void {
    if (!this.o.pidFile) return;
    try {
      fs.writeFileSync(`${this.o.pidFile}.tmp`, JSON.stringify([...this.pids]));
      fs.renameSync(`${this.o.pidFile}.tmp`, this.o.pidFile);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'cannot write the worker pid file');
    }
  }

  private activate(w: Worker): void {
    this.active = w;
    w.activatedAt = Date.now();
    this.activations++;
    if (CAN_RENICE && w.proc.pid) reniceThreads(w.proc.pid, 0);
    if (!w.armed) {
      try {
        // Handed over on the raw fd before libuv reads from it: the worker is blocked in recvmsg.
        sendFds(w.ctrlFd, HANDOVER_BYTE, [this.o.devFd]);
      } catch (err) {
        this.o.log.error({ err: (err as Error).message, pid: w.proc.pid }, `handover to the ${this.name} failed`);
        w.proc.kill('SIGKILL');
      }
    }
    if (w.readyAt !== undefined) this.serving(w); // an armed standby that took over before this loop saw the exit
  }

  /**
   * Arms a loaded standby: the device and a pidfd of the serving worker, so it
   * takes over the moment that worker exits (its fds are closed by then, so two
   * workers never read the device). On the raw fd, as a handover: the standby
   * reads nothing else before it serves.
   */
  private arm(w: Worker): void {
    const a = this.active;
    if (w.armed || !a || a.pidfd < 0 || a.proc.exitCode !== null || a.proc.signalCode !== null) return;
    try {
      sendFds(w.ctrlFd, ARM_BYTE, [this.o.devFd, a.pidfd]);
      w.armed = true;
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, pid: w.proc.pid }, `cannot arm the standby ${this.name}; it will be handed the device`);
    }
  }

  /** The active worker serves: it is told what a serving worker needs, and a failover's stall is counted. */
  private serving(w: Worker): void {
    if (this.prefetchBudget !== undefined) sendJson(w.control, { id: this.nextId++, op: 'prefetch-budget', bytes: this.prefetchBudget });
    if (this.lastEndAt !== undefined) {
      // from the end as first seen: by lazysnapd, or by an armed standby, which may see it sooner
      this.lastFailoverStallMs = Math.max(0, w.readyAt! - Math.min(this.lastEndAt, w.exitSeenAt ?? Infinity));
      this.events?.failedOver(this.lastFailoverStallMs);
      this.lastEndAt = undefined;
      this.reopenBlobs(w);
    }
  }

  private onExit(w: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    w.control.destroy();
    if (w.pidfd >= 0) fs.closeSync(w.pidfd);
    w.pidfd = -1;
    const serving = !this.stopping && w === this.active;
    this.events?.exited(w.proc.pid ?? 0, !serving ? (w === this.standby ? 'standby' : 'retired') : w.hung ? 'hung' : signal ? 'killed' : 'crashed');
    for (const cb of w.pending.values()) cb({ id: -1, error: 'worker exited' });
    if (this.stopping) return;
    if (w === this.standby) {
      this.standby = undefined;
      this.o.log.warn({ pid: w.proc.pid, code, signal }, `standby ${this.name} exited; starting another`);
      if (!w.loaded) this.failedStarts++;
      this.schedule(() => this.refillStandby(), w.loaded ? 0 : this.backoff());
      return;
    }
    if (w !== this.active) return;
    const lived = Date.now() - (w.activatedAt ?? w.startedAt);
    // A worker that dies after loading (killed, crashed) is replaced at once;
    // only workers that never loaded count towards backing off.
    if (!w.loaded) this.failedStarts++;
    this.active = undefined;
    this.lastEndAt = Date.now();
    this.o.log.warn({ pid: w.proc.pid, code, signal, livedMs: lived, ...(w.hung ? { hung: w.hung } : {}) }, `${this.name} exited; failing over`);
    const next = this.standby;
    this.standby = undefined;
    // an armed standby serves already (or is about to): no backoff holds it
    const delay = this.failedStarts > 3 && !next?.armed ? this.backoff() : 0;
    this.schedule(() => {
      this.activate(next && next.proc.exitCode === null && next.proc.signalCode === null ? next : this.spawnWorker());
      clearTimeout(this.refillTimer);
      this.refillTimer = setTimeout(() => this.refillStandby(), STANDBY_REFILL_DELAY_MS);
    }, delay);
  }

  private refillStandby(): void {
    if (this.stopping || this.standby || this.o.standby === false) return;
    this.standby = this.spawnWorker();
  }

  private backoff(): number {
    return Math.min(MAX_BACKOFF_MS, 100 * 2 ** Math.min(this.failedStarts, 10));
  }

  private schedule(fn: () => void, ms: number): void {
    if (ms <= 0) return fn();
    this.o.log.warn({ delayMs: ms }, `${this.name}s keep crashing; backing off`);
    clearTimeout(this.timer);
    this.timer = setTimeout(fn, ms);
  }

  /** bytes prefetch may still bring into the cache; sent to every serving worker from now on */
  private prefetchBudget: number | undefined;

  setPrefetchBudget(bytes: number): void {
    this.prefetchBudget = bytes;
    const w = this.active;
    if (w) sendJson(w.control, { id: this.nextId++, op: 'prefetch-budget', bytes });
  }

  /** Asks the serving worker to open these blob files' contents now (fanotify; no answer is awaited). */
  openBlobs(blobs: BlobFile[]): void {
    for (const { file, size } of blobs) this.blobFiles.set(file, { file, size });
    const w = this.active;
    if (w && blobs.length) sendJson(w.control, { id: this.nextId++, op: 'open-blobs', blobs });
  }

  /**
   * The blob files mounted so far, told again to a worker that took over
   * from one that died: it opens them at once, and replays what was being
   * replayed (what the files hold already is not fetched again). Files gone
   * since (their image removed) are forgotten.
   */
  private reopenBlobs(w: Worker): void {
    for (const file of this.blobFiles.keys()) if (!fs.existsSync(file)) this.blobFiles.delete(file);
    if (this.blobFiles.size) sendJson(w.control, { id: this.nextId++, op: 'open-blobs', blobs: [...this.blobFiles.values()] });
  }

  /**
   * Tells the serving worker to record READs into a journal lazysnapd just
   * wrote; resolves once it has (or could not: a worker that starts later
   * finds the journal itself, before it serves).
   */
  learn(file: string, timeoutMs = 2000): Promise<boolean> {
    const w = this.active;
    if (!w) return Promise.resolve(false);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        w.pending.delete(id);
        resolve(false);
      }, timeoutMs);
      w.pending.set(id, (r) => {
        clearTimeout(t);
        resolve(r.result === true);
      });
      sendJson(w.control, { id, op: 'learn', file });
    });
  }

  /** Asks the serving worker to hold prefetch back for `ms` (a container is starting); no answer is awaited. */
  holdPrefetch(ms: number): void {
    const w = this.active;
    if (w) sendJson(w.control, { id: this.nextId++, op: 'hold-prefetch', ms });
  }

  /** The active worker's status, or an error: at once when it has gone silent (asking a hung worker only waits). */
  status(timeoutMs = 2000): Promise<WorkerStatus> {
    const w = this.active;
    if (!w) return Promise.reject(new Error(`no ${this.name} is running`));
    const h = this.health();
    if (h.hung) return Promise.reject(new Error(`the ${this.name} hung and is being replaced`));
    if (w.loaded && h.silentMs !== null && h.silentMs > Math.min(4 * this.o.worker.heartbeatMs + 500, this.o.hangTimeoutMs / 2)) {
      return Promise.reject(new Error(`the ${this.name} has sent no heartbeat for ${h.silentMs} ms`));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        w.pending.delete(id);
        reject(new Error(`the ${this.name} did not answer`));
      }, timeoutMs);
      w.pending.set(id, (r) => {
        clearTimeout(t);
        if (r.error) reject(new Error(r.error));
        else resolve(r.result as WorkerStatus);
      });
      sendJson(w.control, { id, op: 'status' });
    });
  }

  /**
   * Stops the workers (lazysnapd shutting down). With keepActive the serving
   * worker is left running, holding the device: mounts keep working and the
   * next lazysnapd takes the fd back from it.
   */
  async stop(opts: { keepActive?: boolean } = {}): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    clearTimeout(this.refillTimer);
    clearInterval(this.watchdog);
    const all = [opts.keepActive ? undefined : this.active, this.standby].filter((w): w is Worker => !!w);
    if (opts.keepActive && this.active) {
      this.active.proc.unref();
      this.active.control.destroy();
    }
    await Promise.all(
      all.map(
        (w) =>
          new Promise<void>((r) => {
            if (w.proc.exitCode !== null || w.proc.signalCode !== null) return r();
            w.proc.once('exit', () => r());
            w.proc.kill('SIGTERM');
            setTimeout(() => w.proc.kill('SIGKILL'), 3000).unref();
          }),
      ),
    );
  }
}
