// The registry client: manifests, blobs and byte ranges of blobs from a
// registry and its mirrors (hosts.toml), over undici with keep-alive.
//
// One request goes to the hosts in order (mirrors, then the server); each
// host gets `retry.attempts` tries with backoff on 5xx/429/resets/stalls/
// truncation; a host that refuses connections, lacks the content (404 on a
// mirror) or answers nonsense is left for the next one at once. 401 means
// "authenticate as the challenge says" (once per try), redirects are followed
// by hand (Authorization only to the host's own origin) and a blob's final
// URL is cached until it fails or expires.
import crypto from 'node:crypto';
import type { Logger } from 'pino';
import { HostAuth, pullScope } from './auth';
import { CredentialSource } from './docker-config';
import {
  AbortedError,
  AllHostsFailedError,
  AuthError,
  BodyLengthError,
  HttpStatusError,
  IntegrityError,
  NotFoundError,
  ProtocolError,
  RegistryError,
  RegistryErrorInfo,
  TransportError,
  errorKind,
} from './errors';
import {
  DEFAULT_TIMEOUTS,
  HttpMethod,
  HttpPool,
  HttpResponse,
  HttpTimeouts,
  RequestBody,
  discard,
  dropBody,
  errorText,
  headerValue,
  readExact,
  readLimited,
  readParts,
  readSlice,
  type OnPart,
  send,
} from './http';
import { Capability, RegistryHost, TlsSettings, isLoopbackHost, resolveHosts } from './hosts';
import {
  DEFAULT_PLATFORM,
  Descriptor,
  ImageIndex,
  ImageManifest,
  MANIFEST_ACCEPT,
  Platform,
  describePlatform,
  isIndexType,
  isManifestType,
  selectPlatform,
} from './manifest';
import { MAX_REDIRECTS, RedirectCache, isRedirect, redirectExpiry, sameOrigin } from './redirects';
import { DEFAULT_RETRY, RetryPolicy, parseRetryAfter, retryDelay, sleep } from './retry';
import { TokenCache } from './token-cache';

export interface RegistryClientOptions {
  /** containerd's registry config_path ("certs.d"): <dir>/<host>/hosts.toml */
  hostsDir?: string;
  /** credentials per host; default anonymous (see dockerConfigCredentials, staticCredentials) */
  credentials?: CredentialSource;
  /** http:// for registries without hosts.toml even when not loopback */
  plainHttp?: boolean;
  timeouts?: Partial<HttpTimeouts>;
  retry?: Partial<RetryPolicy>;
  /** max simultaneous connections per origin (undici pool) */
  connectionsPerOrigin?: number;
  userAgent?: string;
  log?: Logger;
  /** TLS for origins that are not a configured host (token realms, redirect targets): extra CAs */
  otherTls?: TlsSettings;
  /** after a host refuses connections it sorts last for this long (ms) */
  hostDownMs?: number;
  /**
   * A server that answers a Range request with 200 (whole blob) is tolerated
   * when the range ends within this many bytes: the prefix is read and the
   * rest abandoned. Beyond it the read fails (default 16 MiB).
   */
  ignoredRangeMaxBytes?: number;
  /** hosts.toml is re-read after this long (ms) */
  hostsTtlMs?: number;
}

/** One registry host's counters, for metrics. */
export interface HostStats {
  requests: number;
  retries: number;
  /** operations the host failed after its retries, by errorKind() */
  errors: Record<string, number>;
}

export interface ClientStats {
  /** by host[:port] as hosts.toml names it */
  byHost: Record<string, HostStats>;
  requests: number;
  retries: number;
  hostFallbacks: number;
  reauths: number;
  redirects: number;
  redirectCacheHits: number;
  bytes: number;
}

export interface ResolvedManifest {
  /** digest of the platform manifest */
  digest: string;
  mediaType: string;
  manifest: ImageManifest;
  /** raw manifest bytes */
  raw: Buffer;
  /** the index it was picked from, if the reference named an index */
  index?: { digest: string; mediaType: string; index: ImageIndex };
}

