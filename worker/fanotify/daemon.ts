// Serving a fanotify pre-content group: a FAN_PRE_ACCESS event names a
// range of a sparse blob file (through the event's fd, whose path says which
// blob: <blob dir>/<volume>/<cookie>). Present ranges are allowed at once;
// missing ones are filled through content/ and written through the event's
// own fd (which raises no events), then allowed. A range that cannot be had
// and verified is denied with EIO: never allowed, since an allowed hole
// reads as zeros. The group is behind FanotifyIO, so this runs in unit tests.
import path from 'node:path';
import type { Logger } from 'pino';
import { Allocator, BlobContent, ContentResolver, RangeSink, ReadObserver, ReadResult, UnknownBlobError, clipToSize, fillRetryable } from '../../content/content';
import type { TraceRecorder } from '../learn/trace-recorder';
import { DEFAULT_READAHEAD, ReadaheadOptions, ReadaheadStreams, Window, aheadParts } from '../../content/readahead';
import { PartQueue } from '../../content/part-queue';
import { FAN, FanEvent, parseEvent } from './events';
import { EventJournal, JournalEntry } from './journal';

const EIO = 5;

/** A lazily filled blob file under the blob dir, and its size (lazysnapd's open-blobs). */
export interface BlobFile {
  file: string;
  size: number;
  /** made by this mount: an earlier file of that name (its image removed) and all it held are gone */
  created?: boolean;
}

/** The syscalls the daemon makes on the group, its event fds and blob files. */
export interface FanotifyIO {
  /** read(2) of at most one event into `area`; 0 when none is queued */
  readEvent(area: Buffer): number;
  respond(fd: number, verdict: 'allow' | { deny: number }): void;
  /** the path an event fd names (readlink of /proc/self/fd/N) */
  pathOf(fd: number): string;
  /** the blob file's size */
  sizeOf(fd: number): number;
  /** Writes buf at off; buf is the IO's afterwards (it may be reused). */
  pwrite(fd: number, buf: Buffer, off: number): Promise<void>;
  /** lseek(fd, off, SEEK_HOLE): where the data starting at off ends */
  holeAt(fd: number, off: number): number;
  close(fd: number): void;
  /** drops the group's mark on a blob file that became complete */
  unmark(file: string): void;
  /** reads [off, off+count) of `file` through a new fd, raising the events that fill it; rejects if the read fails */
  retrigger(file: string, off: number, count: number): Promise<void>;
  /** the [offset, length] data ranges of the file's first `size` bytes (SEEK_DATA; no read, so no event); [] if it cannot be opened */
  dataRanges(file: string, size: number): [number, number][];
  alloc: Allocator;
}

export interface FanotifyDaemonOptions {
  /** where blob files live: <blobDir>/<volume>/<cookie> */
  blobDir: string;
  readAttempts: number;
  retryDelayMs: number;
  /** every event is answered within this many ms (denied with EIO if not filled by then) */
  readDeadlineMs?: number;
  /** called after each answer: reading may resume if the journal was full */
  onAnswered?: () => void;
  /** told of each event answered for a blob (metrics) */
  onRead?: ReadObserver;
  /** learned prefetch: appends each allowed event of a learning image to its journal, before the answer */
  recorder?: Pick<TraceRecorder, 'access' | 'learning'>;
  /** learned prefetch: a blob's recorded chunks (uncompressed offsets, in order), fetched once it is mounted */
  replayPlan?: (volume: string, cookie: string) => number[];
  /** this process's pid: its own reads (retriggers) raise events too (tests give another) */
  pid?: number;
  /** windows filled ahead of sequential readers (default DEFAULT_READAHEAD; max 0: none) */
  readahead?: ReadaheadOptions;
}

/** Where an event's answer came from. */
interface Outcome {
  result?: ReadResult;
  content?: BlobContent;
  len: number;
  /** what to record if allowed (learned prefetch) */
  access?: { volume: string; cookie: string; off: number; len: number };
}

