// A flipped byte in one compressed chunk of a registry blob fails only that
// chunk's bytes. An image converted by lazysnap (a file ending 12,345 bytes
// into its last chunk, right before the corrupted one) is pushed to
// docker-registry; the fault proxy flips a byte of that chunk in every GET
// covering it. A real FscacheDaemon with a recording device, a real
// RemoteBlobContent through BlobFetcher, READs the way the kernel sends
// them (readahead windows of 128 KiB over a file's mapped chunks, each for
// the holes of the cache file; a read succeeds iff its bytes are in the cache
// file after READ_COMPLETE): every other file reads byte-exact, the bad
// chunk's bytes fail fast, the registry sees a few GETs of that chunk per
// cool-down, and once it serves good bytes the chunk heals.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { BlobFetcher, RemoteBlobContent } from '../../content/remote';
import { convert } from '../../image/convert';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { NULL_ADDR, isReg } from '../../image/erofs/image';
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import { FscacheDaemon, DeviceIO } from '../../worker/daemon';
import { encodeMessage, parseMessage, Opcode } from '../../worker/protocol';
import { blobsOf } from '../../admin/service';
import { startRegistry, type Registry } from '../support/registry';
import { FaultProxy, isRangedBlobGet, type RequestInfo } from '../support/fault-proxy';
import { LAYER_MEDIA, TarSpec, compressLayer, readNydusLayout, sha256hex, tarBuffer, writeLayout } from '../support/oci-layout';
import { syntheticContent, uploadBlob } from '../support/testblob';
import { makeTempDir, removeTempDir } from '../support/tmp';

const T = { timeout: 120_000 };
const REPO = 'test/badchunk';
const PAGE = 4096;
const K = 1024;
const M = 1 << 20;
const RA = 128 * K; // the kernel's default readahead window
const COOL_MS = 3_000;
const FD = 7;
const alignUp = (n: number) => Math.ceil(n / PAGE) * PAGE;

let dir: string;
let reg: Registry;
let proxy: FaultProxy;
let bs: Bootstrap;
let blobDigest: string;
let blobSize: number;
/** the source tree: path → bytes */
const want = new Map<string, Buffer>();
/** each file's data as blob ranges, in file order */
const layout = new Map<string, Array<{ fileOff: number; blobOff: number; len: number }>>();
let bad: ChunkInfo;
const cleanup: Array<() => Promise<unknown>> = [];

before(async () => {
  dir = await makeTempDir('bad-chunk');
  reg = await startRegistry();
  cleanup.push(() => reg.stop());
  proxy = await FaultProxy.start(reg.url);
  cleanup.push(() => proxy.stop());
  // tar order is blob order: b.bin's last chunk (12,345 bytes) is followed by c.bin's first, the one to corrupt.
  // Half of each page random: the chunks compress.
  const rnd = (n: number, seed: string) => syntheticContent(alignUp(n), seed, 0.5).subarray(0, n);
  const files: Array<[string, Buffer]> = [
    ['etc/hello.txt', Buffer.from('hello\n')],
    ['data/a.bin', rnd(300 * K + 5, 'a')],
    ['data/b.bin', rnd(2 * M + 12_345, 'b')],
    ['data/c.bin', rnd(M + M / 2, 'c')],
    ['data/d.bin', rnd(700 * K, 'd')],
    ['data/e.txt', Buffer.from('the last file\n'.repeat(100))],
  ];
  const entries: TarSpec[] = [{ name: 'etc', type: 'dir', mode: 0o755 }, { name: 'data', type: 'dir', mode: 0o755 }];
  for (const [name, data] of files) {
    entries.push({ name, data });
    want.set(`/${name}`, data);
  }
  const tar = await tarBuffer(entries);
  const src = path.join(dir, 'src');
  await writeLayout(src, [{ bytes: compressLayer(tar, 'gzip'), mediaType: LAYER_MEDIA.gzip, diffId: `sha256:${sha256hex(tar)}` }], { tag: 'v1' });
  const dst = path.join(dir, 'nydus');
  await convert(`oci:${src}:v1`, `oci:${dst}:v1`, { warn: () => undefined });
  const img = await readNydusLayout(dst, 'v1');
  bs = new Bootstrap(img.bootstrap);
  assert.equal(bs.blobs.length, 1);
  const data = fs.readFileSync(img.blobFiles[0]);
  blobDigest = await uploadBlob(reg.url, REPO, data);
  blobSize = data.length;
  assert.equal(blobDigest, `sha256:${bs.blobs[0].blobId}`);

  const e = bs.erofs;
  const cs = bs.ext.chunkSize;
  for (const w of e.walk()) {
    if (!isReg(w.inode) || w.hardlinkOf) continue;
    const map = e.chunkMap(w.inode);
    layout.set(w.path, map.chunks.map((c, k) => {
      assert.notEqual(c.blkaddr, NULL_ADDR);
      return { fileOff: k * cs, blobOff: c.blkaddr * e.blksz, len: Math.min(cs, w.inode.size - k * cs) };
    }));
  }
  assert.deepEqual([...layout.keys()].sort(), [...want.keys()].sort());
}, T);

