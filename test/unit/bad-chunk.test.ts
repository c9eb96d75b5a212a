// A chunk that keeps failing verification fails only its own bytes: every
// other chunk of the READ's window (and of the piece it shares) is written,
// the bad chunk's pages stay a hole, a widened-to bad chunk costs the READ
// nothing; the chunk is marked bad for a cool-down in which nothing fetches
// it (READs, prefetch, widening), with one log line; after the cool-down one
// READ tries it once, and good bytes heal it. Over an in-memory reader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { RemoteBlobContent, ChunkFetcherOptions } from '../../content/remote/chunk-fetcher';
import { BadChunkError, BadChunks } from '../../content/remote/bad-chunks';
import { subtractSpans } from '../../content/remote/planner';
import type { RangeReader } from '../../content/remote/source';
import { fillRetryable } from '../../content/content';
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import { DataBlob } from '../../image/blob/datablob';
import { Compressor } from '../../image/rafs/bootstrap';
import { IntegrityError } from '../../registry/errors';
import { FscacheDaemon, DeviceIO } from '../../worker/daemon';
import { encodeMessage, parseMessage, Opcode } from '../../worker/protocol';
import { buildSyntheticBlob, SyntheticBlob } from '../support/testblob';
import { asParts, memorySource } from '../support/fixtures';
import { blobsOf } from '../../admin/service';
import { ConfigError, parseConfig } from '../../config/config';
import { registrySettings } from '../../supervisor/setup';

const T = { timeout: 60_000 };
const PAGE = 4096;
const K = 1024;
const alignUp = (n: number) => Math.ceil(n / PAGE) * PAGE;
const span = (c: ChunkInfo) => ({ start: c.uOffset, end: alignUp(c.uOffset + c.uSize) });

/** Chunk 3 is the bad one; chunk 2 ends 12,345 bytes into a page right before it (a file ending just before it). */
const SIZES = [256 * K, 300 * K + 5, 64 * K + 12345, 256 * K, 100 * K + 7, 256 * K, 4096, 512 * K];
const BAD = 3;

/** A reader over the blob that records ranges and flips a byte of the bad chunk in every range covering it while `corrupt`. */
class Reader implements RangeReader {
  readonly name = 'bad-chunk-reader';
  readonly calls: Array<[number, number]> = [];
  corrupt = true;
  constructor(readonly b: SyntheticBlob, readonly bad: ChunkInfo) {}
  get size() {
    return this.b.data.length;
  }
  async readRange(off: number, len: number): Promise<Buffer[]> {
    this.calls.push([off, len]);
    await sleep(1);
    const out = Buffer.from(this.b.data.subarray(off, off + len));
    const at = this.bad.cOffset + Math.floor(this.bad.cSize / 2);
    if (this.corrupt && at >= off && at < off + len) out[at - off] ^= 0x10;
    return asParts(out);
  }
  /** GETs whose range covered any byte of chunk c */
  getsOf(c: ChunkInfo): number {
    return this.calls.filter(([o, l]) => o < c.cOffset + c.cSize && o + l > c.cOffset).length;
  }
}

/** The cache file: checks every write is aligned and right, and keeps which pages hold data. */
class CacheFile {
  readonly file: Buffer;
  readonly pages: Uint8Array;
  readonly writes: Array<[number, number]> = [];
  constructor(readonly b: SyntheticBlob) {
    this.file = Buffer.alloc(alignUp(b.entry.uncompressedSize));
    this.pages = new Uint8Array(this.file.length / PAGE);
  }
  readonly alloc = (n: number) => {
    assert.equal(n % PAGE, 0, `alloc(${n})`);
    return Buffer.alloc(n);
  };
  readonly sink = async (off: number, data: Buffer) => {
    assert.equal(off % PAGE, 0, `write at ${off} unaligned`);
    assert.equal(data.length % PAGE, 0, `write of ${data.length} bytes`);
    assert.ok(data.equals(this.b.uncompressed.subarray(off, off + data.length)), `wrong bytes written at [${off}, +${data.length})`);
    data.copy(this.file, off);
    this.pages.fill(1, off / PAGE, (off + data.length) / PAGE);
    this.writes.push([off, data.length]);
  };
  /** every page of [start, end) written */
  has(start: number, end: number): boolean {
    return this.pages.subarray(Math.floor(start / PAGE), Math.ceil(end / PAGE)).every((p) => p === 1);
  }
  /** any page of [start, end) written */
  any(start: number, end: number): boolean {
    return this.pages.subarray(Math.floor(start / PAGE), Math.ceil(end / PAGE)).some((p) => p === 1);
  }
}

