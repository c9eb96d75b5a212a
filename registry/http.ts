// HTTP on undici: one keep-alive Agent per TLS setting (a custom CA or
// skip_verify needs its own connections), connect/headers/body timeouts, and
// body readers that insist on the exact length promised.
import { Readable } from 'node:stream';
import type { Agent as UndiciAgent, Dispatcher } from 'undici';
import { AbortedError, BodyLengthError, RegistryErrorInfo, TransportError } from './errors';
import type { TlsSettings } from './hosts';
import { errorCode } from './retry';

export interface HttpTimeouts {
  /** TCP + TLS handshake */
  connectMs: number;
  /** request sent → response headers */
  headersMs: number;
  /** longest silence between two body chunks (a stalled body fails after this) */
  bodyMs: number;
  /** idle keep-alive connections are closed after this */
  keepAliveMs: number;
}

// undici's index loads all of undici (fetch, web streams, mocks, caches: 110 files); in the UML guest a worker's
// start paid 1.0-1.2 s for it, against 0.33-0.43 s for the two modules used here. The version is pinned by
// package-lock; the requests of unit/registry-connections, -push and -tail go through both.
const Agent: typeof UndiciAgent = require('undici/lib/dispatcher/agent');
const dispatchRequest: (this: Dispatcher, opts: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData> = require('undici/lib/api/api-request');

export const DEFAULT_TIMEOUTS: HttpTimeouts = { connectMs: 10_000, headersMs: 30_000, bodyMs: 30_000, keepAliveMs: 60_000 };

export type Headers = Record<string, string | string[] | undefined>;

export interface HttpResponse {
  status: number;
  headers: Headers;
  body: Dispatcher.ResponseData['body'];
}

export class HttpPool {
  private readonly agents = new Map<string, UndiciAgent>();
  private closed = false;

  constructor(readonly timeouts: HttpTimeouts = DEFAULT_TIMEOUTS, private readonly connectionsPerOrigin = 16) {}

  /**
   * head: HEAD requests get connections of their own. undici (7.x) closes a
   * connection after a HEAD, and from then on the pool opened a new
   * connection for every request (measured: 6 Range GETs after one HEAD on
   * 6 connections), so each chunk fetch paid a TCP (and TLS) handshake.
   */
  agent(tls: TlsSettings = {}, head = false): UndiciAgent {
    if (this.closed) throw new Error('HTTP pool is closed');
    const key = JSON.stringify([tls.ca ?? null, !!tls.skipVerify, tls.cert ?? null, tls.key ?? null, head]);
    let a = this.agents.get(key);
    if (!a) {
      a = new Agent({
        connections: this.connectionsPerOrigin,
        keepAliveTimeout: this.timeouts.keepAliveMs,
        keepAliveMaxTimeout: this.timeouts.keepAliveMs,
        headersTimeout: this.timeouts.headersMs,
        bodyTimeout: this.timeouts.bodyMs,
        connect: {
          timeout: this.timeouts.connectMs,
          ...(tls.ca ? { ca: tls.ca } : {}),
          ...(tls.skipVerify ? { rejectUnauthorized: false } : {}),
          ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}),
        },
      });
      this.agents.set(key, a);
    }
    return a;
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(all.map((a) => a.close().catch(() => a.destroy())));
  }
}

const CODE_TEXT: Record<string, string> = {
  ECONNRESET: 'connection reset',
  ECONNREFUSED: 'connection refused',
  EPIPE: 'connection broken',
  ETIMEDOUT: 'connection timed out',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  UND_ERR_CONNECT_TIMEOUT: 'connect timed out',
  UND_ERR_HEADERS_TIMEOUT: 'no response headers in time',
  UND_ERR_BODY_TIMEOUT: 'response body stalled',
  UND_ERR_SOCKET: 'connection closed by the other side',
  UND_ERR_CLOSED: 'connection closed',
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: 'body length does not match Content-Length',
  ERR_STREAM_PREMATURE_CLOSE: 'body ended prematurely',
};

/** Turns whatever undici or the socket threw into a typed error (or AbortedError). */
export function transportError(e: unknown, info: RegistryErrorInfo, signal?: AbortSignal): Error {
  if (e instanceof TransportError || e instanceof BodyLengthError || e instanceof AbortedError) return e;
  const code = errorCode(e);
  if (signal?.aborted || code === 'UND_ERR_ABORTED' || (e as Error)?.name === 'AbortError') return new AbortedError(info.what ?? 'request');
  const text = (code && CODE_TEXT[code]) ?? (e as Error)?.message ?? String(e);
  const tls = /certificate|self[- ]signed|SSL|TLS|ERR_TLS/i.test(`${code} ${(e as Error)?.message}`);
  if (tls) {
    // Not retryable: a certificate problem does not fix itself.
    const err = new TransportError(`TLS failure: ${(e as Error)?.message ?? code}`, { ...info, cause: e }, code);
    (err as { retryable: boolean }).retryable = false;
    return err;
  }
  return new TransportError(`${text}${code && CODE_TEXT[code] ? ` (${code})` : ''}`, { ...info, cause: e }, code);
}

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** A request body: small ones in memory, uploads as a stream (made anew for each send). */
export type RequestBody = string | Buffer | Readable;

