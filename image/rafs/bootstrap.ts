// A nydus RAFS v6 bootstrap: an EROFS image plus the RAFS extended superblock
// (at 1152), the device table (one slot per blob, tag = blob id) and the blob
// table (RafsV6Blob entries). Layouts: nydus rafs/src/metadata/layout/v6.rs.
import { Bytes } from '../bytes';
import { FormatError } from '../errors';
import { ErofsImage } from '../erofs/image';
import { COMPAT_RAFS_V6, INCOMPAT_DEVICE_TABLE, parseSuperblock, type ErofsSuperblock } from '../erofs/superblock';

export const RAFS_EXT_SB_OFFSET = 1152;
export const DEVICE_SLOT_SIZE = 128;
export const BLOB_ENTRY_SIZE = 256;
export const CHUNK_TABLE_ENTRY_SIZE = 80;

export enum Compressor {
  None = 0,
  Lz4Block = 1,
  Gzip = 2,
  Zstd = 3,
}
export enum DigestAlgo {
  Blake3 = 0,
  Sha256 = 1,
}

/** s_flags of the RAFS extended superblock */
export const RafsFlags = {
  COMPRESSION_NONE: 0x1,
  COMPRESSION_LZ4: 0x2,
  HASH_BLAKE3: 0x4,
  HASH_SHA256: 0x8,
  EXPLICIT_UID_GID: 0x10,
  HAS_XATTR: 0x20,
  COMPRESSION_GZIP: 0x40,
  COMPRESSION_ZSTD: 0x80,
  INLINED_CHUNK_DIGEST: 0x100,
  TARFS_MODE: 0x200,
} as const;

/** Blob features (RafsV6Blob.features, BlobCompressionContextHeader.features) */
export const BlobFeature = {
  ALIGNED: 0x1,
  INLINED_FS_META: 0x2,
  CHUNK_INFO_V2: 0x4,
  ZRAN: 0x8,
  SEPARATE: 0x10,
  INLINED_CHUNK_DIGEST: 0x20,
  TARFS: 0x40,
  BATCH: 0x80,
  ENCRYPTED: 0x100,
  HAS_TAR_HEADER: 0x1000_0000,
  HAS_TOC: 0x2000_0000,
  CAP_TAR_TOC: 0x4000_0000,
} as const;

export interface RafsExtSuperblock {
  flags: number;
  blobTableOffset: number;
  blobTableSize: number;
  chunkSize: number;
  chunkTableOffset: number;
  chunkTableSize: number;
  prefetchTableOffset: number;
  prefetchTableSize: number;
}

/** erofs_deviceslot / RafsV6Device */
export interface DeviceSlot {
  tag: string;
  blocks: number;
  mappedBlkaddr: number;
}

/** RafsV6Blob */
export interface BlobEntry {
  blobId: string;
  blobIndex: number;
  chunkSize: number;
  chunkCount: number;
  compressor: Compressor;
  digester: DigestAlgo;
  features: number;
  compressedSize: number;
  uncompressedSize: number;
  tocSize: number;
  ciCompressor: Compressor;
  ciOffset: number;
  ciCompressedSize: number;
  ciUncompressedSize: number;
  tocDigest: Buffer;
  metaDigest: Buffer;
  metaSize: number;
  cipherAlgo: number;
}

/** RafsV5ChunkInfo: the optional chunk table of a v6 bootstrap, one entry per chunk */
export interface ChunkTableEntry {
  digest: Buffer;
  blobIndex: number;
  flags: number;
  compressedSize: number;
  uncompressedSize: number;
  compressedOffset: number;
  uncompressedOffset: number;
  fileOffset: number;
  /** index in the blob's chunk info array */
  index: number;
}

export class Bootstrap {
  readonly erofs: ErofsImage;
  readonly ext: RafsExtSuperblock;
  readonly devices: DeviceSlot[];
  readonly blobs: BlobEntry[];
  /** inode numbers to prefetch first */
  readonly prefetch: number[];

  constructor(buf: Buffer, name = 'bootstrap') {
    this.erofs = new ErofsImage(buf, name);
    const b = this.erofs.bytes;
    const sb = this.erofs.sb;
    if (!(sb.featureCompat & COMPAT_RAFS_V6)) throw new FormatError(name, 'not a RAFS v6 bootstrap (feature_compat lacks RAFS_V6)');
    this.ext = parseExt(b);
    this.devices = devicesOf(b, sb);
    this.blobs = parseBlobTable(b, this.ext);
    this.prefetch = parsePrefetch(b, this.ext);
    if (this.devices.length !== this.blobs.length) {
      throw new FormatError(name, `${this.devices.length} device slots but ${this.blobs.length} blob table entries`);
    }
    this.blobs.forEach((blob, i) => {
      if (blob.blobIndex !== i) throw new FormatError(name, `blob table entry ${i} has blob_index ${blob.blobIndex}`);
    });
  }

