// Per-registry-host scheduling of Range GETs with p-queue: a concurrency
// limit per host, priorities (on-demand READs before prefetch), promotion of
// a queued prefetch fetch that a READ now waits for, and a cap on how many
// slots low-priority work may hold so a READ never waits behind a full pipe
// of prefetch transfers. Prefetch also yields the CPU: it starts no new
// transfer while READs are being filled, or until they have been quiet for
// a moment (decompressing and verifying take the same thread READs need).
import PQueue from 'p-queue';

export const Priority = {
  Prefetch: 0,
  /** chunk info, ToC, digests of a blob being opened */
  Metadata: 5,
  /** readahead of a sequential reader: no READ waits for it yet */
  Ahead: 7,
  OnDemand: 10,
} as const;

export interface SchedulerOptions {
  /** simultaneous GETs per registry host (default 8) */
  concurrencyPerHost?: number;
  /** slots low-priority work may never take (default 2, at most concurrency − 1) */
  reservedForDemand?: number;
  /** prefetch starts a transfer only after this long without an on-demand fill (default 150 ms; 0 = never waits) */
  demandQuietMs?: number;
}

/** A counting semaphore with FIFO waiters. */
class Semaphore {
  private used = 0;
  private readonly waiters: Array<() => void> = [];
  constructor(private readonly limit: number) {}

  acquire(signal?: AbortSignal): Promise<() => void> {
    const release = () => {
      this.used--;
      const next = this.waiters.shift();
      if (next) next();
    };
    let released = false;
    const once = () => {
      if (!released) {
        released = true;
        release();
      }
    };
    if (this.used < this.limit) {
      this.used++;
      return Promise.resolve(once);
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener('abort', onAbort);
        this.used++;
        resolve(once);
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(grant);
        if (i >= 0) this.waiters.splice(i, 1);
        const e = new Error('aborted while waiting for a fetch slot');
        e.name = 'AbortError';
        reject(e);
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(grant);
    });
  }

  get inUse(): number {
    return this.used;
  }
}

interface HostSlot {
  queue: PQueue;
  low: Semaphore;
}

let nextId = 1;

export class FetchScheduler {
  private readonly hosts = new Map<string, HostSlot>();
  readonly concurrency: number;
  readonly lowLimit: number;
  readonly demandQuietMs: number;
  private demandActive = 0;
  private lastDemandEnd = -Infinity;

  constructor(opts: SchedulerOptions = {}) {
    this.concurrency = Math.max(1, opts.concurrencyPerHost ?? 8);
    const reserved = Math.min(this.concurrency - 1, Math.max(0, opts.reservedForDemand ?? 2));
    this.lowLimit = Math.max(1, this.concurrency - reserved);
    this.demandQuietMs = Math.max(0, opts.demandQuietMs ?? 150);
  }

  /** Marks an on-demand fill under way (for any host: the CPU is shared); call the result when it ends. */
  beginDemand(): () => void {
    this.demandActive++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.demandActive--;
      this.lastDemandEnd = performance.now();
    };
  }

  /**
   * Holds prefetch back for `ms` from now (then demandQuietMs more), as if
   * READs ran meanwhile: a container is starting, and its start needs the
   * CPU more than the rest of the image does.
   */
  holdPrefetch(ms: number): void {
    this.lastDemandEnd = Math.max(this.lastDemandEnd, performance.now() + ms);
  }

  /** Resolves once no on-demand fill has run for demandQuietMs; rejects with an AbortError if signal aborts first. */
  async demandQuiet(signal?: AbortSignal): Promise<void> {
    if (this.demandQuietMs === 0) return;
    for (;;) {
      if (signal?.aborted) throw Object.assign(new Error('aborted while waiting for READs to quiet down'), { name: 'AbortError' });
      const idle = performance.now() - this.lastDemandEnd;
      if (this.demandActive === 0 && idle >= this.demandQuietMs) return;
      const wait = this.demandActive > 0 ? this.demandQuietMs : this.demandQuietMs - idle;
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.max(1, wait));
        function done() {
          clearTimeout(t);
          signal?.removeEventListener('abort', done);
          resolve();
        }
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  }

  private slot(host: string): HostSlot {
    let s = this.hosts.get(host);
    if (!s) {
      s = { queue: new PQueue({ concurrency: this.concurrency }), low: new Semaphore(this.lowLimit) };
      this.hosts.set(host, s);
    }
    return s;
  }

  /** A fresh id for run()/promote(). */
  newId(): string {
    return `f${nextId++}`;
  }

  /** Runs fn when the host has a free slot, higher priority first. */
  run<T>(host: string, fn: () => Promise<T>, opts: { priority: number; id?: string }): Promise<T> {
    return this.slot(host).queue.add(fn, { priority: opts.priority, id: opts.id }) as Promise<T>;
  }

  /** Raises a queued task's priority; a no-op if it already started. */
  promote(host: string, id: string, priority: number): void {
    try {
      this.slot(host).queue.setPriority(id, priority);
    } catch {
      // already running or done
    }
  }

  /** Low-priority work (prefetch) takes one of the host's low slots first; call the result to give it back. */
  acquireLow(host: string, signal?: AbortSignal): Promise<() => void> {
    return this.slot(host).low.acquire(signal);
  }

  /** queued and running tasks for a host */
  load(host: string): { queued: number; running: number; low: number } {
    const s = this.hosts.get(host);
    return s ? { queued: s.queue.size, running: s.queue.pending, low: s.low.inUse } : { queued: 0, running: 0, low: 0 };
  }
}
