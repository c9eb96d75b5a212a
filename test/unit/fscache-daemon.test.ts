// The fscache daemon's request handling, against a recording fake device and
// real content sources (local files, the nydus fixture blob).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import pino from 'pino';
import { FscacheDaemon, DeviceIO } from '../../worker/daemon';
import { encodeMessage, parseMessage, Opcode, ProtocolError, cmd } from '../../worker/protocol';
import { BlobContent, ContentResolver, UnknownBlobError } from '../../content/content';
import { FlatFileContent } from '../../content/flatfile';
import { NydusBlobContent } from '../../content/nydusblob';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { DataBlob } from '../../image/blob/datablob';
import { FileSource } from '../../image/blob/source';
import { FIXTURE_BLOB_ID, nydusFixtures } from '../support/fixtures';

const log = pino({ level: 'silent' });

/** Records what the daemon does to the device, and keeps written bytes per fd. */
class FakeDevice implements DeviceIO {
  commands: string[] = [];
  completed: [number, number][] = [];
  closed: number[] = [];
  files = new Map<number, Buffer>();
  refuse = new Set<string>();
  command(line: string) {
    if ([...this.refuse].some((p) => line.startsWith(p))) throw Object.assign(new Error('EINVAL'), { code: 'EINVAL' });
    this.commands.push(line);
  }
  async pwrite(fd: number, buf: Buffer, off: number) {
    assert.equal(off % 4096, 0, 'writes start page-aligned');
    assert.equal(buf.length % 4096, 0, 'writes are whole pages');
    let f = this.files.get(fd) ?? Buffer.alloc(0);
    if (f.length < off + buf.length) f = Buffer.concat([f, Buffer.alloc(off + buf.length - f.length)]);
    buf.copy(f, off);
    this.files.set(fd, f);
  }
  readComplete(fd: number, msgId: number) {
    this.completed.push([fd, msgId]);
  }
  close(fd: number) {
    this.closed.push(fd);
  }
  alloc = (n: number) => Buffer.alloc(n);
}

const open = (msgId: number, objectId: number, volume: string, cookie: string, fd: number) =>
  parseMessage(encodeMessage({ opcode: Opcode.Open, msgId, objectId, volumeKey: `erofs,${volume}`, cookieKey: cookie, fd }));
const read = (msgId: number, objectId: number, off: number, readLen: number) =>
  parseMessage(encodeMessage({ opcode: Opcode.Read, msgId, objectId, off, readLen }));
const close = (msgId: number, objectId: number) => parseMessage(encodeMessage({ opcode: Opcode.Close, msgId, objectId }));

function tmpFile(data: Buffer): string {
  const p = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-fsd-')), 'f');
  fs.writeFileSync(p, data);
  return p;
}

test('protocol: messages round-trip; malformed ones are ProtocolErrors', () => {
  const o = open(7, 3, 'dom', 'fsid1', 42);
  assert.deepEqual(o, { msgId: 7, opcode: Opcode.Open, len: o.len, objectId: 3, volumeKey: 'erofs,dom', cookieKey: 'fsid1', fd: 42, flags: 0 });
  assert.deepEqual(read(8, 3, 4096, 65536), { msgId: 8, opcode: Opcode.Read, len: 32, objectId: 3, off: 4096, readLen: 65536 });
  assert.equal(cmd.copen(7, 36864), 'copen 7,36864');
  assert.equal(cmd.copen(7, -2), 'copen 7,-2');
  const good = encodeMessage({ opcode: Opcode.Open, msgId: 1, objectId: 1, volumeKey: 'erofs,x', cookieKey: 'y', fd: 5 });
  const bad: Buffer[] = [good.subarray(0, 10), good.subarray(0, 20), Buffer.concat([good, Buffer.alloc(1)])];
  const lying = Buffer.from(good);
  lying.writeUInt32LE(1000, 16); // volume_key_size beyond the message
  bad.push(lying);
  const unknownOp = Buffer.from(good);
  unknownOp.writeUInt32LE(9, 4);
  bad.push(unknownOp);
  const shortRead = Buffer.from(encodeMessage({ opcode: Opcode.Read, msgId: 1, objectId: 1, off: 0, readLen: 1 }).subarray(0, 24));
  shortRead.writeUInt32LE(24, 8);
  bad.push(shortRead);
  for (const b of bad) assert.throws(() => parseMessage(b), ProtocolError);
});

