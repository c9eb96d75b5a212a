// Test helpers for `lazysnap convert`: tars built byte by byte (so tests can
// write what tar-stream would not: non-UTF-8 names, binary PAX xattrs, '..'),
// OCI layouts around them, reading a converted nydus layout back, rebuilding
// blobs' uncompressed spaces, and file-backed EROFS mounts.
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import * as zstd from 'zstd-napi';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { DataBlob } from '../../image/blob/datablob';
import { FileSource } from '../../image/blob/source';
import { runOk } from './proc';

export const sha256hex = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

export type EntryType = 'file' | 'dir' | 'symlink' | 'link' | 'char' | 'block' | 'fifo';

export interface TarSpec {
  name: string | Buffer;
  type?: EntryType;
  data?: Buffer;
  /** a body of this many zero bytes, streamed (for huge sparse files) */
  zeros?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  mtimeNsec?: number;
  linkname?: string | Buffer;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, Buffer | string>;
  /** force a PAX path record even for short names */
  paxPath?: boolean;
}

const TYPEFLAG: Record<EntryType, string> = { file: '0', link: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

function octal(v: number, len: number): string {
  return v.toString(8).padStart(len - 1, '0') + '\0';
}

/** One 512-byte ustar header. Names longer than 100 bytes must go through PAX. */
export function tarHeader(name: Buffer, type: string, size: number, o: { mode?: number; uid?: number; gid?: number; mtime?: number; linkname?: Buffer; devmajor?: number; devminor?: number }): Buffer {
  const h = Buffer.alloc(512);
  name.copy(h, 0, 0, Math.min(100, name.length));
  h.write(octal(o.mode ?? 0o644, 8), 100, 'latin1');
  h.write(octal(o.uid ?? 0, 8), 108, 'latin1');
  h.write(octal(o.gid ?? 0, 8), 116, 'latin1');
  h.write(octal(size, 12), 124, 'latin1');
  h.write(octal(Math.max(0, o.mtime ?? 0), 12), 136, 'latin1');
  h.write(type, 156, 'latin1');
  if (o.linkname) o.linkname.copy(h, 157, 0, Math.min(100, o.linkname.length));
  h.write('ustar\0' + '00', 257, 'latin1');
  h.write(octal(o.devmajor ?? 0, 8), 329, 'latin1');
  h.write(octal(o.devminor ?? 0, 8), 337, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'latin1'), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);

/** A tar as a stream of buffers (bodies of `zeros` entries are generated, never held whole). */
export async function* tarStream(entries: TarSpec[], opts: { end?: boolean } = {}): AsyncGenerator<Buffer> {
  for (const e of entries) {
    const name = typeof e.name === 'string' ? Buffer.from(e.name) : e.name;
    const link = e.linkname === undefined ? undefined : typeof e.linkname === 'string' ? Buffer.from(e.linkname) : e.linkname;
    const type = e.type ?? 'file';
    const size = type === 'file' ? (e.zeros ?? e.data?.length ?? 0) : 0;
    const recs: Buffer[] = [];
    if (name.length > 100 || e.paxPath) recs.push(paxRecord('path', name));
    if (link && link.length > 100) recs.push(paxRecord('linkpath', link));
    if (e.mtimeNsec) recs.push(paxRecord('mtime', Buffer.from(`${e.mtime ?? 0}.${String(e.mtimeNsec).padStart(9, '0')}`)));
    for (const [k, v] of Object.entries(e.xattrs ?? {})) recs.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.isBuffer(v) ? v : Buffer.from(v)));
    if (recs.length) {
      const body = Buffer.concat(recs);
      yield tarHeader(Buffer.from('PaxHeaders/x'), 'x', body.length, {});
      yield Buffer.concat([body, pad(body.length)]);
    }
    yield tarHeader(name, TYPEFLAG[type], size, { ...e, linkname: link });
    if (type !== 'file') continue;
    if (e.zeros !== undefined) {
      const z = Buffer.alloc(1 << 20);
      for (let left = e.zeros; left > 0; left -= z.length) yield left >= z.length ? z : z.subarray(0, left);
    } else if (e.data) yield e.data;
    yield pad(size);
  }
  if (opts.end !== false) yield Buffer.alloc(1024);
}

