// The worker's edge to /dev/cachefiles: reads messages when the device is
// readable, and implements DeviceIO with the native addon (aligned pwrite,
// READ_COMPLETE ioctl). lazysnapd's own commands (bind, cull) are in
// supervisor/cachefiles.ts.
import fs from 'node:fs';
import { dataExtents, FdPoller, ioctlReadComplete, pwriteAll, pwriteAllSync } from '../native';
import { BufferPool } from '../content/buffer-pool';
import type { DeviceIO } from './daemon';
import { MSG_MAX_SIZE, Message, ProtocolError, parseMessage } from './protocol';

/**
 * Writes at least this big go to the threadpool. A READ's 128 KiB-1 MiB
 * write into the cache takes well under a millisecond, less than a trip to
 * the pool and back; a prefetch's 4 MiB pieces took ~4 ms each on the loop
 * (bench/fetch: 0.4 s of loop time per 384 MiB), time the loop owes to
 * READ messages and response bodies.
 */
const POOL_WRITE_MIN = 1 << 20;

/** pwrite of all of buf into a cache file: small ones on the loop, big ones on the threadpool. */
export async function writeCache(fd: number, buf: Buffer, off: number): Promise<void> {
  if (buf.length < POOL_WRITE_MIN) pwriteAllSync(fd, buf, off);
  else await pwriteAll(fd, buf, off);
}

/** messages drained per readiness callback, so one busy device cannot starve the loop */
const DRAIN_BATCH = 64;

export class CachefilesDevice implements DeviceIO {
  private poller: FdPoller | undefined;
  private readonly buf = Buffer.alloc(MSG_MAX_SIZE);
  private readonly pool = new BufferPool(64 << 20);
  readonly alloc = (size: number) => this.pool.take(size);

  constructor(readonly fd: number) {}

  command(line: string): void {
    fs.writeSync(this.fd, line); // one command per write(); errors come back through write's return
  }

  // The buffer belongs to the device once written (the DeviceIO contract), so it is reused.
  async pwrite(fd: number, buf: Buffer, off: number): Promise<void> {
    await writeCache(fd, buf, off);
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
