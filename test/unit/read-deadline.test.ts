// One deadline per READ: the daemon answers at the deadline whatever the
// content does; the chunk fetcher stops waiting and refetching then; a GET
// shared with another waiter survives one waiter's deadline, and a GET that
// every waiter gave up on is aborted so it frees its scheduler slot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { RemoteBlobContent } from '../../content/remote/chunk-fetcher';
import { FetchScheduler } from '../../content/remote/scheduler';
import type { RangeReader } from '../../content/remote/source';
import { SharedFetch, Waiter } from '../../content/remote/waiters';
import { BlobContent } from '../../content/content';
import { DataBlob } from '../../image/blob/datablob';
import { Compressor } from '../../image/rafs/bootstrap';
import { AbortedError } from '../../registry/errors';
import { FscacheDaemon, DeviceIO } from '../../worker/daemon';
import { encodeMessage, parseMessage, Opcode } from '../../worker/protocol';
import { buildSyntheticBlob, SyntheticBlob } from '../support/testblob';
import { asParts, memorySource } from '../support/fixtures';

const T = { timeout: 30_000 };
const PAGE = 4096;
const K = 1024;
const log = pino({ level: 'silent' });

interface Call {
  off: number;
  len: number;
  at: number;
  abortedAt?: number;
}

/** A ranged reader that answers after delayMs, never for ranges `hang` picks, and stops when its signal aborts. */
class Reader implements RangeReader {
  readonly name = 'deadline-reader';
  readonly calls: Call[] = [];
  delayMs = 0;
  hang: (off: number) => boolean = () => false;
  corrupt = false;
  constructor(readonly data: Buffer) {}
  get size() {
    return this.data.length;
  }
  readRange(off: number, len: number, signal?: AbortSignal): Promise<Buffer[]> {
    const call: Call = { off, len, at: performance.now() };
    this.calls.push(call);
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => {
        call.abortedAt = performance.now();
        clearTimeout(timer);
        reject(new AbortedError('test read'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (this.hang(off)) return;
      timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        const out = Buffer.from(this.data.subarray(off, off + len));
        if (this.corrupt) out[Math.floor(len / 2)] ^= 1;
        resolve(asParts(out));
      }, this.delayMs);
    });
  }
}

/** Collects what a sink is given, checking every byte. */
function sinkFor(b: SyntheticBlob) {
  const writes: Array<[number, number]> = [];
  return {
    writes,
    alloc: (n: number) => Buffer.alloc(n),
    sink: async (off: number, data: Buffer) => {
      assert.ok(data.equals(b.uncompressed.subarray(off, off + data.length)), `wrong bytes at ${off}`);
      writes.push([off, data.length]);
    },
  };
}

async function setup(b: SyntheticBlob, scheduler = new FetchScheduler()) {
  const reader = new Reader(b.data);
  const blob = await DataBlob.open(b.entry, memorySource(b.data, 'blob'));
  const content = new RemoteBlobContent(blob, reader, { hostKey: 'test', amplify: 0, scheduler });
  return { reader, content };
}

const elapsed = (t0: number) => performance.now() - t0;

/** A READ's deadline signal; unlike AbortSignal.timeout's, its timer keeps the process alive (as the daemon's does). */
function deadline(ms: number): AbortSignal {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), ms);
  return ac.signal;
}

test('Waiter and SharedFetch: a fetch is aborted only when its last waiter leaves, and never once settled', () => {
  const a = new AbortController();
  const first = new Waiter(a.signal, 'first');
  const second = new Waiter(undefined, 'second');
  const f = new SharedFetch('GET');
  f.join(first);
  f.join(second);
  a.abort();
  assert.equal(f.aborted, false, 'the second still waits');
  second.end();
  assert.equal(f.aborted, true, 'nobody waits');
  const settled = new SharedFetch('GET');
  const w = new Waiter(undefined, 'w');
  settled.join(w);
  settled.settle();
  w.end();
  assert.equal(settled.aborted, false);
  const late = new SharedFetch('GET');
  late.join(first); // joined by a waiter that already gave up, and nobody else
  assert.equal(late.aborted, true);
});

