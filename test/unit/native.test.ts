// The native addon (native/) on the host: aligned buffers and O_DIRECT,
// whole-buffer pwrite, the cachefiles ioctl, FdPoller on the event loop,
// SCM_RIGHTS fd passing (in-process and to a child), sd_notify with fds and
// LISTEN_FDS. The real /dev/cachefiles flow is in test/kernel/native.test.ts.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import {
  CACHEFILES_IOC_READ_COMPLETE,
  FdPoller,
  allocAligned,
  dataExtents,
  getCloexec,
  ioctlReadComplete,
  isAligned,
  pwriteAll,
  pwriteAllSync,
  recvFds,
  sdNotify,
  sendFds,
  setCloexec,
  socketpair,
  type NativeError,
} from '../../native';

// From dist/test/unit/native.test.js: the compiled wrapper, for child scripts.
const NATIVE_JS = path.resolve(__dirname, '../../native/index.js');

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let tmp = '';
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-native-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function assertSysError(err: unknown, code: string, syscall: string): true {
  assert.ok(err instanceof Error, `not an Error: ${String(err)}`);
  const e = err as NativeError;
  assert.equal(e.code, code);
  assert.equal(e.errno, (os.constants.errno as Record<string, number>)[code]);
  assert.ok(e.errno > 0);
  assert.equal(e.syscall, syscall);
  assert.match(e.message, new RegExp(`^${code}: .+, ${syscall}$`));
  return true;
}

