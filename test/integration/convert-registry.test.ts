// `lazysnap convert docker://… docker://…` through the fault proxy in front
// of docker-registry with token auth: a 5xx on an upload PATCH (the session
// is resumed), a connection reset in the middle of an upload body (the
// upload is redone), a 502 on a monolithic PUT, a reset in the middle of a
// source layer (the stream resumes with Range), and a token that expires
// mid-push (401 → a new token, the body sent again). The pushed image is
// then pulled lazily: manifest, bootstrap layer, and every regular file read
// through the remote chunk fetcher (Range GETs) and compared byte for byte
// with the source. A second conversion into another repository mounts every
// blob instead of uploading it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { RegistryClient } from '../../registry/client';
import { staticCredentials } from '../../registry/docker-config';
import { BlobFetcher, RemoteBlobContent } from '../../content/remote';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { NULL_ADDR, isReg } from '../../image/erofs/image';
import { DataLayout } from '../../image/erofs/inode';
import { startRegistry, type Registry } from '../support/registry';
import { startTokenServer, type TokenServer } from '../support/token-server';
import { FaultProxy, isUpload, isUploadBody, type RequestInfo } from '../support/fault-proxy';
import { LAYER_MEDIA, TarSpec, compressLayer, sha256hex, tarBuffer, writeLayout } from '../support/oci-layout';
import { uploadBlob, uploadManifest } from '../support/testblob';
import { run } from '../support/proc';
import { makeTempDir, removeTempDir } from '../support/tmp';

const T = { timeout: 120_000 };
const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
const USER = 'pusher';
const PASS = 'push-pass';
const M = 1 << 20;

let dir: string;
let ts: TokenServer;
let reg: Registry;
let proxy: FaultProxy;
/** the source image's final tree: path → content of each regular file */
const want = new Map<string, Buffer>();
let sourceLayers: { digest: string; size: number }[] = [];
const cleanup: Array<() => Promise<unknown>> = [];

const rnd = (n: number) => crypto.randomBytes(n);

