// The pieces operators rely on, without a daemon: the root and device locks,
// metrics that add up across worker deaths, error kinds for labels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { InstanceLockedError, parseHolder, takeLock } from '../../supervisor/instance-lock';
import { DaemonMetrics } from '../../supervisor/metrics';
import { WorkerMetrics } from '../../worker/metrics';
import type { BlobContent, BlobPresence, ChunkHealth } from '../../content/content';
import { AuthError, HttpStatusError, IntegrityError, NotFoundError, TransportError, errorKind } from '../../registry/errors';
import { deviceLockFile } from '../../supervisor/setup';
import { CacheBound, evictionOrder } from '../../mounts/cache-bound';
import { inventory } from '../../admin/inventory';
import { Kind, type Info } from '../../snapshotter/storage/info';

const log = pino({ level: 'silent' });

test('a lock is taken once: a second taker is refused with the holder pid; released, it can be taken again', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-lock-'));
  const file = path.join(dir, 'sub', 'lazysnapd.lock');
  const a = takeLock(file, `root ${dir}`, 'serving /run/x.sock');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(parseHolder(fs.readFileSync(file, 'utf8')), { pid: process.pid, owner: 'serving /run/x.sock' });
  // flock is per open file: a second open in this very process conflicts like another process would
  assert.throws(() => takeLock(file, `root ${dir}`, 'other'), (e: unknown) =>
    e instanceof InstanceLockedError && e.holderPid === process.pid &&
    e.message === `root ${dir} is in use by lazysnapd pid ${process.pid} (serving /run/x.sock); that one keeps serving (lock ${file})`);
  a.release();
  const b = takeLock(file, `root ${dir}`, 'second');
  assert.equal(parseHolder(fs.readFileSync(file, 'utf8'))?.owner, 'second', 'the new holder rewrote the line, without the old one\'s tail');
  b.release();
  fs.rmSync(dir, { recursive: true });
});

test('a lock file that is a symlink is refused, not followed', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-lock-'));
  fs.symlinkSync('/etc/passwd', path.join(dir, 'l.lock'));
  assert.throws(() => takeLock(path.join(dir, 'l.lock'), 'x', 'y'), /ELOOP/);
  fs.rmSync(dir, { recursive: true });
});

test('every root meets at one device lock', () => {
  assert.equal(deviceLockFile('/dev/cachefiles'), '/run/lazysnap/locks/dev_cachefiles.lock');
  assert.equal(deviceLockFile('/dev/../x y'), '/run/lazysnap/locks/dev_.._x_y.lock');
});

test('registry errors get bounded kinds for metric labels', () => {
  const info = { host: 'h', repo: 'r', what: 'w' };
  assert.equal(errorKind(new HttpStatusError(503, info)), 'http_503');
  assert.equal(errorKind(new NotFoundError(info)), 'not_found');
  assert.equal(errorKind(new AuthError('no', { ...info, status: 401 })), 'auth');
  assert.equal(errorKind(new TransportError('reset', info)), 'transport');
  assert.equal(errorKind(new IntegrityError('bad', info)), 'integrity');
});

/** A remote-like content whose counters the test moves. */
function fakeContent(): BlobContent & { p: BlobPresence; h: ChunkHealth } {
  const c = {
    name: 'b', size: 1 << 20,
    p: { bytes: 1 << 20, bytesPresent: 0, fetchedBytes: 0, chunksWanted: 0, chunksWantedPresent: 0 },
    h: { badChunks: [], verifyFailures: 0, badChunksMarked: 0, badChunksHealed: 0 },
    fill: async () => {},
    progress: () => c.p,
    chunkHealth: () => c.h,
  };
  return c;
}

const value = (text: string, line: string) => {
  const m = text.split('\n').find((l) => l.startsWith(`${line} `));
  return m === undefined ? undefined : Number(m.slice(line.length + 1));
};

