// Random access to a blob's bytes: a local file now, the registry later.
import fs from 'node:fs/promises';
import { FormatError } from '../errors';

export interface BlobSource {
  readonly name: string;
  readonly size: number;
  /** exactly len bytes at off, or an error */
  read(off: number, len: number): Promise<Buffer>;
  close(): Promise<void>;
}

export class FileSource implements BlobSource {
  private constructor(
    readonly name: string,
    readonly size: number,
    private readonly fh: fs.FileHandle,
  ) {}

  static async open(path: string, name = path): Promise<FileSource> {
    const fh = await fs.open(path, 'r');
    try {
      return new FileSource(name, (await fh.stat()).size, fh);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async read(off: number, len: number): Promise<Buffer> {
    if (off < 0 || len < 0 || off + len > this.size) {
      throw new FormatError(this.name, `read [${off}, ${off + len}) beyond the blob's ${this.size} bytes`);
    }
    const buf = Buffer.allocUnsafe(len);
    let done = 0;
    while (done < len) {
      const { bytesRead } = await this.fh.read(buf, done, len - done, off + done);
      if (bytesRead === 0) throw new FormatError(this.name, `blob file shrank: short read at ${off + done}`);
      done += bytesRead;
    }
    return buf;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}