test('protocol fuzz: random and mutated messages never throw anything but ProtocolError', () => {
  const seeds = [
    encodeMessage({ opcode: Opcode.Open, msgId: 1, objectId: 1, volumeKey: 'erofs,x', cookieKey: 'a'.repeat(64), fd: 5 }),
    encodeMessage({ opcode: Opcode.Read, msgId: 2, objectId: 1, off: 1 << 20, readLen: 4096 }),
    encodeMessage({ opcode: Opcode.Close, msgId: 3, objectId: 1 }),
  ];
  for (let i = 0; i < 20000; i++) {
    const s = seeds[i % seeds.length];
    const b = i % 7 === 0 ? crypto.randomBytes(i % 64) : Buffer.from(s.subarray(0, Math.floor(Math.random() * (s.length + 1))));
    for (let k = 0; k < 3 && b.length; k++) b[Math.floor(Math.random() * b.length)] = Math.floor(Math.random() * 256);
    try {
      parseMessage(b);
    } catch (e) {
      assert.ok(e instanceof ProtocolError, String(e));
    }
  }
});

test('OPEN, READ, CLOSE of a flat file: bytes land at their offsets, copen carries the size', async () => {
  const data = crypto.randomBytes(3 * 4096 + 100);
  const file = await FlatFileContent.open(tmpFile(data));
  const resolver: ContentResolver = { resolve: async (v, c) => (v === 'img' && c === 'img' ? file : Promise.reject(new UnknownBlobError(v, c))) };
  const dev = new FakeDevice();
  const d = new FscacheDaemon(dev, resolver, log);
  await d.handle(open(1, 10, 'img', 'img', 100));
  assert.deepEqual(dev.commands, [`copen 1,${data.length}`]);
  await Promise.all([d.handle(read(2, 10, 0, 4096)), d.handle(read(3, 10, 8192, 8192))]);
  assert.deepEqual(dev.completed.sort(), [[100, 2], [100, 3]]);
  const got = dev.files.get(100)!;
  assert.ok(got.subarray(0, 4096).equals(data.subarray(0, 4096)));
  assert.ok(got.subarray(8192, data.length).equals(data.subarray(8192)));
  assert.ok(got.subarray(data.length, 4 * 4096).equals(Buffer.alloc(4 * 4096 - data.length)), 'the tail page is zero-padded');
  await d.handle(close(4, 10));
  assert.deepEqual(dev.closed, [100]);
  assert.equal(d.objects.size, 0);
});

test('CLOSE while a write is under way: the fd is closed after it ends, never before; writes and READ_COMPLETEs after CLOSE are dropped', async () => {
  const data = crypto.randomBytes(2 * 4096);
  let openGate!: () => void;
  const gate = new Promise<void>((r) => (openGate = r));
  let fillGate!: () => void;
  const filling = new Promise<void>((r) => (fillGate = r));
  // page 1 is filled only once the test says so: its write comes after CLOSE
  const content: BlobContent = {
    name: 'slow', size: data.length,
    fill: async (off, _len, sink, alloc) => {
      if (off === 4096) await filling;
      const b = alloc(4096);
      data.copy(b, 0, off, off + 4096);
      await sink(off, b);
    },
  };
  const dev = new FakeDevice();
  const writes: number[] = [];
  const write = dev.pwrite.bind(dev);
  dev.pwrite = async (fd, buf, off) => {
    writes.push(off);
    await gate; // a write stuck on the threadpool
    await write(fd, buf, off);
  };
  const d = new FscacheDaemon(dev, { resolve: async () => content }, log);
  await d.handle(open(1, 10, 'img', 'img', 100));
  const r0 = d.handle(read(2, 10, 0, 4096));
  const r1 = d.handle(read(3, 10, 4096, 4096));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(writes, [0], 'page 0 is being written');
  await d.handle(close(4, 10));
  assert.deepEqual(dev.closed, [], 'the fd stays open while a write to it is under way');
  openGate();
  await r0;
  assert.deepEqual(dev.closed, [100], 'closed once the write ended');
  fillGate();
  await r1;
  assert.deepEqual(writes, [0], 'no write after CLOSE');
  assert.deepEqual(dev.completed, [], 'no READ_COMPLETE on a closed object');
  assert.deepEqual(dev.closed, [100], 'closed once');
});

