// Pure planning for the chunk fetcher: which extra chunks a small read is
// widened to, and how missing chunks are merged into Range GETs.
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import { alignUp } from '../../image/bytes';

/** [first, last] chunks fetched with one Range GET of their compressed bytes. */
export interface Run {
  chunks: ChunkInfo[];
  /** compressed byte range [cStart, cEnd) */
  cStart: number;
  cEnd: number;
}

/** A chunk's span in the uncompressed space, page-aligned at the end. */
export function chunkSpan(c: ChunkInfo): { start: number; end: number } {
  return { start: c.uOffset, end: alignUp(c.uOffset + c.uSize) };
}

/**
 * Groups chunks (any order) into runs whose compressed bytes are contiguous
 * (or separated by at most maxGap bytes, fetched and thrown away), each run at
 * most maxBytes long unless a single chunk is bigger.
 */
export function coalesce(chunks: ChunkInfo[], maxBytes: number, maxGap = 0): Run[] {
  const sorted = [...chunks].sort((a, b) => a.cOffset - b.cOffset || a.index - b.index);
  const runs: Run[] = [];
  let cur: Run | undefined;
  for (const c of sorted) {
    const end = c.cOffset + c.cSize;
    if (cur) {
      const gap = c.cOffset - cur.cEnd;
      if (gap >= 0 && gap <= maxGap && end - cur.cStart <= maxBytes) {
        cur.chunks.push(c);
        cur.cEnd = end;
        continue;
      }
    }
    cur = { chunks: [c], cStart: c.cOffset, cEnd: end };
    runs.push(cur);
  }
  return runs;
}

export interface WidenInput {
  /** all chunks of the blob, in CI order (sorted by uncompressed offset) */
  chunks: ChunkInfo[];
  /** the chunks the window needs (sorted); may be empty */
  required: ChunkInfo[];
  /** the aligned window */
  start: number;
  end: number;
  /** read at least this many uncompressed bytes from start (0: no widening) */
  amplify: number;
  /** compressed bytes the extra chunks may add */
  maxExtraBytes: number;
  /** chunks not to widen over (present, or being fetched): widening stops at the first one */
  skip(c: ChunkInfo): boolean;
}

/**
 * Extra chunks after the window that a read is widened to: following the
 * last required chunk, while they start before start+amplify, are not to be
 * skipped, and stay compressed-contiguous (so they join the same GET).
 */
export function widen(w: WidenInput): ChunkInfo[] {
  if (w.amplify <= 0) return [];
  const target = w.start + w.amplify;
  const lastReq = w.required[w.required.length - 1];
  let i: number;
  if (lastReq) i = lastReq.index + 1;
  else {
    // no chunk in the window: the first one after it
    let lo = 0;
    let hi = w.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (w.chunks[mid].uOffset < w.end) lo = mid + 1;
      else hi = mid;
    }
    i = lo;
  }
  const out: ChunkInfo[] = [];
  let prev = lastReq;
  let bytes = 0;
  for (; i < w.chunks.length; i++) {
    const c = w.chunks[i];
    if (c.uOffset >= target) break;
    if (w.skip(c)) break;
    if (prev && c.cOffset !== prev.cOffset + prev.cSize) break;
    if (bytes + c.cSize > w.maxExtraBytes) break;
    out.push(c);
    bytes += c.cSize;
    prev = c;
  }
  return out;
}

/**
 * The byte ranges a fill writes: the window plus the spans of the chunks it
 * delivers, minus the spans of chunks it must not overwrite. Returned sorted,
 * merged, page-aligned.
 */
export function deliveryRanges(window: { start: number; end: number }, deliver: ChunkInfo[], keep: ChunkInfo[]):
  Array<{ start: number; end: number }> {
  const add: Array<{ start: number; end: number }> = [{ ...window }, ...deliver.map(chunkSpan)];
  add.sort((a, b) => a.start - b.start);
  const merged: Array<{ start: number; end: number }> = [];
  for (const r of add) {
    const last = merged[merged.length - 1];
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else merged.push({ ...r });
  }
  if (keep.length === 0) return merged;
  return subtractSpans(merged, keep.map(chunkSpan));
}

