// EROFS on-disk inodes (erofs_fs.h erofs_inode_compact / erofs_inode_extended).
import { Bytes } from '../bytes';
import { FormatError } from '../errors';

export const INODE_SLOT = 32;

export enum DataLayout {
  FlatPlain = 0,
  CompressedFull = 1,
  FlatInline = 2,
  CompressedCompact = 3,
  ChunkBased = 4,
}

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;
export const S_IFSOCK = 0o140000;

export interface Inode {
  nid: number;
  /** byte offset of the inode in the image */
  offset: number;
  extended: boolean;
  /** 32 or 64 */
  isize: number;
  layout: DataLayout;
  xattrIcount: number;
  /** bytes of inline xattrs after the inode */
  xattrSize: number;
  mode: number;
  nlink: number;
  size: number;
  /** i_u: raw_blkaddr, rdev or chunk format, by layout and type */
  iu: number;
  ino: number;
  uid: number;
  gid: number;
  mtime: number;
  mtimeNsec: number;
}

export function xattrIbodySize(icount: number): number {
  return icount === 0 ? 0 : 12 + (icount - 1) * 4;
}

export function parseInode(b: Bytes, offset: number, nid: number, sbBuildTime: number, sbBuildNsec: number): Inode {
  const at = (f: string) => `inode ${nid}.${f}`;
  const format = b.u16(offset, at('i_format'));
  const extended = (format & 1) === 1;
  const layout = (format >> 1) & 0x7;
  if (layout > DataLayout.ChunkBased) throw new FormatError(b.name, `inode ${nid}: unknown data layout ${layout}`);
  const isize = extended ? 64 : 32;
  b.check(offset, isize, `inode ${nid}`);
  const xattrIcount = b.u16(offset + 2, at('i_xattr_icount'));
  const common = { nid, offset, extended, isize, layout, xattrIcount, xattrSize: xattrIbodySize(xattrIcount) };
  if (extended) {
    return {
      ...common,
      mode: b.u16(offset + 4, at('i_mode')),
      size: b.u64(offset + 8, at('i_size')),
      iu: b.u32(offset + 16, at('i_u')),
      ino: b.u32(offset + 20, at('i_ino')),
      uid: b.u32(offset + 24, at('i_uid')),
      gid: b.u32(offset + 28, at('i_gid')),
      mtime: b.u64(offset + 32, at('i_mtime')),
      mtimeNsec: b.u32(offset + 40, at('i_mtime_nsec')),
      nlink: b.u32(offset + 44, at('i_nlink')),
    };
  }
  return {
    ...common,
    mode: b.u16(offset + 4, at('i_mode')),
    nlink: b.u16(offset + 6, at('i_nlink')),
    size: b.u32(offset + 8, at('i_size')),
    iu: b.u32(offset + 16, at('i_u')),
    ino: b.u32(offset + 20, at('i_ino')),
    uid: b.u16(offset + 24, at('i_uid')),
    gid: b.u16(offset + 26, at('i_gid')),
    // compact inodes carry no mtime: the superblock's build time stands for it
    mtime: sbBuildTime,
    mtimeNsec: sbBuildNsec,
  };
}

export const isDir = (i: Inode) => (i.mode & S_IFMT) === S_IFDIR;
export const isReg = (i: Inode) => (i.mode & S_IFMT) === S_IFREG;
export const isLnk = (i: Inode) => (i.mode & S_IFMT) === S_IFLNK;