test('the nydus fixture blob through the daemon: READ(0, 4096) writes the whole verified chunk 0', async () => {
  const fx = nydusFixtures();
  const bs = new Bootstrap(fx.bootstrap());
  const blob = await DataBlob.open(bs.blobs[0], await FileSource.open(path.join(fx.blobsDir, FIXTURE_BLOB_ID)));
  const content = new NydusBlobContent(blob);
  const dev = new FakeDevice();
  const d = new FscacheDaemon(dev, { resolve: async () => content }, log);
  await d.handle(open(1, 1, 'fs1', FIXTURE_BLOB_ID, 7));
  assert.deepEqual(dev.commands, ['copen 1,36864']);
  await d.handle(read(2, 1, 0, 4096));
  const f = dev.files.get(7)!;
  assert.equal(f.length, 20480, 'chunk 0 spans [0, 16931) rounded up to 20480');
  const chunk0 = await blob.readChunk(blob.chunks[0]);
  assert.ok(f.subarray(0, 16931).equals(chunk0));
  await d.handle(read(3, 1, 0, 36864));
  const all = dev.files.get(7)!;
  assert.ok(all.subarray(20480, 20480 + 13400).equals(await blob.readChunk(blob.chunks[1])));
  assert.equal(d.stats.readsFailed, 0);
});

test('OPEN of an unknown cookie is refused with -ENOENT and its fd closed', async () => {
  const dev = new FakeDevice();
  const d = new FscacheDaemon(dev, { resolve: async (v, c) => Promise.reject(new UnknownBlobError(v, c)) }, log);
  await d.handle(open(5, 1, 'vol', 'nope', 33));
  assert.deepEqual(dev.commands, ['copen 5,-2']);
  assert.deepEqual(dev.closed, [33]);
  assert.equal(d.objects.size, 0);
  const d2 = new FscacheDaemon(dev, { resolve: async () => Promise.reject(new Error('disk on fire')) }, log);
  await d2.handle(open(6, 2, 'vol', 'x', 34));
  assert.equal(dev.commands.at(-1), 'copen 6,-5', 'other failures are -EIO');
});

test('a READ past the object size completes without data (the reader gets EIO)', async () => {
  const file = await FlatFileContent.open(tmpFile(Buffer.alloc(8192, 1)));
  const dev = new FakeDevice();
  const d = new FscacheDaemon(dev, { resolve: async () => file }, log);
  await d.handle(open(1, 1, 'v', 'c', 9));
  await d.handle(read(2, 1, 1 << 30, 4096));
  assert.deepEqual(dev.completed, [[9, 2]]);
  assert.equal(dev.files.get(9), undefined);
  assert.equal(d.stats.readsFailed, 1);
});

