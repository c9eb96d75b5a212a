// A Range GET's chunks had as their bytes arrive (content/remote/arriving.ts):
// ArrivingRange alone, readBlobParts' onPart against a server that cuts its
// first body short, a READ that joins a GET under way, answered before that
// GET ends, and a READ answered before the chunks it was widened by.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ArrivingRange } from '../../content/remote/arriving';
import { RemoteBlobContent } from '../../content/remote/chunk-fetcher';
import { RangeReader, RegistryBlobSource } from '../../content/remote/source';
import type { OnPart } from '../../registry/http';
import { RegistryClient } from '../../registry/client';
import { DataBlob } from '../../image/blob/datablob';
import { buildSyntheticBlob } from '../support/testblob';
import { memorySource } from '../support/fixtures';

const T = { timeout: 60_000 };
const PAGE = 4096;
const K = 1024;
const M = 1 << 20;

/** Settles on the next turns of the loop: what resolved by then is in `done`. */
function tracked(p: Promise<Buffer[]>) {
  const t = { done: false, failed: undefined as unknown, value: undefined as Buffer[] | undefined };
  p.then((v) => { t.done = true; t.value = v; }, (e) => { t.done = true; t.failed = e; });
  return t;
}
const turn = () => new Promise((r) => setImmediate(r));
const joined = (parts: Buffer[] | undefined) => Buffer.concat(parts ?? []);

test('each want resolves once its bytes are in, as views of the parts; not before', async () => {
  const body = crypto.randomBytes(100);
  const r = new ArrivingRange(100);
  const a = tracked(r.want(0, 30));
  const b = tracked(r.want(30, 10));
  const c = tracked(r.want(40, 60));
  const z = tracked(r.want(50, 0));
  r.part(body.subarray(0, 25), 0);
  await turn();
  assert.deepEqual([a.done, b.done, c.done], [false, false, false], 'nothing is whole yet');
  r.part(body.subarray(25, 35), 25);
  await turn();
  assert.deepEqual([a.done, b.done, c.done], [true, false, false]);
  assert.ok(joined(a.value).equals(body.subarray(0, 30)));
  assert.equal(a.value!.length, 2, 'a chunk across two reads is two views');
  assert.equal(a.value![0].buffer, body.buffer, 'nothing copied');
  r.part(body.subarray(35, 100), 35);
  await turn();
  assert.ok(joined(b.value).equals(body.subarray(30, 40)));
  assert.ok(joined(c.value).equals(body.subarray(40, 100)));
  assert.ok(z.done && joined(z.value).length === 0);
  // a want after its bytes are in resolves at once
  assert.ok(joined(await r.want(90, 10)).equals(body.subarray(90)));
});

test('a retried body starts again at 0: what was had stays had, the rest comes from the new body', async () => {
  const body = crypto.randomBytes(64);
  const r = new ArrivingRange(64);
  const a = tracked(r.want(0, 16));
  const b = tracked(r.want(16, 48));
  r.part(body.subarray(0, 20), 0);
  await turn();
  assert.ok(a.done && !b.done);
  // the first try dies here; the retry's parts are new buffers of the same bytes
  const again = Buffer.from(body);
  r.part(again.subarray(0, 40), 0);
  await turn();
  assert.ok(!b.done, 'bytes 16-20 of the first try are not mixed into the second');
  r.part(again.subarray(40), 40);
  await turn();
  assert.ok(joined(b.value).equals(body.subarray(16)));
  assert.ok(b.value!.every((p) => p.buffer === again.buffer), 'all from the retry');
  assert.ok(joined(a.value).equals(body.subarray(0, 16)));
});

test('settle gives the rest from the whole body (a reader without parts); fail rejects only what still waits', async () => {
  const body = crypto.randomBytes(50);
  const r = new ArrivingRange(50);
  const a = tracked(r.want(10, 20));
  r.settle([body.subarray(0, 7), body.subarray(7)]);
  await turn();
  assert.ok(joined(a.value).equals(body.subarray(10, 30)));
  assert.throws(() => r.want(0, 1), /settled/);

  const f = new ArrivingRange(50);
  const had = tracked(f.want(0, 5));
  const lost = tracked(f.want(5, 45));
  f.part(body.subarray(0, 10), 0);
  f.fail(new Error('reset'));
  await turn();
  assert.ok(joined(had.value).equals(body.subarray(0, 5)));
  assert.match(String(lost.failed), /reset/);
  f.part(body.subarray(10), 10); // after the end: ignored
  assert.equal(lost.value, undefined);
});

test('parts that are not the next bytes, or run past the range, are left to settle; bad wants throw', async () => {
  const body = crypto.randomBytes(30);
  const r = new ArrivingRange(30);
  const a = tracked(r.want(0, 30));
  r.part(body.subarray(5, 10), 5); // a gap
  r.part(Buffer.alloc(40), 0); // longer than the range
  await turn();
  assert.ok(!a.done);
  r.settle([body]);
  await turn();
  assert.ok(joined(a.value).equals(body));
  const q = new ArrivingRange(10);
  assert.throws(() => q.want(5, 6), RangeError);
  assert.throws(() => q.want(-1, 2), RangeError);
  assert.throws(() => q.want(0.5, 2), RangeError);
});

