// A nydus RAFS v6 bootstrap: the EROFS image from writer.ts plus what nydus
// adds (formats.md §2.1): the RAFS extended superblock at 1152, one device
// slot per blob (tag = blob id) and the blob table (RafsV6Blob entries).
import { BLOB_ENTRY_SIZE, BlobEntry, RAFS_EXT_SB_OFFSET, RafsExtSuperblock, RafsFlags } from './bootstrap';
import { PAGE } from '../bytes';
import { NULL_ADDR } from '../erofs/image';
import { COMPAT_RAFS_V6, updateSuperblockChecksum } from '../erofs/superblock';
import { BLOCK, WriterNode, writeErofs } from '../erofs/writer';

/** nydus puts its device table right after the RAFS superblock: 1408 / 128. */
export const RAFS_DEVT_SLOTOFF = 11;

/** Encodes one 8-byte chunk index the way nydus does (formats.md §2.3). */
export function encodeChunkIndex(out: Buffer, off: number, blobIndex: number, ciIndex: number, blkaddr: number): void {
  // c_blob_addr_lo = ci_index bits 0-15; c_blob_addr_hi = device id (blob_index + 1) | ci bits 16-23 << 8.
  // The kernel masks the device id and ignores the ci bits (formats.md §2.3).
  out.writeUInt16LE(ciIndex & 0xffff, off);
  out.writeUInt16LE(((blobIndex + 1) & 0xff) | (((ciIndex >>> 16) & 0xff) << 8), off + 2);
  out.writeUInt32LE(blkaddr >>> 0, off + 4);
}

/** A chunk with no data (all zeros): EROFS reads it as a hole. */
export function encodeHoleIndex(out: Buffer, off: number): void {
  out.writeUInt16LE(0, off);
  out.writeUInt16LE(0, off + 2);
  out.writeUInt32LE(NULL_ADDR, off + 4);
}

/** RafsV6SuperBlockExt at 1152 (256 bytes; the rest is reserved). */
export function encodeRafsExtSuperblock(img: Buffer, e: RafsExtSuperblock): void {
  const o = RAFS_EXT_SB_OFFSET;
  img.writeBigUInt64LE(BigInt(e.flags), o);
  img.writeBigUInt64LE(BigInt(e.blobTableOffset), o + 8);
  img.writeUInt32LE(e.blobTableSize, o + 16);
  img.writeUInt32LE(e.chunkSize, o + 20);
  img.writeBigUInt64LE(BigInt(e.chunkTableOffset), o + 24);
  img.writeBigUInt64LE(BigInt(e.chunkTableSize), o + 32);
  img.writeBigUInt64LE(BigInt(e.prefetchTableOffset), o + 40);
  img.writeUInt32LE(e.prefetchTableSize, o + 48);
}

/** RafsV6Blob (256 bytes), one per blob in the blob table. */
export function encodeBlobEntry(e: BlobEntry): Buffer {
  const b = Buffer.alloc(BLOB_ENTRY_SIZE);
  if (!/^[0-9a-f]{64}$/.test(e.blobId)) throw new RangeError(`blob id "${e.blobId}" is not 64 hex characters`);
  b.write(e.blobId, 0, 64, 'latin1');
  b.writeUInt32LE(e.blobIndex, 64);
  b.writeUInt32LE(e.chunkSize, 68);
  b.writeUInt32LE(e.chunkCount, 72);
  b.writeUInt32LE(e.compressor, 76);
  b.writeUInt32LE(e.digester, 80);
  b.writeUInt32LE(e.features >>> 0, 84);
  b.writeBigUInt64LE(BigInt(e.compressedSize), 88);
  b.writeBigUInt64LE(BigInt(e.uncompressedSize), 96);
  b.writeUInt32LE(e.tocSize, 104);
  b.writeUInt32LE(e.ciCompressor, 108);
  b.writeBigUInt64LE(BigInt(e.ciOffset), 112);
  b.writeBigUInt64LE(BigInt(e.ciCompressedSize), 120);
  b.writeBigUInt64LE(BigInt(e.ciUncompressedSize), 128);
  e.tocDigest.copy(b, 136);
  e.metaDigest.copy(b, 168);
  b.writeBigUInt64LE(BigInt(e.metaSize), 200);
  // cipher_iv zero
  b.writeUInt32LE(e.cipherAlgo, 216);
  return b;
}

