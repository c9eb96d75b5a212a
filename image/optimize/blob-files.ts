// A converted image's data blobs as EROFS devices: each nydus blob (chunks,
// compressed) unpacked into a file of its uncompressed address space, through
// the same content/ path a worker fills ranges with (decompress, verify).
import fs from 'node:fs';
import path from 'node:path';
import { Bootstrap } from '../rafs/bootstrap';
import { DataBlob } from '../blob/datablob';
import { FileSource } from '../blob/source';
import { NydusBlobContent } from '../../content/nydusblob';
import { clipToSize } from '../../content/content';
import { allocAligned, pwriteAll } from '../../native';

/** Uncompressed bytes written per fill: bounds the buffer, whatever the blob's size. */
const WINDOW = 16 << 20;

/** Writes <outDir>/<device tag> for every blob of the bootstrap, from the blobs in blobsDir (named by blob id); returns them in device order. */
export async function unpackBlobFiles(bootstrap: Buffer, blobsDir: string, outDir: string): Promise<string[]> {
  const bs = new Bootstrap(bootstrap);
  fs.mkdirSync(outDir, { recursive: true });
  const files: string[] = [];
  for (let i = 0; i < bs.blobs.length; i++) {
    const entry = bs.blobs[i];
    const file = path.join(outDir, bs.devices[i].tag);
    const src = await FileSource.open(path.join(blobsDir, entry.blobId), `blob ${entry.blobId}`);
    const content = new NydusBlobContent(await DataBlob.open(entry, src, bs.chunkTableDigests(i)));
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
    try {
      fs.ftruncateSync(fd, content.size);
      const sink = clipToSize(content.size, async (off, data) => void (await pwriteAll(fd, data, off)));
      for (let off = 0; off < content.size; off += WINDOW) await content.fill(off, Math.min(WINDOW, content.size - off), sink, allocAligned);
    } finally {
      fs.closeSync(fd);
      content.close();
    }
    files.push(file);
  }
  return files;
}