test('worker metrics: READs by result, and the deltas of each blob\'s counters, labelled with its image', async () => {
  const w = new WorkerMetrics();
  const c = fakeContent();
  w.label(c, 'reg/app:1');
  w.read(c, process.hrtime.bigint(), 'filled', 4096);
  w.read(c, process.hrtime.bigint(), 'eio', 4096);
  w.read(undefined, process.hrtime.bigint(), 'present', 100);
  Object.assign(c.p, { fetchedBytes: 1000, chunksWanted: 4, chunksWantedPresent: 1, bytesPresent: 4096 });
  w.sample();
  const open = await w.registry.metrics();
  assert.equal(value(open, 'lazysnap_blob_bytes{image_ref="reg/app:1"}'), 1 << 20);
  assert.equal(value(open, 'lazysnap_blob_present_bytes{image_ref="reg/app:1"}'), 4096, 'progress of what is open');
  Object.assign(c.p, { fetchedBytes: 1500, chunksWanted: 6, chunksWantedPresent: 3 });
  c.h.verifyFailures = 2;
  w.closing(c); // its last counts are taken at its close
  Object.assign(c.p, { fetchedBytes: 9999 });
  w.sample(); // closed: no longer sampled
  const text = await w.registry.metrics();
  assert.equal(value(text, 'lazysnap_fetched_bytes_total{image_ref="reg/app:1"}'), 1500);
  assert.equal(value(text, 'lazysnap_cache_requests_total{image_ref="reg/app:1"}'), 6);
  assert.equal(value(text, 'lazysnap_cache_hits_total{image_ref="reg/app:1"}'), 3);
  assert.equal(value(text, 'lazysnap_chunk_verify_failures_total{image_ref="reg/app:1"}'), 2);
  assert.equal(value(text, 'lazysnap_read_latency_microseconds_count{image_ref="reg/app:1",result="filled"}'), 1);
  assert.equal(value(text, 'lazysnap_read_latency_microseconds_count{image_ref="reg/app:1",result="eio"}'), 1);
  assert.equal(value(text, 'lazysnap_read_bytes_total{image_ref="reg/app:1"}'), 4096, 'only answered-with-data READs count as read');
  assert.equal(value(text, 'lazysnap_read_bytes_total{image_ref=""}'), 100);
});

test('worker metrics: registry requests, retries and errors per host, as deltas', async () => {
  const w = new WorkerMetrics();
  const stats = { byHost: { 'r:5000': { requests: 3, retries: 1, errors: { http_503: 1 } } }, requests: 3, retries: 1, hostFallbacks: 0, reauths: 0, redirects: 0, redirectCacheHits: 0, bytes: 0 };
  w.sample(stats);
  stats.byHost['r:5000'] = { requests: 5, retries: 1, errors: { http_503: 2 } };
  w.sample(stats);
  const text = await w.registry.metrics();
  assert.equal(value(text, 'lazysnap_registry_requests_total{host="r:5000"}'), 5);
  assert.equal(value(text, 'lazysnap_registry_retries_total{host="r:5000"}'), 1);
  assert.equal(value(text, 'lazysnap_registry_errors_total{host="r:5000",kind="http_503"}'), 2);
});

test("lazysnapd's metrics: a dead worker's counts stay and its gauges go; a live one's latest report is added", async () => {
  const m = new DaemonMetrics('1.2.3', 'fscache', log);
  const reportOf = async (reads: number) => {
    const w = new WorkerMetrics();
    const c = fakeContent();
    w.label(c, 'img');
    for (let i = 0; i < reads; i++) w.read(c, process.hrtime.bigint(), 'filled', 10);
    const json = await w.snapshot();
    // a gauge as a worker would send one
    json.push({ name: 'lazysnap_test_gauge', help: 'g', type: 'gauge', aggregator: 'sum', values: [{ value: 7, labels: {} }] } as never);
    return json;
  };
  m.workerReport(100, await reportOf(3));
  m.workerGone(100);
  m.workerReport(200, await reportOf(2));
  m.workerReport(200, await reportOf(4)); // cumulative: the latest replaces the earlier
  const { body, contentType } = await m.render();
  assert.match(contentType, /^text\/plain/);
  assert.equal(value(body, 'lazysnap_read_bytes_total{image_ref="img"}'), 70, '3 READs of the dead worker + 4 of the live one');
  assert.equal(value(body, 'lazysnap_read_latency_microseconds_count{image_ref="img",result="filled"}'), 7);
  assert.equal(value(body, 'lazysnap_test_gauge'), 7, "only the live worker's gauge");
  assert.equal(value(body, 'lazysnap_build_info{version="1.2.3",backend="fscache"}'), 1);
  m.workerGone(200);
  m.workerGone(999); // never reported: nothing to keep
  const after = (await m.render()).body;
  assert.equal(value(after, 'lazysnap_read_bytes_total{image_ref="img"}'), 70);
  assert.equal(value(after, 'lazysnap_test_gauge'), undefined);
  m.workerReport(300, 'not an array');
  assert.equal(value((await m.render()).body, 'lazysnap_read_bytes_total{image_ref="img"}'), 70, 'a malformed report is ignored');
});

