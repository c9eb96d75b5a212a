// The worker's half of learned prefetch: appends each READ of a learning
// image's blobs to that image's journal (trace-journal.ts says why this
// loses nothing across kills). Journals are found two ways: lazysnapd's
// `learn` op when a container starts, and a scan of the directory when a
// worker starts (before `restore`, so re-sent READs are recorded too).
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { JOURNAL_SUFFIX, encodeRead, readHeader, type JournalHeader } from './trace-journal';

interface Open {
  header: JournalHeader;
  fd: number;
}

export class TraceRecorder {
  private readonly open = new Map<string, Open>();

  constructor(private readonly dir: string, private readonly log: Logger, private readonly now = () => Date.now()) {}

  /** Opens every journal whose window has not closed. */
  scan(): void {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return; // no journals yet
    }
    for (const n of names) if (n.endsWith(JOURNAL_SUFFIX)) this.learn(path.join(this.dir, n));
  }

  /** Starts recording into `file` (lazysnapd wrote its header). */
  learn(file: string): boolean {
    if (path.dirname(file) !== this.dir || !file.endsWith(JOURNAL_SUFFIX)) {
      this.log.warn({ file }, 'learn: not a journal in the trace directory');
      return false;
    }
    if ([...this.open.values()].some((o) => o.header.fsid === path.basename(file, JOURNAL_SUFFIX))) return true;
    let fd: number | undefined;
    try {
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_APPEND);
      const header = readHeader(fd, file);
      if (header.untilMs <= this.now()) {
        fs.closeSync(fd);
        return false;
      }
      // a predecessor killed mid-append left a torn line: end it, or this worker's first record would be torn with it
      const size = fs.fstatSync(fd).size;
      const last = Buffer.alloc(1);
      if (fs.readSync(fd, last, 0, 1, size - 1) === 1 && last[0] !== 0x0a) fs.writeSync(fd, '\n');
      this.open.set(file, { header, fd });
      this.log.info({ fsid: header.fsid, image: header.imageRef, untilMs: header.untilMs }, 'recording what the start reads');
      return true;
    } catch (err) {
      if (fd !== undefined) fs.closeSync(fd);
      this.log.warn({ file, err: (err as Error).message }, 'cannot record into this journal');
      return false;
    }
  }

  /** Whether READs of this blob are being recorded (fills then fetch only what is asked: widened chunks would never be READ). */
  learning(volume: string, cookie: string): boolean {
    const now = this.now();
    for (const o of this.open.values()) if (o.header.volume === volume && o.header.untilMs > now && o.header.tags.includes(cookie)) return true;
    return false;
  }

  /** Records one READ, synchronously: it must be in the journal before READ_COMPLETE. */
  access(volume: string, cookie: string, off: number, len: number): void {
    const t = this.now();
    for (const [file, o] of this.open) {
      if (o.header.untilMs <= t) {
        fs.closeSync(o.fd);
        this.open.delete(file);
        continue;
      }
      if (o.header.volume !== volume || !o.header.tags.includes(cookie)) continue;
      try {
        fs.writeSync(o.fd, encodeRead({ t, c: cookie, o: off, l: len }));
      } catch (err) {
        // lazysnapd took the journal in already (the image went away) or the disk is full: stop recording into it
        this.log.warn({ file, err: (err as Error).message }, 'cannot append to a journal; no longer recording into it');
        fs.closeSync(o.fd);
        this.open.delete(file);
      }
    }
  }

  get recording(): number {
    return this.open.size;
  }
}
