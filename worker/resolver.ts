// Resolves the kernel's (volume, cookie) to blob content using the
// fscache_images table: the cookie is an image's fsid (its bootstrap), or a
// device tag naming one of its blobs. Opened contents are cached; the table is
// re-read on every miss, so images mounted after the worker started resolve.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { LRUCache } from 'lru-cache';
import { BlobContent, ContentResolver, UnknownBlobError } from '../content/content';
import { FlatFileContent } from '../content/flatfile';
import { NydusBlobContent } from '../content/nydusblob';
import { DataBlob } from '../image/blob/datablob';
import { FileSource } from '../image/blob/source';
import { isRafsV6 } from '../image/erofs/superblock';
import { BlobEntry, Bootstrap } from '../image/rafs/bootstrap';
import { FscacheImage, FscacheImages } from '../snapshotter/storage/images';
import { Traces, traceKey } from '../snapshotter/storage/traces';
import { FileChunks } from '../image/rafs/file-chunks';
import type { Logger } from 'pino';

/** contents kept open for the next OPEN of the same blob (each may hold an fd) */
const MAX_CACHED = 256;
/** parsed bootstraps kept (metadata only: a few MiB at most each) */
const MAX_BOOTSTRAPS = 32;

/** Opens a blob that lives in a registry (the fetcher provides it). */
export type RemoteBlobOpener = (img: FscacheImage, entry: BlobEntry, tableDigests: Buffer[] | null) => Promise<BlobContent>;

/** Told when a content is opened (with the image it was opened for) and before it is closed: metrics follow contents so. */
export interface ContentHooks {
  opened(content: BlobContent, image: string): void;
  closing(content: BlobContent): void;
}

/** How metrics name an image: its reference, or for a local mount its fsid. */
export function imageLabel(img: FscacheImage): string {
  return img.imageRef || `fsid:${img.fsid}`;
}

export class MetadataResolver implements ContentResolver {
  /** Contents by volume and cookie. One evicted while an object still uses it is closed on its last release. */
  private readonly cache = new LRUCache<string, Promise<BlobContent>>({
    max: MAX_CACHED,
    // After a turn of the loop: an OPEN awaiting this very lookup counts itself as a user first.
    dispose: (p) => void p.then((c) => setImmediate(() => this.closeIfUnused(c)), () => undefined),
  });
  /** open objects per content: a content is closed only when neither the cache nor an object holds it */
  private readonly users = new Map<BlobContent, number>();
  private readonly cached = new Set<BlobContent>();
  private readonly bootstraps = new LRUCache<string, ParsedBootstrap>({ max: MAX_BOOTSTRAPS });
  private readonly images: FscacheImages;
  private readonly traces: Traces;

  constructor(
    private readonly db: Database.Database,
    private readonly remote?: RemoteBlobOpener,
    private readonly hooks?: ContentHooks,
  ) {
    this.images = new FscacheImages(db);
    this.traces = new Traces(db);
  }

  /** Opens lazysnapd's metadata read-only. */
  static open(dbPath: string, remote?: RemoteBlobOpener, hooks?: ContentHooks): MetadataResolver {
    return new MetadataResolver(new Database(dbPath, { readonly: true, fileMustExist: true }), remote, hooks);
  }

  close(): void {
    this.cache.clear();
    this.db.close();
  }

  async resolve(volume: string, cookie: string): Promise<BlobContent> {
    const key = `${volume}\0${cookie}`;
    let p = this.cache.get(key);
    if (!p) {
      p = this.lookup(volume, cookie);
      this.cache.set(key, p);
      p.then(
        (c) => this.cached.add(c),
        () => this.cache.get(key) === p && this.cache.delete(key), // a failure is not remembered: the next OPEN tries again
      );
    }
    const c = await p;
    this.users.set(c, (this.users.get(c) ?? 0) + 1);
    return c;
  }

  release(content: BlobContent): void {
    const n = (this.users.get(content) ?? 0) - 1;
    if (n > 0) return void this.users.set(content, n);
    this.users.delete(content);
    if (!this.cached.has(content)) this.closeContent(content);
  }

  /** Evicted from the cache: closed now, or at its last release. */
  private closeIfUnused(c: BlobContent): void {
    this.cached.delete(c);
    if (!this.users.has(c)) this.closeContent(c);
  }

  private closeContent(c: BlobContent): void {
    this.hooks?.closing(c);
    c.close?.();
  }

  private async lookup(volume: string, cookie: string): Promise<BlobContent> {
    const images = this.images.inVolume(volume);
    const own = images.find((i) => i.fsid === cookie);
    if (own) return this.opened(await FlatFileContent.open(own.bootstrap, `bootstrap of ${own.fsid}`), own);
    for (const img of images) {
      const c = await this.blobOf(img, cookie);
      if (c) return this.opened(c, img);
    }
    throw new UnknownBlobError(volume, cookie);
  }