export interface FanotifyStats {
  events: number;
  /** allowed at once: the range was already in the blob file */
  eventsPresent: number;
  /** denied with EIO */
  eventsDenied: number;
  fills: number;
  /** background fills ahead of a sequential reader, and events they had answered already */
  fillsAhead: number;
  eventsFilledAhead: number;
  bytesWritten: number;
  /** events a dead worker left unanswered, answered here */
  orphansAnswered: number;
  /** blobs that became complete and lost their mark */
  marksRemoved: number;
  /** events that named a file outside the blob dir (allowed: not ours to hold) */
  foreign: number;
  /** replays of a recorded start begun */
  replays: number;
}

interface Blob {
  rel: string;
  volume: string;
  cookie: string;
  size: number;
  content: Promise<BlobContent>;
  reads: number;
  bytesWritten: number;
  complete: boolean;
  /** once content has resolved */
  resolved?: BlobContent;
  /** fills under way (on demand and ahead): an event for their bytes waits for them instead of filling twice */
  inflight: { start: number; end: number; done: Promise<unknown> }[];
  /** the sequential streams in its events (readahead) */
  streams?: ReadaheadStreams;
  /**
   * A replay waiting for an fd to write through: only an event's fd writes
   * without raising events, so the worker reads one byte at `at` itself and
   * the event that read raises (for the byte's page) lends its fd to the replay.
   */
  replay?: { plan: number[]; at: number };
  /** the replay under way, cancelled if the blob file is made anew */
  replaying?: { cancel(): void };
  /** told by lazysnapd that it is mounted (open-blobs): its replay was asked for */
  opened?: boolean;
}

export class FanotifyDaemon {
  readonly stats: FanotifyStats = {
    events: 0, eventsPresent: 0, eventsDenied: 0, fills: 0, fillsAhead: 0, eventsFilledAhead: 0, bytesWritten: 0, orphansAnswered: 0, marksRemoved: 0, foreign: 0,
    replays: 0,
  };
  /** events handled to the end, for the heartbeat */
  handled = 0;
  private readonly blobs = new Map<string, Blob>();
  /** fds of this process's events not answered yet: an orphan's number is never answered while it is one of these */
  private readonly live = new Set<number>();
  private readonly since = new Map<number, number>();

  /** local windows' parts, in order, as many at once as there are cores */
  private readonly parts: PartQueue;

  constructor(
    private readonly io: FanotifyIO,
    private readonly journal: EventJournal,
    private readonly resolver: ContentResolver,
    private readonly log: Logger,
    private readonly opts: FanotifyDaemonOptions,
  ) {
    this.parts = new PartQueue(opts.readahead?.partsAtOnce);
  }

  get pending(): number {
    return this.live.size;
  }

  oldestReadMs(now = Date.now()): number {
    for (const t of this.since.values()) return now - t;
    return 0;
  }

  /** The blobs served so far, for status. */
  objects(): { rel: string; size: number; reads: number; bytesWritten: number; complete: boolean; content?: BlobContent }[] {
    return [...this.blobs.values()].map((b) => ({
      rel: b.rel, size: b.size, reads: b.reads, bytesWritten: b.bytesWritten, complete: b.complete, content: b.resolved,
    }));
  }

