// Exact-length reads over an async stream of buffers, without copying body
// data: take() hands out subarrays of the incoming buffers.

/** The stream ended inside a structure: a truncated layer. */
export class TruncatedError extends Error {
  constructor(what: string) {
    super(`unexpected end of data inside the ${what}`);
    this.name = 'TruncatedError';
  }
}

export class ByteReader {
  private readonly it: AsyncIterator<Buffer>;
  private cur: Buffer = Buffer.alloc(0);
  private done = false;

  constructor(src: AsyncIterable<Buffer>) {
    this.it = src[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    while (this.cur.length === 0) {
      if (this.done) return false;
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      this.cur = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
    }
    return true;
  }

  /** n bytes, or null at a clean end of stream; throws if the stream ends part way. */
  async readExact(n: number, what: string): Promise<Buffer | null> {
    if (n === 0) return Buffer.alloc(0);
    if (!(await this.fill())) return null;
    if (this.cur.length >= n) {
      const out = this.cur.subarray(0, n);
      this.cur = this.cur.subarray(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      if (!(await this.fill())) throw new TruncatedError(what);
      const k = Math.min(n - got, this.cur.length);
      this.cur.copy(out, got, 0, k);
      this.cur = this.cur.subarray(k);
      got += k;
    }
    return out;
  }

  /** Exactly n bytes as a sequence of pieces. */
  async *take(n: number, what: string): AsyncGenerator<Buffer> {
    while (n > 0) {
      if (!(await this.fill())) throw new TruncatedError(what);
      const k = Math.min(n, this.cur.length);
      const piece = this.cur.subarray(0, k);
      this.cur = this.cur.subarray(k);
      n -= k;
      yield piece;
    }
  }

  async skip(n: number, what: string): Promise<void> {
    for await (const _ of this.take(n, what)) void _;
  }

  /** Reads and discards everything left (so digests over the whole stream complete). */
  async drain(): Promise<number> {
    let n = this.cur.length;
    this.cur = Buffer.alloc(0);
    while (await this.fill()) {
      n += this.cur.length;
      this.cur = Buffer.alloc(0);
    }
    return n;
  }
}
