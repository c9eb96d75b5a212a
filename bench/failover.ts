// The failover stall, as bench/fscache (in the guest) and bench/fanotify (on
// the host) measure it: cold reads in a child process, pass after pass on
// fresh mounts, while the serving worker is SIGKILLed; per kill, the longest
// read() in flight when it died or begun within 1 s after; and the control,
// the same measure over the second before each kill, where no failover is.
import { spawn } from 'node:child_process';
import { percentile } from './stats';

type Status = Record<string, any>;
/** [start, end] of one read() call, epoch ms */
export type Call = [number, number];

export interface FailoverRun {
  /** epoch ms of each kill */
  kills: number[];
  /** the standby lazysnapd reported at each kill ("loaded", "starting", …) */
  standbyAtKill: string[];
  /** from a kill to the next loaded standby */
  standbyReadyMs: number[];
  /** per kill, lazysnapd's own measure: from the worker's end to its successor's `ready` (sent after its `restore`) */
  handoverMs: (number | null)[];
  calls: Call[];
  seconds: number;
}

export interface FailoverOptions {
  kills: number;
  /** without a loaded standby, how long after a kill before the next one anyway */
  standbyWaitMs: number;
  /** lazysnapd's brief status, in-process: a CLI start costs seconds in the guest, longer than a pass */
  status(): Promise<{ worker: Status }>;
  /** a fresh, cold mount of the image for pass n; its directory */
  mount(pass: number): Promise<string>;
  umount(dir: string): Promise<void>;
}

/**
 * Kills the serving worker until opts.kills kills: 1.2 s after the last kill at the soonest, and once a loaded
 * standby waits (the successor lazysnapd keeps for the next failover), or standbyWaitMs after the last kill
 * without one. Each kill notes which: without a loaded standby the successor is a cold worker start, which no
 * handover can hide.
 */
export async function killDuringReads(opts: FailoverOptions): Promise<FailoverRun> {
  const run: FailoverRun = { kills: [], standbyAtKill: [], standbyReadyMs: [], handoverMs: [], calls: [], seconds: 0 };
  let activationsAtKill = 0;
  // the last kill's, from a status once its successor serves (a cold successor may not yet)
  const noteHandover = (w: Status) => {
    if (run.handoverMs.length < run.kills.length) run.handoverMs.push(w.activations > activationsAtKill ? w.lastFailoverStallMs : null);
  };
  const t0 = Date.now();
  for (let pass = 0; run.kills.length < opts.kills; pass++) {
    const mnt = await opts.mount(pass);
    const reader = readInChild(mnt);
    while (reader.running() && run.kills.length < opts.kills) {
      // Asked only once a kill's window (1 s) is over: even a brief status (lazysnapd alone, not the serving
      // worker) costs CPU, and on one CPU it would land in the stall it measures.
      await new Promise((res) => setTimeout(res, run.kills.length ? 1200 : 300));
      const last = run.kills.at(-1) ?? 0;
      let w = (await opts.status()).worker;
      noteHandover(w);
      while (reader.running() && w.standby !== 'loaded' && Date.now() - last < opts.standbyWaitMs) {
        await new Promise((res) => setTimeout(res, 250));
        w = (await opts.status()).worker;
      }
      if (!reader.running()) break;
      if (w.standby === 'loaded' && last) run.standbyReadyMs.push(Date.now() - last);
      const pid = w.pid;
      if (!Number.isInteger(pid) || pid <= 1) throw new Error(`status gave no worker pid to kill (${pid})`);
      run.standbyAtKill.push(String(w.standby ?? 'none'));
      activationsAtKill = w.activations;
      run.kills.push(performance.timeOrigin + performance.now());
      process.kill(pid, 'SIGKILL');
    }
    run.calls.push(...(await reader.calls));
    await opts.umount(mnt);
  }
  if (run.handoverMs.length < run.kills.length) noteHandover((await opts.status()).worker);
  run.seconds = (Date.now() - t0) / 1000;
  return run;
}

/** The longest read() in flight at k or begun within 1 s after it: how long it ran from k, and when it began. */
export function worstRead(k: number, calls: Call[]): { ms: number; beganAfterKillMs: number } {
  return calls.filter(([s, e]) => e >= k && s <= k + 1000)
    .map(([s, e]) => ({ ms: e - Math.max(s, k), beganAfterKillMs: Math.max(0, s - k) }))
    .reduce((a, b) => (b.ms > a.ms ? b : a), { ms: 0, beganAfterKillMs: 0 });
}