test('a failing source: retried, then failed with EIO; the daemon keeps serving', async () => {
  let calls = 0;
  const flaky: BlobContent = {
    name: 'flaky',
    size: 8192,
    fill: async () => {
      calls++;
      throw new Error('registry said 503');
    },
  };
  const dev = new FakeDevice();
  const d = new FscacheDaemon(dev, { resolve: async () => flaky }, log, { readAttempts: 3, retryDelayMs: 1 });
  await d.handle(open(1, 1, 'v', 'c', 9));
  await d.handle(read(2, 1, 0, 4096));
  assert.equal(calls, 3, 'three attempts');
  assert.equal(d.stats.readRetries, 2);
  assert.deepEqual(dev.completed, [[9, 2]], 'completed, without data');
  // a source that recovers on the second attempt serves the read
  let n = 0;
  const recovering: BlobContent = {
    name: 'recovering',
    size: 4096,
    fill: async (off, len, sink, alloc) => {
      if (n++ === 0) throw new Error('reset');
      await sink(0, alloc(4096).fill(7));
    },
  };
  const d2 = new FscacheDaemon(dev, { resolve: async () => recovering }, log, { readAttempts: 3, retryDelayMs: 1 });
  await d2.handle(open(3, 2, 'v', 'c', 11));
  await d2.handle(read(4, 2, 0, 4096));
  assert.ok(dev.files.get(11)!.equals(Buffer.alloc(4096, 7)));
  assert.equal(d2.stats.readsFailed, 0);
});

test('a refused copen drops the object; READ of an unknown object is ignored, not fatal', async () => {
  const file = await FlatFileContent.open(tmpFile(Buffer.alloc(4096)));
  const dev = new FakeDevice();
  dev.refuse.add('copen');
  const d = new FscacheDaemon(dev, { resolve: async () => file }, log);
  await d.handle(open(1, 1, 'v', 'c', 9));
  assert.equal(d.objects.size, 0);
  assert.deepEqual(dev.closed, [9]);
  await d.handle(read(2, 99, 0, 4096));
  assert.deepEqual(dev.completed, []);
});

test('OPEN takes presence from the cache file\'s data extents (a new, empty file resets it) before prefetch starts; a failing lseek costs nothing else', async () => {
  const events: string[] = [];
  const content: BlobContent = {
    name: 'remote',
    size: 10 << 20,
    fill: async () => {},
    markPresent: (off, len) => {
      events.push(`present ${off}+${len}`);
      return 1;
    },
    resetPresence: () => events.push('reset'),
    prefetch: () => {
      events.push('prefetch');
      return { cancel() {}, done: Promise.resolve() };
    },
  };
  class ExtentsDevice extends FakeDevice {
    extents = new Map<number, [number, number][]>();
    dataExtents(fd: number, end: number): [number, number][] {
      events.push(`lseek ${fd} <${end}`);
      const e = this.extents.get(fd);
      if (!e) throw Object.assign(new Error('EIO: i/o error, lseek'), { code: 'EIO' });
      return e;
    }
  }
  const dev = new ExtentsDevice();
  dev.extents.set(7, [[0, 1 << 20], [3 << 20, 2 << 20]]);
  const d = new FscacheDaemon(dev, { resolve: async () => content }, log, { readAttempts: 1, retryDelayMs: 1, prefetch: true });
  await d.handle(open(1, 1, 'fs1', 'blob', 7));
  assert.deepEqual(dev.commands, ['copen 1,10485760']);
  assert.deepEqual(events, ['lseek 7 <10485760', 'reset', 'present 0+1048576', `present ${3 << 20}+${2 << 20}`, 'prefetch']);
  events.length = 0;
  await d.handle(open(2, 2, 'fs1', 'blob', 8)); // no extents for fd 8: lseek fails
  assert.deepEqual(dev.commands, ['copen 1,10485760', 'copen 2,10485760']);
  assert.deepEqual(events, ['lseek 8 <10485760', 'prefetch'], 'presence kept as it was; the object is served and prefetched anyway');
});

