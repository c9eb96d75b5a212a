// A corrupt chunk in the registry, seen from a container (UML guest, real
// EROFS over fscache, containerd's CRI). A busybox image with a data layer
// whose /data/b.bin ends 12,345 bytes into its last chunk, right before
// /data/c.bin's first chunk; after the push one byte of that compressed
// chunk is flipped in the registry's own storage, so it serves the same bad
// bytes every time. In the container every other file reads right (b.bin
// included), c.bin gives EIO for its first chunk only, reading it again costs
// the registry no GET, `lazysnap status` lists the bad chunk, and once the
// registry's bytes are repaired the chunk heals after its cool-down.
// With LAZYSNAP_TEST_BACKEND=fanotify it runs on the host's own kernel,
// through the fanotify backend (integration/fanotify-bad-chunk.test).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { requireBinaries } from '../support/bins';
import type { CriClient } from '../support/cri';
import { buildPauseImage, startGuestContainerd, type GuestContainerd } from '../support/guest-containerd';
import { guestDir, requireFscacheKernel } from '../support/guest';
import { scrape, total as sum } from '../support/metrics';
import { buildBusyboxImage, pushOciLayout } from '../support/images';
import { killWorkers, startLazysnapd, type Lazysnapd } from '../support/lazysnapd';
import { run, runOk, tail } from '../support/proc';
import { startRegistry, type Registry } from '../support/registry';
import { makeTempDir, removeTempDir, unmountAll } from '../support/tmp';
import { readNydusLayout, sha256hex } from '../support/oci-layout';
import { syntheticContent } from '../support/testblob';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { DataBlob } from '../../image/blob/datablob';
import { FileSource } from '../../image/blob/source';
import type { ChunkInfo } from '../../image/blob/chunkinfo';

const CLI = join(__dirname, '../../cmd/lazysnap.js');
const FANOTIFY = process.env.LAZYSNAP_TEST_BACKEND === 'fanotify';
const M = 1 << 20;
const K = 1024;
const PAGE = 4096;
const alignUp = (n: number) => Math.ceil(n / PAGE) * PAGE;
// registry.bad_chunk_cooldown_ms: longer than the first test takes from the chunk's marking to its last
// check of "no GET while it cools down" (about 21 s in the guest, 3 s on the host), shorter than the default 60 s
const COOL_MS = FANOTIFY ? 15_000 : 40_000;

let dir = '';
let registry: Registry | undefined;
let lazysnapd: Lazysnapd | undefined;
let ctrd: GuestContainerd | undefined;
let cri: CriClient;
let ref = '';
/** the data layer's blob */
let blobId = '';
let bad: ChunkInfo;
/** the registry's stored copy of the blob, and where its byte was flipped */
let stored = '';
let flipAt = 0;
const files: Record<string, Buffer> = {};