  /** Reads and starts handling every queued event. Returns false if it stopped because the journal is full. */
  drain(): boolean {
    for (;;) {
      const t = this.journal.take();
      if (!t) return false;
      let n: number;
      try {
        n = this.io.readEvent(t.area);
      } catch (err) {
        this.journal.untake(t.slot);
        throw err;
      }
      if (n === 0) {
        this.journal.untake(t.slot);
        return true;
      }
      // The blob's path, first: a worker killed before this leaves an orphan whose blob nobody knows
      // (its read cannot be recorded), so as little as can be runs between the read and here.
      const file = this.pathAt(t.area, t.slot);
      let ev: FanEvent;
      try {
        ev = parseEvent(t.area.subarray(0, n));
      } catch (err) {
        // Cannot happen with a sane kernel; without a parsed fd there is nothing to answer.
        this.log.error({ err: (err as Error).message, bytes: t.area.subarray(0, n).toString('hex') }, 'unparsable fanotify event');
        this.journal.clear(t.slot);
        continue;
      }
      if (ev.fd === FAN.NOFD || ev.fd < 0) {
        this.log.error({ mask: ev.mask }, 'fanotify event without an fd (queue overflow?)');
        this.journal.clear(t.slot);
        continue;
      }
      this.live.add(ev.fd);
      this.since.set(ev.fd, Date.now());
      void this.handle(t.slot, ev, file);
    }
  }

  /** The event's file (through its fd, at offset 16 of the event), written into its slot if it is a blob; '' if there is no fd. */
  private pathAt(area: Buffer, slot: number): string {
    const fd = area.length >= 20 ? area.readInt32LE(16) : -1;
    if (fd < 0) return '';
    let file: string;
    try {
      file = this.io.pathOf(fd);
    } catch {
      return '';
    }
    const named = this.blobName(file);
    if (named) this.journal.setPath(slot, named.rel);
    return file;
  }

  private async handle(slot: number, ev: FanEvent, file: string): Promise<void> {
    const startedAt = process.hrtime.bigint();
    let verdict: 'allow' | { deny: number } = { deny: EIO };
    /** background work that writes through this event's fd: the fd is closed after it */
    const hold: Promise<unknown>[] = [];
    const outcome: Outcome = { len: 0 };
    try {
      verdict = await this.decide(ev, file || this.io.pathOf(ev.fd), hold, outcome);
    } catch (err) {
      this.log.error({ err, fd: ev.fd }, 'unexpected failure handling a fanotify event; denying it');
    } finally {
      // recorded before the answer: a worker killed before this line leaves the event to its successor, which records it
      if (verdict === 'allow' && outcome.access) {
        const a = outcome.access;
        this.opts.recorder?.access(a.volume, a.cookie, a.off, a.len);
      }
      try {
        this.io.respond(ev.fd, verdict);
      } catch (err) {
        this.log.warn({ err: (err as Error).message, fd: ev.fd }, 'the kernel refused a fanotify response');
      }
      if (verdict !== 'allow') this.stats.eventsDenied++;
      if (outcome.result) this.opts.onRead?.(outcome.content, startedAt, verdict === 'allow' ? outcome.result : 'eio', outcome.len);
      this.live.delete(ev.fd);
      this.since.delete(ev.fd);
      // the slot before the fd: a slot left by a kill must never name a closed fd, whose number a later open may reuse
      this.journal.clear(slot);
      if (hold.length === 0) this.io.close(ev.fd);
      else void Promise.allSettled(hold).then(() => this.io.close(ev.fd));
      this.handled++;
      this.opts.onAnswered?.();
    }
  }

