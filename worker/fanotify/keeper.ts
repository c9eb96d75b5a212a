// A worker's fd table outlives it in a keeper (native keepFdTable), so that
// an event the worker read but died before writing down is still named: its
// fd number, in the journal, is still open in the keeper's table, and
// /proc/<keeper>/fd/<fd> says which blob file it was. A successor finds
// keepers by their comm and by the journal file open in their table (the
// worker keeps its journal's fd open for this), reads what it needs, and
// kills those of dead workers.
import fs from 'node:fs';
import path from 'node:path';
import { FD_KEEPER_COMM, keepFdTable, pidfdGetfd } from '../../native';

/**
 * Starts this worker's keeper (its journal must be open). It is ended when
 * this process exits, or is sent SIGTERM, with no event unanswered (`idle`);
 * otherwise, or on a SIGKILL, a successor ends it once it has answered the
 * orphans.
 */
export function startKeeper(idle: () => boolean): number {
  const pid = keepFdTable();
  const end = () => idle() && killQuietly(pid);
  process.once('exit', end);
  // Node runs no exit handler for a signal's default action: end it here, then die of the signal as before
  const onTerm = () => {
    end();
    process.removeListener('SIGTERM', onTerm);
    process.kill(process.pid, 'SIGTERM');
  };
  process.on('SIGTERM', onTerm);
  return pid;
}

/** The worker whose journal a keeper's fd link names ("…/journal.<pid>", perhaps " (deleted)"), if under `journalDir`. */
export function journalWorkerOf(link: string, journalDir: string): number | undefined {
  if (path.dirname(link) !== path.resolve(journalDir)) return undefined;
  const m = /^journal\.(\d+)(?: \(deleted\))?$/.exec(path.basename(link));
  return m ? Number(m[1]) : undefined;
}

/** Keepers of the journals in `journalDir`: worker pid → keeper pid. */
export function findKeepers(journalDir: string): Map<number, number> {
  const found = new Map<number, number>();
  if (!fs.existsSync(journalDir)) return found;
  const dir = fs.realpathSync(journalDir); // the links in /proc are canonical
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (fs.readFileSync(`/proc/${name}/comm`, 'utf8').trim() !== FD_KEEPER_COMM) continue;
      for (const fd of fs.readdirSync(`/proc/${name}/fd`)) {
        const worker = journalWorkerOf(fs.readlinkSync(`/proc/${name}/fd/${fd}`), dir);
        if (worker !== undefined) found.set(worker, Number(name));
      }
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** The file fd `fd` of a keeper's table names, or undefined if it is not open there. */
export function keptFile(keeper: number, fd: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${keeper}/fd/${fd}`);
  } catch {
    return undefined;
  }
}

export function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** Whether a process runs: a zombie (dead, not yet reaped) does not. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !isZombie(pid);
}

/**
 * For a lazysnapd whose worker died too (no fd store): the fanotify group
 * still open in a dead worker's keeper, copied into this process. Its marks
 * and pending events are intact, and the next worker answers those from the
 * journals. Keepers that hold none are ended, so that no old group is left
 * holding readers while a new one is made.
 */
export function groupFromKeepers(journalDir: string, isGroup: (link: string) => boolean): { fd: number; keeper: number } | undefined {
  const dead = [...findKeepers(journalDir)].filter(([worker]) => !pidAlive(worker));
  for (const [, keeper] of dead) {
    try {
      for (const fd of fs.readdirSync(`/proc/${keeper}/fd`)) {
        if (isGroup(fs.readlinkSync(`/proc/${keeper}/fd/${fd}`))) return { fd: pidfdGetfd(keeper, Number(fd)), keeper };
      }
    } catch {
      // gone meanwhile, or cannot be copied
    }
  }
  dead.forEach(([, keeper]) => killQuietly(keeper));
  return undefined;
}

/** Dead but not yet reaped (or gone). */
export function isZombie(pid: number): boolean {
  try {
    return / Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\)/, ''));
  } catch {
    return true;
  }
}