before(async () => {
  const fscacheDir = FANOTIFY ? '' : requireFscacheKernel();
  requireBinaries(['containerd', 'ctr', 'shim', 'runc', 'registry', 'umoci', 'busybox']);
  dir = FANOTIFY ? await makeTempDir('badchunk') : guestDir('badchunk');
  registry = await startRegistry({ dir: join(dir, 'registry') });
  const bb = await buildBusyboxImage(join(dir, 'busybox'));
  // half of each page random, so chunks compress; umoci writes the layer in name order, which is blob order
  const data = join(dir, 'data');
  fs.mkdirSync(data);
  const sizes: Record<string, number> = { 'a.bin': 300 * K + 5, 'b.bin': 2 * M + 12_345, 'c.bin': M + M / 2, 'd.bin': 700 * K };
  for (const [name, size] of Object.entries(sizes)) {
    files[name] = syntheticContent(alignUp(size), name, 0.5).subarray(0, size);
    fs.writeFileSync(join(data, name), files[name]);
  }
  await runOk('umoci', ['insert', '--image', `${bb.layoutDir}:${bb.ref}`, data, '/data'], { timeoutMs: 300_000 });
  const nydus = join(dir, 'nydus');
  await runOk(process.execPath, [CLI, 'convert', `oci:${bb.layoutDir}:${bb.ref}`, `oci:${nydus}:1`], { timeoutMs: 300_000 });
  const img = await readNydusLayout(nydus, '1');
  const bs = new Bootstrap(img.bootstrap);
  // where b.bin's last chunk and c.bin's first live
  const where = new Map<string, { deviceId: number; blobOff: number }[]>();
  for (const e of bs.erofs.walk()) {
    if (!e.path.startsWith('/data/')) continue;
    where.set(e.path, bs.erofs.chunkMap(e.inode).chunks.map((c) => ({ deviceId: c.deviceId, blobOff: c.blkaddr * bs.erofs.blksz })));
  }
  const bLast = where.get('/data/b.bin')!.at(-1)!;
  const cFirst = where.get('/data/c.bin')![0];
  assert.equal(bLast.deviceId, cFirst.deviceId);
  const i = cFirst.deviceId - 1;
  blobId = bs.blobs[i].blobId;
  const blob = await DataBlob.open(bs.blobs[i], await FileSource.open(join(img.blobsDir, blobId)), bs.chunkTableDigests(i));
  bad = blob.chunks.find((c) => c.uOffset === cFirst.blobOff)!;
  const prev = blob.chunks[bad.index - 1];
  assert.equal(prev.uOffset, bLast.blobOff, 'b.bin\'s last chunk is right before c.bin\'s first');
  assert.equal(prev.uSize, 12_345);
  assert.ok(bad.compressed, 'a compressed chunk');
  await blob.src.close();
  await pushOciLayout(nydus, '1', registry.url, 'test/badchunk:1');
  ref = `${registry.host}/test/badchunk:1`;
  // the registry now stores the same bad bytes for every GET
  stored = join(registry.dir, 'storage', 'docker', 'registry', 'v2', 'blobs', 'sha256', blobId.slice(0, 2), blobId, 'data');
  flipAt = bad.cOffset + Math.floor(bad.cSize / 2);
  flipByte();
  const pause = await buildPauseImage(join(dir, 'pause'));
  await pushOciLayout(pause.layoutDir, pause.ref, registry.url, 'test/pause:1');

  const root = join(dir, 'lazysnap');
  fs.mkdirSync('/var/tmp/lazysnap-kt-logs', { recursive: true });
  lazysnapd = await startLazysnapd({
    root,
    logPath: `/var/tmp/lazysnap-kt-logs/bad-chunk-${Date.now()}.log`,
    address: join(dir, 'lazysnap.sock'),
    config:
      `root = "${root}"\n[log]\nlevel = "info"\n` +
      (FANOTIFY
        ? `[fscache]\nenabled = true\nbackend = "fanotify"\nprefetch = "off"\n`
        // its GET counts are of a plain on-demand start, not of one being recorded (whose reads are not widened)
        : `[fscache]\nenabled = true\ncache_dir = "${join(fscacheDir, 'cache-badchunk')}"\ntag = "lazysnap-bad"\nprefetch = "off"\n[learn]\nrecord = false\n`) +
      `[registry]\nplain_http = true\nconfig_path = "${join(dir, 'containerd', 'certs.d')}"\nbad_chunk_cooldown_ms = ${COOL_MS}\n` +
      `[metrics]\naddress = "${join(dir, 'metrics.sock')}"\n`,
  });
  ctrd = await startGuestContainerd({
    dir: join(dir, 'containerd'),
    snapshotterSocket: lazysnapd.address,
    registryHost: registry.host,
    sandboxImage: `${registry.host}/test/pause:1`,
  });
  cri = ctrd.cri;
}, { timeout: 600_000 });

after(async () => {
  for (const f of [ctrd?.stop, lazysnapd && (() => lazysnapd!.stop()), registry?.stop]) await f?.().catch(() => {});
  if (dir) await unmountAll(dir).catch(() => {});
  // a stopped lazysnapd with an image mounted leaves its worker serving; the next test needs /dev/cachefiles
  if (FANOTIFY) {
    if (lazysnapd) killWorkers(lazysnapd.root);
    if (dir) await removeTempDir(dir);
  } else await run('pkill', ['-9', '-f', 'lazysnap-fscache-worker']);
}, { timeout: 120_000 });

function flipByte(): void {
  const fd = fs.openSync(stored, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, flipAt);
  b[0] ^= 0x10;
  fs.writeSync(fd, b, 0, 1, flipAt);
  fs.closeSync(fd);
}

async function logs(): Promise<string> {
  return `\n--- containerd ---\n${ctrd ? await tail(ctrd.logPath, 2500) : ''}\n--- lazysnapd ---\n${lazysnapd ? await tail(lazysnapd.logPath, 4000) : ''}`;
}

