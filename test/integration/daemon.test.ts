// lazysnapd as a process: what containerd's suite does not cover (Mounts,
// Usage, Cleanup), the socket, bad requests, and startup errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { makeTempDir, removeTempDir } from '../support/tmp';
import { startLazysnapd } from '../support/lazysnapd';
import { SnapshotsClient } from '../support/snapshots-client';
import { mountAll, unmount } from '../support/mount';
import { run } from '../support/proc';

const daemonJs = path.resolve(__dirname, '../../cmd/lazysnapd.js');
let dir: string;
let d: Awaited<ReturnType<typeof startLazysnapd>>;
let c: SnapshotsClient;

before(async () => {
  dir = await makeTempDir('daemon');
  d = await startLazysnapd({ root: path.join(dir, 'root'), address: path.join(dir, 'snap.sock') });
  c = new SnapshotsClient(d.address);
});
after(async () => {
  c?.close();
  await d?.stop();
  await removeTempDir(dir);
});

const grpcCode = (code: status) => (e: unknown) => (e as { code?: number }).code === code;

test('the socket is 0600', () => {
  const st = fs.statSync(d.address);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o600);
});

test('Mounts and Usage of an active snapshot written through a real overlay mount', async () => {
  const base = await c.prepare('base', '', {});
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  await mountAll(base, mnt);
  fs.writeFileSync(path.join(mnt, 'a'), 'layer one');
  await unmount(mnt);
  await c.commit('L1', 'base');

  const mounts = await c.prepare('work', 'L1', {});
  assert.deepEqual(await c.mounts('work'), mounts, 'Mounts returns what Prepare returned');
  assert.equal(mounts[0].type, 'overlay');
  const empty = await c.usage('work');
  assert.equal(empty.inodes, 1, 'a fresh active snapshot holds only its root');

  await mountAll(mounts, mnt);
  assert.equal(fs.readFileSync(path.join(mnt, 'a'), 'utf8'), 'layer one', 'the parent is visible');
  fs.mkdirSync(path.join(mnt, 'dir'));
  for (let i = 0; i < 10; i++) fs.writeFileSync(path.join(mnt, 'dir', `f${i}`), Buffer.alloc(100_000, i));
  fs.symlinkSync('a', path.join(mnt, 'link'));
  await unmount(mnt);

  const u = await c.usage('work');
  assert.equal(u.inodes, 1 + 1 + 10 + 1, 'root, dir, 10 files, symlink');
  assert.ok(u.size >= 10 * 100_000 && u.size < 10 * 100_000 + 200_000, `size ${u.size}`);
  await c.commit('L2', 'work');
  assert.deepEqual(await c.usage('L2'), u, 'committed usage is what the active layer had');
  await assert.rejects(c.mounts('L2'), grpcCode(status.FAILED_PRECONDITION));

  const view = await c.view('v', 'L2', {});
  assert.deepEqual(await c.mounts('v'), view);
  await mountAll(view, mnt);
  assert.equal(fs.readdirSync(path.join(mnt, 'dir')).length, 10);
  assert.throws(() => fs.writeFileSync(path.join(mnt, 'x'), 'x'), /EROFS|read-only/i);
  await unmount(mnt);
  for (const k of ['v', 'L2', 'L1']) await c.remove(k);
});

test('Cleanup removes directories that no snapshot owns, and only those', async () => {
  await c.prepare('keep', '', {});
  const snaps = path.join(d.root, 'snapshots');
  const before = fs.readdirSync(snaps).sort();
  for (const orphan of ['new-abc123', 'rm-77', '999']) fs.mkdirSync(path.join(snaps, orphan, 'fs'), { recursive: true });
  await c.cleanup();
  assert.deepEqual(fs.readdirSync(snaps).sort(), before);
  await c.remove('keep');
});

test('malformed requests get a status code and the daemon keeps serving', async () => {
  await assert.rejects(c.list(['labels."unterminated']), grpcCode(status.INVALID_ARGUMENT));
  await assert.rejects(c.update({ name: '' } as never, []), grpcCode(status.NOT_FOUND));
  await assert.rejects(c.prepare('', '', {}), grpcCode(status.INVALID_ARGUMENT));
  await assert.rejects(c.prepare('x', '', { k: 'v'.repeat(5000) }), grpcCode(status.INVALID_ARGUMENT));
  await assert.rejects(c.stat('no-such-key'), grpcCode(status.NOT_FOUND));
  await assert.rejects(c.usage('no-such-key'), grpcCode(status.NOT_FOUND));
  await c.prepare('still-alive', '', {});
  assert.equal((await c.stat('still-alive')).kind, 2);
  await c.remove('still-alive');
});

async function startFails(args: string[]): Promise<string> {
  const r = await run(process.execPath, [daemonJs, ...args], { timeoutMs: 20_000 });
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  return lines[0];
}

test('bad config, missing root, unusable socket: one line and exit 1', async () => {
  const cfg = path.join(dir, 'bad.toml');
  fs.writeFileSync(cfg, 'root = "/tmp/x"\nsocket = "/tmp/y"\n');
  assert.match(await startFails(['--config', cfg]), /config .*bad\.toml: unknown key "socket"/);
  fs.writeFileSync(cfg, 'root = [\n');
  assert.match(await startFails(['--config', cfg]), /bad\.toml: line \d+, column \d+/);
  assert.match(await startFails(['--config', path.join(dir, 'none.toml')]), /none\.toml: no such file/);
  const sock = path.join(dir, 's.sock');
  assert.match(await startFails(['--root', '/nonexistent-parent/root', '--address', sock]), /parent directory \/nonexistent-parent does not exist/);
  fs.writeFileSync(path.join(dir, 'afile'), '');
  assert.match(await startFails(['--root', path.join(dir, 'afile'), '--address', sock]), /is not a directory/);
  const root = path.join(dir, 'r2');
  assert.match(await startFails(['--root', root, '--address', d.address]), /in use by another process/);
  assert.match(await startFails(['--root', root, '--address', path.join(dir, 'afile')]), /exists and is not a socket/);
  assert.match(await startFails(['--root', root, '--address', path.join(dir, 'afile', 's.sock')]), /socket directory/);
  assert.match(await startFails(['--root', root, '--address', '/tmp/' + 'x'.repeat(120)]), /longer than 107 bytes/);
});

test('a stale socket is replaced, and SIGTERM removes the socket', async () => {
  const sub = path.join(dir, 'stale');
  fs.mkdirSync(sub);
  const first = await startLazysnapd({ root: path.join(sub, 'root'), address: path.join(sub, 'snap.sock') });
  await first.kill9();
  assert.ok(fs.existsSync(first.address), 'kill -9 leaves the socket file');
  const second = await startLazysnapd({ root: path.join(sub, 'root'), address: first.address });
  const c2 = new SnapshotsClient(second.address);
  await c2.prepare('k', '', {});
  c2.close();
  await second.stop();
  assert.ok(!fs.existsSync(second.address));
});