export async function tarBuffer(entries: TarSpec[], opts: { end?: boolean } = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of tarStream(entries, opts)) parts.push(Buffer.from(b));
  return Buffer.concat(parts);
}

export type Compression = 'none' | 'gzip' | 'zstd';
export const LAYER_MEDIA: Record<Compression, string> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

export function compressLayer(tar: Buffer, c: Compression): Buffer {
  if (c === 'gzip') return zlib.gzipSync(tar);
  if (c === 'zstd') return zstd.compress(tar);
  return tar;
}

export interface LayerInput {
  /** the layer blob as stored (already compressed), or a tar stream stored uncompressed */
  bytes?: Buffer;
  stream?: AsyncIterable<Buffer>;
  mediaType: string;
  /** the config's diff_id; defaults to sha256 of the uncompressed tar when known */
  diffId?: string;
}

async function putBlob(dir: string, data: Buffer): Promise<{ digest: string; size: number }> {
  const hex = sha256hex(data);
  await fsp.mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  await fsp.writeFile(path.join(dir, 'blobs', 'sha256', hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

async function putStream(dir: string, src: AsyncIterable<Buffer>): Promise<{ digest: string; size: number }> {
  await fsp.mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  const tmp = path.join(dir, 'blobs', 'sha256', '.tmp');
  const h = crypto.createHash('sha256');
  const fh = await fsp.open(tmp, 'w');
  let size = 0;
  for await (const b of src) {
    h.update(b);
    size += b.length;
    await fh.write(b);
  }
  await fh.close();
  const hex = h.digest('hex');
  await fsp.rename(tmp, path.join(dir, 'blobs', 'sha256', hex));
  return { digest: `sha256:${hex}`, size };
}

/** Writes an OCI layout with one single-platform image tagged `tag`. */
export async function writeLayout(dir: string, layers: LayerInput[], opts: { tag?: string; config?: Record<string, unknown>; manifestMediaType?: string } = {}): Promise<{ manifestDigest: string; layers: { digest: string; size: number; mediaType: string }[] }> {
  const descs = [];
  const diffIds: string[] = [];
  for (const l of layers) {
    const d = l.stream ? await putStream(dir, l.stream) : await putBlob(dir, l.bytes!);
    descs.push({ mediaType: l.mediaType, ...d });
    diffIds.push(l.diffId ?? (l.mediaType.endsWith('.tar') ? d.digest : `sha256:${sha256hex(decompress(l.bytes!, l.mediaType))}`));
  }
  const config = Buffer.from(JSON.stringify({ created: '2024-01-02T03:04:05.123456789Z', architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: diffIds }, ...opts.config }));
  const c = await putBlob(dir, config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: opts.manifestMediaType ?? 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...c },
    layers: descs,
  }));
  const m = await putBlob(dir, manifest);
  await fsp.writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const indexPath = path.join(dir, 'index.json');
  const old = fs.existsSync(indexPath) ? JSON.parse(await fsp.readFile(indexPath, 'utf8')).manifests : [];
  const tag = opts.tag ?? 'latest';
  const entry = { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, annotations: { 'org.opencontainers.image.ref.name': tag } };
  await fsp.writeFile(indexPath, JSON.stringify({ schemaVersion: 2, manifests: [...old.filter((d: { annotations?: Record<string, string> }) => d.annotations?.['org.opencontainers.image.ref.name'] !== tag), entry] }));
  return { manifestDigest: m.digest, layers: descs };
}

function decompress(b: Buffer, mediaType: string): Buffer {
  if (mediaType.endsWith('gzip')) return zlib.gunzipSync(b);
  if (mediaType.endsWith('zstd')) return Buffer.from(zstd.decompress(b));
  return b;
}

/** One-call layout from tars: each entry list becomes a layer. */
export async function layoutFromTars(dir: string, layers: TarSpec[][], c: Compression = 'gzip', tag = 'latest'): Promise<void> {
  const ins: LayerInput[] = [];
  for (const entries of layers) {
    const tar = await tarBuffer(entries);
    ins.push({ bytes: compressLayer(tar, c), mediaType: LAYER_MEDIA[c], diffId: `sha256:${sha256hex(tar)}` });
  }
  await writeLayout(dir, ins, { tag });
}