/** One HTTP exchange with a host; `once` adds auth (401 → re-auth once) and follows redirects. */
export interface HttpStep<T> {
  what: string;
  /** path below the repository's API root, starting with "/" (may carry a query) */
  path?: string;
  /** an absolute URL instead of path: an upload session's Location */
  url?: string;
  method: HttpMethod;
  headers?: Record<string, string>;
  /** made anew for every send: a retry, a re-auth or a redirect sends the body again */
  body?: () => RequestBody;
  /** token scopes; default pull on this repository */
  scopes?: string[];
  /** cache the final URL of redirects under this key (blobs) */
  redirectKey?: string;
  signal?: AbortSignal;
  handle(res: HttpResponse, info: RegistryErrorInfo): Promise<T>;
}

export interface Op<T> extends HttpStep<T> {
  capability: Capability;
}

/**
 * Several exchanges with one host that succeed or fail together (an upload
 * session: POST, PATCHes, PUT). A failure counts as an attempt on that host
 * and `run` starts again (after backoff, or on the next host).
 */
export interface SessionOp<T> {
  what: string;
  capability: Capability;
  signal?: AbortSignal;
  run(host: RegistryHost, step: <U>(s: HttpStep<U>) => Promise<U>): Promise<T>;
}

/** A cached redirect URL failed: retry at once through the registry (does not count as an attempt). */
class StaleRedirect extends RegistryError {
  constructor(cause: unknown, info: RegistryErrorInfo) {
    super(`cached redirect target failed: ${(cause as Error)?.message ?? cause}`, { ...info, cause }, true);
  }
}

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function isDigest(ref: string): boolean {
  return /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(ref) && ref.includes(':');
}

function sha256(b: Buffer): string {
  return 'sha256:' + crypto.createHash('sha256').update(b).digest('hex');
}

/** Checks a status the normal way: 404 → NotFound, 401/403 → AuthError, 5xx/429 → retryable. */
export async function expectOk(res: HttpResponse, ok: number[], info: RegistryErrorInfo): Promise<void> {
  if (ok.includes(res.status)) return;
  const body = await errorText(res);
  if (res.status === 404) throw new NotFoundError(info, body);
  if (res.status === 401 || res.status === 403) {
    throw new AuthError(`access denied (HTTP ${res.status})${body ? `: ${body.replace(/\s+/g, ' ').slice(0, 200)}` : ''}`, { ...info, status: res.status });
  }
  throw new HttpStatusError(res.status, info, body, parseRetryAfter(res.headers['retry-after']));
}

export class RegistryClient {
  readonly pool: HttpPool;
  readonly tokens = new TokenCache();
  readonly redirects = new RedirectCache();
  readonly retry: RetryPolicy;
  readonly stats: ClientStats = { byHost: {}, requests: 0, retries: 0, hostFallbacks: 0, reauths: 0, redirects: 0, redirectCacheHits: 0, bytes: 0 };
  readonly log?: Logger;
  private readonly down = new Map<string, number>();
  private readonly auths = new Map<string, HostAuth>();
  private readonly hostCache = new Map<string, { at: number; hosts: RegistryHost[] }>();
  private readonly credIds = new WeakMap<CredentialSource, number>();
  private nextCredId = 1;

  constructor(readonly opts: RegistryClientOptions = {}) {
    this.pool = new HttpPool({ ...DEFAULT_TIMEOUTS, ...opts.timeouts }, opts.connectionsPerOrigin ?? 16);
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.log = opts.log;
  }

  /** host's counters, made on first use */
  hostStats(host: string): HostStats {
    return (this.stats.byHost[host] ??= { requests: 0, retries: 0, errors: {} });
  }

  get userAgent(): string {
    return this.opts.userAgent ?? 'lazysnap/0.1';
  }

  /** A repository on a registry ("host[:port]", "library/busybox"). Credentials here override the client's. */
  repository(registry: string, repo: string, opts: { credentials?: CredentialSource } = {}): Repository {
    return new Repository(this, registry, repo, opts.credentials ?? this.opts.credentials ?? (async () => undefined));
  }

  /** Hosts for a registry, mirrors first; hosts.toml is re-read after hostsTtlMs. */
  hostsFor(registry: string): RegistryHost[] {
    const ttl = this.opts.hostsTtlMs ?? 30_000;
    const c = this.hostCache.get(registry);
    if (c && Date.now() - c.at < ttl) return c.hosts;
    const hosts = resolveHosts(registry, { configPath: this.opts.hostsDir, plainHttp: this.opts.plainHttp });
    this.hostCache.set(registry, { at: Date.now(), hosts });
    return hosts;
  }

