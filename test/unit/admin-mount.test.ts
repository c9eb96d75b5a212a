// Admin Mount without a kernel: where it may mount (admin.mount_dirs, after
// symlinks) and with which options (nosuid,nodev), through the handler with a
// recording mounter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { allowedMountpoint, isBeneath } from '../../admin/mount-policy';
import { adminHandlers } from '../../admin/service';
import { erofsOptions, Mounter, MountError, type MountSpec } from '../../mounts/mounter';
import { MS } from '../../native';
import type { FscacheImages } from '../../snapshotter/storage/images';

test('isBeneath: strictly below a listed directory, by path components', () => {
  assert.ok(isBeneath('/mnt/x', ['/mnt']));
  assert.ok(isBeneath('/mnt/x/y', ['/srv', '/mnt/']));
  assert.ok(!isBeneath('/mnt', ['/mnt']), 'not over the listed directory itself');
  assert.ok(!isBeneath('/mntx/y', ['/mnt']));
  assert.ok(!isBeneath('/etc', ['/mnt', '/run/lazysnap/mnt']));
  assert.ok(!isBeneath('/etc', []));
});

test('erofsOptions: read-only, nosuid,nodev when asked; fsid and domain_id as mount(2) data', () => {
  assert.deepEqual(erofsOptions({ fsid: 'f1', domain: '', nosuid: true }), { flags: MS.RDONLY | MS.NOSUID | MS.NODEV, data: 'fsid=f1', shown: 'ro,nosuid,nodev,fsid=f1' });
  assert.deepEqual(erofsOptions({ fsid: 'f1', domain: 'd', nosuid: true }), { flags: MS.RDONLY | MS.NOSUID | MS.NODEV, data: 'domain_id=d,fsid=f1', shown: 'ro,nosuid,nodev,domain_id=d,fsid=f1' });
  // containers' lower layers, under the 0700 root
  assert.deepEqual(erofsOptions({ fsid: 'f1', domain: 'd' }), { flags: MS.RDONLY, data: 'domain_id=d,fsid=f1', shown: 'ro,domain_id=d,fsid=f1' });
});

function fixture() {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-admin-')));
  const allowed = path.join(dir, 'mnts');
  fs.mkdirSync(path.join(allowed, 'x'), { recursive: true });
  fs.symlinkSync('/etc', path.join(allowed, 'etc'));
  fs.symlinkSync(allowed, path.join(dir, 'via-link'));
  return { dir, allowed, done: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

test('allowedMountpoint resolves symlinks before it checks', () => {
  const f = fixture();
  try {
    assert.equal(allowedMountpoint(path.join(f.allowed, 'x'), [f.allowed]), path.join(f.allowed, 'x'));
    assert.equal(allowedMountpoint(path.join(f.dir, 'via-link', 'x'), [f.allowed]), path.join(f.allowed, 'x'), 'the real path is what gets mounted');
    assert.equal(allowedMountpoint(path.join(f.allowed, 'x'), [path.join(f.dir, 'via-link')]), path.join(f.allowed, 'x'), 'listed dirs are resolved too');
    const refused = (mp: string, dirs = [f.allowed]) =>
      assert.throws(() => allowedMountpoint(mp, dirs), (e: unknown) => (e as { code?: number }).code === grpc.status.INVALID_ARGUMENT, mp);
    refused('/etc');
    refused(path.join(f.allowed, 'etc'));
    refused(path.join(f.allowed, 'x', '..', '..'));
    refused(f.allowed);
    refused('x');
    refused(path.join(f.allowed, 'x'), [path.join(f.dir, 'missing')]);
    assert.throws(() => allowedMountpoint(path.join(f.allowed, 'none'), [f.allowed]), /does not exist/);
  } finally {
    f.done();
  }
});

test('the Mount handler checks the place first and always asks for nosuid,nodev', async () => {
  const f = fixture();
  const specs: MountSpec[] = [];
  const mounter = {
    mount: async (s: MountSpec) => {
      specs.push(s);
      return { fsid: 'f', domain: '' };
    },
  } as unknown as Mounter;
  const h = adminHandlers({ mounter, images: () => ({}) as FscacheImages, mountDirs: [f.allowed], about: { version: 't', config: 'c', root: '/r', address: '/a' }, log: pino({ level: 'silent' }) });
  const call = (mountpoint: string) =>
    new Promise<{ err: grpc.ServiceError | null; res: unknown }>((resolve) =>
      (h.Mount as Function)({ request: { bootstrap: '/b', mountpoint, blobs_dir: '', domain: '', fsid: '' } }, (err: grpc.ServiceError | null, res: unknown) => resolve({ err, res })),
    );
  try {
    const ok = await call(path.join(f.dir, 'via-link', 'x'));
    assert.equal(ok.err, null);
    assert.deepEqual(specs.map((s) => [s.mountpoint, s.nosuid]), [[path.join(f.allowed, 'x'), true]]);
    for (const mp of ['/etc', '/usr/bin', path.join(f.allowed, 'etc')]) {
      const r = await call(mp);
      assert.equal(r.err?.code, grpc.status.INVALID_ARGUMENT, mp);
      assert.match(r.err!.details, /is not beneath a directory of admin\.mount_dirs/);
    }
    assert.equal(specs.length, 1, 'refused places never reach the mounter');
  } finally {
    f.done();
  }
});

test('a bootstrap is copied in bounded memory before anything else: one the kernel would refuse leaves no copy; a copy a kill left is swept at the next mount', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-mounter-'));
  try {
    const imagesDir = path.join(dir, 'images');
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    fs.mkdirSync(imagesDir);
    fs.writeFileSync(path.join(imagesDir, '+incoming-0123'), 'left by a kill');
    const images = { byMountpoint: () => undefined, get: () => undefined } as unknown as FscacheImages;
    const m = new Mounter(() => images, imagesDir, pino({ level: 'silent' }));
    const bad = path.join(dir, 'not-erofs');
    fs.writeFileSync(bad, Buffer.alloc(8192, 7));
    await assert.rejects(m.mount({ bootstrap: bad, mountpoint: mnt }), /superblock\.magic/);
    assert.deepEqual(fs.readdirSync(imagesDir), [], 'the leftover swept, the refused copy removed');
    await assert.rejects(m.mount({ bootstrap: '/dev/zero', mountpoint: mnt }),
      (e: unknown) => e instanceof MountError && /^bootstrap \/dev\/zero: is a character device, not a regular file$/.test((e as Error).message));
    assert.deepEqual(fs.readdirSync(imagesDir), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
