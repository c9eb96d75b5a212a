// The chunk fetcher's logic over an in-memory ranged reader (the registry
// paths are in test/integration/fetcher-*.test.ts): byte-exact fills for each
// codec, deduplication, widening and merging, verification and refetch,
// presence, prefetch priority and cancellation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RemoteBlobContent } from '../../content/remote/chunk-fetcher';
import { FetchScheduler } from '../../content/remote/scheduler';
import { PresenceBitmap, markRange } from '../../content/remote/presence';
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import type { RangeReader } from '../../content/remote/source';
import { buildSyntheticBlob, SyntheticBlob } from '../support/testblob';
import { DataBlob } from '../../image/blob/datablob';
import { Compressor, DigestAlgo } from '../../image/rafs/bootstrap';
import { asParts, memorySource } from '../support/fixtures';
import { IntegrityError } from '../../registry/errors';

/** every test and hook is bounded: a hang fails instead of blocking the run */
const T = { timeout: 60_000 };

const PAGE = 4096;
const K = 1024;
const M = 1 << 20;
const alignUp = (n: number) => Math.ceil(n / PAGE) * PAGE;

/** A reader over the blob's bytes that records every range and can corrupt or delay them. */
class TestReader implements RangeReader {
  readonly name = 'test-reader';
  readonly calls: Array<[number, number]> = [];
  inflight = 0;
  maxInflight = 0;
  delayMs = 0;
  /** returns a replacement buffer (corrupted/short) or undefined */
  tamper?: (off: number, len: number, data: Buffer, call: number) => Buffer | undefined;
  constructor(readonly data: Buffer) {}
  get size() {
    return this.data.length;
  }
  async readRange(off: number, len: number): Promise<Buffer[]> {
    const call = this.calls.length;
    this.calls.push([off, len]);
    this.inflight++;
    this.maxInflight = Math.max(this.maxInflight, this.inflight);
    try {
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
      const out = Buffer.from(this.data.subarray(off, off + len));
      return asParts(this.tamper?.(off, len, out, call) ?? out);
    } finally {
      this.inflight--;
    }
  }
}

/** The kernel's side: a cache file in memory; checks alignment and that nothing wrong is ever written. */
class Sink {
  readonly file: Buffer;
  readonly writes: Array<[number, number]> = [];
  constructor(readonly blob: SyntheticBlob) {
    this.file = Buffer.alloc(alignUp(blob.entry.uncompressedSize));
  }
  readonly alloc = (n: number) => {
    assert.equal(n % PAGE, 0, `alloc(${n}) is not page-sized`);
    return Buffer.alloc(n);
  };
  readonly sink = async (off: number, data: Buffer) => {
    assert.equal(off % PAGE, 0, `write at ${off} unaligned`);
    assert.equal(data.length % PAGE, 0, `write of ${data.length} bytes`);
    assert.ok(off + data.length <= this.file.length, `write [${off}, +${data.length}) past the end`);
    const want = this.blob.uncompressed.subarray(off, off + data.length);
    assert.ok(data.equals(want), `wrong bytes written at [${off}, +${data.length})`);
    data.copy(this.file, off);
    this.writes.push([off, data.length]);
  };
  covers(off: number, len: number): boolean {
    const s = Math.floor(off / PAGE) * PAGE;
    const e = Math.min(alignUp(off + len), this.file.length);
    return this.file.subarray(s, e).equals(this.blob.uncompressed.subarray(s, e));
  }
}

async function setup(b: SyntheticBlob, opts: ConstructorParameters<typeof RemoteBlobContent>[2] = {}) {
  const reader = new TestReader(b.data);
  const blob = await DataBlob.open(b.entry, memorySource(b.data, 'blob'));
  const content = new RemoteBlobContent(blob, reader, { hostKey: 'test', ...opts });
  return { reader, content, sink: new Sink(b) };
}

/** Chunk indexes each recorded range covers (whole chunks only, or it throws). */
function chunksOf(b: SyntheticBlob, calls: Array<[number, number]>): number[] {
  const out: number[] = [];
  for (const [off, len] of calls) {
    const inside = b.chunks.filter((c) => c.cOffset >= off && c.cOffset + c.cSize <= off + len);
    assert.equal(inside.reduce((n, c) => n + c.cSize, 0), len, `range [${off}, +${len}) is not whole chunks`);
    out.push(...inside.map((c) => c.index));
  }
  return out;
}

