// What a workload opens, in first-open order: a fanotify notification group
// (FAN_OPEN) marked on a whole filesystem (the overlay a workload runs in),
// so opens from any mount namespace are seen. Each event carries an fd; its
// /proc link says which file. Regular files only: a directory in a prefetch
// table means every file below it.
import fs from 'node:fs';
import { FdPoller, fanotifyInit, fanotifyMark } from '../../native';
import { FAN, parseEvents } from '../../worker/fanotify/events';

/** O_RDONLY | O_NONBLOCK | O_LARGEFILE: the event fds are only looked at (and a FIFO's open must not block) */
const OPEN_EVENT_FD_FLAGS = 0o100000 | 0o4000;
/** a read's worth of events: each event holds an fd until it is looked at */
const READ_BYTES = 4096;

/**
 * The file's path inside the image from its fd's link target: under the
 * mountpoint as this process sees it, or already relative to the
 * workload's root (a mount namespace this process cannot reach). Null for a
 * file deleted since.
 */
export function imagePath(mountpoint: string, target: string): string | null {
  if (!target.startsWith('/') || target.endsWith(' (deleted)')) return null;
  const root = mountpoint.replace(/\/+$/, '');
  if (target === root) return '/';
  return target.startsWith(`${root}/`) ? target.slice(root.length) : target;
}

export class OpenRecorder {
  private readonly fd: number;
  private readonly poller: FdPoller;
  private readonly seen = new Set<string>();
  private readonly buf = Buffer.alloc(READ_BYTES);
  readonly paths: string[] = [];
  /** events were dropped (the kernel's queue overflowed, or one could not be read): the list may miss files */
  overflowed = false;

  constructor(private readonly mountpoint: string, private readonly self = process.pid) {
    this.fd = fanotifyInit(FAN.CLOEXEC | FAN.NONBLOCK | FAN.UNLIMITED_QUEUE, OPEN_EVENT_FD_FLAGS);
    try {
      fanotifyMark(this.fd, FAN.MARK_ADD | FAN.MARK_FILESYSTEM, FAN.OPEN, mountpoint);
    } catch (e) {
      fs.closeSync(this.fd);
      throw e;
    }
    this.poller = new FdPoller(this.fd, (err) => {
      if (!err) this.drain();
    });
    this.poller.start();
  }

  /** Never throws (it runs in the poller's callback): what cannot be read or looked at counts as lost. */
  private drain(): void {
    for (;;) {
      let n: number;
      let events;
      try {
        n = fs.readSync(this.fd, this.buf, 0, this.buf.length, null);
        if (n <= 0) return;
        events = parseEvents(this.buf, n);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') this.overflowed = true; // e.g. EMFILE: events dropped
        return;
      }
      for (const ev of events) {
        if (ev.mask & FAN.Q_OVERFLOW) this.overflowed = true;
        if (ev.fd < 0) continue;
        try {
          if (ev.pid !== this.self && fs.fstatSync(ev.fd).isFile()) this.add(fs.readlinkSync(`/proc/self/fd/${ev.fd}`));
        } catch {
          this.overflowed = true;
        } finally {
          fs.closeSync(ev.fd);
        }
      }
    }
  }

  private add(target: string): void {
    const p = imagePath(this.mountpoint, target);
    if (p && !this.seen.has(p)) {
      this.seen.add(p);
      this.paths.push(p);
    }
  }

  /** Reads what is queued, stops, and returns the paths. */
  stop(): string[] {
    this.drain();
    this.poller.close();
    fs.closeSync(this.fd);
    return this.paths;
  }
}
