// The snapshotter on real directories and a real SQLite file (no mounts).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { status } from '@grpc/grpc-js';
import { Snapshotter } from '../../snapshotter/snapshotter';
import { SnapshotError } from '../../snapshotter/storage/errors';
import { Kind } from '../../snapshotter/storage/info';

const log = pino({ level: 'silent' });
let root: string;
let sn: Snapshotter;

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-unit-'));
  sn = Snapshotter.open(path.join(root, 'state'), log);
});
afterEach(() => {
  sn.close();
  fs.rmSync(root, { recursive: true, force: true });
});

const code = (c: status) => (e: unknown) => e instanceof SnapshotError && e.code === c;
const dirs = () => fs.readdirSync(sn.snapshotsDir).sort();

test('prepare, commit, view: kinds, parents, directories', async () => {
  await sn.prepare('a', '', { l: 'v' });
  assert.equal(sn.stat('a').kind, Kind.Active);
  assert.equal((fs.statSync(path.join(sn.snapshotsDir, '1', 'fs')).mode & 0o777), 0o755);
  assert.equal((fs.statSync(path.join(sn.snapshotsDir, '1', 'work')).mode & 0o777), 0o711);
  await sn.commit('A', 'a', { c: '1' });
  const A = sn.stat('A');
  assert.equal(A.kind, Kind.Committed);
  assert.deepEqual(A.labels, { c: '1' }, 'commit replaces labels, as containerd does');
  assert.throws(() => sn.stat('a'), code(status.NOT_FOUND));
  assert.ok(!fs.existsSync(path.join(sn.snapshotsDir, '1', 'work')));
  const m = await sn.view('v', 'A', {});
  assert.deepEqual(m, [{ type: 'bind', source: path.join(sn.snapshotsDir, '1', 'fs'), options: ['ro', 'rbind'] }]);
  assert.equal(sn.stat('v').parent, 'A');
  assert.equal(sn.stat('v').kind, Kind.View);
  assert.ok(!fs.existsSync(path.join(sn.snapshotsDir, '2', 'work')), 'views have no work dir');
  assert.deepEqual(await sn.mounts('v'), m);
  await assert.rejects(sn.mounts('A'), code(status.FAILED_PRECONDITION));
});

test('error codes follow containerd errdefs', async () => {
  await sn.prepare('a', '', {});
  await assert.rejects(sn.prepare('a', '', {}), code(status.ALREADY_EXISTS));
  await assert.rejects(sn.prepare('b', 'missing', {}), code(status.NOT_FOUND));
  await assert.rejects(sn.prepare('b', 'a', {}), code(status.INVALID_ARGUMENT), 'parent must be committed');
  await assert.rejects(sn.prepare('', '', {}), code(status.INVALID_ARGUMENT));
  await assert.rejects(sn.prepare('big', '', { k: 'x'.repeat(4096) }), code(status.INVALID_ARGUMENT));
  await assert.rejects(sn.commit('A', 'missing', {}), code(status.NOT_FOUND));
  await sn.commit('A', 'a', {});
  await sn.prepare('a2', 'A', {});
  await assert.rejects(sn.commit('A', 'a2', {}), code(status.ALREADY_EXISTS));
  await sn.view('v', 'A', {});
  await assert.rejects(sn.commit('V', 'v', {}), code(status.FAILED_PRECONDITION), 'only active snapshots commit');
  await assert.rejects(sn.remove('A'), code(status.FAILED_PRECONDITION), 'a snapshot with children stays');
  await assert.rejects(sn.remove('nope'), code(status.NOT_FOUND));
  assert.throws(() => sn.update({ name: 'nope', parent: '', kind: 0, createdUs: 0, updatedUs: 0, labels: {} }, []), code(status.NOT_FOUND));
  assert.throws(() => sn.list(['name==']), code(status.INVALID_ARGUMENT));
  // nothing the failures touched is left behind
  assert.deepEqual(dirs(), ['1', '2', '3']);
});