function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

const SIZES = [M, 300 * K, 5000, M, 64 * K + 1, 700 * K, 1, 2 * M, M, 123456, 4096, M - 1];

for (const [name, compressor, digester] of [
  ['zstd/blake3', Compressor.Zstd, DigestAlgo.Blake3],
  ['lz4/sha256', Compressor.Lz4Block, DigestAlgo.Sha256],
  ['none/blake3', Compressor.None, DigestAlgo.Blake3],
] as const) {
  test(`${name}: 150 random windows deliver exactly the blob's bytes, aligned`, T, async () => {
    const b = await buildSyntheticBlob({ chunkSizes: SIZES, compressor, digester, seed: name });
    assert.ok(b.chunks.some((c) => c.compressed) === (compressor !== Compressor.None));
    const { content, sink } = await setup(b, { amplify: 256 * K, maxMerge: M, cacheBytes: 0 });
    const r = rng(42);
    for (let i = 0; i < 150; i++) {
      const off = Math.floor(r() * content.size);
      const len = 1 + Math.floor(r() * (r() < 0.8 ? 64 * K : 3 * M));
      await content.fill(off, len, sink.sink, sink.alloc);
      assert.ok(sink.covers(off, len), `window ${off}+${len}`);
    }
    // past the end: nothing; the tail page: zeros beyond size
    await content.fill(content.size + PAGE, 10, sink.sink, sink.alloc);
    await content.fill(content.size - 1, 10, sink.sink, sink.alloc);
    assert.ok(sink.covers(content.size - 1, 1));
  });
}

test('a 4 KiB read is widened to 1 MiB of following chunks in one GET; present chunks are not refetched by widening', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(40).fill(64 * K), seed: 'widen' });
  const { reader, content, sink } = await setup(b);
  const widened: Promise<void>[] = [];
  await content.fill(0, PAGE, sink.sink, sink.alloc, undefined, { background: (w) => widened.push(w) });
  assert.equal(reader.calls.length, 1);
  assert.deepEqual(chunksOf(b, reader.calls), [...Array(16).keys()]);
  await Promise.all(widened); // the READ returned once its own chunk was written; the widened ones follow
  assert.equal(content.progress().chunksPresent, 16);
  assert.ok(sink.covers(0, M));
  // the next read starts inside what was delivered: it needs chunk 16 on, widened from its window start
  await content.fill(M, PAGE, sink.sink, sink.alloc);
  assert.deepEqual(chunksOf(b, reader.calls.slice(1)), [...Array(16).keys()].map((i) => i + 16));
  // amplify 0: whole chunks only
  const z = await setup(b, { amplify: 0 });
  await z.content.fill(70 * K, 10, z.sink.sink, z.sink.alloc);
  assert.deepEqual(chunksOf(b, z.reader.calls), [1]);
});

test('a big read is split into concurrent GETs of at most maxMerge', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(24).fill(M), entropy: 1, seed: 'merge' });
  const { reader, content, sink } = await setup(b, { maxMerge: 4 * M, amplify: 0, scheduler: new FetchScheduler({ concurrencyPerHost: 8 }) });
  reader.delayMs = 30;
  await content.fill(0, 24 * M, sink.sink, sink.alloc);
  assert.ok(sink.covers(0, 24 * M));
  assert.ok(reader.calls.every(([, len]) => len <= 4 * M + 4 * K), JSON.stringify(reader.calls));
  assert.ok(reader.calls.length >= 6);
  assert.ok(reader.maxInflight >= 4, `GETs ran concurrently (max ${reader.maxInflight})`);
  assert.deepEqual(chunksOf(b, reader.calls).sort((x, y) => x - y), [...Array(24).keys()]);
  assert.ok(sink.writes.every(([, len]) => len <= 4 * M), 'pieces ≤ maxPiece');
});

