// Backoff, Retry-After, redirect expiry hints, token lifetimes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, parseRetryAfter, retryDelay, errorCode, DEFAULT_RETRY } from '../../registry/retry';
import { RedirectCache, redirectExpiry, redirectTtlMs, sameOrigin, DEFAULT_REDIRECT_TTL_MS, MAX_REDIRECT_TTL_MS } from '../../registry/redirects';
import { TokenCache, tokenUseMs } from '../../registry/token-cache';
import { RegistryError, HttpStatusError, AllHostsFailedError, TransportError } from '../../registry/errors';

test('backoff doubles, stays within [nominal/2, nominal], is capped', () => {
  const p = { attempts: 6, baseDelayMs: 100, maxDelayMs: 1000, maxRetryAfterMs: 5000 };
  assert.equal(backoffDelay(1, p, () => 0), 50);
  assert.equal(backoffDelay(1, p, () => 1), 100);
  assert.equal(backoffDelay(2, p, () => 0), 100);
  assert.equal(backoffDelay(3, p, () => 1), 400);
  assert.equal(backoffDelay(10, p, () => 1), 1000);
  assert.equal(backoffDelay(10, p, () => 0), 500);
  for (let a = 1; a < 8; a++) {
    const d = backoffDelay(a, p);
    const nominal = Math.min(1000, 100 * 2 ** (a - 1));
    assert.ok(d >= nominal / 2 && d <= nominal, `attempt ${a}: ${d}`);
  }
});

