// Which file each chunk of a RAFS v6 image's blobs belongs to, from the
// bootstrap alone: a chunk-based inode's indexes name (device, block), and a
// nydus blob's uncompressed space is addressed in the bootstrap's blocks.
// Learned prefetch maps the kernel's READ ranges to chunks and files with it,
// and the prefetch table's inodes to the chunks to fetch.
import { NULL_ADDR } from '../erofs/image';
import { DataLayout } from '../erofs/inode';
import { isDir, isReg } from '../erofs/inode';
import type { Bootstrap } from './bootstrap';

/** One chunk of one file: [uOffset, uOffset+uSize) of blob `blobIndex`'s uncompressed space. */
export interface FileChunk {
  blobIndex: number;
  uOffset: number;
  uSize: number;
  /** the first path the tree walk reaches it by (hard links share chunks) */
  path: string;
}

export class FileChunks {
  /** per blob index, sorted by uOffset, one entry per distinct chunk */
  private readonly byBlob: FileChunk[][];
  /** file chunks of each regular file, in file order; directories: their paths, for prefix matching */
  private readonly byNid = new Map<number, FileChunk[]>();
  private readonly dirs = new Map<number, string>();

  constructor(bs: Bootstrap) {
    const img = bs.erofs;
    this.byBlob = bs.blobs.map(() => []);
    const seen = new Set<string>();
    for (const e of img.walk()) {
      if (e.hardlinkOf !== undefined) continue;
      if (isDir(e.inode)) this.dirs.set(e.inode.nid, e.path);
      if (!isReg(e.inode) || e.inode.layout !== DataLayout.ChunkBased || e.inode.size === 0) continue;
      const { chunkBits, chunks } = img.chunkMap(e.inode);
      const mine: FileChunk[] = [];
      chunks.forEach((c, i) => {
        if (c.deviceId === 0 || c.blkaddr === NULL_ADDR || c.deviceId > bs.blobs.length) return;
        const fc: FileChunk = {
          blobIndex: c.deviceId - 1,
          uOffset: c.blkaddr * img.blksz,
          uSize: Math.min(2 ** chunkBits, e.inode.size - i * 2 ** chunkBits),
          path: e.path,
        };
        mine.push(fc);
        // deduplicated chunks (same bytes in two files) are one chunk of the blob
        const k = `${fc.blobIndex}:${fc.uOffset}`;
        if (!seen.has(k)) {
          seen.add(k);
          this.byBlob[fc.blobIndex].push(fc);
        }
      });
      this.byNid.set(e.inode.nid, mine);
    }
    for (const list of this.byBlob) list.sort((a, b) => a.uOffset - b.uOffset);
  }

  /** The chunks of blob `blobIndex` that [off, off+len) touches, in blob order. */
  find(blobIndex: number, off: number, len: number): FileChunk[] {
    const list = this.byBlob[blobIndex];
    if (!list || len <= 0) return [];
    // the last chunk starting at or before off may reach into the range
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid].uOffset <= off) lo = mid + 1;
      else hi = mid;
    }
    const out: FileChunk[] = [];
    for (let i = Math.max(0, lo - 1); i < list.length && list[i].uOffset < off + len; i++) {
      const c = list[i];
      if (c.uOffset + c.uSize > off) out.push(c);
    }
    return out;
  }

  /**
   * The chunks an inode's data is in: a file's in file order; a directory's:
   * every file below it, in walk order (nydus's prefetch table may name
   * directories). Empty for anything else.
   */
  ofInode(nid: number): FileChunk[] {
    const own = this.byNid.get(nid);
    if (own) return own;
    const dir = this.dirs.get(nid);
    if (dir === undefined) return [];
    const prefix = dir === '/' ? '/' : `${dir}/`;
    const out: FileChunk[] = [];
    for (const list of this.byNid.values()) if (list.length && list[0].path.startsWith(prefix)) out.push(...list);
    return out;
  }

  /** The nid of the file at `path` (regular files with data only). */
  nidOf(path: string): number | undefined {
    for (const [nid, list] of this.byNid) if (list.length && list[0].path === path) return nid;
    return undefined;
  }
}
