// The registry client against Debian's docker-registry on 127.0.0.1:
// anonymous, htpasswd Basic, token auth (RS256 JWT with x5c), TLS with a test
// CA, mirrors from hosts.toml (a closed port and a 500ing mirror before the
// origin), manifests and indexes with platform selection, blobs and ranges,
// and remote DataBlob loading.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { RegistryClient } from '../../registry/client';
import { staticCredentials } from '../../registry/docker-config';
import { AuthError, NotFoundError, ProtocolError, TransportError, IntegrityError } from '../../registry/errors';
import { MediaType } from '../../registry/manifest';
import { RegistryBlobSource } from '../../content/remote/source';
import { RemoteBlobContent } from '../../content/remote/chunk-fetcher';
import { BlobFetcher } from '../../content/remote';
import { buildSyntheticBlob, uploadBlob, uploadManifest } from '../support/testblob';
import { DataBlob, metadataTailBytes } from '../../image/blob/datablob';
import { FileSource } from '../../image/blob/source';
import { NydusBlobContent } from '../../content/nydusblob';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { startRegistry, type Registry } from '../support/registry';
import { makeTestPki, type TestPki } from '../support/tls';
import { startTokenServer, type TokenServer } from '../support/token-server';
import { FaultProxy } from '../support/fault-proxy';
import { nydusFixtures, FIXTURE_BLOB_ID, memorySource } from '../support/fixtures';
import { makeTempDir, removeTempDir } from '../support/tmp';
import { freePort } from '../support/wait';

/** every test and hook is bounded: a hang fails instead of blocking the run */
const T = { timeout: 120_000 };

const USER = 'testuser';
const PASS = 'testpass';
const FAST = { timeouts: { connectMs: 2000, headersMs: 5000, bodyMs: 5000 }, retry: { attempts: 3, baseDelayMs: 10, maxDelayMs: 50 } };

let dir: string;
let anon: Registry;
let basic: Registry;
let tokenReg: Registry;
let tls: Registry;
let ts: TokenServer;
let pki: TestPki;
const cleanup: Array<() => Promise<unknown>> = [];

