// The objects the kernel has opened: object id → anon fd → blob. Everything
// here can be rebuilt from OPEN messages, which is what makes failover work.
import type { BlobContent } from '../content/content';
import type { ReadaheadStreams } from '../content/readahead';

export interface CacheObject {
  objectId: number;
  /** the anonymous fd the kernel gave with OPEN; READ data is written to it */
  fd: number;
  volume: string;
  cookie: string;
  content: BlobContent;
  reads: number;
  bytesWritten: number;
  /** the sequential streams in its READs (readahead) */
  readahead?: ReadaheadStreams;
  /** a background fetch of the whole blob, cancelled on CLOSE */
  prefetch?: { cancel(): void };
  /** prefetch was stopped (or not started) at the cache's bound: not started again for this object */
  prefetchStopped?: boolean;
  /** whether the content's presence was read from the cache file (recoverPresence) */
  presence: 'unknown' | 'known' | 'unreadable';
  /**
   * CLOSE came: no more writes. The fd is closed once the writes under way
   * have ended: closed sooner, its number could be handed to the next OPEN
   * and a late write would put this blob's bytes in another's cache file.
   */
  closed: boolean;
  /** writes to fd under way (on the threadpool) */
  writing: number;
}

/** A write for an object after its CLOSE: refused, and not worth a retry. */
export class ObjectClosedError extends Error {
  readonly fillRetryable = false;
  constructor(obj: CacheObject) {
    super(`object ${obj.objectId} (${obj.content.name}) was closed: no more writes to its cache file`);
    this.name = 'ObjectClosedError';
  }
}

export class ObjectTable {
  private readonly byId = new Map<number, CacheObject>();

  add(o: Omit<CacheObject, 'reads' | 'bytesWritten' | 'presence' | 'closed' | 'writing'>): CacheObject {
    const obj: CacheObject = { ...o, reads: 0, bytesWritten: 0, presence: 'unknown', closed: false, writing: 0 };
    this.byId.set(o.objectId, obj);
    return obj;
  }

  get(objectId: number): CacheObject | undefined {
    return this.byId.get(objectId);
  }

  delete(objectId: number): CacheObject | undefined {
    const o = this.byId.get(objectId);
    this.byId.delete(objectId);
    return o;
  }

  all(): CacheObject[] {
    return [...this.byId.values()];
  }

  get size(): number {
    return this.byId.size;
  }
}
