// Resolves the kernel's (volume, cookie) to blob content using the
// fscache_images table: the cookie is an image's fsid (its bootstrap), or a
// device tag naming one of its blobs. Opened blobs are cached; the table is
// re-read on every miss, so images mounted after the worker started resolve.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { BlobContent, ContentResolver, UnknownBlobError } from '../content/content';
import { FlatFileContent } from '../content/flatfile';
import { NydusBlobContent } from '../content/nydusblob';
import { DataBlob } from '../image/blob/datablob';
import { FileSource } from '../image/blob/source';
import { COMPAT_RAFS_V6, EROFS_SUPER_OFFSET } from '../image/erofs/superblock';
import { BlobEntry, Bootstrap } from '../image/rafs/bootstrap';
import { FscacheImage, FscacheImages } from '../snapshotter/storage/images';

const MAX_CACHED = 256;

/** Opens a blob that lives in a registry (the fetcher provides it). */
export type RemoteBlobOpener = (img: FscacheImage, entry: BlobEntry, tableDigests: Buffer[] | null) => Promise<BlobContent>;

export class MetadataResolver implements ContentResolver {
  private readonly cache = new Map<string, Promise<BlobContent>>();
  private readonly bootstraps = new Map<string, Bootstrap | null>();
  private readonly images: FscacheImages;

  constructor(
    private readonly db: Database.Database,
    private readonly remote?: RemoteBlobOpener,
  ) {
    this.images = new FscacheImages(db);
  }

  /** Opens lazysnapd's metadata read-only. */
  static open(dbPath: string, remote?: RemoteBlobOpener): MetadataResolver {
    return new MetadataResolver(new Database(dbPath, { readonly: true, fileMustExist: true }), remote);
  }

  close(): void {
    this.db.close();
  }

  resolve(volume: string, cookie: string): Promise<BlobContent> {
    const key = `${volume}\0${cookie}`;
    let p = this.cache.get(key);
    if (!p) {
      p = this.lookup(volume, cookie);
      p.catch(() => this.cache.delete(key)); // a failure is not remembered: the next OPEN tries again
      if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, p);
    }
    return p;
  }

  private async lookup(volume: string, cookie: string): Promise<BlobContent> {
    const images = this.images.inVolume(volume);
    const own = images.find((i) => i.fsid === cookie);
    if (own) return FlatFileContent.open(own.bootstrap, `bootstrap of ${own.fsid}`);
    for (const img of images) {
      const c = await this.blobOf(img, cookie);
      if (c) return c;
    }
    throw new UnknownBlobError(volume, cookie);
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
      const blob = await DataBlob.open(entry, await FileSource.open(file, `blob ${entry.blobId}`), bs.chunkTableDigests(i));
      return new NydusBlobContent(blob);
    }
    if (!img.blobsDir || tag.includes('/')) return null;
    const file = path.join(img.blobsDir, tag);
    return fs.existsSync(file) ? FlatFileContent.open(file, `device ${tag}`) : null;
  }

  private bootstrap(file: string): Bootstrap | null {
    if (!this.bootstraps.has(file)) {
      const buf = fs.readFileSync(file);
      const rafs = buf.length >= EROFS_SUPER_OFFSET + 12 && (buf.readUInt32LE(EROFS_SUPER_OFFSET + 8) & COMPAT_RAFS_V6) !== 0;
      this.bootstraps.set(file, rafs ? new Bootstrap(buf, `bootstrap ${file}`) : null);
    }
    return this.bootstraps.get(file)!;
  }
}
