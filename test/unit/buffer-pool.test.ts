// Aligned write buffers reused after their pwrite: the pool alone, and the
// fanotify group's IO, which hands a written buffer back to its pool as the
// fscache device does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BufferPool } from '../../content/buffer-pool';
import { groupIO } from '../../worker/fanotify/group';

test('BufferPool: a given-back buffer comes back for its size, zeroed; another size gets a new one; held bytes are bounded', () => {
  const pool = new BufferPool(3 << 20);
  const a = pool.take(1 << 20);
  a.fill(7);
  pool.give(a);
  const b = pool.take(1 << 20);
  assert.equal(b.buffer, a.buffer, 'the same memory');
  assert.ok(b.every((x) => x === 0), 'zeroed before it is handed out again');
  const c = pool.take(2 << 20);
  assert.notEqual(c.buffer, a.buffer, 'another size: new memory');
  pool.give(b);
  pool.give(c); // 3 MiB held: the bound
  pool.give(Buffer.alloc(1 << 20)); // one more of 1 MiB: beyond the bound, dropped
  assert.equal(pool.take(1 << 20).buffer, a.buffer);
  assert.notEqual(pool.take(1 << 20).buffer, a.buffer, 'nothing more of that size was kept');
  assert.equal(pool.take(2 << 20).buffer, c.buffer);
});

test("groupIO: a buffer written through pwrite is the IO's, and its next alloc of that size reuses it", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-pool-'));
  const fd = fs.openSync(path.join(dir, 'blob'), 'w+');
  try {
    const io = groupIO(-1); // alloc and pwrite do not touch the group fd
    const buf = io.alloc(8192);
    buf.fill(0xab);
    await io.pwrite(fd, buf, 4096);
    const onDisk = Buffer.alloc(8192);
    fs.readSync(fd, onDisk, 0, 8192, 4096);
    assert.ok(onDisk.every((x) => x === 0xab), 'written as given');
    const again = io.alloc(8192);
    assert.equal(again.buffer, buf.buffer, 'reused');
    assert.ok(again.every((x) => x === 0), 'zeroed');
    assert.notEqual(io.alloc(8192).buffer, buf.buffer, 'handed out once');
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
