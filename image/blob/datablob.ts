// A nydus data blob, opened through its bootstrap entry: chunk infos, chunk
// digests and the ToC. Answers "which chunks cover [off, off+len)" and reads a
// chunk decompressed and verified: a digest mismatch is an error, never data.
import crypto from 'node:crypto';
import { FormatError } from '../errors';
import { decompress } from '../codec/decompress';
import { digest } from '../codec/digest';
import { decodeChunk as decodeChunkNative, decodeChunkSync } from '../../native';
import { BlobEntry, BlobFeature, Compressor } from '../rafs/bootstrap';
import { CI_HEADER_SIZE, ChunkInfo, CiHeader, chunksCovering, parseChunkInfos, parseCiHeader } from './chunkinfo';
import type { BlobSource } from './source';
import { Toc, TocEntry, parseToc } from './toc';

const DIGEST_SIZE = 32;
const TOC_PROBE = 4096;
/**
 * Chunks up to this size (and as many compressed bytes, which a hostile chunk
 * table could make large) decode on the calling thread. Handing one to the
 * threadpool (a futex wake, the event loop preempted by the thread it woke, a
 * promise) cost 5-16 µs for an empty job and 56 µs a chunk in a profile of the
 * fetcher on this 2-core VM: more than decoding 32 KiB. From 64 KiB up the
 * hand-off no longer showed.
 */
export const INLINE_DECODE_MAX = 64 * 1024;

/**
 * How many bytes at a blob's end hold its metadata, by the bootstrap's entry:
 * the chunk infos and their header, the ToC, a digest per chunk, and room for
 * tar headers and padding. An estimate: metadata outside it is read as usual.
 */
export function metadataTailBytes(e: BlobEntry): number {
  const want = e.ciCompressedSize + CI_HEADER_SIZE + (e.tocSize || TOC_PROBE) + e.chunkCount * DIGEST_SIZE + (64 << 10);
  return Math.min(want, 32 << 20);
}

export class DataBlob {
  private constructor(
    readonly entry: BlobEntry,
    readonly src: BlobSource,
    readonly header: CiHeader,
    readonly chunks: ChunkInfo[],
    /** digests in CI order, or null when the blob carries none */
    readonly digests: Buffer[] | null,
    readonly toc: Toc | null,
  ) {}

  /**
   * Opens a blob. Chunk digests come from the blob's ToC (blob.digest) or, for
   * blobs without one, from the bootstrap's chunk table (`tableDigests`).
   */
  static async open(entry: BlobEntry, src: BlobSource, tableDigests: Buffer[] | null = null): Promise<DataBlob> {
    const name = `blob ${entry.blobId}`;
    if (entry.features & BlobFeature.ENCRYPTED) throw new FormatError(name, 'encrypted blobs are not supported');
    // compressed_size counts the chunk data; blob files may carry metadata sections after it.
    if (src.size < entry.compressedSize) {
      throw new FormatError(name, `blob is ${src.size} bytes, shorter than the bootstrap's compressed_size ${entry.compressedSize}`);
    }
    const toc = entry.features & BlobFeature.HAS_TOC ? await readToc(src, entry) : null;

    const ci = await src.read(entry.ciOffset, entry.ciCompressedSize + CI_HEADER_SIZE);
    const header = parseCiHeader(ci.subarray(entry.ciCompressedSize), name);
    if (header.ciEntries !== entry.chunkCount) {
      throw new FormatError(name, `chunk info header has ${header.ciEntries} entries, the bootstrap says ${entry.chunkCount}`);
    }
    const raw = decompress(entry.ciCompressor, ci.subarray(0, entry.ciCompressedSize), entry.ciUncompressedSize, `${name} chunk info`);
    // the ToC (checked against the bootstrap) covers the chunk infos and their header too: a damaged copy fails here
    checkSection(toc, 'blob.meta', raw, name);
    checkSection(toc, 'blob.meta.header', ci.subarray(entry.ciCompressedSize), name);
    const chunks = parseChunkInfos(raw, entry.features, entry.chunkCount, `${name} chunk info`);
    for (const c of chunks) {
      if (c.cOffset + c.cSize > src.size) throw new FormatError(name, `chunk ${c.index} [${c.cOffset}, +${c.cSize}) lies beyond the blob`);
      if (c.uOffset + c.uSize > entry.uncompressedSize) {
        throw new FormatError(name, `chunk ${c.index} ends at ${c.uOffset + c.uSize}, past uncompressed size ${entry.uncompressedSize}`);
      }
    }

    let digests: Buffer[] | null = tableDigests;
    const d = toc?.entries.find((e) => e.name === 'blob.digest');
    if (d) {
      const all = await readSection(src, d, name);
      if (all.length !== entry.chunkCount * DIGEST_SIZE) {
        throw new FormatError(name, `blob.digest holds ${all.length} bytes, want ${entry.chunkCount} × ${DIGEST_SIZE}`);
      }
      digests = chunks.map((_, i) => all.subarray(i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE));
    }
    return new DataBlob(entry, src, header, chunks, digests, toc);
  }

