// Getting the /dev/cachefiles fd back after lazysnapd itself restarted
// without systemd's fd store: the active worker (which outlives lazysnapd)
// listens on <root>/fscache/takeover.sock and hands its fd over SCM_RIGHTS.
// Then the previous generation of workers is retired by pid.
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { recvFds, sendFds, unixConnect } from '../native';
import { HANDOVER_BYTE } from './control';
import { isZombie } from './fanotify/keeper';

/** The raw fd under a connected net.Socket (libuv keeps it in its handle). */
function rawFd(sock: net.Socket): number {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no fd');
  return fd;
}

/** Worker side: serve the device fd to whoever connects (only root can: the socket is 0600). */
export function serveTakeover(path: string, devFd: number, log: Logger): net.Server {
  fs.rmSync(path, { force: true });
  const srv = net.createServer((conn) => {
    try {
      sendFds(rawFd(conn), HANDOVER_BYTE, [devFd]);
      log.info('handed the /dev/cachefiles fd to a new lazysnapd');
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'takeover handover failed');
    }
    conn.end();
  });
  const old = process.umask(0o177);
  srv.listen(path, () => process.umask(old));
  srv.on('error', (err) => log.warn({ err: err.message, path }, 'cannot serve takeover socket'));
  srv.unref();
  return srv;
}

/** lazysnapd side: the fd from a still-running worker, or null if none answers. */
export async function takeFdFrom(path: string, timeoutMs = 5000): Promise<number | null> {
  if (!fs.existsSync(path)) return null;
  let sock: number;
  try {
    sock = unixConnect(path);
  } catch {
    return null; // stale socket: nobody listens
  }
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      try {
        const r = recvFds(sock, 16, 4, { dontWait: true });
        if (r.fds.length === 1 && r.data.subarray(0, 1).equals(HANDOVER_BYTE)) return r.fds[0];
        for (const f of r.fds) fs.closeSync(f);
        return null;
      } catch (err) {
        if ((err as { code?: string }).code !== 'EAGAIN') return null;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    return null;
  } finally {
    fs.closeSync(sock);
  }
}

/** Pids of the workers a previous lazysnapd started, from its pid file, that are still running. */
export function previousWorkers(pidFile: string): number[] {
  let pids: number[];
  try {
    pids = JSON.parse(fs.readFileSync(pidFile, 'utf8'));
  } catch {
    return [];
  }
  return pids.filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('lazysnap-fscache-worker');
    } catch {
      return false;
    }
  });
}

/** SIGKILLs them and waits until they are gone: their objects are re-OPENed after the next `restore`. */
export async function retireWorkers(pids: number[], log: Logger): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      continue;
    }
    for (let i = 0; i < 300 && fs.existsSync(`/proc/${pid}`) && !isZombie(pid); i++) await new Promise((r) => setTimeout(r, 10));
    log.info({ pid }, 'retired a worker of the previous lazysnapd');
  }
}
