// BlobContent for a nydus data blob in a registry (formats.md §2.6): a
// kernel READ's window is mapped to chunks (binary search), widened to
// `amplify` bytes with the chunks that follow it (written after the READ has
// returned: it waits only for its own window), missing chunks are merged
// into Range GETs of at most `maxMerge` compressed bytes run concurrently
// through the per-host scheduler, and each chunk is decompressed straight
// into the caller's aligned buffer and digest-checked as soon as its own
// bytes have arrived, while the rest of its GET is still on the wire
// (arriving.ts): a READ that joins a GET waits only for its chunks. A chunk
// that fails its digest (or arrives short) is refetched; after
// `verifyAttempts` it is marked bad for a cool-down (bad-chunks.ts) and the
// fill rejects: wrong bytes are never written.
//
// A bad chunk fails only its own bytes: every other chunk of the window (and
// of the piece it shares with the bad one) is written first, the bad chunk's
// pages stay a hole. Chunks start on a page and no two chunks' spans share a
// page (chunkinfo.ts), so a hole never takes a neighbour's bytes. The fill
// rejects only if the window needs the bad chunk: a widened chunk that fails
// costs the READ nothing.
//
// Presence: a chunk written through a sink is "present". Widening and
// prefetch skip present chunks. A chunk inside the kernel's window is always
// delivered, present or not (the kernel asks only for holes, so a READ over
// a present chunk means the cache file lost it — e.g. culled and re-created —
// and skipping it would fail the reader with EIO); `trustPresence` restores
// nydus's behaviour of skipping them. Recently fetched compressed chunks are
// kept (cacheBytes) so such re-deliveries and races cost no GET.
//
// Deadlines: a fill given a signal stops waiting when it aborts (its READ's
// deadline), and so do its verification refetches. A GET is shared by every
// fill and prefetch run that joined it and is aborted only when all of them
// have stopped waiting (waiters.ts).
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { Allocator, BlobContent, ChunkHealth, FillHints, RangeSink, alignUp, fillWindow } from '../content';
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import { DataBlob, metadataTailBytes } from '../../image/blob/datablob';
import { FormatError } from '../../image/errors';
import type { BlobEntry } from '../../image/rafs/bootstrap';
import { Prefetch, PrefetchOptions, PrefetchTarget } from './prefetch';
import { Replay } from './replay';
import { BlobMetaCache, MetaSource } from './meta-cache';
import { BlobProgress, ChunkPresence, PresenceBitmap, markRange } from './presence';
import { Run, chunkSpan, coalesce, deliveryRanges, splitRange, subtractSpans, widen } from './planner';
import type { Repository } from '../../registry/client';
import { AbortedError, AuthError, RegistryError } from '../../registry/errors';
import { FetchScheduler, Priority } from './scheduler';
import { BlobTail, RangeReader, RegistryBlobSource, rangeReaderOf } from './source';
import { SharedFetch, Waiter } from './waiters';
import { ArrivingRange } from './arriving';
import { BadChunkError, BadChunks } from './bad-chunks';

export interface ChunkFetcherOptions {
  /** widen reads to at least this many uncompressed bytes (default 1 MiB; 0 = whole chunks only) */
  amplify?: number;
  /** most compressed bytes in one Range GET (default 4 MiB) */
  maxMerge?: number;
  /**
   * Largest buffer handed to a sink in one call (default 1 MiB; a bigger chunk
   * gets its own). A READ that joins another's fetch waits for the write of
   * the piece its chunk is in, so pieces stay about a chunk.
   */
  maxPiece?: number;
  /** fetch-and-verify attempts per chunk (default 3) */
  verifyAttempts?: number;
  /**
   * A chunk that failed all its verifyAttempts is not fetched again for this
   * long (default 60 s): READs needing it get EIO at once. Then one READ
   * tries it once more (healed, or bad for another cool-down).
   */
  badChunkCooldownMs?: number;
  /** compressed bytes of recently fetched chunks kept in memory (default 32 MiB) */
  cacheBytes?: number;
  /**
   * Those are let go once no chunk of the blob has been fetched or asked for
   * in this long (default 10 s; 0 = kept): a worker keeps the contents of
   * blobs it served for their next OPEN, and 32 MiB held for each of them
   * grew a worker by that much per image read.
   */
  cacheIdleMs?: number;
  /** skip present chunks even inside the requested window (nydus's behaviour; default false) */
  trustPresence?: boolean;
  /**
   * A chunk that a concurrent fill (or prefetch) is already writing is left
   * to it: this fill waits for that write instead of decoding and writing the
   * chunk again (and writes it itself if that one fails). Right when every
   * sink of this content writes to the same place (fscache: one cache file per
   * blob and volume). Default true.
   */
  shareDeliveries?: boolean;
  /** shared across blobs so the per-host limit holds for all of them */
  scheduler?: FetchScheduler;
  /** scheduling key (default: the registry host of a RegistryBlobSource, else the reader's name) */
  hostKey?: string;
  presence?: ChunkPresence;
  log?: Logger;
}