test('a GET joined by two fills survives the first one\'s deadline and serves the second', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(4).fill(64 * K), seed: 'joined' });
  const { reader, content } = await setup(b);
  reader.delayMs = 300;
  const early = sinkFor(b);
  const late = sinkFor(b);
  const t0 = performance.now();
  const first = content.fill(0, PAGE, early.sink, early.alloc, deadline(50));
  const second = content.fill(0, PAGE, late.sink, late.alloc, deadline(5_000));
  await assert.rejects(first, AbortedError);
  assert.ok(elapsed(t0) < 250, `the first fill gave up after ${elapsed(t0)} ms`);
  await second;
  assert.equal(reader.calls.length, 1, 'one GET for both');
  assert.equal(reader.calls[0].abortedAt, undefined, 'not aborted by the first deadline');
  assert.deepEqual(early.writes, []);
  assert.deepEqual(late.writes, [[0, 64 * K]]);
  // without a deadline a fill is a waiter until it ends
  reader.delayMs = 200;
  const noDeadline = sinkFor(b);
  const a = content.fill(64 * K, PAGE, early.sink, early.alloc, deadline(30));
  const c = content.fill(64 * K, PAGE, noDeadline.sink, noDeadline.alloc);
  await assert.rejects(a, AbortedError);
  await c;
  assert.deepEqual(noDeadline.writes, [[64 * K, 64 * K]]);
  assert.equal(reader.calls.length, 2);
  assert.equal(reader.calls[1].abortedAt, undefined);
});

test('a GET every waiter gave up on is aborted: its slot serves the next READ, which fetches that range anew', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(4).fill(64 * K), seed: 'abandoned' });
  // one slot per host: a hung GET that kept it would stall every later READ
  const { reader, content } = await setup(b, new FetchScheduler({ concurrencyPerHost: 1, reservedForDemand: 0 }));
  const bad = b.chunks[1];
  let hanging = true;
  reader.hang = (off) => hanging && off === bad.cOffset;
  const s = sinkFor(b);
  const t0 = performance.now();
  const first = content.fill(bad.uOffset, PAGE, s.sink, s.alloc, deadline(60));
  const second = content.fill(bad.uOffset, PAGE, s.sink, s.alloc, deadline(150));
  await assert.rejects(first, AbortedError);
  assert.equal(reader.calls[0].abortedAt, undefined, 'the second READ still waits for the GET');
  await assert.rejects(second, AbortedError);
  const gaveUp = elapsed(t0);
  assert.ok(gaveUp >= 140 && gaveUp < 400, `the second fill gave up after ${gaveUp} ms`);
  assert.equal(reader.calls.length, 1);
  const abortedAt = reader.calls[0].abortedAt;
  assert.ok(abortedAt !== undefined && abortedAt - t0 < 400, 'the GET was aborted when its last waiter gave up');
  // the slot is free again
  const t1 = performance.now();
  await content.fill(b.chunks[2].uOffset, PAGE, s.sink, s.alloc, deadline(1_000));
  assert.ok(elapsed(t1) < 500, `the next READ took ${elapsed(t1)} ms`);
  // the abandoned GET is not joined again: the range is fetched anew
  hanging = false;
  await content.fill(bad.uOffset, PAGE, s.sink, s.alloc, deadline(1_000));
  assert.equal(reader.calls.length, 3);
  assert.deepEqual(s.writes.map(([o]) => o), [b.chunks[2].uOffset, bad.uOffset]);
});

test('a READ joining a prefetch GET does not abort it at its deadline; cancelling the prefetch does', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(4).fill(64 * K), seed: 'prefetch-deadline' });
  const scheduler = new FetchScheduler({ concurrencyPerHost: 2, reservedForDemand: 1, demandQuietMs: 0 });
  const blob = await DataBlob.open(b.entry, memorySource(b.data, 'blob'));
  const reader = new Reader(b.data);
  const content = new RemoteBlobContent(blob, reader, { hostKey: 'test', amplify: 0, maxMerge: 64 * K, scheduler });
  reader.hang = (off) => off === b.chunks[0].cOffset;
  const s = sinkFor(b);
  const pf = content.prefetch(s.sink, s.alloc);
  await sleep(20);
  assert.equal(reader.calls.length, 1, 'prefetch is fetching chunk 0');
  await assert.rejects(content.fill(0, PAGE, s.sink, s.alloc, deadline(50)), AbortedError);
  await sleep(30);
  assert.equal(reader.calls[0].abortedAt, undefined, 'prefetch still wants it');
  const t0 = performance.now();
  pf.cancel();
  const res = await pf.done;
  assert.ok(res.cancelled && res.failedRuns === 0, JSON.stringify(res));
  assert.ok(reader.calls[0].abortedAt !== undefined && reader.calls[0].abortedAt - t0 < 50, 'cancel aborted the GET nobody else waits for');
});

