// Serving cachefiles on-demand requests: OPEN → resolve the blob and copen
// it; READ → fill the range into the object's anon fd, then READ_COMPLETE;
// CLOSE → drop the object. The device is behind DeviceIO, so all of this runs
// in unit tests without a kernel.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { Allocator, BlobContent, ContentResolver, RangeSink, ReadObserver, UnknownBlobError, fillRetryable } from '../content/content';
import { CacheObject, ObjectClosedError, ObjectTable } from './objects';
import { Message, Opcode, OpenMsg, ReadMsg, CloseMsg, cmd, volumeName } from './protocol';
import type { TraceRecorder } from './learn/trace-recorder';
import { DEFAULT_READAHEAD, ReadaheadOptions, ReadaheadStreams, aheadParts } from '../content/readahead';
import { PartQueue } from '../content/part-queue';

const ENOENT = 2;
const EIO = 5;
/** ENOBUFS retries of presence recovery after OPEN: 5 ms doubling, about 2.5 s in all */
const PRESENCE_RETRIES = 9;

/** The syscalls the daemon makes: /dev/cachefiles commands, and I/O on anon fds. */
export interface DeviceIO {
  command(line: string): void;
  /** Writes buf at off; buf is the device's afterwards (it may be reused). */
  pwrite(fd: number, buf: Buffer, off: number): Promise<void>;
  readComplete(fd: number, msgId: number): void;
  close(fd: number): void;
  /** [offset, length] data ranges of [0, end) of the object's cache file (SEEK_DATA/SEEK_HOLE on its anon fd). */
  dataExtents?(fd: number, end: number): [number, number][];
  alloc: Allocator;
}

export interface DaemonOptions {
  /** attempts per READ before it is failed (the reader then gets EIO) */
  readAttempts: number;
  /** first retry delay; doubles each time */
  retryDelayMs: number;
  /**
   * Every READ is answered within this many ms of its arrival: with data, or
   * without (the reader gets EIO). Attempts, verification refetches and
   * registry retries under it all stop then. Default: no deadline.
   */
  readDeadlineMs?: number;
  /** start fetching a remote blob whole as soon as the kernel opens it */
  prefetch?: boolean;
  /** told of each READ answered (metrics) */
  onRead?: ReadObserver;
  /** learned prefetch: records READs of learning images (before READ_COMPLETE) */
  recorder?: Pick<TraceRecorder, 'access' | 'learning'>;
  /** learned prefetch: the uncompressed offsets of the chunks to fetch first when the kernel opens a blob, in order */
  replayPlan?: (volume: string, cookie: string) => number[];
  /** windows fetched ahead of sequential readers (default DEFAULT_READAHEAD; max 0: none) */
  readahead?: ReadaheadOptions;
}

export interface DaemonStats {
  opens: number;
  opensRefused: number;
  reads: number;
  /** READs completed without data (the reader got EIO) */
  readsFailed: number;
  /** of readsFailed, those that ran out of time (readDeadlineMs) */
  readsTimedOut: number;
  readRetries: number;
  bytesWritten: number;
  closes: number;
  /** windows fetched ahead of a sequential reader, and those that failed (a READ then fetches its bytes) */
  fillsAhead: number;
  fillsAheadFailed: number;
}

export class FscacheDaemon {
  readonly objects = new ObjectTable();
  readonly stats: DaemonStats = {
    opens: 0, opensRefused: 0, reads: 0, readsFailed: 0, readsTimedOut: 0, readRetries: 0, bytesWritten: 0, closes: 0,
    fillsAhead: 0, fillsAheadFailed: 0,
  };
  private inflight = 0;
  /** messages handled to the end, for the heartbeat */
  handled = 0;
  /** arrival times of the READs in flight, oldest first (a Map keeps insertion order) */
  private readonly readsSince = new Map<object, number>();

  /** local windows' parts, in order, as many at once as there are cores */
  private readonly parts: PartQueue;

