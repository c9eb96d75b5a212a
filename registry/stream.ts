// A whole blob as a stream (the converter's layer input), through the
// client's execute (hosts, retries, auth, redirects). A body that fails
// midway is resumed with `Range: bytes=N-` from the first byte not yet
// delivered, so what the consumer got is never repeated; the sha256 of
// everything delivered is checked at the end.
import crypto from 'node:crypto';
import type { Repository } from './client';
import { expectOk } from './client';
import { AbortedError, BodyLengthError, IntegrityError, ProtocolError, RegistryError, RegistryErrorInfo } from './errors';
import { HttpResponse, discard, headerValue, transportError } from './http';
import { retryDelay, sleep } from './retry';

export interface BlobStreamOptions {
  /** the descriptor's size: checked against Content-Length and the bytes delivered */
  size?: number;
  signal?: AbortSignal;
}

/** How a response continues a stream at byte `from`: bytes to skip first, or an error. */
export interface StreamStart {
  /** leading bytes of the body that were delivered already (a server that ignored Range) */
  skip: number;
  /** the blob's total size if the response says so */
  total?: number;
}

/**
 * Checks a response to GET (from = 0) or `Range: bytes=from-`: 200 is the
 * whole blob (skip `from` bytes), 206 must start exactly at `from`.
 */
export function streamStart(status: number, headers: { contentLength?: string; contentRange?: string }, from: number):
  StreamStart | string {
  if (status === 200) {
    const n = headers.contentLength === undefined ? undefined : Number(headers.contentLength);
    if (n !== undefined && (!Number.isSafeInteger(n) || n < from)) return `HTTP 200 with Content-Length ${headers.contentLength} when resuming at byte ${from}`;
    return { skip: from, total: n };
  }
  if (status === 206 && from > 0) {
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec((headers.contentRange ?? '').trim());
    if (!m || Number(m[1]) !== from) return `asked for bytes ${from}-, got Content-Range "${headers.contentRange ?? ''}"`;
    return { skip: 0, total: m[3] === '*' ? undefined : Number(m[3]) };
  }
  return `unexpected HTTP ${status}`;
}

/**
 * The blob's bytes in order. Connection, status and auth failures are
 * retried by execute; a body cut short is resumed (up to the retry policy's
 * attempts without progress in between). Ends with an IntegrityError if the
 * bytes do not hash to `digest` (sha256 only; other algorithms are not checked).
 */
export async function* streamBlob(repo: Repository, digest: string, opts: BlobStreamOptions = {}): AsyncGenerator<Buffer> {
  const c = repo.client;
  const policy = c.retry;
  const hash = /^sha256:[a-f0-9]{64}$/.test(digest) ? crypto.createHash('sha256') : undefined;
  let off = 0;
  let failures = 0;
  let resumes = 0;
  for (;;) {
    const from = off;
    const what = `blob ${digest}${from ? ` from byte ${from}` : ''}`;
    let info: RegistryErrorInfo = { repo: repo.repo, what };
    const { res, start } = await repo.execute<{ res: HttpResponse; start: StreamStart }>({
      what,
      path: `/blobs/${digest}`,
      capability: 'pull',
      method: 'GET',
      headers: from ? { range: `bytes=${from}-`, 'accept-encoding': 'identity' } : { 'accept-encoding': 'identity' },
      redirectKey: digest,
      signal: opts.signal,
      handle: async (r, i) => {
        info = i;
        if (r.status !== 200 && r.status !== 206) await expectOk(r, [], i);
        const s = streamStart(r.status, { contentLength: headerValue(r.headers, 'content-length'), contentRange: headerValue(r.headers, 'content-range') }, from);
        if (typeof s === 'string') {
          discard(r);
          throw new ProtocolError(s, { ...i, status: r.status }, true);
        }
        if (opts.size !== undefined && s.total !== undefined && s.total !== opts.size) {
          discard(r);
          throw new ProtocolError(`the blob is ${s.total} bytes, its descriptor says ${opts.size}`, { ...i, status: r.status });
        }
        return { res: r, start: s };
      },
    });
    let skip = start.skip;
    let done = false;
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        let b = chunk;
        if (skip > 0) {
          const n = Math.min(skip, b.length);
          skip -= n;
          b = b.subarray(n);
          if (!b.length) continue;
        }
        if (opts.size !== undefined && off + b.length > opts.size) {
          throw new ProtocolError(`body longer than the ${opts.size} bytes of the descriptor`, info);
        }
        hash?.update(b);
        off += b.length;
        c.stats.bytes += b.length;
        yield b;
      }
      done = true;
      if (skip > 0) throw new BodyLengthError(`body ended before byte ${from}`, info);
      // a clean end that is short (no Content-Length to catch it): resume from here
      if (opts.size !== undefined && off !== opts.size) throw new BodyLengthError(`body truncated: got ${off} of ${opts.size} bytes`, info);
    } catch (e) {
      const err = e instanceof RegistryError || e instanceof AbortedError ? e : transportError(e, info, opts.signal);
      if (err instanceof AbortedError || !(err instanceof RegistryError) || !err.retryable) throw err;
      // progress since the last failure means the connection is not hopeless
      failures = off > from ? 1 : failures + 1;
      if (failures >= policy.attempts || ++resumes > 4 * policy.attempts) throw err.withAttempts(failures);
      c.stats.retries++;
      c.log?.debug({ repo: repo.repo, digest, at: off, err: err.message }, 'blob body failed; resuming');
      await sleep(retryDelay(failures, policy), opts.signal, what);
      continue;
    } finally {
      if (!done) res.body.destroy();
    }
    break;
  }
  const got = hash ? `sha256:${hash.digest('hex')}` : undefined;
  if (got && got !== digest) throw new IntegrityError(`content has digest ${got}`, { repo: repo.repo, what: `blob ${digest}` });
}
