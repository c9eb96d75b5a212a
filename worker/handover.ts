// How a worker gets its device (/dev/cachefiles or the fanotify group) from
// lazysnapd: handed over when lazysnapd activates it, or, for a loaded
// standby, armed ahead (the device and a pidfd of the serving worker) and
// taken the moment that worker exits. Waiting for lazysnapd to see the exit
// (SIGCHLD, its loop, a send, the standby's wake) cost 10-340 ms of a
// failover's stall in the one-CPU guest (docs/NOTES.md).
import fs from 'node:fs';
import { FdPoller, recvFds, type RecvResult } from '../native';
import { ARM_BYTE, HANDOVER_BYTE } from './control';

export interface Device {
  fd: number;
  /** set when armed: when this standby saw the serving worker's death and took the device (Date.now()) */
  exitSeenAt?: number;
  /** set when armed: the start of the requests lazysnapd sent once it saw that death first, for the control reader */
  early?: Buffer;
}

/** What one message on the control socket means before the handover. Pure; the caller closes fds it does not keep. */
export type HandoverStep =
  | { kind: 'gone' } // lazysnapd closed the socket
  | { kind: 'handover'; fd: number }
  | { kind: 'arm'; fd: number; pidfd: number }
  // an armed standby, made the serving worker by lazysnapd (which saw the exit first): its requests begin
  | { kind: 'early'; data: Buffer }
  | { kind: 'bad'; why: string };

export function handoverStep(got: RecvResult, armed: boolean): HandoverStep {
  if (got.data.length === 0 && got.fds.length === 0) return { kind: 'gone' };
  const tag = got.data.subarray(0, 1);
  if (got.data.length === 1 && tag.equals(HANDOVER_BYTE) && got.fds.length === 1) return { kind: 'handover', fd: got.fds[0] };
  if (got.data.length === 1 && tag.equals(ARM_BYTE) && got.fds.length === 2 && !armed) return { kind: 'arm', fd: got.fds[0], pidfd: got.fds[1] };
  // lazysnapd sends JSON lines only to the worker it made active, and makes an armed standby active when it sees the
  // serving worker's exit, which the standby may see later (a busy CPU): the device is this standby's
  if (armed && got.fds.length === 0 && got.data[0] === 0x7b /* { */) return { kind: 'early', data: got.data };
  return { kind: 'bad', why: `bad handover message (${got.data.length} bytes, ${got.fds.length} fds${armed ? ', already armed' : ''})` };
}

/** One message from the control socket, or undefined when none is waiting. */
function recvNow(controlFd: number): RecvResult | undefined {
  try {
    return recvFds(controlFd, 16, 4, { dontWait: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return undefined;
    throw e;
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // already closed
  }
}

/**
 * Waits, without blocking the loop, for the device. Null when lazysnapd
 * closed the control socket first: a standby of a dead lazysnapd never
 * serves, even armed (its successor takes the fd from the serving worker and
 * retires this one by pid). An armed standby checks that once more when the
 * serving worker's pidfd fires, so a lazysnapd that died with it still wins.
 */
export function awaitDevice(controlFd: number): Promise<Device | null> {
  return new Promise((resolve, reject) => {
    let armed: { fd: number; pidfd: number; poller: FdPoller } | undefined;
    let early: Buffer | undefined;
    let done = false;
    const finish = (dev: Device | null, err?: Error) => {
      if (done) return;
      done = true;
      // pollers before their fds: one libuv poll handle per fd, and the control socket gets its own after this
      control.close();
      if (armed) {
        armed.poller.close();
        closeQuietly(armed.pidfd);
        if (dev?.fd !== armed.fd) closeQuietly(armed.fd);
      }
      if (err) reject(err);
      else resolve(dev);
    };
    // One message: true when it settled the wait.
    const take = (got: RecvResult): boolean => {
      const step = handoverStep(got, armed !== undefined);
      if (step.kind === 'gone') finish(null);
      else if (step.kind === 'handover') finish({ fd: step.fd });
      else if (step.kind === 'early') {
        // The rest is the control reader's, after the takeover; the pidfd has fired or is about to.
        early = step.data;
        control.close();
        return false;
      } else if (step.kind === 'arm') {
        const poller = new FdPoller(step.pidfd, (err) => {
          if (err) return finish(null, new Error(`serving worker's pidfd: ${err.syscall}: errno ${err.errno}`));
          // The serving worker has exited, so every fd it held is closed. Anything lazysnapd sent meanwhile first
          // (unless it has made this standby active already: then what follows is for the control reader).
          if (!early) {
            let more: RecvResult | undefined;
            try {
              more = recvNow(controlFd);
            } catch (e) {
              return finish(null, e as Error);
            }
            if (more && take(more)) return;
          }
          finish({ fd: step.fd, exitSeenAt: Date.now(), ...(early ? { early } : {}) });
        });
        armed = { fd: step.fd, pidfd: step.pidfd, poller };
        poller.start();
        return false;
      } else {
        for (const fd of got.fds) closeQuietly(fd);
        finish(null, new Error(step.why));
      }
      return true;
    };
    const control = new FdPoller(controlFd, (err) => {
      if (err) return finish(null, new Error(`control socket: ${err.syscall}: errno ${err.errno}`));
      let got: RecvResult | undefined;
      try {
        got = recvNow(controlFd);
      } catch (e) {
        return finish(null, e as Error);
      }
      if (got) take(got); // else woken for nothing
    });
    control.start();
  });
}
