// A READ whose registry never answers: the daemon completes it without data
// (the reader gets EIO) at its deadline, the hung GET is aborted rather than
// left holding the host's only fetch slot, and the next READ of a good range
// gets its bytes. Real docker-registry on 127.0.0.1 behind the fault proxy,
// a real FscacheDaemon over a recording device, a real RemoteBlobContent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { BlobFetcher } from '../../content/remote';
import { FscacheDaemon, DeviceIO } from '../../worker/daemon';
import { encodeMessage, parseMessage, Opcode } from '../../worker/protocol';
import { buildSyntheticBlob, uploadBlob, SyntheticBlob } from '../support/testblob';
import { startRegistry, type Registry } from '../support/registry';
import { FaultProxy, isRangedBlobGet } from '../support/fault-proxy';

const T = { timeout: 60_000 };
const REPO = 'test/deadline';
const PAGE = 4096;
const DEADLINE_MS = 2_000;
const FD = 7;
const log = pino({ level: 'silent' });

let reg: Registry;
let proxy: FaultProxy;
let blob: SyntheticBlob;
const cleanup: Array<() => Promise<unknown>> = [];

before(async () => {
  reg = await startRegistry();
  cleanup.push(() => reg.stop());
  proxy = await FaultProxy.start(reg.url);
  cleanup.push(() => proxy.stop());
  blob = await buildSyntheticBlob({ chunkSizes: new Array(8).fill(256 * 1024), seed: 'deadline' });
  await uploadBlob(reg.url, REPO, blob.data);
}, T);

after(async () => {
  for (const c of cleanup.reverse()) await c().catch((e) => console.error('cleanup:', e));
}, T);

/** The kernel's side: records completions and keeps what was written. */
class Device implements DeviceIO {
  readonly completed: number[] = [];
  readonly writes: Array<[number, Buffer]> = [];
  command() {}
  async pwrite(_fd: number, buf: Buffer, off: number) {
    this.writes.push([off, Buffer.from(buf)]);
  }
  readComplete(_fd: number, msgId: number) {
    this.completed.push(msgId);
  }
  close() {}
  alloc = (n: number) => Buffer.alloc(n);
}

const open = (msgId: number, cookie: string) =>
  parseMessage(encodeMessage({ opcode: Opcode.Open, msgId, objectId: 1, volumeKey: 'erofs,dom', cookieKey: cookie, fd: FD }));
const read = (msgId: number, off: number, readLen: number) =>
  parseMessage(encodeMessage({ opcode: Opcode.Read, msgId, objectId: 1, off, readLen }));

test('a READ the registry never answers fails with EIO at its deadline; the next READ of a good range succeeds', T, async (t) => {
  // One fetch slot for the host: a hung GET that kept it would stall the good READ too.
  const fetcher = new BlobFetcher({ scheduler: { concurrencyPerHost: 1 }, chunks: { amplify: 0 } });
  cleanup.push(() => fetcher.close());
  const content = await fetcher.open({ host: proxy.host, repo: REPO, entry: blob.entry, size: blob.data.length });
  const dev = new Device();
  const d = new FscacheDaemon(dev, { resolve: async () => content }, log, { readAttempts: 4, retryDelayMs: 50, readDeadlineMs: DEADLINE_MS });
  await d.handle(open(1, blob.entry.blobId));
  const bad = blob.chunks[2];
  const good = blob.chunks[5];
  proxy.inject({
    match: (r) => isRangedBlobGet(r) && r.headers.range === `bytes=${bad.cOffset}-${bad.cOffset + bad.cSize - 1}`,
    fault: { kind: 'hang' },
    times: Infinity,
  });
  proxy.log.length = 0;

  const t0 = Date.now();
  await d.handle(read(2, bad.uOffset + 100, PAGE));
  const ms = Date.now() - t0;
  assert.ok(ms >= DEADLINE_MS - 20 && ms <= DEADLINE_MS + 1_000, `the READ was answered after ${ms} ms (deadline ${DEADLINE_MS})`);
  assert.deepEqual(dev.completed, [2], 'completed');
  assert.equal(dev.writes.length, 0, 'without data: the reader gets EIO');
  assert.deepEqual([d.stats.reads, d.stats.readsFailed, d.stats.readsTimedOut], [1, 1, 1]);
  const hung = proxy.entries((e) => e.fault === 'hang');
  assert.equal(hung.length, 1, 'the GET was sent once, then waited for');
  for (let i = 0; i < 50 && hung[0].closedAt === undefined; i++) await sleep(20);
  assert.ok(hung[0].closedAt !== undefined && hung[0].closedAt - t0 <= DEADLINE_MS + 500, 'the hung GET was aborted at the deadline');

  const t1 = Date.now();
  await d.handle(read(3, good.uOffset, PAGE));
  const goodMs = Date.now() - t1;
  assert.ok(goodMs < DEADLINE_MS / 2, `the good READ took ${goodMs} ms`);
  assert.deepEqual(dev.completed, [2, 3]);
  assert.equal(dev.writes.length, 1);
  const [off, data] = dev.writes[0];
  assert.ok(off <= good.uOffset && off + data.length >= good.uOffset + PAGE, `write [${off}, +${data.length}) covers the READ`);
  assert.ok(data.equals(blob.uncompressed.subarray(off, off + data.length)), 'the right bytes');
  assert.deepEqual([d.stats.reads, d.stats.readsFailed, d.stats.readsTimedOut], [2, 1, 1]);
  t.diagnostic(`hung READ answered after ${ms} ms (deadline ${DEADLINE_MS}), its GET closed after ${hung[0].closedAt - t0} ms; good READ ${goodMs} ms`);
});
