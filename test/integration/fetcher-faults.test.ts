// Faults between the client and a real docker-registry (token auth), injected
// by test/support/fault-proxy.ts: 5xx, 429 with Retry-After, resets before
// and during the body, a stalled body, a truncated body, a flipped byte, a
// 401 once the registry stops accepting the token, a 307 to another origin.
// Every read returns the right bytes or fails with a clear error after its
// retries; the chunk fetcher never writes a wrong byte.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { RegistryClient, Repository } from '../../registry/client';
import { staticCredentials } from '../../registry/docker-config';
import { HttpStatusError, TransportError, RegistryError } from '../../registry/errors';
import { RemoteBlobContent } from '../../content/remote/chunk-fetcher';
import { FetchScheduler } from '../../content/remote/scheduler';
import { buildSyntheticBlob, uploadBlob, SyntheticBlob } from '../support/testblob';
import { startRegistry, type Registry } from '../support/registry';
import { startTokenServer, type TokenServer } from '../support/token-server';
import { FaultProxy, Fault, isRangedBlobGet } from '../support/fault-proxy';
import { makeTempDir, removeTempDir } from '../support/tmp';

/** every test and hook is bounded: a hang fails instead of blocking the run */
const T = { timeout: 120_000 };

const USER = 'faultuser';
const PASS = 'faultpass';
const REPO = 'test/faults';
const PAGE = 4096;
const M = 1 << 20;

let dir: string;
let ts: TokenServer;
let reg: Registry;
let proxy: FaultProxy;
let data: Buffer;
let digest: string;
let blob: SyntheticBlob;
const cleanup: Array<() => Promise<unknown>> = [];

before(async () => {
  dir = await makeTempDir('fetcher-faults');
  ts = await startTokenServer(dir, { users: { [USER]: PASS }, allowAnonymous: false });
  cleanup.push(() => ts.stop());
  reg = await startRegistry({ authConfig: ts.registryAuth() });
  cleanup.push(() => reg.stop());
  proxy = await FaultProxy.start(reg.url);
  cleanup.push(() => proxy.stop());
  const push = { authorization: `Bearer ${ts.sign([`repository:${REPO}:pull,push`])}` };
  data = crypto.randomBytes(2 * M);
  digest = await uploadBlob(reg.url, REPO, data, { headers: push });
  blob = await buildSyntheticBlob({ chunkSizes: new Array(24).fill(256 * 1024), seed: 'faults' });
  await uploadBlob(reg.url, REPO, blob.data, { headers: push });
}, T);

after(async () => {
  for (const c of cleanup.reverse()) await c().catch((e) => console.error('cleanup:', e));
  if (dir) await removeTempDir(dir);
}, T);

function client(retry: Partial<{ attempts: number; baseDelayMs: number; maxDelayMs: number }> = {}): RegistryClient {
  const c = new RegistryClient({
    credentials: staticCredentials({ [proxy.host]: { username: USER, password: PASS } }),
    timeouts: { connectMs: 1000, headersMs: 2000, bodyMs: 500 },
    retry: { attempts: 4, baseDelayMs: 20, maxDelayMs: 200, ...retry },
  });
  cleanup.push(() => c.close());
  return c;
}

const repoOf = (c: RegistryClient): Repository => c.repository(proxy.host, REPO);

async function readOk(r: Repository, off: number, len: number): Promise<void> {
  const got = await r.readBlob(digest, off, len);
  assert.ok(got.equals(data.subarray(off, off + len)), `wrong bytes for ${off}+${len}`);
}

const oneShot: Array<[string, Fault]> = [
  ['HTTP 500', { kind: 'status', status: 500 }],
  ['HTTP 502', { kind: 'status', status: 502 }],
  ['HTTP 429 with Retry-After: 0', { kind: 'status', status: 429, headers: { 'retry-after': '0' } }],
  ['a reset before the response', { kind: 'reset' }],
  ['a reset in the middle of the body', { kind: 'reset-mid-body', afterBytes: 100_000 }],
  ['a body stalled longer than the body timeout', { kind: 'stall', afterBytes: 50_000, ms: 5_000 }],
  ['a truncated body (short Content-Length)', { kind: 'truncate', keepBytes: 1000 }],
];

