// lazysnapd's half of learned prefetch. When a container starts on a lazy
// image that has no trace yet, a journal is opened for its window
// (trace-journal.ts: written here, appended to by the serving worker); when
// the window has closed, the journal becomes a trace in the metadata
// (storage owns it) and is deleted. Crash order: the trace is stored before
// the journal is deleted, and storing is idempotent (the first trace of a key
// wins), so a kill between the two only repeats the ingest.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { Bootstrap } from '../image/rafs/bootstrap';
import { FileChunks } from '../image/rafs/file-chunks';
import { isRafsV6 } from '../image/erofs/superblock';
import type { FscacheImage, FscacheImages } from '../snapshotter/storage/images';
import { Traces, traceKey } from '../snapshotter/storage/traces';
import { JOURNAL_SUFFIX, encodeHeader, parseJournal, readHeader, type JournalHeader } from '../worker/learn/trace-journal';
import { buildTrace } from './trace-build';

/** After the window: time for a READ recorded at its last moment to be appended. */
const GRACE_MS = 2000;

export interface LearningDeps {
  dir: string;
  windowMs: number;
  images: () => FscacheImages;
  traces: () => Traces;
  /** tells the serving worker to record into a journal; false if no worker answered (one that starts later finds it) */
  tell: (file: string) => Promise<boolean>;
  log: Logger;
  now?: () => number;
}

export class Learning {
  /** journals being recorded: the timer that ingests each, and its image's trace key */
  private readonly pending = new Map<string, { timer: NodeJS.Timeout; key: string }>();
  /** trace key by fsid (null: not a RAFS image) */
  private readonly keys = new Map<string, string | null>();
  private readonly now: () => number;

  constructor(private readonly d: LearningDeps) {
    this.now = d.now ?? Date.now;
    fs.mkdirSync(d.dir, { recursive: true, mode: 0o700 });
  }

  /** At lazysnapd's start: journals whose window closed while it was away become traces; the others are awaited. */
  resume(): void {
    for (const n of fs.readdirSync(this.d.dir)) {
      if (!n.endsWith(JOURNAL_SUFFIX)) continue;
      const file = path.join(this.d.dir, n);
      let h: JournalHeader;
      try {
        const fd = fs.openSync(file, 'r');
        try {
          h = readHeader(fd, file);
        } finally {
          fs.closeSync(fd);
        }
      } catch (err) {
        this.d.log.warn({ file, err: (err as Error).message }, 'not a learning journal; removed');
        fs.rmSync(file, { force: true });
        continue;
      }
      this.schedule(file, h);
    }
  }

  /** A container is starting on `img`: record its start, unless the image has a trace or is being recorded. */
  async begin(img: FscacheImage): Promise<void> {
    const file = this.journalOf(img.fsid);
    if (fs.existsSync(file)) return;
    // a mounted image's bootstrap never changes: hashed once per mount, not at every container's start
    const known = this.keys.get(img.fsid);
    if (known === null || (known && this.d.traces().has(known))) return;
    const buf = fs.readFileSync(img.bootstrap);
    if (!isRafsV6(buf.subarray(0, 4096))) {
      this.keys.set(img.fsid, null); // a plain EROFS image has no chunks to learn
      return;
    }
    const key = traceKey(buf);
    this.keys.set(img.fsid, key);
    if (this.d.traces().has(key) || [...this.pending.values()].some((p) => p.key === key)) return;
    const bs = new Bootstrap(buf, `bootstrap ${img.bootstrap}`);
    const startMs = this.now();
    const header: JournalHeader = {
      v: 1, fsid: img.fsid, key, imageRef: img.imageRef, volume: img.domain || img.fsid, tags: bs.devices.map((d) => d.tag),
      startMs, untilMs: startMs + this.d.windowMs,
    };
    const fd = fs.openSync(file, 'wx', 0o600);
    try {
      fs.writeSync(fd, encodeHeader(header));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    this.schedule(file, header);
    const told = await this.d.tell(file);
    this.d.log.info({ fsid: img.fsid, image: img.imageRef, key, windowMs: this.d.windowMs, told },
      told ? 'recording what this start reads' : 'recording what this start reads (the worker will find the journal when it starts)');
  }

  /** The image is going away: its journal becomes a trace now, while its bootstrap is still there. */
  finish(fsid: string): void {
    this.keys.delete(fsid);
    const file = this.journalOf(fsid);
    if (fs.existsSync(file)) this.ingest(file);
  }

  stop(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }

  private journalOf(fsid: string): string {
    return path.join(this.d.dir, `${fsid}${JOURNAL_SUFFIX}`);
  }

  private schedule(file: string, h: JournalHeader): void {
    clearTimeout(this.pending.get(file)?.timer);
    const timer = setTimeout(() => this.ingest(file), Math.max(0, h.untilMs + GRACE_MS - this.now()));
    timer.unref();
    this.pending.set(file, { timer, key: h.key });
  }

  /** Journal → trace. Never throws: a journal that cannot become a trace is logged and removed. */
  ingest(file: string): void {
    clearTimeout(this.pending.get(file)?.timer);
    this.pending.delete(file);
    try {
      const j = parseJournal(fs.readFileSync(file, 'utf8'), file);
      const h = j.header;
      const img = this.d.images().get(h.fsid);
      const buf = img && fs.existsSync(img.bootstrap) ? fs.readFileSync(img.bootstrap) : undefined;
      if (!buf || traceKey(buf) !== h.key) {
        this.d.log.warn({ file, fsid: h.fsid }, 'the image of this journal is gone; its recording is dropped');
      } else {
        const bs = new Bootstrap(buf, `bootstrap ${img!.bootstrap}`);
        const entries = buildTrace(j, new FileChunks(bs), bs.blobs.map((b) => b.blobId));
        if (entries.length === 0) {
          this.d.log.info({ fsid: h.fsid, image: h.imageRef, reads: j.reads.length }, 'the start read no chunk from the registry; nothing to learn');
        } else {
          const stored = this.d.traces().add({ key: h.key, imageRef: h.imageRef, recordedUs: h.startMs * 1000, windowMs: h.untilMs - h.startMs, reads: j.reads.length, entries });
          const bytes = entries.reduce((n, e) => n + e.uSize, 0);
          this.d.log.info({ image: h.imageRef, key: h.key, chunks: entries.length, bytes, files: new Set(entries.map((e) => e.path)).size,
            reads: j.reads.length, tornLines: j.skipped, stored }, 'learned what a start reads');
        }
      }
    } catch (err) {
      this.d.log.warn({ file, err: (err as Error).message }, 'cannot make a trace of this journal; dropped');
    }
    fs.rmSync(file, { force: true });
  }
}
