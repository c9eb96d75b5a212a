// A worker's fd table outlives it in a keeper (native keepFdTable), so that
// an event the worker read but died before writing down is still named: its
// fd number, in the journal, is still open in the keeper's table, and
// /proc/<keeper>/fd/<fd> says which blob file it was. A successor finds
// keepers by their comm and by the journal file open in their table (the
// worker keeps its journal's fd open for this), reads what it needs, and
// kills those of dead workers.
import fs from 'node:fs';
import path from 'node:path';
import { FD_KEEPER_COMM, keepFdTable } from '../../native';

/**
 * Starts this worker's keeper (its journal must be open). It is ended when
 * this process exits with no event unanswered (`idle`); otherwise, or on a
 * kill, a successor ends it once it has read what it needs.
 */
export function startKeeper(idle: () => boolean): number {
  const pid = keepFdTable();
  process.once('exit', () => idle() && killQuietly(pid));
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
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (fs.readFileSync(`/proc/${name}/comm`, 'utf8').trim() !== FD_KEEPER_COMM) continue;
      for (const fd of fs.readdirSync(`/proc/${name}/fd`)) {
        const worker = journalWorkerOf(fs.readlinkSync(`/proc/${name}/fd/${fd}`), journalDir);
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
