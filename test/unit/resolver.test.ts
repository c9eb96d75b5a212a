// The worker's resolver on real SQLite metadata and real files: a plain EROFS
// image is told from a RAFS bootstrap by its first block alone, and the fds
// of contents are released exactly when neither the cache nor an open object
// holds them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MetaStore } from '../../snapshotter/storage/metastore';
import { MetadataResolver } from '../../worker/resolver';
import { EROFS_MAGIC, EROFS_SUPER_OFFSET } from '../../image/erofs/superblock';
import { FIXTURE_BLOB_ID, nydusFixtures } from '../support/fixtures';

const openFds = () => fs.readdirSync('/proc/self/fd').length;

function setup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-resolver-'));
  const store = new MetaStore(path.join(dir, 'metadata.db'));
  return { dir, store, db: path.join(dir, 'metadata.db') };
}

test('a plain EROFS image is recognised from its first block: a 3 GiB image is never read whole', async () => {
  const { dir, store, db } = setup();
  const img = path.join(dir, 'big.erofs');
  const head = Buffer.alloc(4096);
  head.writeUInt32LE(EROFS_MAGIC, EROFS_SUPER_OFFSET); // feature_compat without RAFS_V6
  fs.writeFileSync(img, head);
  fs.truncateSync(img, 3 * 2 ** 30); // sparse; fs.readFileSync refuses files over 2 GiB
  const extra = path.join(dir, 'devs');
  fs.mkdirSync(extra);
  fs.writeFileSync(path.join(extra, 'dev1'), Buffer.alloc(8192, 7));
  store.fscacheImages.add({ fsid: 'big', domain: '', bootstrap: img, blobsDir: extra });
  const r = MetadataResolver.open(db);
  const own = await r.resolve('big', 'big');
  assert.equal(own.size, 3 * 2 ** 30);
  const dev = await r.resolve('big', 'dev1');
  assert.equal(dev.size, 8192);
  r.release(own);
  r.release(dev);
  r.close();
  store.close();
});

test('contents are closed when evicted and unused, or at their last release', async () => {
  const { dir, store, db } = setup();
  const fx = nydusFixtures();
  const blobs = path.join(dir, 'blobs');
  fs.mkdirSync(blobs);
  const boot = path.join(dir, 'rafs.boot');
  fs.writeFileSync(boot, fx.bootstrap());
  fs.copyFileSync(path.join(fx.blobsDir, FIXTURE_BLOB_ID), path.join(blobs, FIXTURE_BLOB_ID));
  // 300 images (the cache keeps 256), each with its own volume: each resolve opens a new fd.
  for (let i = 0; i < 300; i++) store.fscacheImages.add({ fsid: `img${i}`, domain: '', bootstrap: boot, blobsDir: blobs });
  const r = MetadataResolver.open(db);
  const before = openFds();
  const held = await r.resolve('img0', FIXTURE_BLOB_ID); // in use by an "object" throughout
  for (let i = 1; i < 300; i++) r.release(await r.resolve(`img${i}`, FIXTURE_BLOB_ID));
  await new Promise((res) => setTimeout(res, 50)); // evictions close after a turn of the loop
  const during = openFds() - before;
  assert.ok(during <= 257, `at most the cache's 256 contents and the one in use keep an fd (${during} open)`);
  assert.ok(during >= 200, `cached contents stay open for the next OPEN (${during} open)`);
  // img0 was evicted long ago but is in use: it still reads.
  const out: Buffer[] = [];
  await held.fill(0, 4096, async (_off, b) => void out.push(Buffer.from(b)), (n) => Buffer.alloc(n));
  assert.equal(out.length, 1);
  r.release(held); // the last user of an evicted content: closed now
  await new Promise((res) => setTimeout(res, 50));
  assert.equal(openFds() - before, during - 1);
  r.close();
  await new Promise((res) => setTimeout(res, 50));
  assert.ok(openFds() - before <= 1, `close() releases the cached contents (${openFds() - before} left)`);
  store.close();
});