/** A reader whose body the test hands out: parts go to onPart when fed, the GET ends when finished. */
interface PacedCall {
  off: number;
  len: number;
  signal?: AbortSignal;
  onPart?: OnPart;
  sent: number;
  parts: Buffer[];
  finish(): void;
}

class PacedReader implements RangeReader {
  readonly name = 'paced';
  readonly calls: PacedCall[] = [];
  constructor(readonly data: Buffer) {}
  get size() {
    return this.data.length;
  }
  readRange(off: number, len: number, signal?: AbortSignal, onPart?: OnPart): Promise<Buffer[]> {
    return new Promise((resolve, reject) => {
      const parts: Buffer[] = [];
      this.calls.push({ off, len, signal, onPart, sent: 0, parts, finish: () => resolve(parts) });
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
  }
  /** Sends the call's body up to `upTo` bytes in, in uneven pieces, as a socket would. */
  feed(i: number, upTo: number): void {
    const c = this.calls[i];
    while (c.sent < upTo) {
      const n = Math.min(upTo - c.sent, 3000 + (c.sent % 7919));
      const p = Buffer.from(this.data.subarray(c.off + c.sent, c.off + c.sent + n));
      c.parts.push(p);
      c.onPart?.(p, c.sent);
      c.sent += n;
    }
  }
}

test('a READ that joins a GET under way is answered once its chunk is in, before the GET ends', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(8).fill(M), seed: 'arriving' });
  const reader = new PacedReader(b.data);
  const blob = await DataBlob.open(b.entry, memorySource(b.data, 'blob'));
  // default pieces (the sink's writes): a chunk each here
  const content = new RemoteBlobContent(blob, reader, { hostKey: 'paced', amplify: 0, maxMerge: 8 * M });
  const file = Buffer.alloc(Math.ceil(b.entry.uncompressedSize / PAGE) * PAGE);
  const sink = async (off: number, data: Buffer) => {
    assert.ok(data.equals(b.uncompressed.subarray(off, off + data.length)), `wrong bytes at ${off}`);
    data.copy(file, off);
  };
  const alloc = (n: number) => Buffer.alloc(n);
  // readahead takes all eight chunks in one GET
  const ahead = content.fillAhead(0, 8 * M, sink, alloc);
  await turn();
  assert.equal(reader.calls.length, 1);
  // a READ of chunk 2 joins it
  const c2 = b.chunks[2];
  let answered = false;
  const read = content.fill(c2.uOffset, PAGE, sink, alloc).then(() => (answered = true));
  await turn();
  assert.equal(reader.calls.length, 1, 'joined, no GET of its own');
  reader.feed(0, c2.cOffset + c2.cSize - 1);
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(!answered, 'answered before its chunk was whole');
  reader.feed(0, c2.cOffset + c2.cSize + 100);
  const t0 = Date.now();
  while (!answered && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 5));
  assert.ok(answered, 'the READ still waited once its chunk was in');
  assert.ok(file.subarray(c2.uOffset, c2.uOffset + c2.uSize).equals(b.uncompressed.subarray(c2.uOffset, c2.uOffset + c2.uSize)));
  assert.ok(reader.calls[0].sent < reader.calls[0].len, 'the GET was still under way');
  // the rest of the body, then the GET's end: readahead writes the other chunks, each once
  reader.feed(0, reader.calls[0].len);
  reader.calls[0].finish();
  assert.equal(await ahead, 8);
  await read;
  assert.ok(file.subarray(0, b.entry.uncompressedSize).equals(b.uncompressed));
  assert.equal(reader.calls.length, 1);
  assert.equal(content.progress().chunksPresent, 8);
});

test('a READ widened over the chunks after it returns once its own chunk is written; they follow in the same GET', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(8).fill(256 * K), seed: 'widened' });
  const reader = new PacedReader(b.data);
  const blob = await DataBlob.open(b.entry, memorySource(b.data, 'blob'));
  const content = new RemoteBlobContent(blob, reader, { hostKey: 'paced', amplify: M });
  const written = new Set<number>();
  const sink = async (off: number, data: Buffer) => {
    assert.ok(data.equals(b.uncompressed.subarray(off, off + data.length)), `wrong bytes at ${off}`);
    for (const c of b.chunks) if (c.uOffset >= off && c.uOffset < off + data.length) written.add(c.index);
  };
  let answered = false;
  const background: Promise<void>[] = [];
  const read = content.fill(0, PAGE, sink, (n) => Buffer.alloc(n), undefined, { background: (w) => background.push(w) }).then(() => (answered = true));
  assert.equal(background.length, 1, 'the widened writes are handed to the caller before the fill\'s first await');
  await turn();
  assert.equal(reader.calls.length, 1);
  assert.equal(reader.calls[0].len, b.chunks[3].cOffset + b.chunks[3].cSize, 'widened to 1 MiB: chunks 0-3 in one GET');
  reader.feed(0, b.chunks[0].cSize + 10);
  const t0 = Date.now();
  while (!answered && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 5));
  assert.ok(answered, 'the READ waited for the chunks it was widened by');
  assert.deepEqual([...written], [0]);
  reader.feed(0, reader.calls[0].len);
  reader.calls[0].finish();
  await read;
  await background[0];
  assert.deepEqual([...written].sort(), [0, 1, 2, 3]);
  assert.equal(content.stats.chunksWidened, 3);
  assert.equal(reader.calls.length, 1);
  // a READ of a widened chunk now finds it present: no GET
  await content.fill(b.chunks[2].uOffset, PAGE, sink, (n) => Buffer.alloc(n));
  assert.equal(reader.calls.length, 1);
});