test('64 concurrent overlapping random reads fetch every chunk exactly once', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(64).fill(256 * K), seed: 'dedup' });
  const { reader, content, sink } = await setup(b, { amplify: 512 * K, maxMerge: M });
  reader.delayMs = 5;
  const r = rng(7);
  const reads = Array.from({ length: 64 }, () => [Math.floor(r() * content.size), 1 + Math.floor(r() * 2 * M)] as const);
  await Promise.all(reads.map(([o, l]) => content.fill(o, l, sink.sink, sink.alloc)));
  for (const [o, l] of reads) assert.ok(sink.covers(o, l));
  const fetched = chunksOf(b, reader.calls);
  assert.equal(new Set(fetched).size, fetched.length, `a chunk was fetched twice: ${fetched.sort((x, y) => x - y)}`);
  assert.ok(content.stats.joined > 0);
});

test('a corrupted or short chunk is refetched; persistent corruption fails the fill without writing it', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: [M, M, M], seed: 'verify' });
  const c1 = b.chunks[1];
  // first response flips a byte inside chunk 1, the second is short, the third is good
  const { reader, content, sink } = await setup(b, { amplify: 0 });
  reader.tamper = (off, len, data, call) => {
    if (call === 0) data[c1.cOffset - off + 10] ^= 0x40;
    if (call === 1) return data.subarray(0, len - 1);
    return undefined;
  };
  await content.fill(0, 3 * M, sink.sink, sink.alloc);
  assert.ok(sink.covers(0, 3 * M));
  assert.equal(content.stats.verifyFailures, 2);
  assert.equal(reader.calls.length, 3);
  assert.deepEqual(reader.calls[1], [c1.cOffset, c1.cSize], 'only the bad chunk is refetched');

  // uncompressed chunks: a flipped byte is caught by the digest alone
  const raw = await buildSyntheticBlob({ chunkSizes: [M, M, M], seed: 'verify', compressor: Compressor.None });
  const bad = await setup(raw, { amplify: 0, verifyAttempts: 3 });
  bad.reader.tamper = (off, _len, data) => {
    if (off <= raw.chunks[1].cOffset && off + data.length > raw.chunks[1].cOffset) data[raw.chunks[1].cOffset - off + 777] ^= 1;
    return undefined;
  };
  await assert.rejects(bad.content.fill(M, PAGE, bad.sink.sink, bad.sink.alloc), (e: Error) =>
    e instanceof IntegrityError && /chunk 1 failed verification 3 times; last: .*digest mismatch/.test(e.message));
  assert.deepEqual(bad.sink.writes, [], 'nothing written');
  assert.equal(bad.content.progress().chunksPresent, 0);
  // reads of other chunks still work, and a read spanning the bad chunk writes only good pieces
  await bad.content.fill(0, PAGE, bad.sink.sink, bad.sink.alloc);
  assert.ok(bad.sink.covers(0, PAGE));
});

test('cache: an idle blob lets its cached chunks go (cacheIdleMs), and a use keeps them', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: [M, M], seed: 'idle' });
  // margins of hundreds of ms, so a loaded machine's late timers cannot flip the outcome
  const x = await setup(b, { amplify: 0, cacheIdleMs: 1000 });
  await x.content.fill(0, PAGE, x.sink.sink, x.sink.alloc);
  await new Promise((r) => setTimeout(r, 600));
  await x.content.fill(0, PAGE, x.sink.sink, x.sink.alloc); // a use within the idle time: from the cache, and it counts
  await new Promise((r) => setTimeout(r, 600));
  await x.content.fill(0, PAGE, x.sink.sink, x.sink.alloc); // 1200 ms after the fetch, 600 after the last use
  assert.equal(x.reader.calls.length, 1, 'kept while in use');
  await new Promise((r) => setTimeout(r, 2000));
  await x.content.fill(0, PAGE, x.sink.sink, x.sink.alloc);
  assert.equal(x.reader.calls.length, 2, 'let go once idle: fetched again');
  assert.ok(x.sink.file.subarray(0, PAGE).equals(b.uncompressed.subarray(0, PAGE)));

  const kept = await setup(b, { amplify: 0, cacheIdleMs: 0 });
  await kept.content.fill(0, PAGE, kept.sink.sink, kept.sink.alloc);
  await new Promise((r) => setTimeout(r, 1200));
  await kept.content.fill(0, PAGE, kept.sink.sink, kept.sink.alloc);
  assert.equal(kept.reader.calls.length, 1, 'cacheIdleMs 0 keeps them');
});

