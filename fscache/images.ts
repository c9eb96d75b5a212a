// The fscache_images table: which images are mounted through fscache and
// where their bytes live. lazysnapd writes it; the worker only reads it.
import Database from 'better-sqlite3';
import { nowUs } from '../snapshotter/info';

export interface FscacheImage {
  fsid: string;
  domain: string;
  bootstrap: string;
  blobsDir: string;
  mountpoint: string | null;
  createdUs: number;
}

interface Row {
  fsid: string;
  domain: string;
  bootstrap: string;
  blobs_dir: string;
  mountpoint: string | null;
  created_us: number;
}

const fromRow = (r: Row): FscacheImage => ({
  fsid: r.fsid,
  domain: r.domain,
  bootstrap: r.bootstrap,
  blobsDir: r.blobs_dir,
  mountpoint: r.mountpoint,
  createdUs: r.created_us,
});

export class FscacheImages {
  constructor(private readonly db: Database.Database) {}

  add(img: Omit<FscacheImage, 'createdUs' | 'mountpoint'>): void {
    this.db
      .prepare('INSERT INTO fscache_images (fsid, domain, bootstrap, blobs_dir, created_us) VALUES (?, ?, ?, ?, ?)')
      .run(img.fsid, img.domain, img.bootstrap, img.blobsDir, nowUs());
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