function logLines() {
  const lines: Array<{ level: number; msg: string; chunk?: number }> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { lines, log };
}

async function setup(opts: ChunkFetcherOptions = {}, seed = 'bad-chunk', compressor = Compressor.Zstd) {
  const b = await buildSyntheticBlob({ chunkSizes: SIZES, seed, compressor });
  const bad = b.chunks[BAD];
  const reader = new Reader(b, bad);
  const blob = await DataBlob.open(b.entry, memorySource(b.data, 'blob'));
  const { lines, log } = logLines();
  const content = new RemoteBlobContent(blob, reader, { hostKey: 'test', log, ...opts });
  return { b, bad, reader, content, cache: new CacheFile(b), lines };
}

test('subtractSpans: what is left of each range around the holes, in order, as a page bitmap says', () => {
  assert.deepEqual(subtractSpans([{ start: 0, end: 100 }], []), [{ start: 0, end: 100 }]);
  assert.deepEqual(subtractSpans([{ start: 0, end: 100 }], [{ start: 0, end: 100 }]), []);
  assert.deepEqual(subtractSpans([{ start: 10, end: 100 }], [{ start: 50, end: 60 }, { start: 0, end: 20 }, { start: 90, end: 200 }]),
    [{ start: 20, end: 50 }, { start: 60, end: 90 }]);
  // overlapping holes, ranges untouched by any
  assert.deepEqual(subtractSpans([{ start: 0, end: 10 }, { start: 20, end: 40 }], [{ start: 22, end: 30 }, { start: 25, end: 35 }]),
    [{ start: 0, end: 10 }, { start: 20, end: 22 }, { start: 35, end: 40 }]);
  let x = 7;
  const rnd = (n: number) => ((x = (x * 1103515245 + 12345) & 0x7fffffff) % n);
  for (let i = 0; i < 2000; i++) {
    const N = 64;
    const ranges: Array<{ start: number; end: number }> = [];
    for (let s = rnd(4); s < N; ) {
      const e = Math.min(N, s + 1 + rnd(12));
      ranges.push({ start: s, end: e });
      s = e + rnd(4);
    }
    const holes = Array.from({ length: rnd(5) }, () => {
      const s = rnd(N);
      return { start: s, end: s + 1 + rnd(10) };
    });
    const want = new Uint8Array(N + 16);
    for (const r of ranges) want.fill(1, r.start, r.end);
    for (const h of holes) want.fill(0, h.start, h.end);
    const got = new Uint8Array(N + 16);
    const out = subtractSpans(ranges, holes);
    for (const [k, r] of out.entries()) {
      assert.ok(r.start < r.end, 'no empty piece');
      if (k) assert.ok(out[k - 1].end <= r.start, 'in order, disjoint');
      got.fill(1, r.start, r.end);
    }
    assert.deepEqual(got, want);
  }
});