  constructor(
    private readonly io: DeviceIO,
    private readonly resolver: ContentResolver,
    private readonly log: Logger,
    private readonly opts: DaemonOptions = { readAttempts: 4, retryDelayMs: 50 },
  ) {
    this.parts = new PartQueue(opts.readahead?.partsAtOnce);
  }

  get pending(): number {
    return this.inflight;
  }

  /** How long the oldest READ in flight has waited, ms (0: none). */
  oldestReadMs(now = Date.now()): number {
    for (const since of this.readsSince.values()) return now - since;
    return 0;
  }

  /** Handles one message. Never rejects: every failure is answered to the kernel and logged. */
  async handle(m: Message): Promise<void> {
    this.inflight++;
    try {
      switch (m.opcode) {
        case Opcode.Open:
          return await this.open(m);
        case Opcode.Read:
          return await this.read(m);
        case Opcode.Close:
          return this.close(m);
      }
    } catch (err) {
      this.log.error({ err, msgId: m.msgId, opcode: m.opcode }, 'unexpected failure handling a cachefiles message');
    } finally {
      this.inflight--;
      this.handled++;
    }
  }

  private async open(m: OpenMsg): Promise<void> {
    const volume = volumeName(m.volumeKey);
    let content: BlobContent;
    try {
      content = await this.resolver.resolve(volume, m.cookieKey);
    } catch (err) {
      const errno = err instanceof UnknownBlobError ? ENOENT : EIO;
      this.stats.opensRefused++;
      this.log.warn({ volume, cookie: m.cookieKey, errno, err: (err as Error).message }, 'refusing OPEN');
      this.answer(`copen ${m.msgId},-${errno}`);
      this.io.close(m.fd);
      return;
    }
    // Recorded before copen: a READ for this object can follow the moment copen lands.
    this.objects.add({ objectId: m.objectId, fd: m.fd, volume, cookie: m.cookieKey, content });
    this.stats.opens++;
    this.log.debug({ objectId: m.objectId, volume, cookie: m.cookieKey, size: content.size }, 'OPEN');
    if (!this.answer(cmd.copen(m.msgId, content.size))) {
      this.objects.delete(m.objectId);
      this.io.close(m.fd);
      this.resolver.release?.(content);
      return;
    }
    const obj = this.objects.get(m.objectId)!;
    if (content.markPresent && this.io.dataExtents) return this.recoverPresence(obj, 0);
    obj.presence = 'known';
    this.warmUp(obj);
  }

  /**
   * The cache file is the truth about what is present: it outlives the daemon
   * that wrote it (after a restart its chunks must not be fetched again), and
   * it can be gone while this process remembers its chunks (the image was
   * removed and pulled again). Prefetch starts only once it is known, so it
   * never refetches what the file holds.
   *
   * cachefiles sends OPEN before it attaches the cache file to the object, so
   * right after copen lseek on the anon fd fails with ENOBUFS: retried with
   * backoff here, and tried again by the first READ (which comes from that
   * file, so it is attached by then). Best effort: READs are served either way.
   */
  private recoverPresence(obj: CacheObject, attempt: number): void {
    if (obj.presence !== 'unknown' || this.objects.get(obj.objectId) !== obj) return;
    const content = obj.content;
    try {
      const extents = this.io.dataExtents!(obj.fd, content.size);
      content.resetPresence?.();
      let chunks = 0;
      for (const [off, len] of extents) chunks += content.markPresent!(off, len);
      if (chunks > 0) this.log.info({ objectId: obj.objectId, blob: content.name, chunks }, 'chunks already in the cache');
      this.streamsOf(obj)?.seed(extents);
      obj.presence = 'known';
    } catch (err) {
      const notYet = (err as NodeJS.ErrnoException).code === 'ENOBUFS';
      if (notYet && attempt < PRESENCE_RETRIES) {
        setTimeout(() => this.recoverPresence(obj, attempt + 1), 5 * 2 ** attempt).unref?.();
        return;
      }
      obj.presence = 'unreadable';
      this.log.warn({ objectId: obj.objectId, blob: content.name, attempts: attempt + 1, err: (err as Error).message },
        'cannot read the cache file\'s extents; chunks it holds may be fetched again');
    }
    this.warmUp(obj);
  }

