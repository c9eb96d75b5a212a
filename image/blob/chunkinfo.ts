// Chunk info arrays (nydus storage/src/meta/chunk_info_v1.rs, chunk_info_v2.rs)
// and the BlobCompressionContextHeader that follows them. A chunk info says
// where a chunk sits in the blob's compressed and uncompressed address spaces.
import { Bytes, PAGE } from '../bytes';
import { FormatError } from '../errors';
import { BlobFeature, Compressor } from '../rafs/bootstrap';

export const CI_HEADER_SIZE = 4096;
export const CI_MAGIC = 0xb10bb10b;
export const CI_V1_SIZE = 16;
export const CI_V2_SIZE = 24;

/** chunk info v2 flags (high byte of uncomp_info) */
export const ChunkFlag = { COMPRESSED: 0x01, ZRAN: 0x02, BATCH: 0x04, ENCRYPTED: 0x08, HAS_CRC32: 0x10 } as const;

export interface ChunkInfo {
  /** position in the CI array: the index of its digest too */
  index: number;
  uOffset: number;
  uSize: number;
  cOffset: number;
  cSize: number;
  compressed: boolean;
  flags: number;
}

/** BlobCompressionContextHeader */
export interface CiHeader {
  magic: number;
  features: number;
  ciCompressor: Compressor;
  ciEntries: number;
  ciOffset: number;
  ciCompressedSize: number;
  ciUncompressedSize: number;
  zranOffset: number;
  zranSize: number;
  zranCount: number;
  magic2: number;
}

export function parseCiHeader(buf: Buffer, name: string): CiHeader {
  const b = new Bytes(buf, name);
  const at = (f: string) => `chunk info header.${f}`;
  const h: CiHeader = {
    magic: b.u32(0, at('magic')),
    features: b.u32(4, at('features')),
    ciCompressor: b.u32(8, at('ci_compressor')),
    ciEntries: b.u32(12, at('ci_entries')),
    ciOffset: b.u64(16, at('ci_offset')),
    ciCompressedSize: b.u64(24, at('ci_compressed_size')),
    ciUncompressedSize: b.u64(32, at('ci_uncompressed_size')),
    zranOffset: b.u64(40, at('zran_offset')),
    zranSize: b.u64(48, at('zran_size')),
    zranCount: b.u32(56, at('zran_count')),
    magic2: b.u32(CI_HEADER_SIZE - 4, at('magic2')),
  };
  if (h.magic !== CI_MAGIC || h.magic2 !== CI_MAGIC) {
    throw new FormatError(name, `chunk info header magics 0x${h.magic.toString(16)}/0x${h.magic2.toString(16)}, want 0x${CI_MAGIC.toString(16)}`);
  }
  if (!(h.ciCompressor in Compressor)) throw new FormatError(name, `${at('ci_compressor')} ${h.ciCompressor} unknown`);
  return h;
}

/** Decodes an uncompressed CI array. Entries must be sorted and non-overlapping in the uncompressed space. */
export function parseChunkInfos(buf: Buffer, features: number, count: number, name: string): ChunkInfo[] {
  const v2 = (features & BlobFeature.CHUNK_INFO_V2) !== 0;
  const size = v2 ? CI_V2_SIZE : CI_V1_SIZE;
  const b = new Bytes(buf, name);
  b.check(0, count * size, `chunk info array (${count} × ${size} bytes)`);
  const out: ChunkInfo[] = new Array(count);
  let prevEnd = 0;
  for (let i = 0; i < count; i++) {
    const u = b.big(i * size, `chunk info ${i}.uncomp_info`);
    const c = b.big(i * size + 8, `chunk info ${i}.comp_info`);
    let ci: ChunkInfo;
    if (v2) {
      const flags = Number(u >> 56n);
      ci = {
        index: i,
        uOffset: Number(u & 0xffffffffn) * PAGE,
        uSize: Number((u >> 32n) & 0xffffffn) + 1,
        cOffset: Number(c & 0xff_ffff_ffffn),
        cSize: Number(c >> 40n),
        compressed: (flags & ChunkFlag.COMPRESSED) !== 0,
        flags,
      };
      if (flags & (ChunkFlag.ZRAN | ChunkFlag.BATCH | ChunkFlag.ENCRYPTED)) {
        throw new FormatError(name, `chunk info ${i}: zran, batch and encrypted chunks are not supported (flags 0x${flags.toString(16)})`);
      }
    } else {
      const uSize = Number(((u >> 44n) & 0xfffffn) | (((u >> 8n) & 0xfn) << 20n)) + 1;
      const cSize = Number(((c >> 44n) & 0xfffffn) | (((c >> 40n) & 0xfn) << 20n)) + 1;
      ci = {
        index: i,
        uOffset: Number(u & 0xfff_ffff_f000n),
        uSize,
        cOffset: Number(c & 0xff_ffff_ffffn),
        cSize,
        compressed: cSize !== uSize,
        flags: 0,
      };
    }
    if (ci.uOffset < prevEnd) throw new FormatError(name, `chunk info ${i} at uncompressed ${ci.uOffset} overlaps or precedes chunk ${i - 1}`);
    prevEnd = ci.uOffset + ci.uSize;
    out[i] = ci;
  }
  return out;
}

/** Encodes chunk infos v2 (for the converter). */
export function encodeChunkInfosV2(chunks: Omit<ChunkInfo, 'index'>[]): Buffer {
  const out = Buffer.alloc(chunks.length * CI_V2_SIZE);
  chunks.forEach((ci, i) => {
    if (ci.uOffset % PAGE) throw new RangeError(`chunk ${i} uncompressed offset ${ci.uOffset} is not 4 KiB aligned`);
    const u = BigInt(ci.uOffset / PAGE) | (BigInt(ci.uSize - 1) << 32n) | (BigInt(ci.compressed ? ChunkFlag.COMPRESSED : 0) << 56n);
    const c = BigInt(ci.cOffset) | (BigInt(ci.cSize) << 40n);
    out.writeBigUInt64LE(u, i * CI_V2_SIZE);
    out.writeBigUInt64LE(c, i * CI_V2_SIZE + 8);
  });
  return out;
}

/**
 * The chunks that cover the uncompressed range [off, off+len): a binary
 * search for the first, then forward while they start before the end. A chunk
 * covers [uOffset, align4k(uOffset + uSize)).
 */
export function chunksCovering(chunks: ChunkInfo[], off: number, len: number): ChunkInfo[] {
  if (len <= 0 || chunks.length === 0) return [];
  const end = off + len;
  const covEnd = (c: ChunkInfo) => Math.ceil((c.uOffset + c.uSize) / PAGE) * PAGE;
  let lo = 0;
  let hi = chunks.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (covEnd(chunks[mid]) <= off) lo = mid + 1;
    else hi = mid;
  }
  const out: ChunkInfo[] = [];
  for (let i = lo; i < chunks.length && chunks[i].uOffset < end; i++) out.push(chunks[i]);
  return out;
}
