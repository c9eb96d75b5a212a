// Chunks that keep failing verification. A registry serves the same bytes
// every time, so refetching such a chunk on every READ only multiplies GETs
// (4 READ attempts × 3 verification attempts = 12 per READ). Once a chunk
// has failed all its attempts it is marked bad for a cool-down: READs that
// need it fail at once (EIO for its pages only), widening and prefetch pass
// it by. After the cool-down the next READ that needs it tries it once: good
// bytes heal it, bad ones start another cool-down.
import type { BadChunk } from '../content';
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import { IntegrityError, RegistryErrorInfo } from '../../registry/errors';

/** A READ needs a chunk marked bad: its bytes cannot be had before `until`, so filling again now cannot help. */
export class BadChunkError extends IntegrityError {
  /** read by content.ts's fillRetryable(): the daemon answers the READ instead of retrying it */
  readonly fillRetryable = false;
  constructor(detail: string, info: RegistryErrorInfo, readonly chunk: number, readonly until: number) {
    super(detail, info);
    this.name = 'BadChunkError';
  }
}

export class BadChunks {
  private readonly byIndex = new Map<number, BadChunk>();

  constructor(readonly cooldownMs: number, private readonly clock: () => number = Date.now) {}

  get size(): number {
    return this.byIndex.size;
  }

  now(): number {
    return this.clock();
  }

  get(index: number): BadChunk | undefined {
    return this.byIndex.get(index);
  }

  /** Marked bad and not healed: cooling down, or due its one retry. */
  has(index: number): boolean {
    return this.byIndex.has(index);
  }

  /** In its cool-down: not to be fetched. */
  cooling(index: number, now = this.clock()): boolean {
    const b = this.byIndex.get(index);
    return b !== undefined && b.until > now;
  }

  /**
   * Marks c bad from now for a cool-down. A chunk already cooling (another
   * fill marked it meanwhile) is left as it is: `marked` is false.
   */
  mark(c: ChunkInfo, error: string): { entry: BadChunk; marked: boolean } {
    const now = this.clock();
    const old = this.byIndex.get(c.index);
    if (old && old.until > now) return { entry: old, marked: false };
    const entry: BadChunk = {
      index: c.index, uOffset: c.uOffset, uSize: c.uSize, cOffset: c.cOffset, cSize: c.cSize,
      failures: (old?.failures ?? 0) + 1, since: old?.since ?? now, until: now + this.cooldownMs, error,
    };
    this.byIndex.set(c.index, entry);
    return { entry, marked: true };
  }

  /** The chunk verified: forget it. Returns its entry if it was marked. */
  heal(index: number): BadChunk | undefined {
    const b = this.byIndex.get(index);
    if (b) this.byIndex.delete(index);
    return b;
  }

  list(): BadChunk[] {
    return [...this.byIndex.values()].sort((a, b) => a.index - b.index).map((b) => ({ ...b }));
  }
}
