// Sequential readers in a blob's READs, and how far ahead of each to fetch.
// The kernel asks only for what is missing, so a reader streaming a big file
// sends READs that each start where the bytes filled so far end. Answering
// each one alone costs a round trip and a GET per window; this finds such
// streams and names a window to fetch ahead of the reader, doubling while it
// keeps coming (as the kernel's own readahead does for a file), so the
// reader finds its next bytes in flight or written. Pure: no I/O here.

export interface ReadaheadOptions {
  /** the first window ahead of a stream (bytes) */
  initial: number;
  /** the largest window (0: no readahead) */
  max: number;
  /** streams followed at once per blob; the least recently used one is forgotten */
  streams: number;
  /**
   * A READ that starts up to this far past a stream's end still continues
   * it: a fill writes more than its READ asked for (a remote blob widens it
   * by up to 1 MiB, to whole chunks), and the kernel's next READ starts
   * where those bytes end.
   */
  gap: number;
  /** parts of local blobs' windows filled at once (PartQueue; default: the machine's cores) */
  partsAtOnce?: number;
}

export const DEFAULT_READAHEAD: ReadaheadOptions = { initial: 4 << 20, max: 16 << 20, streams: 4, gap: 4 << 20 };

interface Stream {
  /** READs starting in [lo, next + gap] belong to this stream */
  lo: number;
  /** a READ starting at or past here asks for the next window */
  trigger: number;
  /** where the bytes read or fetched ahead so far end */
  next: number;
  /** the last window's size (0: none yet) */
  size: number;
  used: number;
}

export interface Window {
  start: number;
  end: number;
}

export class ReadaheadStreams {
  private readonly streams: Stream[] = [];
  private tick = 0;

  constructor(private readonly size: number, private readonly o: ReadaheadOptions = DEFAULT_READAHEAD) {}

  /** streams followed at once (at least one) */
  private get bound(): number {
    return Math.max(1, this.o.streams);
  }

  /**
   * Streams taken up from what the cache file holds, for a worker that did
   * not see the READs that filled it (a successor after a failover, a
   * restart): each run of present bytes at least a first window long that
   * ends before the blob does is a reader's trail, the longest first, up to
   * the bound. A READ at a run's end gets its first window at once, where a
   * fresh stream waits for a second READ. The first window, not the largest:
   * with 16 MiB at once, bench/fanotify's failover stall was p50 141 ms
   * against 70-84 (reads in a window wait for its part, and four parts
   * decoding at once finish later than one).
   */
  seed(extents: [number, number][]): void {
    if (this.o.max <= 0) return;
    const trails = extents.filter(([off, len]) => len >= this.o.initial && off + len < this.size)
      .sort((a, b) => b[1] - a[1]).slice(0, this.bound);
    for (const [off, len] of trails) {
      const end = off + len;
      if (this.streams.some((x) => end >= x.lo && end <= x.next + this.o.gap)) continue; // a stream already knows it
      if (this.streams.length >= this.bound) break;
      this.streams.push({ lo: off, trigger: end, next: end, size: 0, used: ++this.tick });
    }
  }

  /**
   * A READ of [start, end): the window to fetch ahead now, or null. A READ
   * that starts nowhere near a known stream begins one (nothing ahead yet: a
   * single read is not a stream). One that continues a stream past its
   * trigger gets the next window, which starts where the stream's bytes end.
   */
  observe(start: number, end: number): Window | null {
    if (this.o.max <= 0 || end <= start) return null;
    this.tick++;
    const s = this.streams.find((x) => start >= x.lo && start <= x.next + this.o.gap);
    if (!s) {
      if (this.streams.length >= this.bound) {
        let old = 0;
        for (let i = 1; i < this.streams.length; i++) if (this.streams[i].used < this.streams[old].used) old = i;
        this.streams.splice(old, 1);
      }
      this.streams.push({ lo: start, trigger: end, next: end, size: 0, used: this.tick });
      return null;
    }
    s.used = this.tick;
    if (end > s.next) s.next = end;
    if (start < s.trigger || s.next >= this.size) return null;
    const size = s.size ? Math.min(2 * s.size, this.o.max) : Math.min(this.o.initial, this.o.max);
    const win = { start: s.next, end: Math.min(s.next + size, this.size) };
    s.trigger = win.start;
    s.next = win.end;
    s.size = size;
    return win;
  }
}

/**
 * A window from a blob without fillAhead (a local file) is filled in parts
 * of this size, each a fill of its own, so a read of bytes in the window
 * waits for the part under it rather than the whole window (bench/fanotify:
 * 206-211 MB/s cold against 149-164 in one part).
 */
export const LOCAL_AHEAD_PART = 4 << 20;

/** win cut into parts of at most `part` bytes, in order. */
export function windowParts(win: Window, part: number): Window[] {
  const out: Window[] = [];
  for (let s = win.start; s < win.end; s += part) out.push({ start: s, end: Math.min(s + part, win.end) });
  return out;
}

/**
 * The fills a window is made of, for both workers: one for a remote blob
 * (fillAhead fetches what nobody has yet; in bench/fanotify 138-164 MB/s from
 * the registry against 105-131 in 4 MiB parts), LOCAL_AHEAD_PART-sized ones
 * for a local blob.
 */
export function aheadParts(win: Window, remote: boolean): Window[] {
  return remote ? (win.end > win.start ? [win] : []) : windowParts(win, LOCAL_AHEAD_PART);
}