export interface SendOptions {
  method?: HttpMethod;
  headers?: Record<string, string | string[]>;
  body?: RequestBody;
  signal?: AbortSignal;
}

/** Closes a request body stream that was not (fully) sent, e.g. after an early 401 (frees its file descriptor). */
export function dropBody(body: RequestBody | undefined): void {
  if (body instanceof Readable && !body.readableEnded && !body.destroyed) body.destroy();
}

/** One request, no redirects followed, no retries. Network errors come back typed. */
export async function send(agent: Dispatcher, url: string, opts: SendOptions, info: RegistryErrorInfo): Promise<HttpResponse> {
  try {
    const u = new URL(url);
    const r = await dispatchRequest.call(agent, {
      origin: u.origin,
      path: u.pathname + u.search,
      method: opts.method ?? 'GET',
      headers: opts.headers,
      body: opts.body,
      signal: opts.signal,
    });
    return { status: r.statusCode, headers: r.headers, body: r.body };
  } catch (e) {
    dropBody(opts.body);
    throw transportError(e, info, opts.signal);
  }
}

/**
 * Sees a body's buffers as they arrive: `at` is where the part starts in the
 * body. Parts of one response come in order; a retried request starts again
 * at 0.
 */
export type OnPart = (part: Buffer, at: number) => void;

/**
 * Reads a body that must be exactly len bytes, as the buffers the socket
 * delivered (views the parser made of each read, kept, not copied): chunk
 * data decodes from them directly. `onPart` sees each one as it arrives.
 */
export async function readParts(res: HttpResponse, len: number, info: RegistryErrorInfo, signal?: AbortSignal, onPart?: OnPart): Promise<Buffer[]> {
  const parts: Buffer[] = [];
  let got = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      if (got + chunk.length > len) {
        res.body.destroy();
        throw new BodyLengthError(`body longer than the ${len} bytes asked for`, info);
      }
      parts.push(chunk);
      onPart?.(chunk, got);
      got += chunk.length;
    }
  } catch (e) {
    throw transportError(e, info, signal);
  }
  if (got !== len) throw new BodyLengthError(`body truncated: got ${got} of ${len} bytes`, info);
  return parts;
}

/** Reads a body that must be exactly len bytes, into one buffer. */
export async function readExact(res: HttpResponse, len: number, info: RegistryErrorInfo, signal?: AbortSignal): Promise<Buffer> {
  return Buffer.concat(await readParts(res, len, info, signal), len);
}

/**
 * Reads [skip, skip+len) of a body and abandons the rest (for a server that
 * answered a Range request with the whole blob).
 */
export async function readSlice(res: HttpResponse, skip: number, len: number, info: RegistryErrorInfo,
  signal?: AbortSignal): Promise<Buffer> {
  const out = Buffer.allocUnsafe(len);
  let pos = 0;
  let got = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      const from = Math.max(0, skip - pos);
      const to = Math.min(chunk.length, skip + len - pos);
      if (to > from) {
        chunk.copy(out, got, from, to);
        got += to - from;
      }
      pos += chunk.length;
      if (got === len) break;
    }
  } catch (e) {
    throw transportError(e, info, signal);
  } finally {
    if (got === len) res.body.destroy();
  }
  if (got !== len) throw new BodyLengthError(`body truncated: ended at byte ${pos}, wanted up to ${skip + len}`, info);
  return out;
}

/** Reads a small body (manifests, token responses, error texts), refusing more than max bytes. */
export async function readLimited(res: HttpResponse, max: number, info: RegistryErrorInfo, signal?: AbortSignal): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > max) {
        res.body.destroy();
        throw new BodyLengthError(`response larger than ${max} bytes`, info);
      }
      parts.push(chunk);
    }
  } catch (e) {
    throw transportError(e, info, signal);
  }
  return Buffer.concat(parts, n);
}

/** A short error text from a failed response; never throws. */
export async function errorText(res: HttpResponse): Promise<string> {
  try {
    const b = await readLimited(res, 4096, {});
    return b.toString('utf8');
  } catch {
    return '';
  }
}

/** Drops a body we do not want, letting the connection be reused when it is small. */
export function discard(res: HttpResponse): void {
  res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
}

export function headerValue(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}