for (const [name, fault] of oneShot) {
  test(`${name}, once: retried, the bytes are right`, T, async () => {
    const c = client();
    const r = repoOf(c);
    await readOk(r, 0, 10); // authenticated already, so the fault hits a real data request
    proxy.log.length = 0;
    proxy.inject({ match: isRangedBlobGet, fault });
    await readOk(r, 123_456, 400_000);
    assert.equal(proxy.pending, 0);
    assert.equal(c.stats.retries, 1);
    assert.deepEqual(proxy.log.map((e) => e.fault ?? 'ok'), [fault.kind, 'ok']);
  });
}

test('503 with Retry-After: 1 waits about a second', T, async () => {
  const c = client();
  const r = repoOf(c);
  await readOk(r, 0, 10);
  proxy.inject({ match: isRangedBlobGet, fault: { kind: 'status', status: 503, headers: { 'retry-after': '1' } } });
  const t0 = Date.now();
  await readOk(r, 0, 1000);
  const ms = Date.now() - t0;
  assert.ok(ms >= 950 && ms < 3000, `${ms} ms`);
});

test('persistent faults fail after the attempts with a clear error, in bounded time', T, async () => {
  const c = client();
  const r = repoOf(c);
  await readOk(r, 0, 10);
  proxy.inject({ match: isRangedBlobGet, fault: { kind: 'status', status: 503, body: 'overloaded' }, times: 4 });
  let t0 = Date.now();
  await assert.rejects(r.readBlob(digest, 0, 100), (e: Error) => {
    assert.ok(e instanceof HttpStatusError);
    assert.equal(e.message, `blob ${digest} bytes=0-99 in ${REPO} from ${proxy.host}: HTTP 503: overloaded (after 4 attempts)`);
    assert.equal((e as HttpStatusError).status, 503);
    assert.equal((e as HttpStatusError).attempts, 4);
    return true;
  });
  assert.ok(Date.now() - t0 < 2000);
  proxy.inject({ match: isRangedBlobGet, fault: { kind: 'stall', afterBytes: 10, ms: 10_000 }, times: 4 });
  t0 = Date.now();
  await assert.rejects(r.readBlob(digest, 0, 100_000), (e: Error) =>
    e instanceof TransportError && /response body stalled \(UND_ERR_BODY_TIMEOUT\) \(after 4 attempts\)$/.test(e.message));
  const ms = Date.now() - t0;
  assert.ok(ms >= 4 * 500 && ms < 6000, `${ms} ms`);
  assert.equal(proxy.pending, 0);
  await readOk(r, 0, 100); // and it recovers
});

test('a flipped byte is caught by the chunk digest and the chunk refetched', T, async () => {
  const c = client();
  const content = await RemoteBlobContent.open(repoOf(c), blob.entry, { amplify: 0 });
  const c3 = blob.chunks[3];
  proxy.log.length = 0;
  proxy.inject({ match: (r) => isRangedBlobGet(r) && r.headers.range === `bytes=${c3.cOffset}-${c3.cOffset + c3.cSize - 1}`, fault: { kind: 'flip' } });
  const out = Buffer.alloc(blob.uncompressed.length);
  await content.fill(c3.uOffset, PAGE, async (o, b) => void b.copy(out, o), (n) => Buffer.alloc(n));
  assert.ok(out.subarray(c3.uOffset, c3.uOffset + c3.uSize).equals(blob.uncompressed.subarray(c3.uOffset, c3.uOffset + c3.uSize)));
  assert.equal(content.stats.verifyFailures, 1);
  assert.deepEqual(proxy.log.map((e) => e.fault ?? 'ok'), ['flip', 'ok']);
});

