// The start-read measurement of test/support/debian-big.ts on a tiny rootfs
// (needs root: it mounts): a static busybox reads 100 bytes of an 8 MiB file
// and leaves another alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { measureStartReads } from '../support/debian-big';
import { makeTempDir, unmountAll } from '../support/tmp';

test('measureStartReads counts the pages a chrooted command reads, not the files it could', async () => {
  const dir = await makeTempDir('start-reads');
  try {
    const root = path.join(dir, 'root');
    for (const d of ['bin', 'data', 'proc']) fs.mkdirSync(path.join(root, d), { recursive: true });
    fs.copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
    fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
    fs.writeFileSync(path.join(root, 'data/big'), crypto.randomBytes(8 << 20));
    fs.writeFileSync(path.join(root, 'data/unread'), crypto.randomBytes(4 << 20));
    const busybox = fs.statSync(path.join(root, 'bin/busybox')).size;
    const r = await measureStartReads(root, ['/bin/busybox', 'sh', '-c', '/bin/busybox head -c 100 /data/big | /bin/busybox wc -c; echo ready']);
    assert.equal(r.output, '100\nready');
    assert.equal(r.readFiles, 2, 'busybox and data/big');
    assert.equal(r.readFilesBytes, busybox + (8 << 20));
    assert.equal(r.readaheadKiB, 128, 'a fresh mount has the default readahead');
    // a page of data/big and readahead, plus what the run touched of busybox
    assert.ok(r.readBytes >= 4096 && r.readBytes <= busybox + (r.readaheadKiB << 10), `read ${r.readBytes} bytes`);
  } finally {
    await unmountAll(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