test('Retry-After: seconds, HTTP date, garbage; capped by the policy', () => {
  const now = Date.parse('2024-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('3', now), 3000);
  assert.equal(parseRetryAfter('Mon, 01 Jan 2024 00:00:05 GMT', now), 5000);
  assert.equal(parseRetryAfter('Sun, 31 Dec 2023 00:00:00 GMT', now), 0);
  assert.equal(parseRetryAfter('soon', now), undefined);
  assert.equal(parseRetryAfter(undefined, now), undefined);
  assert.equal(retryDelay(1, DEFAULT_RETRY, 60_000), DEFAULT_RETRY.maxRetryAfterMs);
  assert.equal(retryDelay(1, DEFAULT_RETRY, 1500), 1500);
});

test('retryable statuses and error codes', () => {
  for (const s of [500, 502, 503, 504, 429, 408]) assert.ok(new HttpStatusError(s, {}).retryable, String(s));
  for (const s of [400, 401, 403, 404, 416]) assert.ok(!new HttpStatusError(s, {}).retryable, String(s));
  assert.equal(errorCode({ code: 'UND_ERR_SOCKET', cause: { code: 'ECONNRESET' } }), 'ECONNRESET');
  assert.equal(errorCode(Object.assign(new Error('x'), { cause: { code: 'ECONNREFUSED' } })), 'ECONNREFUSED');
  assert.ok(new HttpStatusError(503, {}).retryable);
  assert.ok(!new HttpStatusError(400, {}).retryable);
});

test('error messages name host, repo, what, status and attempts', () => {
  const e = new HttpStatusError(503, { host: 'reg:5000', repo: 'a/b', what: 'blob sha256:1 bytes=0-9' }, 'busy');
  e.withAttempts(4);
  assert.equal(e.message, 'blob sha256:1 bytes=0-9 in a/b from reg:5000: HTTP 503: busy (after 4 attempts)');
  const all = new AllHostsFailedError([new TransportError('connection refused (ECONNREFUSED)', { host: 'm:1' }), e], { what: 'blob x', repo: 'a/b', host: 'reg:5000' });
  assert.match(all.message, /all 2 hosts failed: from m:1: connection refused.*HTTP 503/);
  assert.ok(all instanceof RegistryError);
  assert.equal(all.attempts, 5);
});

test('redirect expiry hints: S3 SigV4, GCS, Expires, Azure se, Cache-Control', () => {
  const now = Date.parse('2024-05-01T10:00:00Z');
  assert.equal(redirectExpiry('https://s3/x?X-Amz-Date=20240501T095000Z&X-Amz-Expires=1200&X-Amz-Signature=a', {}, now), Date.parse('2024-05-01T10:10:00Z'));
  assert.equal(redirectExpiry('https://gcs/x?X-Goog-Date=20240501T100000Z&X-Goog-Expires=60', {}, now), now + 60_000);
  assert.equal(redirectExpiry('https://cf/x?Expires=1714557900&Signature=x', {}, now), 1714557900_000);
  assert.equal(redirectExpiry('https://az/x?sv=1&se=2024-05-01T10:30:00Z&sig=x', {}, now), Date.parse('2024-05-01T10:30:00Z'));
  assert.equal(redirectExpiry('https://cdn/x', { 'cache-control': 'public, max-age=120' }, now), now + 120_000);
  assert.equal(redirectExpiry('https://cdn/x', {}, now), undefined);
  assert.equal(redirectTtlMs(undefined, now), DEFAULT_REDIRECT_TTL_MS);
  assert.equal(redirectTtlMs(now + 100_000, now), 90_000);
  assert.equal(redirectTtlMs(now + 3_600_000, now), MAX_REDIRECT_TTL_MS);
  assert.equal(redirectTtlMs(now - 1, now), 0);
});

test('redirect cache: expires, invalidates only the failed URL', () => {
  let t = 1_000_000;
  const c = new RedirectCache(() => t);
  c.set('k', 'https://a/1', t + 20_000);
  assert.equal(c.get('k'), 'https://a/1');
  c.invalidate('k', 'https://other');
  assert.equal(c.get('k'), 'https://a/1');
  t += 18_001; // 20 s minus a 10% margin
  assert.equal(c.get('k'), undefined);
  c.set('k', 'https://a/2', undefined);
  c.invalidate('k', 'https://a/2');
  assert.equal(c.get('k'), undefined);
  c.set('k', 'https://a/3', t - 5); // already expired: not cached
  assert.equal(c.size, 0);
});

test('origins: scheme, host and port all count', () => {
  assert.ok(sameOrigin('http://127.0.0.1:5000/v2/x', 'http://127.0.0.1:5000'));
  assert.ok(!sameOrigin('http://127.0.0.1:5000/v2/x', 'http://localhost:5000'));
  assert.ok(!sameOrigin('http://127.0.0.1:5000', 'http://127.0.0.1:5001'));
  assert.ok(!sameOrigin('http://127.0.0.1:5000', 'https://127.0.0.1:5000'));
});

test('token cache: lifetime with margin, default 60 s, shared fetches, invalidate', async () => {
  assert.equal(tokenUseMs(undefined), 54_000);
  assert.equal(tokenUseMs(300), 270_000);
  assert.equal(tokenUseMs(3600), 3_570_000);
  assert.equal(tokenUseMs(2), 1_800);
  let t = 0;
  const cache = new TokenCache(() => t);
  let fetches = 0;
  const fetch = async () => {
    fetches++;
    await new Promise((r) => setTimeout(r, 5));
    return { token: `t${fetches}`, expiresIn: 10 };
  };
  const got = await Promise.all([1, 2, 3].map(() => cache.getOrFetch('k', fetch)));
  assert.deepEqual(got, ['t1', 't1', 't1']);
  assert.equal(fetches, 1);
  t = 8_999;
  assert.equal(await cache.getOrFetch('k', fetch), 't1');
  t = 9_000;
  assert.equal(await cache.getOrFetch('k', fetch), 't2');
  cache.invalidate('k', 't1'); // not the current one
  assert.equal(cache.get('k'), 't2');
  cache.invalidate('k', 't2');
  assert.equal(cache.get('k'), undefined);
  await assert.rejects(cache.getOrFetch('e', async () => { throw new Error('boom'); }), /boom/);
  assert.equal(await cache.getOrFetch('e', fetch), 't3'); // a failure is not remembered
});