test('a 401 once the registry stops accepting the token: re-authenticate once and continue', T, async () => {
  // The token server tells the client 300 s but signs exp = now − 57 s: with distribution's 60 s
  // leeway the registry accepts it for about 3 s, then answers 401 in the middle of the "lazy load".
  ts.opts.jwtLifetimeSec = -57;
  try {
    const c = client();
    const r = repoOf(c);
    const n0 = ts.requests.length;
    await readOk(r, 0, 1000);
    assert.equal(ts.requests.length, n0 + 1);
    await sleep(4_000);
    proxy.log.length = 0;
    await readOk(r, 1000, 1000);
    assert.equal(c.stats.reauths, 1);
    assert.equal(ts.requests.length, n0 + 2, 'one new token');
    assert.deepEqual(proxy.log.map((e) => e.status), [401, 206]);
  } finally {
    delete ts.opts.jwtLifetimeSec;
  }
  // an injected 401 with error="invalid_token" works the same way
  const c = client();
  const r = repoOf(c);
  await readOk(r, 0, 10);
  proxy.inject({
    match: isRangedBlobGet,
    fault: { kind: 'status', status: 401, headers: { 'www-authenticate': `Bearer realm="${ts.realm}",service="${ts.service}",scope="repository:${REPO}:pull",error="invalid_token"` } },
  });
  await readOk(r, 10, 10);
  assert.equal(c.stats.reauths, 1);
  // a 401 that persists after re-authenticating is an AuthError, not a retry loop
  proxy.inject({ match: isRangedBlobGet, fault: { kind: 'status', status: 401, headers: { 'www-authenticate': `Bearer realm="${ts.realm}",service="${ts.service}"` } }, times: 2 });
  await assert.rejects(r.readBlob(digest, 0, 10), /HTTP 401 again with a fresh token/);
  assert.equal(proxy.pending, 0);
});

test('a 307 to another origin: Authorization is dropped there, the target is cached, and dropped when it fails', T, async () => {
  // The "object store": another origin (another port) that needs no client credentials (it adds its own, like a signed URL).
  const store = await FaultProxy.start(reg.url, { stripAuthorization: true, upstreamHeaders: { authorization: `Bearer ${ts.sign([`repository:${REPO}:pull`])}` } });
  cleanup.push(() => store.stop());
  const c = client();
  const r = repoOf(c);
  await readOk(r, 0, 10); // holds a token now
  const date = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  proxy.log.length = 0;
  proxy.inject({ match: isRangedBlobGet, fault: { kind: 'redirect', to: store.url, query: { 'X-Amz-Date': date, 'X-Amz-Expires': '120' } }, times: Infinity });
  try {
    for (let i = 0; i < 5; i++) await readOk(r, i * 100_000, 50_000);
    assert.equal(proxy.entries((e) => e.path.includes('/blobs/')).length, 1, 'later reads went straight to the cached target');
    assert.ok(proxy.log[0].authorization, 'the registry got the token');
    assert.equal(store.log.length, 5);
    assert.ok(store.log.every((e) => !e.authorization), 'no Authorization crossed to the other origin');
    assert.ok(store.log.every((e) => e.path.includes('X-Amz-Expires=120')));
    assert.equal(c.stats.redirectCacheHits, 4);
    // the target starts failing (expired signature): back through the registry, which redirects again
    store.inject({ fault: { kind: 'status', status: 403, body: 'Request has expired' } });
    await readOk(r, 700_000, 1000);
    assert.equal(proxy.entries((e) => e.path.includes('/blobs/')).length, 2);
    assert.equal(c.stats.retries, 0, 'a stale target is not counted as a failed attempt');
  } finally {
    proxy.clear();
  }
});