test('cache: cacheBytes bounds it, the least recently used chunk goes first, and a chunk larger than it is not kept', T, async () => {
  const C = 256 * K;
  const b = await buildSyntheticBlob({ chunkSizes: [C, C, C, C], entropy: 1, seed: 'lru' }); // stored raw: each C bytes
  assert.ok(b.chunks.every((c) => c.cSize === C));
  const x = await setup(b, { amplify: 0, cacheBytes: 2 * C + C / 2 }); // room for two
  const read = (i: number) => x.content.fill(i * C, PAGE, x.sink.sink, x.sink.alloc);
  await read(0);
  await read(1);
  await read(0); // from the cache: 0 is now the most recently used
  await read(2); // evicts 1, not 0
  assert.deepEqual(chunksOf(b, x.reader.calls), [0, 1, 2]);
  await read(0);
  await read(2);
  assert.deepEqual(chunksOf(b, x.reader.calls), [0, 1, 2], '0 and 2 were kept');
  await read(1);
  assert.deepEqual(chunksOf(b, x.reader.calls), [0, 1, 2, 1], '1 was evicted');

  const small = await setup(b, { amplify: 0, cacheBytes: C - 1 });
  await small.content.fill(0, PAGE, small.sink.sink, small.sink.alloc);
  await small.content.fill(0, PAGE, small.sink.sink, small.sink.alloc);
  assert.deepEqual(chunksOf(b, small.reader.calls), [0, 0], 'a chunk larger than the cache is fetched each time');
});

test('presence: a present chunk in the window is re-delivered (from the cache, or refetched without one); trustPresence skips it', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: [M, M], seed: 'presence' });
  const cached = await setup(b, { amplify: 0 });
  await cached.content.fill(0, PAGE, cached.sink.sink, cached.sink.alloc);
  await cached.content.fill(0, PAGE, cached.sink.sink, cached.sink.alloc);
  assert.equal(cached.reader.calls.length, 1, 'second delivery came from the cache');
  assert.equal(cached.sink.writes.length, 2);
  assert.equal(cached.content.stats.redelivered, 1);

  const uncached = await setup(b, { amplify: 0, cacheBytes: 0 });
  await uncached.content.fill(0, PAGE, uncached.sink.sink, uncached.sink.alloc);
  await uncached.content.fill(0, PAGE, uncached.sink.sink, uncached.sink.alloc);
  assert.equal(uncached.reader.calls.length, 2);

  const trusting = await setup(b, { amplify: 0, trustPresence: true, cacheBytes: 0 });
  await trusting.content.fill(0, PAGE, trusting.sink.sink, trusting.sink.alloc);
  await trusting.content.fill(0, PAGE, trusting.sink.sink, trusting.sink.alloc);
  assert.equal(trusting.reader.calls.length, 1);
  assert.equal(trusting.sink.writes.length, 1);

  // seeding presence (e.g. from SEEK_DATA after a restart) stops widening over those chunks
  const seeded = await setup(b, { amplify: 2 * M });
  assert.equal(seeded.content.markPresent(M, M), 1);
  await seeded.content.fill(0, PAGE, seeded.sink.sink, seeded.sink.alloc);
  assert.deepEqual(chunksOf(b, seeded.reader.calls), [0]);
  assert.equal(seeded.content.progress().bytesPresent, 2 * M);
});