/**
 * Ranges minus holes: what is left of each range around the holes, in
 * order. With page-aligned inputs (chunk spans are: chunks start on a page
 * and their spans end on one) the pieces are page-aligned too.
 */
export function subtractSpans(ranges: Array<{ start: number; end: number }>, holes: Array<{ start: number; end: number }>):
  Array<{ start: number; end: number }> {
  const sorted = [...holes].sort((a, b) => a.start - b.start);
  const out: Array<{ start: number; end: number }> = [];
  for (const r of ranges) {
    let s = r.start;
    for (const h of sorted) {
      if (h.end <= s || h.start >= r.end) continue;
      if (h.start > s) out.push({ start: s, end: h.start });
      s = Math.max(s, h.end);
    }
    if (s < r.end) out.push({ start: s, end: r.end });
  }
  return out;
}

/** Splits a range at chunk boundaries into pieces of at most maxBytes (a single chunk may be larger). */
export function splitRange(r: { start: number; end: number }, chunks: ChunkInfo[], maxBytes: number):
  Array<{ start: number; end: number }> {
  if (r.end - r.start <= maxBytes) return [r];
  const out: Array<{ start: number; end: number }> = [];
  let s = r.start;
  // candidate cut points: chunk starts inside the range
  const cuts = chunks.map((c) => c.uOffset).filter((o) => o > r.start && o < r.end).sort((a, b) => a - b);
  let lastCut = s;
  for (const cut of cuts) {
    if (cut - s > maxBytes && lastCut > s) {
      out.push({ start: s, end: lastCut });
      s = lastCut;
    }
    lastCut = cut;
  }
  if (r.end - s > maxBytes && lastCut > s) {
    out.push({ start: s, end: lastCut });
    s = lastCut;
  }
  out.push({ start: s, end: r.end });
  return out;
}

/**
 * The GETs of one batch of a recorded start (replay): its chunks in blob
 * order, neighbours joined into one run when the chunks between them, which
 * the run then fetches too, add at most maxGapBytes; runs are compressed-
 * contiguous and at most maxMerge bytes. `all` is the blob's chunks by index.
 */
export function replayRuns(batch: ChunkInfo[], all: ChunkInfo[], opts: { maxMerge: number; maxGapBytes: number }): ChunkInfo[][] {
  const idx = [...new Set(batch.map((c) => c.index))].sort((a, b) => a - b);
  const runs: ChunkInfo[][] = [];
  let cur: ChunkInfo[] = [];
  let bytes = 0;
  for (const i of idx) {
    const c = all[i];
    const last = cur[cur.length - 1];
    if (last) {
      const between = all.slice(last.index + 1, i);
      const gap = between.reduce((n, x) => n + x.cSize, 0);
      const contiguous = [last, ...between, c].every((x, k, a) => k === 0 || x.cOffset === a[k - 1].cOffset + a[k - 1].cSize);
      if (contiguous && gap <= opts.maxGapBytes && bytes + gap + c.cSize <= opts.maxMerge) {
        cur.push(...between, c);
        bytes += gap + c.cSize;
        continue;
      }
      runs.push(cur);
    }
    cur = [c];
    bytes = c.cSize;
  }
  if (cur.length) runs.push(cur);
  return runs;
}

/** A run without the chunks `busy` says are present or on their way: the consecutive pieces left. */
export function splitBusy(run: ChunkInfo[], busy: (c: ChunkInfo) => boolean): ChunkInfo[][] {
  const out: ChunkInfo[][] = [];
  let cur: ChunkInfo[] = [];
  for (const c of run) {
    if (busy(c)) {
      if (cur.length) out.push(cur);
      cur = [];
    } else cur.push(c);
  }
  if (cur.length) out.push(cur);
  return out;
}
