import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { diskUsage } from '../../snapshotter/usage';

test('disk usage counts each inode once, in 512-byte blocks', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'du-'));
  try {
    fs.writeFileSync(path.join(dir, 'a'), Buffer.alloc(8192, 1));
    fs.linkSync(path.join(dir, 'a'), path.join(dir, 'b'));
    const u = await diskUsage(dir);
    const blocks = Number(fs.statSync(path.join(dir, 'a')).blocks) * 512 + Number(fs.statSync(dir).blocks) * 512;
    assert.equal(u.inodes, 2);
    assert.equal(u.size, blocks);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// The fscache cache is walked while the kernel culls and renames files in it: a file that
// vanishes between readdir and lstat is simply no longer there, not an error.
test('disk usage of a tree whose files vanish during the walk answers instead of failing', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'du-'));
  try {
    for (let round = 0; round < 20; round++) {
      const sub = path.join(dir, `r${round}`);
      fs.mkdirSync(sub);
      for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(sub, `f${i}`), 'x');
      const walk = diskUsage(dir);
      // remove them as the walk goes (each removal after a turn of the event loop)
      for (let i = 299; i >= 0; i--) {
        await new Promise((r) => setImmediate(r));
        fs.rmSync(path.join(sub, `f${i}`), { force: true });
      }
      const u = await walk;
      assert.ok(u.inodes >= 1);
      fs.rmSync(sub, { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('disk usage of a root that does not exist is an error', async () => {
  await assert.rejects(diskUsage('/nonexistent/lazysnap-du'), /ENOENT/);
});