export interface NydusImage {
  index: { manifests: { digest: string; platform?: { 'os.features'?: string[] }; annotations?: Record<string, string> }[] };
  manifest: { config: { mediaType: string; digest: string }; layers: { mediaType: string; digest: string; size: number; annotations?: Record<string, string> }[] };
  config: { rootfs: { diff_ids: string[] }; history?: unknown[] };
  bootstrap: Buffer;
  blobsDir: string;
  blobFiles: string[];
}

/** Reads a converted image back from an OCI layout: manifest, config, bootstrap (unpacked from its tar.gz). */
export async function readNydusLayout(dir: string, tag: string): Promise<NydusImage> {
  const blobsDir = path.join(dir, 'blobs', 'sha256');
  const index = JSON.parse(await fsp.readFile(path.join(dir, 'index.json'), 'utf8'));
  const d = index.manifests.find((m: { annotations?: Record<string, string> }) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!d) throw new Error(`${dir}: no manifest tagged ${tag}`);
  const read = (digest: string) => fsp.readFile(path.join(blobsDir, digest.slice(7)));
  const manifest = JSON.parse((await read(d.digest)).toString());
  const config = JSON.parse((await read(manifest.config.digest)).toString());
  const bootLayer = manifest.layers[manifest.layers.length - 1];
  const tar = zlib.gunzipSync(await read(bootLayer.digest));
  const size = parseInt(tar.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim(), 8);
  const name = tar.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '');
  if (name !== 'image/image.boot') throw new Error(`bootstrap layer holds ${name}`);
  return {
    index,
    manifest,
    config,
    bootstrap: tar.subarray(512, 512 + size),
    blobsDir,
    blobFiles: manifest.layers.slice(0, -1).map((l: { digest: string }) => path.join(blobsDir, l.digest.slice(7))),
  };
}

/**
 * Rebuilds each blob's uncompressed address space into outDir/<id>.raw (chunk
 * data at its uncompressed offset, holes elsewhere; file size = uncompressed
 * size), in device-table order: what a fully fetched cache would hold.
 */
export async function rebuildBlobs(bootstrap: Buffer, blobsDir: string, outDir: string): Promise<string[]> {
  const bs = new Bootstrap(bootstrap);
  const out: string[] = [];
  for (const e of bs.blobs) {
    const src = await FileSource.open(path.join(blobsDir, e.blobId));
    const file = path.join(outDir, `${e.blobId}.raw`);
    const fh = await fsp.open(file, 'w');
    try {
      await fh.truncate(e.uncompressedSize);
      const blob = await DataBlob.open(e, src);
      for (const c of blob.chunks) {
        const data = await blob.readChunk(c);
        await fh.write(data, 0, data.length, c.uOffset);
      }
    } finally {
      await fh.close();
      await src.close();
    }
    out.push(file);
  }
  return out;
}

/**
 * mount(2) of a file-backed EROFS image with its blobs as extra devices, one
 * `device=` option per device in device-table order. Not mount(8): util-linux
 * 2.38 and busybox attach a loop device to a regular-file source, and a
 * block-device EROFS then refuses file paths in device= (EINVAL, nothing in
 * dmesg). Python's ctypes is the smallest way to call mount(2) directly.
 */
export async function mountErofsFile(image: string, mnt: string, devices: string[]): Promise<void> {
  for (const p of [image, mnt, ...devices]) if (p.includes(',') || p.includes('\n')) throw new Error(`path unusable in mount options: ${p}`);
  const opts = devices.map((d) => `device=${d}`).join(',');
  const script = [
    'import ctypes, os, sys',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'r = libc.mount(sys.argv[1].encode(), sys.argv[2].encode(), b"erofs", 1, sys.argv[3].encode())',
    'e = ctypes.get_errno()',
    'sys.exit(0) if r == 0 else sys.exit("mount(2) erofs failed: " + os.strerror(e))',
  ].join('\n');
  await runOk('/usr/bin/python3', ['-c', script, image, mnt, opts]);
}

