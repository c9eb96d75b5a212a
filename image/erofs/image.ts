// Read-only view of an EROFS metadata image held in memory: inodes,
// directories, symlinks, xattrs and chunk indexes. Every offset taken from the
// image is checked, so a corrupt image yields a FormatError naming the inode.
import { Bytes } from '../bytes';
import { FormatError } from '../errors';
import { DataLayout, INODE_SLOT, Inode, isDir, isLnk, isReg, parseInode } from './inode';
import { ErofsSuperblock, parseSuperblock } from './superblock';
import { Xattr, readXattrs } from './xattr';

export const NULL_ADDR = 0xffffffff;
const CHUNK_FORMAT_INDEXES = 0x20;
const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
const DIRENT_SIZE = 12;
const MAX_DEPTH = 4096;

export enum FileType {
  Unknown = 0,
  Reg = 1,
  Dir = 2,
  Chr = 3,
  Blk = 4,
  Fifo = 5,
  Sock = 6,
  Symlink = 7,
}

export interface Dirent {
  name: Buffer;
  nid: number;
  fileType: FileType;
}

/** One chunk of a chunk-based file: where its blocks live. */
export interface ChunkIndex {
  /** 0 = this image, n = extra device n (nydus: blob_index + 1) */
  deviceId: number;
  /** block address on that device, or NULL_ADDR for a hole */
  blkaddr: number;
}

export interface ChunkMap {
  chunkBits: number;
  chunks: ChunkIndex[];
}

export interface WalkEntry {
  path: string;
  inode: Inode;
  /** path of the first entry with the same inode, if this is a hard link to it */
  hardlinkOf?: string;
}

export class ErofsImage {
  readonly sb: ErofsSuperblock;
  readonly blksz: number;
  readonly deviceIdMask: number;
  private readonly b: Bytes;
  private readonly inodes = new Map<number, Inode>();

  constructor(buf: Buffer, name = 'bootstrap') {
    this.b = new Bytes(buf, name);
    this.sb = parseSuperblock(this.b);
    this.blksz = 1 << this.sb.blkszbits;
    let pow = 1;
    while (pow < this.sb.extraDevices + 1) pow <<= 1;
    this.deviceIdMask = pow - 1;
  }

  get bytes(): Bytes {
    return this.b;
  }

  get metaBase(): number {
    return this.sb.metaBlkaddr * this.blksz;
  }

  inode(nid: number): Inode {
    let ino = this.inodes.get(nid);
    if (!ino) {
      if (!Number.isSafeInteger(nid) || nid < 0) throw new FormatError(this.b.name, `bad nid ${nid}`);
      ino = parseInode(this.b, this.metaBase + nid * INODE_SLOT, nid, this.sb.buildTime, this.sb.buildTimeNsec);
      this.inodes.set(nid, ino);
    }
    return ino;
  }

  root(): Inode {
    return this.inode(this.sb.rootNid);
  }

  xattrs(ino: Inode): Xattr[] {
    return readXattrs(this.b, ino, this.sb.xattrBlkaddr * this.blksz);
  }

