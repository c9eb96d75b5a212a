// The upstream nydus fixtures in ../shared/fixtures/nydus. CI always has them;
// a missing folder is an error, not a skip.
import fs from 'node:fs';
import path from 'node:path';
import { sharedDir } from './shared';

export const FIXTURE_BLOB_ID = 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef';
export const TOC_BLOB_ID = '2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca';

export function nydusFixtures() {
  const dir = path.join(sharedDir(), 'fixtures', 'nydus');
  return {
    dir,
    bootstrapPath: path.join(dir, 'bootstrap', 'rafs-v6-2.2.boot'),
    blobsDir: path.join(dir, 'blobs'),
    bootstrap: () => fs.readFileSync(path.join(dir, 'bootstrap', 'rafs-v6-2.2.boot')),
    blob: () => fs.readFileSync(path.join(dir, 'blobs', FIXTURE_BLOB_ID)),
    tocBlob: () => fs.readFileSync(path.join(dir, 'toc', TOC_BLOB_ID)),
    tocZstd: () => fs.readFileSync(path.join(dir, 'zstd', `${TOC_BLOB_ID}.zst`)),
  };
}

/**
 * A buffer cut into pieces as a socket delivers a response body (reads of up
 * to 64 KiB, here of uneven sizes so that chunk and piece boundaries fall
 * anywhere): what RangeReader.readRange resolves with.
 */
export function asParts(buf: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  const sizes = [65536, 16384, 1, 40000, 4096, 65535, 333];
  for (let at = 0, k = 0; at < buf.length; k++) {
    const n = Math.min(sizes[k % sizes.length], buf.length - at);
    parts.push(buf.subarray(at, at + n));
    at += n;
  }
  return parts;
}

/** One buffer cut in several ways: socket-sized pieces, tiny ones, a cut after the first byte with empty pieces among them. */
export function cutsOf(buf: Buffer): Array<[string, Buffer[]]> {
  const tiny: Buffer[] = [];
  for (let at = 0; at < buf.length; at += 997) tiny.push(buf.subarray(at, at + 997));
  return [
    ['socket reads', asParts(buf)],
    ['997-byte pieces', tiny],
    ['1 + rest, empty pieces between', [Buffer.alloc(0), buf.subarray(0, 1), Buffer.alloc(0), buf.subarray(1), Buffer.alloc(0)]],
  ];
}

/** A BlobSource over a buffer. */
export function memorySource(buf: Buffer, name = 'memory') {
  return {
    name,
    size: buf.length,
    read: async (off: number, len: number) => {
      if (off < 0 || len < 0 || off + len > buf.length) throw new Error(`read [${off}, +${len}) out of ${buf.length}`);
      // allocUnsafe + copy is a memcpy; Buffer.from(a Buffer view) took a slow path (about 0.9 GB/s in a profile)
      const out = Buffer.allocUnsafe(len);
      buf.copy(out, 0, off, off + len);
      return out;
    },
    close: async () => {},
  };
}