export interface ChunkFetcherStats {
  fills: number;
  /** Range GETs issued (after scheduling; not counting HTTP retries) */
  gets: number;
  getBytes: number;
  chunksFetched: number;
  chunksDelivered: number;
  /** fills that joined a fetch already under way or cached */
  joined: number;
  /** chunks on-demand fills needed (a READ's window, not the chunks it was widened by) */
  chunksWanted: number;
  /** of those, the ones already present: cache hits */
  chunksWantedPresent: number;
  /** of those, the ones a prefetch, replay or other fill was already fetching */
  chunksWantedJoined: number;
  /** chunks a replay delivered */
  chunksReplayed: number;
  /** chunks written after their READ had returned: the chunks it was widened by */
  chunksWidened: number;
  /** readahead windows that had chunks to fetch, and the chunks they delivered */
  fillsAhead: number;
  chunksAhead: number;
  /** present chunks delivered again because a window asked for them */
  redelivered: number;
  /** chunks a fill left to a concurrent fill that was writing them */
  sharedDeliveries: number;
  verifyFailures: number;
  /** times a chunk was marked bad (again, after a failed retry) */
  badChunksMarked: number;
  badChunksHealed: number;
  /** fills that found a chunk they need in its cool-down (failed without fetching it) */
  badChunkHits: number;
}

interface Job {
  id: string;
  run: Run;
  priority: number;
  started: boolean;
  /** aborted once every fill and prefetch run that joined it stopped waiting */
  shared: SharedFetch;
  /** the GET's body as received (parts.ts) */
  promise: Promise<Buffer[]>;
}

interface Piece {
  job: Job;
  /** the chunk's compressed bytes, views of the GET's body parts: resolves when they have arrived */
  promise: Promise<Buffer[]>;
  settled: boolean;
  size: number;
}

/** A chunk's compressed bytes as one waiter sees them: they reject with AbortedError when it gives up. */
interface Fetching {
  piece: Piece;
  bytes: Promise<Buffer[]>;
}

export class RemoteBlobContent implements BlobContent, PrefetchTarget {
  readonly name: string;
  readonly size: number;
  readonly presence: ChunkPresence;
  readonly scheduler: FetchScheduler;
  readonly hostKey: string;
  readonly stats: ChunkFetcherStats = {
    fills: 0, gets: 0, getBytes: 0, chunksFetched: 0, chunksDelivered: 0, joined: 0, chunksWanted: 0, chunksWantedPresent: 0, chunksWantedJoined: 0, chunksReplayed: 0, chunksWidened: 0, fillsAhead: 0, chunksAhead: 0, redelivered: 0, sharedDeliveries: 0,
    verifyFailures: 0, badChunksMarked: 0, badChunksHealed: 0, badChunkHits: 0,
  };
  readonly opts: Required<Omit<ChunkFetcherOptions, 'scheduler' | 'hostKey' | 'presence' | 'log'>>;
  /** chunks that kept failing verification, each with its cool-down */
  readonly bad: BadChunks;
  /** each chunk's piece: in flight, or arrived and still in `cached` */
  private readonly pieces = new Map<number, Piece>();
  /**
   * The arrived ones, up to cacheBytes, least recently used out first (none
   * kept with 0). Evicting by walking the Map of all pieces cost 3 µs a
   * chunk: each walk stepped over the in-flight pieces at its front, and over
   * the holes a Map keeps where entries were deleted.
   */
  private readonly cached: LRUCache<number, Piece> | undefined;
  /** chunks being written by some fill: resolves true once written, false if that failed */
  private readonly delivering = new Map<number, Promise<boolean>>();
  /** when a piece was last cached or asked for, and the timer that lets the cache go once that is cacheIdleMs ago */
  private lastPieceUse = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private bytesPresent = 0;
  private readonly totalBytes: number;
  private readonly log?: Logger;
  readonly reader: RangeReader;

