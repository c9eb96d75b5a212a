// Writes one nydus data blob (formats.md §2.4), streaming: chunk data as it
// comes, then the metadata sections, each followed by its tar header:
//
//   chunk data | hdr image.blob | CI array (zstd) + CI header | hdr blob.meta
//   | chunk digests | hdr blob.digest | ToC entries | hdr rafs.blob.toc
//
// Chunks are deduplicated by blake3 digest, all-zero chunks become holes (no
// data at all), and each chunk is stored raw when zstd does not shrink it.
// Chunks compress on the libuv threadpool (the addon's zstd), on every core
// while the caller reads ahead; writes still happen in chunk order. Small
// chunks (the ends of files) go in batches of up to a chunk size of bytes,
// one threadpool job each. Batch buffers are reused: a fresh 1 MiB buffer
// per chunk cost more in GC and page faults than the copy into one.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import * as zstd from 'zstd-napi';
import { compressChunks } from '../../native';
import { CI_HEADER_SIZE, CI_MAGIC, CI_V2_SIZE, encodeChunkInfosV2 } from './chunkinfo';
import { TAR_BLOCK, makeTarHeader } from './tar';
import { TOC_ENTRY_SIZE, TOC_FLAG_OF, TOC_NAME } from './toc';
import { digest as chunkDigest } from '../codec/digest';
import { BlobEntry, BlobFeature, Compressor, DigestAlgo } from '../rafs/bootstrap';
import { PAGE } from '../bytes';

const DIGEST_SIZE = 32;
const MAX_CHUNKS = 1 << 24;
/** uncompressed offsets are stored as 32-bit page numbers */
const MAX_UNCOMPRESSED = 2 ** 44;
const MAX_COMPRESSED = 2 ** 40;
const OUT_BUFFER = 4 << 20;
/** chunks in one compression job at most (a batch also holds at most a chunk size of bytes) */
const MAX_BATCH = 256;

/** The features every blob written here has. */
export const WRITER_BLOB_FEATURES =
  BlobFeature.ALIGNED |
  BlobFeature.CHUNK_INFO_V2 |
  BlobFeature.INLINED_CHUNK_DIGEST |
  BlobFeature.HAS_TAR_HEADER |
  BlobFeature.HAS_TOC |
  BlobFeature.CAP_TAR_TOC;

/** A chunk index value for "no data: reads as zeros". */
export const HOLE = -1;

/** One entry of the chunk info array, as written (chunk info v2). */
export interface WrittenChunk {
  uOffset: number;
  uSize: number;
  cOffset: number;
  cSize: number;
  compressed: boolean;
}

/** A 128-byte ToC entry (nydus storage/src/meta/toc.rs). */
export interface TocEntryOut {
  compressor: Compressor;
  name: string;
  sha256: Buffer;
  compressedOffset: number;
  compressedSize: number;
  uncompressedSize: number;
}

export interface BlobResult {
  /** sha256 of the whole file, hex: the blob id and layer digest */
  id: string;
  path: string;
  /** the bootstrap's blob table entry (blobIndex filled in by the caller) */
  entry: BlobEntry;
  /** uncompressed offset of each chunk, by chunk info index */
  uOffsets: number[];
  stats: { chunks: number; dedupHits: number; holes: number; rawChunks: number; dataBytes: number };
}

/** Buffered, sequential output that hashes everything it writes. */
class OutFile {
  private buf = Buffer.allocUnsafe(OUT_BUFFER);
  private used = 0;
  private written = 0;
  readonly sha = crypto.createHash('sha256');

  private constructor(private readonly fh: fs.FileHandle) {}

  static async create(path: string): Promise<OutFile> {
    return new OutFile(await fs.open(path, 'wx', 0o644));
  }

  get position(): number {
    return this.written + this.used;
  }

  async write(data: Buffer): Promise<void> {
    this.sha.update(data);
    if (data.length >= OUT_BUFFER) {
      await this.flush();
      await this.writeAll(data);
      return;
    }
    if (this.used + data.length > OUT_BUFFER) await this.flush();
    data.copy(this.buf, this.used);
    this.used += data.length;
  }

  /** Callers await every write, so the buffer is free again when this returns: it is reused (fewer GCs). */
  async flush(): Promise<void> {
    if (this.used === 0) return;
    const b = this.buf.subarray(0, this.used);
    this.used = 0;
    await this.writeAll(b);
  }

  private async writeAll(b: Buffer): Promise<void> {
    let off = 0;
    while (off < b.length) {
      const { bytesWritten } = await this.fh.write(b, off, b.length - off, null);
      off += bytesWritten;
    }
    this.written += b.length;
  }

