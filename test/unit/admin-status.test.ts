// lazysnap status: which blobs are an image's, in a volume shared by several.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blobsOf, type WorkerObject } from '../../admin/service';

const obj = (volume: string, cookie: string, present?: number): WorkerObject => ({
  volume, cookie, size: 100, ...(present === undefined ? {} : { present: { bytes: 100, bytesPresent: present, fetchedBytes: present / 2 } }),
});

test('an image lists its own blobs in device-table order, open or not; other images\' blobs and its bootstrap are left out', () => {
  const objects = [obj('dom', 'fsid-a'), obj('dom', 'b2', 40), obj('dom', 'other', 100), obj('elsewhere', 'b1', 100)];
  assert.deepEqual(blobsOf('dom', 'fsid-a', ['b1', 'b2'], objects), [
    { blob: 'b1', open: false, bytes: null, bytesPresent: null, fetchedBytes: null },
    { blob: 'b2', open: true, bytes: 100, bytesPresent: 40, fetchedBytes: 20 },
  ]);
  // a bootstrap whose device table cannot be read: what the worker has open in the volume
  assert.deepEqual(blobsOf('dom', 'fsid-a', null, objects).map((b) => b.blob), ['b2', 'other']);
  // a local (flat) blob has no presence: its size, present unknown
  assert.deepEqual(blobsOf('v', 'f', ['x'], [obj('v', 'x')]), [{ blob: 'x', open: true, bytes: 100, bytesPresent: null, fetchedBytes: null }]);
});