const tick = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits for a child to exit; rejects after `ms` (and kills it). */
function exited(child: ChildProcess, ms: number): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child still running after ${ms} ms; stdout: ${out}; stderr: ${err}`));
    }, ms);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

function writeScript(name: string, body: string): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, `'use strict';\nconst native = require(${JSON.stringify(NATIVE_JS)});\nconst fs = require('node:fs');\n${body}\n`);
  return p;
}

describe('allocAligned', () => {
  test('is aligned as asked, zero-filled, of the right length', () => {
    for (const align of [512, 4096, 65536]) {
      for (const size of [0, 1, 511, 4096, 100_000]) {
        const b = allocAligned(size, align);
        assert.ok(Buffer.isBuffer(b));
        assert.equal(b.length, size);
        assert.ok(isAligned(b, align), `size ${size} align ${align}`);
        assert.ok(b.every((x) => x === 0));
      }
    }
    const d = allocAligned(8192);
    assert.ok(isAligned(d, 4096), 'default alignment is 4096');
    assert.ok(isAligned(d.subarray(512), 512) && !isAligned(d.subarray(1), 2));
  });

  test('stays valid under GC pressure and does not pile up memory', async () => {
    const keep: Array<[number, Buffer]> = [];
    const rss0 = process.memoryUsage().rss;
    let peak = 0;
    for (let i = 0; i < 3000; i++) {
      const b = allocAligned(1 << 20);
      b.fill(i & 0xff);
      if (i % 300 === 0) keep.push([i, b]);
      if (i % 500 === 0) {
        gc();
        await tick(0);
      }
      peak = Math.max(peak, process.memoryUsage().rss);
    }
    gc();
    // 3 GiB went through; what was dropped must have been freed.
    assert.ok(peak - rss0 < 1024 * 2 ** 20, `rss grew by ${Math.round((peak - rss0) / 2 ** 20)} MiB`);
    for (const [i, b] of keep) {
      assert.ok(isAligned(b, 4096));
      assert.equal(b[0], i & 0xff);
      assert.equal(b[b.length - 1], i & 0xff);
      assert.equal(b.indexOf((i + 1) & 0xff), -1);
    }
  });

  test('rejects bad sizes and alignments', () => {
    assert.throws(() => allocAligned(-1), RangeError);
    assert.throws(() => allocAligned(1.5), RangeError);
    assert.throws(() => allocAligned(16, 3000), /power of two/);
    assert.throws(() => allocAligned('1' as unknown as number), TypeError);
    assert.throws(() => isAligned({} as Uint8Array, 512), TypeError);
  });
});

describe('O_DIRECT', () => {
  // cachefiles writes READ payloads with direct I/O; the host's root fs is
  // ext4, which enforces the device's DMA alignment (511) like the guest's.
  let dir = '';
  let loop: { mnt: string; img: string } | null = null;

  function directIoWorks(d: string): boolean {
    const p = path.join(d, 'probe');
    try {
      fs.closeSync(fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_DIRECT));
      return true;
    } catch {
      return false;
    } finally {
      fs.rmSync(p, { force: true });
    }
  }

  before(() => {
    const base = fs.mkdtempSync('/var/tmp/lazysnap-native-odirect-');
    if (directIoWorks(base)) {
      dir = base;
      return;
    }
    // Not on this fs: a loop-mounted ext4 image instead.
    const img = path.join(base, 'ext4.img');
    const mnt = path.join(base, 'mnt');
    fs.mkdirSync(mnt);
    fs.writeFileSync(img, '');
    fs.truncateSync(img, 64 << 20);
    for (const [cmd, args] of [
      ['mkfs.ext4', ['-q', '-F', img]],
      ['mount', ['-o', 'loop', img, mnt]],
    ] as const) {
      const r = spawnSync(cmd, args, { encoding: 'utf8' });
      assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
    }
    loop = { mnt, img };
    dir = mnt;
    assert.ok(directIoWorks(dir), 'O_DIRECT does not work even on a loop-mounted ext4');
  });

  after(() => {
    if (loop) spawnSync('umount', [loop.mnt]);
    const base = loop ? path.dirname(loop.mnt) : dir;
    if (base.startsWith('/var/tmp/lazysnap-native-odirect-')) fs.rmSync(base, { recursive: true, force: true });
  });

  test('a plain Buffer at an odd address gets EINVAL; allocAligned memory is written', () => {
    const file = path.join(dir, 'direct.bin');
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_DIRECT, 0o644);
    try {
      const plain = Buffer.alloc(4096 + 1).subarray(1);
      plain.fill(0x5a);
      assert.ok(!isAligned(plain, 512));
      assert.throws(() => pwriteAllSync(fd, plain, 0), (e) => assertSysError(e, 'EINVAL', 'pwrite'));
      // Node's own write fails the same way: it cannot do this by itself.
      assert.throws(() => fs.writeSync(fd, plain, 0, plain.length, 0), { code: 'EINVAL' });

      const good = allocAligned(8192);
      for (let i = 0; i < good.length; i++) good[i] = (i * 7) & 0xff;
      assert.equal(pwriteAllSync(fd, good.subarray(0, 4096), 0), 4096);
      // An aligned subarray at a 512-byte file offset is fine too.
      assert.equal(pwriteAllSync(fd, good.subarray(4096, 4608), 4096), 512);
      // The length and the file offset must be block-aligned as well.
      assert.throws(() => pwriteAllSync(fd, good.subarray(0, 1000), 8192), { code: 'EINVAL' });
      assert.throws(() => pwriteAllSync(fd, good.subarray(0, 512), 100), { code: 'EINVAL' });
      const back = fs.readFileSync(file);
      assert.equal(back.length, 4608);
      assert.ok(back.equals(good.subarray(0, 4608)));
    } finally {
      fs.closeSync(fd);
    }
  });

  test('pwriteAll (threadpool) writes aligned buffers with O_DIRECT and rejects unaligned ones', async () => {
    const file = path.join(dir, 'direct-async.bin');
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_DIRECT, 0o644);
    try {
      const bufs = [0, 1, 2, 3].map((k) => allocAligned(1 << 20).fill(0x10 + k));
      const n = await Promise.all(bufs.map((b, k) => pwriteAll(fd, b, k << 20)));
      assert.deepEqual(n, [1 << 20, 1 << 20, 1 << 20, 1 << 20]);
      assert.ok(fs.readFileSync(file).equals(Buffer.concat(bufs)));
      await assert.rejects(pwriteAll(fd, Buffer.alloc(4097).subarray(1), 0), (e) => assertSysError(e, 'EINVAL', 'pwrite'));
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('pwriteAll / pwriteAllSync', () => {
  test('write exactly the bytes at the offset', async () => {
    const file = path.join(tmp, 'pw.bin');
    fs.writeFileSync(file, Buffer.alloc(100, 0xee));
    const fd = fs.openSync(file, 'r+');
    try {
      assert.equal(pwriteAllSync(fd, Buffer.from('hello'), 10), 5);
      assert.equal(await pwriteAll(fd, Buffer.from('world'), 200), 5);
      assert.equal(pwriteAllSync(fd, Buffer.alloc(0), 50), 0);
      const big = Buffer.alloc(16 << 20);
      for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
      const far = 2 ** 32 + 4096; // beyond 4 GiB: 64-bit offsets, sparse file
      assert.equal(await pwriteAll(fd, big, far), big.length);
      assert.equal(fs.fstatSync(fd).size, far + big.length);
      const tail = Buffer.alloc(big.length);
      assert.equal(fs.readSync(fd, tail, 0, tail.length, far), big.length);
      assert.ok(tail.equals(big));
      const got = Buffer.alloc(205);
      assert.equal(fs.readSync(fd, got, 0, 205, 0), 205);
      const want = Buffer.alloc(200, 0);
      want.fill(0xee, 0, 100);
      want.write('hello', 10);
      assert.ok(got.subarray(0, 200).equals(want));
      assert.equal(got.subarray(200, 205).toString(), 'world');
    } finally {
      fs.closeSync(fd);
    }
  });

  test('errors carry code, errno and syscall', async () => {
    const file = path.join(tmp, 'ro.bin');
    fs.writeFileSync(file, 'x');
    const ro = fs.openSync(file, 'r');
    const closed = 1_000_000; // above RLIMIT_NOFILE: never open
    const [a, b] = socketpair();
    try {
      assert.throws(() => pwriteAllSync(ro, Buffer.from('y'), 0), (e) => assertSysError(e, 'EBADF', 'pwrite'));
      await assert.rejects(pwriteAll(closed, Buffer.from('y'), 0), (e) => assertSysError(e, 'EBADF', 'pwrite'));
      await assert.rejects(pwriteAll(a, Buffer.from('y'), 0), (e) => assertSysError(e, 'ESPIPE', 'pwrite'));
      assert.throws(() => pwriteAllSync(ro, 'y' as unknown as Buffer, 0), TypeError);
      assert.throws(() => pwriteAllSync(ro, Buffer.from('y'), -1), RangeError);
      assert.throws(() => pwriteAllSync(-1, Buffer.from('y'), 0), RangeError);
    } finally {
      fs.closeSync(ro);
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });
});

describe('ioctlReadComplete', () => {
  test('issues ioctl 0x40049801: a regular file answers ENOTTY', () => {
    assert.equal(CACHEFILES_IOC_READ_COMPLETE, 0x40049801);
    const fd = fs.openSync(path.join(tmp, 'ioctl.bin'), 'w');
    try {
      assert.throws(() => ioctlReadComplete(fd, 7), (e) => assertSysError(e, 'ENOTTY', 'ioctl'));
      assert.throws(() => ioctlReadComplete(fd, 2 ** 32), RangeError);
    } finally {
      fs.closeSync(fd);
    }
    assert.throws(() => ioctlReadComplete(fd, 7), (e) => assertSysError(e, 'EBADF', 'ioctl'));
  });
});

describe('dataExtents', () => {
  test('SEEK_DATA/SEEK_HOLE: the written ranges of a sparse file, clipped to end', () => {
    const p = path.join(tmp, 'sparse.bin');
    const fd = fs.openSync(p, 'w+');
    try {
      fs.ftruncateSync(fd, 4 << 20);
      assert.deepEqual(dataExtents(fd, 4 << 20), [], 'all hole');
      pwriteAllSync(fd, Buffer.alloc(4096, 1), 0);
      pwriteAllSync(fd, Buffer.alloc(8192, 2), 1 << 20);
      assert.deepEqual(dataExtents(fd, 4 << 20), [[0, 4096], [1 << 20, 8192]]);
      assert.deepEqual(dataExtents(fd, (1 << 20) + 4096), [[0, 4096], [1 << 20, 4096]]);
      assert.deepEqual(dataExtents(fd, 4096), [[0, 4096]]);
    } finally {
      fs.closeSync(fd);
    }
    assert.throws(() => dataExtents(fd, 4096), (e) => assertSysError(e, 'EBADF', 'lseek'));
  });
});

describe('FdPoller', () => {
  test('fires when a socket becomes readable, level-triggered, and not after stop()', async () => {
    const [a, b] = socketpair();
    const seen: Array<Error | null> = [];
    const p = new FdPoller(b, (err) => {
      seen.push(err);
      p.stop(); // leave the byte unread: still readable
    });
    try {
      assert.equal(p.fd, b);
      p.start();
      assert.ok(p.active && p.hasRef());
      await tick(50);
      assert.equal(seen.length, 0, 'nothing to read yet');
      fs.writeSync(a, 'x');
      await tick(50);
      assert.deepEqual(seen, [null]);
      assert.ok(!p.active);
      await tick(50);
      assert.equal(seen.length, 1, 'stopped: no more callbacks although the fd is readable');
      p.start();
      await tick(50);
      assert.equal(seen.length, 2, 'restarted: fires again for the unread byte');
      assert.equal(fs.readSync(b, Buffer.alloc(10)), 1);
    } finally {
      p.close();
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });

  test('fires repeatedly while readable, once per loop turn, on a FIFO', async () => {
    const fifo = path.join(tmp, 'fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const fd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    let calls = 0;
    const got: string[] = [];
    const p = new FdPoller(fd, () => {
      calls++;
      if (calls === 3) {
        const buf = Buffer.alloc(64);
        got.push(buf.subarray(0, fs.readSync(fd, buf)).toString());
      }
    });
    try {
      p.start();
      fs.writeSync(fd, 'abc');
      await tick(100);
      assert.equal(calls, 3, 'called until the data was drained');
      assert.deepEqual(got, ['abc']);
      fs.writeSync(fd, 'def');
      await tick(100);
      assert.ok(calls >= 4);
    } finally {
      p.close();
      p.close(); // idempotent
      fs.closeSync(fd);
    }
    assert.ok(p.closed);
    assert.throws(() => p.start(), { code: 'ERR_POLLER_CLOSED' });
  });

  test('close() from inside the callback', async () => {
    const [a, b] = socketpair();
    let calls = 0;
    const p = new FdPoller(b, () => {
      calls++;
      p.close();
    });
    p.start();
    fs.writeSync(a, 'x');
    await tick(50);
    assert.equal(calls, 1);
    assert.ok(p.closed && !p.active);
    fs.closeSync(a);
    fs.closeSync(b);
  });

  test('start() errors: EPERM for a regular file, EBADF for a closed fd', () => {
    const fd = fs.openSync(path.join(tmp, 'regular'), 'w');
    try {
      const p = new FdPoller(fd, () => {});
      assert.throws(() => p.start(), (e) => assertSysError(e, 'EPERM', 'uv_poll_init'));
      assert.ok(!p.active);
    } finally {
      fs.closeSync(fd);
    }
    assert.throws(() => new FdPoller(fd, () => {}).start(), (e) => assertSysError(e, 'EBADF', 'uv_poll_init'));
    assert.throws(() => new FdPoller(0, undefined as unknown as () => void), TypeError);
    assert.throws(() => new FdPoller(-1, () => {}), RangeError);
  });

  test('one active poller per fd; stopped or dropped ones do not disturb it', async () => {
    // libuv drops an fd from epoll for every handle when any handle on it
    // stops, so FdPoller holds a uv handle only while active and refuses a
    // second active poller on the same fd.
    const [a, b] = socketpair();
    let fired = 0;
    const p1 = new FdPoller(b, () => {
      fired++;
      recvFds(b, 16, 0);
    });
    const p2 = new FdPoller(b, () => {});
    try {
      p1.start();
      assert.throws(() => p2.start(), (e) => assertSysError(e, 'EEXIST', 'uv_poll_init'));
      for (let i = 0; i < 300; i++) {
        const p = new FdPoller(b, () => {}); // never started, then garbage
        if (i % 2 === 0) p.close();
      }
      gc();
      await tick(20);
      gc();
      fs.writeSync(a, 'x');
      await tick(50);
      assert.equal(fired, 1, 'the active poller still fires');
      p1.stop();
      p2.start();
      assert.throws(() => p1.start(), (e) => assertSysError(e, 'EEXIST', 'uv_poll_init'));
      p2.close();
      p1.start();
      fs.writeSync(a, 'y');
      await tick(50);
      assert.equal(fired, 2);
    } finally {
      p1.close();
      p2.close();
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });

  test('keeps the process alive only while active and referenced', async () => {
    const body = (mode: string) =>
      writeScript(
        `alive-${mode}.js`,
        `const [a, b] = native.socketpair();
         const p = new native.FdPoller(b, () => {});
         p.start();
         const mode = ${JSON.stringify(mode)};
         if (mode === 'close') p.close();
         if (mode === 'stop') p.stop();
         if (mode === 'unref') p.unref();
         if (mode === 'close-later') setTimeout(() => p.close(), 100);
         process.stdout.write('up ' + p.hasRef());`,
      );
    for (const mode of ['close', 'stop', 'unref', 'close-later']) {
      const r = await exited(spawn(process.execPath, [body(mode)]), 10_000);
      assert.equal(r.code, 0, `${mode}: ${r.err}`);
      assert.equal(r.out, `up ${mode !== 'close' && mode !== 'unref'}`);
    }
    // Active and referenced: still running after a second.
    const child = spawn(process.execPath, [body('active')]);
    const done = exited(child, 10_000);
    await tick(1000);
    assert.equal(child.exitCode, null, 'an active poller keeps the process alive');
    child.kill('SIGTERM');
    const r = await done;
    assert.equal(r.signal, 'SIGTERM');
  });

  test('an exception in the callback is an uncaught exception', async () => {
    const script = writeScript(
      'throws.js',
      `const [a, b] = native.socketpair();
       const p = new native.FdPoller(b, () => { throw new Error('boom from callback'); });
       p.start();
       fs.writeSync(a, 'x');
       process.on('uncaughtException', (e) => { console.log('caught ' + e.message); p.close(); });`,
    );
    const r = await exited(spawn(process.execPath, [script]), 10_000);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.trim(), 'caught boom from callback');
  });

  test('pollers left open or dropped do not break GC, exit or worker threads', async () => {
    const script = writeScript(
      'leftover.js',
      `const { Worker, isMainThread } = require('node:worker_threads');
       const v8 = require('node:v8'); v8.setFlagsFromString('--expose-gc');
       const gc = require('node:vm').runInNewContext('gc');
       const [a, b] = native.socketpair();
       for (let i = 0; i < 200; i++) { const p = new native.FdPoller(b, () => {}); if (i % 2) { p.start(); p.stop(); } }
       gc();
       if (isMainThread) {
         // A worker whose poller is still active when it is terminated.
         const w = new Worker(__filename);
         w.on('message', () => w.terminate().then(() => { gc(); setTimeout(() => { console.log('main done'); const p = new native.FdPoller(b, () => {}); p.start(); p.unref(); }, 50); }));
       } else {
         const p = new native.FdPoller(b, () => {}); p.start();
         require('node:worker_threads').parentPort.postMessage('started');
       }`,
    );
    const r = await exited(spawn(process.execPath, [script]), 20_000);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.trim(), 'main done');
  });
});

describe('fd passing', () => {
  test('sendFds/recvFds pass an open file; the receiver reads it through the new fd', () => {
    const file = path.join(tmp, 'passed.txt');
    fs.writeFileSync(file, 'contents of the passed file');
    const [a, b] = socketpair();
    const fd = fs.openSync(file, 'r');
    try {
      assert.ok(getCloexec(a) && getCloexec(b));
      assert.equal(sendFds(a, Buffer.from('hdr'), [fd, fd]), 3);
      const r = recvFds(b, 100, 4);
      assert.equal(r.data.toString(), 'hdr');
      assert.equal(r.fds.length, 2);
      assert.ok(!r.truncated);
      for (const got of r.fds) {
        assert.ok(!([a, b, fd] as number[]).includes(got));
        assert.ok(getCloexec(got), 'received fds are close-on-exec');
      }
      fs.closeSync(fd);
      assert.equal(fs.readFileSync(r.fds[0], 'utf8'), 'contents of the passed file');
      r.fds.forEach((f) => fs.closeSync(f));

      // More fds than room: the excess is closed by the kernel, MSG_CTRUNC.
      const f2 = fs.openSync(file, 'r');
      sendFds(a, Buffer.from('x'), [f2, f2, f2]);
      const t = recvFds(b, 10, 1);
      assert.equal(t.fds.length, 1);
      assert.ok(t.truncated);
      fs.closeSync(t.fds[0]);
      fs.closeSync(f2);

      // Nothing queued: EAGAIN with dontWait. Peer closed: EOF is empty data.
      assert.throws(() => recvFds(b, 10, 1, { dontWait: true }), (e) => assertSysError(e, 'EAGAIN', 'recvmsg'));
      fs.closeSync(a);
      assert.equal(recvFds(b, 10, 1).data.length, 0);
    } finally {
      fs.closeSync(b);
    }
    assert.throws(() => sendFds(a, Buffer.alloc(0), [1]), RangeError);
    assert.throws(() => sendFds(a, Buffer.from('x'), []), (e) => assertSysError(e, 'EBADF', 'sendmsg'));
    assert.throws(() => recvFds(a, 10, 1), (e) => assertSysError(e, 'EBADF', 'recvmsg'));
  });

  test('seqpacket pairs keep message boundaries; a closed fd cannot be sent', () => {
    const [a, b] = socketpair('seqpacket');
    try {
      sendFds(a, Buffer.from('one'), []);
      sendFds(a, Buffer.from('two'), []);
      assert.equal(recvFds(b, 100, 0).data.toString(), 'one');
      assert.equal(recvFds(b, 100, 0).data.toString(), 'two');
      assert.throws(() => sendFds(a, Buffer.from('x'), [99_999]), (e) => assertSysError(e, 'EBADF', 'sendmsg'));
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
    assert.throws(() => socketpair('bogus' as 'stream'), TypeError);
  });

  test('between processes: the child gets the socket as fd 3 and fds travel both ways', async () => {
    const file = path.join(tmp, 'to-child.txt');
    fs.writeFileSync(file, 'parent wrote this');
    const fromChild = path.join(tmp, 'from-child.txt');
    const script = writeScript(
      'child-fds.js',
      `// fd 3 is our end of the parent's socketpair (stdio[3]).
       const p = new native.FdPoller(3, () => {
         const r = native.recvFds(3, 100, 4);
         p.close();
         const text = fs.readFileSync(r.fds[0], 'utf8');
         fs.writeFileSync(${JSON.stringify(fromChild)}, 'child opened this');
         const mine = fs.openSync(${JSON.stringify(fromChild)}, 'r');
         native.sendFds(3, Buffer.from('reply:' + r.data + ':' + text), [mine]);
         fs.closeSync(3);
       });
       p.start();`,
    );
    const [parentEnd, childEnd] = socketpair();
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe', childEnd] });
    fs.closeSync(childEnd); // the child has its own copy now
    const done = exited(child, 15_000);
    const fd = fs.openSync(file, 'r');
    sendFds(parentEnd, Buffer.from('hello'), [fd]);
    fs.closeSync(fd);

    const reply = await new Promise<{ data: Buffer; fds: number[] }>((resolve, reject) => {
      const p = new FdPoller(parentEnd, (err) => {
        p.close();
        if (err) reject(err);
        else resolve(recvFds(parentEnd, 200, 4));
      });
      p.start();
    });
    const r = await done;
    assert.equal(r.code, 0, r.err);
    assert.equal(reply.data.toString(), 'reply:hello:parent wrote this');
    assert.equal(reply.fds.length, 1);
    assert.equal(fs.readFileSync(reply.fds[0], 'utf8'), 'child opened this');
    fs.closeSync(reply.fds[0]);
    fs.closeSync(parentEnd);
  });

  test('setCloexec / getCloexec', () => {
    const fd = fs.openSync(path.join(tmp, 'cloexec'), 'w');
    try {
      assert.ok(getCloexec(fd), "Node's own fds are close-on-exec");
      setCloexec(fd, false);
      assert.ok(!getCloexec(fd));
      setCloexec(fd);
      assert.ok(getCloexec(fd));
    } finally {
      fs.closeSync(fd);
    }
    assert.throws(() => setCloexec(fd), (e) => assertSysError(e, 'EBADF', 'fcntl'));
  });
});

describe('systemd', () => {
  // A fake $NOTIFY_SOCKET: python3 receives one datagram with its fds, reads
  // the first fd from offset 0 and prints what it got.
  const RECEIVER = `
