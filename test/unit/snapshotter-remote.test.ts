// Nydus images in the snapshotter: blob layers committed without content,
// and snapshots above a bootstrap layer mounted through LazyMounts.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { status } from '@grpc/grpc-js';
import { Snapshotter, LazyMounts } from '../../snapshotter/snapshotter';
import { SnapshotError } from '../../snapshotter/storage/errors';
import { Kind, Labels } from '../../snapshotter/storage/info';
import { LABEL } from '../../snapshotter/remote';
import { matches, parseFilters } from '../../snapshotter/filters';
import { parseConfig } from '../../config/config';
import { mountsOnPull } from '../../supervisor/setup';

let root: string;
let sn: Snapshotter;
let calls: string[] = [];

class FakeLazy implements LazyMounts {
  async ensure(id: number, file: string, labels: Labels) {
    calls.push(`ensure ${id} ${path.relative(sn.snapshotsDir, file)} ${labels[LABEL.imageRef] ?? ''}`);
    return `/lazy/${id}`;
  }
  async release(id: number) {
    calls.push(`release ${id}`);
  }
  starting(id: number) {
    calls.push(`starting ${id}`);
  }
}

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-remote-'));
  sn = Snapshotter.open(path.join(root, 'state'), pino({ level: 'silent' }));
  sn.lazy = new FakeLazy();
  calls = [];
});
afterEach(() => {
  sn.close();
  fs.rmSync(root, { recursive: true, force: true });
});

const blobLabels = (chain: string, digest: string): Labels => ({
  [LABEL.snapshotRef]: chain,
  [LABEL.nydusBlob]: 'true',
  [LABEL.imageRef]: '127.0.0.1:5001/test/app:1',
  [LABEL.layerDigest]: digest,
});
const isCode = (c: status) => (e: unknown) => e instanceof SnapshotError && e.code === c;

test('a nydus blob layer is committed without content and answered with AlreadyExists', async () => {
  await assert.rejects(sn.prepare('default/1/extract-1 sha256:c1', '', blobLabels('sha256:c1', 'sha256:l1')), isCode(status.ALREADY_EXISTS));
  await assert.rejects(
    sn.prepare('default/3/extract-2 sha256:c2', 'default/remote/sha256:c1', blobLabels('sha256:c2', 'sha256:l2')),
    isCode(status.ALREADY_EXISTS),
  );
  // what containerd looks up next (formats.md §1.5)
  const f = parseFilters(['labels."containerd.io/snapshot.ref"==sha256:c2,parent=="default/remote/sha256:c1"']);
  const found = sn.list([]).filter((i) => matches(f, i));
  assert.equal(found.length, 1);
  assert.equal(found[0].kind, Kind.Committed);
  assert.equal(found[0].labels[LABEL.layerDigest], 'sha256:l2');
  // the same layer again (another pull): AlreadyExists, nothing new
  await assert.rejects(sn.prepare('default/5/extract-3 sha256:c1', '', blobLabels('sha256:c1', 'sha256:l1')), isCode(status.ALREADY_EXISTS));
  assert.equal(sn.list([]).length, 2);
  // in another namespace the same chain is its own snapshot
  await assert.rejects(sn.prepare('k8s.io/9/extract-4 sha256:c1', '', blobLabels('sha256:c1', 'sha256:l1')), isCode(status.ALREADY_EXISTS));
  assert.equal(sn.list([]).length, 3);
});

test('above a bootstrap layer, the image is one lazy EROFS mount; removing the layer releases it', async () => {
  await assert.rejects(sn.prepare('default/1/x sha256:c1', '', blobLabels('sha256:c1', 'sha256:l1')));
  const blob = 'default/remote/sha256:c1';
  // the bootstrap layer: unpacked by containerd as usual
  const bootLabels = { [LABEL.nydusBootstrap]: 'true', [LABEL.imageRef]: '127.0.0.1:5001/test/app:1' };
  const m = await sn.prepare('default/2/extract-b', blob, bootLabels);
  assert.ok(m[0].options.includes(`lowerdir=${path.join(sn.snapshotsDir, '1', 'fs')}`), 'unpacked over the (empty) blob layer, as usual');
  const bootId = 2;
  fs.mkdirSync(path.join(sn.upper(bootId), 'image'));
  fs.writeFileSync(path.join(sn.upper(bootId), 'image', 'image.boot'), 'bootstrap');
  await sn.commit('default/2/sha256:boot', 'default/2/extract-b', bootLabels);
  assert.equal(calls.length, 0);

  const c = await sn.prepare('default/3/container', 'default/2/sha256:boot', {});
  assert.deepEqual(calls, [`starting ${bootId}`, `ensure ${bootId} 2/fs/image/image.boot 127.0.0.1:5001/test/app:1`], 'a container starts: prefetch is told');
  assert.equal(c[0].type, 'overlay');
  assert.ok(c[0].options.includes('lowerdir=/lazy/2'), c[0].options.join(' '));
  assert.ok(c[0].options.some((o) => o.startsWith('upperdir=')));
  assert.deepEqual(await sn.mounts('default/3/container'), c);
  const v = await sn.view('default/4/view', 'default/2/sha256:boot', {});
  assert.deepEqual(v, [{ type: 'bind', source: '/lazy/2', options: ['ro', 'rbind'] }]);
  assert.equal(calls.filter((x) => x.startsWith('starting')).length, 1, 'Mounts and View start no container');

  await assert.rejects(sn.remove('default/2/sha256:boot'), isCode(status.FAILED_PRECONDITION));
  assert.ok(!calls.includes(`release ${bootId}`), 'not released while children exist');
  await sn.remove('default/3/container');
  await sn.remove('default/4/view');
  await sn.remove('default/2/sha256:boot');
  assert.equal(calls.at(-1), `release ${bootId}`);
});