after(async () => {
  for (const c of cleanup.reverse()) await c().catch((e) => console.error('cleanup:', e));
  if (dir) await removeTempDir(dir);
}, T);

/** The kernel's side: a cache file in memory (which pages hold data), and what was completed. */
class Device implements DeviceIO {
  readonly file: Buffer;
  readonly pages: Uint8Array;
  completed = 0;
  constructor(size: number) {
    this.file = Buffer.alloc(alignUp(size));
    this.pages = new Uint8Array(this.file.length / PAGE);
  }
  command() {}
  async pwrite(_fd: number, buf: Buffer, off: number) {
    assert.equal(off % PAGE, 0);
    assert.equal(buf.length % PAGE, 0);
    buf.copy(this.file, off);
    this.pages.fill(1, off / PAGE, (off + buf.length) / PAGE);
  }
  readComplete() {
    this.completed++;
  }
  close() {}
  dataExtents(_fd: number, end: number): [number, number][] {
    const out: [number, number][] = [];
    for (let p = 0; p * PAGE < end; p++) {
      if (!this.pages[p]) continue;
      const last = out[out.length - 1];
      if (last && last[0] + last[1] === p * PAGE) last[1] += PAGE;
      else out.push([p * PAGE, PAGE]);
    }
    return out;
  }
  alloc = (n: number) => Buffer.alloc(n);
  present(p: number): boolean {
    return this.pages[p] === 1;
  }
}

/** One cache file and the daemon serving it (a new one: the kernel starts from an empty cache file). */
class Kernel {
  readonly dev: Device;
  readonly d: FscacheDaemon;
  private msgId = 1;
  reads = 0;
  /** READs that touched the bad chunk's pages, and how long the slowest took */
  badReads = 0;
  slowestBadReadMs = 0;

  constructor(readonly content: RemoteBlobContent) {
    this.dev = new Device(content.size);
    this.d = new FscacheDaemon(this.dev, { resolve: async () => content }, pino({ level: 'silent' }),
      { readAttempts: 4, retryDelayMs: 50, readDeadlineMs: 20_000 });
  }

  async open(): Promise<void> {
    await this.d.handle(parseMessage(encodeMessage({ opcode: Opcode.Open, msgId: this.msgId++, objectId: 1, volumeKey: 'erofs,dom', cookieKey: bs.blobs[0].blobId, fd: FD })));
  }