test('BadChunks: marked for a cool-down, once while cooling; a retry after it counts a failure more; heal forgets', () => {
  let now = 1000;
  const bc = new BadChunks(500, () => now);
  const c: ChunkInfo = { index: 4, uOffset: 8192, uSize: 100, cOffset: 50, cSize: 60, compressed: true, flags: 1 };
  assert.equal(bc.cooling(4), false);
  assert.deepEqual(bc.mark(c, 'digest mismatch').marked, true);
  assert.equal(bc.mark(c, 'again').marked, false, 'already cooling');
  assert.deepEqual(bc.list(), [{ index: 4, uOffset: 8192, uSize: 100, cOffset: 50, cSize: 60, failures: 1, since: 1000, until: 1500, error: 'digest mismatch' }]);
  now = 1499;
  assert.equal(bc.cooling(4), true);
  now = 1500;
  assert.equal(bc.cooling(4), false, 'cool-down over');
  assert.equal(bc.has(4), true, 'still listed until it verifies');
  const again = bc.mark(c, 'still bad');
  assert.deepEqual([again.marked, again.entry.failures, again.entry.since, again.entry.until], [true, 2, 1000, 2000]);
  assert.equal(bc.heal(4)?.failures, 2);
  assert.equal(bc.size, 0);
  assert.equal(bc.heal(4), undefined);
});

for (const [name, compressor] of [['zstd', Compressor.Zstd], ['none', Compressor.None]] as const) {
  test(`${name}: a READ over the whole blob in one piece writes every chunk but the bad one, whose pages stay a hole`, T, async () => {
    const { b, bad, reader, content, cache, lines } = await setup({ amplify: 0, maxPiece: 16 << 20 }, `whole-${name}`, compressor);
    const size = content.size;
    await assert.rejects(content.fill(0, size, cache.sink, cache.alloc), (e: Error) =>
      e instanceof BadChunkError && e instanceof IntegrityError && !fillRetryable(e) &&
      /chunk 3 failed verification 3 times; last: /.test(e.message));
    const hole = span(bad);
    assert.ok(cache.has(0, hole.start), 'everything before the bad chunk, the last partial page of its neighbour included');
    assert.ok(cache.has(hole.end, alignUp(size)), 'everything after it');
    assert.equal(cache.any(hole.start, hole.end), false, 'no page of the bad chunk');
    const before = b.chunks[BAD - 1];
    assert.notEqual((before.uOffset + before.uSize) % PAGE, 0, 'the neighbour ends inside a page');
    assert.equal(alignUp(before.uOffset + before.uSize), hole.start, 'right before the bad chunk');
    assert.equal(reader.getsOf(bad), 3, 'fetched with its neighbours, then refetched twice');
    assert.deepEqual(content.chunkHealth().badChunks.map((x) => [x.index, x.uOffset, x.uSize, x.failures]), [[BAD, bad.uOffset, bad.uSize, 1]]);
    assert.equal(content.progress().chunksPresent, b.chunks.length - 1);
    assert.equal(lines.filter((l) => l.msg.startsWith('chunk keeps failing verification') && l.level === 40).length, 1);
  });
}

test('a window that only widens over the bad chunk succeeds; the bad chunk is marked and then skipped by widening', T, async () => {
  const { b, bad, reader, content, cache } = await setup({ amplify: 1 << 20 });
  const before = b.chunks[BAD - 1];
  const tail = alignUp(before.uOffset + before.uSize) - PAGE;
  const widened: Promise<void>[] = [];
  // the neighbour's last page: widened over chunks 3.., which are written after the READ returns
  await content.fill(tail, PAGE, cache.sink, cache.alloc, undefined, { background: (w) => widened.push(w) });
  await Promise.all(widened);
  assert.ok(cache.has(before.uOffset, tail + PAGE));
  assert.ok(cache.has(span(b.chunks[BAD + 1]).start, span(b.chunks[BAD + 1]).end), 'the chunk after it, widened to, is written too');
  assert.equal(cache.any(span(bad).start, span(bad).end), false);
  assert.equal(content.chunkHealth().badChunks.length, 1);
  const gets = reader.getsOf(bad);
  assert.equal(gets, 3);
  // widening from chunk 0 stops before the bad chunk
  content.resetPresence();
  await content.fill(0, PAGE, cache.sink, cache.alloc);
  assert.equal(reader.getsOf(bad), gets);
});

