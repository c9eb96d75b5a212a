// Push and streaming-read pieces of registry/: chunk planning, Content-Range,
// upload Locations and Range answers, scope normalisation, docker:// refs,
// stream resumption; and the upload session logic against a small in-process
// registry (resume after a 5xx, restart when the session is gone, mounts,
// digests checked, hosts without the push capability skipped).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { RegistryClient } from '../../registry/client';
import { normalizeScope, pushScope } from '../../registry/auth';
import { IntegrityError } from '../../registry/errors';
import { Pusher, bufferUpload, contentRange, fileUpload, planChunks, uploadMode, uploadOffset, uploadUrl } from '../../registry/push';
import { streamBlob, streamStart } from '../../registry/stream';
import { parseDockerRef } from '../../image/convert/docker';

const sha = (b: Buffer) => `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;

test('chunk plan: whole coverage, inclusive ends, resumption from any offset', () => {
  assert.deepEqual(planChunks(10, 4), [{ start: 0, end: 3 }, { start: 4, end: 7 }, { start: 8, end: 9 }]);
  assert.deepEqual(planChunks(8, 4), [{ start: 0, end: 3 }, { start: 4, end: 7 }]);
  assert.deepEqual(planChunks(10, 4, 5), [{ start: 5, end: 8 }, { start: 9, end: 9 }]);
  assert.deepEqual(planChunks(10, 4, 10), []);
  assert.deepEqual(planChunks(0, 4), []);
  assert.throws(() => planChunks(10, 0), RangeError);
  for (const [size, cs, from] of [[1, 1, 0], [100, 7, 13], [1 << 20, 65536, 12345]]) {
    const plan = planChunks(size, cs, from);
    let next = from;
    for (const c of plan) {
      assert.equal(c.start, next);
      assert.ok(c.end >= c.start && c.end - c.start + 1 <= cs);
      next = c.end + 1;
    }
    assert.equal(next, size);
  }
  assert.equal(contentRange({ start: 0, end: 1023 }), '0-1023');
});

test('upload mode by size', () => {
  assert.equal(uploadMode(64 << 20), 'monolithic');
  assert.equal(uploadMode((64 << 20) + 1), 'chunked');
  assert.equal(uploadMode(1000, { monolithicMax: 999 }), 'chunked');
  assert.equal(uploadMode(0, { monolithicMax: 0 }), 'monolithic');
});

test('upload Locations: relative or absolute, the registry\'s query kept, ours added', () => {
  const base = 'http://reg:5000';
  assert.equal(uploadUrl('/v2/r/blobs/uploads/u1?_state=abc', base), 'http://reg:5000/v2/r/blobs/uploads/u1?_state=abc');
  assert.equal(uploadUrl('/v2/r/blobs/uploads/u1?_state=a%2Bb', base, { digest: 'sha256:00' }),
    'http://reg:5000/v2/r/blobs/uploads/u1?_state=a%2Bb&digest=sha256%3A00');
  assert.equal(uploadUrl('https://store.example/up/1?sig=x', base, { digest: 'sha256:00' }), 'https://store.example/up/1?sig=x&digest=sha256%3A00');
  // a digest already there is replaced, not repeated
  assert.equal(uploadUrl('http://reg:5000/u?digest=sha256:11', base, { digest: 'sha256:22' }), 'http://reg:5000/u?digest=sha256%3A22');
  assert.throws(() => uploadUrl('file:///etc/passwd', base));
});

test('upload Range answers: the next offset, or unknown', () => {
  assert.equal(uploadOffset('0-1023'), 1024);
  assert.equal(uploadOffset('bytes=0-99'), 100);
  assert.equal(uploadOffset('0-0'), undefined, 'distribution says 0-0 for both 0 and 1 bytes');
  assert.equal(uploadOffset(undefined), undefined);
  assert.equal(uploadOffset('5-10'), undefined);
  assert.equal(uploadOffset('junk'), undefined);
});

test('scopes compare with their actions sorted', () => {
  assert.equal(normalizeScope('repository:a/b:push,pull'), 'repository:a/b:pull,push');
  assert.equal(normalizeScope('repository:a/b:pull,pull'), 'repository:a/b:pull');
  assert.equal(normalizeScope('repository:127.0.0.1:5000/x:pull'), 'repository:127.0.0.1:5000/x:pull');
  assert.equal(pushScope('x/y'), 'repository:x/y:pull,push');
});

test('docker:// references', () => {
  assert.deepEqual(parseDockerRef('docker://127.0.0.1:5000/test/src:v1'), { ref: { host: '127.0.0.1:5000', repo: 'test/src', tag: 'v1', digest: undefined }, reference: 'v1' });
  assert.equal(parseDockerRef('docker://busybox')!.ref.repo, 'library/busybox');
  assert.equal(parseDockerRef('docker://busybox')!.reference, 'latest');
  const d = `sha256:${'a'.repeat(64)}`;
  assert.equal(parseDockerRef(`reg.example/x@${d}`)!.reference, d);
  assert.equal(parseDockerRef('some/dir'), null, 'no host: not a registry reference without docker://');
  assert.throws(() => parseDockerRef('docker://Bad/Name'), /not a repository name/);
});

test('resuming a stream: 200 skips what was delivered, 206 must start there', () => {
  assert.deepEqual(streamStart(200, { contentLength: '100' }, 0), { skip: 0, total: 100 });
  assert.deepEqual(streamStart(200, { contentLength: '100' }, 40), { skip: 40, total: 100 });
  assert.deepEqual(streamStart(206, { contentRange: 'bytes 40-99/100' }, 40), { skip: 0, total: 100 });
  assert.match(streamStart(206, { contentRange: 'bytes 0-99/100' }, 40) as string, /got Content-Range/);
  assert.match(streamStart(206, { contentRange: 'bytes 0-99/100' }, 0) as string, /unexpected HTTP 206/);
  assert.match(streamStart(200, { contentLength: '10' }, 40) as string, /Content-Length 10/);
});

// ---- a small registry in memory

interface Upload { data: Buffer[]; size: number }
type Hook = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;

class MiniRegistry {
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, Buffer>();
  readonly uploads = new Map<string, Upload>();
  readonly log: string[] = [];
  hook?: Hook;
  server!: http.Server;
  wrongDigest = false;
  private n = 0;

  async start(): Promise<string> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const u = new URL(req.url!, 'http://x');
    this.log.push(`${req.method} ${u.pathname}${u.search}${req.headers['content-range'] ? ` ${req.headers['content-range']}` : ''}`);
    if (this.hook?.(req, res)) return;
    const parts: Buffer[] = [];
    req.on('data', (b: Buffer) => parts.push(b));
    req.on('end', () => this.answer(req, res, u, Buffer.concat(parts)));
  }

  private answer(req: http.IncomingMessage, res: http.ServerResponse, u: URL, body: Buffer): void {
    const m = /^\/v2\/(.+?)\/(blobs|manifests)\/(.*)$/.exec(u.pathname);
    if (!m) return void res.writeHead(404).end();
    const [, repo, kind, rest] = m;
    if (kind === 'manifests') {
      if (req.method !== 'PUT') return void res.writeHead(405).end();
      this.manifests.set(`${repo}:${rest}`, body);
      return void res.writeHead(201, { 'docker-content-digest': sha(body) }).end();
    }
    if (rest === 'uploads/' && req.method === 'POST') {
      const from = u.searchParams.get('from');
      const mount = u.searchParams.get('mount');
      if (mount && from && this.blobs.has(`${from}@${mount}`)) {
        this.blobs.set(`${repo}@${mount}`, this.blobs.get(`${from}@${mount}`)!);
        return void res.writeHead(201, { 'docker-content-digest': mount, location: `/v2/${repo}/blobs/${mount}` }).end();
      }
      const id = `u${++this.n}`;
      this.uploads.set(id, { data: [], size: 0 });
      // relative Location with a query, as distribution sends
      return void res.writeHead(202, { location: `/v2/${repo}/blobs/uploads/${id}?_state=s${id}`, range: '0-0' }).end();
    }
    const up = /^uploads\/(u\d+)$/.exec(rest);
    if (up) {
      const s = this.uploads.get(up[1]);
      if (!s) return void res.writeHead(404).end('BLOB_UPLOAD_UNKNOWN');
      const here = { location: `http://${req.headers.host}/v2/${repo}/blobs/uploads/${up[1]}?_state=t`, range: `0-${Math.max(0, s.size - 1)}` };
      if (req.method === 'GET') return void res.writeHead(204, here).end();
      if (req.method === 'DELETE') {
        this.uploads.delete(up[1]);
        return void res.writeHead(204).end();
      }
      if (req.method === 'PATCH') {
        const cr = /^(\d+)-(\d+)$/.exec(String(req.headers['content-range']));
        if (!cr || Number(cr[1]) !== s.size || Number(cr[2]) - Number(cr[1]) + 1 !== body.length) return void res.writeHead(416).end();
        s.data.push(body);
        s.size += body.length;
        return void res.writeHead(202, { ...here, range: `0-${s.size - 1}` }).end();
      }
      if (req.method === 'PUT') {
        s.data.push(body);
        const all = Buffer.concat(s.data);
        const digest = u.searchParams.get('digest')!;
        if (sha(all) !== digest) return void res.writeHead(400).end('DIGEST_INVALID');
        this.uploads.delete(up[1]);
        this.blobs.set(`${repo}@${digest}`, all);
        return void res.writeHead(201, { 'docker-content-digest': this.wrongDigest ? sha(Buffer.from('x')) : digest }).end();
      }
    }
    const blob = this.blobs.get(`${repo}@${rest}`);
    if (req.method === 'HEAD') return void res.writeHead(blob ? 200 : 404, blob ? { 'content-length': blob.length } : {}).end();
    if (req.method === 'GET' && blob) {
      const r = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
      if (r) {
        const from = Number(r[1]);
        res.writeHead(206, { 'content-range': `bytes ${from}-${blob.length - 1}/${blob.length}`, 'content-length': blob.length - from });
        return void res.end(blob.subarray(from));
      }
      return void res.writeHead(200, { 'content-length': blob.length }).end(blob);
    }
    res.writeHead(404).end();
  }
}

