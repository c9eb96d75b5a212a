// Which chunks of a blob have been delivered (written through a sink). One
// bit per chunk; counts kept for progress reports.
import { chunksCovering, type ChunkInfo } from '../../image/blob/chunkinfo';
import type { BlobPresence } from '../content';

/** How much of a remote blob is present, in chunks too. */
export interface BlobProgress extends BlobPresence {
  chunks: number;
  chunksPresent: number;
}

export interface ChunkPresence {
  has(index: number): boolean;
  add(index: number): void;
  delete(index: number): void;
  /** number of chunks present */
  readonly count: number;
}

export class PresenceBitmap implements ChunkPresence {
  private readonly bits: Uint8Array;
  private n = 0;

  constructor(readonly size: number) {
    this.bits = new Uint8Array(Math.ceil(size / 8));
  }

  has(i: number): boolean {
    return (this.bits[i >> 3] & (1 << (i & 7))) !== 0;
  }

  add(i: number): void {
    if (i < 0 || i >= this.size) throw new RangeError(`chunk ${i} out of ${this.size}`);
    const m = 1 << (i & 7);
    if (!(this.bits[i >> 3] & m)) {
      this.bits[i >> 3] |= m;
      this.n++;
    }
  }

  delete(i: number): void {
    const m = 1 << (i & 7);
    if (this.bits[i >> 3] & m) {
      this.bits[i >> 3] &= ~m;
      this.n--;
    }
  }

  get count(): number {
    return this.n;
  }

  clear(): void {
    this.bits.fill(0);
    this.n = 0;
  }
}

/**
 * Marks present every chunk lying entirely inside [off, off+len) (e.g. from
 * SEEK_DATA on a cache file); returns the chunks newly marked. Chunks are in
 * uOffset order (as chunksCovering needs), so this is a binary search, not a scan.
 */
export function markRange(p: ChunkPresence, chunks: ChunkInfo[], off: number, len: number): ChunkInfo[] {
  const added: ChunkInfo[] = [];
  for (const c of chunksCovering(chunks, off, len)) {
    if (c.uOffset >= off && c.uOffset + c.uSize <= off + len && !p.has(c.index)) {
      p.add(c.index);
      added.push(c);
    }
  }
  return added;
}
