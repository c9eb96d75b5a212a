// Runs the compiled snapshotter daemon (dist/cmd/lazysnapd.js) as a child
// process with its log in a file.
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { isRunning, spawnDaemon, stopDaemon, tail, type Daemon } from './proc';
import { findKeepers, killQuietly } from '../../worker/fanotify/keeper';
import { canConnect, waitFor } from './wait';

/** This file compiles to dist/test/support/lazysnapd.js; the daemon to dist/cmd/lazysnapd.js. */
export const LAZYSNAPD_JS = resolve(__dirname, '../../cmd/lazysnapd.js');

export interface LazysnapdOptions {
  /** The daemon's --root; its parent must exist (logs and config go beside it). */
  root: string;
  address: string;
  /** TOML text, written to <root>.config.toml and passed as --config. */
  config?: string;
  extraArgs?: string[];
  /** Default: <root>.lazysnapd.log (beside root, so it survives the daemon wiping root). */
  logPath?: string;
  env?: NodeJS.ProcessEnv;
  startTimeoutMs?: number;
}

export interface Lazysnapd {
  proc: ChildProcess;
  address: string;
  root: string;
  logPath: string;
  daemon: Daemon;
  /** Sends signal (default SIGTERM), SIGKILLs after 10 s; resolves once it is gone (how: daemon.exited). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** SIGKILL, for crash-recovery tests; resolves once the process is gone. */
  kill9(): Promise<void>;
}

export async function startLazysnapd(opts: LazysnapdOptions): Promise<Lazysnapd> {
  if (!existsSync(LAZYSNAPD_JS)) {
    throw new Error(`${LAZYSNAPD_JS} does not exist; build first: cd ${resolve(__dirname, '../../..')} && npm run build`);
  }
  // Nothing is created here: the daemon's own handling of a missing root is under test elsewhere.
  const logPath = opts.logPath ?? `${opts.root}.lazysnapd.log`;
  const args = [LAZYSNAPD_JS, '--root', opts.root, '--address', opts.address];
  if (opts.config !== undefined) {
    const configPath = `${opts.root}.config.toml`;
    await writeFile(configPath, opts.config);
    args.push('--config', configPath);
  }
  args.push(...(opts.extraArgs ?? []));

  const daemon = spawnDaemon(process.execPath, args, logPath, opts.env ?? process.env);
  const handle: Lazysnapd = {
    proc: daemon.proc,
    address: opts.address,
    root: opts.root,
    logPath,
    daemon,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => { await stopDaemon(daemon, signal, 10_000); },
    kill9: async () => { await stopDaemon(daemon, 'SIGKILL'); },
  };
  try {
    // A stale socket file from an earlier run may exist: wait for a connection, not the file.
    await waitFor(async () => {
      if (!isRunning(daemon)) {
        const how = await daemon.exited;
        throw new Error(`lazysnapd exited during startup (code ${how.code}, signal ${how.signal})`);
      }
      return existsSync(opts.address) && canConnect(opts.address);
    }, { what: `lazysnapd to accept connections on ${opts.address}`, timeoutMs: opts.startTimeoutMs ?? 20_000 });
  } catch (e) {
    await stopDaemon(daemon, 'SIGKILL');
    throw new Error(`${(e as Error).message}\n--- lazysnapd log tail (${logPath}) ---\n${await tail(logPath)}`);
  }
  return handle;
}

/**
 * SIGKILLs the workers a lazysnapd with this root started (its
 * fscache/workers.json), and the fd keepers of its fanotify workers: a
 * lazysnapd stopped while an image is still mounted leaves its serving worker
 * running, by design, and a killed worker's keeper waits for a successor
 * that a test never starts; a test must not leak them.
 */
export function killWorkers(root: string): void {
  let pids: unknown;
  try {
    pids = JSON.parse(readFileSync(resolve(root, 'fscache', 'workers.json'), 'utf8'));
  } catch {
    pids = [];
  }
  for (const pid of Array.isArray(pids) ? pids : []) {
    if (!Number.isSafeInteger(pid) || pid <= 1) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('lazysnap-fscache-worker')) process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (const keeper of findKeepers(resolve(root, 'fscache', 'journals')).values()) killQuietly(keeper);
}