  /**
   * Reads blob bytes [off, off+len) as the kernel does: page-aligned READs
   * for the holes (from a hole to the next data, within the window); a READ
   * whose first page is still a hole after READ_COMPLETE fails the read (EIO).
   */
  async read(off: number, len: number): Promise<boolean> {
    const first = Math.floor(off / PAGE);
    const end = Math.ceil((off + len) / PAGE);
    for (let p = first; p < end; p++) {
      if (this.dev.present(p)) continue;
      let q = p + 1;
      while (q < end && !this.dev.present(q)) q++;
      const t0 = performance.now();
      await this.d.handle(parseMessage(encodeMessage({ opcode: Opcode.Read, msgId: this.msgId++, objectId: 1, off: p * PAGE, readLen: (q - p) * PAGE })));
      const ms = performance.now() - t0;
      this.reads++;
      if (p * PAGE < alignUp(bad.uOffset + bad.uSize) && q * PAGE > bad.uOffset) {
        this.badReads++;
        this.slowestBadReadMs = Math.max(this.slowestBadReadMs, ms);
      }
      if (!this.dev.present(p)) return false;
    }
    return true;
  }

  /** A whole file through readahead windows: its bytes, or which of its ranges failed. */
  async readFile(p: string, window = RA): Promise<{ data: Buffer; failed: Array<[number, number]> }> {
    const data = Buffer.alloc(want.get(p)!.length);
    const failed: Array<[number, number]> = [];
    for (const c of layout.get(p)!) {
      for (let at = 0; at < c.len; at += window) {
        const n = Math.min(window, c.len - at);
        if (!(await this.read(c.blobOff + at, n))) failed.push([c.fileOff + at, n]);
        else this.dev.file.copy(data, c.fileOff + at, c.blobOff + at, c.blobOff + at + n);
      }
    }
    return { data, failed };
  }
}

/** GETs of the data blob whose range covered a byte of chunk c. */
function getsOf(c: ChunkInfo): number {
  return proxy.entries((e) => e.path.includes(blobDigest) && e.range !== undefined).filter((e) => {
    const [a, b] = /bytes=(\d+)-(\d+)/.exec(e.range!)!.slice(1).map(Number);
    return a < c.cOffset + c.cSize && b >= c.cOffset;
  }).length;
}