  private async decide(ev: FanEvent, file: string, hold: Promise<unknown>[], outcome: Outcome): Promise<'allow' | { deny: number }> {
    this.stats.events++;
    const named = this.blobName(file);
    if (!named) {
      // Marked by someone else (not a blob file): not ours to hold back.
      this.stats.foreign++;
      this.log.warn({ file }, 'fanotify event for a file outside the blob dir; allowing it');
      return 'allow';
    }
    const { rel, volume, cookie } = named;
    if (!ev.range) {
      this.log.error({ file, mask: ev.mask }, 'pre-content event without a range; denying it');
      return { deny: EIO };
    }
    const known = this.blobs.get(rel);
    // a blob file keeps the size it was made with: one fstat per blob, not per event
    const size = known?.size ?? this.io.sizeOf(ev.fd);
    const start = ev.range.offset;
    const end = Math.min(start + ev.range.count, size);
    Object.assign(outcome, { result: 'present', content: known?.resolved, len: Math.max(0, end - start) });
    // This worker's own reads (a replay's trigger, an orphan's refill) are not the start's: an orphan is recorded
    // from its journal entry, since a read of ours may raise a wider range than the one the reader was blocked on.
    const own = ev.pid === (this.opts.pid ?? process.pid);
    // the kernel names a buffered read by the pages it touches (the trigger's byte comes as its page, on 6.18)
    if (own && known?.replay && known.resolved && start <= known.replay.at && known.replay.at < start + ev.range.count) {
      this.replay(known, known.resolved, ev.fd, file, hold);
    } else if (!own && start < end) {
      outcome.access = { volume, cookie, off: start, len: end - start };
    }
    if (start >= end || this.io.holeAt(ev.fd, start) >= end) {
      this.stats.eventsPresent++;
      return 'allow';
    }
    outcome.result = 'filled';
    const blob = this.blob(rel, volume, cookie, size);
    blob.reads++;
    let content: BlobContent;
    try {
      content = outcome.content = await blob.content;
    } catch (err) {
      this.blobs.delete(rel); // not remembered: the next event tries again
      this.log.warn({ file, err: (err as Error).message, unknown: err instanceof UnknownBlobError }, 'cannot resolve a blob; denying its read');
      return { deny: EIO };
    }
    // A fill under way (ahead of this reader, or for another) may bring these bytes: wait for it, then look again.
    // The wait and the fill share the event's one deadline, so no event outlives it (lazysnapd would take that for a hang).
    const deadlineAt = this.opts.readDeadlineMs ? Date.now() + this.opts.readDeadlineMs : undefined;
    const under = blob.inflight.filter((f) => f.start < end && start < f.end);
    if (under.length > 0) {
      const waited = Promise.allSettled(under.map((f) => f.done));
      if (deadlineAt === undefined) await waited;
      else {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([waited, new Promise((r) => (timer = setTimeout(r, Math.max(0, deadlineAt - Date.now()))))]);
        clearTimeout(timer);
      }
      if (this.io.holeAt(ev.fd, start) >= end) {
        this.stats.eventsFilledAhead++;
        return 'allow';
      }
    }
    const left = deadlineAt === undefined ? undefined : Math.max(1, deadlineAt - Date.now());
    const ok = await this.tracked(blob, start, end, this.fill(blob, content, ev.fd, start, end - start, size, hold, false, left));
    if (!ok) return { deny: EIO };
    this.stats.fills++;
    this.unmarkIfComplete(blob, ev.fd, file);
    // a filled range [start, end) that continues a sequential stream: the window to fill ahead of its reader
    const ahead = this.streamsOf(blob)?.observe(start, end);
    if (ahead) this.fillAhead(blob, content, ev.fd, file, ahead, size, hold);
    return 'allow';
  }

  /** A blob whose file has no hole left loses its mark: its reads no longer cost an event (kept while a start is recorded: its reads are the record). */
  private unmarkIfComplete(blob: Blob, fd: number, file: string): void {
    // a blob dropped for a new file of its name: fd is the old file's, and the mark by path is the new one's
    if (this.blobs.get(blob.rel) !== blob) return;
    if (blob.complete || this.io.holeAt(fd, 0) < blob.size || this.opts.recorder?.learning(blob.volume, blob.cookie)) return;
    blob.complete = true;
    try {
      this.io.unmark(file);
      this.stats.marksRemoved++;
      this.log.info({ blob: blob.rel }, 'blob complete; its reads no longer raise events');
    } catch (err) {
      this.log.warn({ blob: blob.rel, err: (err as Error).message }, 'cannot remove the mark of a complete blob');
    }
  }

