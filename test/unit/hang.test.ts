// Hung workers: the pure judgement (what counts as hung, and what must not),
// then the supervisor with real worker processes on the host (a socketpair
// stands in for /dev/cachefiles): a stopped or spinning serving worker is
// killed within the bound and the standby takes over, hang after hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { judgeWorker, type LivenessBounds, type WorkerLiveness } from '../../supervisor/liveness';
import { FscacheSupervisor, heartbeatMsFor } from '../../supervisor/supervisor';
import { workerTunables } from '../../supervisor/malloc-tunables';
import { ConfigError, parseConfig } from '../../config/config';
import { decodeSettings, encodeSettings, type WorkerSettings } from '../../worker/settings';
import type { Heartbeat } from '../../worker/control';
import { NO_REGISTRY, withSupervised } from '../support/supervised';

const B: LivenessBounds = { hangTimeoutMs: 4000, startTimeoutMs: 30_000, readDeadlineMs: 30_000 };
const hb = (o: Partial<Heartbeat> = {}): Heartbeat => ({
  event: 'heartbeat', pid: 1, sentAt: 0, handled: 10, inflight: 0, oldestReadMs: 0, reading: true, worstLoopStallMs: 3, ...o,
});
const judge = (w: WorkerLiveness, now: number) => judgeWorker(w, now, B);

test('silence longer than the bound is a hang; heartbeats within it are not', () => {
  const w: WorkerLiveness = { activatedAt: 1000, loadedAt: 500, lastHeartbeatAt: 10_000, heartbeat: hb() };
  assert.deepEqual(judge(w, 14_000), { hung: false });
  assert.deepEqual(judge(w, 14_001), { hung: true, reason: 'no heartbeat for 4001 ms' });
  // a worker that never sent one after its activation
  assert.deepEqual(judge({ activatedAt: 1000, loadedAt: 500 }, 5001), { hung: true, reason: 'no heartbeat 4001 ms after activation' });
});

test('a standby is not judged by its waiting time: silence counts from activation (or from load, for a fresh worker)', () => {
  // loaded an hour before it was handed the device: it could not beat while it waited in recvmsg
  assert.deepEqual(judge({ activatedAt: 3_600_000, loadedAt: 0 }, 3_603_000), { hung: false });
  // activated while still starting (no standby): the clock starts when its code has loaded
  assert.deepEqual(judge({ activatedAt: 0, loadedAt: 20_000 }, 23_000), { hung: false });
  assert.deepEqual(judge({ activatedAt: 0 }, 29_000), { hung: false });
  assert.deepEqual(judge({ activatedAt: 0 }, 30_001), { hung: true, reason: 'not loaded 30001 ms after activation' });
});

test('a live loop that makes no progress is a hang: a READ far past its deadline, or a device no longer read', () => {
  const base = { activatedAt: 0, loadedAt: 0, lastHeartbeatAt: 40_000 };
  // the oldest READ ages by the time since the heartbeat that reported it
  assert.deepEqual(judge({ ...base, heartbeat: hb({ inflight: 3, oldestReadMs: 33_000 }) }, 40_200), { hung: false });
  assert.deepEqual(judge({ ...base, heartbeat: hb({ inflight: 3, oldestReadMs: 33_900 }) }, 40_200),
    { hung: true, reason: 'oldest READ 34100 ms old (deadline 30000 ms)' });
  // OPENs have no deadline: a long one with no READ pending is not judged
  assert.deepEqual(judge({ ...base, heartbeat: hb({ inflight: 1, oldestReadMs: 0 }) }, 40_200), { hung: false });
  assert.deepEqual(judge({ ...base, heartbeat: hb({ reading: false }) }, 40_200), { hung: true, reason: 'not reading its device (/dev/cachefiles or the fanotify group)' });
  // facts from before the activation are not this activation's
  assert.deepEqual(judge({ activatedAt: 50_000, loadedAt: 0, lastHeartbeatAt: 40_000, heartbeat: hb({ reading: false }) }, 50_100), { hung: false });
});

test('config: fscache.hang_timeout_ms has a default of seconds and a range', () => {
  const c = parseConfig('');
  assert.ok(c.fscache.hang_timeout_ms >= 2000 && c.fscache.hang_timeout_ms <= 10_000, `${c.fscache.hang_timeout_ms}`);
  assert.equal(parseConfig('[fscache]\nhang_timeout_ms = 2500\n').fscache.hang_timeout_ms, 2500);
  for (const bad of ['999', '600001', '1.5', '"3s"']) {
    assert.throws(() => parseConfig(`[fscache]\nhang_timeout_ms = ${bad}\n`), (e: Error) => e instanceof ConfigError && /hang_timeout_ms/.test(e.message));
  }
  // several heartbeats per bound, so one late heartbeat is never a hang
  for (const ms of [1000, 4000, 600_000]) assert.ok(heartbeatMsFor(ms) * 4 <= ms && heartbeatMsFor(ms) <= 250);
});

// ---- the supervisor with real workers ----

const BOUND = 1000;
const withSupervisor = (fn: (sup: FscacheSupervisor, logs: Record<string, unknown>[]) => Promise<void>) => withSupervised(BOUND, fn);

/** Hangs the serving worker with signal; resolves with ms until another worker serves. */
async function hangAndWait(sup: FscacheSupervisor, signal: NodeJS.Signals): Promise<number> {
  const pid = sup.workerPid!;
  const t0 = Date.now();
  process.kill(pid, signal);
  return waitReplaced(sup, pid, t0, signal);
}

