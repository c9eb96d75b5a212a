// The worker's edge to /dev/cachefiles: reads messages when the device is
// readable, and implements DeviceIO with the native addon (aligned pwrite,
// READ_COMPLETE ioctl). lazysnapd's own commands (bind, cull) are in
// supervisor/cachefiles.ts.
import fs from 'node:fs';
import { allocAligned, dataExtents, FdPoller, ioctlReadComplete, pwriteAllSync } from '../native';
import type { DeviceIO } from './daemon';
import { MSG_MAX_SIZE, Message, ProtocolError, parseMessage } from './protocol';

/** messages drained per readiness callback, so one busy device cannot starve the loop */
const DRAIN_BATCH = 64;

/** Free aligned buffers by size, so steady-state READs allocate nothing. */
class BufferPool {
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

export class CachefilesDevice implements DeviceIO {
  private poller: FdPoller | undefined;
  private readonly buf = Buffer.alloc(MSG_MAX_SIZE);
  private readonly pool = new BufferPool(64 << 20);
  readonly alloc = (size: number) => this.pool.take(size);

  constructor(readonly fd: number) {}

  command(line: string): void {
    fs.writeSync(this.fd, line); // one command per write(); errors come back through write's return
  }

  // Synchronous: a write into the local cache file takes well under a
  // millisecond, less than handing it to the threadpool and back.
  // The buffer belongs to the device once written (the DeviceIO contract), so it is reused.
  async pwrite(fd: number, buf: Buffer, off: number): Promise<void> {
    pwriteAllSync(fd, buf, off);
    this.pool.give(buf);
  }

  readComplete(fd: number, msgId: number): void {
    ioctlReadComplete(fd, msgId);
  }

  dataExtents(fd: number, end: number): [number, number][] {
    return dataExtents(fd, end);
  }

  close(fd: number): void {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed: nothing to release
    }
  }

  /** Delivers each message to onMessage; malformed ones to onBad. */
  serve(onMessage: (m: Message) => void, onBad: (err: Error) => void): void {
    this.poller = new FdPoller(this.fd, (err) => {
      if (err) return onBad(err);
      for (let i = 0; i < DRAIN_BATCH; i++) {
        let n: number;
        try {
          n = fs.readSync(this.fd, this.buf, 0, this.buf.length, null);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return;
          return onBad(e as Error);
        }
        if (n === 0) return; // queue empty: read() returns 0 rather than blocking
        let m: Message;
        try {
          m = parseMessage(Buffer.from(this.buf.subarray(0, n)));
        } catch (e) {
          onBad(e instanceof ProtocolError ? e : new ProtocolError(String(e)));
          continue;
        }
        onMessage(m);
      }
    });
    this.poller.start();
  }

  /** Whether the device is polled: false after stop(), or after libuv gave up on it (an error). */
  get reading(): boolean {
    return this.poller?.active ?? false;
  }

  stop(): void {
    this.poller?.close();
    this.poller = undefined;
  }
}