export interface RafsBootstrapOptions {
  chunkSize: number;
  /** in device order: blob i is EROFS device i + 1 */
  blobs: BlobEntry[];
  chunkIndexes(node: WriterNode, path: string): Buffer;
  /** files (or directories: everything below) to fetch first, in order: the prefetch table, as nids */
  prefetch?: WriterNode[];
  buildTime?: number;
  buildTimeNsec?: number;
  uuid?: Buffer;
}

function hasXattrs(root: WriterNode): boolean {
  const stack = [root];
  const seen = new Set<WriterNode>();
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    if (n.xattrs.size) return true;
    if (n.children) for (const c of n.children.values()) stack.push(c);
  }
  return false;
}

export function writeRafsBootstrap(root: WriterNode, opts: RafsBootstrapOptions): Buffer {
  const cs = opts.chunkSize;
  if (cs < PAGE || (cs & (cs - 1)) !== 0) throw new RangeError(`chunk size ${cs} is not a power of two ≥ 4 KiB`);
  if (opts.blobs.length > 254) throw new RangeError(`${opts.blobs.length} blobs: nydus allows blob_index < 255`);
  opts.blobs.forEach((b, i) => {
    if (b.blobIndex !== i) throw new RangeError(`blob ${b.blobId} has index ${b.blobIndex}, expected ${i}`);
    if (b.uncompressedSize % PAGE || b.uncompressedSize === 0) throw new RangeError(`blob ${b.blobId}: uncompressed size ${b.uncompressedSize} is not a non-zero multiple of 4 KiB`);
  });
  const tableSize = opts.blobs.length * BLOB_ENTRY_SIZE;
  const prefetch = opts.prefetch ?? [];
  const layout = writeErofs(root, {
    chunkBits: Math.log2(cs),
    chunkIndexes: opts.chunkIndexes,
    devices: opts.blobs.map((b) => ({ tag: b.blobId, blocks: b.uncompressedSize / PAGE, mappedBlkaddr: 0 })),
    devtSlotoff: RAFS_DEVT_SLOTOFF,
    // the blob table has at least one block, as nydus's
    // then the prefetch table, after the blob table in the same area
    reserved: Math.max(tableSize + prefetch.length * 4, BLOCK),
    featureCompat: COMPAT_RAFS_V6,
    buildTime: opts.buildTime ?? 0,
    buildTimeNsec: opts.buildTimeNsec ?? 0,
    uuid: opts.uuid ?? Buffer.alloc(16),
  });
  const img = layout.image;
  let flags = RafsFlags.COMPRESSION_ZSTD | RafsFlags.HASH_BLAKE3 | RafsFlags.EXPLICIT_UID_GID | RafsFlags.INLINED_CHUNK_DIGEST;
  if (hasXattrs(root)) flags |= RafsFlags.HAS_XATTR;
  // no chunk table (chunk digests live in the blobs)
  const prefetchOffset = layout.reservedOffset + tableSize;
  prefetch.forEach((n, i) => {
    const nid = layout.nids.get(n);
    if (nid === undefined) throw new RangeError('a prefetch table entry is not a node of the tree');
    img.writeUInt32LE(nid, prefetchOffset + i * 4);
  });
  encodeRafsExtSuperblock(img, {
    flags,
    blobTableOffset: layout.reservedOffset,
    blobTableSize: tableSize,
    chunkSize: cs,
    chunkTableOffset: 0,
    chunkTableSize: 0,
    prefetchTableOffset: prefetch.length ? prefetchOffset : 0,
    prefetchTableSize: prefetch.length * 4,
  });
  opts.blobs.forEach((b, i) => encodeBlobEntry(b).copy(img, layout.reservedOffset + i * BLOB_ENTRY_SIZE));
  updateSuperblockChecksum(img);
  return img;
}