  constructor(readonly blob: DataBlob, reader?: RangeReader, opts: ChunkFetcherOptions = {}) {
    this.reader = reader ?? rangeReaderOf(blob.src);
    this.name = blob.name;
    this.size = blob.entry.uncompressedSize;
    this.presence = opts.presence ?? new PresenceBitmap(blob.chunks.length);
    this.scheduler = opts.scheduler ?? new FetchScheduler();
    this.hostKey = opts.hostKey ?? (this.reader as Partial<RegistryBlobSource>).registry ?? this.reader.name;
    this.log = opts.log;
    this.opts = {
      amplify: opts.amplify ?? 1 << 20,
      maxMerge: opts.maxMerge ?? 4 << 20,
      maxPiece: opts.maxPiece ?? 1 << 20,
      verifyAttempts: Math.max(1, opts.verifyAttempts ?? 3),
      badChunkCooldownMs: Math.max(0, opts.badChunkCooldownMs ?? 60_000),
      cacheBytes: opts.cacheBytes ?? 32 << 20,
      cacheIdleMs: opts.cacheIdleMs ?? 10_000,
      trustPresence: opts.trustPresence ?? false,
      shareDeliveries: opts.shareDeliveries ?? true,
    };
    this.bad = new BadChunks(this.opts.badChunkCooldownMs);
    if (this.opts.cacheBytes > 0) {
      this.cached = new LRUCache<number, Piece>({
        maxSize: this.opts.cacheBytes,
        sizeCalculation: (p) => Math.max(1, p.size),
        // evicted, let go once idle, or dropped: later fills fetch it again
        dispose: (p, index) => {
          if (this.pieces.get(index) === p) this.pieces.delete(index);
        },
      });
    }
    this.totalBytes = blob.chunks.reduce((n, c) => n + c.uSize, 0);
    for (const c of blob.chunks) if (this.presence.has(c.index)) this.bytesPresent += c.uSize;
  }

  /**
   * Opens a blob in a registry: its size (HEAD, unless given), then ToC,
   * chunk infos and digests by Range GETs. `entry` is the bootstrap's blob
   * table entry; `tableDigests` the bootstrap's chunk table digests for blobs
   * without blob.digest (Bootstrap.chunkTableDigests(i)); `digest` defaults to
   * sha256:<blob id>.
   */
  static async open(repo: Repository, entry: BlobEntry, opts: ChunkFetcherOptions & {
    digest?: string;
    size?: number;
    tableDigests?: Buffer[] | null;
    signal?: AbortSignal;
    /** where the blob's metadata is kept locally: a worker that takes over opens it without a round trip */
    metaCache?: BlobMetaCache;
  } = {}): Promise<RemoteBlobContent> {
    const digest = opts.digest ?? `sha256:${entry.blobId}`;
    // metadata reads answered from `saved` where it has them; chunk reads always go to the registry
    const openWith = async (size: number | undefined, saved?: Map<string, Buffer>) => {
      let registry: RegistryBlobSource | undefined;
      let tail: BlobTail | undefined;
      if (size === undefined && !saved) {
        // one GET for the size and the metadata at the blob's end, instead of a HEAD and three GETs
        try {
          ({ source: registry, tail } = await RegistryBlobSource.openTail(repo, digest, metadataTailBytes(entry), opts.signal));
        } catch (err) {
          // a server (or a mirror before it) that does not do suffix ranges gets the old way; a cancel or refused credentials would fail that too
          if (err instanceof AbortedError || err instanceof AuthError || !(err instanceof RegistryError)) throw err;
          opts.log?.debug({ blob: entry.blobId, err: err.message }, 'a suffix Range GET failed; sizing the blob with a HEAD');
        }
      }
      registry ??= await RegistryBlobSource.open(repo, digest, size, opts.signal);
      const src = new MetaSource(registry, saved, tail);
      const blob = await DataBlob.open(entry, src, opts.tableDigests ?? null);
      src.dropTail(); // what the open read is in `recorded`; the blob keeps its source for its life
      const content = new RemoteBlobContent(blob, registry, opts);
      return { src, content };
    };
    const saved = opts.metaCache?.load(entry.blobId);
    if (saved) {
      try {
        return (await openWith(saved.size, saved.ranges)).content;
      } catch (err) {
        opts.log?.warn({ blob: entry.blobId, err: (err as Error).message }, 'the saved metadata of this blob does not open; reading it from the registry');
        opts.metaCache!.drop(entry.blobId);
      }
    }
    const { src, content } = await openWith(opts.size);
    opts.metaCache?.save(entry.blobId, src.size, src.recorded);
    return content;
  }

  progress(): BlobProgress {
    return {
      chunks: this.blob.chunks.length,
      chunksPresent: this.presence.count,
      bytes: this.totalBytes,
      bytesPresent: this.bytesPresent,
      fetchedBytes: this.stats.getBytes,
      chunksWanted: this.stats.chunksWanted,
      chunksWantedPresent: this.stats.chunksWantedPresent,
      chunksWantedJoined: this.stats.chunksWantedJoined,
      chunksReplayed: this.stats.chunksReplayed,
      chunksAhead: this.stats.chunksAhead,
    };
  }