  /** Hosts that recently refused connections go last (but are still tried). */
  order(hosts: RegistryHost[]): RegistryHost[] {
    const now = Date.now();
    const isDown = (h: RegistryHost) => (this.down.get(h.origin) ?? 0) > now;
    return [...hosts.filter((h) => !isDown(h)), ...hosts.filter(isDown)];
  }

  markDown(h: RegistryHost): void {
    this.down.set(h.origin, Date.now() + (this.opts.hostDownMs ?? 30_000));
  }

  markUp(h: RegistryHost): void {
    this.down.delete(h.origin);
  }

  authFor(h: RegistryHost, creds: CredentialSource): HostAuth {
    let id = this.credIds.get(creds);
    if (id === undefined) this.credIds.set(creds, (id = this.nextCredId++));
    const key = `${h.origin}|${id}`;
    let a = this.auths.get(key);
    if (!a) {
      a = new HostAuth(h, {
        pool: this.pool,
        credentials: creds,
        tokens: this.tokens,
        retry: this.retry,
        userAgent: this.userAgent,
        realmTls: this.opts.otherTls,
        log: this.log,
      }, creds);
      this.auths.set(key, a);
    }
    return a;
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

export class Repository {
  private readonly scopes: string[];

  constructor(readonly client: RegistryClient, readonly registry: string, readonly repo: string,
    private readonly credentials: CredentialSource) {
    this.scopes = [pullScope(repo)];
  }

  get name(): string {
    return `${this.registry}/${this.repo}`;
  }

  hosts(): RegistryHost[] {
    return this.client.hostsFor(this.registry);
  }

  /** Runs one operation against the hosts in order, with retries. */
  async execute<T>(op: Op<T> | SessionOp<T>): Promise<T> {
    const c = this.client;
    const policy = c.retry;
    const hosts = c.order(this.hosts().filter((h) => h.capabilities.has(op.capability)));
    const base: RegistryErrorInfo = { repo: this.repo, what: op.what };
    if (hosts.length === 0) throw new RegistryError(`no host in hosts.toml has the "${op.capability}" capability`, { ...base, host: this.registry });
    const errors: RegistryError[] = [];
    for (const [hi, host] of hosts.entries()) {
      if (hi > 0) c.stats.hostFallbacks++;
      let stale = 0;
      for (let attempt = 1; ; attempt++) {
        if (op.signal?.aborted) throw new AbortedError(op.what);
        try {
          const r = await ('run' in op ? op.run(host, (s) => this.once(host, s)) : this.once(host, op));
          c.markUp(host);
          return r;
        } catch (e) {
          if (e instanceof AbortedError) throw e;
          const err = e instanceof RegistryError ? e : new TransportError(String((e as Error)?.message ?? e), { ...base, host: host.host, cause: e });
          if (err instanceof StaleRedirect && stale++ < 2) {
            attempt--;
            continue;
          }
          const hostDown = err instanceof TransportError && err.hostDown;
          const giveUpHost = !err.retryable || hostDown || attempt >= policy.attempts;
          if (giveUpHost) {
            err.withAttempts(attempt);
            const errs = c.hostStats(host.host).errors;
            errs[errorKind(err)] = (errs[errorKind(err)] ?? 0) + 1;
            if (hostDown) c.markDown(host);
            errors.push(err);
            c.log?.warn({ host: host.host, repo: this.repo, what: op.what, attempts: attempt, err: err.message },
              hi + 1 < hosts.length ? 'registry host failed; trying the next host' : 'registry host failed');
            break;
          }
          c.stats.retries++;
          c.hostStats(host.host).retries++;
          const delay = retryDelay(attempt, policy, (err as HttpStatusError).retryAfterMs);
          c.log?.debug({ host: host.host, what: op.what, attempt, delay, err: err.message }, 'retrying');
          await sleep(delay, op.signal, op.what);
        }
      }
    }
    if (errors.length === 1) throw errors[0];
    throw new AllHostsFailedError(errors, { ...base, host: this.registry });
  }

  private apiUrl(host: RegistryHost, path: string): string {
    const ns = host.mirror ? `${path.includes('?') ? '&' : '?'}ns=${encodeURIComponent(this.registry)}` : '';
    return `${host.api}/${this.repo}${path}${ns}`;
  }

  private async once<T>(host: RegistryHost, op: HttpStep<T>): Promise<T> {
    const c = this.client;
    const auth = c.authFor(host, this.credentials);
    const info: RegistryErrorInfo = { host: host.host, repo: this.repo, what: op.what };
    const api = op.url ?? this.apiUrl(host, op.path ?? '');
    const scopes = op.scopes ?? this.scopes;
    const cacheKey = op.redirectKey ? `${host.origin}|${this.repo}|${op.redirectKey}` : undefined;
    let url = api;
    let cached = false;
    if (cacheKey) {
      const hit = c.redirects.get(cacheKey);
      if (hit) {
        url = hit;
        cached = true;
        c.stats.redirectCacheHits++;
      }
    }
    let reauthed = false;
    for (let hop = 0; ; hop++) {
      const atHost = sameOrigin(url, host.origin);
      const headers: Record<string, string | string[]> = { 'user-agent': c.userAgent };
      if (atHost) for (const [k, v] of Object.entries(host.headers)) headers[k] = v;
      Object.assign(headers, op.headers);
      let authorization: string | undefined;
      if (atHost) {
        authorization = await auth.authorization(scopes, op.signal);
        if (authorization) headers.authorization = authorization;
      }
      const agent = c.pool.agent(atHost ? host.tls : (c.opts.otherTls ?? {}), op.method === 'HEAD');
      c.stats.requests++;
      c.hostStats(host.host).requests++;
      let res: HttpResponse;
      const body = op.body?.();
      try {
        res = await send(agent, url, { method: op.method, headers, body, signal: op.signal }, info);
      } catch (e) {
        if (cached && cacheKey && !(e instanceof AbortedError)) {
          c.redirects.invalidate(cacheKey, url);
          throw new StaleRedirect(e, info);
        }
        throw e;
      }
      if (isRedirect(res.status)) {
        const loc = headerValue(res.headers, 'location');
        discard(res);
        dropBody(body);
        if (!loc) throw new ProtocolError(`HTTP ${res.status} without a Location`, { ...info, status: res.status });
        if (hop >= MAX_REDIRECTS) throw new ProtocolError(`more than ${MAX_REDIRECTS} redirects`, info);
        let next: URL;
        try {
          next = new URL(loc, url);
        } catch {
          throw new ProtocolError(`redirect to an invalid URL`, info);
        }
        if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new ProtocolError(`redirect to a ${next.protocol} URL`, info);
        if (new URL(url).protocol === 'https:' && next.protocol === 'http:' && !isLoopbackHost(next.host)) {
          throw new ProtocolError(`refusing a redirect from https to plain http (${next.origin})`, info);
        }
        c.stats.redirects++;
        if (cacheKey) c.redirects.set(cacheKey, next.href, redirectExpiry(next, res.headers));
        url = next.href;
        continue;
      }
      if (res.status === 401 && atHost) {
        const www = res.headers['www-authenticate'];
        await errorText(res);
        dropBody(body);
        if (reauthed) {
          throw new AuthError(authorization?.startsWith('Basic ')
            ? `the registry refused the Basic credentials for ${host.host}`
            : `HTTP 401 again with a fresh ${authorization ? 'token' : 'request'}: the credentials do not grant ${scopes.join(' ')}`,
          { ...info, status: 401 });
        }
        await auth.unauthorized(www, scopes, authorization, { ...info, status: 401 });
        if (authorization) c.stats.reauths++;
        reauthed = true;
        url = api;
        cached = false;
        continue;
      }
      if (cached && cacheKey && (res.status < 200 || res.status >= 300)) {
        await errorText(res);
        c.redirects.invalidate(cacheKey, url);
        throw new StaleRedirect(new Error(`HTTP ${res.status}`), info);
      }
      try {
        return await op.handle(res, info);
      } catch (e) {
        if (cached && cacheKey) c.redirects.invalidate(cacheKey, url);
        throw e;
      } finally {
        dropBody(body);
      }
    }
  }

  // ---- manifests

  /** The raw manifest or index for a tag or digest. A digest reference is verified against the bytes. */
  async fetchManifest(reference: string, signal?: AbortSignal): Promise<{ digest: string; mediaType: string; raw: Buffer }> {
    const byDigest = isDigest(reference);
    return this.execute({
      what: `manifest ${reference}`,
      path: `/manifests/${reference}`,
      capability: byDigest ? 'pull' : 'resolve',
      method: 'GET',
      headers: { accept: MANIFEST_ACCEPT },
      signal,
      handle: async (res, info) => {
        await expectOk(res, [200], info);
        const raw = await readLimited(res, 4 << 20, info, signal);
        this.client.stats.bytes += raw.length;
        const digest = sha256(raw);
        if (byDigest && DIGEST_RE.test(reference) && digest !== reference) {
          throw new IntegrityError(`content has digest ${digest}`, info);
        }
        const header = headerValue(res.headers, 'docker-content-digest');
        if (!byDigest && header && DIGEST_RE.test(header) && header !== digest) {
          throw new IntegrityError(`Docker-Content-Digest ${header} does not match the content's ${digest}`, info);
        }
        let mediaType = (headerValue(res.headers, 'content-type') ?? '').split(';')[0].trim();
        if (!isIndexType(mediaType) && !isManifestType(mediaType)) {
          try {
            mediaType = (JSON.parse(raw.toString('utf8')) as { mediaType?: string }).mediaType ?? mediaType;
          } catch {
            throw new ProtocolError('manifest is not JSON', info);
          }
        }
        return { digest: byDigest ? reference : digest, mediaType, raw };
      },
    });
  }

  /**
   * The image manifest for a reference; an index (OCI or Docker list) is
   * resolved to the platform's manifest (default linux/amd64).
   */
  async getManifest(reference: string, opts: { platform?: Platform; preferFeature?: string; signal?: AbortSignal } = {}):
    Promise<ResolvedManifest> {
    const want = opts.platform ?? DEFAULT_PLATFORM;
    const first = await this.fetchManifest(reference, opts.signal);
    const info = { host: this.registry, repo: this.repo, what: `manifest ${reference}` };
    const parse = <T>(raw: Buffer): T => {
      try {
        return JSON.parse(raw.toString('utf8')) as T;
      } catch {
        throw new ProtocolError('manifest is not JSON', info);
      }
    };
    const doc = parse<{ mediaType?: string; manifests?: unknown; layers?: unknown }>(first.raw);
    if (isIndexType(first.mediaType) || Array.isArray(doc.manifests)) {
      const index = doc as ImageIndex;
      const d: Descriptor | undefined = selectPlatform(index, want, opts.preferFeature);
      if (!d) {
        const have = index.manifests.map((m) => (m.platform ? describePlatform(m.platform) : '?')).join(', ');
        throw new RegistryError(`no manifest for ${describePlatform(want)} in the index (has: ${have || 'none'})`, info);
      }
      const m = await this.fetchManifest(d.digest, opts.signal);
      const manifest = parse<ImageManifest>(m.raw);
      if (!Array.isArray(manifest.layers)) throw new ProtocolError(`${d.digest} is not an image manifest`, info);
      return { digest: m.digest, mediaType: m.mediaType, manifest, raw: m.raw, index: { digest: first.digest, mediaType: first.mediaType, index } };
    }
    if (!Array.isArray(doc.layers)) throw new ProtocolError(`not an image manifest or index (mediaType ${first.mediaType || 'unset'})`, info);
    return { digest: first.digest, mediaType: first.mediaType, manifest: doc as ImageManifest, raw: first.raw };
  }

  // ---- blobs

  /** The size of a blob (HEAD). */
  async statBlob(digest: string, signal?: AbortSignal): Promise<number> {
    return this.execute({
      what: `blob ${digest} (HEAD)`,
      path: `/blobs/${digest}`,
      capability: 'pull',
      method: 'HEAD',
      // no redirectKey: signed URLs are per method (a HEAD URL would fail a GET)
      signal,
      handle: async (res, info) => {
        await expectOk(res, [200], info);
        discard(res);
        const n = Number(headerValue(res.headers, 'content-length'));
        if (!Number.isSafeInteger(n) || n < 0) throw new ProtocolError('HEAD without a Content-Length', info);
        return n;
      },
    });
  }

  /** A whole blob (config, bootstrap layer), verified against its sha256 digest. */
  async fetchBlob(digest: string, opts: { maxBytes?: number; signal?: AbortSignal } = {}): Promise<Buffer> {
    const max = opts.maxBytes ?? 256 << 20;
    return this.execute({
      what: `blob ${digest}`,
      path: `/blobs/${digest}`,
      capability: 'pull',
      method: 'GET',
      headers: { 'accept-encoding': 'identity' },
      redirectKey: digest,
      signal: opts.signal,
      handle: async (res, info) => {
        await expectOk(res, [200], info);
        const cl = headerValue(res.headers, 'content-length');
        const n = cl === undefined ? undefined : Number(cl);
        if (n !== undefined && n > max) {
          discard(res);
          throw new ProtocolError(`blob is ${n} bytes, more than the ${max} allowed here`, info);
        }
        const data = n !== undefined ? await readExact(res, n, info, opts.signal) : await readLimited(res, max, info, opts.signal);
        this.client.stats.bytes += data.length;
        if (DIGEST_RE.test(digest) && sha256(data) !== digest) throw new IntegrityError(`content has digest ${sha256(data)}`, info);
        return data;
      },
    });
  }

  /**
   * The last `n` bytes of a blob (all of it if shorter) and the blob's size,
   * with one suffix-Range GET (`bytes=-n`): no HEAD first. A 200 (Range
   * ignored) is read whole only within ignoredRangeMaxBytes.
   */
  async readBlobTail(digest: string, n: number, opts: { signal?: AbortSignal } = {}): Promise<{ size: number; off: number; data: Buffer }> {
    if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`bad tail length ${n} of ${digest}`);
    const range = `bytes=-${n}`;
    const maxIgnored = this.client.opts.ignoredRangeMaxBytes ?? 16 << 20;
    return this.rangeGet(digest, range, opts.signal, {
      partial: async (res, info) => {
        const cr = headerValue(res.headers, 'content-range') ?? '';
        const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(cr.trim());
        const [from, to, size] = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [NaN, NaN, NaN];
        if (!m || to !== size - 1 || from !== Math.max(0, size - n) || !Number.isSafeInteger(size)) {
          discard(res);
          // not retried: the caller's way around a server that gets suffix ranges wrong is a HEAD
          throw new ProtocolError(`asked for ${range}, got Content-Range "${cr}"`, { ...info, status: 206 });
        }
        return { size, off: from, data: Buffer.concat(await this.rangeBody(res, to - from + 1, info, opts.signal)) };
      },
      whole: async (res, info) => {
        const size = Number(headerValue(res.headers, 'content-length'));
        if (!Number.isSafeInteger(size) || size > maxIgnored) {
          discard(res);
          throw new ProtocolError(`the server ignored the Range header (HTTP 200 for ${range}); ` +
            `refusing to download ${Number.isSafeInteger(size) ? size : 'all the'} bytes for it`, { ...info, status: 200 });
        }
        const all = await readExact(res, size, info, opts.signal);
        this.client.stats.bytes += size;
        const off = Math.max(0, size - n);
        return { size, off, data: Buffer.from(all.subarray(off)) }; // a copy: the rest of the body is not kept
      },
    });
  }

  /**
   * Bytes [off, off+len) of a blob with one Range GET. Accepts 206 with a
   * matching Content-Range; a 200 (Range ignored) only when the range ends
   * within ignoredRangeMaxBytes (the prefix is read, the rest abandoned).
   * The bytes are not verified here: chunk digests do that.
   */
  async readBlob(digest: string, off: number, len: number, opts: { signal?: AbortSignal; blobSize?: number } = {}): Promise<Buffer> {
    return Buffer.concat(await this.readBlobParts(digest, off, len, opts), len);
  }

  /**
   * readBlob's bytes as the socket delivered them, in order, not joined: the
   * chunk fetcher decodes from them. `onPart` sees each as it arrives (a 206's
   * body; a 200's slice comes whole at the end), so a chunk can be decoded
   * before the rest of the range is in.
   */
  async readBlobParts(digest: string, off: number, len: number, opts: { signal?: AbortSignal; blobSize?: number; onPart?: OnPart } = {}): Promise<Buffer[]> {
    if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len <= 0) {
      throw new RangeError(`bad range [${off}, +${len}) of ${digest}`);
    }
    const last = off + len - 1;
    const range = `bytes=${off}-${last}`;
    const maxIgnored = this.client.opts.ignoredRangeMaxBytes ?? 16 << 20;
    return this.rangeGet(digest, range, opts.signal, {
      partial: async (res, info) => {
        const cr = headerValue(res.headers, 'content-range') ?? '';
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(cr.trim());
        if (!m || Number(m[1]) !== off || Number(m[2]) !== last) {
          discard(res);
          // retryable: a confused proxy or cache may answer right next time
          throw new ProtocolError(`asked for ${range}, got Content-Range "${cr}"`, { ...info, status: 206 }, true);
        }
        if (m[3] !== '*' && opts.blobSize !== undefined && Number(m[3]) !== opts.blobSize) {
          discard(res);
          throw new ProtocolError(`Content-Range says the blob is ${m[3]} bytes, expected ${opts.blobSize}`, { ...info, status: 206 });
        }
        return this.rangeBody(res, len, info, opts.signal, opts.onPart);
      },
      whole: async (res, info) => {
        const cl = Number(headerValue(res.headers, 'content-length'));
        if (Number.isFinite(cl) && cl < off + len) {
          discard(res);
          throw new ProtocolError(`HTTP 200 with ${cl} bytes for ${range}: the blob is shorter than the range`, { ...info, status: 200 });
        }
        if (off + len > maxIgnored) {
          discard(res);
          throw new ProtocolError(`the server ignored the Range header (HTTP 200 for ${range}); ` +
            `refusing to download ${Number.isFinite(cl) ? cl : 'all the'} bytes for it`, { ...info, status: 200 });
        }
        const data = await readSlice(res, off, len, info, opts.signal);
        this.client.stats.bytes += off + len;
        return [data];
      },
    });
  }

