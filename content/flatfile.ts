// A blob stored as plain bytes in a local file: a bootstrap, an EROFS image
// made by mkfs.erofs, or an already uncompressed blob. Local reads are
// synchronous preads on a kept-open fd: each READ costs a few syscalls and
// no threadpool round trips (those dominate under UML and on busy hosts).
import fs from 'node:fs';
import { Allocator, BlobContent, RangeSink, fillWindow } from './content';

const MAX_PIECE = 1 << 20;

export class FlatFileContent implements BlobContent {
  private constructor(
    readonly name: string,
    readonly size: number,
    private readonly fd: number,
  ) {}

  static async open(path: string, name = path): Promise<FlatFileContent> {
    const fd = fs.openSync(path, 'r');
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      fs.closeSync(fd);
      throw new Error(`${path} is not a regular file`);
    }
    return new FlatFileContent(name, st.size, fd);
  }

  async fill(off: number, len: number, sink: RangeSink, alloc: Allocator, signal?: AbortSignal): Promise<void> {
    const w = fillWindow(off, len, this.size);
    if (!w) return;
    for (let p = w.start; p < w.end; p += MAX_PIECE) {
      signal?.throwIfAborted();
      const n = Math.min(MAX_PIECE, w.end - p);
      const buf = alloc(n); // zeroed: the tail past EOF stays zero
      const want = Math.min(n, this.size - p);
      for (let got = 0; got < want; ) {
        const r = fs.readSync(this.fd, buf, got, want - got, p + got);
        if (r === 0) throw new Error(`${this.name} shrank while being served (short read at ${p + got})`);
        got += r;
      }
      await sink(p, buf);
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
