// Redirects, followed by hand: registries send blob GETs to object storage
// (S3, GCS, a CDN) with a signed URL. Authorization never crosses origins;
// the final URL of a blob is cached until it fails or its signature expires.

export const MAX_REDIRECTS = 5;
/** used when the URL carries no expiry hint */
export const DEFAULT_REDIRECT_TTL_MS = 60_000;
/** never trust a cached URL longer than this */
export const MAX_REDIRECT_TTL_MS = 15 * 60_000;

export function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** scheme + host + port equal (127.0.0.1 and localhost are different origins). */
export function sameOrigin(a: string | URL, b: string | URL): boolean {
  const ua = typeof a === 'string' ? new URL(a) : a;
  const ub = typeof b === 'string' ? new URL(b) : b;
  return ua.origin === ub.origin;
}

/** "20240102T030405Z" (SigV4 X-Amz-Date) → ms since epoch */
function parseCompactDate(s: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return undefined;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * When a signed redirect URL stops working (ms since epoch), from the URL's
 * own hints (S3 SigV4 X-Amz-Date+X-Amz-Expires, GCS X-Goog-Date+X-Goog-Expires,
 * SigV2/CloudFront/GCS v2 Expires=<epoch s>, Azure SAS se=<ISO date>) or the
 * redirect response's Cache-Control max-age / Expires. Undefined if none.
 */
export function redirectExpiry(location: string | URL, headers: Record<string, string | string[] | undefined> = {},
  now = Date.now()): number | undefined {
  const u = typeof location === 'string' ? new URL(location) : location;
  const q = new Map<string, string>();
  for (const [k, v] of u.searchParams) q.set(k.toLowerCase(), v);
  for (const [date, exp] of [['x-amz-date', 'x-amz-expires'], ['x-goog-date', 'x-goog-expires']]) {
    const e = q.get(exp);
    if (e !== undefined && /^\d+$/.test(e)) {
      const start = q.has(date) ? parseCompactDate(q.get(date)!) : undefined;
      return (start ?? now) + Number(e) * 1000;
    }
  }
  const expires = q.get('expires');
  if (expires !== undefined && /^\d{9,11}$/.test(expires)) return Number(expires) * 1000;
  const se = q.get('se');
  if (se !== undefined && !Number.isNaN(Date.parse(se))) return Date.parse(se);
  const cc = header(headers, 'cache-control');
  const maxAge = cc && /(?:^|,)\s*max-age=(\d+)/i.exec(cc);
  if (maxAge) return now + Number(maxAge[1]) * 1000;
  const exp = header(headers, 'expires');
  if (exp && !Number.isNaN(Date.parse(exp))) return Date.parse(exp);
  return undefined;
}

/** How long to reuse a redirect target: until its expiry minus a margin, else the default TTL; capped. */
export function redirectTtlMs(expiry: number | undefined, now = Date.now(), defaultTtl = DEFAULT_REDIRECT_TTL_MS): number {
  if (expiry === undefined) return Math.min(defaultTtl, MAX_REDIRECT_TTL_MS);
  const left = expiry - now;
  const margin = Math.min(30_000, Math.max(0, left) * 0.1);
  return Math.max(0, Math.min(MAX_REDIRECT_TTL_MS, left - margin));
}

interface Cached {
  url: string;
  until: number;
}

/** Final URLs of blobs, keyed by (host, repo, digest). */
export class RedirectCache {
  private readonly m = new Map<string, Cached>();

  constructor(private readonly now: () => number = Date.now, private readonly maxEntries = 4096,
    private readonly defaultTtl = DEFAULT_REDIRECT_TTL_MS) {}

  get(key: string): string | undefined {
    const c = this.m.get(key);
    if (!c) return undefined;
    if (this.now() >= c.until) {
      this.m.delete(key);
      return undefined;
    }
    return c.url;
  }

  set(key: string, url: string, expiry: number | undefined): void {
    const ttl = redirectTtlMs(expiry, this.now(), this.defaultTtl);
    if (ttl <= 0) return;
    if (this.m.size >= this.maxEntries) this.m.delete(this.m.keys().next().value!);
    this.m.set(key, { url, until: this.now() + ttl });
  }

  /** Drops a cached URL that failed (only if it is still the one cached). */
  invalidate(key: string, url?: string): void {
    const c = this.m.get(key);
    if (c && (url === undefined || c.url === url)) this.m.delete(key);
  }

  get size(): number {
    return this.m.size;
  }
}
