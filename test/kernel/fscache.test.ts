// EROFS over fscache on a real kernel (the UML test kernel): lazysnapd holds
// /dev/cachefiles, its worker serves, and `lazysnap mount` mounts images.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startLazysnapd, Lazysnapd } from '../support/lazysnapd';
import { unmountAll } from '../support/tmp';
import { run, runOk } from '../support/proc';
import { GUEST_MOUNT_DIRS, guestDir, makeSourceTree, mkfsErofs, requireFscacheKernel, treeDigest, sha256File } from '../support/guest';
import { FIXTURE_BLOB_ID, nydusFixtures } from '../support/fixtures';
import { SnapshotsClient } from '../support/snapshots-client';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { DataBlob } from '../../image/blob/datablob';
import { FileSource } from '../../image/blob/source';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
let dir: string;
let d: Lazysnapd;
let cacheDir: string;

const cli = (...args: string[]) => runOk(process.execPath, [CLI, ...args, '--address', d.address], { timeoutMs: 180_000 });
const status = async () => JSON.parse((await cli('status', '--json')).stdout);

function config(root: string, cache: string, tag = 'lazysnap'): string {
  return `root = "${root}"\n[log]\nlevel = "warn"\n[fscache]\nenabled = true\ncache_dir = "${cache}"\ntag = "${tag}"\n${GUEST_MOUNT_DIRS}`;
}

before(async () => {
  const fscacheDir = requireFscacheKernel();
  dir = guestDir('fscache');
  cacheDir = path.join(fscacheDir, 'cache-main');
  d = await startLazysnapd({ root: path.join(dir, 'root'), address: path.join(dir, 'snap.sock'), config: config(path.join(dir, 'root'), cacheDir) });
});

after(async () => {
  if (dir) await unmountAll(dir);
  await d?.stop();
  // a failed test may leave an image mounted, and then the worker keeps /dev/cachefiles (by design)
  await run('pkill', ['-9', '-f', 'lazysnap-fscache-worker']);
});

test('an image made by mkfs.erofs, mounted through fscache: every file matches its source', async () => {
  const src = path.join(dir, 'src');
  makeSourceTree(src, { files: 300, bigFiles: 2, bigSize: 3 << 20 });
  const img = path.join(dir, 'plain.erofs');
  await mkfsErofs(img, src);
  const mnt = path.join(dir, 'mnt-plain');
  fs.mkdirSync(mnt);
  const out = (await cli('mount', img, mnt)).stdout;
  assert.match(out, /^mounted .* \(fsid lazysnap-[0-9a-f]{24}\)/);
  const opts = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === mnt)?.split(' ')[3].split(',');
  assert.ok(opts?.includes('nosuid') && opts.includes('nodev') && opts.includes('ro'), `mount options ${opts}`);
  assert.deepEqual(treeDigest(mnt), treeDigest(src));
  const s = await status();
  assert.equal(s.mounts.length, 1);
  assert.equal(s.mounts[0].mountpoint, mnt);
  assert.ok(s.worker.pid > 0);
  assert.ok(s.worker.objects.length >= 1, 'the worker holds the object');
  assert.equal(s.worker.stats.readsFailed, 0);
  assert.ok(s.worker.stats.bytesWritten >= 6 << 20);
  const volumeDir = path.join(cacheDir, 'cache', `Ierofs,${s.mounts[0].fsid}`);
  assert.ok(fs.existsSync(volumeDir), `cache files under ${volumeDir}`);
  await cli('umount', mnt);
  assert.equal((await status()).mounts.length, 0);
  const gone = Date.now() + 5000;
  while (fs.existsSync(volumeDir) && Date.now() < gone) await new Promise((r) => setTimeout(r, 100));
  assert.ok(!fs.existsSync(volumeDir), 'umount removes the cache files of the unused volume');
});