test('update: whole label set, single labels, immutable fields', async () => {
  await sn.prepare('a', '', { x: '1', y: '2' });
  const before = sn.stat('a');
  const base = { ...before, labels: { x: '9', z: '3' } };
  assert.deepEqual(sn.update(base, ['labels.x']).labels, { x: '9', y: '2' });
  assert.deepEqual(sn.update({ ...base, labels: {} }, ['labels.y']).labels, { x: '9' }, 'an empty value removes the label');
  assert.deepEqual(sn.update(base, []).labels, { x: '9', z: '3' });
  assert.deepEqual(sn.update({ ...base, labels: { q: '1' } }, ['labels']).labels, { q: '1' });
  assert.throws(() => sn.update(base, ['parent']), code(status.INVALID_ARGUMENT));
  assert.throws(() => sn.update(base, ['name']), code(status.INVALID_ARGUMENT));
  const after = sn.stat('a');
  assert.equal(after.createdUs, before.createdUs);
  assert.ok(after.updatedUs > before.updatedUs);
  assert.deepEqual(after.labels, { q: '1' });
});

test('list filters, remove and usage', async () => {
  await sn.prepare('a', '', {});
  fs.writeFileSync(path.join(sn.upper(1), 'f'), Buffer.alloc(10000, 1));
  fs.mkdirSync(path.join(sn.upper(1), 'd'));
  fs.linkSync(path.join(sn.upper(1), 'f'), path.join(sn.upper(1), 'd', 'hardlink'));
  const u = await sn.usage('a');
  assert.equal(u.inodes, 3, 'root, file (once, despite its hard link), dir');
  assert.ok(u.size >= 10000 + 2 * 4096, `size ${u.size}`);
  await sn.commit('A', 'a', { 'containerd.io/snapshot.ref': 'sha256:x' });
  assert.deepEqual(await sn.usage('A'), u, 'usage is frozen at commit');
  await sn.prepare('b', 'A', {});
  assert.deepEqual(sn.list([]).map((i) => i.name), ['A', 'b']);
  assert.deepEqual(sn.list(['kind==active']).map((i) => i.name), ['b']);
  assert.deepEqual(sn.list(['labels."containerd.io/snapshot.ref"==sha256:x,parent==""']).map((i) => i.name), ['A']);
  assert.deepEqual(sn.list(['parent==A', 'name==A']).map((i) => i.name), ['A', 'b']);
  await sn.remove('b');
  await sn.remove('A');
  assert.deepEqual(sn.list([]), []);
  assert.deepEqual(dirs(), []);
});

test('state survives a reopen; ids are never reused', async () => {
  await sn.prepare('a', '', { k: 'v' });
  await sn.commit('A', 'a', {});
  await sn.prepare('b', 'A', {});
  await sn.remove('b');
  sn.close();
  sn = Snapshotter.open(path.join(root, 'state'), log);
  assert.deepEqual(sn.stat('A').labels, {});
  await sn.prepare('c', 'A', {});
  assert.deepEqual(dirs(), ['1', '3']);
});

test('cleanup removes what a crash can leave, and nothing else', async () => {
  await sn.prepare('a', '', {});
  await sn.commit('A', 'a', {});
  fs.writeFileSync(path.join(sn.upper(1), 'keep'), 'x');
  // the leftovers of a kill -9: a create before its transaction, a remove after its transaction
  fs.mkdirSync(path.join(sn.snapshotsDir, 'new-XyZ12', 'fs'), { recursive: true });
  fs.mkdirSync(path.join(sn.snapshotsDir, 'rm-7', 'fs'), { recursive: true });
  fs.mkdirSync(path.join(sn.snapshotsDir, '42', 'fs'), { recursive: true });
  assert.deepEqual((await sn.cleanup()).sort(), ['42', 'new-XyZ12', 'rm-7']);
  assert.deepEqual(dirs(), ['1']);
  assert.equal(fs.readFileSync(path.join(sn.upper(1), 'keep'), 'utf8'), 'x');
});

test('a create that reuses the id of an orphaned directory replaces it', async () => {
  // a crash between rename and commit leaves dir "1" that the DB never recorded
  fs.mkdirSync(path.join(sn.snapshotsDir, '1', 'fs', 'stale'), { recursive: true });
  await sn.prepare('a', '', {});
  assert.deepEqual(fs.readdirSync(sn.upper(1)), []);
});