async function waitReplaced(sup: FscacheSupervisor, pid: number, t0: number, signal: string): Promise<number> {
  while (sup.workerPid === pid || sup.workerPid === undefined) {
    assert.ok(Date.now() - t0 < 10_000, `worker ${pid} (${signal}) was not replaced within 10 s`);
    await sleep(10);
  }
  await sup.whenReady();
  assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the hung worker is gone');
  return Date.now() - t0;
}

test('a stopped or spinning serving worker is killed within the bound and replaced, hang after hang, with no backoff', { timeout: 60_000 }, async () => {
  await withSupervisor(async (sup, logs) => {
    // Healthy: heartbeats keep it alive well past the bound, and the loaded standby (silent in recvmsg) is not judged.
    await sleep(3 * BOUND);
    assert.equal(sup.hangsHealed, 0);
    assert.equal(sup.activations, 1);
    assert.ok(sup.health().silentMs! < BOUND / 2, `silent ${sup.health().silentMs} ms`);
    assert.equal(sup.health().standby, 'loaded', 'a loaded standby waits');
    assert.equal(typeof sup.health().handled, 'number', 'the serving worker reports what it handled');
    // Started with the malloc settings of supervisor/malloc-tunables.ts. glibc splits the variable in place as
    // it reads it (a NUL for each ':'), so /proc shows each setting as an entry of its own.
    const env = fs.readFileSync(`/proc/${sup.workerPid}/environ`, 'utf8').split('\0');
    const [first, ...rest] = workerTunables(process.env.GLIBC_TUNABLES).split(':');
    for (const t of [`GLIBC_TUNABLES=${first}`, ...rest]) assert.ok(env.includes(t), `${t} in ${env.join(' ')}`);

    const signals: NodeJS.Signals[] = ['SIGSTOP', 'SIGSTOP', 'SIGSTOP', 'SIGSTOP', 'SIGUSR2', 'SIGUSR2'];
    for (const [i, sig] of signals.entries()) {
      const took = await hangAndWait(sup, sig);
      assert.notEqual(sup.health().standby, 'loaded', 'the standby took over; the next one is still starting');
      // Not before the bound (less the heartbeat that may have been due), and the handover adds little.
      assert.ok(took >= BOUND - heartbeatMsFor(BOUND), `${sig}: replaced after ${took} ms, before the bound; ${JSON.stringify(logs.slice(-3))}`);
      assert.ok(took <= BOUND + 1500, `${sig}: replaced after ${took} ms`);
      assert.equal(sup.hangsHealed, i + 1);
      assert.equal(sup.activations, i + 2);
    }
    const hangs = logs.filter((l) => l.msg === 'fscache worker hung; killing it and failing over');
    assert.equal(hangs.length, signals.length);
    assert.ok(hangs.every((l) => l.level === 40 && /^no heartbeat (for )?\d+ ms/.test(String(l.reason))), JSON.stringify(hangs));
    assert.ok(!logs.some((l) => /backing off/.test(String(l.msg))), 'a healed hang is not a failed start');
    // a hung worker is not asked: status fails fast while it is silent
    const pid = sup.workerPid!;
    const t0 = Date.now();
    process.kill(pid, 'SIGSTOP');
    await sleep(BOUND / 2 + 300);
    const t = Date.now();
    await assert.rejects(sup.status(), /no heartbeat for \d+ ms/);
    assert.ok(Date.now() - t < 100);
    await waitReplaced(sup, pid, t0, 'SIGSTOP');
    assert.equal(sup.hangsHealed, signals.length + 1);
  });
});

test('lazysnapd blocked itself is not a hung worker: heartbeats it has not read are not silence', { timeout: 30_000 }, async () => {
  await withSupervisor(async (sup) => {
    const pid = sup.workerPid;
    // Two blocks longer than the bound, in the loop's check phase: the second runs after the poll phase has read the
    // heartbeats sent so far and before the watchdog's check, so the worker looks silent for 2 s unless lazysnapd
    // notices its own stall.
    let blocks = 0;
    setImmediate(function block() {
      const until = Date.now() + 2 * BOUND;
      while (Date.now() < until) {
        // lazysnapd's loop is busy
      }
      if (++blocks < 2) setImmediate(block);
    });
    await sleep(5 * BOUND + 500);
    assert.equal(blocks, 2);
    assert.equal(sup.hangsHealed, 0);
    assert.equal(sup.workerPid, pid);
    assert.ok(sup.health().worstOwnStallMs >= 2 * BOUND, `own stall ${sup.health().worstOwnStallMs} ms`);
    assert.ok(sup.health().worstSilenceMs < BOUND / 2, `the worker's own gaps stayed short: ${sup.health().worstSilenceMs} ms`);
  });
});

test('settings carry the heartbeat period', () => {
  const s: WorkerSettings = {
    backend: 'fscache', blobDir: '', journalDir: '', dbPath: '/x.db', takeoverPath: '', logLevel: 'info', prefetch: true, learn: { dir: '', replay: false }, blobMetaDir: '', readDeadlineMs: 30_000, heartbeatMs: 250, metricsMs: 1000,
    registry: NO_REGISTRY,
  };
  assert.deepEqual(decodeSettings(encodeSettings(s)), s);
  assert.throws(() => decodeSettings(encodeSettings({ ...s, heartbeatMs: 0 })), /heartbeatMs/);
  assert.throws(() => decodeSettings(encodeSettings({ ...s, registry: { ...s.registry, badChunkCooldownMs: 0 } })), /badChunkCooldownMs/);
});
