import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mountsFor } from '../../snapshotter/mounts';
import { Kind } from '../../snapshotter/storage/info';

const layout = { upper: (id: number) => `/r/${id}/fs`, work: (id: number) => `/r/${id}/work`, indexOff: true };

test('a layer without parents is a bind mount, read-only for views', () => {
  assert.deepEqual(mountsFor({ id: 1, kind: Kind.Active, parentIds: [] }, layout), [
    { type: 'bind', source: '/r/1/fs', options: ['rw', 'rbind'] },
  ]);
  assert.deepEqual(mountsFor({ id: 1, kind: Kind.View, parentIds: [] }, layout), [
    { type: 'bind', source: '/r/1/fs', options: ['ro', 'rbind'] },
  ]);
});

test('an active snapshot is an overlay with the nearest parent first', () => {
  assert.deepEqual(mountsFor({ id: 3, kind: Kind.Active, parentIds: [2, 1] }, layout), [
    { type: 'overlay', source: 'overlay', options: ['index=off', 'workdir=/r/3/work', 'upperdir=/r/3/fs', 'lowerdir=/r/2/fs:/r/1/fs'] },
  ]);
});

test('a view of one layer binds that layer read-only; of several, a read-only overlay', () => {
  assert.deepEqual(mountsFor({ id: 3, kind: Kind.View, parentIds: [2] }, layout), [
    { type: 'bind', source: '/r/2/fs', options: ['ro', 'rbind'] },
  ]);
  assert.deepEqual(mountsFor({ id: 4, kind: Kind.View, parentIds: [3, 2] }, { ...layout, indexOff: false }), [
    { type: 'overlay', source: 'overlay', options: ['lowerdir=/r/3/fs:/r/2/fs'] },
  ]);
});
