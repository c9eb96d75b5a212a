import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LABEL, nydusLayer, parseImageRef } from '../../snapshotter/remote';

test('nydus layers are told apart by their inherited annotations', () => {
  assert.equal(nydusLayer({ [LABEL.nydusBlob]: 'true', [LABEL.snapshotRef]: 'sha256:x' }), 'blob');
  assert.equal(nydusLayer({ [LABEL.nydusBootstrap]: 'true' }), 'bootstrap');
  assert.equal(nydusLayer({ [LABEL.snapshotRef]: 'sha256:x' }), null);
  assert.equal(nydusLayer({ [LABEL.nydusBlob]: 'false' }), null);
});

test('image references as containerd normalises them', () => {
  assert.deepEqual(parseImageRef('127.0.0.1:5001/test/busybox:1'), { host: '127.0.0.1:5001', repository: 'test/busybox', reference: '1' });
  assert.deepEqual(parseImageRef('busybox'), { host: 'docker.io', repository: 'library/busybox', reference: 'latest' });
  assert.deepEqual(parseImageRef('ghcr.io/a/b@sha256:abc'), { host: 'ghcr.io', repository: 'a/b', reference: 'sha256:abc' });
  assert.deepEqual(parseImageRef('localhost/x:y'), { host: 'localhost', repository: 'x', reference: 'y' });
  assert.deepEqual(parseImageRef('user/app:v1'), { host: 'docker.io', repository: 'user/app', reference: 'v1' });
  assert.throws(() => parseImageRef('Bad/Ref'), /not a valid image reference/);
});
