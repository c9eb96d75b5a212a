// Inline and shared xattrs as mkfs.erofs writes them (it shares an xattr that
// more than two inodes carry), read back by our EROFS reader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ErofsImage } from '../../image/erofs/image';
import { runOk } from '../support/proc';
import { makeTempDir, removeTempDir } from '../support/tmp';

test('mkfs.erofs shared and inline xattrs read back exactly', async () => {
  const dir = await makeTempDir('xattr');
  try {
    // /tmp may be tmpfs or ext4: both keep user.* xattrs. Python sets them (no attr package needed).
    const src = path.join(dir, 'src');
    fs.mkdirSync(src);
    for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(src, `f${i}`), `file ${i}\n`);
    const py = [
      'import os, sys',
      'd = sys.argv[1]',
      'for i in range(6): os.setxattr(os.path.join(d, "f%d" % i), "user.shared", b"same-value")',
      'os.setxattr(os.path.join(d, "f0"), "user.only0", b"\\x00\\x01binary")',
      'os.setxattr(os.path.join(d, "f1"), "trusted.t", b"tv")',
    ].join('\n');
    await runOk('python3', ['-c', py, src]);
    const img = path.join(dir, 'x.erofs');
    await runOk('mkfs.erofs', ['-x1', img, src]);
    const e = new ErofsImage(fs.readFileSync(img), img);
    const inodes = new Map([...e.walk()].map((w) => [w.path, w.inode]));
    // 12-byte ibody header + one 4-byte shared xattr id, no inline entry: the value lives in the shared area
    assert.equal(inodes.get('/f3')!.xattrSize, 16, 'user.shared is stored once, as a shared xattr');
    assert.ok(inodes.get('/f0')!.xattrSize > 16, 'f0 has an inline xattr besides the shared one');
    const byPath = new Map([...e.walk()].map((w) => [w.path, e.xattrs(w.inode)]));
    const asObj = (p: string) => Object.fromEntries(byPath.get(p)!.map((x) => [x.name, x.value.toString('latin1')]));
    for (let i = 2; i < 6; i++) assert.deepEqual(asObj(`/f${i}`), { 'user.shared': 'same-value' });
    assert.deepEqual(asObj('/f0'), { 'user.shared': 'same-value', 'user.only0': '\x00\x01binary' });
    assert.deepEqual(asObj('/f1'), { 'user.shared': 'same-value', 'trusted.t': 'tv' });
  } finally {
    await removeTempDir(dir);
  }
});