  /**
   * The blob's sequential streams, or undefined where it gets no readahead (off, complete, a start being recorded:
   * bytes filled ahead raise no events, so they would go unrecorded).
   */
  private streamsOf(blob: Blob): ReadaheadStreams | undefined {
    const ra = this.opts.readahead ?? DEFAULT_READAHEAD;
    if (ra.max <= 0 || blob.complete || this.opts.recorder?.learning(blob.volume, blob.cookie)) return undefined;
    return (blob.streams ??= new ReadaheadStreams(blob.size, ra));
  }

  /**
   * Fills a window in the background through `fd` (kept open by `hold`), in
   * the parts aheadParts names. Parts present or under way are left alone;
   * events for bytes in a part wait for it.
   */
  private fillAhead(blob: Blob, content: BlobContent, fd: number, file: string, win: Window, size: number, hold: Promise<unknown>[]): void {
    const ms = this.opts.readDeadlineMs;
    const clipped = { start: win.start, end: Math.min(win.end, size) };
    for (const { start: from, end: to } of aheadParts(clipped, !!content.fillAhead)) {
      if (this.io.holeAt(fd, from) >= to || blob.inflight.some((f) => f.start < to && from < f.end)) continue;
      this.stats.fillsAhead++;
      const filling = content.fillAhead
        ? content.fillAhead(from, to - from, this.sinkOf(blob, fd, size), this.io.alloc, ms ? AbortSignal.timeout(ms) : undefined)
          .then(() => true, () => false) // no reader waits on it: a read of these bytes fills them, and says so if that fails
        : this.parts.run(() => this.fill(blob, content, fd, from, to - from, size, hold, true));
      const done = this.tracked(blob, from, to, filling);
      hold.push(done.then((ok) => ok && this.unmarkIfComplete(blob, fd, file)));
    }
  }

  /** Registers a fill of [start, end) as under way until it settles. */
  private tracked<T>(blob: Blob, start: number, end: number, p: Promise<T>): Promise<T> {
    const f = { start, end, done: p };
    blob.inflight.push(f);
    const drop = () => void blob.inflight.splice(blob.inflight.indexOf(f), 1);
    p.then(drop, drop);
    return p;
  }

  private blob(rel: string, volume: string, cookie: string, size: number): Blob {
    let b = this.blobs.get(rel);
    if (!b) {
      const nb: Blob = {
        rel, volume, cookie, size, content: this.resolver.resolve(volume, cookie), reads: 0, bytesWritten: 0, complete: false, inflight: [],
      };
      nb.content.then((c) => (nb.resolved = c), () => undefined);
      this.blobs.set(rel, (b = nb));
    }
    return b;
  }

  /**
   * Opens the contents of blob files lazysnapd has just mounted, all at once,
   * so that a container's first reads find them open instead of each waiting
   * for its blob's HEAD and ToC GETs in series. One that fails is forgotten:
   * the read that needs it tries anew.
   */
  openBlobs(blobs: BlobFile[]): void {
    for (const { file, size, created } of blobs) {
      const named = this.blobName(file);
      if (!named) continue;
      const { rel, volume, cookie } = named;
      const known = this.blobs.get(rel);
      if (known && created) {
        // what this worker knew of the old file is stale: it is not complete, and its content's presence is wrong
        this.blobs.delete(rel);
        known.replaying?.cancel();
        known.resolved?.resetPresence?.();
      } else if (known) {
        // known from a read already (a successor serves the readers first): opened here all the same, once
        if (!known.opened) this.opened(known, file);
        continue;
      }
      this.opened(this.blob(rel, volume, cookie, size), file);
    }
  }

  /** A mounted blob, once its content is open: what its file holds already is marked present, then its recorded start is replayed. */
  private opened(b: Blob, file: string): void {
    b.opened = true;
    b.content.then((c) => {
      // what the file holds already (a worker that took over from one that died) is not fetched again
      // and a reader's trail in it (readahead) gets a window at its next read; read only if one of them asks
      const streams = this.streamsOf(b);
      const ranges = c.markPresent || streams ? this.io.dataRanges(file, b.size) : [];
      if (c.markPresent) for (const [off, len] of ranges) c.markPresent(off, len);
      streams?.seed(ranges);
      this.askReplay(b, file, c);
    }, (err) => {
      if (this.blobs.get(b.rel) === b) this.blobs.delete(b.rel);
      this.log.warn({ file, err: (err as Error).message }, 'cannot open a mounted blob; its first read will try again');
    });
  }

