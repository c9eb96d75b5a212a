// Aligned write buffers kept by size after their pwrite, so a worker in
// steady state (either backend's edge, worker/device.ts and
// worker/fanotify/group.ts, and the fetch benchmark, which writes the same
// way) does not allocate, page-fault and garbage-collect a fresh buffer for
// every piece. Here, not in worker/, so that both edges share it.
import { allocAligned } from '../native';

/** Free aligned buffers by size, so steady-state READs allocate nothing. */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private held = 0;
  constructor(private readonly maxBytes: number) {}
  take(size: number): Buffer {
    const b = this.free.get(size)?.pop();
    if (!b) return allocAligned(size, 4096);
    this.held -= size;
    return b.fill(0);
  }
  give(b: Buffer): void {
    if (this.held + b.length > this.maxBytes) return;
    let list = this.free.get(b.length);
    if (!list) this.free.set(b.length, (list = []));
    list.push(b);
    this.held += b.length;
  }
}