  /**
   * Once presence is known: a recorded start's chunks first (replay), then
   * the whole blob if prefetch is on. Replay runs below READs but does not
   * wait for them to quiet down as prefetch does: it is fetching what they
   * are about to ask for.
   */
  private warmUp(obj: CacheObject): void {
    const plan = obj.content.replay ? this.opts.replayPlan?.(obj.volume, obj.cookie) ?? [] : [];
    if (plan.length === 0) return this.startPrefetch(obj);
    const r = obj.content.replay!(plan, this.sinkOf(obj), this.io.alloc);
    obj.prefetch = r;
    this.log.info({ objectId: obj.objectId, blob: obj.content.name, chunks: plan.length }, 'replaying a recorded start');
    void r.done.then((res) => {
      this.log.info({ objectId: obj.objectId, blob: obj.content.name, ...res }, 'replay done');
      if (obj.prefetch !== r || this.objects.get(obj.objectId) !== obj) return; // closed or stopped meanwhile
      obj.prefetch = undefined;
      this.startPrefetch(obj);
    });
  }

  /**
   * How many more bytes prefetch may bring into the cache ([cache] max_size
   * less what it holds, from lazysnapd); undefined: no bound. A prefetch that
   * would take more stops, and says so; on-demand reads are never held back.
   */
  private prefetchBudget: number | undefined;
  /** prefetches stopped or not started because of the bound (metrics) */
  prefetchesStopped = 0;

  setPrefetchBudget(bytes: number): void {
    this.prefetchBudget = bytes;
    for (const obj of this.objects.all()) {
      if (!obj.prefetch || missingBytes(obj.content) <= bytes) continue;
      obj.prefetch.cancel();
      obj.prefetch = undefined;
      obj.prefetchStopped = true;
      this.prefetchesStopped++;
      this.log.info({ objectId: obj.objectId, blob: obj.content.name, missing: missingBytes(obj.content), budget: bytes },
        'prefetch stopped: the rest of the blob would take the cache past [cache] max_size (on-demand reads go on)');
    }
  }

  private startPrefetch(obj: CacheObject): void {
    if (!this.opts.prefetch || !obj.content.prefetch || obj.prefetch || obj.prefetchStopped) return;
    if (this.prefetchBudget !== undefined && missingBytes(obj.content) > this.prefetchBudget) {
      obj.prefetchStopped = true;
      this.prefetchesStopped++;
      this.log.info({ objectId: obj.objectId, blob: obj.content.name, missing: missingBytes(obj.content), budget: this.prefetchBudget },
        'prefetch not started: the blob would take the cache past [cache] max_size (on-demand reads go on)');
      return;
    }
    obj.prefetch = obj.content.prefetch(this.sinkOf(obj), this.io.alloc);
    this.log.info({ objectId: obj.objectId, blob: obj.content.name }, 'prefetching');
  }

  private async read(m: ReadMsg): Promise<void> {
    const key = {};
    this.readsSince.set(key, Date.now());
    try {
      await this.readOne(m);
    } finally {
      this.readsSince.delete(key);
    }
  }