  /** The chunk table, if the bootstrap has one (nydus writes it; it carries chunk digests). */
  chunkTable(): ChunkTableEntry[] {
    const b = this.erofs.bytes;
    const { chunkTableOffset: off, chunkTableSize: size } = this.ext;
    if (size === 0) return [];
    if (size % CHUNK_TABLE_ENTRY_SIZE) throw new FormatError(b.name, `chunk table size ${size} is not a multiple of ${CHUNK_TABLE_ENTRY_SIZE}`);
    b.check(off, size, 'chunk table');
    const out: ChunkTableEntry[] = [];
    for (let i = 0; i < size / CHUNK_TABLE_ENTRY_SIZE; i++) {
      const o = off + i * CHUNK_TABLE_ENTRY_SIZE;
      const at = (f: string) => `chunk table entry ${i}.${f}`;
      out.push({
        digest: Buffer.from(b.slice(o, 32, at('block_id'))),
        blobIndex: b.u32(o + 32, at('blob_index')),
        flags: b.u32(o + 36, at('flags')),
        compressedSize: b.u32(o + 40, at('compressed_size')),
        uncompressedSize: b.u32(o + 44, at('uncompressed_size')),
        compressedOffset: b.u64(o + 48, at('compressed_offset')),
        uncompressedOffset: b.u64(o + 56, at('uncompressed_offset')),
        fileOffset: b.u64(o + 64, at('file_offset')),
        index: b.u32(o + 72, at('index')),
      });
    }
    return out;
  }

  /** Chunk digests of one blob from the chunk table, by chunk info index; null if incomplete. */
  chunkTableDigests(blobIndex: number): Buffer[] | null {
    const blob = this.blobs[blobIndex];
    const out: Buffer[] = new Array(blob.chunkCount);
    for (const e of this.chunkTable()) {
      if (e.blobIndex !== blobIndex) continue;
      if (e.index >= blob.chunkCount) throw new FormatError(this.erofs.bytes.name, `chunk table names chunk ${e.index} of blob ${blobIndex}, which has ${blob.chunkCount}`);
      out[e.index] = e.digest;
    }
    for (let i = 0; i < out.length; i++) if (!out[i]) return null;
    return out;
  }

  /** The blob behind an EROFS device id (1-based; 0 is the bootstrap itself). */
  blobForDevice(deviceId: number): BlobEntry {
    const blob = this.blobs[deviceId - 1];
    if (!blob) throw new FormatError(this.erofs.bytes.name, `device id ${deviceId} has no blob (${this.blobs.length} blobs)`);
    return blob;
  }
}

function parseExt(b: Bytes): RafsExtSuperblock {
  const o = RAFS_EXT_SB_OFFSET;
  const at = (f: string) => `rafs superblock.${f}`;
  return {
    flags: b.u64(o, at('s_flags')),
    blobTableOffset: b.u64(o + 8, at('blob_table_offset')),
    blobTableSize: b.u32(o + 16, at('blob_table_size')),
    chunkSize: b.u32(o + 20, at('chunk_size')),
    chunkTableOffset: b.u64(o + 24, at('chunk_table_offset')),
    chunkTableSize: b.u64(o + 32, at('chunk_table_size')),
    prefetchTableOffset: b.u64(o + 40, at('prefetch_table_offset')),
    prefetchTableSize: b.u32(o + 48, at('prefetch_table_size')),
  };
}

/** How many bytes from the start of an EROFS image deviceTags needs: the superblock's block and the device table. */
export function deviceTableEnd(head: Bytes): number {
  const sb = parseSuperblock(head);
  const table = sb.featureIncompat & INCOMPAT_DEVICE_TABLE ? (sb.devtSlotoff + sb.extraDevices) * DEVICE_SLOT_SIZE : 0;
  return Math.max(1 << sb.blkszbits, table);
}

/**
 * The device tags of an EROFS image (RAFS or not): the blobs its mount asks
 * fscache for. Needs only the image's first deviceTableEnd() bytes, so a
 * caller never reads a whole (possibly large, plain EROFS) image for it.
 */
export function deviceTags(head: Bytes): string[] {
  return devicesOf(head, parseSuperblock(head)).map((d) => d.tag);
}