  /**
   * One Range GET of a blob, with what every answer is checked for (the blob
   * the server names, 416, errors); a 206 and a 200 go to the caller.
   */
  private rangeGet<T>(digest: string, range: string, signal: AbortSignal | undefined, on: {
    partial(res: HttpResponse, info: RegistryErrorInfo): Promise<T>;
    whole(res: HttpResponse, info: RegistryErrorInfo): Promise<T>;
  }): Promise<T> {
    return this.execute({
      what: `blob ${digest} ${range}`,
      path: `/blobs/${digest}`,
      capability: 'pull',
      method: 'GET',
      headers: { range, 'accept-encoding': 'identity' },
      redirectKey: digest,
      signal,
      handle: async (res, info) => {
        const dcd = headerValue(res.headers, 'docker-content-digest');
        if (dcd && DIGEST_RE.test(dcd) && DIGEST_RE.test(digest) && dcd !== digest) {
          discard(res);
          throw new IntegrityError(`the server sent blob ${dcd}`, info);
        }
        if (res.status === 206) return on.partial(res, info);
        if (res.status === 200) return on.whole(res, info);
        if (res.status === 416) {
          const body = await errorText(res);
          throw new ProtocolError(`range not satisfiable (HTTP 416)${body ? `: ${body.slice(0, 200)}` : ''}`, { ...info, status: 416 });
        }
        await expectOk(res, [], info);
        throw new Error('unreachable');
      },
    });
  }

  /** A 206's body of `len` bytes; a Content-Length that says otherwise is a truncation. */
  private async rangeBody(res: HttpResponse, len: number, info: RegistryErrorInfo, signal?: AbortSignal, onPart?: OnPart): Promise<Buffer[]> {
    const cl = headerValue(res.headers, 'content-length');
    if (cl !== undefined && Number(cl) !== len) {
      discard(res);
      throw new BodyLengthError(`Content-Length ${cl} for a ${len}-byte range (truncated)`, { ...info, status: 206 });
    }
    const parts = await readParts(res, len, info, signal, onPart);
    this.client.stats.bytes += len;
    return parts;
  }
}
