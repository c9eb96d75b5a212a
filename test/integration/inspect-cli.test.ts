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