  chunkHealth(): ChunkHealth {
    return {
      badChunks: this.bad.list(),
      verifyFailures: this.stats.verifyFailures,
      badChunksMarked: this.stats.badChunksMarked,
      badChunksHealed: this.stats.badChunksHealed,
    };
  }

  /** Records chunks already in the cache (e.g. found with SEEK_DATA after a restart). */
  markPresent(off: number, len: number): number {
    const added = markRange(this.presence, this.blob.chunks, off, len);
    for (const c of added) this.bytesPresent += c.uSize;
    return added.length;
  }

  /** Forgets presence (the cache file was replaced). */
  resetPresence(): void {
    for (const c of this.blob.chunks) this.presence.delete(c.index);
    this.bytesPresent = 0;
  }

  async fill(off: number, len: number, sink: RangeSink, alloc: Allocator, signal?: AbortSignal, hints?: FillHints): Promise<void> {
    const w = fillWindow(off, len, this.size);
    if (!w) return;
    const waiter = new Waiter(signal, `${this.name} fill [${w.start}, ${w.end})`);
    waiter.check();
    const ended = this.scheduler.beginDemand(); // prefetch holds back meanwhile
    try {
      await this.fillAligned(w, sink, alloc, waiter, hints?.exact ? 0 : this.opts.amplify, hints?.background);
    } finally {
      waiter.end(); // GETs it joined but no longer awaits may be abandoned now
      ended();
    }
  }

  private async fillAligned(w: { start: number; end: number }, sink: RangeSink, alloc: Allocator, waiter: Waiter, amplify: number,
    background?: (work: Promise<void>) => void): Promise<void> {
    this.stats.fills++;
    // Everything up to acquire() is synchronous, so concurrent fills see each other's fetches.
    const required = this.blob.chunksFor(w.start, w.end - w.start);
    const now = this.bad.now();
    // in their cool-down: not fetched; their pages stay holes and the fill fails once the rest is written
    const cooling = this.bad.size ? required.filter((c) => this.bad.cooling(c.index, now)) : [];
    const usable = cooling.length ? required.filter((c) => !cooling.includes(c)) : required;
    if (cooling.length) this.stats.badChunkHits++;
    const keep = this.opts.trustPresence ? usable.filter((c) => this.presence.has(c.index)) : [];
    let needed = this.opts.trustPresence ? usable.filter((c) => !this.presence.has(c.index)) : usable;
    // chunks another fill is writing right now: wait for it rather than write them twice
    const others = this.opts.shareDeliveries ? needed.filter((c) => this.delivering.has(c.index)) : [];
    if (others.length) needed = needed.filter((c) => !this.delivering.has(c.index));
    this.stats.chunksWanted += usable.length;
    for (const c of usable) {
      if (this.presence.has(c.index)) this.stats.chunksWantedPresent++;
      else if (this.pieces.has(c.index) || this.delivering.has(c.index)) this.stats.chunksWantedJoined++;
    }
    for (const c of needed) if (this.presence.has(c.index)) this.stats.redelivered++;
    const extra = widen({
      chunks: this.blob.chunks,
      required,
      start: w.start,
      end: w.end,
      amplify,
      maxExtraBytes: this.opts.maxMerge,
      skip: (c) => this.busy(c, now),
    });
    // one acquire, so the widened chunks ride the same GETs as the window's
    const got = this.acquire([...needed, ...extra], Priority.OnDemand, waiter);
    if (extra.length) {
      const widened = this.deliverWidened(extra, sink, alloc, waiter.signal);
      background?.(widened);
    }
    if (others.length) {
      this.acquire(others, Priority.OnDemand, waiter); // joins their fetch: promotes a queued prefetch GET, keeps it alive
      this.stats.sharedDeliveries += others.length;
    }
    const waits = others.map((c) => this.delivering.get(c.index)!);
    const ranges = deliveryRanges(w, needed, [...keep, ...others, ...cooling]);
    const own = this.deliver(ranges, needed, got, sink, alloc, Priority.OnDemand, waiter);
    const [mine, theirs] = await Promise.allSettled([own, waiter.wait(Promise.all(waits))]);
    if (mine.status === 'rejected') throw mine.reason;
    if (theirs.status === 'rejected') throw theirs.reason; // gave up waiting for the other writer
    const failures = mine.value;
    // a concurrent writer failed: write those chunks here, unless it found them bad
    const lost = others.filter((_, i) => !theirs.value[i]);
    const retry = lost.filter((c) => !this.bad.cooling(c.index));
    if (retry.length) {
      const again = this.acquire(retry, Priority.OnDemand, waiter);
      const more = await this.deliver(deliveryRanges(chunkSpan(retry[0]), retry, []), retry, again, sink, alloc, Priority.OnDemand, waiter);
      for (const [i, e] of more) failures.set(i, e);
    }
    // The window's outcome: all its chunks written, or why not (widened chunks that failed do not count).
    const errors: Error[] = [];
    for (const c of required) {
      const e = failures.get(c.index);
      if (e) errors.push(e);
      else if (cooling.includes(c) || (lost.includes(c) && !retry.includes(c))) errors.push(this.coolingError(c));
    }
    if (errors.length) throw errors.find((e) => !(e instanceof BadChunkError)) ?? errors[0]; // a retry may cure the others
  }

