// A converted multi-layer image (whiteouts, an opaque dir, hard links,
// devices, xattrs) served lazily through fscache: the bootstrap from its
// bootstrap layer, the blobs decompressed and verified chunk by chunk on
// READ. The mounted tree must equal what `umoci unpack` makes of the original.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startLazysnapd, Lazysnapd } from '../support/lazysnapd';
import { unmountAll } from '../support/tmp';
import { run, runOk } from '../support/proc';
import { GUEST_MOUNT_DIRS, guestDir, requireFscacheKernel } from '../support/guest';
import { buildLayeredImage, diffTrees, dumpTree, readNydusLayout } from '../support/oci-layout';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
let dir: string;
let d: Lazysnapd;

before(async () => {
  const fscacheDir = requireFscacheKernel();
  dir = guestDir('converted'); // tmpfs: xattrs survive umoci unpack here (not on hostfs)
  const root = path.join(dir, 'root');
  d = await startLazysnapd({
    root,
    address: path.join(dir, 'snap.sock'),
    config: `root = "${root}"\n[log]\nlevel = "warn"\n[fscache]\nenabled = true\ncache_dir = "${path.join(fscacheDir, 'converted')}"\n${GUEST_MOUNT_DIRS}`,
  });
});

after(async () => {
  if (dir) await unmountAll(dir);
  await d?.stop();
  // a failed test may leave an image mounted, and then the worker keeps /dev/cachefiles (by design)
  await run('pkill', ['-9', '-f', 'lazysnap-fscache-worker']);
});

test('a converted two-layer image through fscache equals umoci unpack of the original', { timeout: 600_000 }, async () => {
  const { layoutDir, ref } = await buildLayeredImage(path.join(dir, 'build'));
  const out = path.join(dir, 'nydus');
  await runOk(process.execPath, [CLI, 'convert', `oci:${layoutDir}:${ref}`, `oci:${out}:nydus`], { timeoutMs: 300_000 });
  const n = await readNydusLayout(out, 'nydus');
  assert.ok(n.blobFiles.length >= 2, 'one blob per layer with data');
  const boot = path.join(dir, 'image.boot');
  fs.writeFileSync(boot, n.bootstrap);

  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  // blobs are named by digest = blob id in the layout's blobs/sha256
  await runOk(process.execPath, [CLI, 'mount', boot, mnt, '--blobs', n.blobsDir, '--address', d.address]);
  const bundle = path.join(dir, 'bundle');
  await runOk('umoci', ['unpack', '--image', `${layoutDir}:${ref}`, bundle], { timeoutMs: 300_000 });
  const want = await dumpTree(path.join(bundle, 'rootfs'));
  const got = await dumpTree(mnt);
  const diffs = diffTrees(want, got);
  assert.deepEqual(diffs.slice(0, 50), [], `${diffs.length} differences`);
  assert.equal(got.size, want.size);
  const s = JSON.parse((await runOk(process.execPath, [CLI, 'status', '--json', '--address', d.address])).stdout);
  assert.equal(s.worker.stats.readsFailed, 0);
  const cookies = new Set(s.worker.objects.map((o: { cookie: string }) => o.cookie));
  for (const f of n.blobFiles) assert.ok(cookies.has(path.basename(f)), `blob ${path.basename(f)} was opened by its tag`);
  await runOk(process.execPath, [CLI, 'umount', mnt, '--address', d.address]);

  // The same image mounted straight from its OCI layout: the CLI finds the bootstrap layer and the blobs.
  await runOk(process.execPath, [CLI, 'mount', `oci:${out}:nydus`, mnt, '--address', d.address]);
  assert.deepEqual(diffTrees(want, await dumpTree(mnt)), []);
  await runOk(process.execPath, [CLI, 'umount', mnt, '--address', d.address]);
  const notNydus = await run(process.execPath, [CLI, 'mount', `oci:${layoutDir}:${ref}`, mnt, '--address', d.address]);
  assert.equal(notNydus.code, 1);
  assert.match(notNydus.stderr, /not a nydus bootstrap .*convert it first/);
});