test('chunk fetcher under random faults: every fill is right or fails cleanly, never wrong bytes', T, async (t) => {
  const c = client({ attempts: 4, baseDelayMs: 5, maxDelayMs: 50 });
  const content = await RemoteBlobContent.open(repoOf(c), blob.entry, {
    amplify: 512 * 1024, maxMerge: M, cacheBytes: 0, scheduler: new FetchScheduler({ concurrencyPerHost: 4 }),
  });
  let x = 12345;
  const rand = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const kinds: Fault[] = [
    { kind: 'status', status: 500 }, { kind: 'status', status: 503 }, { kind: 'reset' }, { kind: 'reset-mid-body' },
    { kind: 'truncate' }, { kind: 'flip' }, { kind: 'flip' }, { kind: 'stall', ms: 2000 },
  ];
  const injected: string[] = [];
  proxy.inject({
    match: (r) => isRangedBlobGet(r) && rand() < 0.3,
    fault: () => {
      const f = kinds[Math.floor(rand() * kinds.length)];
      injected.push(f.kind);
      return f;
    },
    times: Infinity,
  });
  const file = Buffer.alloc(blob.uncompressed.length);
  let wrong = 0;
  const sink = async (o: number, b: Buffer) => {
    if (!b.equals(blob.uncompressed.subarray(o, o + b.length))) wrong++;
    b.copy(file, o);
  };
  let ok = 0;
  let failed = 0;
  // widened chunks are written after their fill resolves; their GET (and its retries) must end within this test,
  // or a late retry lands in the next test's proxy log
  const background: Promise<void>[] = [];
  const hints = { background: (w: Promise<void>) => void background.push(w) };
  try {
    for (let round = 0; round < 6; round++) {
      content.resetPresence();
      const reads = Array.from({ length: 8 }, () => [Math.floor(rand() * content.size), 1 + Math.floor(rand() * 600_000)] as const);
      await Promise.all(reads.map(async ([o, l]) => {
        try {
          await content.fill(o, l, sink, (n) => Buffer.alloc(n), undefined, hints);
          const s = Math.floor(o / PAGE) * PAGE;
          const e = Math.min(Math.ceil((o + l) / PAGE) * PAGE, file.length);
          assert.ok(file.subarray(s, e).equals(blob.uncompressed.subarray(s, e)), 'window not filled');
          ok++;
        } catch (e) {
          assert.ok(e instanceof RegistryError, `unexpected error type: ${e}`);
          failed++;
        }
      }));
    }
  } finally {
    await Promise.all(background); // never rejects
    proxy.clear();
  }
  t.diagnostic(`fills ok ${ok}, failed ${failed}; faults injected ${injected.length}: ${injected.join(',')}; ` +
    `GETs ${content.stats.gets}, verify failures ${content.stats.verifyFailures}, HTTP retries ${c.stats.retries}`);
  assert.equal(wrong, 0, 'wrong bytes were written');
  assert.ok(injected.length >= 5, `only ${injected.length} faults injected`);
  assert.ok(ok >= 40, `${ok} ok, ${failed} failed, faults: ${injected.join(',')}`);
});

test('64 concurrent overlapping random reads through the registry fetch each chunk exactly once', T, async (t) => {
  const c = client();
  const content = await RemoteBlobContent.open(repoOf(c), blob.entry, { amplify: 512 * 1024, maxMerge: M });
  proxy.log.length = 0; // only chunk GETs from here on
  let x = 99;
  const rand = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const reads = Array.from({ length: 64 }, () => [Math.floor(rand() * content.size), 1 + Math.floor(rand() * 1_500_000)] as const);
  const file = Buffer.alloc(blob.uncompressed.length);
  await Promise.all(reads.map(([o, l]) => content.fill(o, l, async (off, b) => void b.copy(file, off), (n) => Buffer.alloc(n))));
  for (const [o, l] of reads) {
    const s = Math.floor(o / PAGE) * PAGE;
    const e = Math.min(Math.ceil((o + l) / PAGE) * PAGE, file.length);
    assert.ok(file.subarray(s, e).equals(blob.uncompressed.subarray(s, e)));
  }
  const gets = proxy.entries((e) => e.range !== undefined && e.status === 206);
  const fetched: number[] = [];
  for (const g of gets) {
    const [a, b] = /bytes=(\d+)-(\d+)/.exec(g.range!)!.slice(1).map(Number);
    for (const ch of blob.chunks) if (ch.cOffset >= a && ch.cOffset + ch.cSize <= b + 1) fetched.push(ch.index);
  }
  assert.equal(new Set(fetched).size, fetched.length, `chunks fetched twice: ${fetched.sort((p, q) => p - q).join(',')}`);
  t.diagnostic(`${gets.length} Range GETs for 64 reads, ${fetched.length} of ${blob.chunks.length} chunks fetched, ${content.stats.joined} joins`);
  assert.equal(gets.length, content.stats.gets);
  assert.ok(gets.length < 64, `${gets.length} GETs for 64 reads`);
});