before(async () => {
  dir = await makeTempDir('convert-registry');
  ts = await startTokenServer(dir, { users: { [USER]: PASS }, allowAnonymous: false });
  cleanup.push(() => ts.stop());
  reg = await startRegistry({ authConfig: ts.registryAuth() });
  cleanup.push(() => reg.stop());
  proxy = await FaultProxy.start(reg.url, { keepHost: true });
  cleanup.push(() => proxy.stop());

  // two layers of a few MB: files across chunk boundaries, a zero run (a hole chunk), an overwrite, a whiteout
  const a = rnd(3 * M + 123);
  const b = rnd(M + M / 2);
  const sparse = Buffer.concat([rnd(M), Buffer.alloc(M), rnd(100)]);
  const c = rnd(2 * M + 7);
  const z = Buffer.from('deep\n');
  const l1: TarSpec[] = [
    { name: 'data', type: 'dir', mode: 0o755 }, { name: 'data/a.bin', data: a }, { name: 'data/b.bin', data: b },
    { name: 'data/sparse.bin', data: sparse }, { name: 'data/link', type: 'symlink', linkname: 'a.bin' },
    { name: 'etc', type: 'dir', mode: 0o755 }, { name: 'etc/hello.txt', data: Buffer.from('hello\n') }, { name: 'empty', data: Buffer.alloc(0) },
  ];
  const hello2 = Buffer.from('hello again\n');
  const l2: TarSpec[] = [
    { name: 'data', type: 'dir', mode: 0o755 }, { name: 'data/c.bin', data: c }, { name: 'data/.wh.b.bin', data: Buffer.alloc(0) },
    { name: 'etc', type: 'dir', mode: 0o755 }, { name: 'etc/hello.txt', data: hello2 }, { name: 'deep/x/y/z.txt', data: z },
  ];
  for (const [p, d] of [['/data/a.bin', a], ['/data/sparse.bin', sparse], ['/data/c.bin', c], ['/etc/hello.txt', hello2],
    ['/empty', Buffer.alloc(0)], ['/deep/x/y/z.txt', z]] as const) want.set(p, d);
  const layout = path.join(dir, 'src');
  const ins = [];
  for (const l of [l1, l2]) {
    const tar = await tarBuffer(l);
    ins.push({ bytes: compressLayer(tar, 'gzip'), mediaType: LAYER_MEDIA.gzip, diffId: `sha256:${sha256hex(tar)}` });
  }
  const w = await writeLayout(layout, ins, { tag: 'v1' });
  sourceLayers = w.layers;
  // pushed straight to the registry (not through the code under test) with a token signed here
  const headers = { authorization: `Bearer ${ts.sign(['repository:test/src:pull,push'])}` };
  const read = (d: string) => fs.readFileSync(path.join(layout, 'blobs', 'sha256', d.slice(7)));
  const manifest = read(w.manifestDigest);
  const m = JSON.parse(manifest.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  for (const d of [m.config.digest, ...m.layers.map((l) => l.digest)]) await uploadBlob(reg.url, 'test/src', read(d), { headers });
  await uploadManifest(reg.url, 'test/src', 'v1', manifest, 'application/vnd.oci.image.manifest.v1+json', { headers });
}, T);

after(async () => {
  for (const c of cleanup.reverse()) await c().catch((e) => console.error('cleanup:', e));
  if (dir) await removeTempDir(dir);
}, T);

/** the real CLI, with no docker config of the machine's and no hosts.toml */
async function convertCli(args: string[]) {
  const env = { ...process.env, DOCKER_CONFIG: path.join(dir, 'docker-config') };
  const r = await run(process.execPath, [CLI, 'convert', '--user', `${USER}:${PASS}`, '--hosts-dir', path.join(dir, 'certs.d'), ...args],
    { env, timeoutMs: 90_000 });
  assert.equal(r.code, 0, `convert failed:\n${r.stderr}`);
  return r;
}

const isPatch = (r: RequestInfo) => isUpload(r) && r.method === 'PATCH';
/** a PATCH after the first of its session: the registry holds bytes of it already */
const isLaterPatch = (r: RequestInfo) => isPatch(r) && !String(r.headers['content-range']).startsWith('0-');
const session = (p: string) => /\/blobs\/uploads\/([^?]+)/.exec(p)?.[1];
/** a PUT carrying a whole blob (monolithic), not the empty commit of a chunked upload */
const isMonolithicPut = (r: RequestInfo) => isUploadBody(r) && r.method === 'PUT';

test('convert docker:// → docker:// through faults; the pushed image pulls lazily and reads byte-exact', T, async () => {
  proxy.log.length = 0;
  proxy.inject({ match: isLaterPatch, fault: { kind: 'status', status: 500 } });
  proxy.inject({ match: isPatch, fault: { kind: 'reset-mid-request', afterBytes: 300_000 } });
  proxy.inject({ match: isMonolithicPut, fault: { kind: 'status', status: 502 } });
  proxy.inject({ match: (r) => r.method === 'GET' && r.path.endsWith(`/blobs/${sourceLayers[0].digest}`), fault: { kind: 'reset-mid-body', afterBytes: 500_000 } });
  // tokens signed already expired: distribution's 60 s leeway leaves them ~3 s, and the held PATCH outlives its token
  ts.opts.jwtLifetimeSec = -57;
  proxy.inject({ match: isPatch, fault: { kind: 'delay', ms: 4_000 } });
  const tokensBefore = ts.requests.length;
  let r;
  try {
    r = await convertCli(['--upload-chunk-size', '1MiB', `docker://${proxy.host}/test/src:v1`, `docker://${proxy.host}/test/dst:v1`]);
  } finally {
    delete ts.opts.jwtLifetimeSec;
  }
  assert.equal(proxy.pending, 0, 'every fault was hit');
  const log = proxy.entries();
  const hit = (kind: string) => log.filter((e) => e.fault === kind);
  assert.equal(hit('status').map((e) => `${e.method} ${e.status}`).sort().join(), 'PATCH 500,PUT 502');
  assert.equal(hit('reset-mid-request').length, 1);
  assert.equal(hit('reset-mid-body').length, 1);
  const held = hit('delay');
  assert.deepEqual(held.map((e) => [e.method, e.status]), [['PATCH', 401]], 'the held PATCH reached the registry with an expired token');
  // … and was sent again with a new token
  const after401 = log.slice(log.indexOf(held[0]) + 1).find((e) => e.method === 'PATCH' && e.path.split('?')[0] === held[0].path.split('?')[0]);
  assert.equal(after401?.status, 202);
  const pushTokens = ts.requests.slice(tokensBefore).filter((q) => q.scopes.some((s) => s.startsWith('repository:test/dst:')));
  assert.ok(pushTokens.length >= 2, `a new push token after the 401 (${pushTokens.length} push token requests)`);
  assert.ok(pushTokens.every((q) => q.granted && q.scopes.includes('repository:test/dst:pull,push')));
  // pull tokens for the source are their own (the cache is keyed by scope)
  assert.ok(ts.requests.slice(tokensBefore).some((q) => q.scopes.join(' ') === 'repository:test/src:pull'));
  // the 5xx'd session was resumed: a status query (204), then the same session goes on to its commit
  const failed = session(hit('status').find((e) => e.method === 'PATCH')!.path)!;
  const rest = log.slice(log.findIndex((e) => e.fault === 'status' && e.method === 'PATCH') + 1).filter((e) => session(e.path) === failed);
  assert.deepEqual(rest.map((e) => `${e.method} ${e.status}`).filter((x, i, a) => a.indexOf(x) === i), ['GET 204', 'PATCH 202', 'PUT 201']);
  // the source layer cut midway was resumed where it stopped
  assert.ok(log.some((e) => e.method === 'GET' && e.range === 'bytes=500000-' && e.status === 206), 'a resumed source layer');
  // non-TTY: one line per layer and one per pushed blob
  assert.equal(r.stderr.split('\n').filter((l) => /^layer \d\/2 sha256:/.test(l)).length, 2, r.stderr);
  assert.equal(r.stderr.split('\n').filter((l) => /^push \d\/4 sha256:[a-f0-9]{64}: [\d.]+ MB uploaded/.test(l)).length, 4, r.stderr);
  const manifestDigest = /manifest (sha256:[a-f0-9]{64})/.exec(r.stdout)?.[1];
  assert.ok(manifestDigest, r.stdout);

  // ---- pull lazily through the proxy (no faults now) and read every file
  proxy.clear();
  proxy.log.length = 0;
  const client = new RegistryClient({ credentials: staticCredentials({ [proxy.host]: { username: USER, password: PASS } }) });
  const fetcher = new BlobFetcher({ registry: client });
  try {
    const repo = client.repository(proxy.host, 'test/dst');
    const m = await repo.getManifest('v1');
    assert.equal(m.digest, manifestDigest);
    const bootDesc = m.manifest.layers.at(-1)!;
    assert.equal(bootDesc.annotations?.['containerd.io/snapshot/nydus-bootstrap'], 'true');
    const tar = zlib.gunzipSync(await repo.fetchBlob(bootDesc.digest));
    assert.equal(tar.subarray(0, 100).toString('latin1').replace(/\0.*$/s, ''), 'image/image.boot');
    const size = parseInt(tar.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim(), 8);
    const bs = new Bootstrap(tar.subarray(512, 512 + size));
    const dataLayers = m.manifest.layers.slice(0, -1);
    assert.equal(bs.blobs.length, 2);
    assert.deepEqual(bs.blobs.map((b) => `sha256:${b.blobId}`), dataLayers.map((l) => l.digest));
    const contents: RemoteBlobContent[] = [];
    for (const [i, entry] of bs.blobs.entries()) {
      contents.push(await fetcher.open({ host: proxy.host, repo: 'test/dst', entry, tableDigests: bs.chunkTableDigests(i), size: dataLayers[i].size }));
    }
    const img = bs.erofs;
    const got = new Map<string, Buffer>();
    for (const e of img.walk()) {
      if (!isReg(e.inode) || e.hardlinkOf) continue;
      got.set(e.path, await readFile(img, e.inode, contents, bs.ext.chunkSize));
    }
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [p, data] of want) assert.ok(got.get(p)!.equals(data), `${p}: bytes differ`);
    // lazily: data blobs only ever by Range, never whole
    const blobGets = proxy.entries((e) => e.method === 'GET' && dataLayers.some((l) => e.path.includes(l.digest)));
    assert.ok(blobGets.length > 0 && blobGets.every((e) => e.range !== undefined && e.status === 206), JSON.stringify(blobGets.slice(0, 3)));
  } finally {
    await fetcher.close();
    await client.close();
  }

  // ---- a second conversion into another repository mounts every blob from the first
  proxy.log.length = 0;
  const again = await convertCli(['--mount-from', 'test/dst', `docker://${proxy.host}/test/src:v1`, `docker://${proxy.host}/test/dst2:v1`]);
  assert.ok(again.stdout.includes(manifestDigest!), 'same image, same manifest digest');
  const mounts = proxy.entries((e) => e.method === 'POST' && e.path.includes('/test/dst2/blobs/uploads/?mount=') && e.path.includes('from=test%2Fdst'));
  assert.deepEqual(mounts.map((e) => e.status), [201, 201, 201, 201]);
  assert.equal(proxy.entries((e) => isUpload({ ...e, headers: {} }) && (e.method === 'PATCH' || e.method === 'PUT')).length, 0, 'nothing uploaded');
  assert.equal(again.stderr.split('\n').filter((l) => /^push \d\/4 sha256:.*mounted from another repository$/.test(l)).length, 4, again.stderr);
});

