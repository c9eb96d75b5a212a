// Replay of a recorded start: the chunks it read, fetched in the order it
// read them, in batches (each batch's chunks merged into few Range GETs in
// blob order). It takes the host's low-priority slots, so a READ always finds
// a connection, and its queued GETs are promoted when a READ joins them; but
// unlike whole-blob prefetch it does not wait for READs to quiet down, since
// it fetches exactly what they are about to ask for. Never rejects.
import type { Allocator, RangeSink } from '../content';
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import type { FetchScheduler } from './scheduler';
import { AbortedError } from '../../registry/errors';
import { replayRuns, splitBusy } from './planner';

export interface ReplayTarget {
  readonly scheduler: Pick<FetchScheduler, 'acquireLow'>;
  readonly hostKey: string;
  readonly blob: { readonly chunks: ChunkInfo[] };
  busy(c: ChunkInfo): boolean;
  deliverRun(run: ChunkInfo[], sink: RangeSink, alloc: Allocator, signal?: AbortSignal): Promise<void>;
}

export interface ReplayOptions {
  maxMerge: number;
  /** compressed bytes per batch (default 1 MiB): smaller starts the first reads' chunks sooner, larger merges more */
  batchBytes?: number;
  /** compressed bytes of unrecorded chunks a run may fetch to join two recorded ones (default 64 KiB) */
  maxGapBytes?: number;
  onDelivered?: (chunks: number) => void;
}

export interface ReplayResult {
  chunks: number;
  /** chunks this replay fetched; the others were present or fetched by READs first */
  fetched: number;
  gets: number;
  failedRuns: number;
  cancelled: boolean;
  elapsedMs: number;
}

export class Replay {
  readonly done: Promise<ReplayResult>;
  private readonly ac = new AbortController();

  constructor(
    private readonly target: ReplayTarget,
    private readonly order: ChunkInfo[],
    private readonly sink: RangeSink,
    private readonly alloc: Allocator,
    private readonly opts: ReplayOptions,
  ) {
    this.done = this.run();
  }

  cancel(): void {
    this.ac.abort();
  }

  private async run(): Promise<ReplayResult> {
    const t0 = Date.now();
    const t = this.target;
    const signal = this.ac.signal;
    const res = { chunks: this.order.length, fetched: 0, gets: 0, failedRuns: 0 };
    const inflight = new Set<Promise<void>>();
    for (const batch of batches(this.order, this.opts.batchBytes ?? 1 << 20)) {
      for (const run of replayRuns(batch, t.blob.chunks, { maxMerge: this.opts.maxMerge, maxGapBytes: this.opts.maxGapBytes ?? 64 << 10 })) {
        if (signal.aborted) break;
        let release: () => void;
        try {
          release = await t.scheduler.acquireLow(t.hostKey, signal);
        } catch {
          break; // cancelled while waiting
        }
        // chosen only now: what READs fetched meanwhile is skipped
        const parts = splitBusy(run, (c) => t.busy(c));
        const p = Promise.all(parts.map((part) => {
          res.gets++;
          return t.deliverRun(part, this.sink, this.alloc, signal).then(
            () => {
              res.fetched += part.length;
              this.opts.onDelivered?.(part.length);
            },
            (e: Error) => {
              if (!(e instanceof AbortedError) && !signal.aborted) res.failedRuns++;
            },
          );
        })).then(() => undefined).finally(() => {
          release();
          inflight.delete(p);
        });
        inflight.add(p);
      }
    }
    await Promise.all([...inflight]);
    return { ...res, cancelled: signal.aborted, elapsedMs: Date.now() - t0 };
  }
}

/** Consecutive groups of the order, each up to `bytes` compressed (at least one chunk). */
function batches(order: ChunkInfo[], bytes: number): ChunkInfo[][] {
  const out: ChunkInfo[][] = [];
  let cur: ChunkInfo[] = [];
  let n = 0;
  for (const c of order) {
    if (cur.length && n + c.cSize > bytes) {
      out.push(cur);
      cur = [];
      n = 0;
    }
    cur.push(c);
    n += c.cSize;
  }
  if (cur.length) out.push(cur);
  return out;
}
