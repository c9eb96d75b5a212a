// The fscache_images table: which images are mounted through fscache and
// where their bytes live. lazysnapd writes it; the worker only reads it.
import Database from 'better-sqlite3';
import { nowUs } from './info';

export interface FscacheImage {
  fsid: string;
  domain: string;
  bootstrap: string;
  blobsDir: string;
  mountpoint: string | null;
  createdUs: number;
  /** the image reference its blobs are fetched from ('' = local blobs only) */
  imageRef: string;
  /** the bootstrap snapshot this mount serves, for images pulled through containerd */
  snapshotId: number | null;
}

interface Row {
  fsid: string;
  domain: string;
  bootstrap: string;
  blobs_dir: string;
  mountpoint: string | null;
  created_us: number;
  image_ref: string;
  snapshot_id: number | null;
}

const fromRow = (r: Row): FscacheImage => ({
  fsid: r.fsid,
  domain: r.domain,
  bootstrap: r.bootstrap,
  blobsDir: r.blobs_dir,
  mountpoint: r.mountpoint,
  createdUs: r.created_us,
  imageRef: r.image_ref,
  snapshotId: r.snapshot_id,
});

export class FscacheImages {
  constructor(private readonly db: Database.Database) {}

  add(img: Omit<FscacheImage, 'createdUs' | 'mountpoint' | 'imageRef' | 'snapshotId'> & { imageRef?: string; snapshotId?: number }): void {
    this.db
      .prepare('INSERT INTO fscache_images (fsid, domain, bootstrap, blobs_dir, image_ref, snapshot_id, created_us) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(img.fsid, img.domain, img.bootstrap, img.blobsDir, img.imageRef ?? '', img.snapshotId ?? null, nowUs());
  }

  bySnapshot(snapshotId: number): FscacheImage | undefined {
    const r = this.db.prepare<[number], Row>('SELECT * FROM fscache_images WHERE snapshot_id = ?').get(snapshotId);
    return r && fromRow(r);
  }

  setMountpoint(fsid: string, mountpoint: string | null): void {
    this.db.prepare('UPDATE fscache_images SET mountpoint = ? WHERE fsid = ?').run(mountpoint, fsid);
  }

  remove(fsid: string): void {
    this.db.prepare('DELETE FROM fscache_images WHERE fsid = ?').run(fsid);
  }

  get(fsid: string): FscacheImage | undefined {
    const r = this.db.prepare<[string], Row>('SELECT * FROM fscache_images WHERE fsid = ?').get(fsid);
    return r && fromRow(r);
  }

  byMountpoint(mountpoint: string): FscacheImage | undefined {
    const r = this.db.prepare<[string], Row>('SELECT * FROM fscache_images WHERE mountpoint = ?').get(mountpoint);
    return r && fromRow(r);
  }

  /** The images whose blobs live in fscache volume `volume` (a domain, or a private fsid). */
  inVolume(volume: string): FscacheImage[] {
    return this.db
      .prepare<[string, string], Row>("SELECT * FROM fscache_images WHERE domain = ? OR (domain = '' AND fsid = ?) ORDER BY created_us")
      .all(volume, volume)
      .map(fromRow);
  }

  all(): FscacheImage[] {
    return this.db.prepare<[], Row>('SELECT * FROM fscache_images ORDER BY created_us').all().map(fromRow);
  }
}
