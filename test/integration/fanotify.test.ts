// The fanotify pre-content backend on the host's own kernel (>= 6.14): a
// nydus image mounted file-backed, its blob files filled on demand through
// content/ from local blobs, every byte equal to the source.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startLazysnapd, Lazysnapd } from '../support/lazysnapd';
import { makeTempDir, removeTempDir, unmountAll } from '../support/tmp';
import { runOk } from '../support/proc';
import { makeSourceTree, treeDigest } from '../support/guest';
import { nydusFromDir } from '../support/nydus-from-dir';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
let dir: string;
let d: Lazysnapd;
let ref: string;
let src: string;

const cli = async (...a: string[]) => (await runOk(process.execPath, [CLI, ...a, '--address', d.address], { timeoutMs: 300_000 })).stdout;

before(async () => {
  dir = await makeTempDir('fanotify');
  src = path.join(dir, 'src');
  makeSourceTree(src, { files: 300, bigFiles: 3, bigSize: 6 << 20 });
  ref = await nydusFromDir(src, path.join(dir, 'img'));
  const root = path.join(dir, 'root');
  d = await startLazysnapd({
    root,
    address: path.join(dir, 'snap.sock'),
    config: `root = "${root}"\n[log]\nlevel = "info"\n[fscache]\nenabled = true\nbackend = "fanotify"\n[admin]\nmount_dirs = ["${dir}"]\n`,
  });
});

after(async () => {
  if (dir) await unmountAll(dir);
  await d?.stop();
  if (dir && !process.env.KEEP) await removeTempDir(dir);
});

test('a nydus image read through fanotify pre-content equals its source', { timeout: 300_000 }, async () => {
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  await cli('mount', ref, mnt);
  const blobs = fs.readdirSync(path.join(d.root, 'cache'), { recursive: true }) as string[];
  assert.ok(blobs.length >= 2, `a volume dir and its blob file: ${blobs}`);
  assert.deepEqual(treeDigest(mnt), treeDigest(src));
  const s = JSON.parse(await cli('status', '--json'));
  assert.equal(s.worker.backend, 'fanotify');
  assert.ok(s.worker.stats.fills > 0, JSON.stringify(s.worker.stats));
  assert.equal(s.worker.stats.eventsDenied, 0);
  await cli('umount', mnt);
  assert.deepEqual(fs.readdirSync(path.join(d.root, 'cache')), [], 'an unmounted image leaves no blob files');
});