test('a flipped byte in one chunk: only its bytes give EIO, every other file reads byte-exact, a few GETs per cool-down, then it heals', T, async (t) => {
  const fetcher = new BlobFetcher({ chunks: { badChunkCooldownMs: COOL_MS } });
  cleanup.push(() => fetcher.close());
  const content = await fetcher.open({ host: proxy.host, repo: REPO, entry: bs.blobs[0], tableDigests: bs.chunkTableDigests(0), size: blobSize });
  // the chunk right after b.bin's last one, which ends inside a page
  const bLast = layout.get('/data/b.bin')!.at(-1)!;
  assert.equal(bLast.len, 12_345);
  const chunks = content.blob.chunks;
  const i = chunks.findIndex((c) => c.uOffset === bLast.blobOff);
  bad = chunks[i + 1];
  assert.ok(bad, 'b.bin is not the last in the blob');
  assert.equal(bad.uOffset, layout.get('/data/c.bin')![0].blobOff, 'the chunk after b.bin is c.bin\'s first');
  assert.equal(alignUp(bLast.blobOff + bLast.len), bad.uOffset, 'no gap: b.bin ends in the page before it');
  assert.ok(bad.compressed, 'a compressed chunk');
  const flipAt = bad.cOffset + Math.floor(bad.cSize / 2);
  const covers = (r: RequestInfo) => {
    const m = /bytes=(\d+)-(\d+)/.exec(String(r.headers.range));
    return isRangedBlobGet(r) && r.path.includes(blobDigest) && !!m && Number(m[1]) <= flipAt && Number(m[2]) >= flipAt;
  };
  proxy.inject({
    match: covers,
    fault: (r) => ({ kind: 'flip', at: flipAt - Number(/bytes=(\d+)-/.exec(String(r.headers.range))![1]) }),
    times: Infinity,
  });
  proxy.log.length = 0;

  // ---- corrupted: rounds over every file, each with a new cache file (everything READ again), then the bad chunk alone
  const t0 = Date.now();
  let k = new Kernel(content);
  const rounds = 4;
  let badReads = 0;
  for (let round = 0; round < rounds; round++) {
    k = new Kernel(content);
    await k.open();
    for (const p of want.keys()) {
      const { data, failed } = await k.readFile(p, round % 2 ? RA : 4 * PAGE);
      if (p === '/data/c.bin') {
        // only the reads needing its first chunk (the bad one) fail
        assert.ok(failed.length > 0, 'c.bin fails');
        for (const [o, n] of failed) assert.ok(o + n <= bad.uSize, `c.bin failed at [${o}, +${n}), outside the bad chunk`);
        assert.ok(data.subarray(M).equals(want.get(p)!.subarray(M)), 'c.bin beyond the bad chunk reads');
      } else {
        assert.deepEqual(failed, [], `${p} failed at ${JSON.stringify(failed)}`);
        assert.ok(data.equals(want.get(p)!), `${p}: bytes differ`);
      }
    }
    // the same cache file: only the bad chunk's holes are asked for again
    for (let j = 0; j < 5; j++) assert.equal(await k.read(bad.uOffset, bad.uSize), false);
    badReads += k.badReads;
    assert.ok(k.slowestBadReadMs < 1_000, `a READ of the bad chunk took ${k.slowestBadReadMs} ms`);
  }
  const elapsed = Date.now() - t0;
  const gets = getsOf(bad);
  const allGets = proxy.entries((e) => e.path.includes(blobDigest) && e.range !== undefined).length;
  t.diagnostic(`corrupted: ${badReads} READs touched the bad chunk in ${elapsed} ms; the registry saw ${gets} GETs covering it, ${allGets} of the blob`);
  assert.ok(badReads >= 20, `${badReads} READs of the bad chunk`);
  const cooldowns = 1 + Math.floor(elapsed / COOL_MS);
  assert.ok(gets <= 3 * cooldowns, `${gets} GETs of the bad chunk in ${cooldowns} cool-down(s)`);
  const health = content.chunkHealth();
  assert.deepEqual(health.badChunks.map((b) => [b.index, b.uOffset, b.uSize]), [[bad.index, bad.uOffset, bad.uSize]]);
  // what `lazysnap status` shows under the blob
  const status = blobsOf('dom', 'fsid', [bs.blobs[0].blobId], [{ volume: 'dom', cookie: bs.blobs[0].blobId, size: content.size, chunks: health }]);
  assert.deepEqual(status[0].badChunks?.map((b) => b.index), [bad.index]);

  // ---- still corrupt after the cool-down: one try, then another cool-down
  await sleep(Math.max(0, health.badChunks[0].until - Date.now()) + 50);
  const before1 = getsOf(bad);
  assert.equal(await k.read(bad.uOffset, bad.uSize), false);
  assert.equal(await k.read(bad.uOffset, bad.uSize), false);
  assert.equal(getsOf(bad) - before1, 1, 'one GET after the cool-down');
  assert.equal(content.chunkHealth().badChunks[0].failures, 2);

  // ---- the registry serves good bytes again: after the cool-down the chunk heals and c.bin reads
  proxy.clear();
  await sleep(Math.max(0, content.chunkHealth().badChunks[0].until - Date.now()) + 50);
  const before2 = getsOf(bad);
  const c = await k.readFile('/data/c.bin');
  assert.deepEqual(c.failed, []);
  assert.ok(c.data.equals(want.get('/data/c.bin')!), 'c.bin byte-exact after healing');
  assert.equal(getsOf(bad) - before2, 1);
  assert.deepEqual(content.chunkHealth().badChunks, []);
  assert.equal(content.stats.badChunksHealed, 1);
  t.diagnostic(`healed with 1 GET; stats ${JSON.stringify(content.stats)}`);
});
