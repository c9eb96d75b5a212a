// The reverse of the chunk indexes: which file, at which offset, owns block X
// of a blob. Built once per bootstrap (a walk of every chunk-based inode) as
// sorted extents per device, then answered by binary search. Access tracing
// and prefetch ordering build on it.
import { ErofsImage, NULL_ADDR } from '../erofs/image';
import { DataLayout, isReg } from '../erofs/inode';

export interface Extent {
  /** first block on the device */
  block: number;
  /** number of blocks */
  blocks: number;
  path: string;
  /** byte offset in the file of the extent's first block */
  fileOffset: number;
}

export interface BlockOwner {
  path: string;
  fileOffset: number;
}

export class BlockMap {
  private readonly byDevice = new Map<number, Extent[]>();

  constructor(img: ErofsImage) {
    const bs = img.blksz;
    for (const e of img.walk()) {
      if (e.hardlinkOf || !isReg(e.inode) || e.inode.layout !== DataLayout.ChunkBased) continue;
      const { chunkBits, chunks } = img.chunkMap(e.inode);
      const chunkBytes = 2 ** chunkBits;
      chunks.forEach((c, i) => {
        if (c.blkaddr === NULL_ADDR) return;
        const bytes = Math.min(chunkBytes, e.inode.size - i * chunkBytes);
        let list = this.byDevice.get(c.deviceId);
        if (!list) this.byDevice.set(c.deviceId, (list = []));
        list.push({ block: c.blkaddr, blocks: Math.ceil(bytes / bs), path: e.path, fileOffset: i * chunkBytes });
      });
    }
    for (const list of this.byDevice.values()) list.sort((a, b) => a.block - b.block);
    this.blksz = bs;
  }

  private readonly blksz: number;

  /** The file and offset holding block `block` of device `deviceId`, if any. */
  owner(deviceId: number, block: number): BlockOwner | undefined {
    const list = this.byDevice.get(deviceId);
    if (!list) return undefined;
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const e = list[mid];
      if (block < e.block) hi = mid - 1;
      else if (block >= e.block + e.blocks) lo = mid + 1;
      else return { path: e.path, fileOffset: e.fileOffset + (block - e.block) * this.blksz };
    }
    return undefined;
  }

  extents(deviceId: number): readonly Extent[] {
    return this.byDevice.get(deviceId) ?? [];
  }
}
