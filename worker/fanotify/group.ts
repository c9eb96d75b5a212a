// The fanotify edge of the worker: the group fd (non-blocking, polled on
// the loop), its event fds, the blob files and the journal file. Everything
// that decides is in daemon.ts.
import fs from 'node:fs';
import path from 'node:path';
import { FdPoller, dataExtents, fanotifyMark, mapShared, pwriteAll, seekHole } from '../../native';
import { BufferPool } from '../../content/buffer-pool';
import { FAN, response } from './events';
import type { FanotifyIO } from './daemon';
import { EventJournal, JOURNAL_LEN, JournalEntry, readJournal } from './journal';
import { findKeepers, keptFile, killQuietly, pidAlive } from './keeper';

export function groupIO(groupFd: number): FanotifyIO {
  const pool = new BufferPool(64 << 20);
  return {
    readEvent(area) {
      try {
        return fs.readSync(groupFd, area, 0, area.length, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return 0;
        throw err;
      }
    },
    respond(fd, verdict) {
      fs.writeSync(groupFd, response(fd, verdict));
    },
    pathOf: (fd) => fs.readlinkSync(`/proc/self/fd/${fd}`),
    sizeOf: (fd) => fs.fstatSync(fd).size,
    pwrite: async (fd, buf, off) => {
      await pwriteAll(fd, buf, off);
      pool.give(buf);
    },
    holeAt: (fd, off) => seekHole(fd, off),
    close: (fd) => fs.closeSync(fd),
    unmark: (file) => fanotifyMark(groupFd, FAN.MARK_REMOVE, FAN.PRE_ACCESS, file),
    async retrigger(file, off, count) {
      const fh = await fs.promises.open(file, 'r');
      try {
        const buf = Buffer.allocUnsafe(Math.min(count, 8 << 20));
        for (let at = off; at < off + count; ) {
          const n = (await fh.read(buf, 0, Math.min(buf.length, off + count - at), at)).bytesRead;
          if (n === 0) break; // past the end
          at += n;
        }
      } finally {
        await fh.close();
      }
    },
    dataRanges(file, size) {
      let fd: number;
      try {
        fd = fs.openSync(file, 'r');
      } catch {
        return [];
      }
      try {
        return dataExtents(fd, size);
      } finally {
        fs.closeSync(fd);
      }
    },
    alloc: (size) => pool.take(size),
  };
}

/** Polls the group fd and hands readiness to `drain`, which returns false while the journal is full. */
export class GroupPoller {
  private readonly poller: FdPoller;
  private paused = false;

  constructor(groupFd: number, private readonly drain: () => boolean, onError: (err: Error) => void) {
    this.poller = new FdPoller(groupFd, (err) => {
      if (err) return onError(err);
      try {
        if (!this.drain()) {
          // Full: stop polling (it is level-triggered) until an event is answered.
          this.poller.stop();
          this.paused = true;
        }
      } catch (e) {
        onError(e as Error);
      }
    });
  }

  start(): void {
    this.poller.start();
  }

  /** Polling the group, or paused only until events in flight are answered (what the heartbeat reports). */
  get reading(): boolean {
    return this.poller.active || this.paused;
  }

  /** An event was answered: if reading had paused for want of journal slots, it resumes. */
  resume(): void {
    if (this.paused) {
      this.paused = false;
      this.poller.start();
    }
  }

  stop(): void {
    this.poller.stop();
  }
}

/**
 * This worker's journal: <dir>/journal.<pid>, a new zeroed file mapped
 * shared. Its fd stays open for the life of the process: that is how a
 * successor tells which keeper kept this worker's fd table.
 */
export function openJournal(dir: string): EventJournal {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `journal.${process.pid}`);
  const fd = fs.openSync(file, 'w+', 0o600);
  try {
    fs.ftruncateSync(fd, 0);
    fs.ftruncateSync(fd, JOURNAL_LEN);
    return new EventJournal(mapShared(fd, JOURNAL_LEN));
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

export interface DeadJournals {
  orphans: JournalEntry[];
  /** journals of workers still alive (a retiring one): orphans are answered only once they are gone */
  alive: number[];
  /** delete the dead journals once their orphans are answered, and end the keepers of dead workers */
  remove(): void;
}

/**
 * The journals other workers left: their unanswered events. An event whose
 * path the worker did not write down is looked up in its keeper's table.
 */
export function deadJournals(dir: string, alive = pidAlive, keepers = () => findKeepers(dir)): DeadJournals {
  const files: string[] = [];
  const orphans: JournalEntry[] = [];
  const live: number[] = [];
  for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    const m = /^journal\.(\d+)$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    if (alive(Number(m[1]))) {
      live.push(Number(m[1]));
      continue;
    }
    const file = path.join(dir, name);
    files.push(file);
    orphans.push(...readJournal(fs.readFileSync(file)).entries.map((e) => ({ ...e, worker: Number(m[1]) })));
  }
  const pathless = orphans.filter((o) => !o.path);
  if (pathless.length > 0) {
    const kept = keepers();
    for (const o of pathless) {
      const keeper = kept.get(o.worker!);
      const file = keeper === undefined ? undefined : keptFile(keeper, o.event.fd);
      if (file && !file.endsWith(' (deleted)')) o.keptFile = file;
    }
  }
  const remove = () => {
    if (files.length === 0) return;
    // Keepers before journals: a kill between the two leaves journals without keepers (answered by guessing), never
    // keepers nobody would find. Not the keeper of a worker that died since the scan: its orphans are not answered yet.
    for (const [worker, keeper] of keepers()) {
      const journal = path.join(dir, `journal.${worker}`);
      if (worker !== process.pid && !alive(worker) && (files.includes(journal) || !fs.existsSync(journal))) killQuietly(keeper);
    }
    files.forEach((f) => fs.rmSync(f, { force: true }));
  };
  return { orphans, alive: live, remove };
}

/**
 * Holds the given fd numbers in this process (on /dev/null), so that none of
 * this worker's own events gets one of them: a response names its event by
 * number, and the kernel answers the first pending event with that number,
 * which may be a dead worker's. Returns the holder, and the numbers another
 * fd of this process already holds (they stay safe while it stays open).
 */
export function reserveFds(numbers: number[]): { release(): void; heldElsewhere: number[] } {
  const want = new Set(numbers);
  const max = Math.max(-1, ...numbers);
  const held: number[] = [];
  const spare: number[] = [];
  while (want.size > 0) {
    const fd = fs.openSync('/dev/null', 'r');
    if (want.delete(fd)) held.push(fd);
    else if (fd > max) {
      fs.closeSync(fd);
      break;
    } else spare.push(fd);
  }
  spare.forEach((fd) => fs.closeSync(fd));
  return { release: () => held.splice(0).forEach((fd) => fs.closeSync(fd)), heldElsewhere: [...want] };
}

/** Every blob file under the blob dir (<volume>/<cookie>), for an orphan whose blob was not recorded. */
export function allBlobFiles(blobDir: string): string[] {
  const out: string[] = [];
  for (const v of fs.existsSync(blobDir) ? fs.readdirSync(blobDir) : []) {
    const vd = path.join(blobDir, v);
    if (!fs.statSync(vd).isDirectory()) continue;
    for (const c of fs.readdirSync(vd)) out.push(path.join(vd, c));
  }
  return out;
}
