import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chainIds, gcLabels, imageName, planUnpack } from '../../pull/plan';
import { LABEL } from '../../snapshotter/remote';
import type { ImageManifest } from '../../registry/manifest';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const sha = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

// A nydus manifest as the converter writes it: data blobs, then the bootstrap layer.
const manifest: ImageManifest = {
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('c'), size: 100 },
  layers: [
    { mediaType: 'application/vnd.oci.image.layer.nydus.blob.v1', digest: d('1'), size: 10, annotations: { [LABEL.nydusBlob]: 'true', 'org.example/other': 'x' } },
    { mediaType: 'application/vnd.oci.image.layer.nydus.blob.v1', digest: d('2'), size: 20, annotations: { [LABEL.nydusBlob]: 'true' } },
    { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('3'), size: 30, annotations: { [LABEL.nydusBootstrap]: 'true', [LABEL.nydusFsVersion]: '6' } },
  ],
};
const diffIds = [d('a'), d('b'), d('e')];

test('chain IDs: the first is the diff ID, each next one the sha256 of "<parent> <diffID>"', () => {
  const c = chainIds(diffIds);
  assert.equal(c[0], d('a'));
  assert.equal(c[1], sha(`${d('a')} ${d('b')}`));
  assert.equal(c[2], sha(`${c[1]} ${d('e')}`));
  assert.deepEqual(chainIds([]), []);
});

test('the plan: blob layers remote with the labels lazysnapd needs, the bootstrap unpacked, the chain in order', () => {
  const p = planUnpack({ imageRef: '127.0.0.1:5000/a/b:1', manifestDigest: d('m'), manifest, diffIds });
  assert.deepEqual(p.steps.map((s) => s.remote), [true, true, false]);
  assert.deepEqual(p.fetched.map((l) => l.digest), [d('3')], 'only the bootstrap layer is downloaded');
  assert.equal(p.steps[0].parent, '');
  assert.equal(p.steps[1].parent, p.steps[0].chainId);
  assert.equal(p.top, p.steps[2].chainId);
  const l = p.steps[0].labels;
  assert.equal(l[LABEL.snapshotRef], p.steps[0].chainId);
  assert.equal(l[LABEL.imageRef], '127.0.0.1:5000/a/b:1');
  assert.equal(l[LABEL.manifestDigest], d('m'));
  assert.equal(l[LABEL.layerDigest], d('1'));
  assert.equal(l[LABEL.nydusBlob], 'true');
  assert.equal(l['org.example/other'], undefined, 'only containerd.io/snapshot/ annotations become labels');
  assert.equal(p.steps[2].labels[LABEL.nydusFsVersion], '6');
});

test('GC labels: manifest → config and the layers it holds; config → the top snapshot; index → manifest', () => {
  const p = planUnpack({ imageRef: 'r', manifestDigest: d('m'), manifest, diffIds });
  const g = gcLabels(p, manifest, 'lazysnap');
  assert.deepEqual(g.manifest, { 'containerd.io/gc.ref.content.config': d('c'), 'containerd.io/gc.ref.content.l.2': d('3') });
  assert.deepEqual(g.config, { 'containerd.io/gc.ref.snapshot.lazysnap': p.top });
  assert.deepEqual(g.index(d('m')), { 'containerd.io/gc.ref.content.m.0': d('m') });
});

test('bad input: a diff ID count that does not match the layers, an image without layers', () => {
  assert.throws(() => planUnpack({ imageRef: 'r', manifestDigest: d('m'), manifest, diffIds: diffIds.slice(1) }), /2 diff IDs for 3 layers/);
  assert.throws(() => planUnpack({ imageRef: 'r', manifestDigest: d('m'), manifest: { ...manifest, layers: [] }, diffIds: [] }), /no layers/);
});

test('image names as containerd writes them', () => {
  assert.equal(imageName({ host: '127.0.0.1:5000', repo: 'a/b', tag: '1' }), '127.0.0.1:5000/a/b:1');
  assert.equal(imageName({ host: 'docker.io', repo: 'library/busybox', digest: d('f') }), `docker.io/library/busybox@${d('f')}`);
});