  /** A blob file's place under the blob dir (<volume>/<cookie>), or undefined for any other path. */
  private blobName(file: string): { rel: string; volume: string; cookie: string } | undefined {
    const rel = path.relative(this.opts.blobDir, file);
    const parts = rel.split(path.sep);
    if (rel.startsWith('..') || path.isAbsolute(rel) || parts.length !== 2) return undefined;
    return { rel, volume: parts[0], cookie: parts[1] };
  }

  /** Writes a content's pieces into the blob file through `fd` (an event's), counting them. */
  private sinkOf(blob: Blob, fd: number, size: number): RangeSink {
    return clipToSize(size, async (at, data) => {
      await this.io.pwrite(fd, data, at);
      blob.bytesWritten += data.length;
      this.stats.bytesWritten += data.length;
    });
  }

  /** Fetches the blob's recorded chunks through `fd`, which `hold` keeps open until the replay ends. */
  private replay(blob: Blob, content: BlobContent, fd: number, file: string, hold: Promise<unknown>[]): void {
    const plan = blob.replay!.plan;
    blob.replay = undefined;
    this.stats.replays++;
    this.log.info({ blob: blob.rel, chunks: plan.length }, 'replaying a recorded start');
    const r = content.replay!(plan, this.sinkOf(blob, fd, blob.size), this.io.alloc);
    blob.replaying = r;
    hold.push(r.done.then((res) => {
      this.log.info({ blob: blob.rel, ...res }, 'replay done');
      this.unmarkIfComplete(blob, fd, file);
    }));
  }

  /**
   * Starts a replay of the blob's recorded chunks, if it has any: a read of
   * one byte of the first raises the event whose fd the replay writes through.
   */
  private askReplay(blob: Blob, file: string, content: BlobContent): void {
    if (!content.replay || !this.opts.replayPlan) return;
    const plan = this.opts.replayPlan(blob.volume, blob.cookie);
    this.log.debug({ blob: blob.rel, chunks: plan.length }, 'recorded chunks of a mounted blob');
    if (plan.length === 0) return;
    const want = (blob.replay = { plan, at: plan[0] });
    // the trigger's event is answered before its read returns: a replay not begun by then never will be
    const unbegun = (why: string) => {
      if (blob.replay !== want) return;
      blob.replay = undefined;
      this.log.warn({ blob: blob.rel, why }, 'cannot start replaying a recorded start; its reads fetch on demand');
    };
    this.io.retrigger(file, plan[0], 1).then(() => unbegun('no event of our own read named the chunk'), (err) => unbegun((err as Error).message));
  }

  /** The blob file an orphan names: written down by its worker, or still open in that worker's kept fd table. */
  private orphanFile(o: JournalEntry): string | undefined {
    return o.path ? path.join(this.opts.blobDir, o.path) : o.keptFile;
  }

