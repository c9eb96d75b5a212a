// Drives test/support/fake-systemd.py (sd_notify with FDSTORE, and the fd
// store handed back as LISTEN_FDS on restart) from a test: commands go to
// its stdin, its JSON events are collected.
import path from 'node:path';
import readline from 'node:readline';
import { spawn, ChildProcess } from 'node:child_process';
import { waitFor } from './wait';

const SCRIPT = path.resolve(__dirname, '../../../test/support/fake-systemd.py');

export interface FakeSystemd {
  /** every event so far: {event: 'started' | 'killed' | 'exited' | 'notify', ...} */
  events: Record<string, unknown>[];
  send(command: 'start' | 'kill9' | 'term'): void;
  /** waits (30 s at most) for an event from index `from` on that matches */
  until(what: string, pred: (e: Record<string, unknown>) => boolean, from?: number): Promise<unknown>;
  /** stops the service and the fake */
  stop(): Promise<void>;
}

/** Runs `cmd` as the service of a fake systemd listening on `notifySocket`; the service's output goes to `logFd`. */
export function startFakeSystemd(notifySocket: string, cmd: string[], logFd: number): FakeSystemd {
  const sd: ChildProcess = spawn('python3', [SCRIPT, notifySocket, '--', ...cmd], { stdio: ['pipe', 'pipe', logFd] });
  const events: Record<string, unknown>[] = [];
  readline.createInterface({ input: sd.stdout! }).on('line', (l) => events.push(JSON.parse(l)));
  return {
    events,
    send: (command) => void sd.stdin!.write(`${command}\n`),
    until: (what, pred, from = 0) => waitFor(() => events.slice(from).some(pred), { what, timeoutMs: 30_000 }),
    stop: async () => {
      const exited = new Promise((r) => sd.once('exit', r));
      sd.stdin!.write('term\n');
      sd.stdin!.end();
      await exited;
    },
  };
}