  async fillAhead(off: number, len: number, sink: RangeSink, alloc: Allocator, signal?: AbortSignal): Promise<number> {
    const w = fillWindow(off, len, this.size);
    if (!w) return 0;
    const now = this.bad.now();
    // Synchronous up to acquire(), like fillAligned: fills starting later join these GETs.
    const chunks = this.blob.chunksFor(w.start, w.end - w.start).filter((c) => !this.busy(c, now));
    if (chunks.length === 0) return 0;
    this.stats.fillsAhead++;
    const waiter = new Waiter(signal, `${this.name} readahead [${w.start}, ${w.end})`);
    try {
      const got = this.acquire(chunks, Priority.Ahead, waiter);
      // the chunks' own spans: the pages between two of them may belong to a chunk someone else is writing
      const failed = await this.deliver(deliveryRanges(chunkSpan(chunks[0]), chunks, []), chunks, got, sink, alloc, Priority.Ahead, waiter);
      this.stats.chunksAhead += chunks.length - failed.size;
      for (const e of failed.values()) throw e;
      return chunks.length;
    } finally {
      waiter.end();
    }
  }

  /**
   * A READ's widened chunks, written after it has returned: it waits only for
   * its own window, and these follow in its GETs, kept alive by a waiter of
   * their own. Like readahead, a failure costs the READ nothing. The READ's
   * signal stops them too: a READ past its deadline must leave a stalled GET
   * to be aborted, so that the next READ starts a fresh one. Synchronous up
   * to deliver's first await, so later fills see these writes under way.
   * Returns that work (it never rejects): the fill's caller holds its sink
   * open for it (FillHints.background).
   */
  private deliverWidened(extra: ChunkInfo[], sink: RangeSink, alloc: Allocator, signal: AbortSignal | undefined): Promise<void> {
    const waiter = new Waiter(signal, `${this.name} widened [${extra[0].uOffset}, ${chunkSpan(extra[extra.length - 1]).end})`);
    const got = new Map<number, Fetching>();
    const jobs = new Set<Job>();
    for (const c of extra) {
      const piece = this.pieces.get(c.index)!; // acquired just now
      got.set(c.index, { piece, bytes: piece.promise });
      jobs.add(piece.job);
    }
    for (const job of jobs) job.shared.join(waiter);
    return this.deliver(deliveryRanges(chunkSpan(extra[0]), extra, []), extra, got, sink, alloc, Priority.OnDemand, waiter)
      .then((failed) => {
        this.stats.chunksWidened += extra.length - failed.size;
      }, (err) => {
        this.log?.debug({ blob: this.name, err: (err as Error).message }, 'widened chunks not written');
      })
      .finally(() => waiter.end());
  }

  /** The error for a READ that needs a chunk in its cool-down. */
  private coolingError(c: ChunkInfo): BadChunkError {
    const b = this.bad.get(c.index)!;
    return new BadChunkError(
      `chunk ${c.index} is marked bad (failed verification, ${b.failures}× after all attempts) until ${new Date(b.until).toISOString()}; ` +
      `its bytes give EIO until then`,
      { what: `${this.name} chunk ${c.index} (uncompressed [${c.uOffset}, +${c.uSize}))` }, c.index, b.until);
  }

  /** The chunks at these uncompressed offsets, fetched in this order below READs (a recorded start). */
  replay(uOffsets: number[], sink: RangeSink, alloc: Allocator): Replay {
    const seen = new Set<number>();
    const order: ChunkInfo[] = [];
    for (const o of uOffsets) {
      const [c] = this.blob.chunksFor(o, 1);
      if (c && !seen.has(c.index)) {
        seen.add(c.index);
        order.push(c);
      }
    }
    return new Replay(this, order, sink, alloc, { maxMerge: this.opts.maxMerge, onDelivered: (n) => { this.stats.chunksReplayed += n; } });
  }

