// lazysnapd's worker supervisor with real worker processes on the host: a
// socketpair stands in for /dev/cachefiles (a worker writes `restore` into it
// and polls it; nothing else arrives), and lazysnapd's log is collected.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { FscacheSupervisor, heartbeatMsFor } from '../../supervisor/supervisor';
import type { WorkerSettings } from '../../worker/settings';
import { socketpair } from '../../native';

export interface Supervised {
  sup: FscacheSupervisor;
  logs: Record<string, unknown>[];
  /** the device's other end: what workers write to the device arrives here */
  peer: number;
}

/** A worker's registry settings where nothing is fetched from a registry (hosts.toml, credentials: none). */
export const NO_REGISTRY: WorkerSettings['registry'] = {
  hostsDir: '', dockerConfig: '', plainHttp: false, criCredentialsDir: '', credentialProviderConfig: '', credentialProviderBinDir: '', badChunkCooldownMs: 60_000,
};

/** What a test's worker is started with: the fscache backend, a metadata database at dbPath, nothing remote. */
export function testWorkerSettings(dbPath: string, heartbeatMs: number): WorkerSettings {
  return {
    backend: 'fscache', blobDir: '', journalDir: '', dbPath, takeoverPath: '', logLevel: 'warn', prefetch: false, learn: { dir: '', replay: false }, blobMetaDir: '', readDeadlineMs: 30_000, heartbeatMs, metricsMs: 0,
    registry: NO_REGISTRY,
  };
}

/** Runs fn with a started supervisor (hang bound `hangTimeoutMs`) whose first worker serves; stops it after. */
export async function withSupervised(hangTimeoutMs: number, fn: (sup: FscacheSupervisor, logs: Record<string, unknown>[], s: Supervised) => Promise<void>) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-hang-'));
  const dbPath = path.join(dir, 'metadata.db');
  new Database(dbPath).close();
  const [dev, peer] = socketpair('stream');
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'warn' }, { write: (s: string) => void logs.push(JSON.parse(s)) });
  const worker = testWorkerSettings(dbPath, heartbeatMsFor(hangTimeoutMs));
  const prev = process.env.LAZYSNAP_TEST_HOOKS;
  process.env.LAZYSNAP_TEST_HOOKS = '1'; // SIGUSR2 spins the worker's loop
  const sup = new FscacheSupervisor({
    devFd: dev, log, worker, hangTimeoutMs,
    workerJs: path.resolve(__dirname, '../../cmd/lazysnap-fscache-worker.js'),
  });
  try {
    sup.start();
    await sup.whenReady();
    await fn(sup, logs, { sup, logs, peer });
  } finally {
    await sup.stop();
    process.env.LAZYSNAP_TEST_HOOKS = prev;
    if (prev === undefined) delete process.env.LAZYSNAP_TEST_HOOKS;
    fs.closeSync(dev);
    fs.closeSync(peer);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