const sha = (b: Buffer) => `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;
const basicHeader = { authorization: 'Basic ' + Buffer.from(`${USER}:${PASS}`).toString('base64') };

before(async () => {
  dir = await makeTempDir('fetcher-reg');
  anon = await startRegistry();
  cleanup.push(() => anon.stop());
  basic = await startRegistry({ htpasswd: { user: USER, pass: PASS } });
  cleanup.push(() => basic.stop());
  ts = await startTokenServer(dir, { users: { [USER]: PASS }, refreshTokens: { 'refresh-abc': USER }, allowAnonymous: false, expiresIn: 300 });
  cleanup.push(() => ts.stop());
  tokenReg = await startRegistry({ authConfig: ts.registryAuth() });
  cleanup.push(() => tokenReg.stop());
  pki = await makeTestPki(path.join(dir, 'pki'));
  tls = await startRegistry({ tls: { certificate: pki.certPath, key: pki.keyPath, ca: pki.ca } });
  cleanup.push(() => tls.stop());
}, T);

after(async () => {
  for (const c of cleanup.reverse()) await c().catch((e) => console.error('cleanup:', e));
  if (dir) await removeTempDir(dir);
}, T);

/** A certs.d dir whose hosts.toml sends `registry` to `server`. */
async function hostsFor(registry: string, server: string): Promise<string> {
  const d = fs.mkdtempSync(path.join(dir, 'certs-'));
  fs.mkdirSync(path.join(d, registry));
  fs.writeFileSync(path.join(d, registry, 'hosts.toml'), `server = "${server}"\n`);
  return d;
}

function client(opts: ConstructorParameters<typeof RegistryClient>[0] = {}): RegistryClient {
  const c = new RegistryClient({ ...FAST, ...opts });
  cleanup.push(() => c.close());
  return c;
}

test('anonymous: index → platform manifest (default linux/amd64, or arm64), by digest, verified', T, async () => {
  const repo = 'test/multi';
  const mk = async (arch: string) => {
    const config = Buffer.from(JSON.stringify({ architecture: arch, os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    const layer = crypto.randomBytes(1000);
    await uploadBlob(anon.url, repo, config);
    await uploadBlob(anon.url, repo, layer);
    const m = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.OciManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.length }],
    }));
    const d = await uploadManifest(anon.url, repo, sha(m), m, MediaType.OciManifest);
    return { d, size: m.length, arch, layer };
  };
  const amd = await mk('amd64');
  const arm = await mk('arm64');
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaType.OciIndex,
    manifests: [
      { mediaType: MediaType.OciManifest, digest: arm.d, size: arm.size, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { mediaType: MediaType.OciManifest, digest: amd.d, size: amd.size, platform: { os: 'linux', architecture: 'amd64' } },
    ],
  }));
  await uploadManifest(anon.url, repo, 'v1', index, MediaType.OciIndex);
  const r = client().repository(anon.host, repo);
  const got = await r.getManifest('v1');
  assert.equal(got.digest, amd.d);
  assert.equal(got.mediaType, MediaType.OciManifest);
  assert.equal(got.index?.digest, sha(index));
  assert.equal(got.manifest.layers[0].digest, sha(amd.layer));
  const a64 = await r.getManifest('v1', { platform: { os: 'linux', architecture: 'arm64' } });
  assert.equal(a64.digest, arm.d);
  await assert.rejects(r.getManifest('v1', { platform: { os: 'linux', architecture: 's390x' } }), /no manifest for linux\/s390x in the index \(has: linux\/arm64\/v8, linux\/amd64\)/);
  const direct = await r.getManifest(amd.d);
  assert.equal(direct.digest, amd.d);
  assert.equal(direct.index, undefined);
  await assert.rejects(r.getManifest('nope'), (e: Error) => e instanceof NotFoundError && /manifest nope in test\/multi from 127.0.0.1:\d+: not found/.test(e.message));
  // Docker media types too
  const dm = Buffer.from(JSON.stringify({ ...JSON.parse((await r.fetchManifest(amd.d)).raw.toString()), mediaType: MediaType.DockerManifest }));
  await uploadManifest(anon.url, repo, 'docker', dm, MediaType.DockerManifest);
  assert.equal((await r.getManifest('docker')).mediaType, MediaType.DockerManifest);
});

test('anonymous: blob stat, whole and ranged reads byte for byte; errors are typed', T, async () => {
  const data = crypto.randomBytes(3 << 20);
  const d = await uploadBlob(anon.url, 'test/blobs', data);
  const c = client();
  const r = c.repository(anon.host, 'test/blobs');
  assert.equal(await r.statBlob(d), data.length);
  assert.ok((await r.fetchBlob(d)).equals(data));
  for (const [off, len] of [[0, 1], [12345, 100000], [data.length - 7, 7], [0, data.length]]) {
    assert.ok((await r.readBlob(d, off, len)).equals(data.subarray(off, off + len)), `${off}+${len}`);
  }
  await assert.rejects(r.readBlob(d, data.length, 10), (e: Error) => e instanceof ProtocolError && /416/.test(e.message));
  const missing = sha(Buffer.from('missing'));
  await assert.rejects(r.readBlob(missing, 0, 10), (e: Error) => e instanceof NotFoundError && e.message.includes(missing));
  await assert.rejects(r.fetchBlob(d, { maxBytes: 1000 }), /more than the 1000 allowed/);
  // a server that ignores Range (HTTP 200, whole blob): a prefix slice is fine, far into a big blob is refused
  const noRange = await FaultProxy.start(anon.url);
  cleanup.push(() => noRange.stop());
  noRange.inject({ fault: { kind: 'ignore-range' }, times: Infinity });
  const lax = client({ hostsDir: await hostsFor(anon.host, noRange.url), ignoredRangeMaxBytes: 1 << 20 });
  const lr = lax.repository(anon.host, 'test/blobs');
  assert.ok((await lr.readBlob(d, 1000, 5000)).equals(data.subarray(1000, 6000)));
  await assert.rejects(lr.readBlob(d, 2 << 20, 100), (e: Error) => e instanceof ProtocolError &&
    /the server ignored the Range header \(HTTP 200 for bytes=2097152-2097251\); refusing to download 3145728 bytes for it/.test(e.message));
  assert.ok(noRange.log.every((e) => e.status === 200));
  // whole blobs are verified against their digest: a flipped byte on the way is an error after the retries
  const proxy = await FaultProxy.start(anon.url);
  cleanup.push(() => proxy.stop());
  proxy.inject({ fault: { kind: 'flip' }, times: Infinity });
  const viaProxy = client({ hostsDir: await hostsFor(anon.host, proxy.url) }).repository(anon.host, 'test/blobs');
  await assert.rejects(viaProxy.fetchBlob(d), (e: Error) => e instanceof IntegrityError && /content has digest sha256:.*\(after 3 attempts\)/.test(e.message));
});

test('htpasswd Basic: credentials from the caller; missing or wrong ones fail clearly', T, async () => {
  const data = crypto.randomBytes(100_000);
  const d = await uploadBlob(basic.url, 'test/basic', data, { headers: basicHeader });
  const good = client({ credentials: staticCredentials({ [basic.host]: { username: USER, password: PASS } }) });
  assert.ok((await good.repository(basic.host, 'test/basic').readBlob(d, 10, 5000)).equals(data.subarray(10, 5010)));
  await assert.rejects(client().repository(basic.host, 'test/basic').readBlob(d, 0, 10),
    (e: Error) => e instanceof AuthError && /asks for Basic credentials and none are configured for 127.0.0.1:\d+/.test(e.message));
  const wrong = client({ credentials: staticCredentials({ [basic.host]: { username: USER, password: 'nope' } }) });
  await assert.rejects(wrong.repository(basic.host, 'test/basic').readBlob(d, 0, 10),
    (e: Error) => e instanceof AuthError && /refused the Basic credentials/.test(e.message) && !e.message.includes('nope'));
});

test('token auth: RS256 JWT with x5c; one token per scope, cached; wrong credentials fail', T, async () => {
  const data = crypto.randomBytes(200_000);
  const push = { authorization: `Bearer ${ts.sign(['repository:test/tok:pull,push'])}` };
  const d = await uploadBlob(tokenReg.url, 'test/tok', data, { headers: push });
  const before = ts.requests.length;
  const c = client({ credentials: staticCredentials({ [tokenReg.host]: { username: USER, password: PASS } }) });
  const r = c.repository(tokenReg.host, 'test/tok');
  for (let i = 0; i < 10; i++) {
    const off = i * 15000;
    assert.ok((await r.readBlob(d, off, 10000)).equals(data.subarray(off, off + 10000)));
  }
  const reqs = ts.requests.slice(before);
  assert.equal(reqs.length, 1, 'the token is cached');
  assert.deepEqual(reqs[0].scopes, ['repository:test/tok:pull']);
  assert.equal(reqs[0].service, 'test-registry');
  assert.equal(reqs[0].user, USER);
  await assert.rejects(client().repository(tokenReg.host, 'test/tok').readBlob(d, 0, 10),
    (e: Error) => e instanceof AuthError && /token server refused anonymous access \(HTTP 401\)/.test(e.message));
  const wrong = client({ credentials: staticCredentials({ [tokenReg.host]: { username: USER, password: 'bad' } }) });
  await assert.rejects(wrong.repository(tokenReg.host, 'test/tok').readBlob(d, 0, 10),
    (e: Error) => e instanceof AuthError && /refused the credentials for 127.0.0.1:\d+/.test(e.message));
  // an identity token (docker's identitytoken) goes through the OAuth2 refresh-token grant
  const n0 = ts.requests.length;
  const id = client({ credentials: staticCredentials({ [tokenReg.host]: { identityToken: 'refresh-abc' } }) });
  assert.ok((await id.repository(tokenReg.host, 'test/tok').readBlob(d, 5, 10)).equals(data.subarray(5, 15)));
  assert.deepEqual(ts.requests.slice(n0).map((q) => [q.user, q.scopes]), [[USER, ['repository:test/tok:pull']]]);
  const badId = client({ credentials: staticCredentials({ [tokenReg.host]: { identityToken: 'stale' } }) });
  await assert.rejects(badId.repository(tokenReg.host, 'test/tok').readBlob(d, 0, 10), /token server refused the credentials/);
  // a registry token (identity known up front) is used as is
  const rt = client({ credentials: staticCredentials({ [tokenReg.host]: { registryToken: ts.sign(['repository:test/tok:pull']) } }) });
  assert.ok((await rt.repository(tokenReg.host, 'test/tok').readBlob(d, 0, 10)).equals(data.subarray(0, 10)));
});

test('TLS with a test CA from hosts.toml; no CA fails fast and clearly; skip_verify', T, async () => {
  const data = crypto.randomBytes(50_000);
  const d = await uploadBlob(tls.url, 'test/tls', data, { dispatcher: (tls as { agent?: import('undici').Agent }).agent });
  const certs = path.join(dir, 'certs-tls');
  fs.mkdirSync(path.join(certs, tls.host), { recursive: true });
  fs.copyFileSync(pki.caPath, path.join(certs, tls.host, 'ca.pem'));
  fs.writeFileSync(path.join(certs, tls.host, 'hosts.toml'), `server = "https://${tls.host}"\n[host."https://${tls.host}"]\n  ca = "ca.pem"\n`);
  const good = client({ hostsDir: certs });
  assert.ok((await good.repository(tls.host, 'test/tls').readBlob(d, 100, 1000)).equals(data.subarray(100, 1100)));

  const noCa = path.join(dir, 'certs-noca');
  fs.mkdirSync(path.join(noCa, tls.host), { recursive: true });
  fs.writeFileSync(path.join(noCa, tls.host, 'hosts.toml'), `server = "https://${tls.host}"\n`);
  const t0 = Date.now();
  await assert.rejects(client({ hostsDir: noCa }).repository(tls.host, 'test/tls').readBlob(d, 0, 10),
    (e: Error) => e instanceof TransportError && /TLS failure/.test(e.message) && (e as TransportError).attempts === 1);
  assert.ok(Date.now() - t0 < 2000, 'no retries for a certificate error');

  const skip = path.join(dir, 'certs-skip');
  fs.mkdirSync(path.join(skip, tls.host), { recursive: true });
  fs.writeFileSync(path.join(skip, tls.host, 'hosts.toml'), `server = "https://${tls.host}"\nskip_verify = true\n`);
  assert.ok((await client({ hostsDir: skip }).repository(tls.host, 'test/tls').readBlob(d, 0, 10)).equals(data.subarray(0, 10)));
});

test('mirrors: a closed port and a 500ing mirror are passed over for the origin; a working mirror is used first with ?ns=', T, async () => {
  const data = crypto.randomBytes(80_000);
  const d = await uploadBlob(anon.url, 'test/mirror', data);
  const closed = await freePort(); // nothing listens there
  const failing = await FaultProxy.start(anon.url);
  cleanup.push(() => failing.stop());
  failing.inject({ fault: { kind: 'status', status: 500 }, times: Infinity });
  const certs = path.join(dir, 'certs-mirror');
  fs.mkdirSync(path.join(certs, anon.host), { recursive: true });
  fs.writeFileSync(path.join(certs, anon.host, 'hosts.toml'), `
