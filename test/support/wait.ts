// Polling with a deadline, and the two readiness probes the harness needs
// (a unix socket that accepts connections, a free TCP port).
import { connect, createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface WaitOptions {
  /** Shown in the timeout error: "timed out after N ms waiting for <what>". */
  what: string;
  timeoutMs?: number;
  intervalMs?: number;
}

/**
 * Polls check() until it returns a value other than undefined/false.
 * An exception from check() aborts the wait (use it for "the daemon died").
 */
export async function waitFor<T>(check: () => Promise<T | undefined | false> | T | undefined | false,
  opts: WaitOptions): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  let interval = opts.intervalMs ?? 20;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what}`);
    await sleep(interval);
    interval = Math.min(interval * 2, 250); // fast first polls, no busy loop later
  }
}

/** True if something accepts a connection on the unix socket (or host:port) right now. */
export function canConnect(target: string | { host: string; port: number }, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = typeof target === 'string' ? connect({ path: target }) : connect(target);
    const done = (ok: boolean) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not read the port of a listening socket'));
        return;
      }
      srv.close(() => resolve(addr.port));
    });
  });
}