const reg = new MiniRegistry();
let host = '';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'registry-push-'));
after(async () => {
  await reg.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function client(hostsDir?: string): RegistryClient {
  return new RegistryClient({ hostsDir, retry: { attempts: 4, baseDelayMs: 5, maxDelayMs: 20 }, timeouts: { bodyMs: 2000, headersMs: 2000 } });
}

test('chunked upload: PATCH ranges in order, a 5xx mid-session resumes where the registry is, then commit', async () => {
  host ||= await reg.start();
  const c = client();
  const data = crypto.randomBytes(10_000);
  const file = path.join(tmp, 'blob');
  fs.writeFileSync(file, data);
  const p = new Pusher(c.repository(host, 'a/b'), { chunkSize: 3000, monolithicMax: 4000 });
  let patches = 0;
  reg.hook = (req, res) => {
    if (req.method === 'PATCH' && ++patches === 3) {
      req.resume();
      res.writeHead(503).end('busy');
      return true;
    }
    return false;
  };
  const seen: number[] = [];
  reg.log.length = 0;
  assert.equal(await p.pushBlob(fileUpload(file, sha(data), data.length), { onProgress: (n) => seen.push(n) }), 'uploaded');
  assert.ok(reg.blobs.get(`a/b@${sha(data)}`)!.equals(data));
  assert.deepEqual(reg.log.filter((l) => !l.startsWith('HEAD')).map((l) => l.replace(/\?.*? /, ' ').replace(/\?.*$/, '').replace(/u\d+/, 'U')), [
    'POST /v2/a/b/blobs/uploads/',
    'PATCH /v2/a/b/blobs/uploads/U 0-2999',
    'PATCH /v2/a/b/blobs/uploads/U 3000-5999',
    'PATCH /v2/a/b/blobs/uploads/U 6000-8999', // 503
    'GET /v2/a/b/blobs/uploads/U',
    'PATCH /v2/a/b/blobs/uploads/U 6000-8999',
    'PATCH /v2/a/b/blobs/uploads/U 9000-9999',
    'PUT /v2/a/b/blobs/uploads/U',
  ]);
  assert.deepEqual({ resumed: p.stats.resumed, restarted: p.stats.restarted, uploads: p.stats.uploads }, { resumed: 1, restarted: 0, uploads: 1 });
  assert.equal(seen.at(-1), data.length);
  // pushing again: HEAD says it is there
  reg.hook = undefined;
  assert.equal(await p.pushBlob(fileUpload(file, sha(data), data.length)), 'exists');
  await c.close();
});

test('a lost session (404 on PATCH, no status) starts over; monolithic below the threshold', async () => {
  host ||= await reg.start();
  const c = client();
  const data = crypto.randomBytes(5000);
  const p = new Pusher(c.repository(host, 'a/lost'), { chunkSize: 2000, monolithicMax: 2000 });
  let once = true;
  reg.hook = (req) => {
    if (req.method === 'PATCH' && once) {
      once = false;
      reg.uploads.clear(); // the registry forgot the session: this PATCH and the status GET get 404
    }
    return false;
  };
  assert.equal(await p.pushBlob(bufferUpload(data)), 'uploaded');
  assert.deepEqual({ resumed: p.stats.resumed, restarted: p.stats.restarted }, { resumed: 0, restarted: 1 });
  assert.ok(reg.blobs.get(`a/lost@${sha(data)}`)!.equals(data));
  reg.hook = undefined;
  reg.log.length = 0;
  const small = crypto.randomBytes(1500);
  assert.equal(await p.pushBlob(bufferUpload(small)), 'uploaded');
  assert.deepEqual(reg.log.map((l) => l.split(' ')[0]), ['HEAD', 'POST', 'PUT'], 'one PUT with the body');
  await c.close();
});

test('mounts: 201 is done; 202 uploads through the session it opened; an earlier candidate\'s session is deleted', async () => {
  host ||= await reg.start();
  const c = client();
  const data = crypto.randomBytes(3000);
  await new Pusher(c.repository(host, 'm/src')).pushBlob(bufferUpload(data));
  const p = new Pusher(c.repository(host, 'm/dst'));
  reg.log.length = 0;
  assert.equal(await p.pushBlob(bufferUpload(data), { mountFrom: ['m/src'] }), 'mounted');
  assert.deepEqual(reg.log.map((l) => l.split('?')[0]), ['HEAD /v2/m/dst/blobs/' + sha(data), 'POST /v2/m/dst/blobs/uploads/']);
  const other = crypto.randomBytes(100);
  reg.log.length = 0;
  assert.equal(await p.pushBlob(bufferUpload(other), { mountFrom: ['m/nope', 'm/none'] }), 'uploaded');
  assert.deepEqual(reg.log.map((l) => l.split(' ')[0]), ['HEAD', 'POST', 'DELETE', 'POST', 'PUT']);
  assert.match(reg.log[3], /mount=.*from=m%2Fnone/);
  assert.equal(reg.uploads.size, 0, 'no session left behind');
  await c.close();
});

test('the registry\'s Docker-Content-Digest is checked; manifests PUT by tag', async () => {
  host ||= await reg.start();
  const c = client();
  const p = new Pusher(c.repository(host, 'd/x'));
  reg.wrongDigest = true;
  try {
    await assert.rejects(p.pushBlob(bufferUpload(crypto.randomBytes(10))), (e) => e instanceof IntegrityError && /stored the upload as/.test(e.message));
  } finally {
    reg.wrongDigest = false;
  }
  const m = Buffer.from('{"schemaVersion":2}');
  assert.equal(await p.putManifest('v1', 'application/vnd.oci.image.manifest.v1+json', m), sha(m));
  assert.ok(reg.manifests.get('d/x:v1')!.equals(m));
  await assert.rejects(p.putManifest(sha(Buffer.from('other')), 'application/vnd.oci.image.manifest.v1+json', m), /not sha256/);
  await c.close();
});

test('push goes only to hosts.toml hosts with the push capability', async () => {
  host ||= await reg.start();
  const dir = fs.mkdtempSync(path.join(tmp, 'certs-'));
  fs.mkdirSync(path.join(dir, host));
  // a pull-only mirror that does not exist: pushing must not try it (it would fail to connect)
  fs.writeFileSync(path.join(dir, host, 'hosts.toml'),
    `server = "http://${host}"\n[host."http://127.0.0.1:9"]\ncapabilities = ["pull", "resolve"]\n`);
  const c = client(dir);
  const p = new Pusher(c.repository(host, 'caps/x'));
  assert.equal(await p.pushBlob(bufferUpload(Buffer.from('hello'))), 'uploaded');
  assert.equal(c.stats.hostFallbacks, 0);
  fs.writeFileSync(path.join(dir, host, 'hosts.toml'), `server = "http://${host}"\ncapabilities = ["pull", "resolve"]\n`);
  const c2 = client(dir);
  await assert.rejects(new Pusher(c2.repository(host, 'caps/x')).hasBlob(sha(Buffer.from('hello'))), /no host in hosts.toml has the "push" capability/);
  await c.close();
  await c2.close();
});

test('a mirror with the push capability gets the pushes, with ?ns= added to queries it already has', async () => {
  host ||= await reg.start();
  const dir = fs.mkdtempSync(path.join(tmp, 'certs-'));
  fs.mkdirSync(path.join(dir, 'registry.example'));
  // the server is not there; only the mirror may be used
  fs.writeFileSync(path.join(dir, 'registry.example', 'hosts.toml'),
    `server = "http://127.0.0.1:9"\ncapabilities = ["pull"]\n[host."http://${host}"]\ncapabilities = ["pull", "resolve", "push"]\n`);
  const c = client(dir);
  const data = Buffer.from('via the mirror');
  await new Pusher(c.repository('registry.example', 'n/src')).pushBlob(bufferUpload(data));
  reg.log.length = 0;
  assert.equal(await new Pusher(c.repository('registry.example', 'n/dst')).pushBlob(bufferUpload(data), { mountFrom: ['n/src'] }), 'mounted');
  assert.deepEqual(reg.log, [
    `HEAD /v2/n/dst/blobs/${sha(data)}?ns=registry.example`,
    `POST /v2/n/dst/blobs/uploads/?mount=${encodeURIComponent(sha(data))}&from=n%2Fsrc&ns=registry.example`,
  ]);
  await c.close();
});

test('a blob stream cut midway resumes with Range, delivers each byte once, and checks the digest', async () => {
  host ||= await reg.start();
  const c = client();
  const data = crypto.randomBytes(300_000);
  reg.blobs.set(`s/x@${sha(data)}`, data);
  let cuts = 0;
  reg.hook = (req, res) => {
    if (req.method === 'GET' && req.url!.includes('/blobs/sha256:') && cuts < 2) {
      cuts++;
      const from = Number(/bytes=(\d+)-/.exec(String(req.headers.range ?? ''))?.[1] ?? 0);
      const h: http.OutgoingHttpHeaders = from
        ? { 'content-range': `bytes ${from}-${data.length - 1}/${data.length}`, 'content-length': data.length - from }
        : { 'content-length': data.length };
      res.writeHead(from ? 206 : 200, h);
      res.write(data.subarray(from, from + 100_000), () => res.socket!.destroy());
      return true;
    }
    return false;
  };
  const parts: Buffer[] = [];
  for await (const b of streamBlob(c.repository(host, 's/x'), sha(data), { size: data.length })) parts.push(b);
  assert.ok(Buffer.concat(parts).equals(data));
  assert.equal(cuts, 2);
  const ranges = reg.log.filter((l) => l.startsWith('GET /v2/s/x/blobs/'));
  assert.equal(ranges.length, 3);
  // a blob whose bytes do not match the digest it was asked for fails at the end
  const bad = sha(Buffer.from('not it'));
  reg.hook = undefined;
  reg.blobs.set(`s/x@${bad}`, data);
  await assert.rejects((async () => {
    for await (const _ of streamBlob(c.repository(host, 's/x'), bad, { size: data.length })) void _;
  })(), (e) => e instanceof IntegrityError);
  await c.close();
});