/** GETs of the data blob by lazysnap's fetcher, from the registry's access log. */
const blobGets = () => fs.readFileSync(registry!.logPath, 'utf8').split('\n')
  .filter((l) => l.includes('lazysnap/') && /"GET /.test(l) && l.includes(`/blobs/sha256:${blobId}`)).length;

const status = async () => JSON.parse((await runOk(process.execPath, [CLI, 'status', '--json', '--address', lazysnapd!.address])).stdout);

type Bad = { index: number; uOffset: number; uSize: number; failures: number; until: number };
async function badChunks(): Promise<Bad[]> {
  const img = (await status()).images.find((i: { imageRef: string }) => i.imageRef === ref);
  return img?.blobs.find((b: { blob: string }) => b.blob === blobId)?.badChunks ?? [];
}

const sha = (b: Buffer) => sha256hex(b);
const cTail = () => sha(files['c.bin'].subarray(M));

/** Runs a shell script in a container of the image; all output in stdout. */
async function inContainer(name: string, script: string) {
  const r = await cri.runToCompletion(ref, ['/bin/sh', '-c', `exec 2>&1; ${script}`], { logRoot: join(dir, 'pod-logs'), name })
    .catch(async (e) => assert.fail(`${(e as Error).message}${await logs()}`));
  return r.stdout;
}

test('a container: only the corrupt chunk\'s bytes give EIO, every other file reads, reading it again costs no GET', { timeout: 600_000 }, async (t) => {
  await cri.pullImage(ref).catch(async (e) => assert.fail(`${(e as Error).message}${await logs()}`));
  const bb = '/bin/busybox';
  const out = await inContainer('first', `cd /data; for f in a.bin b.bin d.bin c.bin; do ${bb} sha256sum $f; echo "$f rc=$?"; done; ` +
    `${bb} dd if=c.bin bs=1048576 skip=1 | ${bb} sha256sum`);
  for (const f of ['a.bin', 'b.bin', 'd.bin']) {
    assert.match(out, new RegExp(`^${sha(files[f])}  ${f}$`, 'm'), `${f} reads right:\n${out}${await logs()}`);
    assert.match(out, new RegExp(`^${f} rc=0$`, 'm'));
  }
  assert.match(out, /c\.bin.*Input\/output error/, out);
  assert.match(out, /^c\.bin rc=1$/m, out);
  assert.match(out, new RegExp(`^${cTail()}  -$`, 'm'), `c.bin beyond its first chunk reads:\n${out}`);
  const first = blobGets();
  const bads = await badChunks();
  assert.deepEqual(bads.map((b) => [b.index, b.uOffset, b.uSize, b.failures]), [[bad.index, bad.uOffset, bad.uSize, 1]]);
  const text = (await runOk(process.execPath, [CLI, 'status', '--address', lazysnapd!.address])).stdout;
  assert.match(text, new RegExp(`bad chunk ${bad.index} \\[${bad.uOffset}, \\+${bad.uSize}\\) failed verification \\(1×\\): EIO until `), text);

  // again and again, in a new container: the kernel asks for the hole each time; no GET during the cool-down
  const again = await inContainer('again', `cd /data; for i in 1 2 3 4 5; do ${bb} sha256sum c.bin; echo "c rc=$?"; done; ${bb} sha256sum b.bin`);
  assert.equal(again.match(/^c rc=1$/gm)?.length, 5, again);
  assert.match(again, new RegExp(`^${sha(files['b.bin'])}  b.bin$`, 'm'));
  assert.equal(blobGets(), first, `no GET of the blob while the chunk cools down:\n${again}`);
  const s = await status();
  const log = fs.readFileSync(lazysnapd!.logPath, 'utf8');
  const warned = log.split('\n').filter((l) => l.includes('chunk keeps failing verification: marked bad')).length;
  const st = s.worker.stats;
  t.diagnostic(`GETs of the data blob: ${first} for the first container (4 files, c.bin's bad chunk included), 0 for 5 more reads of c.bin; ` +
    (FANOTIFY ? `events ${st.events}, denied ${st.eventsDenied}` : `READs ${st.reads}, failed ${st.readsFailed}, retried ${st.readRetries}`) + `; warnings ${warned}`);
  assert.equal(warned, 1, 'one warning for the chunk');
  assert.ok(first <= 16, `${first} GETs of the blob`);
  // and the metrics say so: failed reads, verification failures, one chunk marked bad
  await new Promise((r) => setTimeout(r, 1500)); // the worker reports every second
  const m = await scrape(join(dir, 'metrics.sock'));
  assert.ok(sum(m, 'lazysnap_read_latency_microseconds_count', { image_ref: ref, result: 'eio' }) >= 1, 'the EIOs are counted');
  assert.ok(sum(m, 'lazysnap_chunk_verify_failures_total', { image_ref: ref }) >= 1, 'the failed verifications are counted');
  assert.equal(sum(m, 'lazysnap_bad_chunks_marked_total', { image_ref: ref }), 1);
});

test('once the registry serves good bytes, the chunk heals after its cool-down and c.bin reads', { timeout: 300_000 }, async (t) => {
  flipByte(); // back to the pushed bytes
  const [b] = await badChunks();
  assert.ok(b, 'still marked');
  const wait = b.until - Date.now() + 500;
  t.diagnostic(`waiting ${wait} ms for the cool-down of ${COOL_MS} ms`);
  assert.ok(wait <= COOL_MS + 500, `the configured cool-down (${COOL_MS} ms) holds, not the default: ${wait} ms left`);
  await new Promise((r) => setTimeout(r, Math.max(0, wait)));
  const before = blobGets();
  const out = await inContainer('healed', `${'/bin/busybox'} sha256sum /data/c.bin`);
  assert.match(out, new RegExp(`^${sha(files['c.bin'])}  /data/c.bin$`, 'm'), `${out}${await logs()}`);
  assert.deepEqual(await badChunks(), []);
  assert.match(fs.readFileSync(lazysnapd!.logPath, 'utf8'), /bad chunk verified: healed/);
  t.diagnostic(`healed with ${blobGets() - before} GET(s)`);
});
