// The native addon against the real cachefiles on-demand device. Runs INSIDE
// the UML test kernel (see /work/shared/kernel/README.md and kernel/):
//
//   bash scripts/kernel-run.sh -t 300 -- node --test dist/test/kernel/native.test.js
//
// (/work/shared/kernel/uml-run.sh -k KERNEL … is the same wrapper; its own
// prebuilt linux-uml needs glibc 2.38 and dies on hosts with AMX.)
//
// A test-local mini daemon (the real one lives in worker/) binds
// /dev/cachefiles, serves OPEN/READ/CLOSE for one EROFS image from Node's
// event loop with FdPoller, answers READs with pwriteAll from allocAligned
// buffers plus ioctlReadComplete, and the files read through the mount must
// match their source.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  FdPoller,
  allocAligned,
  ioctlReadComplete,
  isAligned,
  pwriteAll,
  pwriteAllSync,
  type NativeError,
} from '../../native';

const DEV = '/dev/cachefiles';
const HOW =
  'run it inside the UML test kernel: bash scripts/kernel-run.sh -t 300 -- node --test dist/test/kernel/native.test.js ' +
  '(or npm run test:kernel; /work/shared/kernel/uml-run.sh -k KERNEL … also works)';

// include/uapi/linux/cachefiles.h
const OPEN = 0;
const CLOSE = 1;
const READ = 2;
const MSG_MAX = 1024;

