// The boundary between a kernel interface and where bytes come from.
// One side (fscache on-demand today, fanotify pre-content later) says "the
// kernel wants [off, off+len) of blob B"; this side fetches, verifies and
// hands back whole 4 KiB-aligned pieces for it to write. Nothing here knows
// which kernel interface asked.

import { alignDown, alignUp } from '../image/bytes';

export { PAGE, alignDown, alignUp } from '../image/bytes';

/** Writes one aligned piece of the blob at its offset (into the cache file); the buffer is the sink's afterwards. */
export type RangeSink = (off: number, data: Buffer) => Promise<void>;

/** Allocates a zeroed buffer suitable for the sink (page-aligned for direct I/O). */
export type Allocator = (size: number) => Buffer;

/** A blob's bytes in its uncompressed address space. */
export interface BlobContent {
  /** what it is, for logs */
  readonly name: string;
  /** the size the kernel is told (copen) */
  readonly size: number;
  /**
   * Delivers every byte of [alignDown(off), alignUp(off+len)) ∩ [0, alignUp(size))
   * through sink, in page-aligned buffers whose lengths are multiples of 4 KiB.
   * Rejects, having written nothing wrong, if any byte cannot be had and verified.
   * Once `signal` aborts (the READ's deadline) it stops retrying and waiting
   * and rejects soon; fetches that others still wait for go on.
   * It may go on writing through sink after it resolves (a remote blob: the
   * chunks it widened the range by), and hands that work to
   * `hints.background`, before its first await: a caller whose sink writes
   * through an fd it closes must wait for it first, or refuse those writes.
   */
  fill(off: number, len: number, sink: RangeSink, alloc: Allocator, signal?: AbortSignal, hints?: FillHints): Promise<void>;
  /**
   * Fetches and delivers the chunks of [off, off+len) that are neither
   * present nor being fetched, for no reader in particular: readahead of a
   * sequential stream (remote blobs only). Resolves with the chunks it
   * delivered; rejects if one could not be had (nobody waits: the READ that
   * needs it tries again).
   */
  fillAhead?(off: number, len: number, sink: RangeSink, alloc: Allocator, signal?: AbortSignal): Promise<number>;
  /** How much of the blob is already local (remote blobs only). */
  progress?(): BlobPresence;
  /**
   * Records that [off, off+len) is already in the kernel's cache (a data
   * extent of the cache file, e.g. after a daemon restart): whole chunks in
   * it are not fetched again. Returns how many chunks became present.
   */
  markPresent?(off: number, len: number): number;
  /** Forgets what is present (the cache file is new, or its extents say otherwise). */
  resetPresence?(): void;
  /** Gives back fds and memory; called once nothing uses the content. */
  close?(): void;
  /** Fetches the whole blob in the background, below on-demand reads (remote blobs only). */
  prefetch?(sink: RangeSink, alloc: Allocator): { cancel(): void; done: Promise<unknown> };
  /**
   * Fetches the chunks at these uncompressed offsets, in this order, below
   * on-demand reads but without waiting for them to quiet down: a recorded
   * start, replayed ahead of the same start (remote blobs only).
   */
  replay?(uOffsets: number[], sink: RangeSink, alloc: Allocator): { cancel(): void; done: Promise<object> };
  /** Chunks that failed verification, and the bad ones among them (remote blobs only). */
  chunkHealth?(): ChunkHealth;
}

export interface FillHints {
  /** fetch only the chunks the range needs, not the neighbours a remote blob would widen it by (a start being recorded) */
  exact?: boolean;
  /** receives the writes through sink that go on after fill resolves (never rejects) */
  background?(work: Promise<void>): void;
}

/** A chunk that kept failing verification: its bytes are not served (EIO) until `until`, then the next READ that needs it tries once more. */
export interface BadChunk {
  index: number;
  /** its bytes in the blob's uncompressed space, and compressed */
  uOffset: number;
  uSize: number;
  cOffset: number;
  cSize: number;
  /** times it was marked bad (1, then +1 for each retry after a cool-down that failed again) */
  failures: number;
  /** ms since the epoch: first marked, and the end of the current cool-down */
  since: number;
  until: number;
  /** the last verification failure */
  error: string;
}

export interface ChunkHealth {
  /** marked bad and not healed yet, by index */
  badChunks: BadChunk[];
  /** digest or size mismatches seen (every refetch counts) */
  verifyFailures: number;
  /** times a chunk was marked bad (again), and marked chunks that later verified */
  badChunksMarked: number;
  badChunksHealed: number;
}

/**
 * Whether filling the same range again may succeed now. False for errors
 * that say it cannot yet (a chunk in its bad-chunk cool-down): the READ is
 * then answered at once instead of retried.
 */
export function fillRetryable(err: unknown): boolean {
  return (err as { fillRetryable?: unknown } | null | undefined)?.fillRetryable !== false;
}

export interface BlobPresence {
  bytes: number;
  bytesPresent: number;
  /** compressed bytes fetched so far */
  fetchedBytes: number;
  /** chunks on-demand reads needed so far, and those already present then (cache hits) */
  chunksWanted?: number;
  chunksWantedPresent?: number;
  /** of those wanted, the ones a prefetch, replay or other read was already fetching (they waited for it) */
  chunksWantedJoined?: number;
  /** chunks a replay of a recorded start delivered */
  chunksReplayed?: number;
  /** chunks fetched ahead of a sequential reader */
  chunksAhead?: number;
}

/** How a READ (fscache) or pre-content event (fanotify) was answered. */
export type ReadResult =
  /** filled: its bytes fetched (or found fetched) and written */
  | 'filled'
  /** its bytes were already in the blob file: allowed at once (fanotify) */
  | 'present'
  /** the reader got EIO: bytes that could not be had and verified */
  | 'eio'
  /** the reader got EIO: the READ's deadline passed */
  | 'timeout';

/** What a READ or event was: the blob (if known yet), when it arrived (process.hrtime.bigint()), how it was answered, its length. */
export type ReadObserver = (content: BlobContent | undefined, startedAt: bigint, result: ReadResult, len: number) => void;

/** Which blob a kernel cookie names. */
export interface ContentResolver {
  /**
   * @param volume the fscache volume: a domain id, or an fsid when no domain is used
   * @param cookie the cookie key: an fsid for a bootstrap, a device tag (blob id) for a data blob
   * Rejects with UnknownBlobError when nothing matches.
   */
  resolve(volume: string, cookie: string): Promise<BlobContent>;
  /** The kernel closed an object that resolve() gave this content for: its fds may go once nothing uses it. */
  release?(content: BlobContent): void;
}

export class UnknownBlobError extends Error {
  constructor(volume: string, cookie: string) {
    super(`no image registered for volume "${volume}" has blob "${cookie}"`);
    this.name = 'UnknownBlobError';
  }
}

/**
 * A sink that passes on only the bytes below `size`: a fill hands over whole
 * pages, and a file that is exactly the blob's size (a fanotify blob file)
 * must not grow by the last page's tail.
 */
export function clipToSize(size: number, sink: RangeSink): RangeSink {
  return async (off, data) => {
    const n = Math.min(data.length, size - off);
    if (n > 0) await sink(off, n === data.length ? data : data.subarray(0, n));
  };
}

/** The aligned window a fill must cover, clipped to the blob; null if it is past the end. */
export function fillWindow(off: number, len: number, size: number): { start: number; end: number } | null {
  const start = alignDown(off);
  const end = Math.min(alignUp(off + len), alignUp(size));
  return start < end ? { start, end } : null;
}