test('prefetch: whole blob with progress; a READ overtakes queued prefetch GETs', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(32).fill(M), entropy: 1, seed: 'prefetch' });
  const { reader, content, sink } = await setup(b, {
    maxMerge: M, amplify: 0, scheduler: new FetchScheduler({ concurrencyPerHost: 3, reservedForDemand: 1 }),
  });
  reader.delayMs = 40;
  const seen: number[] = [];
  const pf = content.prefetch(sink.sink, sink.alloc, { onProgress: (p) => seen.push(p.chunksPresent) });
  await new Promise((r) => setTimeout(r, 60));
  const t0 = Date.now();
  await content.fill(31 * M, PAGE, sink.sink, sink.alloc);
  const readMs = Date.now() - t0;
  assert.ok(readMs < 200, `the READ waited ${readMs} ms behind prefetch`);
  assert.ok(reader.maxInflight <= 3);
  const res = await pf.done;
  assert.ok(res.complete && !res.cancelled && res.failedRuns === 0, JSON.stringify(res));
  assert.equal(res.chunksPresent, 32);
  assert.equal(res.bytesPresent, res.bytes);
  assert.ok(sink.covers(0, 32 * M));
  assert.ok(seen.length >= 20 && seen[seen.length - 1] === 32);
  const fetched = chunksOf(b, reader.calls);
  assert.equal(new Set(fetched).size, 32);
  assert.equal(fetched.length, 32, 'prefetch skipped the chunk the READ fetched');
});

test('prefetch yields to READs: no new transfer while a fill runs, nor until READs have been quiet for demandQuietMs', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(8).fill(M), entropy: 1, seed: 'quiet' });
  const scheduler = new FetchScheduler({ concurrencyPerHost: 3, reservedForDemand: 1, demandQuietMs: 100 });
  const { reader, content, sink } = await setup(b, { maxMerge: M, amplify: 0, scheduler });
  const busy = scheduler.beginDemand(); // a READ being filled (of another blob: the CPU is shared)
  const pf = content.prefetch(sink.sink, sink.alloc);
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(reader.calls.length, 0, 'prefetch started nothing while a READ ran');
  busy();
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(reader.calls.length, 0, 'nor right after it');
  const res = await pf.done;
  assert.ok(res.complete, JSON.stringify(res));
  // an actual fill counts too
  const again = await setup(b, { maxMerge: M, amplify: 0, scheduler });
  again.reader.delayMs = 60;
  const read = again.content.fill(0, PAGE, again.sink.sink, again.sink.alloc);
  const pf2 = again.content.prefetch(again.sink.sink, again.sink.alloc);
  await read;
  assert.deepEqual(chunksOf(b, again.reader.calls), [0], 'only the READ\'s chunk was fetched while it ran');
  assert.ok((await pf2.done).complete);
  assert.equal(chunksOf(b, again.reader.calls).length, 8);
});

test('holdPrefetch (a container is starting) keeps prefetch from starting transfers for that long', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(4).fill(M), entropy: 1, seed: 'hold' });
  const scheduler = new FetchScheduler({ demandQuietMs: 20 });
  const { reader, content, sink } = await setup(b, { maxMerge: M, amplify: 0, scheduler });
  scheduler.holdPrefetch(200);
  const t0 = Date.now();
  const pf = content.prefetch(sink.sink, sink.alloc);
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(reader.calls.length, 0, 'nothing during the hold');
  assert.ok((await pf.done).complete);
  assert.ok(Date.now() - t0 >= 200, 'prefetch ran after the hold');
});

test('prefetch cancel stops it early; a READ that joined a cancelled prefetch GET still gets its bytes', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(32).fill(M), entropy: 1, seed: 'cancel' });
  const { reader, content, sink } = await setup(b, { maxMerge: M, amplify: 0, scheduler: new FetchScheduler({ concurrencyPerHost: 2, reservedForDemand: 0 }) });
  reader.delayMs = 30;
  const pf = content.prefetch(sink.sink, sink.alloc);
  await new Promise((r) => setTimeout(r, 45));
  // chunk 1 or 2 is being fetched by prefetch now; this READ joins it
  const read = content.fill(M, PAGE, sink.sink, sink.alloc);
  pf.cancel();
  await read;
  assert.ok(sink.covers(M, PAGE));
  const res = await pf.done;
  assert.ok(res.cancelled && !res.complete, JSON.stringify(res));
  assert.ok(res.chunksPresent < 8, `${res.chunksPresent} chunks present after cancel`);
  assert.ok(reader.calls.length < 8);
});

