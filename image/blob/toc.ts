// The blob's table of contents (nydus storage/src/meta/toc.rs): 128-byte
// entries followed by a tar header named "rafs.blob.toc", at the blob's tail.
import crypto from 'node:crypto';
import { Bytes } from '../bytes';
import { FormatError } from '../errors';
import { Compressor } from '../rafs/bootstrap';
import { TAR_BLOCK, parseTarHeader } from './tar';

export const TOC_ENTRY_SIZE = 128;
export const TOC_NAME = 'rafs.blob.toc';

/** TocEntry.flags → compressor */
const TOC_COMPRESSION: Record<number, Compressor> = { 1: Compressor.None, 2: Compressor.Zstd, 4: Compressor.Lz4Block };
export const TOC_FLAG_OF: Record<number, number> = { [Compressor.None]: 1, [Compressor.Zstd]: 2, [Compressor.Lz4Block]: 4 };

export interface TocEntry {
  flags: number;
  compressor: Compressor;
  name: string;
  /** sha256 of the uncompressed section */
  uncompressedDigest: Buffer;
  compressedOffset: number;
  compressedSize: number;
  uncompressedSize: number;
}

export interface Toc {
  entries: TocEntry[];
  /** where the ToC (entries + tar header) starts in the blob */
  offset: number;
  /** entries + header */
  size: number;
  /** sha256 of entries + header: RafsV6Blob.blob_toc_digest */
  digest: Buffer;
}

/** Parses a ToC from the tail of a blob: `tail` is its last bytes, ending at blobSize. */
export function parseToc(tail: Buffer, blobSize: number, name: string): Toc {
  const b = new Bytes(tail, name);
  const hdr = parseTarHeader(b, tail.length - TAR_BLOCK, 'ToC tar header');
  if (hdr.name !== TOC_NAME) throw new FormatError(name, `last tar header names "${hdr.name}", not "${TOC_NAME}"`);
  if (hdr.size % TOC_ENTRY_SIZE !== 0) throw new FormatError(name, `ToC size ${hdr.size} is not a multiple of ${TOC_ENTRY_SIZE}`);
  const start = tail.length - TAR_BLOCK - hdr.size;
  b.check(start, hdr.size, 'ToC entries');
  const entries: TocEntry[] = [];
  for (let i = 0; i < hdr.size / TOC_ENTRY_SIZE; i++) {
    const o = start + i * TOC_ENTRY_SIZE;
    const at = (f: string) => `ToC entry ${i}.${f}`;
    const flags = b.u32(o, at('flags'));
    const compressor = TOC_COMPRESSION[flags];
    if (compressor === undefined) throw new FormatError(name, `${at('flags')} 0x${flags.toString(16)} unknown`);
    const e: TocEntry = {
      flags,
      compressor,
      name: b.cstr(o + 8, 16, at('name')),
      uncompressedDigest: Buffer.from(b.slice(o + 24, 32, at('uncompressed_digest'))),
      compressedOffset: b.u64(o + 56, at('compressed_offset')),
      compressedSize: b.u64(o + 64, at('compressed_size')),
      uncompressedSize: b.u64(o + 72, at('uncompressed_size')),
    };
    // nydus-image records the chunk data section ("image.blob") with the offset
    // where it ends, not where it starts (it always starts at 0): check its size only.
    const first = e.name === 'image.blob' ? 0 : e.compressedOffset;
    if (first + e.compressedSize > blobSize) {
      throw new FormatError(name, `ToC entry "${e.name}" [${e.compressedOffset}, +${e.compressedSize}) beyond the blob's ${blobSize} bytes`);
    }
    entries.push(e);
  }
  const size = hdr.size + TAR_BLOCK;
  return {
    entries,
    offset: blobSize - size,
    size,
    digest: crypto.createHash('sha256').update(tail.subarray(start)).digest(),
  };
}