interface Run {
  code: number | null;
  out: string;
  err: string;
}

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')}: no exit after ${timeoutMs} ms (stderr: ${err})`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('serves an EROFS mount through /dev/cachefiles with FdPoller, allocAligned, pwriteAll and ioctlReadComplete', { timeout: 240_000 }, async (t) => {
  // Fail, not skip: on a kernel without on-demand cachefiles this test proves nothing.
  assert.ok(fs.existsSync(DEV), `${DEV} does not exist: ${HOW}`);
  const cacheDir = process.env.FSCACHE_DIR;
  assert.ok(cacheDir && fs.existsSync(cacheDir), `$FSCACHE_DIR (an ext4 cache dir) is not set: ${HOW}`);

  const work = fs.mkdtempSync('/run/lazysnap-native-');
  const src = path.join(work, 'src');
  const mnt = path.join(work, 'mnt');
  const img = path.join(work, 'img.erofs');
  const fsid = `lsn-native-${process.pid}`;
  fs.mkdirSync(path.join(src, 'sub', 'deeper'), { recursive: true });
  fs.mkdirSync(mnt);
  const files: Record<string, Buffer> = {
    'empty': Buffer.alloc(0),
    'hello.txt': Buffer.from('hello from lazysnap\n'),
    'sub/odd-size.bin': randomBytes(12_345),
    'sub/one-block.bin': randomBytes(4096),
    'sub/deeper/big.bin': randomBytes(3 * 1024 * 1024 + 777),
    'zeros.bin': Buffer.alloc(200_000),
  };
  for (const [name, data] of Object.entries(files)) fs.writeFileSync(path.join(src, name), data);
  const mk = await run('mkfs.erofs', [img, src]);
  assert.equal(mk.code, 0, `mkfs.erofs: ${mk.err}`);
  const image = fs.readFileSync(img);
  assert.equal(image.length % 4096, 0, 'EROFS images are whole 4 KiB blocks');

  // ---- the mini daemon ----------------------------------------------------
  const dev = fs.openSync(DEV, fs.constants.O_RDWR);
  const opens: Array<{ volumeKey: string; cookieKey: string; objectId: number; fd: number }> = [];
  const anonFds = new Map<number, number>(); // object id -> anon fd
  const reads: Array<{ off: number; len: number }> = [];
  const closes: number[] = [];
  const failures: unknown[] = [];
  let misalignedTried = false;
  let misalignedError: NativeError | null = null;
  const inflight = new Set<Promise<void>>();

  const serveRead = async (msgId: number, objectId: number, off: number, len: number): Promise<void> => {
    const anon = anonFds.get(objectId);
    assert.ok(anon !== undefined, `READ for unknown object ${objectId}`);
    // Direct I/O needs a block-aligned range; the image is whole blocks.
    const start = Math.floor(off / 4096) * 4096;
    const end = Math.min(image.length, Math.ceil((off + len) / 4096) * 4096);
    if (!misalignedTried) {
      // What the addon exists for: a Node Buffer at an unaligned address.
      misalignedTried = true;
      const plain = Buffer.alloc(end - start + 1).subarray(1);
      image.copy(plain, 0, start, end);
      try {
        pwriteAllSync(anon, plain, start);
      } catch (e) {
        misalignedError = e as NativeError;
      }
    }
    const buf = allocAligned(end - start);
    assert.ok(isAligned(buf, 4096));
    image.copy(buf, 0, start, end);
    assert.equal(await pwriteAll(anon, buf, start), end - start);
    ioctlReadComplete(anon, msgId);
  };

  const onMessage = (msg: Buffer): void => {
    const msgId = msg.readUInt32LE(0);
    const opcode = msg.readUInt32LE(4);
    const len = msg.readUInt32LE(8);
    const objectId = msg.readUInt32LE(12);
    assert.equal(len, msg.length, 'header len is the whole message');
    if (opcode === OPEN) {
      const volumeKeySize = msg.readUInt32LE(16);
      const cookieKeySize = msg.readUInt32LE(20);
      const fd = msg.readUInt32LE(24);
      const volumeKey = msg.subarray(32, 32 + volumeKeySize).toString('latin1').replace(/\0+$/, '');
      const cookieKey = msg.subarray(32 + volumeKeySize, 32 + volumeKeySize + cookieKeySize).toString('latin1').replace(/\0+$/, '');
      opens.push({ volumeKey, cookieKey, objectId, fd });
      anonFds.set(objectId, fd);
      const size = cookieKey === fsid ? image.length : -2; // -ENOENT for anything else
      fs.writeSync(dev, `copen ${msgId},${size}`);
    } else if (opcode === READ) {
      const off = Number(msg.readBigUInt64LE(16));
      const rlen = Number(msg.readBigUInt64LE(24));
      reads.push({ off, len: rlen });
      const p: Promise<void> = serveRead(msgId, objectId, off, rlen)
        .catch((e: unknown) => {
          failures.push(e);
        })
        .finally(() => inflight.delete(p));
      inflight.add(p);
    } else if (opcode === CLOSE) {
      closes.push(objectId);
      const fd = anonFds.get(objectId);
      if (fd !== undefined) fs.closeSync(fd);
      anonFds.delete(objectId);
    } else {
      failures.push(new Error(`unknown opcode ${opcode}`));
    }
  };

  const msgBuf = Buffer.alloc(MSG_MAX);
  const poller = new FdPoller(dev, (err) => {
    if (err) {
      failures.push(err);
      return;
    }
    // One message per read(); 0 once the queue is empty (it does not block).
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(dev, msgBuf, 0, MSG_MAX, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
        failures.push(e);
        break;
      }
      if (n === 0) break;
      try {
        onMessage(Buffer.from(msgBuf.subarray(0, n)));
      } catch (e) {
        failures.push(e);
      }
    }
  });

  let mounted = false;
  try {
    for (const cmd of [`dir ${cacheDir}`, 'tag lazysnap-native-test', 'bind ondemand']) {
      assert.equal(fs.writeSync(dev, cmd), cmd.length, cmd);
    }
    poller.start();

    // mount blocks until OPEN and the superblock READs are answered: run it
    // as a child while this loop serves them.
    let t0 = process.hrtime.bigint();
    const m = await run('mount', ['-t', 'erofs', 'none', mnt, '-o', `fsid=${fsid}`], 60_000);
    const mountMs = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(m.code, 0, `mount: ${m.err} (failures: ${failures.map(String).join('; ')})`);
    mounted = true;
    const readsAtMount = reads.length;

    // Every file through the mount, read by another process...
    t0 = process.hrtime.bigint();
    const names = Object.keys(files);
    const sums = await run('sha256sum', names.map((n) => path.join(mnt, n)), 60_000);
    const sumMs = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(sums.code, 0, `sha256sum: ${sums.err}`);
    const got = new Map(sums.out.trim().split('\n').map((l) => [l.slice(66), l.slice(0, 64)] as [string, string]));
    for (const n of names) assert.equal(got.get(path.join(mnt, n)), sha256(files[n]), n);
    // ...and once more by this one (served from the cache now: no new READs).
    const before = reads.length;
    assert.ok((await fs.promises.readFile(path.join(mnt, 'sub/deeper/big.bin'))).equals(files['sub/deeper/big.bin']));
    assert.equal(reads.length, before, 'cached data is not read again');
    assert.deepEqual(fs.readdirSync(mnt).sort(), ['empty', 'hello.txt', 'sub', 'zeros.bin']);

    assert.equal(opens.length, 1);
    assert.equal(opens[0].volumeKey, `erofs,${fsid}`);
    assert.equal(opens[0].cookieKey, fsid);
    assert.ok(reads.length > 0);
    assert.ok(reads.every((r) => r.off % 4096 === 0 && r.len % 4096 === 0), 'READs are whole blocks');
    // cachefiles rejects unaligned memory for its direct I/O: the addon's reason to exist.
    assert.ok(misalignedError, 'a pwrite from an unaligned Buffer into the anon fd was expected to fail');
    assert.equal((misalignedError as NativeError).code, 'EINVAL');
    // The ioctl reaches cachefiles: an unknown msg id is EINVAL (not ENOTTY).
    assert.throws(() => ioctlReadComplete(opens[0].fd, 0x7fff_fff0), { code: 'EINVAL', syscall: 'ioctl' });

    const sizes = new Map<number, number>();
    for (const r of reads) sizes.set(r.len, (sizes.get(r.len) ?? 0) + 1);
    t.diagnostic(`image ${image.length} B; mount ${mountMs.toFixed(0)} ms (${readsAtMount} READs); sha256 of ${names.length} files ${sumMs.toFixed(0)} ms`);
    t.diagnostic(`READs ${reads.length}, ${reads.reduce((a, r) => a + r.len, 0)} B; sizes ${[...sizes].sort((a, b) => a[0] - b[0]).map(([l, c]) => `${l}x${c}`).join(' ')}`);
    t.diagnostic(`first READs (off+len): ${reads.slice(0, 8).map((r) => `${r.off}+${r.len}`).join(' ')}`);
    t.diagnostic(`unaligned pwrite into the anon fd: ${(misalignedError as NativeError).message}`);

    const u = await run('umount', [mnt]);
    assert.equal(u.code, 0, `umount: ${u.err}`);
    mounted = false;
    // CLOSE arrives at umount.
    for (let i = 0; i < 100 && closes.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(closes, [opens[0].objectId]);
    assert.equal(anonFds.size, 0);
    await Promise.all(inflight);
    assert.deepEqual(failures, []);
  } finally {
    if (mounted) await run('umount', ['-l', mnt]).catch(() => undefined);
    poller.close();
    for (const fd of anonFds.values()) fs.closeSync(fd);
    fs.closeSync(dev); // unbinds the cache
    fs.rmSync(work, { recursive: true, force: true });
  }
});
