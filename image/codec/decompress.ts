// Chunk (de)compression for the algorithms nydus writes: none, lz4_block (a
// raw LZ4 block), gzip and zstd. Decompression checks the exact output size:
// a chunk that inflates to anything else is corrupt.
import zlib from 'node:zlib';
import * as zstd from 'zstd-napi';
import { DCtx } from 'zstd-napi/binding';
import * as lz4 from 'lz4-napi';
import { FormatError } from '../errors';
import { Compressor } from '../rafs/bootstrap';

let dctx: DCtx | undefined;

/**
 * Decompresses src, which must inflate to exactly usize bytes, into dst (or a
 * new buffer). dst lets callers fill an aligned buffer for direct I/O.
 */
export function decompress(algo: Compressor, src: Buffer, usize: number, what: string, dst?: Buffer): Buffer {
  const out = dst ? dst.subarray(0, usize) : Buffer.allocUnsafe(usize);
  if (out.length !== usize) throw new RangeError(`output buffer of ${dst!.length} bytes is smaller than ${usize}`);
  let n: number;
  try {
    switch (algo) {
      case Compressor.None:
        n = src.copy(out);
        if (src.length !== usize) n = -1;
        break;
      case Compressor.Zstd:
        n = (dctx ??= new DCtx()).decompress(out, src);
        break;
      case Compressor.Lz4Block: {
        // lz4-napi speaks lz4_flex's size-prepended block: a u32 LE length, then the raw block.
        const framed = Buffer.allocUnsafe(4 + src.length);
        framed.writeUInt32LE(usize, 0);
        src.copy(framed, 4);
        const r = lz4.uncompressSync(framed);
        n = r.length === usize ? r.copy(out) : -1;
        break;
      }
      case Compressor.Gzip: {
        const r = zlib.gunzipSync(src, { maxOutputLength: usize + 1 });
        n = r.length === usize ? r.copy(out) : -1;
        break;
      }
      default:
        throw new FormatError(what, `unknown compressor ${algo}`);
    }
  } catch (e) {
    if (e instanceof FormatError) throw e;
    throw new FormatError(what, `${Compressor[algo] ?? algo} data does not decompress: ${(e as Error).message}`);
  }
  if (n !== usize) throw new FormatError(what, `${Compressor[algo]} data decompresses to the wrong size (want ${usize})`);
  return out;
}

/** Compression, for the converter and tests. lz4 yields a raw block, as nydus stores it. */
export function compress(algo: Compressor, src: Buffer, level = 3): Buffer {
  switch (algo) {
    case Compressor.None:
      return Buffer.from(src);
    case Compressor.Zstd:
      return zstd.compress(src, { compressionLevel: level });
    case Compressor.Lz4Block:
      return lz4.compressSync(src).subarray(4);
    case Compressor.Gzip:
      return zlib.gzipSync(src);
  }
}