test('markRange (SEEK_DATA seeding) marks exactly the chunks wholly inside each extent, as a scan would', () => {
  // 4 KiB-aligned chunks of varied sizes with gaps, in uOffset order as in a blob
  const chunks: ChunkInfo[] = [];
  let off = 0;
  for (let i = 0; i < 500; i++) {
    const uSize = 1 + ((i * 7919) % 300_000);
    chunks.push({ index: i, uOffset: off, uSize, cOffset: 0, cSize: uSize, compressed: false, flags: 0 });
    off = Math.ceil((off + uSize) / 4096) * 4096 + (i % 5 === 0 ? 8192 : 0);
  }
  const fast = new PresenceBitmap(chunks.length);
  const slow = new Set<number>();
  for (let k = 0; k < 300; k++) {
    const start = Math.floor(Math.random() * off / 4096) * 4096;
    const len = Math.floor(Math.random() * 2_000_000 / 4096) * 4096;
    const added = markRange(fast, chunks, start, len).map((c) => c.index);
    const want = chunks.filter((c) => c.uOffset >= start && c.uOffset + c.uSize <= start + len && !slow.has(c.index)).map((c) => c.index);
    for (const i of want) slow.add(i);
    assert.deepEqual(added, want, `extent [${start}, ${start + len})`);
  }
  assert.equal(fast.count, slow.size);
});

test('replay: a recorded order fetched in few GETs (neighbours merged), first batch first; present chunks are not fetched again', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(40).fill(64 * K), entropy: 1, seed: 'replay' });
  const { reader, content, sink } = await setup(b, { amplify: 0 });
  const order = [30, 2, 3, 4, 31, 10, 12];
  const res = await content.replay(order.map((i) => b.chunks[i].uOffset), sink.sink, sink.alloc).done;
  // one batch (7 × 64 KiB < 1 MiB), in blob order: [2,3,4]; [10,11,12] (chunk 11, 64 KiB, fetched to merge them);
  // [30,31] (chunks 13-29 between: far more than 64 KiB of gap)
  assert.deepEqual([res.chunks, res.fetched, res.failedRuns, res.cancelled], [7, 8, 0, false], JSON.stringify(res));
  assert.deepEqual(reader.calls.map((c) => chunksOf(b, [c])), [[2, 3, 4], [10, 11, 12], [30, 31]]);
  for (const i of order) assert.ok(sink.covers(b.chunks[i].uOffset, b.chunks[i].uSize), `chunk ${i} written`);
  assert.equal(content.progress().chunksReplayed, 8);
  const again = await content.replay(order.map((i) => b.chunks[i].uOffset), sink.sink, sink.alloc).done;
  assert.equal(again.fetched, 0);
  assert.equal(reader.calls.length, 3, 'nothing fetched twice');
});

test('replay: batches keep the recorded order (one low slot: its GETs go in batch order)', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(64).fill(256 * K), entropy: 1, seed: 'replay-order' });
  const { reader, content, sink } = await setup(b, { amplify: 0, scheduler: new FetchScheduler({ concurrencyPerHost: 2, reservedForDemand: 1 }) });
  // 256 KiB chunks, 1 MiB batches: [60,61,62,63] then [0,1,3,4] (chunk 2 is a 256 KiB gap: too big) then [40]
  const order = [60, 61, 62, 63, 0, 1, 3, 4, 40];
  const res = await content.replay(order.map((i) => b.chunks[i].uOffset), sink.sink, sink.alloc).done;
  assert.equal(res.fetched, 9);
  // one low slot: GETs go one after another, in batch order
  assert.deepEqual(reader.calls.map((c) => chunksOf(b, [c])), [[60, 61, 62, 63], [0, 1], [3, 4], [40]]);
});

test('replay: a READ of a chunk the replay is fetching waits for that GET (counted as joined, not fetched again)', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(16).fill(64 * K), entropy: 1, seed: 'replay-join' });
  const { reader, content, sink } = await setup(b, { amplify: 0 });
  reader.delayMs = 80;
  const r = content.replay([5, 6].map((i) => b.chunks[i].uOffset), sink.sink, sink.alloc);
  await new Promise((res) => setTimeout(res, 20));
  await content.fill(b.chunks[5].uOffset, PAGE, sink.sink, sink.alloc);
  await r.done;
  assert.equal(reader.calls.length, 1, 'one GET for both');
  const p = content.progress();
  assert.deepEqual([p.chunksWanted, p.chunksWantedPresent, p.chunksWantedJoined], [1, 0, 1]);
});

