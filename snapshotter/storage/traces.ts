// Learned prefetch traces (schema: the traces table). lazysnapd writes them
// from workers' journals; workers read them to replay a start's chunks.
import crypto from 'node:crypto';
import type Database from 'better-sqlite3';

/** One chunk a start read: [uOffset, uOffset+uSize) of blob `blob` (its id), part of file `path`. */
export interface TraceEntry {
  blob: string;
  uOffset: number;
  uSize: number;
  path: string;
}

export interface Trace {
  key: string;
  imageRef: string;
  recordedUs: number;
  windowMs: number;
  /** journal lines it was built from (re-sent READs included) */
  reads: number;
  /** first-access order, each chunk once */
  entries: TraceEntry[];
}

interface Row {
  key: string;
  image_ref: string;
  recorded_us: number;
  window_ms: number;
  reads: number;
  entries: string;
}

/** An image's trace key: the sha256 of its bootstrap, whatever it is called. */
export function traceKey(bootstrap: Buffer): string {
  return crypto.createHash('sha256').update(bootstrap).digest('hex');
}

const fromRow = (r: Row): Trace => ({
  key: r.key,
  imageRef: r.image_ref,
  recordedUs: r.recorded_us,
  windowMs: r.window_ms,
  reads: r.reads,
  entries: (JSON.parse(r.entries) as [string, number, number, string][]).map(([blob, uOffset, uSize, path]) => ({ blob, uOffset, uSize, path })),
});

export class Traces {
  constructor(private readonly db: Database.Database) {}

  /** Stores a trace unless the key has one: the first complete recording wins. Returns whether it was stored. */
  add(t: Trace): boolean {
    const entries = JSON.stringify(t.entries.map((e) => [e.blob, e.uOffset, e.uSize, e.path]));
    return this.db
      .prepare('INSERT OR IGNORE INTO traces (key, image_ref, recorded_us, window_ms, reads, entries) VALUES (?, ?, ?, ?, ?, ?)')
      .run(t.key, t.imageRef, t.recordedUs, t.windowMs, t.reads, entries).changes === 1;
  }

  get(key: string): Trace | undefined {
    const r = this.db.prepare<[string], Row>('SELECT * FROM traces WHERE key = ?').get(key);
    return r && fromRow(r);
  }

  has(key: string): boolean {
    return this.db.prepare<[string], { n: number }>('SELECT 1 AS n FROM traces WHERE key = ?').get(key) !== undefined;
  }

  all(): Trace[] {
    return this.db.prepare<[], Row>('SELECT * FROM traces ORDER BY recorded_us').all().map(fromRow);
  }

  remove(key: string): boolean {
    return this.db.prepare('DELETE FROM traces WHERE key = ?').run(key).changes === 1;
  }
}