/** The device table and the block size its `blocks` count in, from the same head as deviceTags(). */
export function deviceSlots(head: Bytes): { slots: DeviceSlot[]; blockSize: number } {
  const sb = parseSuperblock(head);
  return { slots: devicesOf(head, sb), blockSize: 1 << sb.blkszbits };
}

/** The device table, if the image has one. */
function devicesOf(b: Bytes, sb: ErofsSuperblock): DeviceSlot[] {
  return sb.featureIncompat & INCOMPAT_DEVICE_TABLE ? parseDevices(b, sb.devtSlotoff, sb.extraDevices) : [];
}

function parseDevices(b: Bytes, slotoff: number, count: number): DeviceSlot[] {
  const out: DeviceSlot[] = [];
  for (let i = 0; i < count; i++) {
    const o = slotoff * DEVICE_SLOT_SIZE + i * DEVICE_SLOT_SIZE;
    const at = (f: string) => `device slot ${i}.${f}`;
    out.push({ tag: b.cstr(o, 64, at('tag')), blocks: b.u32(o + 64, at('blocks')), mappedBlkaddr: b.u32(o + 68, at('mapped_blkaddr')) });
  }
  return out;
}


function parseBlobTable(b: Bytes, ext: RafsExtSuperblock): BlobEntry[] {
  if (ext.blobTableSize % BLOB_ENTRY_SIZE !== 0) {
    throw new FormatError(b.name, `blob table size ${ext.blobTableSize} is not a multiple of ${BLOB_ENTRY_SIZE}`);
  }
  b.check(ext.blobTableOffset, ext.blobTableSize, 'blob table');
  const out: BlobEntry[] = [];
  for (let i = 0; i < ext.blobTableSize / BLOB_ENTRY_SIZE; i++) {
    const o = ext.blobTableOffset + i * BLOB_ENTRY_SIZE;
    const at = (f: string) => `blob table entry ${i}.${f}`;
    const e: BlobEntry = {
      blobId: b.cstr(o, 64, at('blob_id')),
      blobIndex: b.u32(o + 64, at('blob_index')),
      chunkSize: b.u32(o + 68, at('chunk_size')),
      chunkCount: b.u32(o + 72, at('chunk_count')),
      compressor: b.u32(o + 76, at('compression_algo')),
      digester: b.u32(o + 80, at('digest_algo')),
      features: b.u32(o + 84, at('features')),
      compressedSize: b.u64(o + 88, at('compressed_size')),
      uncompressedSize: b.u64(o + 96, at('uncompressed_size')),
      tocSize: b.u32(o + 104, at('blob_toc_size')),
      ciCompressor: b.u32(o + 108, at('ci_compressor')),
      ciOffset: b.u64(o + 112, at('ci_offset')),
      ciCompressedSize: b.u64(o + 120, at('ci_compressed_size')),
      ciUncompressedSize: b.u64(o + 128, at('ci_uncompressed_size')),
      tocDigest: Buffer.from(b.slice(o + 136, 32, at('blob_toc_digest'))),
      metaDigest: Buffer.from(b.slice(o + 168, 32, at('blob_meta_digest'))),
      metaSize: b.u64(o + 200, at('blob_meta_size')),
      cipherAlgo: b.u32(o + 216, at('cipher_algo')),
    };
    if (!/^[0-9a-f]{64}$/.test(e.blobId)) throw new FormatError(b.name, `${at('blob_id')} "${e.blobId}" is not 64 hex characters`);
    if (!(e.compressor in Compressor)) throw new FormatError(b.name, `${at('compression_algo')} ${e.compressor} unknown`);
    if (!(e.ciCompressor in Compressor)) throw new FormatError(b.name, `${at('ci_compressor')} ${e.ciCompressor} unknown`);
    if (!(e.digester in DigestAlgo)) throw new FormatError(b.name, `${at('digest_algo')} ${e.digester} unknown`);
    if (e.chunkCount > 1 << 24) throw new FormatError(b.name, `${at('chunk_count')} ${e.chunkCount} exceeds 2^24`);
    out.push(e);
  }
  return out;
}

function parsePrefetch(b: Bytes, ext: RafsExtSuperblock): number[] {
  if (ext.prefetchTableSize === 0) return [];
  if (ext.prefetchTableSize % 4) throw new FormatError(b.name, `prefetch table size ${ext.prefetchTableSize} is not a multiple of 4`);
  b.check(ext.prefetchTableOffset, ext.prefetchTableSize, 'prefetch table');
  const out: number[] = [];
  for (let i = 0; i < ext.prefetchTableSize / 4; i++) out.push(b.u32(ext.prefetchTableOffset + i * 4, `prefetch table[${i}]`));
  return out;
}

