// A blob stored as plain bytes in a local file: a bootstrap, an EROFS image
// made by mkfs.erofs, or an already uncompressed blob.
import fs from 'node:fs/promises';
import { Allocator, BlobContent, RangeSink, fillWindow } from './content';

const MAX_PIECE = 1 << 20;

export class FlatFileContent implements BlobContent {
  private constructor(
    readonly name: string,
    readonly size: number,
    private readonly path: string,
  ) {}

  static async open(path: string, name = path): Promise<FlatFileContent> {
    const st = await fs.stat(path);
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    return new FlatFileContent(name, st.size, path);
  }

  async fill(off: number, len: number, sink: RangeSink, alloc: Allocator): Promise<void> {
    const w = fillWindow(off, len, this.size);
    if (!w) return;
    const fh = await fs.open(this.path, 'r');
    try {
      for (let p = w.start; p < w.end; p += MAX_PIECE) {
        const n = Math.min(MAX_PIECE, w.end - p);
        const buf = alloc(n); // zeroed: the tail past EOF stays zero
        let got = 0;
        while (p + got < Math.min(p + n, this.size)) {
          const { bytesRead } = await fh.read(buf, got, Math.min(n, this.size - p) - got, p + got);
          if (bytesRead === 0) throw new Error(`${this.path} shrank while being served (short read at ${p + got})`);
          got += bytesRead;
        }
        await sink(p, buf);
      }
    } finally {
      await fh.close();
    }
  }
}