  /** Bytes [off, off+len) of a flat (plain or inline) inode's data, from this image. */
  flatData(ino: Inode, off: number, len: number): Buffer {
    if (ino.layout !== DataLayout.FlatPlain && ino.layout !== DataLayout.FlatInline) {
      throw new FormatError(this.b.name, `inode ${ino.nid}: data layout ${DataLayout[ino.layout]} is not flat`);
    }
    if (off < 0 || len < 0 || off + len > ino.size) {
      throw new FormatError(this.b.name, `inode ${ino.nid}: read [${off}, ${off + len}) beyond size ${ino.size}`);
    }
    const nblocks = Math.ceil(ino.size / this.blksz);
    const lastblk = ino.layout === DataLayout.FlatInline ? nblocks - 1 : nblocks;
    const out = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const pos = off + done;
      const blk = Math.floor(pos / this.blksz);
      const inBlk = pos % this.blksz;
      const n = Math.min(len - done, this.blksz - inBlk);
      let src: number;
      if (blk < lastblk) {
        src = ino.iu * this.blksz + pos;
      } else {
        const tail = ino.offset + ino.isize + ino.xattrSize;
        const tailLen = ino.size - lastblk * this.blksz;
        if ((tail % this.blksz) + tailLen > this.blksz) {
          throw new FormatError(this.b.name, `inode ${ino.nid}: inline tail of ${tailLen} bytes crosses a block boundary`);
        }
        src = tail + inBlk;
      }
      this.b.slice(src, n, `inode ${ino.nid} data`).copy(out, done);
      done += n;
    }
    return out;
  }

  readdir(dir: Inode): Dirent[] {
    if (!isDir(dir)) throw new FormatError(this.b.name, `inode ${dir.nid} is not a directory`);
    const what = `directory inode ${dir.nid}`;
    const out: Dirent[] = [];
    for (let base = 0; base < dir.size; base += this.blksz) {
      const blk = this.flatData(dir, base, Math.min(this.blksz, dir.size - base));
      const db = new Bytes(blk, this.b.name);
      const first = db.u16(8, `${what} block ${base / this.blksz} nameoff`);
      if (first % DIRENT_SIZE !== 0 || first === 0 || first > blk.length) {
        throw new FormatError(this.b.name, `${what}: bad first nameoff ${first}`);
      }
      const n = first / DIRENT_SIZE;
      for (let i = 0; i < n; i++) {
        const d = i * DIRENT_SIZE;
        const nid = db.u64(d, `${what} dirent ${i}.nid`);
        const nameoff = db.u16(d + 8, `${what} dirent ${i}.nameoff`);
        const fileType = db.u8(d + 10, `${what} dirent ${i}.file_type`);
        let end = i + 1 < n ? db.u16(d + DIRENT_SIZE + 8, `${what} dirent ${i + 1}.nameoff`) : blk.length;
        if (nameoff < first || end > blk.length || end < nameoff) {
          throw new FormatError(this.b.name, `${what}: dirent ${i} name [${nameoff}, ${end}) out of the block`);
        }
        let name = blk.subarray(nameoff, end);
        if (i + 1 === n) {
          const nul = name.indexOf(0);
          if (nul >= 0) name = name.subarray(0, nul);
        }
        if (name.length === 0 || name.length > 255) throw new FormatError(this.b.name, `${what}: dirent ${i} has a bad name length ${name.length}`);
        out.push({ name: Buffer.from(name), nid, fileType });
      }
    }
    return out;
  }

  readlink(ino: Inode): string {
    if (!isLnk(ino)) throw new FormatError(this.b.name, `inode ${ino.nid} is not a symlink`);
    if (ino.size > 4096) throw new FormatError(this.b.name, `symlink inode ${ino.nid} is ${ino.size} bytes long`);
    return this.flatData(ino, 0, ino.size).toString('latin1');
  }

  chunkMap(ino: Inode): ChunkMap {
    if (ino.layout !== DataLayout.ChunkBased) throw new FormatError(this.b.name, `inode ${ino.nid} is not chunk-based`);
    const format = ino.iu & 0xffff;
    const chunkBits = this.sb.blkszbits + (format & CHUNK_FORMAT_BLKBITS_MASK);
    if (chunkBits > 40) throw new FormatError(this.b.name, `inode ${ino.nid}: chunk size 2^${chunkBits} too large`);
    const count = Math.ceil(ino.size / 2 ** chunkBits);
    const indexes = (format & CHUNK_FORMAT_INDEXES) !== 0;
    const unit = indexes ? 8 : 4;
    const start = Math.ceil((ino.offset + ino.isize + ino.xattrSize) / unit) * unit;
    this.b.check(start, count * unit, `inode ${ino.nid} chunk indexes (${count})`);
    const chunks: ChunkIndex[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const p = start + i * unit;
      chunks[i] = indexes
        ? { deviceId: this.b.u16(p + 2, 'chunk index device_id') & this.deviceIdMask, blkaddr: this.b.u32(p + 4, 'chunk index blkaddr') }
        : { deviceId: 0, blkaddr: this.b.u32(p, 'chunk block map') };
    }
    return { chunkBits, chunks };
  }

  /** Depth-first walk from the root. Directory cycles and absurd depth are format errors. */
  *walk(): Generator<WalkEntry> {
    const seen = new Map<number, string>();
    const stack: { nid: number; path: string; depth: number; ancestors: Set<number> }[] = [
      { nid: this.sb.rootNid, path: '/', depth: 0, ancestors: new Set() },
    ];
    while (stack.length) {
      const { nid, path, depth, ancestors } = stack.pop()!;
      const inode = this.inode(nid);
      const first = seen.get(nid);
      if (first !== undefined && !isDir(inode)) {
        yield { path, inode, hardlinkOf: first };
        continue;
      }
      if (first !== undefined || ancestors.has(nid)) throw new FormatError(this.b.name, `directory inode ${nid} appears twice (at ${first} and ${path})`);
      seen.set(nid, path);
      yield { path, inode };
      if (!isDir(inode)) continue;
      if (depth >= MAX_DEPTH) throw new FormatError(this.b.name, `directory tree deeper than ${MAX_DEPTH} at ${path}`);
      const kids = this.readdir(inode).filter((d) => !(d.name.equals(DOT) || d.name.equals(DOTDOT)));
      const next = new Set(ancestors).add(nid);
      for (let i = kids.length - 1; i >= 0; i--) {
        const name = kids[i].name.toString('utf8');
        if (name.includes('/')) throw new FormatError(this.b.name, `directory ${path} has an entry with '/' in its name`);
        stack.push({ nid: kids[i].nid, path: path === '/' ? `/${name}` : `${path}/${name}`, depth: depth + 1, ancestors: next });
      }
    }
  }
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

export { isDir, isLnk, isReg };
