// The armed standby: lazysnapd gives a loaded standby the device and a pidfd
// of the serving worker, and the standby takes over at that worker's death by
// itself (worker/handover.ts). First the pure reading of control messages,
// then a real worker process armed by hand, then the supervisor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { handoverStep } from '../../worker/handover';
import { ARM_BYTE, HANDOVER_BYTE } from '../../worker/control';
import { SETTINGS_ENV, encodeSettings } from '../../worker/settings';
import { pidfdOpen, recvFds, sendFds, socketpair } from '../../native';
import { testWorkerSettings, withSupervised } from '../support/supervised';
import { waitFor } from '../support/wait';

const msg = (data: string, fds: number[] = []) => ({ data: Buffer.from(data), fds, truncated: false });

test('handoverStep: a handover, an arming (once), the socket\'s end, and anything else is refused', () => {
  assert.deepEqual(handoverStep(msg(''), false), { kind: 'gone' });
  assert.deepEqual(handoverStep(msg('', [5]), false).kind, 'bad'); // fds with no byte
  assert.deepEqual(handoverStep(msg(HANDOVER_BYTE.toString(), [7]), false), { kind: 'handover', fd: 7 });
  assert.deepEqual(handoverStep(msg(HANDOVER_BYTE.toString(), [7]), true), { kind: 'handover', fd: 7 });
  assert.deepEqual(handoverStep(msg(ARM_BYTE.toString(), [7, 8]), false), { kind: 'arm', fd: 7, pidfd: 8 });
  assert.match((handoverStep(msg(ARM_BYTE.toString(), [7, 8]), true) as { why: string }).why, /already armed/);
  // once armed, a request means lazysnapd made this standby the serving worker: kept for the control reader
  assert.deepEqual(handoverStep(msg('{"id":3,"op":"sta'), true), { kind: 'early', data: Buffer.from('{"id":3,"op":"sta') });
  assert.equal(handoverStep(msg('{"id":3}', [7]), true).kind, 'bad');
  assert.equal(handoverStep(msg('x'), true).kind, 'bad');
  for (const bad of [msg(HANDOVER_BYTE.toString()), msg(HANDOVER_BYTE.toString(), [1, 2]), msg(ARM_BYTE.toString(), [7]), msg('FF', [7]), msg('{"op":"status"}\n')]) {
    assert.equal(handoverStep(bad, false).kind, 'bad', JSON.stringify(bad.data.toString()));
  }
});

/** What arrived on a socket so far, without waiting. */
function readNow(fd: number): string {
  let s = '';
  for (;;) {
    try {
      const r = recvFds(fd, 4096, 1, { dontWait: true });
      if (r.data.length === 0) return s;
      s += r.data.toString();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return s;
      throw e;
    }
  }
}

/** Waits for `text` on fd with this process's loop blocked (it stands for lazysnapd, which then can do nothing); what arrived. */
function readBlocked(fd: number, text: string, timeoutMs: number): string {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const t0 = Date.now();
  let got = '';
  while (!got.includes(text) && Date.now() - t0 < timeoutMs) {
    got += readNow(fd);
    Atomics.wait(pause, 0, 0, 5);
  }
  return got;
}

