// A streaming tar reader for OCI layers. Not tar-stream's extractor: that one
// decodes PAX records as UTF-8 strings, which corrupts binary xattr values
// (security.capability, POSIX ACLs) and non-UTF-8 PAX paths, and it drops the
// sub-second part of PAX mtimes. Here names, link targets and xattr values
// stay raw bytes, and file bodies are streamed, never buffered whole.
import { ByteReader, TruncatedError } from './bytereader';

export const TAR_BLOCK = 512;

export type TarType = 'file' | 'link' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarHeader {
  /** raw name bytes (after GNU long-name / PAX path overrides) */
  name: Buffer;
  /** raw link target (hard or symbolic), empty if none */
  linkname: Buffer;
  type: TarType;
  /** permission bits incl. setuid/setgid/sticky */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  mtimeNsec: number;
  devmajor: number;
  devminor: number;
  /** xattr name → raw value (PAX SCHILY.xattr.*) */
  xattrs: Map<string, Buffer>;
  /** PAX records the converter does not map (for warnings) */
  ignored: string[];
}

export interface TarEntry {
  header: TarHeader;
  /** the body, streamed in pieces; skipped if not consumed */
  body(): AsyncGenerator<Buffer>;
}

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarFormatError';
  }
}

const TYPES: Record<string, TarType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'link', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};

/** Octal (NUL/space padded) or GNU base-256 number. */
function num(h: Buffer, off: number, len: number, what: string): number {
  const f = h.subarray(off, off + len);
  if (f[0] & 0x80) {
    if (f[0] === 0xff) throw new TarFormatError(`negative ${what} in tar header`);
    let v = f[0] & 0x7f;
    for (let i = 1; i < f.length; i++) v = v * 256 + f[i];
    if (!Number.isSafeInteger(v)) throw new TarFormatError(`${what} too large in tar header`);
    return v;
  }
  const s = f.toString('latin1').replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarFormatError(`${what} "${s}" is not octal`);
  return parseInt(s, 8);
}

function cstr(h: Buffer, off: number, len: number): Buffer {
  const f = h.subarray(off, off + len);
  const nul = f.indexOf(0);
  return Buffer.from(nul < 0 ? f : f.subarray(0, nul));
}