test('a READ past its deadline takes its widened chunks with it: the stalled GET is aborted, and the next READ gets a fresh one', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(4).fill(256 * K), seed: 'widened-stall' });
  const reader = new PacedReader(b.data);
  const blob = await DataBlob.open(b.entry, memorySource(b.data, 'blob'));
  const content = new RemoteBlobContent(blob, reader, { hostKey: 'paced', amplify: M });
  const sink = async () => undefined;
  const deadline = new AbortController(); // AbortSignal.timeout's timer would not keep the test's loop alive
  setTimeout(() => deadline.abort(), 100);
  await assert.rejects(content.fill(0, PAGE, sink, (n) => Buffer.alloc(n), deadline.signal), /abort/i);
  await turn();
  assert.equal(reader.calls.length, 1);
  assert.ok(reader.calls[0].signal?.aborted, 'the stalled GET (with the widened chunks in it) is still waited for');
  // the next READ starts its own GET rather than join the dead one
  const widened: Promise<void>[] = [];
  const again = content.fill(0, PAGE, sink, (n) => Buffer.alloc(n), undefined, { background: (w) => widened.push(w) });
  await turn();
  assert.equal(reader.calls.length, 2);
  reader.feed(1, reader.calls[1].len);
  reader.calls[1].finish();
  await again;
  await Promise.all(widened);
  assert.equal(content.progress().chunksPresent, 4);
});

test('readBlobParts: onPart sees the body as it arrives; a body cut short is retried from 0, and the chunks come out right', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(6).fill(200 * K), seed: 'arriving-http' });
  const digest = `sha256:${crypto.createHash('sha256').update(b.data).digest('hex')}`;
  let gets = 0;
  const server = http.createServer((req, res) => {
    const r = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (req.url !== `/v2/r/blobs/${digest}` || !r) return void res.writeHead(404).end();
    const [from, to] = [Number(r[1]), Number(r[2])];
    res.writeHead(206, { 'content-length': to - from + 1, 'content-range': `bytes ${from}-${to}/${b.data.length}` });
    // the first whole-blob GET dies 300,000 bytes in
    if (gets++ === 0 && to - from + 1 > 300_000) return void res.write(b.data.subarray(from, from + 300_000), () => res.socket!.destroy());
    res.end(b.data.subarray(from, to + 1));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = new RegistryClient({ plainHttp: true, retry: { attempts: 3, baseDelayMs: 5, maxDelayMs: 10 } });
  try {
    const repo = client.repository(`127.0.0.1:${(server.address() as AddressInfo).port}`, 'r');
    const seen: Array<[number, number]> = [];
    const parts = await repo.readBlobParts(digest, 0, b.data.length, { blobSize: b.data.length, onPart: (p, at) => seen.push([at, p.length]) });
    assert.ok(Buffer.concat(parts).equals(b.data));
    const starts = seen.filter(([at]) => at === 0).length;
    assert.equal(starts, 2, 'two tries, each from 0');
    const retry = seen.slice(seen.map(([at]) => at).lastIndexOf(0));
    let pos = 0;
    for (const [at, n] of retry) {
      assert.equal(at, pos, 'in order, contiguous');
      pos += n;
    }
    assert.equal(pos, b.data.length);
    assert.ok(retry.length > 1, 'the body came in more than one part');

    // the chunk fetcher over the same server: the first GET of the whole blob is cut again, the fill is right
    gets = 0;
    const blob = await DataBlob.open(b.entry, memorySource(b.data, 'blob'));
    const src = await RegistryBlobSource.open(repo, digest, b.data.length);
    const content = new RemoteBlobContent(blob, src, { amplify: 0, maxMerge: 8 << 20 });
    const out = Buffer.alloc(Math.ceil(content.size / PAGE) * PAGE);
    await content.fill(0, content.size, async (o, d) => void d.copy(out, o), (n) => Buffer.alloc(n));
    assert.ok(out.subarray(0, content.size).equals(b.uncompressed));
    assert.equal(gets, 2);
    assert.equal(content.stats.verifyFailures, 0);
  } finally {
    await client.close();
    server.close();
  }
});