  private opened(c: BlobContent, img: FscacheImage): BlobContent {
    this.hooks?.opened(c, imageLabel(img));
    return c;
  }

  /** The blob an image names `tag`: a nydus data blob, or a flat extra device of a plain EROFS image. */
  private async blobOf(img: FscacheImage, tag: string): Promise<BlobContent | null> {
    const bs = this.bootstrap(img.bootstrap);
    if (bs) {
      const i = bs.devices.findIndex((d) => d.tag === tag);
      if (i < 0) return null;
      const entry = bs.blobs[i];
      if (!img.blobsDir) {
        if (!img.imageRef) return null;
        if (!this.remote) throw new Error(`blob ${entry.blobId} of ${img.imageRef} is in a registry, and no fetcher is configured`);
        return this.remote(img, entry, bs.chunkTableDigests(i));
      }
      const file = path.join(img.blobsDir, entry.blobId);
      const src = await FileSource.open(file, `blob ${entry.blobId}`);
      try {
        return new NydusBlobContent(await DataBlob.open(entry, src, bs.chunkTableDigests(i)));
      } catch (e) {
        await src.close();
        throw e;
      }
    }
    if (!img.blobsDir || tag.includes('/')) return null;
    const file = path.join(img.blobsDir, tag);
    return fs.existsSync(file) ? FlatFileContent.open(file, `device ${tag}`) : null;
  }

  /** The parsed bootstrap of a RAFS image; null for a plain EROFS image, of which only the first block is read. */
  private bootstrap(file: string): Bootstrap | null {
    return this.parsed(file).bs;
  }

  private parsed(file: string): ParsedBootstrap {
    let hit = this.bootstraps.get(file);
    if (!hit) {
      if (isRafsV6(readHead(file, 4096))) {
        const buf = fs.readFileSync(file);
        hit = { bs: new Bootstrap(buf, `bootstrap ${file}`), key: traceKey(buf) };
      } else hit = { bs: null, key: '' };
      this.bootstraps.set(file, hit);
    }
    return hit;
  }

  /** (volume, cookie) of every object a mounted image has: its bootstrap and its blobs. */
  mountedObjects(): [string, string][] {
    const out: [string, string][] = [];
    for (const img of this.images.all()) {
      if (!img.mountpoint) continue;
      const volume = img.domain || img.fsid;
      out.push([volume, img.fsid]);
      try {
        for (const d of this.bootstrap(img.bootstrap)?.devices ?? []) out.push([volume, d.tag]);
      } catch {
        // an unreadable bootstrap fails its OPEN later, with the error
      }
    }
    return out;
  }

  /**
   * Learned prefetch: the chunks of blob `cookie` to fetch first, as
   * uncompressed offsets in the order to fetch them. From the traces of the
   * images in the volume that have this blob (recorded on this node), else
   * from their bootstraps' prefetch tables (baked in by the converter, or by
   * upstream nydus-image). Empty when there is neither.
   */
  replayPlan(volume: string, cookie: string): number[] {
    const out: number[] = [];
    const seen = new Set<number>();
    const add = (o: number) => {
      if (!seen.has(o)) {
        seen.add(o);
        out.push(o);
      }
    };
    for (const img of this.images.inVolume(volume)) {
      const p = this.parsed(img.bootstrap);
      const bs = p.bs;
      const i = bs ? bs.devices.findIndex((d) => d.tag === cookie) : -1;
      if (!bs || i < 0) continue;
      const trace = this.traces.get(p.key);
      if (trace) {
        for (const e of trace.entries) if (e.blob === bs.blobs[i].blobId) add(e.uOffset);
      } else if (bs.prefetch.length) {
        p.files ??= new FileChunks(bs);
        for (const nid of bs.prefetch) for (const c of p.files.ofInode(nid)) if (c.blobIndex === i) add(c.uOffset);
      }
    }
    return out;
  }
}

interface ParsedBootstrap {
  bs: Bootstrap | null;
  /** its trace key ('' for a plain EROFS image) */
  key: string;
  /** built when a prefetch table needs it */
  files?: FileChunks;
}

function readHead(file: string, len: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(len);
    return buf.subarray(0, fs.readSync(fd, buf, 0, len, 0));
  } finally {
    fs.closeSync(fd);
  }
}

/** Learned prefetch's plan for a blob, if replay is on; a bootstrap that cannot be read means no replay, not a failure. */
export function replayPlanOf(resolver: MetadataResolver, replay: boolean, log: Logger): ((volume: string, cookie: string) => number[]) | undefined {
  if (!replay) return undefined;
  return (volume, cookie) => {
    try {
      return resolver.replayPlan(volume, cookie);
    } catch (err) {
      log.warn({ volume, cookie, err: (err as Error).message }, 'cannot read the recorded start of this blob; not replaying it');
      return [];
    }
  };
}
