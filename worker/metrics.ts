// What a worker counts while it serves the kernel, for lazysnapd's metrics
// endpoint: a prom-client registry of the worker's own, whose values go to
// lazysnapd every second on the control channel (supervisor/metrics.ts adds
// them up across workers). READs are observed as they are answered; bytes
// fetched and cache hits are the deltas of each blob's own counters
// (BlobContent.progress), so content/ stays free of metrics.
import type * as Prom from 'prom-client';
import type { BlobContent, ReadObserver } from '../content/content';
import type { ClientStats } from '../registry/client';

// prom-client's index also loads its default process metrics, and OpenTelemetry through them (88 files; 0.45-0.54 s
// of a worker's start in the UML guest). A worker needs these four classes.
const Counter: typeof Prom.Counter = require('prom-client/lib/counter');
const Gauge: typeof Prom.Gauge = require('prom-client/lib/gauge');
const Histogram: typeof Prom.Histogram = require('prom-client/lib/histogram');
const Registry: typeof Prom.Registry = require('prom-client/lib/registry');

/** Microseconds: a page-cache-speed answer is ~100 µs, a cold registry fetch 10-500 ms, the deadline 30 s. */
const READ_BUCKETS_US = [100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1e6, 2.5e6, 5e6, 1e7, 3e7];

interface Seen {
  fetchedBytes: number;
  chunksWanted: number;
  chunksWantedPresent: number;
  chunksWantedJoined: number;
  chunksReplayed: number;
  chunksAhead: number;
  verifyFailures: number;
  badChunksMarked: number;
}