  get name(): string {
    return `blob ${this.entry.blobId}`;
  }

  chunksFor(off: number, len: number): ChunkInfo[] {
    return chunksCovering(this.chunks, off, len);
  }

  /**
   * Decompresses and verifies one chunk from its compressed bytes, on the
   * libuv threadpool: a READ's chunks decode on every core while the event
   * loop goes on serving (small chunks, up to INLINE_DECODE_MAX, on the
   * calling thread). `compressed` may come in pieces (a response body's
   * buffers). dst is not to be touched until it settles.
   */
  async decodeChunk(c: ChunkInfo, compressed: Buffer | readonly Buffer[], dst?: Buffer): Promise<Buffer> {
    const { what, out, want, compressor } = this.decodeSetup(c, compressed, dst);
    if (compressor === Compressor.Gzip) return this.decodeInJs(c, Array.isArray(compressed) ? Buffer.concat(compressed) : compressed as Buffer, out, what, want);
    const why = c.uSize <= INLINE_DECODE_MAX && c.cSize <= INLINE_DECODE_MAX
      ? decodeChunkSync(compressor, compressed, out, this.entry.digester, want)
      : await decodeChunkNative(compressor, compressed, out, this.entry.digester, want);
    if (why) throw new FormatError(what, why);
    return out;
  }

  private decodeSetup(c: ChunkInfo, compressed: Buffer | readonly Buffer[], dst?: Buffer) {
    const what = `${this.name} chunk ${c.index}`;
    const got = Array.isArray(compressed) ? compressed.reduce((n: number, b: Buffer) => n + b.length, 0) : (compressed as Buffer).length;
    if (got !== c.cSize) throw new FormatError(what, `got ${got} compressed bytes, want ${c.cSize}`);
    // Unverifiable data is never handed out.
    if (!this.digests) throw new FormatError(what, 'no chunk digests: none in the blob ToC, none in the bootstrap chunk table');
    const out = dst ? dst.subarray(0, c.uSize) : Buffer.allocUnsafe(c.uSize);
    if (out.length !== c.uSize) throw new RangeError(`output buffer of ${dst!.length} bytes is smaller than ${c.uSize}`);
    const compressor = c.compressed ? this.entry.compressor : Compressor.None;
    return { what, out, want: this.digests[c.index], compressor };
  }

  /** Gzip chunks (rare: nydus writes zstd or lz4_block) go through zlib. */
  private decodeInJs(c: ChunkInfo, compressed: Buffer, out: Buffer, what: string, want: Buffer): Buffer {
    const data = decompress(Compressor.Gzip, compressed, c.uSize, what, out);
    const got = digest(this.entry.digester, data);
    if (!got.equals(want)) throw new FormatError(what, `digest mismatch: got ${got.toString('hex')}, want ${want.toString('hex')}`);
    return data;
  }

  async readChunk(c: ChunkInfo, dst?: Buffer): Promise<Buffer> {
    return this.decodeChunk(c, await this.src.read(c.cOffset, c.cSize), dst);
  }
}

async function readToc(src: BlobSource, entry: BlobEntry): Promise<Toc> {
  const name = `blob ${entry.blobId}`;
  const probe = Math.min(src.size, entry.tocSize || TOC_PROBE);
  const toc = parseToc(await src.read(src.size - probe, probe), src.size, name);
  if (entry.tocSize && toc.size !== entry.tocSize) throw new FormatError(name, `ToC is ${toc.size} bytes, the bootstrap says ${entry.tocSize}`);
  if (!entry.tocDigest.every((x) => x === 0) && !toc.digest.equals(entry.tocDigest)) {
    throw new FormatError(name, `ToC digest ${toc.digest.toString('hex')} does not match the bootstrap's ${entry.tocDigest.toString('hex')}`);
  }
  return toc;
}

/** Checks bytes read outside readSection against their ToC entry's sha256, if the ToC has one. */
function checkSection(toc: Toc | null, section: string, data: Buffer, name: string): void {
  const e = toc?.entries.find((x) => x.name === section);
  if (!e || e.uncompressedSize !== data.length) return;
  const got = crypto.createHash('sha256').update(data).digest();
  if (!got.equals(e.uncompressedDigest)) throw new FormatError(name, `section ${section}: sha256 ${got.toString('hex')} does not match the ToC`);
}

/** Reads a ToC section, decompressed and checked against its sha256. */
export async function readSection(src: BlobSource, e: TocEntry, name: string): Promise<Buffer> {
  const raw = await src.read(e.compressedOffset, e.compressedSize);
  const data = decompress(e.compressor, raw, e.uncompressedSize, `${name} section ${e.name}`);
  const got = crypto.createHash('sha256').update(data).digest();
  if (!got.equals(e.uncompressedDigest)) throw new FormatError(name, `section ${e.name}: sha256 ${got.toString('hex')} does not match the ToC`);
  return data;
}
