// One lazysnapd per root, and one per cachefiles device: an flock on a lock
// file, taken before anything else is touched. The kernel drops it when the
// holder dies (kill -9 too), so a leftover file never blocks a start; the
// file says who holds it, for the one-line refusal.
import fs from 'node:fs';
import path from 'node:path';
import { tryLockExclusive } from '../native';

export class InstanceLockedError extends Error {
  constructor(
    message: string,
    /** the holder's pid, when it has written it */
    readonly holderPid: number | null,
  ) {
    super(message);
  }
}

export interface HeldLock {
  readonly file: string;
  /** Lets go (lazysnapd's exit does the same). */
  release(): void;
}

/** The holder's line in a lock file: "<pid> <what it is>". */
export function parseHolder(text: string): { pid: number; owner: string } | null {
  const m = /^(\d{1,10}) (.*)$/m.exec(text);
  return m ? { pid: Number(m[1]), owner: m[2] } : null;
}

/**
 * Takes the lock on `file` for `owner` (e.g. "root /var/lib/lazysnap"), or
 * throws InstanceLockedError naming the pid that holds it. `what` names the
 * guarded thing in that message.
 */
export function takeLock(file: string, what: string, owner: string): HeldLock {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // O_CLOEXEC (libuv sets it): workers must not inherit the lock and keep it past lazysnapd
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  let taken = false;
  try {
    taken = tryLockExclusive(fd);
    if (!taken) {
      const holder = parseHolder(fs.readFileSync(fd, 'utf8'));
      const who = holder ? `lazysnapd pid ${holder.pid} (${holder.owner})` : 'another process (it has not written its pid yet)';
      throw new InstanceLockedError(`${what} is in use by ${who}; that one keeps serving (lock ${file})`, holder?.pid ?? null);
    }
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, `${process.pid} ${owner}\n`, 0);
  } finally {
    if (!taken) fs.closeSync(fd);
  }
  let held = true;
  return {
    file,
    release() {
      if (!held) return;
      held = false;
      fs.closeSync(fd);
    },
  };
}

/**
 * The pid holding the flock on `file` now, from /proc/locks (without taking
 * the lock to find out, which could refuse a lazysnapd starting that moment);
 * null when nobody holds it.
 */
export function lockHolder(file: string): number | null {
  const st = fs.statSync(file, { throwIfNoEntry: false, bigint: true });
  if (!st) return null;
  for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
    const m = /^\d+:\s+FLOCK\s+\S+\s+\S+\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(line);
    if (m && BigInt(m[2]) === st.ino) return Number(m[1]);
  }
  return null;
}