/**
 * The control: the same measure over the second before each kill (ending 100 ms before it), where the reader was
 * reading and no kill fell: what the reader meets without a failover (holes at the front of the windows being
 * filled ahead, the standby's start, the bench's status calls).
 */
export function controlStalls(kills: number[], calls: Call[]): number[] {
  return kills.map((k) => k - 1100)
    .filter((q) => calls.some(([s, e]) => s <= q + 50 && e >= q) && !kills.some((k) => k > q - 1200 && k <= q + 1000))
    .map((q) => worstRead(q, calls).ms);
}

export const spread = (xs: number[]): string =>
  (xs.length ? `p50=${percentile(xs, 50).toFixed(0)} ms p90=${percentile(xs, 90).toFixed(0)} ms p99=${percentile(xs, 99).toFixed(0)} ms max=${Math.max(...xs).toFixed(0)} ms` : 'none');

/** What a failover run prints: the stall per kill against the goal, where the worst fell, and the control. */
export function failoverReport(run: FailoverRun): string[] {
  const { kills, standbyAtKill, handoverMs } = run;
  const worstReads = kills.map((k) => worstRead(k, run.calls));
  const stalls = worstReads.map((r) => r.ms);
  const quiet = controlStalls(kills, run.calls);
  const over = (xs: number[]) => `over 150 ms: ${xs.filter((x) => x > 150).length}, over 300 ms: ${xs.filter((x) => x > 300).length}`;
  const loaded = stalls.filter((_, i) => standbyAtKill[i] === 'loaded');
  const cold = stalls.filter((_, i) => standbyAtKill[i] !== 'loaded');
  const order = kills.map((_, i) => i).sort((a, b) => stalls[b] - stalls[a]).slice(0, 5);
  return [
    `failover: kills=${kills.length} in ${run.seconds.toFixed(1)} s; stall per failover ${spread(stalls)}  (goal p99 < 150 ms, max < 300 ms)`,
    `failover with a loaded standby: kills=${loaded.length} ${spread(loaded)}; without (successor starting cold): kills=${cold.length} ${spread(cold)}`,
    `failover: worst five stalls ${order.map((i) => stalls[i].toFixed(0)).join(', ')} ms; ${over(stalls)}`,
    // where a stall falls (in the read the kill interrupted, or a later one), and how much of it lazysnapd counts
    // as the handover, the rest being the kernel's and the reads'
    'failover: the worst five, where they fell: ' + order.map((i) => `${stalls[i].toFixed(0)} ms (read began ` +
      `+${worstReads[i].beganAfterKillMs.toFixed(0)} ms after the kill; handover ${handoverMs[i] ?? '?'} ms)`).join('; '),
    `failover: lazysnapd's handover (end to the successor's ready) ${spread(handoverMs.filter((x): x is number => x !== null))}`,
    `the same measure over the second before each kill (no failover in it): n=${quiet.length} ${spread(quiet)}; ${over(quiet)}`,
    `a loaded standby waited again after a kill: ${spread(run.standbyReadyMs)}`,
  ];
}

/**
 * Reads every file under mnt in 1 MiB reads in a child process (a stalled read never blocks the killer): its calls
 * once it is done, and whether it still runs.
 */
export function readInChild(mnt: string): { calls: Promise<Call[]>; running(): boolean } {
  let running = true;
  const calls = new Promise<Call[]>((resolve, reject) => {
    const p = spawn(process.execPath, ['-e', `(${READER})(${JSON.stringify(mnt)})`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let json = '';
    p.stdout.on('data', (x) => (json += x));
    p.on('error', (e) => {
      running = false;
      reject(e);
    });
    // 'close', not 'exit': only then has all of its stdout been read
    p.on('close', (code) => {
      running = false;
      if (code === 0) resolve(JSON.parse(json) as Call[]);
      else reject(new Error(`reader of ${mnt} exited ${code}`));
    });
  });
  calls.catch(() => undefined); // seen where it is awaited, not as an unhandled rejection while the killer runs
  return { calls, running: () => running };
}

// The reader, as source for `node -e`: prints [start, end] of each read() (epoch ms).
const READER = `function (mnt) {
  const fs = require('fs'), path = require('path');
  const buf = Buffer.alloc(1 << 20); const calls = [];
  const now = () => performance.timeOrigin + performance.now();
  for (const name of fs.readdirSync(mnt).sort()) {
    const fd = fs.openSync(path.join(mnt, name), 'r');
    for (;;) { const s = now(); const n = fs.readSync(fd, buf, 0, buf.length, null); calls.push([s, now()]); if (n === 0) break; }
    fs.closeSync(fd);
  }
  process.stdout.write(JSON.stringify(calls));
}`;
