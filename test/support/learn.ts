// What the learned-prefetch tests share, on either backend: the start they
// record, how a trace is compared, and how a start's reads were served.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { scrape, total } from './metrics';
import { run } from './proc';
import type { Trace } from '../../snapshotter/storage/traces';
import type { CriClient } from './cri';

const CLI = join(__dirname, '../../cmd/lazysnap.js');

/** imports a few modules more than a bare start (python3-minimal has these), so the start reads more chunks */
export const LEARN_START = ['python3', '-c', 'import argparse, datetime, logging, pathlib, random, subprocess, ipaddress, csv; print("ready")'];

/** A trace's chunks, as blob:offset, in recorded order. */
export const chunkKeys = (t: Trace) => t.entries.map((e) => `${e.blob}:${e.uOffset}`);

/** The recorded starts of an image, from `lazysnap trace --json` ([] if none). */
export async function tracesOf(address: string, ref: string): Promise<Trace[]> {
  const r = await run(process.execPath, [CLI, 'trace', ref, '--json', '--address', address], { timeoutMs: 30_000 });
  return r.code === 0 ? (JSON.parse(r.stdout) as Trace[]) : [];
}

export interface Served {
  /** chunks the start's reads needed; of those, present already, and being fetched (by a replay) */
  wanted: number;
  present: number;
  joined: number;
  /** chunks replay delivered */
  replayed: number;
  ms: number;
}

/** How one start's reads were served, from lazysnapd's metrics before and after it. */
export async function servedDuring(metricsSock: string, fn: () => Promise<number>): Promise<Served> {
  // Before the baseline too: a worker that took over less than a report ago has not reported yet, and its first
  // report would bring everything it served before (a test's kills just before this) into the difference.
  await new Promise((r) => setTimeout(r, 2500));
  const m0 = await scrape(metricsSock);
  const ms = await fn();
  await new Promise((r) => setTimeout(r, 2500)); // workers report every second
  const m1 = await scrape(metricsSock);
  const d = (name: string) => total(m1, name) - total(m0, name);
  return { wanted: d('lazysnap_cache_requests_total'), present: d('lazysnap_cache_hits_total'), joined: d('lazysnap_cache_joined_total'), replayed: d('lazysnap_replay_chunks_total'), ms };
}

/** Of the recorded start's chunks, the share the reads did not have to fetch themselves. */
export const coverage = (s: Served, chunks: number) => 1 - (s.wanted - s.present - s.joined) / chunks;

/** One line saying how a start was served against its trace, for the test's diagnostics. */
export const servedLine = (s: Served, chunks: number) =>
  `replayed ${s.replayed} chunks for a ${chunks}-chunk trace; reads needed ${s.wanted} chunks: ${s.present} present, ${s.joined} in flight, ` +
  `${s.wanted - s.present - s.joined} fetched by the read itself; coverage ${(100 * coverage(s, chunks)).toFixed(1)}%; start ${s.ms} ms`;

/** A recorded python start: enough chunks, none twice, the interpreter and argparse among its files. */
export function assertPythonStart(trace: Trace): void {
  const keys = chunkKeys(trace);
  assert.ok(keys.length >= 20, `a python start reads more than a few chunks: ${keys.length}`);
  assert.equal(new Set(keys).size, keys.length, 'no chunk twice');
  const paths = trace.entries.map((e) => e.path);
  assert.ok(paths.some((p) => /\/python3(\.\d+)?$/.test(p)), `the interpreter is in it: ${[...new Set(paths)].slice(0, 10)}`);
  assert.ok(paths.some((p) => /\/argparse(\.cpython-\d+)?\.pyc?$/.test(p)), `and argparse: ${[...new Set(paths)].filter((p) => p.includes('argparse'))}`);
}

/** Two recordings of the same start: the same set of chunks, none twice. */
export function assertSameChunks(got: Trace, want: Trace): void {
  const keys = chunkKeys(got);
  assert.equal(new Set(keys).size, keys.length, 'no chunk twice');
  const w = new Set(chunkKeys(want));
  const extra = keys.filter((k) => !w.has(k));
  const missing = chunkKeys(want).filter((k) => !keys.includes(k));
  assert.deepEqual({ missing, extra }, { missing: [], extra: [] }, 'the same set of chunks');
}

/**
 * From lazysnapd's log: orphans whose blob a successor learned only from the
 * dead worker's fd keeper (it died before writing the blob down), and orphans
 * it could not place at all (each a read missing from the trace).
 */
export function orphanNaming(log: string): { fromKeeper: number; unplaced: string[] } {
  const lines = log.split('\n');
  return {
    fromKeeper: lines.filter((l) => l.includes("an orphaned event's blob, from the dead worker's fd keeper")).length,
    unplaced: lines.filter((l) => l.includes('an orphaned event names no blob')),
  };
}

/** The worker of lazysnapd at `root` that holds `device` (/dev/cachefiles, or anon_inode:[fanotify]): the standby gets it only at a handover. */
export function servingWorker(root: string, device: string): number {
  for (const pid of workerPids(root)) {
    try {
      if (fs.readdirSync(`/proc/${pid}/fd`).some((fd) => fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === device)) return pid;
    } catch {
      // gone
    }
  }
  return 0;
}

/** lazysnapd's workers (serving and standby), from its pid file. */
export function workerPids(root: string): number[] {
  try {
    return JSON.parse(fs.readFileSync(join(root, 'fscache', 'workers.json'), 'utf8'));
  } catch {
    return [];
  }
}

/** The trace a start left, once `remove` (the image's removal, which stores it) is done: waits up to 30 s for it. */
export async function traceAfter(address: string, ref: string, remove: () => Promise<void>, logs: () => Promise<string>): Promise<Trace> {
  await remove();
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [t] = await tracesOf(address, ref);
    if (t) return t;
    if (Date.now() > deadline) assert.fail(`no trace of ${ref} stored${await logs()}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** The learned start of the image through CRI, pulled first: stdout must say ready. Returns its ms, once the container exited. */
export async function runLearnStart(cri: CriClient, ref: string, o: { name: string; logRoot: string; logs: () => Promise<string>; timeoutMs?: number }): Promise<number> {
  await cri.pullImage(ref).catch(async (e) => assert.fail(`${(e as Error).message}${await o.logs()}`));
  const t0 = Date.now();
  const r = await cri.runToCompletion(ref, LEARN_START, { logRoot: o.logRoot, name: o.name, timeoutMs: o.timeoutMs ?? 120_000 })
    .catch(async (e) => assert.fail(`${(e as Error).message}${await o.logs()}`));
  assert.equal(r.exitCode, 0, `${r.logs}${await o.logs()}`);
  assert.match(r.stdout, /^ready$/m, r.logs);
  return Date.now() - t0;
}