test('verification refetches stop at the deadline', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: [64 * K, 64 * K], seed: 'refetch', compressor: Compressor.None });
  const reader = new Reader(b.data);
  const blob = await DataBlob.open(b.entry, memorySource(b.data, 'blob'));
  const content = new RemoteBlobContent(blob, reader, { hostKey: 'test', amplify: 0, verifyAttempts: 1000 });
  reader.delayMs = 20;
  reader.corrupt = true;
  const s = sinkFor(b);
  const t0 = performance.now();
  await assert.rejects(content.fill(0, PAGE, s.sink, s.alloc, deadline(150)), AbortedError);
  const ms = elapsed(t0);
  assert.ok(ms >= 140 && ms < 300, `gave up after ${ms} ms`);
  const n = reader.calls.length;
  assert.ok(n >= 3 && n < 20, `${n} GETs`);
  await sleep(100);
  assert.equal(reader.calls.length, n, 'no refetch after the deadline');
  assert.ok(content.stats.verifyFailures >= 2);
  assert.deepEqual(s.writes, []);
});

class Device implements DeviceIO {
  completed: number[] = [];
  written: Array<[number, number]> = [];
  command() {}
  async pwrite(_fd: number, buf: Buffer, off: number) {
    this.written.push([off, buf.length]);
  }
  readComplete(_fd: number, msgId: number) {
    this.completed.push(msgId);
  }
  close() {}
  alloc = (n: number) => Buffer.alloc(n);
}

const openMsg = (msgId: number) =>
  parseMessage(encodeMessage({ opcode: Opcode.Open, msgId, objectId: 1, volumeKey: 'erofs,v', cookieKey: 'c', fd: 9 }));
const readMsg = (msgId: number) => parseMessage(encodeMessage({ opcode: Opcode.Read, msgId, objectId: 1, off: 0, readLen: PAGE }));

async function daemonWith(content: BlobContent, opts: { readAttempts: number; retryDelayMs: number; readDeadlineMs?: number }) {
  const dev = new Device();
  const d = new FscacheDaemon(dev, { resolve: async () => content }, log, opts);
  await d.handle(openMsg(1));
  return { dev, d };
}

test('daemon: a fill that never ends (and ignores its signal) is answered without data at the deadline, and counted', T, async () => {
  let seen: AbortSignal | undefined;
  const stuck: BlobContent = {
    name: 'stuck',
    size: 8192,
    fill: (_o, _l, _s, _a, signal) => {
      seen = signal;
      return new Promise(() => undefined);
    },
  };
  const { dev, d } = await daemonWith(stuck, { readAttempts: 4, retryDelayMs: 10, readDeadlineMs: 200 });
  const t0 = performance.now();
  await d.handle(readMsg(2));
  const ms = elapsed(t0);
  assert.ok(ms >= 195 && ms < 300, `answered after ${ms} ms`);
  assert.deepEqual(dev.completed, [2]);
  assert.deepEqual(dev.written, []);
  assert.equal(seen?.aborted, true, 'the fill was given the deadline');
  assert.deepEqual([d.stats.reads, d.stats.readsFailed, d.stats.readsTimedOut, d.stats.readRetries], [1, 1, 1, 0]);
  assert.equal(d.pending, 0);
});

test('daemon: attempts stop at the deadline; a READ that fails sooner is failed, not timed out', T, async () => {
  let calls = 0;
  const failing: BlobContent = {
    name: 'failing',
    size: 8192,
    fill: async () => {
      calls++;
      throw new Error('registry said 503');
    },
  };
  // 40, 80, 160, 320 ms between attempts: the 400 ms deadline falls in the fourth wait
  const { dev, d } = await daemonWith(failing, { readAttempts: 1000, retryDelayMs: 40, readDeadlineMs: 400 });
  const t0 = performance.now();
  await d.handle(readMsg(2));
  const ms = elapsed(t0);
  assert.ok(ms >= 395 && ms < 500, `answered after ${ms} ms`);
  assert.equal(calls, 4);
  await sleep(400);
  assert.equal(calls, 4, 'no attempt after the deadline');
  assert.deepEqual(dev.completed, [2]);
  assert.deepEqual([d.stats.readsFailed, d.stats.readsTimedOut, d.stats.readRetries], [1, 1, 3]);

  const quick = await daemonWith(failing, { readAttempts: 2, retryDelayMs: 1, readDeadlineMs: 5_000 });
  await quick.d.handle(readMsg(3));
  assert.deepEqual(quick.dev.completed, [3]);
  assert.deepEqual([quick.d.stats.readsFailed, quick.d.stats.readsTimedOut], [1, 0]);
});
