// The control channel between lazysnapd and its fscache worker: a unix
// stream socket. First a one-byte message carries the device fd (SCM_RIGHTS:
// a handover, or a standby's arming, worker/handover.ts); then
// newline-delimited JSON in both directions.
import net from 'node:net';
import readline from 'node:readline';
import type { BlobContent, BlobPresence, ChunkHealth } from '../content/content';
import type { DaemonStats } from './daemon';
import type { FanotifyStats } from './fanotify/daemon';
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { BlobFile } from './fanotify/daemon';

/** lazysnapd → worker, with the device fd: serve it now. */
export const HANDOVER_BYTE = Buffer.from('F');
/**
 * lazysnapd → loaded standby, with the device fd and a pidfd of the serving
 * worker: serve the device once that worker has exited, unless lazysnapd is
 * gone by then. No handover follows.
 */
export const ARM_BYTE = Buffer.from('A');

export type WorkerEvent = { event: 'loaded'; pid: number } | { event: 'ready'; pid: number; exitSeenAt?: number } | Heartbeat | MetricsReport;

/** The serving worker's metric values (cumulative since it started), every WorkerSettings.metricsMs. */
export interface MetricsReport {
  event: 'metrics';
  pid: number;
  metrics: MetricObjectWithValues<MetricValue<string>>[];
}

/**
 * Sent by the serving worker every heartbeatMs from a timer on its event
 * loop: a stopped, spinning or blocked loop sends none. It also carries the
 * facts that show progress, for a loop that runs but serves nothing.
 */
export interface Heartbeat {
  event: 'heartbeat';
  pid: number;
  /** the worker's Date.now() when sent: gaps as the worker made them, without lazysnapd's own delays */
  sentAt: number;
  /** messages from the kernel handled to the end so far */
  handled: number;
  /** messages being handled */
  inflight: number;
  /** age of the oldest READ being handled, ms (0: none) */
  oldestReadMs: number;
  /** the device is polled: a worker that stopped reading it leaves the kernel's queue unread */
  reading: boolean;
  /** the worst lateness of this timer so far, ms: the worker's longest event-loop stall */
  worstLoopStallMs: number;
}
export type { BlobFile };

export type ControlRequest =
  | { id: number; op: 'status' }
  | { id: number; op: 'retire' }
  | { id: number; op: 'hold-prefetch'; ms: number }
  /** what prefetch may still bring into the cache before [cache] max_size */
  | { id: number; op: 'prefetch-budget'; bytes: number }
  /** fanotify: blob files just mounted, to be opened (size, ToC, chunk table) before the first read asks */
  | { id: number; op: 'open-blobs'; blobs: BlobFile[] }
  /** learned prefetch: record READs into this journal (trace-journal.ts); answered with true once recording */
  | { id: number; op: 'learn'; file: string };
export type ControlReply = { id: number; result?: unknown; error?: string };

/** One object the kernel has open in the serving worker. */
export interface WorkerObjectStatus {
  objectId: number;
  volume: string;
  cookie: string;
  size: number;
  reads: number;
  bytesWritten: number;
  /** remote blobs only */
  present?: BlobPresence;
  /** remote blobs only: chunks that failed verification; `badChunks` are those whose bytes give EIO for now */
  chunks?: ChunkHealth;
}

/** What a blob's content says of itself in a status: how much is local, and its bad chunks (remote blobs only). */
export function contentStatus(c: BlobContent | undefined): Pick<WorkerObjectStatus, 'present' | 'chunks'> {
  return { ...(c?.progress ? { present: c.progress() } : {}), ...(c?.chunkHealth ? { chunks: c.chunkHealth() } : {}) };
}

/** The reply to `status`: built by the worker, read by lazysnapd's admin service. */
export interface WorkerStatus {
  pid: number;
  backend: 'fscache' | 'fanotify';
  stats: DaemonStats | FanotifyStats;
  /** messages being handled */
  pending: number;
  objects: WorkerObjectStatus[];
}

/** Reads JSON lines from a socket; a malformed line is reported and skipped. */
export function onJsonLines(sock: net.Socket, fn: (msg: unknown) => void, onBad: (line: string) => void): void {
  const rl = readline.createInterface({ input: sock, crlfDelay: Infinity });
  // A peer that dies resets the socket; its 'close' handling is elsewhere, and an unhandled 'error' would kill us.
  rl.on('error', () => {});
  rl.on('line', (line) => {
    if (!line.trim()) return;
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      return onBad(line);
    }
    fn(msg);
  });
}

export function sendJson(sock: net.Socket, msg: unknown): void {
  if (!sock.destroyed) sock.write(JSON.stringify(msg) + '\n');
}
