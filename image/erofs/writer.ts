// Writes an uncompressed EROFS image (4 KiB blocks) from an in-memory tree:
// extended 64-byte inodes, inline xattrs, directories with sorted dirents,
// inline symlinks and tails, chunk-based regular files whose data lives on
// extra devices (the nydus blobs), device/fifo/socket inodes, hard links.
//
// Byte map: superblock at 1024; the caller's region (RAFS extended superblock)
// before the device table at devtSlotoff×128; a reserved, 4 KiB aligned area
// for the caller (the RAFS blob table); then inodes from meta_blkaddr; then the
// blocks of directories too big to keep inline.
import { alignUp } from '../bytes';
import { FormatError } from '../errors';
import { NULL_ADDR } from './image';
import { INODE_SLOT, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK, DataLayout, type Inode } from './inode';
import {
  COMPAT_SB_CHKSUM,
  EROFS_MAGIC,
  EROFS_SUPER_OFFSET,
  INCOMPAT_CHUNKED_FILE,
  INCOMPAT_DEVICE_TABLE,
  updateSuperblockChecksum,
  type ErofsSuperblock,
} from './superblock';
import { FileType } from './image';
import { encodeXattrIbody } from './writer-xattr';

export const BLOCK = 4096;
const BLKBITS = 12;
const EXT_INODE = 64;
const DIRENT = 12;
const CHUNK_INDEX = 8;
const DEVICE_SLOT = 128;
const CHUNK_FORMAT_INDEXES = 0x20;
export const EROFS_NAME_LEN = 255;
/** the longest symlink target Linux accepts (PATH_MAX - 1) */
export const MAX_SYMLINK = 4095;

export type NodeKind = 'reg' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

/** What the writer needs to know about a file. Hard links are one object in several directories. */
export interface WriterNode {
  kind: NodeKind;
  /** permission bits incl. setuid/setgid/sticky */
  mode: number;
  uid: number;
  gid: number;
  /** seconds since the epoch (may be negative) */
  mtime: number;
  mtimeNsec: number;
  /** full xattr name (raw bytes as latin1) → value */
  xattrs: Map<string, Buffer>;
  /** regular files */
  size?: number;
  /** symlinks: raw target bytes */
  target?: Buffer;
  rdev?: { major: number; minor: number };
  /** directories: raw name bytes as latin1 → child */
  children?: Map<string, WriterNode>;
}

/** erofs_deviceslot (128 bytes). */
export interface DeviceSlotOut {
  /** up to 64 bytes; nydus: the blob id as 64 hex characters */
  tag: string;
  blocks: number;
  mappedBlkaddr: number;
}

export interface ErofsWriterOptions {
  /** log2 of the chunk size of chunk-based files (12..(12+31)) */
  chunkBits: number;
  /** the 8-byte chunk indexes of a regular file, ceil(size / chunk) of them */
  chunkIndexes(node: WriterNode, path: string): Buffer;
  devices: DeviceSlotOut[];
  /** device table position in 128-byte units (nydus: 11, after the RAFS superblock) */
  devtSlotoff: number;
  /** bytes the caller needs after the device table, 4 KiB aligned */
  reserved: number;
  /** extra feature_compat bits (RAFS_V6) */
  featureCompat: number;
  buildTime: number;
  buildTimeNsec: number;
  uuid: Buffer;
}

export interface ErofsLayout {
  image: Buffer;
  /** where the caller's reserved area starts */
  reservedOffset: number;
  rootNid: number;
  inodes: number;
  metaBlkaddr: number;
  /** each node's nid (what a RAFS prefetch table names) */
  nids: Map<WriterNode, number>;
}

/** A problem with the input tree: names the path. */
export class TreeError extends Error {
  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = 'TreeError';
  }
}


const S_IFMT_OF: Record<NodeKind, number> = {
  reg: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, char: S_IFCHR, block: S_IFBLK, fifo: S_IFIFO, socket: S_IFSOCK,
};
const FT_OF: Record<NodeKind, FileType> = {
  reg: FileType.Reg, dir: FileType.Dir, symlink: FileType.Symlink, char: FileType.Chr, block: FileType.Blk, fifo: FileType.Fifo, socket: FileType.Sock,
};

/** Linux new_encode_dev: what EROFS stores in i_u for device inodes. */
export function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

interface Dirent {
  name: Buffer;
  node: WriterNode;
}

