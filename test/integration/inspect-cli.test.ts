// `lazysnap inspect --verify` on the upstream nydus fixtures, as a user runs it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { run } from '../support/proc';
import { nydusFixtures } from '../support/fixtures';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');

test('lazysnap inspect --verify on the fixtures lists the tree and verifies every chunk', async () => {
  const fx = nydusFixtures();
  const r = await run(process.execPath, [CLI, 'inspect', fx.bootstrapPath, '--blobs', fx.blobsDir, '--verify']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /-rw-r--r-- +0:0 +16931 \/lib\.rs$/m);
  assert.match(r.stdout, /-rw-r--r-- +0:0 +13400 \/sync_io\.rs$/m);
  assert.match(r.stdout, /be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef chunks=2 /);
  assert.equal(r.stdout.trim().split('\n').at(-1), 'chunks=2 verified=2 failed=0');
  const json = JSON.parse((await run(process.execPath, [CLI, 'inspect', fx.bootstrapPath, '--json'])).stdout);
  assert.deepEqual(json.tree.map((t: { path: string; size: number }) => [t.path, t.size]), [['/', 67], ['/lib.rs', 16931], ['/sync_io.rs', 13400]]);
});

test('inspect --verify reports a corrupt chunk and a missing blob, and exits 1', async () => {
  const fx = nydusFixtures();
  const r = await run(process.execPath, [CLI, 'inspect', fx.bootstrapPath, '--blobs', '/nonexistent', '--verify']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /missing blob be7d77eeb719/);
  const bad = await run(process.execPath, [CLI, 'inspect', path.join(fx.dir, 'toc', '2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca')]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^lazysnap: .*superblock/);
  assert.equal(bad.stderr.trim().split('\n').length, 1);
});

test('inspect takes what mount takes: a bootstrap with its blobs beside it, oci:DIR[:TAG], docker://; --verify reads every chunk from each', { timeout: 300_000 }, async () => {
  const { makeTempDir, removeTempDir } = await import('../support/tmp');
  const { nydusFromDir } = await import('../support/nydus-from-dir');
  const { startRegistry } = await import('../support/registry');
  const { pushOciLayout } = await import('../support/images');
  const { readNydusLayout } = await import('../support/oci-layout');
  const fs = await import('node:fs');
  const dir = await makeTempDir('inspect-forms');
  const registry = await startRegistry({ dir: path.join(dir, 'registry') });
  try {
    const src = path.join(dir, 'src');
    fs.mkdirSync(src);
    for (let i = 0; i < 5; i++) fs.writeFileSync(path.join(src, `f${i}`), Buffer.alloc(300_000 + i, i));
    const ref = await nydusFromDir(src, path.join(dir, 'img'));
    const layout = ref.split(':')[1];
    const verified = (out: string) => /^chunks=(\d+) verified=\1 failed=0$/m.test(out);
    const viaLayout = await run(process.execPath, [CLI, 'inspect', ref, '--verify']);
    assert.equal(viaLayout.code, 0, viaLayout.stderr);
    assert.ok(verified(viaLayout.stdout), viaLayout.stdout);
    assert.match(viaLayout.stdout, / 300004 \/f4$/m);
    // a bootstrap file with its blobs beside it, as `lazysnap convert` leaves a directory output
    const n = await readNydusLayout(layout, 'nydus');
    const flat = path.join(dir, 'flat');
    fs.mkdirSync(flat);
    fs.writeFileSync(path.join(flat, 'image.boot'), n.bootstrap);
    for (const b of n.blobFiles) fs.copyFileSync(b, path.join(flat, path.basename(b)));
    const viaFile = await run(process.execPath, [CLI, 'inspect', path.join(flat, 'image.boot'), '--verify']);
    assert.equal(viaFile.code, 0, viaFile.stdout + viaFile.stderr);
    assert.ok(verified(viaFile.stdout));
    await pushOciLayout(layout, 'nydus', registry.url, 'test/inspect:1');
    const viaRegistry = await run(process.execPath, [CLI, 'inspect', `docker://${registry.host}/test/inspect:1`, '--verify']);
    assert.equal(viaRegistry.code, 0, viaRegistry.stderr);
    assert.equal(viaRegistry.stdout, viaLayout.stdout.replace(`bootstrap ${ref}`, `bootstrap docker://${registry.host}/test/inspect:1`), 'the same report from the registry');
    // a registry that is not there: one line naming the host
    const down = await run(process.execPath, [CLI, 'inspect', 'docker://127.0.0.1:1/test/inspect:1']);
    assert.equal(down.code, 1);
    assert.equal(down.stderr.trim().split('\n').length, 1, down.stderr);
    assert.match(down.stderr, /^lazysnap: .*127\.0\.0\.1:1.*(refused|ECONNREFUSED)/);
  } finally {
    await registry.stop();
    await removeTempDir(dir);
  }
});
