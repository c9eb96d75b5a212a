// `lazysnap optimize`'s parts: the workload an image's config names, the
// command that roots it in the image, and the open recorder against real
// opens on a tmpfs this test mounts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OpenRecorder, imagePath } from '../../image/optimize/open-recorder';
import { WorkloadError, workloadCommand, workloadOf } from '../../image/optimize/workload';
import type { ImageConfig } from '../../image/convert/oci';

// The config umoci wrote for the debian+python test image (test/support/debian-python.ts), as its bytes say.
const DEBIAN_PYTHON: ImageConfig = JSON.parse(
  '{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],' +
  '"Cmd":["/usr/bin/python3"]},"rootfs":{"type":"layers","diff_ids":[]}}');
const rootfs = { type: 'layers', diff_ids: [] };

test('the workload is what a runtime would start: entrypoint + cmd, env, working dir; a command given replaces entrypoint and cmd', () => {
  assert.deepEqual(workloadOf(DEBIAN_PYTHON), { argv: ['/usr/bin/python3'], env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], cwd: '/' });
  const app: ImageConfig = { rootfs, config: { Entrypoint: ['/app/run', '--serve'], Cmd: ['--port', '80'], Env: ['A=1'], WorkingDir: '/app' } };
  const w = workloadOf(app);
  assert.deepEqual(w.argv, ['/app/run', '--serve', '--port', '80']);
  assert.equal(w.cwd, '/app');
  assert.deepEqual(w.env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'A=1'], 'a PATH when the image has none');
  assert.deepEqual(workloadOf(app, ['python3', '-c', 'print(1)']).argv, ['python3', '-c', 'print(1)']);
  assert.equal(workloadOf({ rootfs, config: { Cmd: ['x'], WorkingDir: 'relative' } }).cwd, '/');
  assert.throws(() => workloadOf({ rootfs }), (e) => e instanceof WorkloadError && /no entrypoint or cmd/.test(e.message));
  assert.throws(() => workloadOf({ rootfs, config: { Cmd: 'not a list' } }), WorkloadError);
});

test('the workload is started in its own namespaces, rooted in the image, with the image\'s env only', () => {
  const c = workloadCommand('/m/merged', { argv: ['/bin/echo', 'hi'], env: ['PATH=/bin', 'EMPTY=', 'BAD'], cwd: '/srv' });
  assert.match(c.file, /\/unshare$/);
  assert.deepEqual(c.args.slice(0, 8), ['--mount', '--pid', '--ipc', '--uts', '--propagation', 'private', '--kill-child', '--']);
  assert.match(c.args.at(-4)!, /\/mount$/);
  assert.deepEqual(c.args.slice(-6), ['/m/merged', '/srv', c.args.at(-4), c.file, '/bin/echo', 'hi']);
  assert.deepEqual(c.env, { PATH: '/bin', EMPTY: '' });
});

test('an opened file\'s path inside the image, from its fd\'s link', () => {
  assert.equal(imagePath('/t/merged', '/t/merged/usr/bin/python3.11'), '/usr/bin/python3.11');
  assert.equal(imagePath('/t/merged/', '/t/merged/etc/passwd'), '/etc/passwd');
  assert.equal(imagePath('/t/merged', '/t/merged'), '/');
  assert.equal(imagePath('/t/merged', '/usr/lib/libc.so.6'), '/usr/lib/libc.so.6', 'seen from a mount namespace this process cannot reach: already the image\'s');
  assert.equal(imagePath('/t/merged', '/t/merged-other/x'), '/t/merged-other/x');
  assert.equal(imagePath('/t/merged', '/t/merged/tmp/gone (deleted)'), null);
  assert.equal(imagePath('/t/merged', 'anon_inode:[eventfd]'), null);
});

test('the open recorder lists the regular files opened under a filesystem, first open first, each once; not its own opens, nor directories', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-opens-'));
  execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', dir]);
  try {
    fs.mkdirSync(path.join(dir, 'sub'));
    for (const f of ['a', 'b', 'sub/c', 'unread']) fs.writeFileSync(path.join(dir, f), f);
    const rec = new OpenRecorder(dir);
    fs.readFileSync(path.join(dir, 'unread')); // this process: not the workload
    const run = (args: string[]) => assert.equal(spawnSync('cat', args.map((a) => path.join(dir, a))).status, 0);
    run(['b', 'sub/c']);
    run(['a', 'b']);
    assert.equal(spawnSync('ls', [path.join(dir, 'sub')]).status, 0);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(rec.stop(), ['/b', '/sub/c', '/a']);
    assert.equal(rec.overflowed, false);
  } finally {
    execFileSync('umount', [dir]);
    fs.rmdirSync(dir);
  }
});