/** One inode being laid out. */
interface Rec {
  node: WriterNode;
  path: string;
  nlink: number;
  xattr: Buffer;
  /** directories: sorted entries incl. "." and ".."; parent for ".." */
  dirents?: Dirent[];
  parent?: WriterNode;
  size: number;
  layout: DataLayout;
  /** bytes kept inline after inode + xattrs */
  inline: number;
  /** chunk-based files: index count */
  chunks: number;
  /** out-of-line data blocks */
  dataBlocks: number;
  offset: number;
  nid: number;
  rawBlkaddr: number;
}

/** Dirent block packing: [first entry, end entry) per block, and the directory's i_size. */
function packDirents(ents: Dirent[]): { blocks: [number, number][]; size: number } {
  const blocks: [number, number][] = [];
  let start = 0;
  let used = 0;
  let lastUsed = 0;
  for (let i = 0; i < ents.length; i++) {
    const need = DIRENT + ents[i].name.length;
    if (used + need > BLOCK) {
      blocks.push([start, i]);
      start = i;
      used = 0;
    }
    used += need;
    lastUsed = used;
  }
  blocks.push([start, ents.length]);
  return { blocks, size: (blocks.length - 1) * BLOCK + lastUsed };
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

/** Depth-first order, root first, children in byte order; hard links visited once. */
function collect(root: WriterNode): Rec[] {
  if (root.kind !== 'dir' || !root.children) throw new TreeError('/', 'the root is not a directory');
  const recs: Rec[] = [];
  const byNode = new Map<WriterNode, Rec>();
  const stack: { node: WriterNode; path: string; parent: WriterNode }[] = [{ node: root, path: '/', parent: root }];
  while (stack.length) {
    const { node, path, parent } = stack.pop()!;
    const seen = byNode.get(node);
    if (seen) {
      if (node.kind === 'dir') throw new TreeError(path, `directory is linked twice (also at ${seen.path})`);
      seen.nlink++;
      continue;
    }
    const rec: Rec = {
      node, path, nlink: 1, xattr: Buffer.alloc(0), size: 0, layout: DataLayout.FlatPlain,
      inline: 0, chunks: 0, dataBlocks: 0, offset: 0, nid: 0, rawBlkaddr: 0,
    };
    byNode.set(node, rec);
    recs.push(rec);
    if (node.kind !== 'dir') continue;
    if (!node.children) throw new TreeError(path, 'directory without a children map');
    const kids: Dirent[] = [];
    let subdirs = 0;
    for (const [key, child] of node.children) {
      const name = Buffer.from(key, 'latin1');
      if (name.length === 0 || name.length > EROFS_NAME_LEN) throw new TreeError(`${path}`, `entry name of ${name.length} bytes (EROFS allows 1..${EROFS_NAME_LEN})`);
      if (name.includes(0x2f) || name.includes(0) || name.equals(DOT) || name.equals(DOTDOT)) {
        throw new TreeError(path, `invalid entry name ${JSON.stringify(name.toString('utf8'))}`);
      }
      kids.push({ name, node: child });
      if (child.kind === 'dir') subdirs++;
    }
    kids.push({ name: DOT, node }, { name: DOTDOT, node: parent });
    kids.sort((a, b) => Buffer.compare(a.name, b.name));
    rec.dirents = kids;
    rec.parent = parent;
    rec.nlink = 2 + subdirs;
    // push in reverse so the smallest name is visited first
    for (let i = kids.length - 1; i >= 0; i--) {
      const k = kids[i];
      if (k.name === DOT || k.name === DOTDOT) continue;
      const childPath = path === '/' ? `/${k.name.toString('utf8')}` : `${path}/${k.name.toString('utf8')}`;
      stack.push({ node: k.node, path: childPath, parent: node });
    }
  }
  return recs;
}

function checkMeta(rec: Rec): void {
  const n = rec.node;
  const u32 = (v: number) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
  if (!Number.isInteger(n.mode) || n.mode < 0 || n.mode > 0o7777) throw new TreeError(rec.path, `mode ${n.mode} out of range`);
  if (!u32(n.uid) || !u32(n.gid)) throw new TreeError(rec.path, `uid/gid ${n.uid}/${n.gid} do not fit 32 bits`);
  if (!Number.isSafeInteger(n.mtime) || !Number.isInteger(n.mtimeNsec) || n.mtimeNsec < 0 || n.mtimeNsec >= 1e9) {
    throw new TreeError(rec.path, `bad mtime ${n.mtime}.${n.mtimeNsec}`);
  }
  if (rec.nlink > 0xffffffff) throw new TreeError(rec.path, 'too many links');
}

export function writeErofs(root: WriterNode, opts: ErofsWriterOptions): ErofsLayout {
  if (opts.chunkBits < BLKBITS || opts.chunkBits > BLKBITS + 0x1f) throw new RangeError(`chunk bits ${opts.chunkBits} out of range`);
  const recs = collect(root);

  // Sizes and layouts; chunk indexes are produced now and kept for the write.
  const chunkIdx = new Map<Rec, Buffer>();
  for (const rec of recs) {
    const n = rec.node;
    checkMeta(rec);
    try {
      rec.xattr = encodeXattrIbody(n.xattrs);
    } catch (e) {
      throw new TreeError(rec.path, (e as Error).message);
    }
    const head = EXT_INODE + rec.xattr.length;
    if (head > 0xffff * 4) throw new TreeError(rec.path, 'xattrs too large');
    switch (n.kind) {
      case 'dir': {
        const { size } = packDirents(rec.dirents!);
        rec.size = size;
        const tail = size % BLOCK;
        if (tail > 0 && head + tail <= BLOCK) {
          rec.layout = DataLayout.FlatInline;
          rec.inline = tail;
          rec.dataBlocks = Math.floor(size / BLOCK);
        } else {
          rec.dataBlocks = Math.ceil(size / BLOCK);
        }
        break;
      }
      case 'symlink': {
        const t = n.target;
        if (!t || t.length === 0) throw new TreeError(rec.path, 'symlink with an empty target');
        if (t.length > MAX_SYMLINK) throw new TreeError(rec.path, `symlink target of ${t.length} bytes (max ${MAX_SYMLINK})`);
        rec.size = t.length;
        if (head + t.length <= BLOCK) {
          rec.layout = DataLayout.FlatInline;
          rec.inline = t.length;
        } else {
          rec.dataBlocks = 1;
        }
        break;
      }
      case 'reg': {
        const size = n.size ?? 0;
        if (!Number.isSafeInteger(size) || size < 0) throw new TreeError(rec.path, `bad size ${size}`);
        rec.size = size;
        rec.layout = DataLayout.ChunkBased;
        rec.chunks = Math.ceil(size / 2 ** opts.chunkBits);
        const idx = opts.chunkIndexes(n, rec.path);
        if (idx.length !== rec.chunks * CHUNK_INDEX) {
          throw new TreeError(rec.path, `${idx.length / CHUNK_INDEX} chunk indexes for ${rec.chunks} chunks`);
        }
        chunkIdx.set(rec, idx);
        break;
      }
      case 'char':
      case 'block':
        if (!n.rdev) throw new TreeError(rec.path, 'device without a device number');
        break;
      case 'fifo':
      case 'socket':
        break;
      default:
        throw new TreeError(rec.path, `unknown kind ${(n as WriterNode).kind}`);
    }
  }

  // Block 0: superblock, (caller's RAFS superblock), device table; then the reserved area.
  const slotsEnd = opts.devtSlotoff * DEVICE_SLOT + opts.devices.length * DEVICE_SLOT;
  if (opts.devtSlotoff * DEVICE_SLOT < EROFS_SUPER_OFFSET + 128) throw new RangeError('device table overlaps the superblock');
  if (opts.devices.length > 0xffff) throw new RangeError('too many devices');
  const reservedOffset = alignUp(Math.max(slotsEnd, BLOCK), BLOCK);
  const metaStart = reservedOffset + alignUp(opts.reserved, BLOCK);

  // Inodes: a record never straddles a block when it fits in one, so inline
  // tails never cross a block boundary (the kernel refuses that).
  // nid 0 is skipped: the kernel reports st_ino = nid, and tools (ls, find)
  // drop directory entries whose inode number is 0.
  let cur = metaStart + INODE_SLOT;
  for (const rec of recs) {
    const head = EXT_INODE + rec.xattr.length + rec.inline;
    let total = head;
    if (rec.layout === DataLayout.ChunkBased) total = alignUp(EXT_INODE + rec.xattr.length, CHUNK_INDEX) + rec.chunks * CHUNK_INDEX;
    if (head <= BLOCK && (cur % BLOCK) + head > BLOCK) cur = alignUp(cur, BLOCK);
    if (head > BLOCK) cur = alignUp(cur, BLOCK);
    rec.offset = cur;
    rec.nid = (cur - metaStart) / INODE_SLOT;
    cur = alignUp(cur + total, INODE_SLOT);
  }
  if (recs[0].nid > 0xffff) throw new Error('root nid does not fit 16 bits');

  // Out-of-line blocks of big directories and long symlinks.
  let data = alignUp(cur, BLOCK);
  for (const rec of recs) {
    if (rec.dataBlocks > 0) {
      rec.rawBlkaddr = data / BLOCK;
      data += rec.dataBlocks * BLOCK;
    }
  }
  const total = alignUp(data, BLOCK);
  if (total / BLOCK > 0xffffffff) throw new Error('image too large');
  const img = Buffer.alloc(total);
  const nidOf = new Map<WriterNode, number>();
  for (const rec of recs) nidOf.set(rec.node, rec.nid);

  recs.forEach((rec, ino) => {
    const n = rec.node;
    const o = rec.offset;
    let iu = 0;
    if (n.kind === 'reg') iu = CHUNK_FORMAT_INDEXES | (opts.chunkBits - BLKBITS);
    else if (n.kind === 'char' || n.kind === 'block') iu = encodeDev(n.rdev!.major, n.rdev!.minor);
    else if (rec.dataBlocks > 0) iu = rec.rawBlkaddr;
    else if (n.kind === 'dir' || n.kind === 'symlink') iu = NULL_ADDR; // all inline: no blocks
    encodeExtInode(img, o, {
      layout: rec.layout,
      xattrIcount: rec.xattr.length === 0 ? 0 : (rec.xattr.length - 12) / 4 + 1,
      mode: S_IFMT_OF[n.kind] | n.mode,
      size: rec.size,
      iu,
      ino: ino + 1, // i_ino: 32-bit stat only; never 0
      uid: n.uid,
      gid: n.gid,
      mtime: n.mtime,
      mtimeNsec: n.mtimeNsec,
      nlink: rec.nlink,
    });
    rec.xattr.copy(img, o + EXT_INODE);
    const after = o + EXT_INODE + rec.xattr.length;
    if (n.kind === 'reg') {
      chunkIdx.get(rec)!.copy(img, alignUp(after, CHUNK_INDEX));
    } else if (n.kind === 'symlink') {
      n.target!.copy(img, rec.dataBlocks > 0 ? rec.rawBlkaddr * BLOCK : after);
    } else if (n.kind === 'dir') {
      const content = dirContent(rec, nidOf);
      const plain = rec.dataBlocks * BLOCK;
      content.copy(img, rec.rawBlkaddr * BLOCK, 0, Math.min(plain, content.length));
      if (rec.inline) content.copy(img, after, plain);
    }
  });

  writeSuperblock(img, {
    featureCompat: COMPAT_SB_CHKSUM | opts.featureCompat,
    rootNid: recs[0].nid,
    inos: recs.length,
    buildTime: opts.buildTime,
    buildTimeNsec: opts.buildTimeNsec,
    blocks: total / BLOCK,
    metaBlkaddr: metaStart / BLOCK,
    uuid: opts.uuid,
    featureIncompat: INCOMPAT_CHUNKED_FILE | INCOMPAT_DEVICE_TABLE,
    extraDevices: opts.devices.length,
    devtSlotoff: opts.devtSlotoff,
  });
  opts.devices.forEach((d, i) => {
    const o = opts.devtSlotoff * DEVICE_SLOT + i * DEVICE_SLOT;
    if (Buffer.byteLength(d.tag, 'latin1') > 64) throw new RangeError(`device tag "${d.tag}" is longer than 64 bytes`);
    img.write(d.tag, o, 64, 'latin1');
    img.writeUInt32LE(d.blocks, o + 64);
    img.writeUInt32LE(d.mappedBlkaddr, o + 68);
  });
  updateSuperblockChecksum(img);
  return { image: img, reservedOffset, rootNid: recs[0].nid, inodes: recs.length, metaBlkaddr: metaStart / BLOCK, nids: nidOf };
}

/** erofs_inode_extended (64 bytes): the fields the reader's Inode holds, as the writer sets them. */
export type ExtInodeOut = Pick<Inode, 'layout' | 'xattrIcount' | 'mode' | 'size' | 'iu' | 'ino' | 'uid' | 'gid' | 'mtime' | 'mtimeNsec' | 'nlink'>;

export function encodeExtInode(img: Buffer, o: number, i: ExtInodeOut): void {
  img.writeUInt16LE(1 | (i.layout << 1), o); // bit 0: extended
  img.writeUInt16LE(i.xattrIcount, o + 2);
  img.writeUInt16LE(i.mode, o + 4);
  img.writeUInt16LE(0, o + 6); // i_nb: startblk_hi on 48-bit images, 0 here
  img.writeBigUInt64LE(BigInt(i.size), o + 8);
  img.writeUInt32LE(i.iu >>> 0, o + 16);
  img.writeUInt32LE(i.ino, o + 20);
  img.writeUInt32LE(i.uid, o + 24);
  img.writeUInt32LE(i.gid, o + 28);
  img.writeBigUInt64LE(BigInt.asUintN(64, BigInt(i.mtime)), o + 32);
  img.writeUInt32LE(i.mtimeNsec, o + 40);
  img.writeUInt32LE(i.nlink, o + 44);
}

/** erofs_dirent (12 bytes); names follow the dirent array of their block. */
export interface DirentOut {
  nid: number;
  nameoff: number;
  fileType: FileType;
}

export function encodeDirent(b: Buffer, o: number, d: DirentOut): void {
  b.writeBigUInt64LE(BigInt(d.nid), o);
  b.writeUInt16LE(d.nameoff, o + 8);
  b.writeUInt8(d.fileType, o + 10);
}

/** The directory's bytes: blocks of dirents + names, every block but the last padded to 4 KiB. */
function dirContent(rec: Rec, nidOf: Map<WriterNode, number>): Buffer {
  const ents = rec.dirents!;
  const { blocks, size } = packDirents(ents);
  const out = Buffer.alloc(size);
  blocks.forEach(([s, e], b) => {
    const base = b * BLOCK;
    let nameoff = (e - s) * DIRENT;
    for (let i = s; i < e; i++) {
      const d = base + (i - s) * DIRENT;
      const ent = ents[i];
      const nid = nidOf.get(ent.node);
      if (nid === undefined) throw new FormatError('erofs writer', `no nid for ${rec.path}/${ent.name.toString('utf8')}`);
      encodeDirent(out, d, { nid, nameoff, fileType: FT_OF[ent.node.kind] });
      ent.name.copy(out, base + nameoff);
      nameoff += ent.name.length;
    }
  });
  return out;
}

/** erofs_super_block fields this writer sets (the reader's ErofsSuperblock has them all). */
export type SuperblockOut = Pick<ErofsSuperblock, 'featureCompat' | 'rootNid' | 'inos' | 'buildTime' | 'buildTimeNsec' | 'blocks' |
  'metaBlkaddr' | 'uuid' | 'featureIncompat' | 'extraDevices' | 'devtSlotoff'>;

/** erofs_super_block at 1024 (the checksum is filled in last). */
function writeSuperblock(img: Buffer, sb: SuperblockOut): void {
  const o = EROFS_SUPER_OFFSET;
  img.writeUInt32LE(EROFS_MAGIC, o);
  img.writeUInt32LE(0, o + 4);
  img.writeUInt32LE(sb.featureCompat >>> 0, o + 8);
  img.writeUInt8(BLKBITS, o + 12);
  img.writeUInt8(0, o + 13); // no extra superblock slots
  img.writeUInt16LE(sb.rootNid, o + 14);
  img.writeBigUInt64LE(BigInt(sb.inos), o + 16);
  img.writeBigUInt64LE(BigInt.asUintN(64, BigInt(sb.buildTime)), o + 24);
  img.writeUInt32LE(sb.buildTimeNsec, o + 32);
  img.writeUInt32LE(sb.blocks, o + 36);
  img.writeUInt32LE(sb.metaBlkaddr, o + 40);
  img.writeUInt32LE(0, o + 44); // no shared xattrs
  if (sb.uuid.length !== 16) throw new RangeError('uuid must be 16 bytes');
  sb.uuid.copy(img, o + 48);
  img.writeUInt32LE(sb.featureIncompat >>> 0, o + 80);
  img.writeUInt16LE(sb.extraDevices, o + 86);
  img.writeUInt16LE(sb.devtSlotoff, o + 88);
}
