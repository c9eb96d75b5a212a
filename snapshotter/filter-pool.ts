// List's regular expressions run here, in worker threads. RE2 is linear, but
// linear in the program too once its DFA gives up: `.*a.{450}$` takes half a
// second over one 4 KiB value, and on the event loop every other client
// would wait that out. A worker whose List is cancelled mid-job is terminated.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { type Filter, matches, parseFilters } from './filters';
import type { Info } from './storage/info';

/** Workers alive at most: this machine has two cores; more Lists queue for them. */
const POOL_SIZE = 2;
/** A worker's heap: it gets only what filterView() keeps of each snapshot. */
const WORKER_HEAP_MB = 128;

interface Job {
  filters: string[];
  views: Info[];
}
type Reply = { ok: boolean[] } | { error: string };

export class FilterCancelled extends Error {}

export class FilterPool {
  private readonly idle: Worker[] = [];
  private alive = 0;
  private readonly waiting: (() => void)[] = [];

  /** Which of views match the filters; rejects with FilterCancelled once signal aborts. */
  async match(filters: string[], views: Info[], signal: AbortSignal): Promise<boolean[]> {
    const w = await this.acquire();
    let dead = false;
    try {
      if (signal.aborted) throw new FilterCancelled('cancelled');
      return await new Promise<boolean[]>((resolve, reject) => {
        const done = () => {
          w.off('message', onMessage).off('error', onError).off('exit', onExit);
          signal.removeEventListener('abort', onAbort);
        };
        const onMessage = (r: Reply) => {
          done();
          if ('ok' in r) resolve(r.ok);
          else reject(new Error(r.error));
        };
        const onError = (err: Error) => {
          done();
          dead = true;
          reject(err);
        };
        const onExit = (code: number) => {
          done();
          dead = true;
          reject(new Error(`filter worker exited (${code})`));
        };
        const onAbort = () => {
          done();
          dead = true;
          void w.terminate();
          reject(new FilterCancelled('cancelled'));
        };
        w.on('message', onMessage).on('error', onError).on('exit', onExit);
        signal.addEventListener('abort', onAbort);
        w.postMessage({ filters, views } satisfies Job);
      });
    } finally {
      this.release(w, dead);
    }
  }

  /** Ends the idle workers (busy ones end with their jobs' process). */
  close(): void {
    for (const w of this.idle.splice(0)) void w.terminate();
  }

  private async acquire(): Promise<Worker> {
    for (;;) {
      const w = this.idle.pop();
      if (w) return w;
      if (this.alive < POOL_SIZE) {
        this.alive++;
        return this.spawn();
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  private release(w: Worker, dead: boolean): void {
    if (dead) this.alive--;
    else this.idle.push(w);
    this.waiting.shift()?.();
  }

  private spawn(): Worker {
    const w = new Worker(__filename, {
      workerData: { lazysnapFilters: true },
      resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB },
    });
    w.unref(); // an idle worker never keeps lazysnapd alive
    w.once('exit', () => {
      // an idle worker that died (a busy one is accounted for by its job)
      const i = this.idle.indexOf(w);
      if (i < 0) return;
      this.idle.splice(i, 1);
      this.alive--;
      this.waiting.shift()?.();
    });
    return w;
  }
}

/**
 * Lowers this thread's priority to nice 10: on a busy machine a List's
 * regular expressions yield the CPU to lazysnapd's event loop (and to the
 * rest of the host), without starving as at 19 (1.5% of a core against one
 * busy process). On Linux the nice value is per thread; /proc/thread-self
 * names this one.
 */
function lowerThreadPriority(): void {
  try {
    const tid = Number(path.basename(fs.readlinkSync('/proc/thread-self')));
    if (Number.isSafeInteger(tid)) os.setPriority(tid, 10);
  } catch {
    // not Linux, or no /proc: full priority, still off the event loop
  }
}

// The worker: parses the filters (once per distinct set) and matches.
if (!isMainThread && (workerData as { lazysnapFilters?: boolean } | null)?.lazysnapFilters) {
  lowerThreadPriority();
  let last: { key: string; filter: Filter } | undefined;
  parentPort!.on('message', (job: Job) => {
    try {
      const key = JSON.stringify(job.filters);
      if (last?.key !== key) last = { key, filter: parseFilters(job.filters) };
      const f = last.filter;
      parentPort!.postMessage({ ok: job.views.map((v) => matches(f, v)) } satisfies Reply);
    } catch (err) {
      parentPort!.postMessage({ error: (err as Error).message } satisfies Reply);
    }
  });
}
