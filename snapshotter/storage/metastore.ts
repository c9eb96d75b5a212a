// The metadata store: one SQLite file in WAL mode. Every change is one
// transaction, so a kill -9 at any instant leaves either the old or the new
// state, never a mix. better-sqlite3 is synchronous, which makes each
// transaction atomic with respect to the event loop as well.
import Database from 'better-sqlite3';
import { migrations } from './schema';
import { SnapshotTx } from './snapshots';
import { FscacheImages } from './images';

export class MetaStore {
  private readonly db: Database.Database;

  constructor(readonly path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
  }

  private migrate() {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > migrations.length) {
      throw new Error(`metadata ${this.path} has schema version ${version}, newer than this lazysnapd (${migrations.length})`);
    }
    this.db.transaction(() => {
      for (let v = version; v < migrations.length; v++) this.db.exec(migrations[v]);
      this.db.pragma(`user_version = ${migrations.length}`);
    }).immediate();
  }

  /** Runs fn in a write transaction; a throw rolls everything back. */
  update<T>(fn: (tx: SnapshotTx) => T): T {
    return this.db.transaction(() => fn(new SnapshotTx(this.db))).immediate();
  }

  /** Runs fn in a read transaction: a consistent view. */
  view<T>(fn: (tx: SnapshotTx) => T): T {
    return this.db.transaction(() => fn(new SnapshotTx(this.db))).deferred();
  }

  /** Images mounted through fscache (each call is its own transaction). */
  get fscacheImages(): FscacheImages {
    return new FscacheImages(this.db);
  }

  close() {
    this.db.close();
  }
}
