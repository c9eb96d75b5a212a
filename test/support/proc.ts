// Child-process helpers shared by the test harness: run a command to
// completion, spawn a long-running daemon with its output in a log file,
// and stop it (signal, then SIGKILL after a grace period).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { open } from 'node:fs/promises';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string | Buffer;
}

/** Runs cmd to completion. Resolves on any exit code; rejects on spawn errors and timeouts. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${describe(cmd, args)} did not finish within ${timeoutMs} ms; ` +
        `stdout: ${Buffer.concat(out).toString()}; stderr: ${Buffer.concat(err).toString()}`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${describe(cmd, args)}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code, signal });
    });
    child.stdin.on('error', () => { /* child may exit before reading its input */ });
    child.stdin.end(opts.input ?? '');
  });
}

/** Like run(), but rejects unless the command exits 0. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(failureMessage(describe(cmd, args), r));
  return r;
}

export function failureMessage(what: string, r: RunResult): string {
  return `${what} exited with ${r.code ?? r.signal}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

export function describe(cmd: string, args: string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

const SETPRIV = '/usr/bin/setpriv';

export interface Daemon {
  proc: ChildProcess;
  /** Settles once the process has exited (never rejects). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  logPath: string;
}

/**
 * Spawns a daemon whose stdout and stderr are appended to logPath (a file, so
 * nothing is lost if the test dies). It runs under `setpriv --pdeathsig KILL`
 * (util-linux; it execs, so proc.pid is the daemon's pid): the kernel kills it
 * if the test process dies without running its after() hooks (node --test
 * SIGKILLs file processes when the runner itself dies).
 */
export function spawnDaemon(cmd: string, args: string[], logPath: string, env?: NodeJS.ProcessEnv): Daemon {
  const fd = openSync(logPath, 'a');
  let proc: ChildProcess;
  try {
    const [c, a] = existsSync(SETPRIV) ? [SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...args]] : [cmd, args];
    proc = spawn(c, a, { env, stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd); // the child holds its own copy
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve({ code: proc.exitCode, signal: proc.signalCode });
    proc.on('exit', (code, signal) => resolve({ code, signal }));
    proc.on('error', () => resolve({ code: null, signal: null }));
  });
  live.add(proc);
  void exited.then(() => live.delete(proc));
  return { proc, exited, logPath };
}

// If the test process dies before its after() hooks (uncaught error, EPIPE,
// process.exit), take the daemons with it rather than leaking them.
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

export function isRunning(d: Daemon): boolean {
  return d.proc.exitCode === null && d.proc.signalCode === null && d.proc.pid !== undefined;
}

/** Sends signal, waits up to graceMs, then SIGKILLs. Resolves with how the process ended. */
export async function stopDaemon(d: Daemon, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000):
  Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }> {
  if (!isRunning(d)) return { ...(await d.exited), killed: false };
  d.proc.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), graceMs); });
  const first = await Promise.race([d.exited, timedOut]);
  clearTimeout(timer);
  if (first !== 'timeout') return { ...first, killed: false };
  d.proc.kill('SIGKILL');
  return { ...(await d.exited), killed: true };
}

/** Last maxBytes of a log file, for error messages ('' if unreadable). */
export async function tail(path: string, maxBytes = 4000): Promise<string> {
  try {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, maxBytes);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      return buf.toString();
    } finally {
      await fh.close();
    }
  } catch {
    return '';
  }
}