  /** Background fetch of the whole blob at low priority; READs overtake it. */
  prefetch(sink: RangeSink, alloc: Allocator, opts: PrefetchOptions = {}): Prefetch {
    return new Prefetch(this, sink, alloc, opts);
  }

  // ---- internals shared with Prefetch

  /**
   * Whether a chunk is present, being fetched or written, or bad for now
   * (prefetch, replay and widening skip those). A chunk whose bytes are in
   * memory but not present (the cache file was replaced: resetPresence) is
   * not busy: it is written again, from memory, without a GET.
   */
  busy(c: ChunkInfo, now?: number): boolean {
    const p = this.pieces.get(c.index);
    return this.presence.has(c.index) || (p !== undefined && !p.settled) || this.delivering.has(c.index) ||
      (this.bad.size > 0 && this.bad.cooling(c.index, now));
  }

  /**
   * Compressed bytes for each chunk: joins fetches under way (promoting
   * queued prefetch ones), schedules merged GETs for the rest; the waiter
   * keeps each of those GETs alive while it waits. Synchronous.
   */
  private acquire(chunks: ChunkInfo[], priority: number, waiter: Waiter): Map<number, Fetching> {
    const out = new Map<number, Fetching>();
    const missing: ChunkInfo[] = [];
    const joined = new Set<Job>();
    for (const c of chunks) {
      const p = this.pieces.get(c.index);
      if (p) {
        this.stats.joined++;
        if (priority > p.job.priority) {
          if (!p.job.started) this.scheduler.promote(this.hostKey, p.job.id, priority);
          p.job.priority = priority;
        }
        if (p.settled) this.touch(c.index);
        if (!joined.has(p.job)) {
          joined.add(p.job);
          p.job.shared.join(waiter);
        }
        out.set(c.index, { piece: p, bytes: waiter.wait(p.promise) });
      } else missing.push(c);
    }
    for (const run of coalesce(missing, this.opts.maxMerge)) {
      const job = this.startJob(run, priority);
      for (const c of run.chunks) {
        const piece = this.pieces.get(c.index)!;
        out.set(c.index, { piece, bytes: waiter.wait(piece.promise) });
      }
      job.shared.join(waiter); // last: a waiter that already gave up aborts the job at once
    }
    return out;
  }

  private startJob(run: Run, priority: number): Job {
    const id = this.scheduler.newId();
    const shared = new SharedFetch(`${this.name} GET [${run.cStart}, ${run.cEnd})`);
    const job: Job = { id, run, priority, started: false, shared, promise: undefined! };
    // Abandoned: later fills must start their own GET rather than join a dying one.
    shared.signal.addEventListener('abort', () => this.forget(job), { once: true });
    const len = run.cEnd - run.cStart;
    // each chunk is had as soon as its bytes are in (arriving.ts)
    const body = new ArrivingRange(len);
    job.promise = this.scheduler.run(this.hostKey, async () => {
      job.started = true;
      if (shared.aborted) throw new AbortedError(`${this.name} GET [${run.cStart}, ${run.cEnd}) nobody waits for`);
      this.stats.gets++;
      const buf = await this.reader.readRange(run.cStart, len, shared.signal, (b, at) => body.part(b, at));
      this.stats.getBytes += len;
      this.stats.chunksFetched += run.chunks.length;
      return buf;
    }, { priority, id });
    job.promise.then((b) => {
      body.settle(b);
      shared.settle();
    }, (e) => {
      body.fail(e);
      shared.settle();
    });
    for (const c of run.chunks) {
      const piece: Piece = {
        job,
        promise: body.want(c.cOffset - run.cStart, c.cSize),
        settled: false,
        size: c.cSize,
      };
      piece.promise.then(
        () => {
          piece.settled = true;
          if (this.pieces.get(c.index) !== piece) return;
          // a piece larger than the whole cache is not kept
          if (this.cached?.set(c.index, piece).has(c.index)) this.usedCache();
          else this.pieces.delete(c.index);
        },
        () => {
          if (this.pieces.get(c.index) === piece) this.pieces.delete(c.index);
        },
      );
      this.pieces.set(c.index, piece);
    }
    return job;
  }

  /** Drops an abandoned job's pieces that had not arrived (those that had are whole, and cached). */
  private forget(job: Job): void {
    for (const c of job.run.chunks) {
      const p = this.pieces.get(c.index);
      if (p?.job === job && !p.settled) this.pieces.delete(c.index);
    }
  }