/** Appends a layer to the image tagged `tag` in an OCI layout (new config, manifest and index entry). */
export async function appendLayer(dir: string, tag: string, layer: Buffer, mediaType: string, diffId: string): Promise<void> {
  const indexPath = path.join(dir, 'index.json');
  const index = JSON.parse(await fsp.readFile(indexPath, 'utf8'));
  const at = index.manifests.findIndex((d: { annotations?: Record<string, string> }) => d.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (at < 0) throw new Error(`${dir}: no ${tag}`);
  const read = async (digest: string) => JSON.parse((await fsp.readFile(path.join(dir, 'blobs', 'sha256', digest.slice(7)))).toString());
  const manifest = await read(index.manifests[at].digest);
  const config = await read(manifest.config.digest);
  const l = await putBlob(dir, layer);
  config.rootfs.diff_ids.push(diffId);
  config.history = [...(config.history ?? []), { created: '1970-01-01T00:00:00Z', created_by: 'lazysnap test: hand-made upper layer' }];
  const c = await putBlob(dir, Buffer.from(JSON.stringify(config)));
  manifest.config = { ...manifest.config, ...c };
  manifest.layers.push({ mediaType, ...l });
  const m = await putBlob(dir, Buffer.from(JSON.stringify(manifest)));
  index.manifests[at] = { ...index.manifests[at], ...m };
  await fsp.writeFile(indexPath, JSON.stringify(index));
}

export const DEBOOTSTRAP_CACHE = '/var/cache/lazysnap-test/debootstrap-bookworm-minbase.tar.gz';
const DEBIAN_MIRROR = 'http://deb.debian.org/debian';

/**
 * The debootstrap --variant=minbase bookworm rootfs as a tarball, cached:
 * the first run takes about a minute (needs the Debian mirror), later ones
 * reuse it. apt's downloaded .debs and lists are dropped (~127 MB left).
 */
export async function debootstrapTarball(): Promise<string> {
  if (fs.existsSync(DEBOOTSTRAP_CACHE)) return DEBOOTSTRAP_CACHE;
  const cacheDir = path.dirname(DEBOOTSTRAP_CACHE);
  await fsp.mkdir(cacheDir, { recursive: true });
  const work = await fsp.mkdtemp(path.join(cacheDir, 'build-'));
  try {
    const rootfs = path.join(work, 'rootfs');
    if (!fs.existsSync('/usr/sbin/debootstrap')) throw new Error('debootstrap missing: apt-get install -t bookworm debootstrap');
    await runOk('/usr/sbin/debootstrap', ['--variant=minbase', 'bookworm', rootfs, DEBIAN_MIRROR], { timeoutMs: 900_000 });
    await runOk('sh', ['-c', 'rm -f "$1"/var/cache/apt/archives/*.deb && rm -rf "$1"/var/lib/apt/lists/*', 'sh', rootfs]);
    const tmp = `${DEBOOTSTRAP_CACHE}.tmp`;
    await runOk('tar', ['--numeric-owner', '--xattrs', "--xattrs-include=*", '-C', rootfs, '-czf', tmp, '.'], { timeoutMs: 300_000 });
    await fsp.rename(tmp, DEBOOTSTRAP_CACHE);
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
  return DEBOOTSTRAP_CACHE;
}

/** An OCI layout (dir/oci, tag "debian") holding the debootstrap rootfs as one umoci layer. */
export async function buildDebootstrapImage(dir: string): Promise<{ layoutDir: string; ref: string; rootfs: string }> {
  const tarball = await debootstrapTarball();
  const rootfs = path.join(dir, 'rootfs');
  const layoutDir = path.join(dir, 'oci');
  await fsp.mkdir(rootfs, { recursive: true });
  await runOk('tar', ['--numeric-owner', '--xattrs', "--xattrs-include=*", '-C', rootfs, '-xpzf', tarball], { timeoutMs: 300_000 });
  const image = `${layoutDir}:debian`;
  await runOk('umoci', ['init', '--layout', layoutDir]);
  await runOk('umoci', ['new', '--image', image]);
  await runOk('umoci', ['insert', '--image', image, '--history.created', '1970-01-01T00:00:00Z', rootfs, '/'], { timeoutMs: 600_000 });
  await runOk('umoci', ['config', '--image', image, '--created', '1970-01-01T00:00:00Z', '--history.created', '1970-01-01T00:00:00Z',
    '--config.cmd', '/bin/bash', '--os', 'linux', '--architecture', 'amd64']);
  await runOk('umoci', ['gc', '--layout', layoutDir]);
  return { layoutDir, ref: 'debian', rootfs };
}

/** A Python walker: one JSON record per entry, paths as hex of their raw bytes. */
const DUMP_TREE = String.raw`
import hashlib, json, os, stat, sys
root = os.fsencode(sys.argv[1])
out = {}
def rec(p, rel):
    st = os.lstat(p)
    r = {'type': stat.S_IFMT(st.st_mode), 'mode': stat.S_IMODE(st.st_mode), 'uid': st.st_uid, 'gid': st.st_gid,
         'mtime_ns': st.st_mtime_ns, 'nlink': st.st_nlink, 'ino': st.st_ino}
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            for b in iter(lambda: f.read(1 << 20), b''):
                h.update(b)
        r['size'] = st.st_size
        r['sha256'] = h.hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        r['target'] = os.readlink(p).hex()
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        r['rdev'] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    if stat.S_ISDIR(st.st_mode):
        del r['ino']
    xs = {}
    for n in sorted(os.listxattr(p, follow_symlinks=False)):
        xs[n] = os.getxattr(p, n, follow_symlinks=False).hex()
    if xs:
        r['xattrs'] = xs
    out[rel.hex()] = r
def walk(p, rel):
    rec(p, rel)
    if stat.S_ISDIR(os.lstat(p).st_mode):
        for n in sorted(os.listdir(p)):
            walk(os.path.join(p, n), rel + b'/' + n if rel != b'/' else b'/' + n)
walk(root, b'/')
json.dump(out, sys.stdout)
`;

export interface TreeRecord {
  type: number;
  mode: number;
  uid: number;
  gid: number;
  mtime_ns: number;
  nlink: number;
  ino?: number;
  size?: number;
  sha256?: string;
  target?: string;
  rdev?: [number, number];
  xattrs?: Record<string, string>;
}

/** Every entry under root (the root itself is "/"), keyed by the raw path bytes in hex. */
export async function dumpTree(root: string): Promise<Map<string, TreeRecord>> {
  const r = await runOk('/usr/bin/python3', ['-c', DUMP_TREE, root], { timeoutMs: 600_000 });
  return new Map(Object.entries(JSON.parse(r.stdout) as Record<string, TreeRecord>));
}

export const showHexPath = (hex: string) => Buffer.from(hex, 'hex').toString('utf8');

/**
 * Differences between two trees (want = reference, got = converted): entries,
 * every attribute, and hard-link groups (paths sharing an inode). Inode
 * numbers themselves are not compared.
 */
export function diffTrees(want: Map<string, TreeRecord>, got: Map<string, TreeRecord>): string[] {
  const out: string[] = [];
  for (const k of want.keys()) if (!got.has(k)) out.push(`missing ${showHexPath(k)}`);
  for (const k of got.keys()) if (!want.has(k)) out.push(`unexpected ${showHexPath(k)}`);
  const groups = (t: Map<string, TreeRecord>) => {
    const byIno = new Map<number, string[]>();
    for (const [k, r] of t) if (r.ino !== undefined) byIno.set(r.ino, [...(byIno.get(r.ino) ?? []), k]);
    const of = new Map<string, string>();
    for (const ks of byIno.values()) for (const k of ks) of.set(k, [...ks].sort().join(','));
    return of;
  };
  const gw = groups(want);
  const gg = groups(got);
  for (const [k, w] of want) {
    const g = got.get(k);
    if (!g) continue;
    const { ino: _a, ...wr } = w;
    const { ino: _b, ...gr } = g;
    void _a;
    void _b;
    for (const f of new Set([...Object.keys(wr), ...Object.keys(gr)])) {
      const a = JSON.stringify((wr as Record<string, unknown>)[f]);
      const b = JSON.stringify((gr as Record<string, unknown>)[f]);
      if (a !== b) out.push(`${showHexPath(k)}: ${f} ${a} != ${b}`);
    }
    if (gw.get(k) !== gg.get(k)) out.push(`${showHexPath(k)}: hard link group ${gw.get(k)} != ${gg.get(k)}`);
  }
  return out;
}

/**
 * A 2-layer image (dir/oci, tag "layered"): a base rootfs layer built with
 * umoci (busybox, hard links, a fifo, a device node, xattrs, a usrmerge-style
 * symlink) and a hand-made upper layer with whiteouts (file, directory,
 * symlink), an opaque directory, replacements both ways, hard links within the
 * layer and into the base, devices, PAX xattrs and nanosecond mtimes, a
 * non-UTF-8 name, a long name, a sparse file and an entry under a symlinked parent.
 */
export async function buildLayeredImage(dir: string): Promise<{ layoutDir: string; ref: string }> {
  const base = path.join(dir, 'base');
  const layoutDir = path.join(dir, 'oci');
  const mk = async (p: string, data?: string | Buffer, mode = 0o644) => {
    const full = path.join(base, p);
    await fsp.mkdir(path.dirname(full), { recursive: true });
    if (data !== undefined) {
      await fsp.writeFile(full, data);
      await fsp.chmod(full, mode);
    } else await fsp.mkdir(full, { recursive: true });
  };
  await mk('bin');
  await fsp.copyFile('/bin/busybox', path.join(base, 'bin/busybox'));
  for (const a of ['sh', 'cat', 'ls']) await fsp.symlink('busybox', path.join(base, 'bin', a));
  await mk('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
  await mk('etc/group', 'root:x:0:\n');
  await mk('etc/hosts', '127.0.0.1 localhost\n');
  await mk('etc/motd', 'welcome\n');
  await mk('opt/app/a', 'a');
  await mk('opt/app/b', 'b');
  await mk('opt/app/c/d', 'd');
  await mk('var/lib/x', 'x');
  await mk('var/lib/y', 'y');
  await mk('usr/share/doc/pkg/README', 'readme');
  await mk('usr/share/misc/magic', 'magic');
  await mk('usr/lib/libbase.so', 'base lib', 0o755);
  await fsp.symlink('usr/lib', path.join(base, 'lib'));
  await fsp.link(path.join(base, 'etc/passwd'), path.join(base, 'etc/passwd.hardlink'));
  await mk('tmp');
  await fsp.chmod(path.join(base, 'tmp'), 0o1777);
  await mk('home/user/file', 'user data', 0o600);
  await fsp.chown(path.join(base, 'home/user'), 1000, 1000);
  await fsp.chown(path.join(base, 'home/user/file'), 1000, 1000);
  // special files and xattrs need syscalls Node lacks
  await runOk('/usr/bin/python3', ['-c', [
    'import os, sys',
    'b = sys.argv[1]',
    'os.mkfifo(b + "/tmp/fifo", 0o600)',
    'os.makedirs(b + "/dev", exist_ok=True)',
    'os.mknod(b + "/dev/null", 0o20666, os.makedev(1, 3))',
    'os.setxattr(b + "/opt/app/a", "user.origin", b"base")',
    'os.setxattr(b + "/etc/hosts", "trusted.note", bytes(range(256)))',
  ].join('\n'), base]);
  // fixed times everywhere (also on symlinks), so the image is reproducible
  await runOk('find', [base, '-exec', 'touch', '-h', '-d', '2001-02-03 04:05:06', '{}', '+']);
  const image = `${layoutDir}:layered`;
  await runOk('umoci', ['init', '--layout', layoutDir]);
  await runOk('umoci', ['new', '--image', image]);
  await runOk('umoci', ['insert', '--image', image, '--history.created', '1970-01-01T00:00:00Z', base, '/']);
  await runOk('umoci', ['config', '--image', image, '--created', '1970-01-01T00:00:00Z', '--history.created', '1970-01-01T00:00:00Z',
    '--config.cmd', '/bin/sh', '--os', 'linux', '--architecture', 'amd64']);
  await runOk('umoci', ['gc', '--layout', layoutDir]);

  const T = 1_700_000_000;
  const dirE = (name: string, mode = 0o755, o: Partial<TarSpec> = {}): TarSpec => ({ name, type: 'dir', mode, mtime: T, ...o });
  const fileE = (name: string | Buffer, data: string | Buffer, o: Partial<TarSpec> = {}): TarSpec => ({ name, data: Buffer.isBuffer(data) ? data : Buffer.from(data), mode: 0o644, mtime: T, ...o });
  const sparse = Buffer.alloc(1 << 20, 0x5a);
  // Every directory the layer touches has its own entry: umoci (like containerd)
  // gives a directory created for a bare child, or changed without an entry,
  // the wall-clock time; the converter keeps it deterministic instead.
  const upper: TarSpec[] = [
    dirE('./', 0o755, { mtime: T - 1 }),
    dirE('opt/app', 0o750, { uid: 2, gid: 3 }),
    fileE('opt/app/.wh..wh..opq', ''),
    fileE('opt/app/new', 'only this survives'),
    dirE('var/lib'),
    fileE('var/lib/.wh.x', ''),
    fileE('usr/share/.wh.doc', ''),
    fileE('bin/.wh.cat', ''),
    fileE('etc/hosts', '10.0.0.1 replaced\n', { xattrs: { 'user.replaced': 'yes' } }),
    dirE('etc/motd', 0o700),
    fileE('etc/motd/inside', 'dir replaced a file'),
    fileE('usr/share/misc', 'file replaced a dir'),
    { name: 'etc/passwd.upper-link', type: 'link', linkname: 'etc/passwd', mtime: T },
    dirE('newdir', 0o1777, { uid: 100000, gid: 100001 }),
    fileE('newdir/f', 'shared', { mode: 0o4755 }),
    { name: 'newdir/hl', type: 'link', linkname: 'newdir/f', mtime: T },
    fileE('newdir/x', 'xattrs', {
      xattrs: { 'user.test': 'value', 'trusted.t': Buffer.from([0, 1, 2, 255]), 'security.capability': Buffer.from('0100000200200000000000000000000000000000', 'hex') },
    }),
    fileE(Buffer.from([0x6e, 0x65, 0x77, 0x64, 0x69, 0x72, 0x2f, 0x63, 0x61, 0x66, 0xe9]), 'latin1 name'),
    fileE('newdir/ns', 'nanoseconds', { mtime: T + 5, mtimeNsec: 123456789 }),
    fileE('newdir/' + 'long-'.repeat(30) + 'name', 'long name'),
    { name: 'newdir/link', type: 'symlink', linkname: '../etc/hosts', mtime: T },
    { name: 'dev/null2', type: 'char', devmajor: 1, devminor: 3, mode: 0o666, mtime: T },
    { name: 'dev/bigminor', type: 'char', devmajor: 4, devminor: 300, mode: 0o620, mtime: T },
    { name: 'dev/loopX', type: 'block', devmajor: 7, devminor: 200, mode: 0o660, mtime: T },
    // (a parent created implicitly for a bare child gives umoci's root the wall-clock time)
    dirE('run'),
    { name: 'run/fifo', type: 'fifo', mode: 0o644, mtime: T },
    fileE('lib/libupper.so', 'lands in usr/lib', { mode: 0o755 }),
  ];
  // then a sparse file: 64 MiB of zeros with 1 MiB of data in the middle
  const parts: Buffer[] = [];
  for await (const b of tarStream(upper, { end: false })) parts.push(Buffer.from(b));
  const size = 64 << 20;
  for await (const b of tarStream([dirE('sparse', 0o755)], { end: false })) parts.push(Buffer.from(b));
  parts.push(tarHeader(Buffer.from('sparse/file'), '0', size, { mode: 0o644, mtime: T }));
  const z = Buffer.alloc(1 << 20);
  for (let off = 0; off < size; off += z.length) parts.push(off === 32 << 20 ? sparse : z);
  const upperTar = Buffer.concat([...parts, Buffer.alloc(1024)]);
  const gz = zlib.gzipSync(upperTar);
  await appendLayer(layoutDir, 'layered', gz, LAYER_MEDIA.gzip, `sha256:${sha256hex(upperTar)}`);
  return { layoutDir, ref: 'layered' };
}
