// One OCI layer → a layer tree (metadata) + a data blob (file contents).
// The layer is streamed once: its compressed bytes are hashed and counted
// (digest and size must match the descriptor), decompressed, hashed again
// (the config's diff_id), and read as tar; file bodies go straight into the
// blob writer in chunk-size pieces.
import crypto from 'node:crypto';
import { Readable, Transform, pipeline } from 'node:stream';
import zlib from 'node:zlib';
import { DecompressStream } from 'zstd-napi';
import { BlobWriter, FileChunker } from '../blob/writer';
import { xattrIndex } from '../erofs/writer-xattr';
import { TruncatedError } from './bytereader';
import { TarFormatError, TarHeader, readTar } from './tar';
import { LayerBlob, LayerTree, Meta, Node, TreeBuildError, cleanPath, show, showPath } from './tree';

export type LayerCompression = 'none' | 'gzip' | 'zstd';

const MEDIA_TYPES: Record<string, LayerCompression> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar.zstd': 'zstd',
};

export function layerCompression(mediaType: string, digest: string): LayerCompression {
  const c = MEDIA_TYPES[mediaType];
  if (c) return c;
  if (mediaType.includes('nydus')) throw new LayerError(digest, `is already a nydus layer (${mediaType}): the image is converted`);
  throw new LayerError(digest, `has unsupported media type ${mediaType}`);
}

/** Anything wrong with a layer: the message names its digest. */
export class LayerError extends Error {
  constructor(readonly digest: string, message: string) {
    super(`layer ${digest} ${message}`);
    this.name = 'LayerError';
  }
}

export interface LayerDescriptor {
  digest: string;
  size: number;
  mediaType: string;
}

export interface LayerStats {
  entries: number;
  files: number;
  fileBytes: number;
  compressedBytes: number;
  uncompressedBytes: number;
  diffId: string;
}

export interface ApplyOptions {
  /** the config's diff_id for this layer, if it has one: checked */
  diffId?: string;
  warn(msg: string): void;
  /** compressed bytes read so far */
  onBytes?(n: number): void;
}

/** Hashes and counts what passes through. */
export class Tap extends Transform {
  readonly sha = crypto.createHash('sha256');
  bytes = 0;
  /**
   * `pieces`: hand the buffers on as they came. A byte-mode readable's async
   * iterator joins all it holds into one new buffer at each step: a copy of
   * the whole layer, and garbage for the GC.
   */
  constructor(private readonly onBytes?: (n: number) => void, pieces = false) {
    super(pieces ? { writableHighWaterMark: 4 << 20, readableObjectMode: true, readableHighWaterMark: 4 } : { highWaterMark: 4 << 20 });
  }
  _transform(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null, d?: Buffer) => void): void {
    this.sha.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    cb(null, chunk);
  }
}

function decompressor(c: LayerCompression): Transform {
  // a deep readable buffer lets gunzip run ahead on the thread pool while the main thread chunks and hashes
  if (c === 'gzip') return zlib.createGunzip({ chunkSize: 1 << 20, readableHighWaterMark: 16 << 20 } as zlib.ZlibOptions);
  if (c === 'zstd') return new DecompressStream() as unknown as Transform;
  return new Transform({ transform: (chunk, _e, cb) => cb(null, chunk) });
}

/**
 * Streams one layer into `tree` (metadata) and `blob` (file data). Files
 * point at `layerBlob`, whose index is filled in once all blobs are known.
 */
