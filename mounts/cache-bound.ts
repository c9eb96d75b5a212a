// The cache's bound ([cache] max_size): when the blobs on disk pass it, the
// images no container uses are unmounted and their blobs culled, least
// recently used first, until usage is under the low-water mark. An image a
// container (or a view) stands on is never touched, so no reader loses a
// byte; a culled image mounts again, lazily, at its next container. Prefetch
// is told how much room is left (the budget) and stops before it would cross.
import type { Logger } from 'pino';

export interface CacheCandidate {
  fsid: string;
  /** when a container last started on it (ms since the epoch) */
  lastUsedMs: number;
}

export interface CacheBoundDeps {
  /** bytes the cache takes on disk now */
  usage(): Promise<number>;
  /** images that could be culled: pulled through containerd, no container on them right now */
  idle(): CacheCandidate[];
  /** unmounts the image and culls the blobs no other image uses; false if it turned out to be in use */
  evict(fsid: string): Promise<boolean>;
  /** what prefetch may still add before the bound */
  budget?(bytes: number): void;
  evicted?(fsid: string): void;
  /** how long culled files take to go after evict() (cachefiles culls them after the umount lets go) */
  settleMs?: number;
  log: Logger;
}

/** Least recently used first. */
export function evictionOrder(c: CacheCandidate[]): string[] {
  return [...c].sort((a, b) => a.lastUsedMs - b.lastUsedMs || (a.fsid < b.fsid ? -1 : 1)).map((x) => x.fsid);
}

export class CacheBound {
  private running: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** usage at the last check, for status */
  lastUsage = 0;
  evictions = 0;

  constructor(
    readonly maxBytes: number,
    readonly lowWaterBytes: number,
    private readonly d: CacheBoundDeps,
  ) {}

  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.check(), intervalMs);
    this.timer.unref();
    void this.check();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One pass (passes never overlap); resolves to the usage it ended with. */
  check(): Promise<number> {
    const next = this.running.then(() => this.pass());
    this.running = next.catch(() => undefined);
    return next;
  }

  private async pass(): Promise<number> {
    let usage = await this.d.usage();
    if (usage > this.maxBytes) {
      const order = evictionOrder(this.d.idle());
      this.d.log.info({ usage, maxBytes: this.maxBytes, lowWaterBytes: this.lowWaterBytes, candidates: order.length }, 'the cache is past its bound; culling images no container uses');
      for (const fsid of order) {
        if (usage <= this.lowWaterBytes) break;
        try {
          if (!(await this.d.evict(fsid))) continue;
        } catch (err) {
          this.d.log.warn({ fsid, err: (err as Error).message }, 'cannot cull an image from the cache');
          continue;
        }
        this.evictions++;
        this.d.evicted?.(fsid);
        const was = usage;
        if (this.d.settleMs) await new Promise((r) => setTimeout(r, this.d.settleMs));
        usage = await this.d.usage();
        this.d.log.info({ fsid, freed: was - usage, usage }, 'culled an image no container uses from the cache');
      }
      if (usage > this.maxBytes) {
        this.d.log.warn({ usage, maxBytes: this.maxBytes }, 'the cache stays past its bound: the rest is used by running containers');
      }
    }
    this.lastUsage = usage;
    this.d.budget?.(Math.max(0, this.maxBytes - usage));
    return usage;
  }
}
