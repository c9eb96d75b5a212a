// glibc malloc settings a worker is started with. A worker allocates buffers
// of up to 4 MiB: aligned write buffers beyond what its pool keeps, and until
// 2026-12-06 a buffer for each Range GET's body (bodies are now kept as the
// socket's reads, content/remote/parts.ts). By default glibc maps allocations
// that big with mmap and unmaps them when V8 frees them, so every byte lands
// on a page the kernel must first fault in. Kept in malloc's heap (mmap
// threshold at glibc's maximum, 32 MiB, and free memory kept up to 256 MiB
// before the heap is trimmed), a freed buffer is reused with its pages. Where
// a page fault is dear (the UML guest: a round trip to the host) that cut the
// worker's CPU per byte from a registry by 10-30% (4.6-5.1 s to 3.5-4.4 s for
// 512 MiB), measured with per-GET buffers. Other C libraries ignore the
// variable.

const WORKER_MALLOC_TUNABLES: ReadonlyArray<readonly [string, string]> = [
  ['glibc.malloc.mmap_threshold', String(32 << 20)],
  ['glibc.malloc.trim_threshold', String(256 << 20)],
];

/** GLIBC_TUNABLES for a worker: the operator's own value, with ours added for the names it does not set. */
export function workerTunables(existing: string | undefined): string {
  const own = (existing ?? '').split(':').filter((t) => t.includes('='));
  const named = new Set(own.map((t) => t.slice(0, t.indexOf('='))));
  return [...own, ...WORKER_MALLOC_TUNABLES.filter(([k]) => !named.has(k)).map(([k, v]) => `${k}=${v}`)].join(':');
}
