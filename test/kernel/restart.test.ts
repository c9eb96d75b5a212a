// lazysnapd itself restarting (an upgrade, or a crash) under a running
// reader: the fd is taken back from the worker that outlived it, or from
// systemd's fd store, and no read fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { startLazysnapd, LAZYSNAPD_JS } from '../support/lazysnapd';
import { unmountAll } from '../support/tmp';
import { run, runOk } from '../support/proc';
import { waitFor, canConnect } from '../support/wait';
import { startFakeSystemd } from '../support/fake-systemd';
import { GUEST_MOUNT_DIRS, guestDir, makeSourceTree, mkfsErofs, requireFscacheKernel } from '../support/guest';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
const READER = path.resolve(__dirname, 'failover-reader.js');
let dir: string;
let src: string;
let image: string;
let fscacheDir: string;

before(async () => {
  fscacheDir = requireFscacheKernel();
  dir = guestDir('restart');
  src = path.join(dir, 'src');
  makeSourceTree(src, { files: 200, bigFiles: 6, bigSize: 6 << 20 });
  image = path.join(dir, 'image.erofs');
  await mkfsErofs(image, src);
});

after(async () => {
  if (dir) await unmountAll(dir);
  await run('pkill', ['-9', '-f', 'lazysnap-fscache-worker']);
});

const config = (root: string, tag: string) =>
  `root = "${root}"\n[log]\nlevel = "info"\n[fscache]\nenabled = true\ncache_dir = "${path.join(fscacheDir, tag)}"\ntag = "${tag}"\n${GUEST_MOUNT_DIRS}`;

function startReader(mnt: string) {
  const p = spawn(process.execPath, [READER, mnt, src], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  return new Promise<{ files: number; readsFailed: number; mismatchedBytes: number; errors: string[] }>((resolve, reject) =>
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`reader exited ${code}`)))),
  );
}

test('kill -9 lazysnapd mid-read, start it again: the reader never notices', async () => {
  const root = path.join(dir, 'root-a');
  const address = path.join(dir, 'a.sock');
  const cfg = config(root, 'restart-a');
  const first = await startLazysnapd({ root, address, config: cfg });
  const mnt = path.join(dir, 'mnt-a');
  fs.mkdirSync(mnt);
  await runOk(process.execPath, [CLI, 'mount', image, mnt, '--address', address]);
  const oldWorker = JSON.parse((await runOk(process.execPath, [CLI, 'status', '--json', '--address', address])).stdout).worker.pid;
  const reading = startReader(mnt);
  await new Promise((r) => setTimeout(r, 100));
  await first.kill9();
  assert.ok(fs.existsSync(`/proc/${oldWorker}`), 'the worker outlives lazysnapd');
  const second = await startLazysnapd({ root, address, config: cfg });
  try {
    const r = await reading;
    const log = fs.readFileSync(second.logPath, 'utf8');
    assert.equal(r.readsFailed, 0, `${r.errors.slice(0, 10).join('; ')}\n--- lazysnapd log ---\n${log.slice(-6000)}`);
    assert.equal(r.mismatchedBytes, 0);
    assert.ok(r.files > 200);
    assert.match(log, /took the \/dev\/cachefiles fd back from the running fscache worker/);
    const s = JSON.parse((await runOk(process.execPath, [CLI, 'status', '--json', '--address', address])).stdout);
    assert.notEqual(s.worker.pid, oldWorker);
    assert.ok(!fs.existsSync(`/proc/${oldWorker}`) || /\) Z /.test(fs.readFileSync(`/proc/${oldWorker}/stat`, 'utf8')), 'the old worker was retired');
    assert.equal(s.mounts.length, 1, 'the mount is still registered');
    await runOk(process.execPath, [CLI, 'umount', mnt, '--address', address]);
  } finally {
    await second.stop();
  }
});

test('under systemd: the fd goes to the fd store and comes back with LISTEN_FDS after a crash', async () => {
  const root = path.join(dir, 'root-b');
  fs.mkdirSync(root, { recursive: true });
  const address = path.join(dir, 'b.sock');
  const cfgPath = path.join(dir, 'b.toml');
  fs.writeFileSync(cfgPath, config(root, 'restart-b'));
  const logPath = path.join(dir, 'b.log');
  const logFd = fs.openSync(logPath, 'a');
  const sd = startFakeSystemd(path.join(dir, 'notify.sock'), [process.execPath, LAZYSNAPD_JS, '--config', cfgPath, '--address', address], logFd);
  const { events, until } = sd;
  try {
    sd.send('start');
    await until('FDSTORE=1 with one fd', (e) => e.event === 'notify' && String(e.state).includes('FDSTORE=1') && e.fds === 1);
    await until('READY=1', (e) => e.event === 'notify' && e.state === 'READY=1');
    await waitFor(() => canConnect(address), { what: 'lazysnapd socket' });
    const mnt = path.join(dir, 'mnt-b');
    fs.mkdirSync(mnt);
    await runOk(process.execPath, [CLI, 'mount', image, mnt, '--address', address]);
    const reading = startReader(mnt);
    await new Promise((r) => setTimeout(r, 100));
    const mark = events.length;
    sd.send('kill9');
    await until('killed', (e) => e.event === 'killed', mark);
    sd.send('start');
    await until('restart with the stored fd', (e) => e.event === 'started' && e.listen_fds === 1, mark);
    await until('READY=1 again', (e) => e.event === 'notify' && e.state === 'READY=1', mark);
    const r = await reading;
    assert.equal(r.readsFailed, 0, `${r.errors.slice(0, 10).join('; ')}\n--- lazysnapd log ---\n${fs.readFileSync(logPath, 'utf8').slice(-6000)}`);
    assert.equal(r.mismatchedBytes, 0);
    assert.match(fs.readFileSync(logPath, 'utf8'), /took the \/dev\/cachefiles fd back from the systemd fd store/);
    await waitFor(() => canConnect(address), { what: 'lazysnapd socket after restart' });
    await runOk(process.execPath, [CLI, 'umount', mnt, '--address', address]);
  } finally {
    await sd.stop();
    fs.closeSync(logFd);
  }
});
