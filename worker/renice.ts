// A loaded standby worker waits at nice 10, so that its warm-up yields to the
// serving worker; as lazysnapd activates it, it goes back to 0 at once. Both are lazysnapd's
// doing (supervisor/supervisor.ts): a worker that lowered its own priority
// could be handed over while still at nice 10, and then wait at nice 10 for
// the CPU behind the next standby's start (kernel/lazy-pull saw "no
// heartbeat 4.2 s after activation"). Linux keeps a nice value per thread,
// and threads inherit their creator's: every thread is set, libuv's pool
// (which decodes chunks) included.
import fs from 'node:fs';
import os from 'node:os';

/** Sets the nice value of every thread of `pid`; returns how many it set (0 if not allowed or gone). */
export function reniceThreads(pid: number, nice: number): number {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0; // gone, or no /proc
  }
  let n = 0;
  for (const tid of tids) {
    try {
      os.setPriority(Number(tid), nice); // setpriority(PRIO_PROCESS, tid): one thread on Linux
      n++;
    } catch {
      // exited meanwhile, or not allowed (lowering a nice value needs CAP_SYS_NICE): callers renice only as root
    }
  }
  return n;
}
