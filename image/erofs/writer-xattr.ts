// Inline xattrs (erofs_xattr_ibody_header + erofs_xattr_entry). EROFS stores
// a name as a prefix index plus suffix; a name no index expresses cannot be
// stored (without the long-prefix feature, which we do not use), so it is an
// error rather than silently dropped.

/** The prefixes the kernel serves, longest first; index per erofs_fs.h. */
const PREFIXES: [string, number][] = [
  ['system.posix_acl_default', 3],
  ['system.posix_acl_access', 2],
  ['security.', 6],
  ['trusted.', 4],
  ['user.', 1],
];

const IBODY_HEADER = 12;
const ENTRY_HEADER = 4;

export class XattrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'XattrError';
  }
}

/** [index, suffix] for a full xattr name (raw bytes as latin1); throws if EROFS cannot store it. */
export function xattrIndex(name: string): [number, Buffer] {
  for (const [p, idx] of PREFIXES) {
    if (!name.startsWith(p)) continue;
    const suffix = Buffer.from(name.slice(p.length), 'latin1');
    // posix ACL names are whole names; the others need a non-empty suffix
    if (idx === 2 || idx === 3) {
      if (suffix.length !== 0) break;
    } else if (suffix.length === 0) {
      throw new XattrError(`xattr name "${name}" has nothing after its prefix`);
    }
    if (suffix.length > 255) throw new XattrError(`xattr name "${name}" is longer than 255 bytes after its prefix`);
    return [idx, suffix];
  }
  throw new XattrError(
    `xattr "${Buffer.from(name, 'latin1').toString('utf8')}" has no EROFS name prefix ` +
      '(only user., trusted., security., system.posix_acl_access and system.posix_acl_default can be stored)',
  );
}

/** The inline xattr area of an inode (empty buffer if there are no xattrs). Entries are sorted, so output is deterministic. */
export function encodeXattrIbody(xattrs: Map<string, Buffer>): Buffer {
  if (xattrs.size === 0) return Buffer.alloc(0);
  const ents = [...xattrs].map(([name, value]) => {
    const [idx, suffix] = xattrIndex(name);
    if (value.length > 0xffff) throw new XattrError(`xattr "${name}" value of ${value.length} bytes exceeds 65535`);
    return { idx, suffix, value };
  });
  ents.sort((a, b) => a.idx - b.idx || Buffer.compare(a.suffix, b.suffix));
  const parts: Buffer[] = [Buffer.alloc(IBODY_HEADER)]; // h_name_filter 0, no shared xattrs
  for (const e of ents) {
    const len = (ENTRY_HEADER + e.suffix.length + e.value.length + 3) & ~3;
    const b = Buffer.alloc(len);
    b.writeUInt8(e.suffix.length, 0);
    b.writeUInt8(e.idx, 1);
    b.writeUInt16LE(e.value.length, 2);
    e.suffix.copy(b, ENTRY_HEADER);
    e.value.copy(b, ENTRY_HEADER + e.suffix.length);
    parts.push(b);
  }
  return Buffer.concat(parts);
}
