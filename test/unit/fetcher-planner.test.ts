// The coalescing planner: merged runs, widening, delivery ranges, piece splitting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import { coalesce, deliveryRanges, splitRange, widen } from '../../content/remote/planner';

const K = 1024;
/** n chunks of usize bytes each, compressed to csize, laid out back to back. */
function layout(n: number, usize: number, csize: number): ChunkInfo[] {
  const out: ChunkInfo[] = [];
  let u = 0;
  for (let i = 0; i < n; i++) {
    out.push({ index: i, uOffset: u, uSize: usize, cOffset: i * csize, cSize: csize, compressed: true, flags: 1 });
    u = Math.ceil((u + usize) / 4096) * 4096;
  }
  return out;
}

test('coalesce: contiguous chunks merge up to the limit; gaps and disorder split', () => {
  const cs = layout(10, 256 * K, 100 * K);
  const runs = coalesce([cs[3], cs[0], cs[1], cs[2], cs[5], cs[6]], 250 * K);
  assert.deepEqual(runs.map((r) => r.chunks.map((c) => c.index)), [[0, 1], [2, 3], [5, 6]]);
  assert.deepEqual(runs.map((r) => [r.cStart, r.cEnd]), [[0, 200 * K], [200 * K, 400 * K], [500 * K, 700 * K]]);
  assert.deepEqual(coalesce([cs[0], cs[2]], 1 << 20, 100 * K).map((r) => r.chunks.length), [2], 'a gap within maxGap is bridged');
  assert.deepEqual(coalesce([cs[0], cs[2]], 1 << 20, 0).map((r) => r.chunks.length), [1, 1]);
  const big = { ...cs[0], cSize: 5 << 20 };
  assert.deepEqual(coalesce([big], 1 << 20).map((r) => r.cEnd - r.cStart), [5 << 20], 'one oversized chunk is its own run');
  assert.deepEqual(coalesce([], 1 << 20), []);
});

test('widen: forward to amplify bytes, stopping at busy chunks, discontiguity or the byte budget', () => {
  const cs = layout(16, 64 * K, 30 * K);
  const base = { chunks: cs, start: 0, end: 64 * K, maxExtraBytes: 1 << 20, skip: () => false };
  const idx = (x: ChunkInfo[]) => x.map((c) => c.index);
  assert.deepEqual(idx(widen({ ...base, required: [cs[0]], amplify: 256 * K })), [1, 2, 3]);
  assert.deepEqual(idx(widen({ ...base, required: [cs[0]], amplify: 0 })), []);
  assert.deepEqual(idx(widen({ ...base, required: [cs[0]], amplify: 32 * K })), []);
  assert.deepEqual(idx(widen({ ...base, required: [cs[0]], amplify: 256 * K, skip: (c) => c.index === 2 })), [1]);
  assert.deepEqual(idx(widen({ ...base, required: [cs[0]], amplify: 1 << 20, maxExtraBytes: 100 * K })), [1, 2, 3]);
  const gappy = cs.map((c) => (c.index === 2 ? { ...c, cOffset: c.cOffset + 1 } : c));
  assert.deepEqual(idx(widen({ ...base, chunks: gappy, required: [gappy[0]], amplify: 1 << 20 })), [1]);
  // a window in a hole of the uncompressed space (no chunk) widens from the next chunk
  const holey = [cs[0], { ...cs[1], index: 1, uOffset: 128 * K }, { ...cs[2], index: 2, uOffset: 192 * K }];
  assert.deepEqual(idx(widen({ ...base, chunks: holey, required: [], start: 64 * K, end: 68 * K, amplify: 200 * K })), [1, 2]);
  assert.deepEqual(idx(widen({ ...base, required: [cs[15]], start: 15 * 64 * K, end: 16 * 64 * K, amplify: 1 << 20 })), []);
});

test('delivery ranges: window ∪ chunk spans, minus kept chunks, page-aligned', () => {
  const cs = layout(4, 5000, 100); // spans [0,8192) [8192,16384) ...
  assert.deepEqual(deliveryRanges({ start: 4096, end: 8192 }, [cs[0], cs[1]], []), [{ start: 0, end: 16384 }]);
  assert.deepEqual(deliveryRanges({ start: 0, end: 4096 }, [cs[0], cs[3]], []), [{ start: 0, end: 8192 }, { start: 24576, end: 32768 }]);
  assert.deepEqual(deliveryRanges({ start: 0, end: 32768 }, [cs[0], cs[3]], [cs[1], cs[2]]), [{ start: 0, end: 8192 }, { start: 24576, end: 32768 }]);
  assert.deepEqual(deliveryRanges({ start: 40960, end: 45056 }, [], []), [{ start: 40960, end: 45056 }]);
});

test('pieces split at chunk starts, at most maxBytes unless one chunk is bigger', () => {
  const cs = layout(8, 1 << 20, 1000);
  const r = { start: 0, end: 8 << 20 };
  assert.deepEqual(splitRange(r, cs, 3 << 20).map((p) => [p.start >> 20, p.end >> 20]), [[0, 3], [3, 6], [6, 8]]);
  assert.deepEqual(splitRange(r, cs, 8 << 20), [r]);
  assert.deepEqual(splitRange(r, cs, 1).map((p) => (p.end - p.start) >> 20), [1, 1, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual(splitRange({ start: 0, end: 4 << 20 }, [cs[0]], 1 << 20), [{ start: 0, end: 4 << 20 }], 'no cut points: one piece');
});
