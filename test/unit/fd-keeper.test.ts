// The fd keeper, for real: a worker process that dies by SIGKILL between
// reading an event and writing down its blob leaves the file's name in its
// keeper's fd table, and the successor's scan of dead journals reads it there.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FD_KEEPER_COMM } from '../../native';
import { findKeepers, groupFromKeepers, journalWorkerOf, killQuietly, pidAlive } from '../../worker/fanotify/keeper';
import { deadJournals } from '../../worker/fanotify/group';

// A FAN_PRE_ACCESS event read from a 6.18 kernel (as in fanotify.test.ts): fd at 16, pid at 20.
const REAL_EVENT = '300000000300180000001000000000001400000046040000060018000000000000000300000000000000010000000000';

test('a keeper is told by the journal open in its table: "<dir>/journal.<pid>", deleted or not, and nothing else', () => {
  assert.equal(journalWorkerOf('/run/j/journal.123', '/run/j'), 123);
  assert.equal(journalWorkerOf('/run/j/journal.123 (deleted)', '/run/j/'), 123);
  assert.equal(journalWorkerOf('/run/j/journal.123.tmp', '/run/j'), undefined);
  assert.equal(journalWorkerOf('/run/other/journal.123', '/run/j'), undefined);
  assert.equal(journalWorkerOf('/run/j/sub/journal.123', '/run/j'), undefined);
  assert.equal(journalWorkerOf('pipe:[7132]', '/run/j'), undefined);
});

/** The script of a child worker: it opens its journal under `dir` and starts its keeper (\`journal\`, \`keeper\`), then runs `body`. */
function keeperChild(dir: string, body: string): string {
  const dist = path.resolve(__dirname, '../..');
  return `
    const { openJournal } = require(${JSON.stringify(path.join(dist, 'worker/fanotify/group.js'))});
    const { startKeeper } = require(${JSON.stringify(path.join(dist, 'worker/fanotify/keeper.js'))});
    const journal = openJournal(${JSON.stringify(dir)});
    const keeper = startKeeper(() => journal.inUse === 0);
    ${body}
  `;
}

/** A child that opens a journal and its keeper, reads a fake event for `blob` into a slot, and never writes its path. */
function deadWorker(dir: string, blob: string): Promise<{ pid: number; keeper: number; fd: number }> {
  const script = keeperChild(dir, `
    const fs = require('fs');
    const fd = fs.openSync(${JSON.stringify(blob)}, 'r');
    const t = journal.take();
    Buffer.from('${REAL_EVENT}', 'hex').copy(t.area);
    t.area.writeInt32LE(fd, 16);
    process.stdout.write(JSON.stringify({ pid: process.pid, keeper, fd }) + '\\n');
    setInterval(() => {}, 1000);
  `);
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(JSON.parse(out));
    });
    child.on('exit', (code) => reject(new Error(`child exited (${code}) before it was ready`)));
  });
}

/** A dir with a blob file and such a child (killed with its keeper after the test). */
async function workerIn(t: TestContext) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-keeper-'));
  const blob = path.join(dir, 'blob');
  fs.writeFileSync(blob, 'x');
  const w = await deadWorker(path.join(dir, 'journals'), blob);
  t.after(() => [w.pid, w.keeper].forEach(killQuietly));
  return { dir, blob, w };
}

/** SIGKILL, then wait until it is dead (a zombie: this process has not reaped it yet). */
async function killAndWait(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  while (pidAlive(pid)) await new Promise((r) => setTimeout(r, 10));
}

test("a SIGKILLed worker's fds stay open in its keeper: a pathless orphan is named from there, and the keeper ends with the journal", async (t) => {
  const { dir, blob, w } = await workerIn(t);
  assert.equal(fs.readFileSync(`/proc/${w.keeper}/comm`, 'utf8').trim(), FD_KEEPER_COMM);
  await killAndWait(w.pid);

  assert.deepEqual([...findKeepers(path.join(dir, 'journals'))], [[w.pid, w.keeper]]);
  const dead = deadJournals(path.join(dir, 'journals'));
  assert.equal(dead.orphans.length, 1);
  assert.equal(dead.orphans[0].path, undefined, 'the worker never wrote its path');
  assert.equal(dead.orphans[0].event.fd, w.fd);
  assert.equal(dead.orphans[0].keptFile, blob);
  assert.equal(dead.orphans[0].worker, w.pid);

  // what a restarted lazysnapd does for the fanotify group (here the blob file stands in for it): a copy of the kept fd
  const got = groupFromKeepers(path.join(dir, 'journals'), (link) => link === blob);
  assert.equal(got?.keeper, w.keeper);
  assert.equal(fs.readlinkSync(`/proc/self/fd/${got!.fd}`), blob);
  fs.closeSync(got!.fd);

  dead.remove();
  assert.equal(fs.existsSync(path.join(dir, 'journals', `journal.${w.pid}`)), false);
  await assertEnded(w.keeper);
  assert.deepEqual([...findKeepers(path.join(dir, 'journals'))], [], 'the dead worker\'s keeper was ended');
});

/** A child with a journal and a keeper that prints the keeper's pid, then exits, or waits for the SIGTERM sent to it (`term`); resolves with the pid and how the child ended. */
async function workerThat(term: boolean): Promise<{ keeper: number; code: number | null; signal: NodeJS.Signals | null }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-keeper-'));
  const script = keeperChild(dir, `
    process.stdout.write(String(keeper) + '\\n');
    ${term ? 'setInterval(() => {}, 1000);' : ''}
  `);
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const keeper = await new Promise<number>((resolve) => child.stdout.once('data', (d) => resolve(Number(String(d).trim()))));
  if (term) child.kill('SIGTERM');
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (c, s) => r([c, s])));
  return { keeper, code, signal };
}

async function assertEnded(keeper: number): Promise<void> {
  assert.ok(keeper > 0);
  for (let i = 0; i < 100 && pidAlive(keeper); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(!pidAlive(keeper), 'keeper still running');
}

test('a worker that exits, or gets SIGTERM, with nothing unanswered ends its own keeper (and still dies of the SIGTERM)', async () => {
  const exited = await workerThat(false);
  assert.equal(exited.code, 0);
  await assertEnded(exited.keeper);
  const termed = await workerThat(true);
  assert.equal(termed.signal, 'SIGTERM');
  await assertEnded(termed.keeper);
});

test("a dead worker's keeper that holds no group is ended when lazysnapd looks for one (an old group must not hold readers)", async (t) => {
  const { dir, w } = await workerIn(t);
  assert.equal(groupFromKeepers(path.join(dir, 'journals'), () => false), undefined, 'the worker is alive: its keeper is not a dead one');
  await killAndWait(w.pid);
  assert.equal(groupFromKeepers(path.join(dir, 'journals'), () => false), undefined);
  await assertEnded(w.keeper);
});
