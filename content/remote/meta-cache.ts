// A blob's metadata (its size, ToC, chunk infos and digests) on local disk.
// Opening a remote blob costs a HEAD and three Range GETs; a worker that
// takes over after a kill must open every blob again before it can answer a
// READ, and under repeated kills that is all it gets to do. With the bytes
// here, a successor opens a blob without a round trip. They are immutable
// (the blob is content-addressed) and verified again as they are parsed
// (the ToC against the bootstrap, the sections against the ToC): a damaged
// file fails the open, which drops it and goes to the registry.
import fs from 'node:fs';
import path from 'node:path';
import type { BlobSource } from '../../image/blob/source';
import type { BlobTail, RangeReader } from './source';

/** The file: a JSON line {size, ranges: [[off, len], ...]}, then the ranges' bytes in that order. */
interface Saved {
  size: number;
  ranges: Map<string, Buffer>;
}

const key = (off: number, len: number) => `${off}:${len}`;

export class BlobMetaCache {
  constructor(readonly dir: string) {}

  private file(blobId: string): string {
    if (!/^[0-9a-f]{64}$/.test(blobId)) throw new RangeError(`blob id "${blobId.slice(0, 80)}" is not 64 hex characters`);
    return path.join(this.dir, blobId);
  }

  load(blobId: string): Saved | undefined {
    const file = this.file(blobId);
    let buf: Buffer;
    try {
      buf = fs.readFileSync(file);
    } catch {
      return undefined;
    }
    try {
      const nl = buf.indexOf(0x0a);
      const head = JSON.parse(buf.subarray(0, nl).toString('utf8')) as { size: number; ranges: [number, number][] };
      if (!Number.isSafeInteger(head.size) || !Array.isArray(head.ranges)) throw new Error('bad header');
      const ranges = new Map<string, Buffer>();
      let at = nl + 1;
      for (const [off, len] of head.ranges) {
        if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || len < 0 || at + len > buf.length) throw new Error('bad range');
        ranges.set(key(off, len), buf.subarray(at, at + len));
        at += len;
      }
      if (at !== buf.length) throw new Error('trailing bytes');
      return { size: head.size, ranges };
    } catch {
      this.drop(blobId);
      return undefined;
    }
  }

  /** Best effort, atomic (a reader sees the old file or the new one). */
  save(blobId: string, size: number, ranges: Map<string, Buffer>): void {
    const list = [...ranges.keys()].map((k) => k.split(':').map(Number) as [number, number]);
    const head = Buffer.from(JSON.stringify({ size, ranges: list }) + '\n');
    const file = this.file(blobId);
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      fs.writeFileSync(tmp, Buffer.concat([head, ...ranges.values()]), { mode: 0o600 });
      fs.renameSync(tmp, file);
    } catch {
      fs.rmSync(tmp, { force: true });
    }
  }

  drop(blobId: string): void {
    fs.rmSync(this.file(blobId), { force: true });
  }

  /** Blob ids that have metadata here. */
  list(): string[] {
    try {
      return fs.readdirSync(this.dir).filter((n) => /^[0-9a-f]{64}$/.test(n));
    } catch {
      return [];
    }
  }
}

/**
 * The registry source of a blob, with reads answered from saved ranges where
 * there are some, and the ranges read recorded (to be saved once the blob
 * opened well).
 */
export class MetaSource implements BlobSource {
  readonly recorded = new Map<string, Buffer>();
  constructor(
    readonly inner: BlobSource & RangeReader,
    private readonly saved?: Map<string, Buffer>,
    /** the blob's end, fetched in one GET as it was opened: reads inside it need no round trip */
    private tail?: BlobTail,
  ) {}

  /** Lets the tail go once the blob is open (up to 32 MiB, no longer needed). */
  dropTail(): void {
    this.tail = undefined;
  }

  get name(): string {
    return this.inner.name;
  }

  get size(): number {
    return this.inner.size;
  }

  async read(off: number, len: number): Promise<Buffer> {
    const k = key(off, len);
    const hit = this.saved?.get(k);
    if (hit) return Buffer.from(hit);
    const t = this.tail;
    const b = t && off >= t.off && off + len <= t.off + t.data.length
      ? Buffer.from(t.data.subarray(off - t.off, off - t.off + len))
      : await this.inner.read(off, len);
    this.recorded.set(k, Buffer.from(b));
    return b;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