test('right after copen lseek fails with ENOBUFS (the kernel attaches the cache file after OPEN): retried, or done by the first READ; prefetch waits for it', async () => {
  const events: string[] = [];
  const content: BlobContent = {
    name: 'remote',
    size: 8 << 20,
    fill: async () => void events.push('fill'),
    markPresent: (off, len) => {
      events.push(`present ${off}+${len}`);
      return 1;
    },
    resetPresence: () => events.push('reset'),
    prefetch: () => {
      events.push('prefetch');
      return { cancel() {}, done: Promise.resolve() };
    },
  };
  class LateFileDevice extends FakeDevice {
    attached = new Set<number>();
    dataExtents(fd: number): [number, number][] {
      events.push(`lseek ${fd}`);
      if (!this.attached.has(fd)) throw Object.assign(new Error('ENOBUFS: no buffer space available, lseek'), { code: 'ENOBUFS' });
      return [[0, 1 << 20]];
    }
  }
  const dev = new LateFileDevice();
  const d = new FscacheDaemon(dev, { resolve: async () => content }, log, { readAttempts: 1, retryDelayMs: 1, prefetch: true });
  // Attached 30 ms after copen: a timed retry finds it.
  await d.handle(open(1, 1, 'fs1', 'blob', 7));
  assert.deepEqual(events, ['lseek 7']);
  setTimeout(() => dev.attached.add(7), 30);
  const t0 = Date.now();
  while (!events.includes('prefetch') && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(events.filter((e) => !e.startsWith('lseek')), ['reset', 'present 0+1048576', 'prefetch']);
  assert.ok(events.filter((e) => e === 'lseek 7').length >= 2, 'retried');
  // A READ before any retry found the file: the READ reads the extents first (the file is attached by then).
  events.length = 0;
  await d.handle(open(2, 2, 'fs1', 'blob', 8));
  dev.attached.add(8);
  await d.handle(read(3, 2, 0, 4096));
  assert.deepEqual(events.slice(0, 5), ['lseek 8', 'lseek 8', 'reset', 'present 0+1048576', 'prefetch']);
  assert.ok(events.includes('fill'));
  // Never attached: given up after about 2.5 s, prefetch starts anyway.
  events.length = 0;
  await d.handle(open(4, 3, 'fs1', 'blob', 9));
  const t1 = Date.now();
  while (!events.includes('prefetch') && Date.now() - t1 < 5000) await new Promise((r) => setTimeout(r, 20));
  assert.ok(events.includes('prefetch'));
  assert.equal(events.filter((e) => e === 'lseek 9').length, 10, 'the first try and 9 retries');
  assert.ok(!events.includes('reset'), 'presence kept as it was');
});

test('prefetch and the cache bound: a blob whose missing bytes exceed the budget is not prefetched; a lower budget stops one under way; reads go on', async () => {
  const events: string[] = [];
  const blob = (name: string, missing: number): BlobContent => ({
    name,
    size: 8 << 20,
    fill: async (off, len, sink, alloc) => {
      events.push(`fill ${name}`);
      await sink(off - (off % 4096), alloc(4096));
    },
    progress: () => ({ bytes: 8 << 20, bytesPresent: (8 << 20) - missing, fetchedBytes: 0 }),
    prefetch: () => {
      events.push(`prefetch ${name}`);
      return { cancel: () => events.push(`cancel ${name}`), done: Promise.resolve() };
    },
  });
  const contents: Record<string, BlobContent> = { small: blob('small', 1 << 20), big: blob('big', 6 << 20) };
  const dev = new FakeDevice();
  const d = new FscacheDaemon(dev, { resolve: async (_v, cookie) => contents[cookie] }, log, { readAttempts: 1, retryDelayMs: 1, prefetch: true });
  d.setPrefetchBudget(4 << 20);
  await d.handle(open(1, 1, 'v', 'small', 7));
  await d.handle(open(2, 2, 'v', 'big', 8));
  assert.deepEqual(events, ['prefetch small'], 'only the blob that fits is prefetched');
  assert.equal(d.prefetchesStopped, 1);
  await d.handle(read(3, 2, 0, 4096));
  assert.deepEqual(dev.completed.at(-1), [8, 3], 'the big blob is still read on demand');
  assert.ok(events.includes('fill big'));
  d.setPrefetchBudget(512 << 10); // the cache filled up meanwhile
  assert.ok(events.includes('cancel small'), 'the prefetch under way stops');
  assert.equal(d.prefetchesStopped, 2);
  d.setPrefetchBudget(64 << 20);
  await d.handle(open(4, 3, 'v', 'big', 9));
  assert.equal(events.filter((e) => e === 'prefetch big').length, 1, 'a new object of the blob prefetches once room is back');
});

test('readahead: a sequential stream of READs fetches windows ahead through the object\'s sink, doubling; random READs and a recorded start do not; after CLOSE its writes are refused', async () => {
  const M = 1 << 20;
  const aheads: Array<[string, number, number]> = [];
  const gates: Array<() => void> = [];
  const blob = (name: string): BlobContent => ({
    name,
    size: 256 * M,
    fill: async (off, len, sink, alloc) => sink(off - (off % 4096), alloc(4096)),
    fillAhead: async (off, len, sink, alloc) => {
      aheads.push([name, off, len]);
      await new Promise<void>((r) => gates.push(r));
      await sink(off, alloc(4096));
      return 1;
    },
  });
  const contents: Record<string, BlobContent> = { seq: blob('seq'), rnd: blob('rnd'), rec: blob('rec') };
  const dev = new FakeDevice();
  const d = new FscacheDaemon(dev, { resolve: async (_v, cookie) => contents[cookie] }, log, {
    readAttempts: 1, retryDelayMs: 1,
    readahead: { initial: 2 * M, max: 8 * M, streams: 4, gap: 2 * M },
    recorder: { access: () => {}, learning: (_v, cookie) => cookie === 'rec' },
  });
  await d.handle(open(1, 1, 'v', 'seq', 7));
  await d.handle(open(2, 2, 'v', 'rnd', 8));
  await d.handle(open(3, 3, 'v', 'rec', 9));
  let msg = 10;
  // the kernel's READs of a streaming reader: each where the bytes filled so far end
  for (const off of [0, 1, 3, 7, 15]) await d.handle(read(msg++, 1, off * M, 128 * 1024));
  for (const off of [100, 7, 50, 200, 3]) await d.handle(read(msg++, 2, off * M, 128 * 1024));
  for (const off of [0, 1, 3, 7, 15]) await d.handle(read(msg++, 3, off * M, 128 * 1024));
  const K128 = 128 * 1024;
  assert.deepEqual(aheads, [
    ['seq', M + K128, 2 * M],
    ['seq', 3 * M + K128, 4 * M],
    ['seq', 7 * M + K128, 8 * M],
    ['seq', 15 * M + K128, 8 * M],
  ], 'windows double up to the bound; none for random READs or a start being recorded');
  assert.equal(d.stats.fillsAhead, 4);
  assert.equal(dev.completed.length, 15, 'every READ completed without waiting for its readahead');
  gates.shift()!();
  await new Promise((r) => setImmediate(r));
  assert.ok(dev.files.get(7)!.length >= M + K128 + 4096, 'a window is written through the object\'s fd');
  d.handle(close(msg++, 1));
  for (const g of gates) g();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(d.stats.fillsAheadFailed, 3, 'windows ending after CLOSE: their writes refused, counted, nothing thrown');
  assert.deepEqual(dev.closed, [7], 'the fd closed once, after CLOSE');
});

test('readahead after a failover: a re-OPENed object whose cache file holds a reader\'s trail fetches ahead from its first READ there', async () => {
  const M = 1 << 20;
  const aheads: Array<[number, number]> = [];
  const content = (): BlobContent => ({
    name: 'seq',
    size: 256 * M,
    fill: async (off, len, sink, alloc) => sink(off - (off % 4096), alloc(4096)),
    fillAhead: async (off, len) => {
      aheads.push([off, len]);
      return 0;
    },
    markPresent: () => 1,
  });
  class TrailDevice extends FakeDevice {
    // the predecessor's reader got to 40 MiB; a stray chunk at 100 MiB (a random read)
    dataExtents(): [number, number][] {
      return [[0, 40 * M], [100 * M, M]];
    }
  }
  const ra = { initial: 2 * M, max: 8 * M, streams: 4, gap: 2 * M };
  const d = new FscacheDaemon(new TrailDevice(), { resolve: async () => content() }, log, { readAttempts: 1, retryDelayMs: 1, readahead: ra });
  await d.handle(open(1, 1, 'v', 'seq', 7));
  await d.handle(read(2, 1, 40 * M, 128 * 1024));
  assert.deepEqual(aheads, [[40 * M + 128 * 1024, 2 * M]], 'the first window, from the first READ');
  await d.handle(read(3, 1, 101 * M, 128 * 1024));
  assert.equal(aheads.length, 1, 'a short run is no trail');
  // the same READ on a fresh file (no extents): a lone READ, nothing ahead
  const fresh = new FscacheDaemon(new FakeDevice(), { resolve: async () => content() }, log, { readAttempts: 1, retryDelayMs: 1, readahead: ra });
  aheads.length = 0;
  await fresh.handle(open(1, 1, 'v', 'seq', 7));
  await fresh.handle(read(2, 1, 40 * M, 128 * 1024));
  assert.deepEqual(aheads, []);
});

test('readahead of a local blob: a window\'s parts are filled in order, partsAtOnce at a time (the first, which the reader needs next, is not left to share the cores)', async () => {
  const M = 1 << 20;
  const fills: number[] = [];
  const gates = new Map<number, () => void>();
  const local: BlobContent = {
    name: 'local',
    size: 256 * M,
    fill: async (off, len, sink, alloc) => {
      fills.push(off / M);
      if (len === 4 * M) await new Promise<void>((r) => gates.set(off / M, r)); // the parts ahead wait to be let go
      await sink(off - (off % 4096), alloc(4096));
    },
  };
  const dev = new FakeDevice();
  const d = new FscacheDaemon(dev, { resolve: async () => local }, log, {
    readAttempts: 1, retryDelayMs: 1, readahead: { initial: 16 * M, max: 16 * M, streams: 4, gap: 4 * M, partsAtOnce: 1 },
  });
  await d.handle(open(1, 1, 'v', 'local', 7));
  await d.handle(read(2, 1, 0, M));
  await d.handle(read(3, 1, M, M)); // its window: [2, 18) MiB in four parts
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(fills, [0, 1, 2], 'the READs, then the first part alone');
  gates.get(2)!();
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(fills, [0, 1, 2, 6], 'the second once the first is done');
  gates.get(6)!();
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  gates.get(10)!();
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(fills, [0, 1, 2, 6, 10, 14]);
  await d.handle(close(4, 1)); // the last part ends after CLOSE: its write is refused, nothing breaks
  gates.get(14)!();
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.equal(d.stats.fillsAhead, 4);
});

test('readahead of a local blob (no fillAhead): the window is filled in 4 MiB parts, each a fill of its own', async () => {
  const M = 1 << 20;
  const fills: Array<[number, number]> = [];
  const local: BlobContent = {
    name: 'local',
    size: 256 * M,
    fill: async (off, len, sink, alloc) => {
      fills.push([off, len]);
      await sink(off - (off % 4096), alloc(4096));
    },
  };
  const dev = new FakeDevice();
  const d = new FscacheDaemon(dev, { resolve: async () => local }, log, {
    readAttempts: 1, retryDelayMs: 1, readahead: { initial: 4 * M, max: 16 * M, streams: 4, gap: 4 * M },
  });
  await d.handle(open(1, 1, 'v', 'local', 7));
  await d.handle(read(2, 1, 0, M));
  await d.handle(read(3, 1, M, M));
  await d.handle(read(4, 1, 2 * M, M));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(fills, [
    [0, M],
    [M, M], [2 * M, 4 * M], // the READ, then its window [2, 6) MiB
    [2 * M, M], [6 * M, 4 * M], [10 * M, 4 * M], // the READ, then [6, 14) MiB in two parts
  ]);
  assert.equal(d.stats.fillsAhead, 3);
});
