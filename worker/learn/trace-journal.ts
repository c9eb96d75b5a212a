// A learning journal: what the kernel READ of an image's blobs during a
// container's start, <traceDir>/<fsid>.journal. lazysnapd writes the header
// line before any worker hears of it; then whichever worker serves a READ
// appends one line for it *before* READ_COMPLETE. A worker killed before its
// append leaves the READ unanswered, and the kernel re-sends it after
// `restore` to the successor, which appends it: nothing is lost. One killed
// between append and READ_COMPLETE makes the READ appear twice: the reader
// of the journal keeps the first (chunks are a set in first-access order).
// A kill mid-append leaves at most one torn line, which is skipped.
import fs from 'node:fs';

/** Line 1. */
export interface JournalHeader {
  v: 1;
  fsid: string;
  /** the trace key: sha256 of the image's bootstrap */
  key: string;
  imageRef: string;
  /** the fscache volume (domain, or fsid) and the image's device tags: blob i is device i+1 */
  volume: string;
  tags: string[];
  /** the window, ms since the epoch: READs after untilMs are not recorded */
  startMs: number;
  untilMs: number;
}

/** Every other line: one READ of blob `cookie`, [off, off+len) of its uncompressed space. */
export interface JournalRead {
  t: number;
  c: string;
  o: number;
  l: number;
}

export class JournalError extends Error {}

/** Journals are <fsid> + this, in the trace directory. */
export const JOURNAL_SUFFIX = '.journal';

/** The header of the journal open at `fd` (its first line, read from offset 0). */
export function readHeader(fd: number, name: string): JournalHeader {
  const head = Buffer.alloc(64 * 1024);
  const n = fs.readSync(fd, head, 0, head.length, 0);
  const nl = head.subarray(0, n).indexOf(0x0a);
  if (nl < 0) throw new JournalError(`${name}: no complete header line`);
  return parseHeader(head.subarray(0, nl).toString('utf8'), name);
}

export function encodeHeader(h: JournalHeader): string {
  return JSON.stringify(h) + '\n';
}

export function encodeRead(r: JournalRead): string {
  return `{"t":${r.t},"c":${JSON.stringify(r.c)},"o":${r.o},"l":${r.l}}\n`;
}

/** The header alone (a worker opening a journal needs nothing else). */
export function parseHeader(line: string, name: string): JournalHeader {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new JournalError(`${name}: the header line is not JSON`);
  }
  const h = v as Partial<JournalHeader>;
  const str = (x: unknown) => typeof x === 'string';
  const ms = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  if (h === null || typeof h !== 'object' || h.v !== 1 || !str(h.fsid) || !/^[0-9a-f]{64}$/.test(h.key ?? '') || !str(h.imageRef) ||
    !str(h.volume) || !Array.isArray(h.tags) || !h.tags.every(str) || !ms(h.startMs) || !ms(h.untilMs)) {
    throw new JournalError(`${name}: not a journal header (v 1, fsid, key, imageRef, volume, tags, startMs, untilMs)`);
  }
  return h as JournalHeader;
}

export interface Journal {
  header: JournalHeader;
  /** in the order appended, duplicates included */
  reads: JournalRead[];
  /** lines that were not a read (a torn last line after a kill) */
  skipped: number;
}

export function parseJournal(text: string, name: string): Journal {
  const lines = text.split('\n');
  const header = parseHeader(lines[0], name);
  const reads: JournalRead[] = [];
  let skipped = 0;
  for (const line of lines.slice(1)) {
    if (line === '') continue;
    const r = parseRead(line);
    if (r) reads.push(r);
    else skipped++;
  }
  return { header, reads, skipped };
}

function parseRead(line: string): JournalRead | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  const r = v as Partial<JournalRead>;
  const n = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  return r !== null && typeof r === 'object' && n(r.t) && typeof r.c === 'string' && n(r.o) && n(r.l) && (r.l as number) > 0
    ? { t: r.t!, c: r.c, o: r.o!, l: r.l! }
    : null;
}
