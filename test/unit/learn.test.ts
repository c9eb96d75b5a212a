// Learned prefetch without a kernel: chunks and files from a real nydus
// bootstrap, the journal across a "killed" worker (a second recorder on the
// same file, a torn line, a READ recorded twice), lazysnapd's ingest into the
// metadata, the worker's replay plan from it, and the prefetch table the
// converter writes. The kernel test (test/kernel/learn.test.ts) does the same
// with real READs and SIGKILLs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { FileChunks } from '../../image/rafs/file-chunks';
import { DataBlob } from '../../image/blob/datablob';
import { MetaStore } from '../../snapshotter/storage/metastore';
import { traceKey } from '../../snapshotter/storage/traces';
import { Learning } from '../../mounts/learning';
import { buildTrace } from '../../mounts/trace-build';
import { TraceRecorder } from '../../worker/learn/trace-recorder';
import { JournalError, encodeHeader, encodeRead, parseJournal } from '../../worker/learn/trace-journal';
import { MetadataResolver } from '../../worker/resolver';
import { convert } from '../../image/convert';
import { decodeSettings } from '../../worker/settings';
import { NO_REGISTRY } from '../support/supervised';
import { ConfigError, loadConfig } from '../../config/config';
import { FIXTURE_BLOB_ID, memorySource, nydusFixtures } from '../support/fixtures';
import { layoutFromTars, readNydusLayout } from '../support/oci-layout';
import { newLogger } from '../../log/logger';
import * as grpc from '@grpc/grpc-js';
import { adminHandlers } from '../../admin/service';
import { BlobMetaCache, MetaSource } from '../../content/remote/meta-cache';

const fx = nydusFixtures();
const log = newLogger('silent');

function tmp(label: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `lazysnap-learn-${label}-`));
}

test('file chunks of the upstream nydus fixture: the same chunks as the blob\'s own chunk infos, each with its file', async () => {
  const bs = new Bootstrap(fx.bootstrap());
  const files = new FileChunks(bs);
  const blob = await DataBlob.open(bs.blobs[0], memorySource(fx.blob()));
  const mine = files.find(0, 0, bs.blobs[0].uncompressedSize);
  assert.deepEqual(mine.map((c) => [c.uOffset, c.uSize]), blob.chunks.map((c) => [c.uOffset, c.uSize]));
  assert.deepEqual(mine.map((c) => c.path), ['/lib.rs', '/sync_io.rs']);
  // a READ inside sync_io.rs maps to its chunk alone; one across both files to both
  const sync = mine[1];
  assert.deepEqual(files.find(0, sync.uOffset + 4096, 100).map((c) => c.path), ['/sync_io.rs']);
  assert.deepEqual(files.find(0, 4096, sync.uOffset).map((c) => c.path), ['/lib.rs', '/sync_io.rs']);
  assert.deepEqual(files.find(0, bs.blobs[0].uncompressedSize, 4096), []);
  assert.deepEqual(files.find(1, 0, 4096), [], 'no such blob');
  // by inode: the file's chunks; the root directory: every file below it
  const lib = files.nidOf('/lib.rs')!;
  assert.deepEqual(files.ofInode(lib).map((c) => c.path), ['/lib.rs']);
  assert.deepEqual(files.ofInode(bs.erofs.sb.rootNid).map((c) => c.path), ['/lib.rs', '/sync_io.rs']);
});

test('journal: header and reads round-trip; a torn line is skipped; a bad header is refused', () => {
  const h = { v: 1 as const, fsid: 'f', key: 'a'.repeat(64), imageRef: 'r', volume: 'lazysnap', tags: ['t0'], startMs: 1, untilMs: 2 };
  const text = encodeHeader(h) + encodeRead({ t: 1, c: 't0', o: 0, l: 4096 }) + '{"t":1,"c":"t0","o":40' ;
  const j = parseJournal(text, 'j');
  assert.deepEqual(j, { header: h, reads: [{ t: 1, c: 't0', o: 0, l: 4096 }], skipped: 1 });
  assert.throws(() => parseJournal('{"v":2}\n', 'j'), JournalError);
  assert.throws(() => parseJournal('nonsense', 'j'), /not JSON/);
});

/** The fixture as a mounted lazy image: a bootstrap file and its fscache_images row. */
function fixtureImage(dir: string, store: MetaStore, fsid = 'lazysnap-snap-7') {
  const boot = path.join(dir, `${fsid}.boot`);
  fs.writeFileSync(boot, fx.bootstrap());
  store.fscacheImages.add({ fsid, domain: 'lazysnap', bootstrap: boot, blobsDir: '', imageRef: '127.0.0.1:5000/test/fixture:1', snapshotId: 7 });
  return store.fscacheImages.get(fsid)!;
}

