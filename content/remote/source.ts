// A BlobSource over the registry: read(off, len) is one Range GET (with the
// client's retries, mirrors and auth), so DataBlob.open can load a blob's
// ToC, chunk infos and digests remotely, and the chunk fetcher can read
// merged chunk ranges.
import type { BlobSource } from '../../image/blob/source';
import { FormatError } from '../../image/errors';
import type { Repository } from '../../registry/client';
import type { OnPart } from '../../registry/http';

/** The last bytes of a blob, from `off` to its end. */
export interface BlobTail {
  off: number;
  data: Buffer;
}

/** What the chunk fetcher needs: ranged reads, cancellable. */
export interface RangeReader {
  readonly name: string;
  readonly size: number;
  /**
   * Exactly len bytes at off, in pieces (a response body as received: not
   * joined), or an error. `onPart`, if the reader can, sees each piece as it
   * arrives (OnPart: a retry starts again at 0).
   */
  readRange(off: number, len: number, signal?: AbortSignal, onPart?: OnPart): Promise<Buffer[]>;
}

export class RegistryBlobSource implements BlobSource, RangeReader {
  private constructor(
    readonly repo: Repository,
    readonly digest: string,
    readonly size: number,
    readonly name: string,
  ) {}

  /** Opens a blob; its size comes from `size` (a descriptor's) or a HEAD request. */
  static async open(repo: Repository, digest: string, size?: number, signal?: AbortSignal): Promise<RegistryBlobSource> {
    const n = size ?? (await repo.statBlob(digest, signal));
    return new RegistryBlobSource(repo, digest, n, `${repo.name}@${digest}`);
  }

  /**
   * Opens a blob with one suffix-Range GET of its last `tailBytes` (where a
   * nydus blob keeps its metadata): the size comes with them, no HEAD.
   */
  static async openTail(repo: Repository, digest: string, tailBytes: number, signal?: AbortSignal): Promise<{ source: RegistryBlobSource; tail: BlobTail }> {
    const t = await repo.readBlobTail(digest, tailBytes, { signal });
    return { source: new RegistryBlobSource(repo, digest, t.size, `${repo.name}@${digest}`), tail: { off: t.off, data: t.data } };
  }

  /** The registry host this blob is read through (the key for per-host scheduling). */
  get registry(): string {
    return this.repo.registry;
  }

  async read(off: number, len: number): Promise<Buffer> {
    return Buffer.concat(await this.readRange(off, len), len);
  }

  async readRange(off: number, len: number, signal?: AbortSignal, onPart?: OnPart): Promise<Buffer[]> {
    if (off < 0 || len < 0 || off + len > this.size) {
      throw new FormatError(this.name, `read [${off}, ${off + len}) beyond the blob's ${this.size} bytes`);
    }
    if (len === 0) return [];
    return this.repo.readBlobParts(this.digest, off, len, { signal, blobSize: this.size, onPart });
  }

  async close(): Promise<void> {
    // connections belong to the client's pool
  }
}

/** Adapts any BlobSource (a local file, a buffer) to a RangeReader. */
export function rangeReaderOf(src: BlobSource): RangeReader {
  const r = src as Partial<RangeReader>;
  if (typeof r.readRange === 'function') return src as unknown as RangeReader;
  return { name: src.name, size: src.size, readRange: async (off, len) => [await src.read(off, len)] };
}