export async function applyLayer(
  desc: LayerDescriptor,
  source: AsyncIterable<Buffer>,
  tree: LayerTree,
  blob: BlobWriter,
  layerBlob: LayerBlob,
  chunkSize: number,
  opts: ApplyOptions,
): Promise<LayerStats> {
  const compression = layerCompression(desc.mediaType, desc.digest);
  const raw = new Tap(opts.onBytes);
  const plain = new Tap(undefined, true); // read by readTar's async iteration
  let streamErr: Error | null = null;
  const out = pipeline(Readable.from(source, { objectMode: false }), raw, decompressor(compression), plain, (e) => {
    if (e) streamErr = e;
  });
  const stats: LayerStats = { entries: 0, files: 0, fileBytes: 0, compressedBytes: 0, uncompressedBytes: 0, diffId: '' };
  const chunker = new FileChunker(blob, chunkSize);
  const ignored = new Set<string>();
  let current = '';
  try {
    for await (const entry of readTar(out as AsyncIterable<Buffer>)) {
      const h = entry.header;
      current = show(h.name.toString('latin1'));
      stats.entries++;
      h.ignored.forEach((k) => ignored.add(k));
      const { parts, note } = cleanPath(h.name);
      if (note) opts.warn(`layer ${desc.digest}: entry "${current}" ${note}; placed at ${showPath(parts)}`);
      const meta = clampMtime(metaOf(h), current, desc, opts.warn);
      if (parts.length === 0) {
        // "/" (umoci) or ".": the root directory's own attributes
        if (h.type !== 'dir') throw new TreeBuildError(`entry "${current}" names the root but is a ${h.type}`);
        tree.setRootMeta(meta);
        continue;
      }
      const base = parts[parts.length - 1];
      if (base.startsWith('.wh.')) {
        const dir = parts.slice(0, -1);
        if (base === '.wh..wh..opq') tree.opaque(dir);
        else if (base.startsWith('.wh..wh.')) opts.warn(`layer ${desc.digest}: ignoring AUFS metadata entry "${current}"`);
        else tree.whiteout(dir, base.slice(4));
        continue;
      }
      switch (h.type) {
        case 'dir':
          tree.put(parts, { kind: 'dir', ...meta, children: new Map() });
          break;
        case 'file': {
          // place first: a bad path fails before the body is read
          const node: Node = { kind: 'reg', ...meta, size: h.size };
          tree.put(parts, node);
          for await (const piece of entry.body()) await chunker.write(piece);
          const chunks = await chunker.end();
          node.data = { blob: chunks.length ? layerBlob : null, chunks };
          stats.files++;
          stats.fileBytes += h.size;
          break;
        }
        case 'symlink':
          if (h.linkname.length === 0) throw new TreeBuildError(`symlink "${current}" has an empty target`);
          // Linux symlinks are always 0777 whatever the header says (an unpacked layer shows that)
          tree.put(parts, { kind: 'symlink', ...meta, mode: 0o777, target: h.linkname });
          break;
        case 'link': {
          const t = cleanPath(h.linkname);
          const target = t.parts.length ? tree.lookup([...tree.resolveDir(t.parts.slice(0, -1)), t.parts[t.parts.length - 1]]) : undefined;
          if (!target) throw new TreeBuildError(`hard link "${current}" points to "${show(h.linkname.toString('latin1'))}", which does not exist`);
          if (target.kind === 'dir') throw new TreeBuildError(`hard link "${current}" points to a directory`);
          tree.put(parts, target);
          break;
        }
        case 'char':
        case 'block':
          tree.put(parts, { kind: h.type, ...meta, rdev: { major: h.devmajor, minor: h.devminor } });
          break;
        case 'fifo':
          tree.put(parts, { kind: 'fifo', ...meta });
          break;
      }
    }
  } catch (e) {
    out.destroy();
    throw wrap(desc, e, streamErr, current, raw.bytes);
  }
  if (streamErr) throw wrap(desc, streamErr, null, current, raw.bytes);
  if (ignored.size) opts.warn(`layer ${desc.digest}: ignored PAX records ${[...ignored].sort().join(', ')}`);
  stats.compressedBytes = raw.bytes;
  stats.uncompressedBytes = plain.bytes;
  const digest = `sha256:${raw.sha.digest('hex')}`;
  if (raw.bytes !== desc.size) throw new LayerError(desc.digest, `is ${raw.bytes} bytes, its descriptor says ${desc.size} (truncated?)`);
  if (digest !== desc.digest) throw new LayerError(desc.digest, `does not match its digest: the content is ${digest}`);
  stats.diffId = `sha256:${plain.sha.digest('hex')}`;
  if (opts.diffId && opts.diffId !== stats.diffId) {
    throw new LayerError(desc.digest, `uncompressed digest ${stats.diffId} does not match the config's diff_id ${opts.diffId}`);
  }
  return stats;
}

function metaOf(h: TarHeader): Meta {
  // refuse xattrs EROFS cannot store now, while the entry can be named
  for (const name of h.xattrs.keys()) {
    try {
      xattrIndex(name);
    } catch (e) {
      throw new TreeBuildError(`entry "${show(h.name.toString('latin1'))}": ${(e as Error).message}`);
    }
  }
  return { mode: h.mode, uid: h.uid, gid: h.gid, mtime: h.mtime, mtimeNsec: h.mtimeNsec, xattrs: h.xattrs };
}

/** Pre-1970 mtimes: EROFS could store them, but RAFS readers take i_mtime as unsigned; clamp (and say so). */
function clampMtime(m: Meta, entry: string, desc: LayerDescriptor, warn: (m: string) => void): Meta {
  if (m.mtime >= 0) return m;
  warn(`layer ${desc.digest}: entry "${entry}" has mtime ${m.mtime} (before 1970); stored as 0`);
  return { ...m, mtime: 0, mtimeNsec: 0 };
}

function wrap(desc: LayerDescriptor, e: unknown, streamErr: Error | null, entry: string, bytes: number): Error {
  const err = (streamErr ?? e) as Error & { code?: string };
  if (err instanceof LayerError) return err;
  if (e instanceof TreeBuildError) return new LayerError(desc.digest, `is refused: ${e.message}`);
  const at = entry ? ` (at entry "${entry}", ${bytes} of ${desc.size} compressed bytes read)` : ` (${bytes} of ${desc.size} compressed bytes read)`;
  if (err instanceof TruncatedError || err.code === 'Z_BUF_ERROR' || /unexpected end/i.test(err.message)) {
    return new LayerError(desc.digest, `is truncated: ${err.message}${at}`);
  }
  if (err instanceof TarFormatError || (err.code && err.code.startsWith('Z_')) || /zstd|frame|corrupt/i.test(err.message)) {
    return new LayerError(desc.digest, `is corrupt: ${err.message}${at}`);
  }
  return err;
}