function checksumOk(h: Buffer): boolean {
  const stored = num(h, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

/** PAX records "LEN key=value\n"; values stay raw bytes. */
export function parsePax(buf: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let p = 0;
  while (p < buf.length) {
    if (buf[p] === 0) break; // padding
    const sp = buf.indexOf(0x20, p);
    if (sp < 0) throw new TarFormatError('malformed PAX record (no length)');
    const len = parseInt(buf.subarray(p, sp).toString('latin1'), 10);
    if (!Number.isSafeInteger(len) || len <= sp - p || p + len > buf.length) throw new TarFormatError('malformed PAX record length');
    const rec = buf.subarray(sp + 1, p + len - 1); // without the trailing \n
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new TarFormatError('malformed PAX record (no "=")');
    // keys as latin1: one char per byte, so xattr names keep their raw bytes
    out.set(rec.subarray(0, eq).toString('latin1'), Buffer.from(rec.subarray(eq + 1)));
    p += len;
  }
  return out;
}

/** PAX mtime "seconds[.fraction]" → [s, ns]. */
function paxTime(v: string): [number, number] {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(v);
  if (!m) throw new TarFormatError(`bad PAX mtime "${v}"`);
  let s = parseInt(m[2], 10);
  let ns = m[3] ? parseInt(m[3].slice(0, 9).padEnd(9, '0'), 10) : 0;
  if (m[1]) {
    s = -s;
    if (ns) {
      s -= 1;
      ns = 1e9 - ns;
    }
  }
  return [s, ns];
}

const XATTR_PAX = 'SCHILY.xattr.';

/** Reads tar entries from a byte stream. The caller must finish with each entry before asking for the next. */
export async function* readTar(src: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const r = new ByteReader(src);
  let global = new Map<string, Buffer>();
  let pax: Map<string, Buffer> | null = null;
  let longName: Buffer | null = null;
  let longLink: Buffer | null = null;
  for (;;) {
    const h = await r.readExact(TAR_BLOCK, 'tar header');
    if (h === null) return; // EOF on a header boundary: tolerated, as Go's archive/tar does
    if (h.every((b) => b === 0)) {
      // The second zero block and any trailing bytes are read anyway, so
      // digests computed over the stream cover all of it.
      await r.drain();
      return;
    }
    if (!checksumOk(h)) throw new TarFormatError('tar header checksum mismatch (corrupt or not a tar stream)');
    const flag = String.fromCharCode(h[156]);
    const size = num(h, 124, 12, 'size');
    const padded = Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
    // Meta entries: their body describes the next real entry.
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > 16 << 20) throw new TarFormatError(`tar ${flag} header of ${size} bytes is implausibly large`);
      const body = await r.readExact(padded, `tar ${flag} header body`);
      if (body === null) throw new TruncatedError('tar meta header body');
      const data = body.subarray(0, size);
      if (flag === 'x') pax = parsePax(data);
      else if (flag === 'g') global = new Map([...global, ...parsePax(data)]);
      else if (flag === 'L') longName = cstr(data, 0, data.length);
      else longLink = cstr(data, 0, data.length);
      continue;
    }
    const type = TYPES[flag];
    if (!type) {
      const what = flag === 'S' ? 'GNU sparse files' : flag === 'M' ? 'multi-volume archives' : `entry type '${flag}' (0x${h[156].toString(16)})`;
      throw new TarFormatError(`${what} are not supported (entry "${cstr(h, 0, 100).toString('utf8')}")`);
    }
    const ustar = h.subarray(257, 263).toString('latin1') === 'ustar\0';
    let name = cstr(h, 0, 100);
    if (ustar && h[345] !== 0) name = Buffer.concat([cstr(h, 345, 155), Buffer.from('/'), name]);
    let linkname = cstr(h, 157, 100);
    const hdr: TarHeader = {
      name,
      linkname,
      type,
      mode: num(h, 100, 8, 'mode') & 0o7777,
      uid: num(h, 108, 8, 'uid'),
      gid: num(h, 116, 8, 'gid'),
      size,
      mtime: num(h, 136, 12, 'mtime'),
      mtimeNsec: 0,
      devmajor: num(h, 329, 8, 'devmajor'),
      devminor: num(h, 337, 8, 'devminor'),
      xattrs: new Map(),
      ignored: [],
    };
    if (longName) name = hdr.name = longName;
    if (longLink) linkname = hdr.linkname = longLink;
    const records = new Map([...global, ...(pax ?? [])]);
    pax = longName = longLink = null;
    applyPax(hdr, records);
    // Header-only types carry no body whatever their size field says (as in Go's archive/tar).
    if (hdr.type !== 'file') hdr.size = 0;
    const bodyLen = hdr.size;
    const bodyPadded = Math.ceil(bodyLen / TAR_BLOCK) * TAR_BLOCK;
    let consumed = 0;
    const entry: TarEntry = {
      header: hdr,
      body: async function* () {
        for await (const piece of r.take(bodyLen - consumed, 'tar entry body')) {
          consumed += piece.length;
          yield piece;
        }
      },
    };
    yield entry;
    await r.skip(bodyLen - consumed, 'tar entry body');
    // A stream that ends right after the last body, without padding or the
    // end-of-archive blocks, is accepted as Go's archive/tar accepts it
    // (umoci 0.4.7 `insert` writes layers like that). Partial padding is not.
    if (bodyPadded > bodyLen && (await r.readExact(bodyPadded - bodyLen, 'tar entry padding')) === null) return;
  }
}

function applyPax(hdr: TarHeader, rec: Map<string, Buffer>): void {
  for (const [k, v] of rec) {
    const s = () => v.toString('utf8');
    const int = () => {
      const n = Number(s());
      if (!Number.isSafeInteger(n) || n < 0) throw new TarFormatError(`bad PAX ${k} "${s()}"`);
      return n;
    };
    if (k === 'path') hdr.name = v;
    else if (k === 'linkpath') hdr.linkname = v;
    else if (k === 'size') hdr.size = int();
    else if (k === 'uid') hdr.uid = int();
    else if (k === 'gid') hdr.gid = int();
    else if (k === 'mtime') [hdr.mtime, hdr.mtimeNsec] = paxTime(s());
    else if (k === 'SCHILY.devmajor') hdr.devmajor = int();
    else if (k === 'SCHILY.devminor') hdr.devminor = int();
    else if (k.startsWith(XATTR_PAX)) hdr.xattrs.set(k.slice(XATTR_PAX.length), v);
    else if (k.startsWith('GNU.sparse.')) throw new TarFormatError(`GNU PAX sparse files are not supported (entry "${hdr.name.toString('utf8')}")`);
    else if (!['atime', 'ctime', 'uname', 'gname', 'hdrcharset', 'comment', 'charset'].includes(k)) hdr.ignored.push(k);
  }
}
