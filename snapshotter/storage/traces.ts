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

export class TraceFormatError extends Error {}

/** Traces as JSON (`lazysnap trace --json`), checked field by field before any is stored. */
export function parseTraces(text: string): Trace[] {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new TraceFormatError('traces: not JSON (give what lazysnap trace --json prints)');
  }
  if (!Array.isArray(v)) throw new TraceFormatError('traces: not a JSON array');
  const n = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  return v.map((t: Partial<Trace>, i) => {
    const where = `traces[${i}]`;
    if (t === null || typeof t !== 'object' || !/^[0-9a-f]{64}$/.test(String(t.key)) || typeof t.imageRef !== 'string' ||
      !n(t.recordedUs) || !n(t.windowMs) || !n(t.reads) || !Array.isArray(t.entries)) {
      throw new TraceFormatError(`${where}: needs key (64 hex), imageRef, recordedUs, windowMs, reads and entries`);
    }
    t.entries.forEach((e: Partial<TraceEntry>, k) => {
      if (e === null || typeof e !== 'object' || !/^[0-9a-f]{64}$/.test(String(e.blob)) || !n(e.uOffset) || !n(e.uSize) || !e.uSize || typeof e.path !== 'string') {
        throw new TraceFormatError(`${where}.entries[${k}]: needs blob (64 hex), uOffset, uSize > 0 and path`);
      }
    });
    return { key: t.key!, imageRef: t.imageRef, recordedUs: t.recordedUs!, windowMs: t.windowMs!, reads: t.reads!,
      entries: t.entries.map((e) => ({ blob: e.blob, uOffset: e.uOffset, uSize: e.uSize, path: e.path })) };
  });
}