import json, os, socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + addr[1:] if addr.startswith("@") else addr)
print("ready", flush=True)
msg, fds, flags, _ = socket.recv_fds(s, 4096, 8)
content = None
if fds:
    try:
        content = os.pread(fds[0], 100, 0).decode()
    except OSError:  # a socket
        content = os.read(fds[0], 100).decode()
print(json.dumps({"msg": msg.decode(), "nfds": len(fds), "content": content}), flush=True)
`;

  async function notifyVia(addr: string, state: string, fds: number[]): Promise<{ msg: string; nfds: number; content: string | null }> {
    const child = spawn('python3', ['-c', RECEIVER, addr], { stdio: ['ignore', 'pipe', 'pipe'] });
    const done = exited(child, 15_000);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => (d.toString().includes('ready') ? resolve() : undefined));
      child.on('close', () => reject(new Error('receiver exited early')));
    });
    assert.equal(sdNotify(state, fds, { NOTIFY_SOCKET: addr }), true);
    const r = await done;
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out.split('\n')[1]) as { msg: string; nfds: number; content: string | null };
  }

  test('sdNotify is a no-op without NOTIFY_SOCKET', () => {
    assert.equal(sdNotify('READY=1', [], {}), false);
    assert.equal(sdNotify('READY=1', [], { NOTIFY_SOCKET: '' }), false);
  });

  test('FDSTORE=1 with an fd reaches a path socket, and the fd is usable', async () => {
    const file = path.join(tmp, 'stored.txt');
    fs.writeFileSync(file, 'kept by systemd');
    const fd = fs.openSync(file, 'r');
    try {
      const got = await notifyVia(path.join(tmp, 'notify.sock'), 'FDSTORE=1\nFDNAME=cachefiles', [fd]);
      assert.deepEqual(got, { msg: 'FDSTORE=1\nFDNAME=cachefiles', nfds: 1, content: 'kept by systemd' });
    } finally {
      fs.closeSync(fd);
    }
  });

  test('an abstract NOTIFY_SOCKET (@name) works, with and without fds', async () => {
    const name = `@lazysnap-native-test-${process.pid}`;
    assert.deepEqual(await notifyVia(name, 'READY=1', []), { msg: 'READY=1', nfds: 0, content: null });
    const [a, b] = socketpair();
    try {
      fs.writeSync(a, 'through the stored socket');
      const got = await notifyVia(name + '-2', 'FDSTORE=1\nFDNAME=sock', [b]);
      assert.deepEqual(got, { msg: 'FDSTORE=1\nFDNAME=sock', nfds: 1, content: 'through the stored socket' });
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });

  test('sdNotify errors: no listener, bad address', () => {
    const env = (s: string) => ({ NOTIFY_SOCKET: s });
    assert.throws(() => sdNotify('READY=1', [], env(path.join(tmp, 'nobody.sock'))), (e) => assertSysError(e, 'ENOENT', 'sendmsg'));
    assert.throws(() => sdNotify('READY=1', [], env('@lazysnap-nobody-listens')), (e) => assertSysError(e, 'ECONNREFUSED', 'sendmsg'));
    assert.throws(() => sdNotify('READY=1', [], env('relative.sock')), (e) => assertSysError(e, 'EAFNOSUPPORT', 'connect'));
    assert.throws(() => sdNotify('READY=1', [], env('/' + 'x'.repeat(200))), (e) => assertSysError(e, 'ENAMETOOLONG', 'connect'));
  });

  test('sdListenFds reads LISTEN_FDS/LISTEN_FDNAMES, sets CLOEXEC and unsets them', async () => {
    const file = path.join(tmp, 'listen.txt');
    fs.writeFileSync(file, 'fd from systemd');
    const script = writeScript(
      'listen.js',
      `// Node's startup (uv_disable_stdio_inheritance) already set FD_CLOEXEC on
       // fds 3..15; systemd passes them without. Clear it to see sdListenFds set it.
       const before = [native.getCloexec(3), native.getCloexec(4)];
       native.setCloexec(3, false);
       native.setCloexec(4, false);
       const fds = native.sdListenFds();
       const after = [native.getCloexec(3), native.getCloexec(4)];
       const env = ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'].filter((k) => k in process.env);
       console.log(JSON.stringify({ fds, before, after, env, text: fs.readFileSync(3, 'utf8'), again: native.sdListenFds() }));`,
    );
    const fd = fs.openSync(file, 'r');
    try {
      // systemd sets LISTEN_PID to the service's pid: the shell's, kept by exec.
      const child = spawn('sh', ['-c', 'export LISTEN_PID=$$; exec "$0" "$1"', process.execPath, script], {
        stdio: ['ignore', 'pipe', 'pipe', fd, fd],
        env: { ...process.env, LISTEN_FDS: '2', LISTEN_FDNAMES: 'cachefiles:' },
      });
      const r = await exited(child, 15_000);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(JSON.parse(r.out), {
        fds: [
          { fd: 3, name: 'cachefiles' },
          { fd: 4, name: 'unknown' },
        ],
        before: [true, true],
        after: [true, true],
        env: [],
        text: 'fd from systemd',
        again: [],
      });
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('fanotify, shared mappings, SEEK_HOLE and mount(2)', () => {
  const n = require('../../native') as typeof import('../../native');
  const ev = require('../../worker/fanotify/events') as typeof import('../../worker/fanotify/events');
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-native-fan-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('seekHole: the end of the data at an offset, the offset itself in a hole', () => {
    const f = path.join(dir, 'sparse');
    const fd = fs.openSync(f, 'w+');
    fs.ftruncateSync(fd, 1 << 20);
    fs.writeSync(fd, Buffer.alloc(8192, 1), 0, 8192, 65536);
    assert.equal(n.seekHole(fd, 0), 0);
    assert.equal(n.seekHole(fd, 65536), 65536 + 8192);
    assert.equal(n.seekHole(fd, 2 << 20), 2 << 20, 'past EOF');
    fs.closeSync(fd);
  });

  test('mapShared: writes land in the file at once, visible to another reader', () => {
    const f = path.join(dir, 'map');
    const fd = fs.openSync(f, 'w+');
    fs.ftruncateSync(fd, 8192);
    const m = n.mapShared(fd, 8192);
    fs.closeSync(fd);
    m.write('journal', 4096);
    assert.equal(fs.readFileSync(f).subarray(4096, 4103).toString(), 'journal');
    assert.throws(() => n.mapShared(-1, 4096), RangeError);
  });

  test('fanotify: a pre-content group marks a file on this filesystem; bad marks are system errors', () => {
    const g = n.fanotifyInit(ev.FAN.CLASS_PRE_CONTENT | ev.FAN.CLOEXEC | ev.FAN.NONBLOCK, ev.EVENT_FD_FLAGS);
    try {
      const f = path.join(dir, 'marked');
      fs.writeFileSync(f, '');
      n.fanotifyMark(g, ev.FAN.MARK_ADD, ev.FAN.PRE_ACCESS, f);
      n.fanotifyMark(g, ev.FAN.MARK_REMOVE, ev.FAN.PRE_ACCESS, f);
      assert.throws(() => n.fanotifyMark(g, ev.FAN.MARK_ADD, ev.FAN.PRE_ACCESS, path.join(dir, 'missing')), { code: 'ENOENT', syscall: 'fanotify_mark' });
      assert.equal(fs.readlinkSync(`/proc/self/fd/${g}`), 'anon_inode:[fanotify]');
    } finally {
      fs.closeSync(g);
    }
  });

  test('mountFs: a refused mount rejects with the errno', async () => {
    await assert.rejects(n.mountFs(path.join(dir, 'nope'), dir, 'erofs', n.MS.RDONLY, ''), { code: 'ENOENT', syscall: 'mount' });
  });
});