test('record → kill → record → ingest: each chunk once, first access first; the worker replays it in that order', async () => {
  const dir = tmp('ingest');
  const learnDir = path.join(dir, 'learn');
  const store = new MetaStore(path.join(dir, 'metadata.db'));
  const img = fixtureImage(dir, store);
  const bs = new Bootstrap(fx.bootstrap());
  const [lib, sync] = new FileChunks(bs).find(0, 0, bs.blobs[0].uncompressedSize);
  let now = 1_000_000;
  const first = new TraceRecorder(learnDir, log, () => now);
  const learning = new Learning({ dir: learnDir, windowMs: 20_000, images: () => store.fscacheImages, traces: () => store.traces,
    tell: async (f) => first.learn(f), log, now: () => now });
  await learning.begin(img);
  assert.ok(first.learning('lazysnap', FIXTURE_BLOB_ID));
  assert.ok(!first.learning('lazysnap', 'another-blob'));
  assert.ok(!first.learning('other-volume', FIXTURE_BLOB_ID));
  // a second container on the same image while it records: one journal
  await learning.begin(img);
  assert.equal(fs.readdirSync(learnDir).length, 1);
  first.access('lazysnap', FIXTURE_BLOB_ID, sync.uOffset, 4096);
  first.access('lazysnap', img.fsid, 0, 4096); // the bootstrap's own object: not a blob of the image
  // killed between the append and READ_COMPLETE: the kernel re-sends the READ to the successor, which finds the journal itself
  const journal = path.join(learnDir, `${img.fsid}.journal`);
  fs.appendFileSync(journal, '{"t":1000001,"c":"'); // and a kill mid-append
  const second = new TraceRecorder(learnDir, log, () => now);
  second.scan();
  assert.equal(second.recording, 1);
  now += 10;
  second.access('lazysnap', FIXTURE_BLOB_ID, sync.uOffset, 4096);
  second.access('lazysnap', FIXTURE_BLOB_ID, 0, 8192);
  now += 25_000; // past the window: not recorded
  second.access('lazysnap', FIXTURE_BLOB_ID, lib.uOffset, 4096);
  learning.ingest(journal);
  assert.ok(!fs.existsSync(journal), 'the journal is gone once it is a trace');
  const key = traceKey(fx.bootstrap());
  const t = store.traces.get(key)!;
  assert.deepEqual(t.entries.map((e) => [e.path, e.uOffset, e.uSize, e.blob]), [
    ['/sync_io.rs', sync.uOffset, sync.uSize, FIXTURE_BLOB_ID],
    ['/lib.rs', lib.uOffset, lib.uSize, FIXTURE_BLOB_ID],
  ]);
  assert.equal(t.reads, 3, 'journal lines: the re-sent READ counted, the torn line and the READ past the window not');
  assert.equal(t.windowMs, 20_000);
  // a traced image is not recorded again
  await learning.begin(img);
  assert.equal(fs.readdirSync(learnDir).length, 0);
  // the worker's plan for the blob: the trace's order
  const resolver = MetadataResolver.open(path.join(dir, 'metadata.db'));
  assert.deepEqual(resolver.replayPlan('lazysnap', FIXTURE_BLOB_ID), [sync.uOffset, lib.uOffset]);
  assert.deepEqual(resolver.replayPlan('lazysnap', 'not-a-blob'), []);
  resolver.close();
  learning.stop();
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a journal whose image went away is dropped; lazysnapd restarted mid-window ingests when the window closes', async () => {
  const dir = tmp('resume');
  const learnDir = path.join(dir, 'learn');
  const store = new MetaStore(path.join(dir, 'metadata.db'));
  const img = fixtureImage(dir, store);
  let now = Date.now();
  const rec = new TraceRecorder(learnDir, log, () => now);
  const a = new Learning({ dir: learnDir, windowMs: 1000, images: () => store.fscacheImages, traces: () => store.traces, tell: async (f) => rec.learn(f), log, now: () => now });
  await a.begin(img);
  rec.access('lazysnap', FIXTURE_BLOB_ID, 0, 4096);
  a.stop(); // lazysnapd killed
  const b = new Learning({ dir: learnDir, windowMs: 1000, images: () => store.fscacheImages, traces: () => store.traces, tell: async () => false, log });
  b.resume();
  await new Promise((r) => setTimeout(r, 3300)); // window (1 s) + grace (2 s)
  assert.equal(fs.readdirSync(learnDir).length, 0);
  assert.equal(store.traces.get(traceKey(fx.bootstrap()))?.entries.length, 1);
  // an image removed before its window closed: nothing to map the reads through, so nothing is stored
  const other = fixtureImage(dir, store, 'lazysnap-snap-8');
  fs.writeFileSync(other.bootstrap, Buffer.concat([fx.bootstrap(), Buffer.alloc(4096)])); // another image (another key)
  now = Date.now();
  await a.begin(store.fscacheImages.get('lazysnap-snap-8')!);
  rec.access('lazysnap', FIXTURE_BLOB_ID, 0, 4096);
  store.fscacheImages.remove('lazysnap-snap-8');
  a.finish('lazysnap-snap-8');
  assert.equal(fs.readdirSync(learnDir).length, 0);
  assert.equal(store.traces.all().length, 1);
  a.stop();
  b.stop();
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('convert --prefetch-trace: the paths become the bootstrap\'s prefetch table (nids, in order); the worker replays it without a local trace', async () => {
  const dir = tmp('convert');
  const data = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * seed) & 0xff));
  await layoutFromTars(path.join(dir, 'src'), [[
    { name: 'etc', type: 'dir', mode: 0o755 },
    { name: 'etc/hosts', data: data(5000, 3) },
    { name: 'usr/lib/big', data: data(3 << 20, 7) },
    { name: 'usr/bin/tool', data: data(70000, 11) },
  ]]);
  const warnings: string[] = [];
  await convert(`oci:${dir}/src:latest`, `oci:${dir}/dst:v1`, {
    warn: (m) => warnings.push(m),
    prefetchPaths: ['/usr/bin/tool', '/etc', '/nope', '/usr/bin/tool'],
  });
  assert.deepEqual(warnings, ['1 of 4 prefetch paths are not files or directories of the image; skipped']);
  const n = await readNydusLayout(path.join(dir, 'dst'), 'v1');
  const bs = new Bootstrap(n.bootstrap);
  const files = new FileChunks(bs);
  const nids = bs.prefetch;
  assert.equal(nids.length, 2);
  assert.deepEqual(nids.map((nid) => files.ofInode(nid).map((c) => c.path)), [['/usr/bin/tool'], ['/etc/hosts']]);
  // the worker: no trace for this image, so its plan is the table's files, in order
  const store = new MetaStore(path.join(dir, 'metadata.db'));
  const boot = path.join(dir, 'img.boot');
  fs.writeFileSync(boot, n.bootstrap);
  store.fscacheImages.add({ fsid: 'f1', domain: '', bootstrap: boot, blobsDir: '', imageRef: 'r' });
  const resolver = MetadataResolver.open(path.join(dir, 'metadata.db'));
  const tag = bs.devices[0].tag;
  const want = [...files.ofInode(nids[0]), ...files.ofInode(nids[1])].map((c) => c.uOffset);
  assert.deepEqual(resolver.replayPlan('f1', tag), want);
  resolver.close();
  store.close();
  // without the option: no table
  await convert(`oci:${dir}/src:latest`, `oci:${dir}/plain:v1`, { warn: () => {} });
  assert.deepEqual(new Bootstrap((await readNydusLayout(path.join(dir, 'plain'), 'v1')).bootstrap).prefetch, []);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('[learn] config and the worker settings are checked', () => {
  const dir = tmp('config');
  const file = path.join(dir, 'c.toml');
  fs.writeFileSync(file, '[learn]\nwindow_ms = 10\n');
  assert.throws(() => loadConfig(file), (e: Error) => e instanceof ConfigError && /learn\.window_ms/.test(e.message));
  fs.writeFileSync(file, '[learn]\nrecord = "yes"\n');
  assert.throws(() => loadConfig(file), ConfigError);
  fs.writeFileSync(file, '[learn]\nrecord = false\n');
  assert.deepEqual(loadConfig(file).learn, { record: false, window_ms: 20000, replay: true });
  const base = {
    backend: 'fscache', blobDir: '', journalDir: '', dbPath: '/x.db', takeoverPath: '', logLevel: 'info', prefetch: true,
    readDeadlineMs: 1000, heartbeatMs: 250, metricsMs: 0, blobMetaDir: '',
    registry: NO_REGISTRY,
  };
  assert.throws(() => decodeSettings(JSON.stringify(base)), /learn must have/);
  assert.throws(() => decodeSettings(JSON.stringify({ ...base, learn: { dir: 'rel', replay: true } })), /learn must have/);
  assert.deepEqual(decodeSettings(JSON.stringify({ ...base, learn: { dir: '/var/lib/lazysnap/learn', replay: false } })).learn, { dir: '/var/lib/lazysnap/learn', replay: false });
  fs.rmSync(dir, { recursive: true, force: true });
});

test('buildTrace ignores READs of blobs the image does not have', () => {
  const bs = new Bootstrap(fx.bootstrap());
  const h = { v: 1 as const, fsid: 'f', key: 'a'.repeat(64), imageRef: '', volume: 'v', tags: [FIXTURE_BLOB_ID], startMs: 0, untilMs: 10 };
  const entries = buildTrace({ header: h, reads: [{ t: 1, c: 'other', o: 0, l: 4096 }, { t: 1, c: FIXTURE_BLOB_ID, o: 0, l: 4096 }], skipped: 0 },
    new FileChunks(bs), bs.blobs.map((b) => b.blobId));
  assert.deepEqual(entries.map((e) => e.path), ['/lib.rs']);
});

test('the Trace handler lists by image or key, forgets, and loads traces from elsewhere (checked first)', async () => {
  const dir = tmp('admin');
  const store = new MetaStore(path.join(dir, 'metadata.db'));
  const h = adminHandlers({ images: () => store.fscacheImages, traces: () => store.traces, mountDirs: [], about: { version: 't', config: 'c', root: '/r', address: '/a' }, log });
  const call = (request: { image?: string; forget?: boolean; load?: string }) =>
    new Promise<{ err: grpc.ServiceError | null; res: { json: string } }>((resolve) =>
      (h.Trace as Function)({ request: { image: '', forget: false, load: '', ...request } }, (err: grpc.ServiceError | null, res: { json: string }) => resolve({ err, res })));
  const t = { key: 'b'.repeat(64), imageRef: 'reg/img:1', recordedUs: 5, windowMs: 20000, reads: 3, entries: [{ blob: 'c'.repeat(64), uOffset: 4096, uSize: 8192, path: '/bin/x' }] };
  try {
    const loaded = await call({ load: JSON.stringify([t]) });
    assert.deepEqual(JSON.parse(loaded.res.json), [t]);
    assert.deepEqual(JSON.parse((await call({ load: JSON.stringify([t]) })).res.json), [], 'a key that has a trace keeps it');
    const bad = await call({ load: JSON.stringify([{ ...t, entries: [{ blob: 'x', uOffset: 0, uSize: 1, path: '/' }] }]) });
    assert.equal(bad.err?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(bad.err!.details, /traces\[0\]\.entries\[0\]: needs blob \(64 hex\)/);
    assert.equal((await call({ load: 'nope' })).err?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(JSON.parse((await call({ image: 'reg/img:1' })).res.json).length, 1);
    assert.equal(JSON.parse((await call({ image: 'sha256:bbbbbbbb' })).res.json).length, 1, 'by key prefix');
    assert.equal(JSON.parse((await call({ image: 'reg/other:1' })).res.json).length, 0);
    assert.equal((await call({ forget: true })).err?.code, grpc.status.FAILED_PRECONDITION, 'forgetting needs a name');
    assert.equal(JSON.parse((await call({ image: 'reg/img:1', forget: true })).res.json).length, 1);
    assert.deepEqual(store.traces.all(), []);
  } finally {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('blob metadata kept on disk: a second open reads nothing from the source; a damaged file fails the open (and is dropped by the caller)', async () => {
  const dir = tmp('meta');
  const bs = new Bootstrap(fx.bootstrap());
  const entry = bs.blobs[0];
  const cache = new BlobMetaCache(path.join(dir, 'blobmeta'));
  const mem = memorySource(fx.blob());
  let reads = 0;
  const counting = { name: mem.name, size: mem.size, close: () => mem.close(),
    read: (o: number, l: number) => { reads++; return mem.read(o, l); }, readRange: async (o: number, l: number) => { reads++; return [await mem.read(o, l)]; } };
  const first = new MetaSource(counting);
  const a = await DataBlob.open(entry, first);
  assert.ok(reads >= 2, 'ToC and chunk infos read from the source');
  cache.save(entry.blobId, mem.size, first.recorded);
  assert.deepEqual(cache.list(), [entry.blobId]);
  reads = 0;
  const saved = cache.load(entry.blobId)!;
  assert.equal(saved.size, mem.size);
  const b = await DataBlob.open(entry, new MetaSource(counting, saved.ranges));
  assert.equal(reads, 0, 'nothing read from the source');
  assert.deepEqual(b.chunks, a.chunks);
  // damage a byte of the saved ToC: the open fails its digest check
  const file = path.join(dir, 'blobmeta', entry.blobId);
  const raw = fs.readFileSync(file);
  raw[raw.length - 3] ^= 0xff;
  fs.writeFileSync(file, raw);
  await assert.rejects(DataBlob.open(entry, new MetaSource(counting, cache.load(entry.blobId)!.ranges)));
  // a truncated file does not load at all, and is removed
  fs.writeFileSync(file, raw.subarray(0, 100));
  assert.equal(cache.load(entry.blobId), undefined);
  assert.deepEqual(cache.list(), []);
  assert.throws(() => cache.load('../etc/passwd'), /not 64 hex/);
  fs.rmSync(dir, { recursive: true, force: true });
});
