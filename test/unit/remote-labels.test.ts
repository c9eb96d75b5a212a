import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LABEL, nydusLayer } from '../../snapshotter/remote';

test('nydus layers are told apart by their inherited annotations', () => {
  assert.equal(nydusLayer({ [LABEL.nydusBlob]: 'true', [LABEL.snapshotRef]: 'sha256:x' }), 'blob');
  assert.equal(nydusLayer({ [LABEL.nydusBootstrap]: 'true' }), 'bootstrap');
  assert.equal(nydusLayer({ [LABEL.snapshotRef]: 'sha256:x' }), null);
  assert.equal(nydusLayer({ [LABEL.nydusBlob]: 'false' }), null);
});