  async close(): Promise<void> {
    await this.flush();
    await this.fh.sync();
    await this.fh.close();
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

function sha256(...parts: Buffer[]): Buffer {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

const ZEROS = Buffer.alloc(1 << 20);
export function isZero(b: Buffer): boolean {
  for (let off = 0; off < b.length; off += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - off);
    if (b.compare(ZEROS, 0, n, off, off + n) !== 0) return false;
  }
  return true;
}

export function encodeCiHeader(h: {
  features: number;
  ciCompressor: Compressor;
  entries: number;
  ciOffset: number;
  ciCompressedSize: number;
  ciUncompressedSize: number;
}): Buffer {
  const b = Buffer.alloc(CI_HEADER_SIZE);
  b.writeUInt32LE(CI_MAGIC, 0);
  b.writeUInt32LE(h.features >>> 0, 4);
  b.writeUInt32LE(h.ciCompressor, 8);
  b.writeUInt32LE(h.entries, 12);
  b.writeBigUInt64LE(BigInt(h.ciOffset), 16);
  b.writeBigUInt64LE(BigInt(h.ciCompressedSize), 24);
  b.writeBigUInt64LE(BigInt(h.ciUncompressedSize), 32);
  // zran offset/size/count stay 0
  b.writeUInt32LE(CI_MAGIC, CI_HEADER_SIZE - 4);
  return b;
}

export function encodeTocEntry(e: TocEntryOut): Buffer {
  const b = Buffer.alloc(TOC_ENTRY_SIZE);
  const flags = TOC_FLAG_OF[e.compressor];
  if (flags === undefined) throw new RangeError(`ToC cannot record compressor ${Compressor[e.compressor]}`);
  b.writeUInt32LE(flags, 0);
  if (Buffer.byteLength(e.name) > 16) throw new RangeError(`ToC entry name "${e.name}" is longer than 16 bytes`);
  b.write(e.name, 8, 16, 'latin1');
  e.sha256.copy(b, 24);
  b.writeBigUInt64LE(BigInt(e.compressedOffset), 56);
  b.writeBigUInt64LE(BigInt(e.compressedSize), 64);
  b.writeBigUInt64LE(BigInt(e.uncompressedSize), 72);
  return b;
}

/** Consecutive chunks compressed by one threadpool job: their bytes back to back in src, their frames at the same offsets in dst. */
interface Batch {
  /** chunk info index of the first */
  first: number;
  src: Buffer;
  dst: Buffer;
  lengths: number[];
  used: number;
  /** each frame's size, 0 if zstd does not shrink the chunk; set once sealed */
  sizes: Uint32Array | null;
  compressed: Promise<void> | null;
}

export interface BlobWriterOptions {
  chunkSize: number;
  /** zstd level */
  level?: number;
  /** how many batches of chunks (each at most a chunk size of bytes) may be compressing at once (memory: this × chunk size × 2) */
  inflight?: number;
  /** name for errors */
  name?: string;
}

export class BlobWriter {
  private readonly chunks: WrittenChunk[] = [];
  private readonly digests: Buffer[] = [];
  private readonly seen = new Map<string, number>();
  /** sealed batches, compressing or compressed, oldest first */
  private readonly pending: Batch[] = [];
  /** the batch that takes the next chunks */
  private open: Batch | null = null;
  /** chunk-sized buffers whose write has settled, for the next batches */
  private readonly spare: Buffer[] = [];
  private nextUOffset = 0;
  private finished = false;
  readonly stats = { chunks: 0, dedupHits: 0, holes: 0, rawChunks: 0, dataBytes: 0 };

  private constructor(
    readonly path: string,
    private readonly out: OutFile,
    private readonly opts: Required<BlobWriterOptions>,
  ) {}

  static async create(path: string, opts: BlobWriterOptions): Promise<BlobWriter> {
    const cs = opts.chunkSize;
    if (!Number.isInteger(cs) || cs < PAGE || cs > 16 << 20 || (cs & (cs - 1)) !== 0) {
      throw new RangeError(`chunk size ${cs} is not a power of two between 4 KiB and 16 MiB`);
    }
    return new BlobWriter(path, await OutFile.create(path), { inflight: 4, name: path, ...opts, level: opts.level ?? 3 });
  }

  get chunkCount(): number {
    return this.chunks.length;
  }

  /**
   * Adds one chunk (≤ chunk size bytes) and returns its chunk info index, or
   * HOLE if it is all zeros. The data is copied if it must outlive the call.
   */
  async put(data: Buffer): Promise<number> {
    if (this.finished) throw new Error('blob writer already finished');
    if (data.length === 0 || data.length > this.opts.chunkSize) throw new RangeError(`chunk of ${data.length} bytes`);
    this.stats.dataBytes += data.length;
    if (isZero(data)) {
      this.stats.holes++;
      return HOLE;
    }
    const digest = chunkDigest(DigestAlgo.Blake3, data);
    const key = digest.toString('latin1');
    const hit = this.seen.get(key);
    if (hit !== undefined) {
      this.stats.dedupHits++;
      return hit;
    }
    const index = this.chunks.length;
    if (index >= MAX_CHUNKS) throw new RangeError(`${this.opts.name}: more than 2^24 chunks in one blob`);
    const uOffset = this.nextUOffset;
    this.nextUOffset = Math.ceil((uOffset + data.length) / PAGE) * PAGE;
    if (this.nextUOffset > MAX_UNCOMPRESSED) throw new RangeError(`${this.opts.name}: uncompressed size exceeds 2^44 bytes`);
    this.chunks.push({ uOffset, uSize: data.length, cOffset: -1, cSize: -1, compressed: false });
    this.digests.push(digest);
    this.seen.set(key, index);
    this.stats.chunks++;
    // the caller reuses its buffer: compress a copy, into a frame no larger than the chunk
    if (this.open && (this.open.used + data.length > this.opts.chunkSize || this.open.lengths.length === MAX_BATCH)) await this.seal();
    const b = (this.open ??= { first: index, src: this.buffer(), dst: this.buffer(), lengths: [], used: 0, sizes: null, compressed: null });
    data.copy(b.src, b.used);
    b.used += data.length;
    b.lengths.push(data.length);
    if (b.used === this.opts.chunkSize) await this.seal();
    return index;
  }

  private buffer(): Buffer {
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(this.opts.chunkSize);
  }

  /** Starts compressing the open batch (none is open after it); waits while too many are under way. */
  private async seal(): Promise<void> {
    const b = this.open;
    this.open = null;
    if (b) {
      b.sizes = new Uint32Array(b.lengths.length);
      b.compressed = compressChunks(b.src, Uint32Array.from(b.lengths), b.dst, b.sizes, this.opts.level);
      // seen when its turn to be written comes; a failure before that must not count as unhandled
      b.compressed.catch(() => undefined);
      this.pending.push(b);
    }
    while (this.pending.length >= this.opts.inflight) await this.writeOldest();
  }

  /** Writes the oldest batch's chunks, keeping chunk order = file order = CI order. */
  private async writeOldest(): Promise<void> {
    const b = this.pending.shift()!;
    await b.compressed;
    let off = 0;
    for (let k = 0; k < b.lengths.length; k++) {
      const n = b.lengths[k];
      const zSize = b.sizes![k];
      const c = this.chunks[b.first + k];
      const raw = zSize === 0 || zSize >= n;
      const bytes = raw ? b.src.subarray(off, off + n) : b.dst.subarray(off, off + zSize);
      off += n;
      c.cOffset = this.out.position;
      c.cSize = bytes.length;
      c.compressed = !raw;
      if (raw) this.stats.rawChunks++;
      if (c.cOffset + c.cSize > MAX_COMPRESSED) throw new RangeError(`${this.opts.name}: compressed size exceeds 2^40 bytes`);
      await this.out.write(bytes);
    }
    // out.write has copied each chunk or written it by now: both buffers are free
    this.spare.push(b.src, b.dst);
  }

  /** Writes the metadata sections and closes the file. Returns null (and deletes the file) if no chunk was written. */
  async finish(): Promise<BlobResult | null> {
    this.finished = true;
    try {
      await this.seal();
      while (this.pending.length) await this.writeOldest();
      if (this.chunks.length === 0) {
        await this.out.abort();
        await fs.rm(this.path, { force: true });
        return null;
      }
      return await this.writeMeta();
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  async abort(): Promise<void> {
    this.finished = true;
    // let in-flight compressions settle so no promise rejects unobserved
    await Promise.allSettled(this.pending.map((b) => b.compressed));
    this.pending.length = 0;
    this.open = null;
    await this.out.abort();
    await fs.rm(this.path, { force: true });
  }

  private async writeMeta(): Promise<BlobResult> {
    const out = this.out;
    const n = this.chunks.length;
    const dataSize = out.position;
    const uncompressedSize = this.nextUOffset;

    // image.blob: the chunk data; nydus records its ToC offset as where it ends
    const dataHdr = makeTarHeader('image.blob', dataSize);
    await out.write(dataHdr);
    const dataDigest = out.sha.copy().digest();

    // blob.meta: the chunk info array (zstd unless that does not shrink it) + header
    const ci = encodeChunkInfosV2(this.chunks.map((c) => ({ ...c, flags: 0 })));
    let ciCompressor = Compressor.Zstd;
    let ciBytes = zstd.compress(ci);
    if (ciBytes.length >= ci.length) {
      ciCompressor = Compressor.None;
      ciBytes = ci;
    }
    const ciOffset = out.position;
    const ciHeader = encodeCiHeader({
      features: WRITER_BLOB_FEATURES,
      ciCompressor,
      entries: n,
      ciOffset,
      ciCompressedSize: ciBytes.length,
      ciUncompressedSize: ci.length,
    });
    await out.write(ciBytes);
    await out.write(ciHeader);
    await out.write(makeTarHeader('blob.meta', ciBytes.length + CI_HEADER_SIZE));

    // blob.digest: one 32-byte blake3 digest per chunk, in CI order
    const digests = Buffer.concat(this.digests);
    const digestOffset = out.position;
    await out.write(digests);
    await out.write(makeTarHeader('blob.digest', digests.length));

    const toc = Buffer.concat(
      [
        { compressor: Compressor.None, name: 'image.blob', sha256: dataDigest, compressedOffset: dataSize, compressedSize: dataSize, uncompressedSize },
        { compressor: ciCompressor, name: 'blob.meta', sha256: sha256(ci), compressedOffset: ciOffset, compressedSize: ciBytes.length, uncompressedSize: ci.length },
        { compressor: Compressor.None, name: 'blob.meta.header', sha256: sha256(ciHeader), compressedOffset: ciOffset + ciBytes.length, compressedSize: CI_HEADER_SIZE, uncompressedSize: CI_HEADER_SIZE },
        { compressor: Compressor.None, name: 'blob.digest', sha256: sha256(digests), compressedOffset: digestOffset, compressedSize: digests.length, uncompressedSize: digests.length },
      ].map(encodeTocEntry),
    );
    const tocHdr = makeTarHeader(TOC_NAME, toc.length);
    await out.write(toc);
    await out.write(tocHdr);
    const size = out.position;
    const id = out.sha.digest('hex');
    await out.close();

    const entry: BlobEntry = {
      blobId: id,
      blobIndex: -1,
      chunkSize: this.opts.chunkSize,
      chunkCount: n,
      compressor: Compressor.Zstd,
      digester: DigestAlgo.Blake3,
      features: WRITER_BLOB_FEATURES,
      compressedSize: size,
      uncompressedSize,
      tocSize: toc.length + TAR_BLOCK,
      ciCompressor,
      ciOffset,
      ciCompressedSize: ciBytes.length,
      ciUncompressedSize: n * CI_V2_SIZE,
      tocDigest: sha256(toc, tocHdr),
      metaDigest: Buffer.alloc(DIGEST_SIZE),
      metaSize: 0,
      cipherAlgo: 0,
    };
    return { id, path: this.path, entry, uOffsets: this.chunks.map((c) => c.uOffset), stats: { ...this.stats } };
  }
}

/**
 * Cuts files into chunks for a BlobWriter, one file at a time, through one
 * reusable chunk-sized buffer: a 10 GiB file costs one chunk of memory.
 */
export class FileChunker {
  private readonly buf: Buffer;
  private used = 0;
  private indexes: number[] = [];

  constructor(private readonly blob: BlobWriter, chunkSize: number) {
    this.buf = Buffer.allocUnsafe(chunkSize);
  }

  async write(piece: Buffer): Promise<void> {
    let off = 0;
    while (off < piece.length) {
      const k = Math.min(piece.length - off, this.buf.length - this.used);
      piece.copy(this.buf, this.used, off, off + k);
      this.used += k;
      off += k;
      if (this.used === this.buf.length) {
        this.indexes.push(await this.blob.put(this.buf));
        this.used = 0;
      }
    }
  }

  /** Ends the current file: its chunk info indexes (HOLE for zero chunks), one per chunk. */
  async end(): Promise<Int32Array> {
    if (this.used > 0) this.indexes.push(await this.blob.put(this.buf.subarray(0, this.used)));
    const out = Int32Array.from(this.indexes);
    this.used = 0;
    this.indexes = [];
    return out;
  }
}
