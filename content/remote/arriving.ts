// A Range GET's body as it arrives: each chunk of the range is had once its
// own bytes are in, not when the whole body is. A READ that joins a GET under
// way then waits only for its chunks, and a chunk decodes while the rest of
// the body is still on the wire.
import { sliceParts } from './parts';

interface Want {
  at: number;
  end: number;
  resolve(parts: Buffer[]): void;
  reject(err: unknown): void;
}

export class ArrivingRange {
  private parts: Buffer[] = [];
  private got = 0;
  /** ascending by end, so the ready ones are a prefix */
  private readonly wants: Want[] = [];
  private over = false;

  constructor(readonly length: number) {}

  /** Bytes [at, at+len) of the range, as views of the buffers they arrived in. */
  want(at: number, len: number): Promise<Buffer[]> {
    if (!Number.isSafeInteger(at) || !Number.isSafeInteger(len) || at < 0 || len < 0 || at + len > this.length) {
      throw new RangeError(`[${at}, +${len}) is not within a range of ${this.length} bytes`);
    }
    if (this.over) throw new Error('the range has settled');
    if (at + len <= this.got) return Promise.resolve(sliceParts(this.parts, at, len));
    return new Promise((resolve, reject) => {
      const w: Want = { at, end: at + len, resolve, reject };
      let i = this.wants.length;
      while (i > 0 && this.wants[i - 1].end > w.end) i--;
      this.wants.splice(i, 0, w);
    });
  }

  /**
   * A part of the body, `at` bytes in. A retried request starts again at 0:
   * what its first try delivered stays delivered (its bytes were the same),
   * the rest waits for the new body.
   */
  part(b: Buffer, at: number): void {
    if (this.over) return;
    if (at === 0 && this.got > 0) {
      this.parts = [];
      this.got = 0;
    }
    if (at !== this.got || this.got + b.length > this.length) return; // not this body's next bytes: left to settle()
    this.parts.push(b);
    this.got += b.length;
    let n = 0;
    while (n < this.wants.length && this.wants[n].end <= this.got) n++;
    for (const w of this.wants.splice(0, n)) w.resolve(sliceParts(this.parts, w.at, w.end - w.at));
  }

  /** The whole body (however it came): whatever still waits is cut from it. */
  settle(parts: readonly Buffer[]): void {
    this.over = true;
    for (const w of this.wants.splice(0)) w.resolve(sliceParts(parts, w.at, w.end - w.at));
    this.parts = [];
  }

  /** The GET failed: whatever still waits fails with it; what was delivered stays. */
  fail(err: unknown): void {
    this.over = true;
    for (const w of this.wants.splice(0)) w.reject(err);
    this.parts = [];
  }
}
