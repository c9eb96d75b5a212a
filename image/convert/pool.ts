// zstd chunk compression on worker threads, so the main thread can keep
// reading, hashing and writing while chunks compress. Chunks travel in
// batches (one message per batch: per-chunk messages cost about as much as
// compressing small chunks) as transferred ArrayBuffers, and come back with
// their results.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { ChunkCompressor } from '../blob/writer';

interface Task {
  data: Buffer;
  resolve(r: { z: Buffer; data: Buffer }): void;
  reject(e: Error): void;
}

const MAX_BATCH = 64;
const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
const whole = (u: Uint8Array) => u.byteOffset === 0 && u.byteLength === u.buffer.byteLength;

export class CompressorPool implements ChunkCompressor {
  private readonly idle: Worker[] = [];
  private readonly busy = new Map<Worker, Task[]>();
  private readonly queue: Task[] = [];
  private readonly all: Worker[] = [];
  private failed: Error | null = null;

  constructor(size: number, level: number) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(path.join(__dirname, 'compress-worker.js'), { workerData: { level } });
      w.on('message', (m: { out: Uint8Array[]; data: Uint8Array[]; error?: string }) => {
        const tasks = this.busy.get(w)!;
        this.busy.delete(w);
        tasks.forEach((t, i) => {
          if (m.error !== undefined) t.reject(new Error(`zstd worker: ${m.error}`));
          else t.resolve({ z: asBuffer(m.out[i]), data: asBuffer(m.data[i]) });
        });
        this.idle.push(w);
        this.pump();
      });
      w.on('error', (e) => this.fail(e));
      this.all.push(w);
      this.idle.push(w);
    }
  }

  private fail(e: Error): void {
    this.failed = e;
    for (const t of [...[...this.busy.values()].flat(), ...this.queue]) t.reject(e);
    this.busy.clear();
    this.queue.length = 0;
  }

  private pump(): void {
    while (this.idle.length && this.queue.length) {
      const w = this.idle.pop()!;
      // share what is queued among the idle workers
      const n = Math.min(MAX_BATCH, Math.ceil(this.queue.length / (this.idle.length + 1)));
      const batch = this.queue.splice(0, n);
      this.busy.set(w, batch);
      const data = batch.map((t) => t.data);
      w.postMessage({ data }, data.filter(whole).map((d) => d.buffer as ArrayBuffer));
    }
  }

  /** Takes ownership of data (its ArrayBuffer is transferred to a worker). */
  compress(data: Buffer): Promise<{ z: Buffer; data: Buffer }> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.queue.push({ data, resolve, reject });
      // batch: wait for the caller to queue more before waking a worker, unless it is the first
      if (this.queue.length === 1) queueMicrotask(() => this.pump());
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.all.map((w) => w.terminate()));
  }
}