  /**
   * Records an orphan's read as the reader made it (before it is answered,
   * like any other). One whose blob is known neither from the journal nor from
   * the dead worker's keeper cannot be recorded: its start's trace may lack
   * that read.
   */
  private recordOrphan(o: JournalEntry): void {
    // a dead worker's own read (its refill of an orphan, a replay's trigger) is not the start's either
    if (!this.opts.recorder || !o.event.range || (o.worker !== undefined && o.event.pid === o.worker)) return;
    const file = this.orphanFile(o);
    const named = file ? this.blobName(file) : undefined;
    if (named && !o.path) {
      this.log.info({ blob: named.rel, range: o.event.range, fd: o.event.fd, reader: o.event.pid, worker: o.worker },
        "an orphaned event's blob, from the dead worker's fd keeper");
    }
    if (!named) {
      this.log.warn({ range: o.event.range, fd: o.event.fd, reader: o.event.pid, worker: o.worker, mask: o.event.mask },
        'an orphaned event names no blob: if its image is recording a start, this read is not recorded');
      return;
    }
    const size = this.blobs.get(named.rel)?.size ?? Infinity;
    const end = Math.min(o.event.range.offset + o.event.range.count, size);
    if (end > o.event.range.offset) this.opts.recorder.access(named.volume, named.cookie, o.event.range.offset, end - o.event.range.offset);
  }

  /**
   * Never rejects; false when the range could not be filled within the
   * deadline and attempts. Writes that go on after a fill (the chunks a remote
   * blob widened it by) join `hold`, which keeps `fd` open until they end.
   */
  private async fill(blob: Blob, content: BlobContent, fd: number, off: number, len: number, size: number, hold: Promise<unknown>[],
    ahead = false, ms = this.opts.readDeadlineMs): Promise<boolean> {
    const deadline = new AbortController();
    const timer = ms ? setTimeout(() => deadline.abort(new DOMException(`deadline of ${ms} ms passed`, 'TimeoutError')), ms) : undefined;
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          await content.fill(off, len, this.sinkOf(blob, fd, size), this.io.alloc, deadline.signal, { background: (work) => hold.push(work) });
          return true;
        } catch (err) {
          const last = attempt >= this.opts.readAttempts || deadline.signal.aborted || !fillRetryable(err);
          if (ahead) return false; // no reader waits on it: a read of these bytes tries again, and says so
          if (fillRetryable(err) || deadline.signal.aborted) {
            this.log[last ? 'error' : 'warn']({ blob: blob.rel, off, len, attempt, err: (err as Error).message },
              last ? 'fill failed; the reader gets EIO' : 'fill failed; retrying');
          }
          if (last) return false;
          await new Promise((r) => setTimeout(r, this.opts.retryDelayMs * 2 ** (attempt - 1)));
        }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Answers the events dead workers left unanswered. Each orphan's range is
   * filled first, through a read of this worker's own that raises events it
   * serves; only when every orphan is filled are they answered, by number
   * (two dead workers may have used the same one). The caller keeps those
   * numbers off this process's own events (see reserveFds).
   */
  async answerOrphans(orphans: JournalEntry[], allBlobFiles: () => string[]): Promise<void> {
    if (orphans.length === 0) return;
    const failed = new Set<number>();
    for (const o of orphans) {
      const range = o.event.range;
      if (!range) continue;
      const known = this.orphanFile(o);
      const guessed = !(known && this.blobName(known));
      const files = guessed ? allBlobFiles() : [known!];
      for (const f of files) {
        try {
          await this.io.retrigger(f, range.offset, range.count);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (guessed && (code === 'ENOENT' || code === 'EINVAL')) continue; // a guess that does not fit
          failed.add(o.event.fd);
          this.log.error({ blob: o.path ?? f, range, err: (err as Error).message }, 'cannot fill the range of an orphaned event; it is denied');
        }
      }
    }
    for (const o of orphans) {
      while (this.live.has(o.event.fd)) await new Promise((r) => setTimeout(r, 5));
      if (!failed.has(o.event.fd)) this.recordOrphan(o);
      try {
        this.io.respond(o.event.fd, failed.has(o.event.fd) ? { deny: EIO } : 'allow');
        this.stats.orphansAnswered++;
      } catch (err) {
        // ENOENT: answered already (the dead worker answered it but died before clearing its slot)
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err: (err as Error).message, fd: o.event.fd }, 'cannot answer an orphaned event');
      }
    }
    this.log.info({ orphans: orphans.length, failed: failed.size }, 'answered the events a dead worker left');
  }
}