test('in the cool-down: READs needing the bad chunk fail at once without a GET of it; others, and prefetch, never fetch it', T, async () => {
  const { b, bad, reader, content, cache, lines } = await setup({ amplify: 0, badChunkCooldownMs: 60_000 });
  await assert.rejects(content.fill(bad.uOffset, PAGE, cache.sink, cache.alloc), BadChunkError);
  assert.equal(reader.getsOf(bad), 3);
  const t0 = performance.now();
  for (let i = 0; i < 50; i++) {
    // a window from the neighbour's last page into the bad chunk: the neighbour's page is written every time
    const from = span(b.chunks[BAD - 1]).end - PAGE;
    await assert.rejects(content.fill(from, 2 * PAGE, cache.sink, cache.alloc), (e: Error) =>
      e instanceof BadChunkError && !fillRetryable(e) && /chunk 3 is marked bad .* until /.test(e.message));
    assert.ok(cache.has(from, from + PAGE));
  }
  const ms = performance.now() - t0;
  assert.ok(ms < 1000, `50 failing READs took ${ms} ms`);
  assert.equal(reader.getsOf(bad), 3, 'no refetch during the cool-down');
  assert.equal(content.stats.badChunkHits, 50);
  const p = await content.prefetch(cache.sink, cache.alloc).done;
  assert.equal(reader.getsOf(bad), 3, 'prefetch passed it by');
  assert.deepEqual([p.complete, p.failedRuns, p.chunksPresent], [false, 0, b.chunks.length - 1]);
  assert.deepEqual(lines.filter((l) => l.level >= 40).map((l) => [l.chunk, l.msg.split(':')[0]]), [[BAD, 'chunk keeps failing verification']], 'one warning');
  assert.equal(content.stats.badChunksMarked, 1);
});

test('16 concurrent READs of a bad chunk fetch it 3 times in all, and all fail', T, async () => {
  const { bad, reader, content, cache } = await setup({ amplify: 0 });
  const rs = await Promise.allSettled(Array.from({ length: 16 }, (_, i) =>
    content.fill(bad.uOffset + (i % 4) * PAGE, PAGE, cache.sink, cache.alloc)));
  assert.ok(rs.every((r) => r.status === 'rejected' && r.reason instanceof BadChunkError), JSON.stringify(rs.map((r) => r.status)));
  assert.ok(reader.getsOf(bad) <= 3, `${reader.getsOf(bad)} GETs of the bad chunk`);
  assert.equal(content.stats.badChunksMarked, 1);
});

test('after the cool-down one READ tries once: still bad → another cool-down; good bytes → healed, and it reads', T, async () => {
  const COOL = 150;
  const { bad, reader, content, cache, lines } = await setup({ amplify: 0, badChunkCooldownMs: COOL });
  await assert.rejects(content.fill(bad.uOffset, PAGE, cache.sink, cache.alloc), BadChunkError);
  assert.equal(reader.getsOf(bad), 3);
  await assert.rejects(content.fill(bad.uOffset, PAGE, cache.sink, cache.alloc), BadChunkError);
  assert.equal(reader.getsOf(bad), 3);
  await sleep(COOL + 20);
  await assert.rejects(content.fill(bad.uOffset, PAGE, cache.sink, cache.alloc), BadChunkError);
  assert.equal(reader.getsOf(bad), 4, 'one try after the cool-down');
  assert.equal(content.chunkHealth().badChunks[0].failures, 2);
  await assert.rejects(content.fill(bad.uOffset, PAGE, cache.sink, cache.alloc), BadChunkError);
  assert.equal(reader.getsOf(bad), 4, 'a new cool-down');
  assert.equal(lines.filter((l) => l.msg.startsWith('bad chunk still fails')).length, 1);

  reader.corrupt = false; // the registry serves good bytes now
  await sleep(COOL + 20);
  await content.fill(bad.uOffset, bad.uSize, cache.sink, cache.alloc);
  assert.ok(cache.has(span(bad).start, span(bad).end), 'healed: its bytes are written');
  assert.equal(reader.getsOf(bad), 5);
  assert.deepEqual(content.chunkHealth(), { badChunks: [], verifyFailures: 4, badChunksMarked: 2, badChunksHealed: 1 });
  assert.equal(lines.filter((l) => l.msg === 'bad chunk verified: healed' && l.chunk === BAD).length, 1);
});