/** A worker process started as lazysnapd starts one (control socket on fd 3), loaded and waiting for its device. */
async function startWorker(t: { after: (fn: () => void) => void }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-standby-'));
  const dbPath = path.join(dir, 'metadata.db');
  new Database(dbPath).close();
  const settings = testWorkerSettings(dbPath, 250);
  const [ctl, theirs] = socketpair('stream');
  const worker = spawn(process.execPath, [path.resolve(__dirname, '../../cmd/lazysnap-fscache-worker.js')], {
    stdio: ['ignore', 'inherit', 'inherit', theirs],
    env: { ...process.env, [SETTINGS_ENV]: encodeSettings(settings) },
  });
  fs.closeSync(theirs);
  const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
  // the serving worker it stands by for: a process that only sleeps
  const serving = spawn('sleep', ['60'], { stdio: 'ignore' });
  const [dev, devPeer] = socketpair('stream');
  const state = { ctl, ctlOpen: true };
  t.after(() => {
    for (const p of [worker, serving]) p.kill('SIGKILL');
    if (state.ctlOpen) fs.closeSync(ctl);
    fs.closeSync(devPeer);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  let out = '';
  await waitFor(() => (out += readNow(ctl)).includes('"event":"loaded"'), { what: 'the worker to load', timeoutMs: 30_000 });
  return { worker, serving, dev, devPeer, exited, state, out: () => (out += readNow(ctl)) };
}

function arm(ctl: number, dev: number, serving: ChildProcess): void {
  const pidfd = pidfdOpen(serving.pid!);
  sendFds(ctl, ARM_BYTE, [dev, pidfd]);
  fs.closeSync(pidfd);
  fs.closeSync(dev); // the worker holds its copy
}

test('an armed standby serves once the serving worker exits, with no handover', { timeout: 60_000 }, async (t) => {
  const w = await startWorker(t);
  arm(w.state.ctl, w.dev, w.serving);
  await sleep(500);
  assert.equal(readNow(w.devPeer), '', 'an armed standby does not touch the device while the serving worker lives');
  w.serving.kill('SIGKILL');
  let wrote = '';
  await waitFor(() => (wrote += readNow(w.devPeer)).includes('restore'), { what: 'the standby to write restore', timeoutMs: 15_000 });
  await waitFor(() => w.out().includes('"event":"ready"'), { what: 'the standby to say it serves' });
  assert.equal(w.worker.exitCode, null, 'it keeps serving');
});

test('an armed standby whose lazysnapd has gone exits instead, even when the serving worker died at the same time', { timeout: 60_000 }, async (t) => {
  const w = await startWorker(t);
  arm(w.state.ctl, w.dev, w.serving);
  await sleep(300); // the arming is read
  // Both at once, as the standby sees them: it is stopped while the serving worker dies and lazysnapd's end closes.
  process.kill(w.worker.pid!, 'SIGSTOP');
  w.serving.kill('SIGKILL');
  await new Promise((r) => w.serving.once('exit', r));
  fs.closeSync(w.state.ctl);
  w.state.ctlOpen = false;
  process.kill(w.worker.pid!, 'SIGCONT');
  assert.equal(await w.exited, 0);
  assert.equal(readNow(w.devPeer), '', 'it never wrote to the device');
});

// lazysnapd makes an armed standby active when it sees the exit, and may send it requests (a status, a prefetch
// budget) before the standby, on a busy CPU, has seen that exit itself: they are the serving worker's, not a bad
// handover (a standby used to exit on them, and the next worker started cold).
const STATUS = '{"id":7,"op":"status"}\n';

test('an armed standby sent requests before it took over serves them once the serving worker has exited', { timeout: 60_000 }, async (t) => {
  const w = await startWorker(t);
  arm(w.state.ctl, w.dev, w.serving);
  await sleep(300);
  fs.writeSync(w.state.ctl, STATUS); // too early: the serving worker still lives
  await sleep(500);
  assert.equal(w.worker.exitCode, null, 'the standby does not exit on a request');
  assert.equal(readNow(w.devPeer), '', 'nor touches the device while the serving worker lives');
  w.serving.kill('SIGKILL');
  let wrote = '';
  await waitFor(() => (wrote += readNow(w.devPeer)).includes('restore'), { what: 'the standby to write restore', timeoutMs: 15_000 });
  await waitFor(() => w.out().includes('"id":7,"result"'), { what: 'the answer to the status request', timeoutMs: 15_000 });
  assert.equal(w.worker.exitCode, null, 'it keeps serving');
});

test('an armed standby that sees the exit and the first requests at once takes over and answers them', { timeout: 60_000 }, async (t) => {
  const w = await startWorker(t);
  arm(w.state.ctl, w.dev, w.serving);
  await sleep(300);
  process.kill(w.worker.pid!, 'SIGSTOP');
  w.serving.kill('SIGKILL');
  await new Promise((r) => w.serving.once('exit', r));
  fs.writeSync(w.state.ctl, STATUS + '{"id":8,"op":"prefetch-budget","bytes":1048576}\n' + STATUS.replace('7', '9'));
  process.kill(w.worker.pid!, 'SIGCONT');
  let wrote = '';
  await waitFor(() => (wrote += readNow(w.devPeer)).includes('restore'), { what: 'the standby to write restore', timeoutMs: 15_000 });
  await waitFor(() => /"id":7,"result".*"id":9,"result"/s.test(w.out()), { what: 'the answers, in order', timeoutMs: 15_000 });
  assert.equal(w.worker.exitCode, null, 'it keeps serving');
});

test('the supervisor arms its standby: a serving worker killed while lazysnapd\'s loop is blocked is replaced all the same', { timeout: 60_000 }, async () => {
  await withSupervised(1000, async (sup, logs, { peer }) => {
    await waitFor(() => sup.health().standby === 'loaded', { what: 'a loaded standby', timeoutMs: 30_000 });
    const first = sup.workerPid!;
    const workers = childWorkers();
    assert.equal(workers.length, 2, `the serving worker and its standby: ${workers}`);
    readNow(peer); // the first worker's restore
    assert.equal(sup.health().lastFailoverStallMs, null, 'no failover yet');
    process.kill(first, 'SIGKILL');
    // From here this process (lazysnapd) is blocked: it cannot see the exit, let alone hand the device over.
    assert.match(readBlocked(peer, 'restore', 15_000), /restore/, 'the standby took the device over by itself');
    // lazysnapd then follows: the standby it had is the serving worker, handed nothing
    await waitFor(() => sup.workerPid !== first && sup.workerPid, { what: 'lazysnapd to see the failover' });
    assert.ok(workers.includes(sup.workerPid!), `the serving worker ${sup.workerPid} is the standby that was waiting (${workers})`);
    await sup.whenReady();
    assert.equal(sup.activations, 2);
    const stall = sup.health().lastFailoverStallMs;
    assert.ok(typeof stall === 'number' && stall >= 0 && stall < 15_000, `status tells the failover's stall: ${stall}`);
    assert.ok(logs.some((l) => l.msg === 'fscache worker exited; failing over'));
    assert.ok(!logs.some((l) => /handover to the fscache worker failed|cannot arm/.test(String(l.msg))), JSON.stringify(logs));
    // and the next standby is armed against the new serving worker in turn
    await waitFor(() => sup.health().standby === 'loaded', { what: 'the next loaded standby', timeoutMs: 30_000 });
    await sleep(300);
    readNow(peer);
    const second = sup.workerPid!;
    process.kill(second, 'SIGKILL');
    assert.match(readBlocked(peer, 'restore', 15_000), /restore/, 'the second standby took over by itself too');
    await waitFor(() => sup.workerPid !== second && sup.workerPid, { what: 'lazysnapd to see the second failover' });
  });
});

/** Worker processes this process started (lazysnapd's children). */
function childWorkers(): number[] {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\)\s+/, '').split(' ');
      return Number(stat[1]) === process.pid && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('lazysnap-fscache-worker');
    } catch {
      return false;
    }
  });
}
