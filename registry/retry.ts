// Retry policy: exponential backoff with jitter and Retry-After. Which
// failures are worth another attempt is each error's `retryable` (errors.ts).
import { AbortedError } from './errors';

export interface RetryPolicy {
  /** attempts per host (1 = no retry) */
  attempts: number;
  /** delay before the 2nd attempt; doubles each time */
  baseDelayMs: number;
  maxDelayMs: number;
  /** a Retry-After longer than this is capped (a READ cannot wait minutes) */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 100, maxDelayMs: 3_000, maxRetryAfterMs: 10_000 };

/**
 * Delay before attempt `attempt + 1` (attempt ≥ 1 just failed): half of
 * base·2^(attempt−1) fixed, half random ("equal jitter"), capped at maxDelayMs.
 * Never below half the nominal delay, so retries really back off.
 */
export function backoffDelay(attempt: number, policy: RetryPolicy, rand: () => number = Math.random): number {
  const nominal = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(nominal / 2 + rand() * (nominal / 2));
}

/** Retry-After: delta-seconds or an HTTP-date. Returns ms ≥ 0, or undefined if absent/unparseable. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const s = v.trim();
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  const t = Date.parse(s);
  if (Number.isNaN(t)) return undefined;
  return Math.max(0, t - now);
}

/** The delay before the next attempt, honouring a server's Retry-After (capped). */
export function retryDelay(attempt: number, policy: RetryPolicy, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(policy.maxRetryAfterMs, Math.max(retryAfterMs, 0));
  return backoffDelay(attempt, policy);
}

/** The error code of a network error (undici wraps the socket error in `cause`). */
export function errorCode(e: unknown): string | undefined {
  let cur: unknown = e;
  for (let i = 0; i < 4 && cur && typeof cur === 'object'; i++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR') {
      // undici's UND_ERR_SOCKET wraps a more precise socket error
      const inner = (cur as { cause?: { code?: unknown } }).cause?.code;
      if (code === 'UND_ERR_SOCKET' && typeof inner === 'string') return inner;
      return code;
    }
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Sleeps ms, or rejects with AbortedError when signal fires. */
export function sleep(ms: number, signal?: AbortSignal, what = 'retry wait'): Promise<void> {
  if (signal?.aborted) return Promise.reject(new AbortedError(what));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new AbortedError(what));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