class Device implements DeviceIO {
  readonly completed: number[] = [];
  constructor(readonly cache: CacheFile) {}
  command() {}
  async pwrite(_fd: number, buf: Buffer, off: number) {
    await this.cache.sink(off, buf);
  }
  readComplete(_fd: number, msgId: number) {
    this.completed.push(msgId);
  }
  close() {}
  alloc = (n: number) => Buffer.alloc(n);
}

test('daemon: a READ needing a bad chunk is answered without retries, its good pages written; the next one costs no GET', T, async () => {
  const { b, bad, reader, content, cache } = await setup({ amplify: 0 });
  const dev = new Device(cache);
  const d = new FscacheDaemon(dev, { resolve: async () => content }, pino({ level: 'silent' }),
    { readAttempts: 4, retryDelayMs: 50, readDeadlineMs: 5_000 });
  await d.handle(parseMessage(encodeMessage({ opcode: Opcode.Open, msgId: 1, objectId: 1, volumeKey: 'erofs,v', cookieKey: 'c', fd: 9 })));
  const read = (msgId: number, off: number, readLen: number) =>
    d.handle(parseMessage(encodeMessage({ opcode: Opcode.Read, msgId, objectId: 1, off, readLen })));
  // 128 KiB from inside the neighbour across the bad chunk
  const from = span(b.chunks[BAD - 1]).end - 64 * K;
  const t0 = performance.now();
  await read(2, from, 128 * K);
  assert.ok(cache.has(from, span(bad).start), 'the neighbour\'s pages are in the cache file');
  await read(3, from, 128 * K);
  const ms = performance.now() - t0;
  assert.deepEqual(dev.completed, [2, 3]);
  assert.equal(cache.any(span(bad).start, span(bad).end), false);
  assert.deepEqual([d.stats.reads, d.stats.readsFailed, d.stats.readRetries, d.stats.readsTimedOut], [2, 2, 0, 0]);
  assert.equal(reader.getsOf(bad), 3);
  assert.ok(ms < 1000, `two READs took ${ms} ms`);
});

test('status: a blob lists its bad chunks (from the worker\'s chunk health); none, no list', T, async () => {
  const { bad, content, cache } = await setup({ amplify: 0 });
  const obj = () => ({ volume: 'v', cookie: 'blob1', size: content.size, present: content.progress(), chunks: content.chunkHealth() });
  assert.equal(blobsOf('v', 'fsid', ['blob1'], [obj()])[0].badChunks, undefined);
  await assert.rejects(content.fill(bad.uOffset, PAGE, cache.sink, cache.alloc), BadChunkError);
  const [b] = blobsOf('v', 'fsid', ['blob1'], [obj()]);
  assert.deepEqual(b.badChunks?.map((c) => [c.index, c.uOffset, c.uSize, c.failures]), [[BAD, bad.uOffset, bad.uSize, 1]]);
  assert.ok(b.badChunks![0].until > Date.now() + 50_000, 'a 60 s cool-down by default');
  // through JSON, as the worker's status reply travels
  assert.deepEqual(JSON.parse(JSON.stringify(obj().chunks)).badChunks[0].index, BAD);
});

test('config: registry.bad_chunk_cooldown_ms defaults to 60 s, has a range, and reaches the workers\' settings', () => {
  assert.equal(parseConfig('').registry.bad_chunk_cooldown_ms, 60_000);
  const c = parseConfig('[registry]\nbad_chunk_cooldown_ms = 15000\n');
  assert.equal(registrySettings(c).badChunkCooldownMs, 15_000);
  for (const bad of ['0', '999', '"60s"', '1.5', '86400001']) {
    assert.throws(() => parseConfig(`[registry]\nbad_chunk_cooldown_ms = ${bad}\n`), (e: Error) => e instanceof ConfigError && /registry\.bad_chunk_cooldown_ms/.test(e.message), bad);
  }
});