  /** Makes a cached piece the most recently used. */
  private touch(index: number): void {
    this.cached?.get(index);
    this.usedCache();
  }

  /** The cache was used now: it is let go cacheIdleMs after its last use. */
  private usedCache(): void {
    if (this.opts.cacheIdleMs <= 0) return;
    this.lastPieceUse = Date.now();
    if (!this.idleTimer) this.armIdle(this.opts.cacheIdleMs);
  }

  private armIdle(ms: number): void {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      const idle = Date.now() - this.lastPieceUse;
      if (idle < this.opts.cacheIdleMs) return this.armIdle(this.opts.cacheIdleMs - idle);
      this.cached?.clear(); // those in flight stay: their GETs' waiters hold them
    }, ms);
    this.idleTimer.unref(); // a content nobody uses any more is collected once it fires
  }

  /** Forgets a piece that failed verification, if it is still the cached one. */
  private drop(index: number, piece: Piece): void {
    if (this.pieces.get(index) !== piece) return;
    this.pieces.delete(index);
    if (this.cached?.peek(index) === piece) this.cached.delete(index);
  }

  /**
   * Writes `ranges` (page-aligned, each holding whole chunks of `chunks`)
   * through the sink: decompressed, verified chunks; zeros elsewhere. A chunk
   * that cannot be had or verified leaves only its own pages unwritten: the
   * rest of its piece is written around it. Resolves with those chunks'
   * errors; rejects if the waiter gave up (that piece writes nothing) or the
   * sink failed. Waits for every piece first, so nothing is written after.
   */
  private async deliver(ranges: Array<{ start: number; end: number }>, chunks: ChunkInfo[], got: Map<number, Fetching>,
    sink: RangeSink, alloc: Allocator, priority: number, waiter: Waiter): Promise<Map<number, Error>> {
    const pieces = ranges.flatMap((r) => splitRange(r, chunks, this.opts.maxPiece));
    const byStart = [...chunks].sort((a, b) => a.uOffset - b.uOffset);
    // Registered before the first await, so fills starting later see these writes under way.
    const plans = pieces.map((piece) => {
      const inside = byStart.filter((c) => c.uOffset >= piece.start && c.uOffset < piece.end);
      const writes = inside.map((c) => {
        let settle!: (ok: boolean) => void;
        const done = new Promise<boolean>((r) => (settle = r));
        this.delivering.set(c.index, done);
        return { c, done, settle, ok: false };
      });
      return { piece, inside, writes };
    });
    const failures = new Map<number, Error>();
    const results = await Promise.allSettled(plans.map(async ({ piece, inside, writes }) => {
      try {
        for (const c of inside) {
          if (chunkSpan(c).end > piece.end) throw new Error(`internal: chunk ${c.index} crosses piece [${piece.start}, ${piece.end})`);
        }
        // Each chunk decodes (on the threadpool; up to INLINE_DECODE_MAX inline) as soon as its own bytes are in, while the rest of its GET arrives.
        // The buffer is taken when the first one is in: a piece whose GET is still queued holds none.
        let taken: Buffer | undefined;
        const bufOf = () => (taken ??= alloc(piece.end - piece.start));
        const bad = new Map<ChunkInfo, Error>();
        const decoded = await Promise.allSettled(inside.map(async (c) => {
          const f = got.get(c.index)!;
          const bytes = await f.bytes;
          const at = c.uOffset - piece.start;
          await this.decodeInto(c, bytes, f.piece, bufOf().subarray(at, at + c.uSize), priority, waiter);
        }));
        decoded.forEach((d, k) => {
          if (d.status === 'fulfilled') return;
          if (d.reason instanceof AbortedError) throw d.reason; // the waiter gave up: this piece writes nothing
          bad.set(inside[k], d.reason as Error);
        });
        const buf = bufOf();
        if (bad.size === 0) await sink(piece.start, buf);
        else {
          // the good chunks (and the zeros between chunks) around the bad ones' pages, each in a buffer of its own
          for (const r of subtractSpans([piece], [...bad.keys()].map(chunkSpan))) {
            const part = alloc(r.end - r.start);
            buf.copy(part, 0, r.start - piece.start, r.end - piece.start);
            await sink(r.start, part);
          }
        }
        for (const w of writes) {
          const e = bad.get(w.c);
          if (e) failures.set(w.c.index, e);
          else {
            this.markDelivered(w.c);
            w.ok = true;
          }
        }
      } finally {
        for (const w of writes) {
          w.settle(w.ok);
          if (this.delivering.get(w.c.index) === w.done) this.delivering.delete(w.c.index);
        }
      }
    }));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return failures;
  }

  private markDelivered(c: ChunkInfo): void {
    this.stats.chunksDelivered++;
    if (!this.presence.has(c.index)) {
      this.presence.add(c.index);
      this.bytesPresent += c.uSize;
    }
  }

  /**
   * Decodes and verifies one chunk into dst; on a digest/size failure
   * refetches it, up to verifyAttempts (one attempt for a chunk back from
   * its cool-down), then marks it bad. A chunk that verifies is healed.
   */
  private async decodeInto(c: ChunkInfo, first: Buffer[], firstPiece: Piece, dst: Buffer, priority: number,
    waiter: Waiter): Promise<void> {
    let compressed = first;
    let piece = firstPiece;
    const attempts = this.bad.has(c.index) ? 1 : this.opts.verifyAttempts;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.blob.decodeChunk(c, compressed, dst);
        if (this.bad.has(c.index)) this.healed(c);
        return;
      } catch (e) {
        if (!(e instanceof FormatError)) throw e;
        this.stats.verifyFailures++;
        this.drop(c.index, piece);
        // out of attempts, or another fill found it bad meanwhile
        if (attempt >= attempts || this.bad.cooling(c.index)) {
          const until = this.markBad(c, attempt, e.message);
          throw new BadChunkError(`chunk ${c.index} failed verification ${attempt} times; last: ${e.message}`,
            { what: `${this.name} chunk ${c.index} (compressed [${c.cOffset}, +${c.cSize}))` }, c.index, until);
        }
        // info: a chunk that keeps failing gets its one warning when it is marked bad
        this.log?.info({ blob: this.name, chunk: c.index, attempt, err: e.message }, 'chunk failed verification; refetching');
        waiter.check(); // past the deadline: no refetch
        dst.fill(0);
        const again = this.acquire([c], priority, waiter).get(c.index)!;
        piece = again.piece;
        compressed = await again.bytes;
      }
    }
  }

  /** Marks c bad for a cool-down (one log line per marking, not per READ); returns when the cool-down ends. */
  private markBad(c: ChunkInfo, attempts: number, err: string): number {
    const { entry, marked } = this.bad.mark(c, err);
    if (!marked) return entry.until;
    this.stats.badChunksMarked++;
    const fields = {
      blob: this.name, chunk: c.index, uOffset: c.uOffset, uSize: c.uSize, cOffset: c.cOffset, cSize: c.cSize,
      attempts, failures: entry.failures, until: new Date(entry.until).toISOString(), err,
    };
    if (entry.failures === 1) this.log?.warn(fields, 'chunk keeps failing verification: marked bad; its bytes give EIO until the cool-down ends');
    else this.log?.info(fields, 'bad chunk still fails verification after its cool-down: bad for another cool-down');
    return entry.until;
  }

  private healed(c: ChunkInfo): void {
    const b = this.bad.heal(c.index);
    if (!b) return;
    this.stats.badChunksHealed++;
    this.log?.info({ blob: this.name, chunk: c.index, uOffset: c.uOffset, uSize: c.uSize, failures: b.failures },
      'bad chunk verified: healed');
  }

  /** Chunk runs for prefetch: consecutive chunks from `from` that are not busy, compressed-contiguous, ≤ maxMerge. */
  nextPrefetchRun(from: number): { run: ChunkInfo[]; next: number } {
    const chunks = this.blob.chunks;
    let i = from;
    while (i < chunks.length && this.busy(chunks[i])) i++;
    const run: ChunkInfo[] = [];
    let bytes = 0;
    for (; i < chunks.length; i++) {
      const c = chunks[i];
      if (this.busy(c)) break;
      const prev = run[run.length - 1];
      if (prev && c.cOffset !== prev.cOffset + prev.cSize) break;
      if (run.length && bytes + c.cSize > this.opts.maxMerge) break;
      run.push(c);
      bytes += c.cSize;
    }
    return { run, next: i };
  }

  /** Delivers one prefetch run (its chunks and the padding between them); cancelling stops its GETs nobody else waits for. */
  async deliverRun(run: ChunkInfo[], sink: RangeSink, alloc: Allocator, signal?: AbortSignal): Promise<void> {
    const waiter = new Waiter(signal, `${this.name} prefetch`);
    try {
      waiter.check();
      const got = this.acquire(run, Priority.Prefetch, waiter);
      const start = run[0].uOffset;
      const end = Math.min(alignUp(this.size), chunkSpan(run[run.length - 1]).end);
      const failed = await this.deliver([{ start, end }], run, got, sink, alloc, Priority.Prefetch, waiter);
      for (const e of failed.values()) throw e; // the run's other chunks were written
    } finally {
      waiter.end();
    }
  }
}
