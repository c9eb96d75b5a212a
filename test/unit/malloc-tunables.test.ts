// The glibc malloc settings workers start with (supervisor/malloc-tunables.ts):
// ours are added, an operator's own GLIBC_TUNABLES are kept and win on a name
// both set. That a started worker has them is checked in unit/hang, which
// starts real workers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { workerTunables } from '../../supervisor/malloc-tunables';

test('workers get a 32 MiB mmap threshold and a 256 MiB trim threshold', () => {
  assert.equal(workerTunables(undefined), 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456');
  assert.equal(workerTunables(''), workerTunables(undefined));
});

test("an operator's own tunables are kept, and theirs win on a name both set", () => {
  assert.equal(workerTunables('glibc.malloc.arena_max=2'),
    'glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456');
  assert.equal(workerTunables('glibc.malloc.trim_threshold=0:glibc.malloc.arena_max=2'),
    'glibc.malloc.trim_threshold=0:glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=33554432');
  // an empty item or one without '=' is not a setting, and is dropped
  assert.equal(workerTunables('::junk:glibc.malloc.mmap_threshold=1048576'),
    'glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=268435456');
});
