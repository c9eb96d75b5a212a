// Is the serving worker alive and making progress? A stopped, spinning or
// blocked worker neither crashes nor answers: readers would wait on it
// forever. Judged from what lazysnapd sees of it (pure, so unit-tested).
import type { Heartbeat } from '../worker/control';

/** What lazysnapd knows of its active worker. Times are lazysnapd's Date.now(). */
export interface WorkerLiveness {
  /** when it was handed the device (became responsible for readers) */
  activatedAt: number;
  /** when its code had loaded; undefined: still starting */
  loadedAt?: number;
  lastHeartbeatAt?: number;
  heartbeat?: Heartbeat;
}

export interface LivenessBounds {
  /** silence (no heartbeat) longer than this is a hang */
  hangTimeoutMs: number;
  /** a worker whose code has not loaded this long after activation is hung too (Node starts in seconds) */
  startTimeoutMs: number;
  /** every READ is answered within this (the worker's own deadline): one older than it plus hangTimeoutMs is stuck */
  readDeadlineMs: number;
}

export type Verdict = { hung: false } | { hung: true; reason: string };

export function judgeWorker(w: WorkerLiveness, now: number, b: LivenessBounds): Verdict {
  if (w.loadedAt === undefined) {
    const starting = now - w.activatedAt;
    return starting > b.startTimeoutMs ? { hung: true, reason: `not loaded ${starting} ms after activation` } : { hung: false };
  }
  // A standby's last heartbeat (it sends none) or one from before its activation does not count: silence is measured from
  // the later of activation, load and the last heartbeat.
  const lastSign = Math.max(w.activatedAt, w.loadedAt, w.lastHeartbeatAt ?? 0);
  const silent = now - lastSign;
  if (silent > b.hangTimeoutMs) {
    return { hung: true, reason: w.lastHeartbeatAt === undefined ? `no heartbeat ${silent} ms after activation` : `no heartbeat for ${silent} ms` };
  }
  const hb = w.heartbeat;
  if (!hb || w.lastHeartbeatAt === undefined || w.lastHeartbeatAt < w.activatedAt) return { hung: false };
  if (!hb.reading) return { hung: true, reason: 'not reading its device (/dev/cachefiles or the fanotify group)' };
  // The loop runs but a READ is stuck where its deadline does not reach (the deadline fires on the same loop).
  const oldest = hb.inflight > 0 && hb.oldestReadMs > 0 ? hb.oldestReadMs + (now - w.lastHeartbeatAt) : 0;
  if (oldest > b.readDeadlineMs + b.hangTimeoutMs) {
    return { hung: true, reason: `oldest READ ${oldest} ms old (deadline ${b.readDeadlineMs} ms)` };
  }
  return { hung: false };
}