test('fill with {exact}: only the chunks the range needs, where a plain fill widens to amplify', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(16).fill(64 * K), entropy: 1, seed: 'exact' });
  const { reader, content, sink } = await setup(b, { amplify: M });
  await content.fill(b.chunks[3].uOffset, PAGE, sink.sink, sink.alloc, undefined, { exact: true });
  assert.deepEqual(chunksOf(b, reader.calls), [3]);
  await content.fill(b.chunks[8].uOffset, PAGE, sink.sink, sink.alloc);
  assert.ok(chunksOf(b, reader.calls).length > 4, 'the plain fill widened');
});

test('replay after the cache file was replaced (resetPresence): chunks still in memory are written again without a GET', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(8).fill(64 * K), entropy: 1, seed: 'replay-reset' });
  const { reader, content, sink } = await setup(b, { amplify: 0 });
  const offs = [1, 2, 5].map((i) => b.chunks[i].uOffset);
  await content.replay(offs, sink.sink, sink.alloc).done;
  const gets = reader.calls.length;
  content.resetPresence();
  sink.file.fill(0);
  const res = await content.replay(offs, sink.sink, sink.alloc).done;
  assert.equal(res.fetched, 3, 'written again');
  assert.equal(reader.calls.length, gets, 'from memory');
  for (const i of [1, 2, 5]) assert.ok(sink.covers(b.chunks[i].uOffset, b.chunks[i].uSize));
});

test('fillAhead: fetches only chunks neither present nor under way, in merged GETs; a READ in its window joins its GET', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(12).fill(256 * K), seed: 'ahead' });
  const { reader, content, sink } = await setup(b, { amplify: 0, maxMerge: 4 * M });
  reader.delayMs = 20;
  await content.fill(0, PAGE, sink.sink, sink.alloc); // chunk 0 present
  const fetched0 = reader.calls.length;
  const joining = content.fill(b.chunks[3].uOffset, PAGE, sink.sink, sink.alloc); // chunk 3 under way
  const ahead = content.fillAhead(0, b.chunks[8].uOffset, sink.sink, sink.alloc);
  const read = content.fill(b.chunks[5].uOffset, PAGE, sink.sink, sink.alloc); // a READ inside the window
  assert.equal(await ahead, 6, 'chunks 1, 2, 4, 5, 6, 7: not 0 (present) nor 3 (another fill is fetching it)');
  await Promise.all([joining, read]);
  assert.deepEqual(chunksOf(b, reader.calls.slice(fetched0)).sort((x, y) => x - y), [1, 2, 3, 4, 5, 6, 7], 'every chunk fetched once');
  assert.equal(reader.calls.length - fetched0, 3, 'GETs: chunk 3, then [1, 2] and [4, 7] merged');
  assert.ok(sink.covers(0, b.chunks[8].uOffset), 'the window is written, byte-exact');
  assert.equal(content.stats.chunksAhead, 6);
  assert.equal(content.progress().chunksAhead, 6);
  assert.equal(await content.fillAhead(0, b.chunks[8].uOffset, sink.sink, sink.alloc), 0, 'nothing left to fetch: no GET');
  assert.equal(reader.calls.length - fetched0, 3);
});

test('fillAhead: a chunk that cannot be verified rejects it, having written the others and nothing wrong', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(6).fill(256 * K), seed: 'ahead-bad' });
  const { reader, content, sink } = await setup(b, { amplify: 0, verifyAttempts: 1 });
  const bad = b.chunks[2];
  reader.tamper = (off, len, data) => {
    if (off <= bad.cOffset && bad.cOffset < off + len) data[bad.cOffset - off] ^= 0xff;
    return data;
  };
  await assert.rejects(content.fillAhead(0, b.entry.uncompressedSize, sink.sink, sink.alloc), /verification/);
  for (const c of b.chunks) if (c !== bad) assert.ok(sink.covers(c.uOffset, c.uSize), `chunk ${c.index} written`);
  assert.equal(content.stats.chunksAhead, 5);
});