  private async readOne(m: ReadMsg): Promise<void> {
    const obj = this.objects.get(m.objectId);
    if (!obj) {
      // Cannot happen with a sane kernel: a READ always follows its OPEN. Without the fd there is nothing to complete.
      this.log.error({ msgId: m.msgId, objectId: m.objectId }, 'READ for an unknown object');
      return;
    }
    const startedAt = process.hrtime.bigint();
    this.stats.reads++;
    obj.reads++;
    if (obj.presence === 'unknown') this.recoverPresence(obj, PRESENCE_RETRIES);
    // in the journal before READ_COMPLETE, so a kill never loses it (trace-journal.ts)
    this.opts.recorder?.access(obj.volume, obj.cookie, m.off, m.readLen);
    const ms = this.opts.readDeadlineMs;
    const deadline = new AbortController();
    const timer = ms ? setTimeout(() => deadline.abort(new DOMException(`READ deadline of ${ms} ms passed`, 'TimeoutError')), ms) : undefined;
    const fill = this.fillWithRetries(obj, m, deadline.signal);
    this.readAhead(obj, m); // after the READ's own fill has taken its chunks
    // Raced, not only signalled: a fill that ignores the signal (or a write stuck in the kernel) cannot hold the reader.
    const ok = ms ? await Promise.race([fill, whenAborted(deadline.signal)]) : await fill;
    clearTimeout(timer);
    this.opts.onRead?.(obj.content, startedAt, ok ? 'filled' : deadline.signal.aborted ? 'timeout' : 'eio', m.readLen);
    if (!ok) this.stats.readsFailed++;
    if (!ok && deadline.signal.aborted) {
      this.stats.readsTimedOut++;
      this.log.error({ objectId: obj.objectId, blob: obj.content.name, off: m.off, len: m.readLen, deadlineMs: ms },
        'READ missed its deadline; the reader gets EIO');
    }
    // closed meanwhile: the kernel has flushed this READ itself, and the fd may be gone
    if (obj.closed) return;
    try {
      // Completing without data leaves a hole: the kernel fails the reader's read with EIO.
      this.io.readComplete(obj.fd, m.msgId);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, msgId: m.msgId, objectId: m.objectId }, 'READ_COMPLETE failed (object closed?)');
    }
  }

  /**
   * A READ that continues a sequential stream past its trigger: the next
   * window is filled in the background through the object's sink (its fd
   * stays open until CLOSE, and writes after CLOSE are refused). A remote
   * blob fetches the window's chunks nobody has yet (fillAhead); a local one
   * is filled in parts. Not for a start being recorded: bytes fetched ahead
   * would reach the cache unrecorded.
   */
  private readAhead(obj: CacheObject, m: ReadMsg): void {
    const win = this.streamsOf(obj)?.observe(m.off, Math.min(m.off + m.readLen, obj.content.size));
    if (!win) return;
    const ms = this.opts.readDeadlineMs;
    const c = obj.content;
    for (const part of aheadParts(win, !!c.fillAhead)) {
      this.stats.fillsAhead++;
      const len = part.end - part.start;
      const signal = () => (ms ? AbortSignal.timeout(ms) : undefined); // from its start: a local part may wait its turn
      (c.fillAhead
        ? c.fillAhead(part.start, len, this.sinkOf(obj), this.io.alloc, signal())
        : this.parts.run(async () => {
          if (!obj.closed) await c.fill(part.start, len, this.sinkOf(obj), this.io.alloc, signal());
        }))
        .catch((err: Error) => {
          this.stats.fillsAheadFailed++;
          // nobody waits for it: a READ of these bytes fetches them again, and says so if that fails
          if (!obj.closed) this.log.debug({ objectId: obj.objectId, blob: c.name, ...part, err: err.message }, 'readahead failed');
        });
    }
  }

  /** The object's sequential streams, or undefined where it gets no readahead (off, closed, a start being recorded). */
  private streamsOf(obj: CacheObject): ReadaheadStreams | undefined {
    const ra = this.opts.readahead ?? DEFAULT_READAHEAD;
    if (ra.max <= 0 || obj.closed || this.opts.recorder?.learning(obj.volume, obj.cookie)) return undefined;
    return (obj.readahead ??= new ReadaheadStreams(obj.content.size, ra));
  }

  /** Never rejects; stops (false) once signal aborts, without logging: read() reports that. */
  private async fillWithRetries(obj: CacheObject, m: ReadMsg, signal: AbortSignal): Promise<boolean> {
    if (m.off >= obj.content.size) {
      this.log.warn({ objectId: obj.objectId, off: m.off, len: m.readLen, size: obj.content.size }, 'READ past the end of the object');
      return false;
    }
    // a learning image's READs fetch only what they ask: widened chunks would reach the cache without a READ, unrecorded
    const exact = this.opts.recorder?.learning(obj.volume, obj.cookie) ?? false;
    for (let attempt = 1; ; attempt++) {
      try {
        await obj.content.fill(
          m.off,
          m.readLen,
          this.sinkOf(obj),
          this.io.alloc,
          signal,
          exact ? { exact } : undefined,
        );
        return true;
      } catch (err) {
        if (signal.aborted) return false;
        if (!fillRetryable(err)) {
          // known-bad bytes (a chunk in its cool-down, logged once where it was marked): answer now, no line per READ
          this.log.debug({ objectId: obj.objectId, blob: obj.content.name, off: m.off, len: m.readLen, err: (err as Error).message },
            'READ needs bytes known bad; the reader gets EIO for them');
          return false;
        }
        const closed = isClosedFd(err);
        const last = attempt >= this.opts.readAttempts || closed;
        this.log[last ? 'error' : 'warn'](
          { objectId: obj.objectId, blob: obj.content.name, off: m.off, len: m.readLen, attempt, err: (err as Error).message },
          !last ? 'READ attempt failed; retrying'
            // ENOBUFS from the anon fd: the object was withdrawn, or the cache disk is below cachefiles' free-space floor
            : closed ? 'the cache refused the write (object withdrawn, or the cache disk full); the reader gets EIO'
              : 'READ failed; the reader gets EIO',
        );
        if (last) return false;
        try {
          await sleep(this.opts.retryDelayMs * 2 ** (attempt - 1), undefined, { signal });
        } catch {
          return false; // the deadline passed while waiting to retry
        }
        this.stats.readRetries++;
      }
    }
  }

  /** Writes a content's pieces into the object's cache file (READs, replay and prefetch alike), counting them. */
  private sinkOf(obj: CacheObject): RangeSink {
    return async (off, data) => {
      if (obj.closed) throw new ObjectClosedError(obj);
      obj.writing++;
      try {
        await this.io.pwrite(obj.fd, data, off);
      } finally {
        if (--obj.writing === 0 && obj.closed) this.io.close(obj.fd);
      }
      obj.bytesWritten += data.length;
      this.stats.bytesWritten += data.length;
    };
  }

  private close(m: CloseMsg): void {
    const obj = this.objects.delete(m.objectId);
    if (!obj) return;
    this.stats.closes++;
    this.log.debug({ objectId: m.objectId, cookie: obj.cookie }, 'CLOSE');
    obj.closed = true;
    obj.prefetch?.cancel();
    if (obj.writing === 0) this.io.close(obj.fd); // else the last write closes it
    this.resolver.release?.(obj.content);
  }

  private answer(line: string): boolean {
    try {
      this.io.command(line);
      return true;
    } catch (err) {
      this.log.warn({ err: (err as Error).message, line }, 'the kernel refused a reply');
      return false;
    }
  }
}

/** Bytes of a blob not in the cache yet (all of it when its content cannot tell). */
function missingBytes(c: BlobContent): number {
  const p = c.progress?.();
  return p ? Math.max(0, p.bytes - p.bytesPresent) : c.size;
}

/** Resolves false when signal aborts. */
function whenAborted(signal: AbortSignal): Promise<false> {
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(false), { once: true }));
}

/** An anon fd the kernel has closed (object withdrawn): retrying cannot help. */
function isClosedFd(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'EBADF' || code === 'ENOBUFS';
}
