// lazysnapd's side of fscache: it opens /dev/cachefiles once and holds the fd
// for its whole life, so a dying worker never unbinds the cache. Workers are
// child processes; one serves, one waits fully loaded as a standby, so a
// failover costs a handover (SCM_RIGHTS) and a `restore`, not a Node start.
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { sendFds, socketpair } from '../native';
import { ControlReply, HANDOVER_BYTE, WorkerEvent, WorkerStatus, onJsonLines, sendJson } from '../worker/control';
import { SETTINGS_ENV, WorkerSettings, encodeSettings } from '../worker/settings';

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
}

interface Worker {
  proc: ChildProcess;
  control: net.Socket;
  ctrlFd: number;
  startedAt: number;
  activatedAt?: number;
  ready: Promise<void>;
  /** its code loaded: a later death is a kill or a crash, not a failed start */
  loaded: boolean;
  pending: Map<number, (r: ControlReply) => void>;
}

const MAX_BACKOFF_MS = 30_000;

export class FscacheSupervisor {
  private active: Worker | undefined;
  private standby: Worker | undefined;
  private stopping = false;
  private nextId = 1;
  /** workers in a row that died before they were ready: a crash loop, not a kill */
  private failedStarts = 0;
  private timer: NodeJS.Timeout | undefined;
  /** how many times a worker was (re)activated; for status and tests */
  activations = 0;
  readonly workerJs: string;

  constructor(private readonly o: SupervisorOptions) {
    // LAZYSNAP_FSCACHE_WORKER overrides the entry point (tests use it for a worker that cannot start).
    this.workerJs = o.workerJs ?? process.env.LAZYSNAP_FSCACHE_WORKER ?? path.resolve(__dirname, '../cmd/lazysnap-fscache-worker.js');
  }

  start(): void {
    this.activate(this.spawnWorker());
    if (this.o.standby !== false) this.standby = this.spawnWorker();
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
      env: { ...process.env, [SETTINGS_ENV]: encodeSettings(this.o.worker) },
    });
    fs.closeSync(theirs);
    const control = new net.Socket({ fd: mine, readable: true, writable: true });
    let resolveReady!: () => void;
    const w: Worker = {
      proc,
      control,
      ctrlFd: mine,
      startedAt: Date.now(),
      loaded: false,
      ready: new Promise((r) => (resolveReady = r)),
      pending: new Map(),
    };
    onJsonLines(
      control,
      (m) => {
        const msg = m as WorkerEvent | ControlReply;
        if ('event' in msg && msg.event === 'loaded') {
          w.loaded = true;
          this.failedStarts = 0;
        } else if ('event' in msg && msg.event === 'ready') resolveReady();
        else if ('id' in msg) {
          w.pending.get(msg.id)?.(msg);
          w.pending.delete(msg.id);
        }
      },
      (line) => this.o.log.warn({ line: line.slice(0, 200) }, 'malformed message from the fscache worker'),
    );
    control.on('error', () => {});
    proc.on('error', (err) => this.o.log.error({ err: err.message }, 'cannot start the fscache worker'));
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
    try {
      // Handed over on the raw fd before libuv reads from it: the worker is blocked in recvmsg.
      sendFds(w.ctrlFd, HANDOVER_BYTE, [this.o.devFd]);
    } catch (err) {
      this.o.log.error({ err: (err as Error).message, pid: w.proc.pid }, 'handover to the fscache worker failed');
      w.proc.kill('SIGKILL');
    }
  }

  private onExit(w: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    w.control.destroy();
    for (const cb of w.pending.values()) cb({ id: -1, error: 'worker exited' });
    if (this.stopping) return;
    if (w === this.standby) {
      this.standby = undefined;
      this.o.log.warn({ pid: w.proc.pid, code, signal }, 'standby fscache worker exited; starting another');
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
    this.o.log.warn({ pid: w.proc.pid, code, signal, livedMs: lived }, 'fscache worker exited; failing over');
    const next = this.standby;
    this.standby = undefined;
    const delay = this.failedStarts > 3 ? this.backoff() : 0;
    this.schedule(() => {
      this.activate(next && next.proc.exitCode === null && next.proc.signalCode === null ? next : this.spawnWorker());
      this.refillStandby();
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
    this.o.log.warn({ delayMs: ms }, 'fscache workers keep crashing; backing off');
    clearTimeout(this.timer);
    this.timer = setTimeout(fn, ms);
  }

  /** Asks the serving worker to hold prefetch back for `ms` (a container is starting); no answer is awaited. */
  holdPrefetch(ms: number): void {
    const w = this.active;
    if (w) sendJson(w.control, { id: this.nextId++, op: 'hold-prefetch', ms });
  }

  /** The active worker's status, or an error. */
  status(timeoutMs = 5000): Promise<WorkerStatus> {
    const w = this.active;
    if (!w) return Promise.reject(new Error('no fscache worker is running'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        w.pending.delete(id);
        reject(new Error('the fscache worker did not answer'));
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
