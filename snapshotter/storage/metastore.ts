// The metadata store: one SQLite file in WAL mode. Every change is one
// transaction, so a kill -9 at any instant leaves either the old or the new
// state, never a mix. better-sqlite3 is synchronous, which makes each
// transaction atomic with respect to the event loop as well.
import Database from 'better-sqlite3';
import { migrations } from './schema';
import { Traces } from './traces';
import { SnapshotTx } from './snapshots';
import { FscacheImages } from './images';
import type { Info, Kind } from './info';

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

  /**
   * Every snapshot, one at a time, from one read transaction on a connection
   * of its own: a consistent view (WAL), as containerd's List has, that the
   * caller can take across event-loop turns while writes go on. Reading 16 MB
   * of labels at once held every other request up for 100 ms. Ending the
   * iteration (or breaking out of it) closes the connection.
   */
  *walk(): Generator<Info> {
    const db = new Database(this.path, { readonly: true, fileMustExist: true });
    let labels: IterableIterator<{ snapshot_id: number; name: string; value: string }> | undefined;
    try {
      db.pragma('busy_timeout = 5000');
      db.exec('BEGIN');
      type Row = { id: number; key: string; parent_id: number | null; kind: Kind; created_us: number; updated_us: number };
      const rows = db.prepare<[], Row>('SELECT id, key, parent_id, kind, created_us, updated_us FROM snapshots ORDER BY id').all();
      const keys = new Map(rows.map((r) => [r.id, r.key]));
      // labels' primary key is (snapshot_id, name): this walks it in id order, beside the rows
      labels = db.prepare<[], { snapshot_id: number; name: string; value: string }>('SELECT snapshot_id, name, value FROM labels ORDER BY snapshot_id').iterate();
      let next = labels.next();
      for (const r of rows) {
        const l: Record<string, string> = {};
        while (!next.done && next.value.snapshot_id <= r.id) {
          if (next.value.snapshot_id === r.id) l[next.value.name] = next.value.value;
          next = labels.next();
        }
        yield {
          name: r.key,
          parent: r.parent_id === null ? '' : (keys.get(r.parent_id) ?? ''),
          kind: r.kind,
          createdUs: r.created_us,
          updatedUs: r.updated_us,
          labels: l,
        };
      }
    } finally {
      labels?.return?.(); // a statement still stepping would keep the connection busy
      db.close();
    }
  }

  /** Images mounted through fscache (each call is its own transaction). */
  get fscacheImages(): FscacheImages {
    return new FscacheImages(this.db);
  }

  /** Learned prefetch traces. */
  get traces(): Traces {
    return new Traces(this.db);
  }

  close() {
    this.db.close();
  }
}