test('a nydus blob layer that cannot be served lazily fails the pull at once, naming what to change; nothing is committed', async () => {
  const lines: { msg: string; image: string | null; layer: string; why: string }[] = [];
  const logged = Snapshotter.open(path.join(root, 'logged'), pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l)) }));
  try {
    const { [LABEL.imageRef]: _ref, ...noRef } = blobLabels('sha256:c4', 'sha256:l4');
    const cases: [string, Labels, boolean, RegExp][] = [
      ['no fscache', blobLabels('sha256:c1', 'sha256:l1'), false, /serves no nydus images on this node/],
      ['no snapshot.ref', { ...blobLabels('sha256:c2', 'sha256:l2'), [LABEL.snapshotRef]: '' }, true, /no containerd.io\/snapshot.ref label/],
      ['RAFS v5', { ...blobLabels('sha256:c3', 'sha256:l3'), [LABEL.nydusFsVersion]: '5' }, true, /RAFS v5 image/],
      // containerd 2.x's unpacker without the proxy plugin's exports: snapshot.ref and nydus-blob, no image ref
      ['no image ref', noRef, true, /no containerd.io\/snapshot\/cri.image-ref label.*enable_remote_snapshot_annotations = "true".*disable_snapshot_annotations = false.*lazysnap pull/],
    ];
    for (const [i, [what, labels, lazy, why]] of cases.entries()) {
      logged.lazy = lazy ? new FakeLazy() : undefined;
      await assert.rejects(logged.prepare(`default/${i}/x`, '', labels), (e: unknown) => {
        assert.ok(isCode(status.FAILED_PRECONDITION)(e), `${what}: ${String(e)}`);
        assert.match((e as Error).message, why, what);
        assert.ok((e as Error).message.includes(labels[LABEL.layerDigest]), `${what}: names the layer`);
        return true;
      });
      assert.equal(logged.list([]).length, 0, `${what}: nothing committed or left active`);
      const l = lines.at(-1)!;
      assert.match(l.msg, /refused/, what);
      assert.equal(l.image, labels[LABEL.imageRef] ?? null, what);
      assert.equal(l.layer, labels[LABEL.layerDigest], what);
      assert.match(l.why, why, what);
    }
    logged.lazy = new FakeLazy();
    const n = lines.length;
    await assert.rejects(logged.prepare('default/9/x', '', { ...blobLabels('sha256:c9', 'sha256:l9'), [LABEL.nydusFsVersion]: '6' }), isCode(status.ALREADY_EXISTS));
    assert.ok(!lines.slice(n).some((l) => /refused/.test(l.msg)), 'a lazy layer is not refused');
  } finally {
    logged.close();
  }
});

test('mounted at pull (prefetch "on-pull"): committing the bootstrap layer mounts the image, so its blobs are opened before a container asks', async () => {
  for (const [prefetch, want] of [['off', false], ['on-pull', true], ['on-start', false]] as const) {
    assert.equal(mountsOnPull(parseConfig(`[fscache]\nprefetch = "${prefetch}"\n`)), want, `prefetch = "${prefetch}"`);
  }
  sn.lazy = Object.assign(new FakeLazy(), { mountOnPull: true });
  await assert.rejects(sn.prepare('default/1/x sha256:c1', '', blobLabels('sha256:c1', 'sha256:l1')));
  const bootLabels = { [LABEL.nydusBootstrap]: 'true', [LABEL.imageRef]: '127.0.0.1:5001/test/app:1' };
  await sn.prepare('default/2/extract-b', 'default/remote/sha256:c1', bootLabels);
  fs.mkdirSync(path.join(sn.upper(2), 'image'));
  fs.writeFileSync(path.join(sn.upper(2), 'image', 'image.boot'), 'bootstrap');
  await sn.commit('default/2/sha256:boot', 'default/2/extract-b', bootLabels);
  assert.deepEqual(calls, ['ensure 2 2/fs/image/image.boot 127.0.0.1:5001/test/app:1'], 'mounted at commit, before any container');
  // a plain layer's commit mounts nothing
  await sn.prepare('default/3/extract-p', '', {});
  await sn.commit('default/3/sha256:plain', 'default/3/extract-p', {});
  assert.equal(calls.length, 1);
});