test('the cache bound culls idle images least recently used first, down to the low-water mark, and says what prefetch may add', async () => {
  const sizes: Record<string, number> = { a: 40, b: 30, c: 20, d: 10 };
  const gone = new Set<string>();
  const budgets: number[] = [];
  let refuse = '';
  const usage = async () => Object.entries(sizes).filter(([k]) => !gone.has(k)).reduce((n, [, v]) => n + v, 0);
  const b = new CacheBound(80, 60, {
    usage,
    // d is in use: never a candidate; c was used last
    idle: () => [{ fsid: 'c', lastUsedMs: 300 }, { fsid: 'a', lastUsedMs: 100 }, { fsid: 'b', lastUsedMs: 200 }].filter((x) => !gone.has(x.fsid)),
    evict: async (fsid) => {
      if (fsid === refuse) return false; // a container came meanwhile
      gone.add(fsid);
      return true;
    },
    budget: (n) => budgets.push(n),
    log,
  });
  assert.equal(await b.check(), 60, '100 > 80: a (oldest) goes, 60 <= 60 stops it');
  assert.deepEqual([...gone], ['a']);
  assert.deepEqual(budgets, [20]);
  sizes.e = 40; // 100 again
  refuse = 'b';
  assert.equal(await b.check(), 80, 'b turned out in use, so c goes; e is not a candidate (in use), so it stops above the low-water mark');
  assert.deepEqual([...gone], ['a', 'c']);
  assert.equal(b.evictions, 2);
  assert.deepEqual(budgets, [20, 0]);
  assert.equal(await b.check(), 80);
  assert.equal(b.evictions, 2, 'under the bound: nothing culled');
  assert.deepEqual(evictionOrder([{ fsid: 'x', lastUsedMs: 5 }, { fsid: 'y', lastUsedMs: 1 }]), ['y', 'x']);
});

test('status inventory: images by the cri.image-ref label of their layers, lazy or unpacked and why', () => {
  const info = (name: string, kind: Kind, labels: Record<string, string> = {}): Info => ({ name, parent: '', kind, createdUs: 0, updatedUs: 0, labels });
  const ref = 'containerd.io/snapshot/cri.image-ref';
  const inv = inventory([
    info('k8s.io/1/sha256:a', Kind.Committed, { [ref]: 'reg/plain:1' }),
    info('k8s.io/2/sha256:b', Kind.Committed, { [ref]: 'reg/plain:1' }),
    info('k8s.io/remote/sha256:c', Kind.Committed, { [ref]: 'reg/lazy:1', 'containerd.io/snapshot/nydus-blob': 'true' }),
    info('k8s.io/4/sha256:d', Kind.Committed, { [ref]: 'reg/lazy:1', 'containerd.io/snapshot/nydus-bootstrap': 'true' }),
    info('k8s.io/remote/sha256:e', Kind.Committed, { [ref]: 'reg/culled:1', 'containerd.io/snapshot/nydus-blob': 'true' }),
    info('default/5/sha256:f', Kind.Committed),
    info('k8s.io/6/rootfs', Kind.Active),
    info('view', Kind.View),
  ], [{ fsid: 'x', domain: '', bootstrap: '', blobsDir: '', mountpoint: '/m', createdUs: 0, imageRef: 'reg/lazy:1', snapshotId: 4 }], 'fanotify');
  assert.deepEqual(inv.snapshots, { committed: 6, active: 1, view: 1, nydusBlobLayers: 2, withoutImageLabel: 1 });
  assert.deepEqual(inv.images.map((i) => [i.ref, i.served, i.layers]), [['reg/culled:1', 'lazy', 1], ['reg/lazy:1', 'lazy', 2], ['reg/plain:1', 'unpacked', 2]]);
  assert.match(inv.images[0].why, /not mounted now/);
  assert.match(inv.images[1].why, /mounted through fanotify/);
  assert.match(inv.images[2].why, /plain OCI image/);
});