server = "${anon.url}"
[host."http://127.0.0.1:${closed}"]
  capabilities = ["pull", "resolve"]
[host."${failing.url}"]
  capabilities = ["pull", "resolve"]
`);
  const c = client({ hostsDir: certs });
  const r = c.repository(anon.host, 'test/mirror');
  assert.ok((await r.readBlob(d, 0, 1000)).equals(data.subarray(0, 1000)));
  assert.equal(c.stats.hostFallbacks, 2);
  assert.equal(failing.log.length, 3, 'the 500ing mirror got its 3 attempts');
  assert.match(failing.log[0].path, new RegExp(`\\?ns=${encodeURIComponent(anon.host)}$`));
  // the closed port now sorts last: the next read tries the 500ing mirror, then the origin
  failing.log.length = 0;
  assert.ok((await r.readBlob(d, 1000, 1000)).equals(data.subarray(1000, 2000)));
  assert.equal(failing.log.length, 3);

  // everything down: one error naming every host
  const dead = path.join(dir, 'certs-dead');
  const closed2 = await freePort();
  fs.mkdirSync(path.join(dead, anon.host), { recursive: true });
  fs.writeFileSync(path.join(dead, anon.host, 'hosts.toml'), `server = "http://127.0.0.1:${closed2}"\n[host."${failing.url}"]\n`);
  await assert.rejects(client({ hostsDir: dead }).repository(anon.host, 'test/mirror').readBlob(d, 0, 10),
    (e: Error) => /all 2 hosts failed: .*HTTP 500.*\(after 3 attempts\).*connection refused \(ECONNREFUSED\)/.test(e.message));

  // a working mirror (a proxy in front of the same registry) serves first
  const good = await FaultProxy.start(anon.url);
  cleanup.push(() => good.stop());
  const certs2 = path.join(dir, 'certs-mirror2');
  fs.mkdirSync(path.join(certs2, anon.host), { recursive: true });
  fs.writeFileSync(path.join(certs2, anon.host, 'hosts.toml'), `[host."${good.url}"]\n  [host."${good.url}".header]\n    x-lazysnap-test = "yes"\n`);
  const c2 = client({ hostsDir: certs2 });
  assert.ok((await c2.repository(anon.host, 'test/mirror').readBlob(d, 5, 50)).equals(data.subarray(5, 55)));
  assert.equal(good.log.length, 1);
  assert.equal(c2.stats.hostFallbacks, 0);
});

test('remote DataBlob: the nydus fixture blob through RegistryBlobSource equals the local reader', T, async () => {
  const fx = nydusFixtures();
  const bs = new Bootstrap(fx.bootstrap());
  const data = fx.blob();
  // upstream fixture ids are not sha256(file): push under its real digest
  const d = await uploadBlob(anon.url, 'test/fixture', data);
  const c = client();
  const repo = c.repository(anon.host, 'test/fixture');
  const remote = await RemoteBlobContent.open(repo, bs.blobs[0], { digest: d, tableDigests: bs.chunkTableDigests(0) });
  assert.equal(remote.name, `blob ${FIXTURE_BLOB_ID}`);
  const localSrc = await FileSource.open(path.join(fx.blobsDir, FIXTURE_BLOB_ID));
  const local = new NydusBlobContent(await DataBlob.open(bs.blobs[0], localSrc));
  const want = Buffer.alloc(36864);
  await local.fill(0, 36864, async (o, b) => void b.copy(want, o), (n) => Buffer.alloc(n));
  await localSrc.close();
  // one cache file, as the worker has per blob: a fill may leave chunks another fill is writing to that one
  const file = Buffer.alloc(36864);
  for (const [off, len] of [[0, 4096], [20480, 4096], [0, 36864]]) {
    await remote.fill(off, len, async (o, b) => {
      assert.ok(b.equals(want.subarray(o, o + b.length)), `bytes at ${o}`);
      b.copy(file, o);
    }, (n) => Buffer.alloc(n));
    assert.ok(file.subarray(off, off + len).equals(want.subarray(off, off + len)), `${off}+${len} covered`);
  }
  // HEAD gave the size; ranged reads of the ToC and chunk info worked
  const src = await RegistryBlobSource.open(repo, d);
  assert.equal(src.size, data.length);
  assert.ok((await src.read(8314, 32)).equals(data.subarray(8314, 8346)));
  await assert.rejects(src.read(data.length - 10, 20), /beyond the blob's 14554 bytes/);
});

test('a blob opens with one suffix-Range GET (its size and metadata at once, no HEAD), the upstream fixture and ours', T, async () => {
  const fx = nydusFixtures();
  const bs = new Bootstrap(fx.bootstrap());
  const d = await uploadBlob(anon.url, 'test/tail', fx.blob());
  const b = await buildSyntheticBlob({ chunkSizes: new Array(40).fill(256 * 1024), seed: 'tail-open' });
  await uploadBlob(anon.url, 'test/tail', b.data);
  const proxy = await FaultProxy.start(anon.url);
  cleanup.push(() => proxy.stop());
  const c = client({ hostsDir: await hostsFor(anon.host, proxy.url) });
  const repo = c.repository(anon.host, 'test/tail');
  for (const [entry, digest, tableDigests, data] of [
    [bs.blobs[0], d, bs.chunkTableDigests(0), fx.blob()],
    [b.entry, undefined, null, b.data],
  ] as const) {
    proxy.log.length = 0;
    const content = await RemoteBlobContent.open(repo, entry, { digest, tableDigests });
    const blobReqs = proxy.log.filter((l) => l.path.includes('/blobs/'));
    assert.deepEqual(blobReqs.map((l) => [l.method, l.range, l.status]), [['GET', `bytes=-${metadataTailBytes(entry)}`, 206]],
      JSON.stringify(proxy.log));
    const out = Buffer.alloc(content.size);
    await content.fill(0, content.size, async (o, buf) => void buf.copy(out, o), (n) => Buffer.alloc(n));
    const local = new NydusBlobContent(await DataBlob.open(entry, memorySource(data), tableDigests));
    const want = Buffer.alloc(local.size);
    await local.fill(0, local.size, async (o, buf) => void buf.copy(want, o), (n) => Buffer.alloc(n));
    assert.ok(out.equals(want), 'the blob read through its tail-opened metadata equals the local reader');
  }
});

test('BlobFetcher.open: what the fscache worker calls, with per-call credentials', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: [1 << 20, 500_000, 1 << 20], seed: 'blobfetcher' });
  await uploadBlob(basic.url, 'test/bf', b.data, { headers: basicHeader });
  const f = new BlobFetcher({ registry: { ...FAST } });
  cleanup.push(() => f.close());
  const content = await f.open({ host: basic.host, repo: 'test/bf', entry: b.entry, credentials: { username: USER, password: PASS } });
  const out = Buffer.alloc(b.uncompressed.length);
  await content.fill(0, content.size, async (o, buf) => void buf.copy(out, o), (n) => Buffer.alloc(n));
  assert.ok(out.equals(b.uncompressed));
  await assert.rejects(f.open({ host: basic.host, repo: 'test/bf', entry: b.entry }), AuthError);
});

test('prefetch of a whole blob from the registry, with READs running alongside', T, async () => {
  const b = await buildSyntheticBlob({ chunkSizes: new Array(48).fill(256 * 1024), seed: 'prefetch-reg' });
  await uploadBlob(anon.url, 'test/prefetch', b.data);
  const proxy = await FaultProxy.start(anon.url);
  cleanup.push(() => proxy.stop());
  const c = client({ hostsDir: await hostsFor(anon.host, proxy.url) });
  const content = await RemoteBlobContent.open(c.repository(anon.host, 'test/prefetch'), b.entry, { maxMerge: 1 << 20 });
  proxy.log.length = 0;
  const out = Buffer.alloc(b.uncompressed.length);
  const sink = async (o: number, buf: Buffer) => {
    assert.ok(buf.equals(b.uncompressed.subarray(o, o + buf.length)));
    buf.copy(out, o);
  };
  const progress: number[] = [];
  const pf = content.prefetch(sink, (n) => Buffer.alloc(n), { onProgress: (p) => progress.push(p.bytesPresent) });
  await Promise.all([5, 20, 40].map((i) => content.fill(i * 256 * 1024 + 100, 10, sink, (n) => Buffer.alloc(n))));
  const res = await pf.done;
  assert.ok(res.complete, JSON.stringify(res));
  assert.equal(res.bytesPresent, res.bytes);
  assert.ok(out.equals(b.uncompressed));
  assert.ok(progress.length > 3 && progress.every((v, i) => i === 0 || v >= progress[i - 1]));
  // each chunk crossed the wire once
  const ranges = proxy.entries((e) => e.status === 206).map((e) => /bytes=(\d+)-(\d+)/.exec(e.range!)!.slice(1).map(Number));
  const total = ranges.reduce((n, [a, z]) => n + z - a + 1, 0);
  assert.equal(total, b.chunks.reduce((n, ch) => n + ch.cSize, 0));
});
