// Whole-blob prefetch in the background: chunk runs in blob order at
// prefetch priority, holding at most the scheduler's low-priority slots for
// the host (so on-demand READs always find a free connection and run first),
// and starting nothing while READs are being filled (so they get the CPU).
// Chunks already present or being fetched are skipped. Cancellable (GETs
// that no READ joined are aborted); reports progress as bytes present /
// total. Never rejects: the result says whether it completed, was cancelled,
// or how many runs failed.
import type { Allocator, RangeSink } from '../content';
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import type { BlobProgress } from './presence';
import type { FetchScheduler } from './scheduler';
import { AbortedError } from '../../registry/errors';

/** What prefetch needs of a blob's content (RemoteBlobContent). */
export interface PrefetchTarget {
  readonly scheduler: Pick<FetchScheduler, 'demandQuiet' | 'acquireLow'>;
  readonly hostKey: string;
  progress(): BlobProgress;
  /** the next run of chunks to fetch from chunk index `from` on, and where to look after it */
  nextPrefetchRun(from: number): { run: ChunkInfo[]; next: number };
  deliverRun(run: ChunkInfo[], sink: RangeSink, alloc: Allocator, signal?: AbortSignal): Promise<void>;
}

export interface PrefetchOptions {
  signal?: AbortSignal;
  /** called after every delivered run */
  onProgress?: (p: BlobProgress) => void;
}

export interface PrefetchResult extends BlobProgress {
  complete: boolean;
  cancelled: boolean;
  /** runs that failed after their retries (their chunks stay missing; READs will fetch them) */
  failedRuns: number;
  error?: Error;
  elapsedMs: number;
}

export class Prefetch {
  readonly done: Promise<PrefetchResult>;
  private readonly ac = new AbortController();
  private failedRuns = 0;
  private firstError: Error | undefined;

  constructor(
    private readonly content: PrefetchTarget,
    private readonly sink: RangeSink,
    private readonly alloc: Allocator,
    private readonly opts: PrefetchOptions = {},
  ) {
    if (opts.signal) {
      if (opts.signal.aborted) this.ac.abort();
      else opts.signal.addEventListener('abort', () => this.ac.abort(), { once: true });
    }
    this.done = this.run();
  }

  cancel(): void {
    this.ac.abort();
  }

  get cancelled(): boolean {
    return this.ac.signal.aborted;
  }

  progress(): BlobProgress {
    return this.content.progress();
  }

  private async run(): Promise<PrefetchResult> {
    const t0 = Date.now();
    const c = this.content;
    const signal = this.ac.signal;
    const inflight = new Set<Promise<void>>();
    let cursor = 0;
    const n = c.progress().chunks;
    while (cursor < n && !signal.aborted) {
      let release: () => void;
      try {
        await c.scheduler.demandQuiet(signal);
        release = await c.scheduler.acquireLow(c.hostKey, signal);
      } catch {
        break; // cancelled while waiting
      }
      // Chosen only now: chunks READs fetched meanwhile are skipped.
      const { run, next } = c.nextPrefetchRun(cursor);
      cursor = next;
      if (run.length === 0 || signal.aborted) {
        release();
        break;
      }
      const p = c.deliverRun(run, this.sink, this.alloc, signal)
        .then(() => this.opts.onProgress?.(c.progress()))
        .catch((e: Error) => {
          if (e instanceof AbortedError || signal.aborted) return;
          this.failedRuns++;
          this.firstError ??= e;
        })
        .finally(() => {
          release();
          inflight.delete(p);
        });
      inflight.add(p);
    }
    await Promise.all([...inflight]);
    const progress = c.progress();
    return {
      ...progress,
      complete: progress.chunksPresent === progress.chunks,
      cancelled: signal.aborted,
      failedRuns: this.failedRuns,
      error: this.firstError,
      elapsedMs: Date.now() - t0,
    };
  }
}