export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly readLatency = new Histogram({
    name: 'lazysnap_read_latency_microseconds',
    help: 'Time from a READ (fscache) or pre-content event (fanotify) to its answer, by image and result (filled, present, eio, timeout)',
    labelNames: ['image_ref', 'result'],
    buckets: READ_BUCKETS_US,
    registers: [this.registry],
  });
  private readonly readBytes = new Counter({
    name: 'lazysnap_read_bytes_total',
    help: 'Bytes the kernel asked for in READs or events that were answered with data (filled or present)',
    labelNames: ['image_ref'],
    registers: [this.registry],
  });
  private readonly fetchedBytes = new Counter({
    name: 'lazysnap_fetched_bytes_total',
    help: 'Compressed bytes fetched from the registry for an image, on demand and by prefetch (as stargz_fs_layer_fetched_size_bytes)',
    labelNames: ['image_ref'],
    registers: [this.registry],
  });
  private readonly cacheRequests = new Counter({
    name: 'lazysnap_cache_requests_total',
    help: 'Chunks that on-demand reads needed (as nydusd_cache_total_requests)',
    labelNames: ['image_ref'],
    registers: [this.registry],
  });
  private readonly cacheHits = new Counter({
    name: 'lazysnap_cache_hits_total',
    help: 'Chunks that on-demand reads needed and found local: prefetched, or fetched for an earlier read (as nydusd_cache_whole_hits)',
    labelNames: ['image_ref'],
    registers: [this.registry],
  });
  private readonly cacheJoined = new Counter({
    name: 'lazysnap_cache_joined_total',
    help: 'Chunks that on-demand reads needed while a replay, prefetch or other read was fetching them: they waited for that fetch (prefetch hits in flight)',
    labelNames: ['image_ref'],
    registers: [this.registry],
  });
  private readonly replayed = new Counter({
    name: 'lazysnap_replay_chunks_total',
    help: 'Chunks a replay of a recorded start (learned prefetch) fetched ahead of the reads',
    labelNames: ['image_ref'],
    registers: [this.registry],
  });
  private readonly ahead = new Counter({
    name: 'lazysnap_readahead_chunks_total',
    help: 'Chunks fetched ahead of a sequential reader (readahead), before it asked for them',
    labelNames: ['image_ref'],
    registers: [this.registry],
  });
  private readonly verifyFailures = new Counter({
    name: 'lazysnap_chunk_verify_failures_total',
    help: 'Fetched chunks whose digest or size did not match the bootstrap (each refetch counts)',
    labelNames: ['image_ref'],
    registers: [this.registry],
  });
  private readonly badChunks = new Counter({
    name: 'lazysnap_bad_chunks_marked_total',
    help: 'Times a chunk was marked bad for a cool-down after failing every verification attempt',
    labelNames: ['image_ref'],
    registers: [this.registry],
  });
  private readonly registryRequests = new Counter({
    name: 'lazysnap_registry_requests_total',
    help: 'HTTP requests to registry hosts (Range GETs, HEADs, token requests), by host',
    labelNames: ['host'],
    registers: [this.registry],
  });
  private readonly registryRetries = new Counter({
    name: 'lazysnap_registry_retries_total',
    help: 'Requests retried after a retryable failure (5xx, 429, reset connection, stalled body), by host',
    labelNames: ['host'],
    registers: [this.registry],
  });
  private readonly registryErrors = new Counter({
    name: 'lazysnap_registry_errors_total',
    help: 'Operations a registry host failed after its retries, by host and kind (http_<status>, transport, auth, integrity, protocol, not_found)',
    labelNames: ['host', 'kind'],
    registers: [this.registry],
  });

  private readonly prefetchStopped = new Counter({
    name: 'lazysnap_prefetch_stopped_total',
    help: 'Blob prefetches stopped or not started because they would take the cache past [cache] max_size',
    registers: [this.registry],
  });
  private seenPrefetchStopped = 0;

  constructor() {
    // Prefetch (and on-demand) progress: how much of each image's open blobs is local, read at each report.
    const open = this.open;
    const images = this.images;
    const sums = (pick: 'bytes' | 'bytesPresent') => {
      const by = new Map<string, number>();
      for (const c of open) {
        const p = c.progress?.();
        if (p) by.set(images.get(c) ?? '', (by.get(images.get(c) ?? '') ?? 0) + p[pick]);
      }
      return by;
    };
    for (const [name, help, pick] of [
      ['lazysnap_blob_bytes', "Uncompressed bytes of an image's remote blobs the kernel has open", 'bytes'],
      ['lazysnap_blob_present_bytes', 'Of those, the bytes already in the cache (fetched on demand or prefetched): with lazysnap_blob_bytes, prefetch progress', 'bytesPresent'],
    ] as const) {
      new Gauge({
        name, help, labelNames: ['image_ref'], registers: [this.registry],
        collect() {
          this.reset();
          for (const [image_ref, v] of sums(pick)) this.set({ image_ref }, v);
        },
      });
    }
  }

  /** The image each blob content was opened for ('' for a local image with no reference). */
  private readonly images = new WeakMap<BlobContent, string>();
  private readonly seen = new WeakMap<BlobContent, Seen>();
  private readonly open = new Set<BlobContent>();
  private readonly seenHosts = new Map<string, { requests: number; retries: number }>();
  private readonly seenErrors = new Map<string, number>();

  /** Labels content's reads and fetches with image, and samples it with the others from now on. */
  label(content: BlobContent, image: string): void {
    this.images.set(content, image);
    this.open.add(content);
  }

  /** content is being closed: its last counts are taken. */
  closing(content: BlobContent): void {
    this.sampleContent(content);
    this.open.delete(content);
  }

  /** Samples every open content, the registry client's hosts, and the daemon's stopped prefetches. */
  sample(registry?: ClientStats, prefetchesStopped = 0): void {
    for (const c of this.open) this.sampleContent(c);
    if (registry) this.sampleRegistry(registry);
    if (prefetchesStopped > this.seenPrefetchStopped) this.prefetchStopped.inc(prefetchesStopped - this.seenPrefetchStopped);
    this.seenPrefetchStopped = Math.max(this.seenPrefetchStopped, prefetchesStopped);
  }

  /** One READ or event answered. */
  readonly read: ReadObserver = (content, startedAt, result, len) => {
    const image = (content && this.images.get(content)) ?? '';
    this.readLatency.observe({ image_ref: image, result }, Number(process.hrtime.bigint() - startedAt) / 1000);
    if (result === 'filled' || result === 'present') this.readBytes.inc({ image_ref: image }, len);
  };

  /** Adds what content's counters moved since the last look; call it for every open content, and once more at its close. */
  sampleContent(content: BlobContent): void {
    const p = content.progress?.();
    const h = content.chunkHealth?.();
    if (!p && !h) return;
    const now: Seen = {
      fetchedBytes: p?.fetchedBytes ?? 0,
      chunksWanted: p?.chunksWanted ?? 0,
      chunksWantedPresent: p?.chunksWantedPresent ?? 0,
      chunksWantedJoined: p?.chunksWantedJoined ?? 0,
      chunksReplayed: p?.chunksReplayed ?? 0,
      chunksAhead: p?.chunksAhead ?? 0,
      verifyFailures: h?.verifyFailures ?? 0,
      badChunksMarked: h?.badChunksMarked ?? 0,
    };
    const was = this.seen.get(content);
    this.seen.set(content, now);
    const image_ref = this.images.get(content) ?? '';
    const add = (c: Prom.Counter<string>, k: keyof Seen) => {
      const d = now[k] - (was?.[k] ?? 0);
      if (d > 0) c.inc({ image_ref }, d);
    };
    add(this.fetchedBytes, 'fetchedBytes');
    add(this.cacheRequests, 'chunksWanted');
    add(this.cacheHits, 'chunksWantedPresent');
    add(this.cacheJoined, 'chunksWantedJoined');
    add(this.replayed, 'chunksReplayed');
    add(this.ahead, 'chunksAhead');
    add(this.verifyFailures, 'verifyFailures');
    add(this.badChunks, 'badChunksMarked');
  }

  /** Adds what the registry client's per-host counters moved since the last look. */
  sampleRegistry(stats: ClientStats): void {
    for (const [host, s] of Object.entries(stats.byHost)) {
      const was = this.seenHosts.get(host) ?? { requests: 0, retries: 0 };
      if (s.requests > was.requests) this.registryRequests.inc({ host }, s.requests - was.requests);
      if (s.retries > was.retries) this.registryRetries.inc({ host }, s.retries - was.retries);
      this.seenHosts.set(host, { requests: s.requests, retries: s.retries });
      for (const [kind, n] of Object.entries(s.errors)) {
        const key = `${host}\0${kind}`;
        const d = n - (this.seenErrors.get(key) ?? 0);
        if (d > 0) this.registryErrors.inc({ host, kind }, d);
        this.seenErrors.set(key, n);
      }
    }
  }

  /** The registry's values, as lazysnapd adds them up. */
  snapshot() {
    return this.registry.getMetricsAsJSON();
  }
}
