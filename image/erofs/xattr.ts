// EROFS extended attributes: an ibody header, shared xattr ids, then inline
// entries (erofs_xattr_ibody_header, erofs_xattr_entry).
import { Bytes } from '../bytes';
import { FormatError } from '../errors';
import type { Inode } from './inode';

/** erofs_xattr_index → name prefix */
export const XATTR_PREFIXES: Record<number, string> = {
  0: '',
  1: 'user.',
  2: 'system.posix_acl_access',
  3: 'system.posix_acl_default',
  4: 'trusted.',
  5: 'lustre.',
  6: 'security.',
};

export interface Xattr {
  name: string;
  value: Buffer;
}

/** Reads one erofs_xattr_entry at off; returns it and its 4-aligned size. */
function entryAt(b: Bytes, off: number, what: string): { x: Xattr; size: number } {
  const nameLen = b.u8(off, `${what}.e_name_len`);
  const index = b.u8(off + 1, `${what}.e_name_index`);
  const valueSize = b.u16(off + 2, `${what}.e_value_size`);
  const prefix = XATTR_PREFIXES[index];
  if (prefix === undefined) throw new FormatError(b.name, `${what}: unsupported xattr name index ${index}`);
  const name = prefix + b.slice(off + 4, nameLen, `${what}.e_name`).toString('latin1');
  const value = Buffer.from(b.slice(off + 4 + nameLen, valueSize, `${what}.value`));
  return { x: { name, value }, size: (4 + nameLen + valueSize + 3) & ~3 };
}

export function readXattrs(b: Bytes, ino: Inode, xattrBase: number): Xattr[] {
  if (ino.xattrSize === 0) return [];
  const what = `inode ${ino.nid} xattrs`;
  const start = ino.offset + ino.isize;
  const end = start + ino.xattrSize;
  b.check(start, ino.xattrSize, what);
  const shared = b.u8(start + 4, `${what}.h_shared_count`);
  let p = start + 12;
  if (p + shared * 4 > end) throw new FormatError(b.name, `${what}: ${shared} shared ids do not fit in ${ino.xattrSize} bytes`);
  const out: Xattr[] = [];
  for (let i = 0; i < shared; i++, p += 4) {
    const id = b.u32(p, `${what}.shared[${i}]`);
    out.push(entryAt(b, xattrBase + id * 4, `${what} shared xattr ${id}`).x);
  }
  while (p < end) {
    const { x, size } = entryAt(b, p, `${what} inline@${p - start}`);
    if (p + size > end) throw new FormatError(b.name, `${what}: inline entry crosses the end of the xattr area`);
    out.push(x);
    p += size;
  }
  return out;
}
