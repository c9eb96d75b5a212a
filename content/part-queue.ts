// The parts of a local blob's windows, filled in the order they were asked
// for, as many at once as the machine has cores. A part's fill is a chain of
// chunk reads and decodes, one thread at a time. Started all at once, the four
// parts of a 16 MiB window shared the cores, and the first, the one the reader
// waits on, often ended last (bench/fanotify, traced after a failover: the
// first of four 4 MiB parts took 150 ms, the third 113). Queued, the first
// ends first, and the cores stay busy. (A blob of small chunks, up to
// INLINE_DECODE_MAX, decodes them on the event loop: its parts then take
// turns on one core, which costs less than a pool hand-off per chunk.)
import os from 'node:os';
import PQueue from 'p-queue';

export class PartQueue {
  private readonly q: PQueue;

  /** at most `atOnce` parts under way (default: the machine's cores) */
  constructor(atOnce = os.availableParallelism()) {
    this.q = new PQueue({ concurrency: Math.max(1, atOnce) });
  }

  /** Runs `fill` when its turn comes; settles as it does. */
  run<T>(fill: () => Promise<T>): Promise<T> {
    return this.q.add(fill) as Promise<T>;
  }

  /** parts under way */
  get running(): number {
    return this.q.pending;
  }

  /** parts waiting for their turn */
  get waiting(): number {
    return this.q.size;
  }
}