/** A regular file's bytes through the remote blobs: chunk by chunk, holes as zeros. */
async function readFile(img: Bootstrap['erofs'], ino: ReturnType<Bootstrap['erofs']['inode']>, contents: RemoteBlobContent[],
  chunkSize: number): Promise<Buffer> {
  if (ino.size === 0) return Buffer.alloc(0);
  assert.equal(ino.layout, DataLayout.ChunkBased, `inode ${ino.nid} is chunk-based`);
  const map = img.chunkMap(ino);
  const out = Buffer.alloc(ino.size);
  for (const [k, c] of map.chunks.entries()) {
    const len = Math.min(chunkSize, ino.size - k * chunkSize);
    if (c.blkaddr === NULL_ADDR) continue;
    const off = c.blkaddr * img.blksz;
    const content = contents[c.deviceId - 1];
    const pieces: Array<[number, Buffer]> = [];
    await content.fill(off, len, async (o, d) => void pieces.push([o, d]), (n) => Buffer.alloc(n));
    for (const [o, d] of pieces) {
      // copy what overlaps [off, off+len) to the file's position
      const from = Math.max(o, off);
      const to = Math.min(o + d.length, off + len);
      if (to > from) d.copy(out, k * chunkSize + (from - off), from - o, to - o);
    }
  }
  return out;
}
