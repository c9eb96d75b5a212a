// The EROFS superblock (erofs_fs.h struct erofs_super_block), 128 bytes at 1024.
import { Bytes } from '../bytes';
import { FormatError } from '../errors';
import { crc32cRaw } from './crc32c';

export const EROFS_SUPER_OFFSET = 1024;
export const EROFS_MAGIC = 0xe0f5e1e2;

export const COMPAT_SB_CHKSUM = 0x1;
export const COMPAT_MTIME = 0x2;
export const COMPAT_RAFS_V6 = 0x40000000;
export const INCOMPAT_CHUNKED_FILE = 0x4;
export const INCOMPAT_DEVICE_TABLE = 0x8;
/** incompat bits this reader understands; others (compression, fragments, …) are refused */
const INCOMPAT_KNOWN = INCOMPAT_CHUNKED_FILE | INCOMPAT_DEVICE_TABLE;

export interface ErofsSuperblock {
  magic: number;
  checksum: number;
  featureCompat: number;
  blkszbits: number;
  extslots: number;
  rootNid: number;
  inos: number;
  buildTime: number;
  buildTimeNsec: number;
  blocks: number;
  metaBlkaddr: number;
  xattrBlkaddr: number;
  uuid: Buffer;
  volumeName: string;
  featureIncompat: number;
  extraDevices: number;
  devtSlotoff: number;
}

export function parseSuperblock(b: Bytes): ErofsSuperblock {
  const o = EROFS_SUPER_OFFSET;
  const at = (f: string) => `superblock.${f}`;
  b.check(o, 128, 'superblock');
  const magic = b.u32(o, at('magic'));
  if (magic !== EROFS_MAGIC) {
    throw new FormatError(b.name, `superblock.magic is 0x${magic.toString(16)}, not EROFS (0x${EROFS_MAGIC.toString(16)})`);
  }
  const sb: ErofsSuperblock = {
    magic: b.u32(o, at('magic')),
    checksum: b.u32(o + 4, at('checksum')),
    featureCompat: b.u32(o + 8, at('feature_compat')),
    blkszbits: b.u8(o + 12, at('blkszbits')),
    extslots: b.u8(o + 13, at('extslots')),
    rootNid: b.u16(o + 14, at('root_nid')),
    inos: b.u64(o + 16, at('inos')),
    buildTime: b.u64(o + 24, at('build_time')),
    buildTimeNsec: b.u32(o + 32, at('build_time_nsec')),
    blocks: b.u32(o + 36, at('blocks')),
    metaBlkaddr: b.u32(o + 40, at('meta_blkaddr')),
    xattrBlkaddr: b.u32(o + 44, at('xattr_blkaddr')),
    uuid: Buffer.from(b.slice(o + 48, 16, at('uuid'))),
    volumeName: b.cstr(o + 64, 16, at('volume_name')),
    featureIncompat: b.u32(o + 80, at('feature_incompat')),
    extraDevices: b.u16(o + 86, at('extra_devices')),
    devtSlotoff: b.u16(o + 88, at('devt_slotoff')),
  };
  if (sb.blkszbits < 9 || sb.blkszbits > 16) throw new FormatError(b.name, `superblock.blkszbits ${sb.blkszbits} out of range`);
  const unknown = sb.featureIncompat & ~INCOMPAT_KNOWN;
  if (unknown) throw new FormatError(b.name, `superblock.feature_incompat has unsupported bits 0x${unknown.toString(16)}`);
  if (sb.featureCompat & COMPAT_SB_CHKSUM) {
    const want = superblockChecksum(b.buf, sb.blkszbits);
    if (want !== sb.checksum) {
      throw new FormatError(b.name, `superblock.checksum 0x${sb.checksum.toString(16)} does not match crc32c 0x${want.toString(16)}`);
    }
  }
  return sb;
}

/** crc32c of [1024, blocksize) with the checksum field zeroed. */
export function superblockChecksum(img: Buffer, blkszbits = 12): number {
  const end = Math.min(1 << blkszbits, img.length);
  if (end <= EROFS_SUPER_OFFSET + 8) throw new FormatError('superblock', 'image too short to checksum');
  const region = Buffer.from(img.subarray(EROFS_SUPER_OFFSET, end));
  region.writeUInt32LE(0, 4);
  return crc32cRaw(region);
}

/** Rewrites the checksum field in place (after editing device tags). */
export function updateSuperblockChecksum(img: Buffer): void {
  const bits = img.readUInt8(EROFS_SUPER_OFFSET + 12);
  img.writeUInt32LE(superblockChecksum(img, bits), EROFS_SUPER_OFFSET + 4);
}

/** Whether an image's first block says RAFS v6 (a nydus bootstrap), without parsing the rest. */
export function isRafsV6(head: Buffer): boolean {
  const at = EROFS_SUPER_OFFSET;
  return head.length >= at + 12 && head.readUInt32LE(at) === EROFS_MAGIC && (head.readUInt32LE(at + 8) & COMPAT_RAFS_V6) !== 0;
}