test('the upstream nydus fixture through the device table: every file read, every chunk verified', async () => {
  const fx = nydusFixtures();
  const mnt = path.join(dir, 'mnt-nydus');
  fs.mkdirSync(mnt);
  await cli('mount', fx.bootstrapPath, mnt, '--blobs', fx.blobsDir, '--domain', 'lazysnap-test');
  assert.deepEqual(fs.readdirSync(mnt).sort(), ['lib.rs', 'sync_io.rs']);
  assert.equal(fs.statSync(path.join(mnt, 'lib.rs')).size, 16931);
  assert.equal(fs.statSync(path.join(mnt, 'sync_io.rs')).size, 13400);
  // The bytes the kernel returns are the chunks, decompressed and digest-checked here independently.
  const bs = new Bootstrap(fx.bootstrap());
  const blob = await DataBlob.open(bs.blobs[0], await FileSource.open(path.join(fx.blobsDir, FIXTURE_BLOB_ID)));
  const [c0, c1] = await Promise.all(blob.chunks.map((c) => blob.readChunk(c)));
  assert.ok(fs.readFileSync(path.join(mnt, 'lib.rs')).equals(c0));
  assert.ok(fs.readFileSync(path.join(mnt, 'sync_io.rs')).equals(c1));
  const s = await status();
  const cookies = s.worker.objects.map((o: { cookie: string }) => o.cookie);
  assert.ok(cookies.includes(FIXTURE_BLOB_ID), `the blob was opened by its device tag (${cookies})`);
  assert.equal(s.worker.stats.readsFailed, 0);
  await cli('umount', mnt);
});

test('a worker killed with SIGKILL mid-read is replaced; reads continue and match', async () => {
  const src = path.join(dir, 'src2');
  makeSourceTree(src, { files: 50, bigFiles: 4, bigSize: 4 << 20 });
  const img = path.join(dir, 'kill.erofs');
  await mkfsErofs(img, src);
  const mnt = path.join(dir, 'mnt-kill');
  fs.mkdirSync(mnt);
  await cli('mount', img, mnt);
  const before = (await status()).worker;
  const reading = (async () => {
    for (let i = 0; i < 4; i++) assert.equal(sha256File(path.join(mnt, `big${i}`)), sha256File(path.join(src, `big${i}`)));
  })();
  await new Promise((r) => setTimeout(r, 50));
  process.kill(before.pid, 'SIGKILL');
  await reading;
  assert.deepEqual(treeDigest(mnt), treeDigest(src));
  const after = (await status()).worker;
  assert.notEqual(after.pid, before.pid);
  assert.ok(after.activations > before.activations);
  await cli('umount', mnt);
});

test('mount errors are clear: missing bootstrap, not a directory, not EROFS, double mount', async () => {
  const mnt = path.join(dir, 'mnt-err');
  fs.mkdirSync(mnt);
  const fails = async (args: string[], re: RegExp) => {
    const r = await run(process.execPath, [CLI, ...args, '--address', d.address]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr.trim(), re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  };
  await fails(['mount', path.join(dir, 'nope.img'), mnt], /bootstrap .*nope.img does not exist/);
  await fails(['mount', path.join(dir, 'plain.erofs'), path.join(dir, 'plain.erofs')], /is not a directory/);
  fs.writeFileSync(path.join(dir, 'junk.img'), Buffer.alloc(8192, 1));
  await fails(['mount', path.join(dir, 'junk.img'), mnt], /superblock.magic/);
  await fails(['umount', mnt], /is not a lazysnap mount/);
  assert.equal((await status()).mounts.length, 0, 'failed mounts leave nothing registered');
});

test('a worker that cannot start does not take lazysnapd down', async () => {
  // Only one process at a time may open /dev/cachefiles (EBUSY): the main lazysnapd steps aside.
  await d.stop();
  const sub = guestDir('badworker');
  const root = path.join(sub, 'root');
  const bad = await startLazysnapd({
    root,
    address: path.join(sub, 'snap.sock'),
    config: config(root, path.join(path.dirname(cacheDir), 'cache-bad'), 'lazysnap-bad'),
    env: { ...process.env, LAZYSNAP_FSCACHE_WORKER: '/nonexistent/worker.js' },
  });
  try {
    await new Promise((r) => setTimeout(r, 1500)); // several failed starts and backoffs
    const c = new SnapshotsClient(bad.address);
    await c.prepare('still-serving', '', {});
    c.close();
    const r = await runOk(process.execPath, [CLI, 'status', '--json', '--address', bad.address]);
    const s = JSON.parse(r.stdout);
    assert.ok(s.worker.error, 'status reports the worker problem');
    assert.equal(bad.proc.exitCode, null, 'lazysnapd is alive');
  } finally {
    await bad.stop();
  }
});
