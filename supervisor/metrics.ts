// lazysnapd's metrics: its own (snapshot operations, workers, failovers,
// images, the cache) and the serving workers' (READs, fetches, cache hits,
// the registry), added up. A worker reports its cumulative values every
// second; when it dies its last report is folded into `retired`, so
// counters keep counting across failovers (less the <= 1 s a killed worker
// had not reported yet). Gauges are the living workers' only.
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Logger } from 'pino';

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** How an image's layers are served, and why (the label values of lazysnap_layers_total). */
export type LayerMode =
  /** a nydus layer served lazily through the kernel backend */
  | 'lazy'
  /** a nydus layer whose blobs were downloaded whole: no lazy backend here */
  | 'download'
  /** a plain OCI layer: containerd unpacks it (as with the overlayfs snapshotter) */
  | 'unpacked';

export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly live = new Map<number, MetricsJson>();
  private retired: MetricsJson = [];
  private folding: Promise<void> = Promise.resolve();

  readonly snapshotOps = new Histogram({
    name: 'snapshotter_snapshot_operation_elapsed_milliseconds',
    help: 'Snapshot API calls from containerd, by operation (as nydus-snapshotter), in ms',
    labelNames: ['snapshot_operation'],
    buckets: [0.5, 1, 5, 10, 50, 100, 150, 200, 250, 300, 350, 400, 600, 1000, 5000],
    registers: [this.registry],
  });
  readonly snapshotErrors = new Counter({
    name: 'lazysnap_snapshot_operation_errors_total',
    help: 'Snapshot API calls that failed, by operation and gRPC code',
    labelNames: ['snapshot_operation', 'code'],
    registers: [this.registry],
  });
  readonly workerExits = new Counter({
    name: 'lazysnap_worker_exits_total',
    help: 'Workers that ended, by how: crashed or killed (serving), hung (killed by lazysnapd), standby',
    labelNames: ['how'],
    registers: [this.registry],
  });
  readonly failoverStall = new Histogram({
    name: 'lazysnap_failover_stall_milliseconds',
    help: "From a serving worker's end to its successor serving (restore written), in ms",
    buckets: [10, 25, 50, 100, 150, 200, 300, 500, 1000, 2500, 5000, 10_000],
    registers: [this.registry],
  });
  readonly layers = new Counter({
    name: 'lazysnap_layers_total',
    help: 'Image layers prepared, by how they are served (lazy, download: nydus blobs fetched whole, unpacked: plain OCI) and why',
    labelNames: ['mode', 'reason'],
    registers: [this.registry],
  });
  readonly cacheEvictions = new Counter({
    name: 'snapshotter_cache_blobs_deleted_total',
    help: 'Cached blobs deleted to keep the cache under its bound, or because nothing references them (as nydus-snapshotter)',
    registers: [this.registry],
  });

  constructor(
    version: string,
    backend: string,
    private readonly log: Logger,
  ) {
    new Gauge({
      name: 'lazysnap_build_info',
      help: 'Always 1: the running version and the backend lazy images are served through',
      labelNames: ['version', 'backend'],
      registers: [this.registry],
    }).set({ version, backend }, 1);
  }

  /** A gauge whose value is read at each scrape (cache usage, images, bad chunks). */
  gauge(name: string, help: string, read: () => number | Promise<number>): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      async collect() {
        this.set(await read());
      },
    });
  }

  /** A worker's latest report (cumulative since it started). */
  workerReport(pid: number, metrics: unknown): void {
    if (!Array.isArray(metrics)) return;
    this.live.set(pid, metrics as MetricsJson);
  }

  /** A worker ended: its counts stay, its gauges go. */
  workerGone(pid: number): void {
    const last = this.live.get(pid);
    if (!last) return;
    // One fold at a time; the report stays live until its counts are in `retired`.
    this.folding = this.folding.then(async () => {
      try {
        const folded = AggregatorRegistry.aggregate([this.retired, last.filter((m) => String(m.type) !== 'gauge')]) // the string 'gauge' at run time, whatever the typings say;
        this.retired = (await folded.getMetricsAsJSON()) as MetricsJson;
      } catch (err) {
        this.log.warn({ err: (err as Error).message, pid }, "cannot keep a dead worker's metrics");
      } finally {
        if (this.live.get(pid) === last) this.live.delete(pid);
      }
    });
  }

  /** The text exposition of everything. */
  async render(): Promise<{ contentType: string; body: string }> {
    await this.folding;
    const own = (await this.registry.getMetricsAsJSON()) as MetricsJson;
    const all = AggregatorRegistry.aggregate([own, this.retired, ...this.live.values()]);
    return { contentType: this.registry.contentType, body: await all.metrics() };
  }
}
