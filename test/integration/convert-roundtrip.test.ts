// `lazysnap convert` against the host kernel: convert real images, rebuild
// each blob's uncompressed space into a file, mount the bootstrap as a
// file-backed EROFS with those files as its devices, and compare the whole
// tree with what `umoci unpack` makes of the original image: content, mode,
// owner, mtime, xattrs, symlink targets, hard links, devices. Also
// `lazysnap inspect --verify` must pass. No lazy path here (no fscache).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { buildBusyboxImage, pushOciLayout } from '../support/images';
import { startRegistry } from '../support/registry';
import { requireBinaries } from '../support/bins';
import { run, runOk } from '../support/proc';
import { makeTempDir, removeTempDir, unmountAll } from '../support/tmp';
import { buildDebootstrapImage, buildLayeredImage, diffTrees, dumpTree, mountErofsFile, readNydusLayout, rebuildBlobs } from '../support/oci-layout';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
let dir: string;

before(async () => {
  requireBinaries(['umoci', 'busybox']);
  dir = await makeTempDir('convert');
});

after(async () => {
  if (dir) await removeTempDir(dir);
});

interface Outcome {
  seconds: number;
  mbPerSec: number;
  inspectTail: string[];
  entries: number;
  blobs: number[];
  bootstrapBytes: number;
}

/** convert → inspect --verify → rebuild blobs → mount → compare with umoci unpack. */
async function roundTrip(name: string, layoutDir: string, tag: string, extra: string[] = []): Promise<Outcome> {
  const work = path.join(dir, name);
  fs.mkdirSync(work, { recursive: true });
  const out = path.join(work, 'nydus');
  const conv = await runOk('node', [CLI, 'convert', ...extra, `oci:${layoutDir}:${tag}`, `oci:${out}:nydus`], { timeoutMs: 900_000 });
  const m = /in ([\d.]+) s: ([\d.]+) MB\/s/.exec(conv.stdout);
  assert.ok(m, conv.stdout);
  // non-TTY stderr: one line per layer
  const layers = conv.stderr.split('\n').filter((l) => /^layer \d+\/\d+ sha256:/.test(l));
  assert.ok(layers.length >= 1, conv.stderr);

  const n = await readNydusLayout(out, 'nydus');
  // deterministic: a second conversion gives the same manifest digest (so byte-identical config, blobs, bootstrap)
  const out2 = path.join(work, 'nydus-again');
  await runOk('node', [CLI, 'convert', ...extra, `oci:${layoutDir}:${tag}`, `oci:${out2}:nydus`], { timeoutMs: 900_000 });
  assert.equal((await readNydusLayout(out2, 'nydus')).index.manifests[0].digest, n.index.manifests[0].digest);
  fs.rmSync(out2, { recursive: true, force: true });
  const boot = path.join(work, 'image.boot');
  fs.writeFileSync(boot, n.bootstrap);
  const insp = await runOk('node', [CLI, 'inspect', boot, '--blobs', n.blobsDir, '--verify'], { timeoutMs: 900_000 });
  const lines = insp.stdout.trim().split('\n');
  const last = lines[lines.length - 1];
  const v = /^chunks=(\d+) verified=(\d+) failed=0$/.exec(last);
  assert.ok(v && v[1] === v[2], `inspect --verify: ${last}`);

  const raw = path.join(work, 'raw');
  fs.mkdirSync(raw);
  const devices = await rebuildBlobs(n.bootstrap, n.blobsDir, raw);
  // erofs-utils' own checker as a second opinion (one --device per blob, in device-table order)
  await runOk('fsck.erofs', [...devices.map((d) => `--device=${d}`), boot], { timeoutMs: 600_000 });
  const mnt = path.join(work, 'mnt');
  fs.mkdirSync(mnt);
  const bundle = path.join(work, 'bundle');
  await runOk('umoci', ['unpack', '--image', `${layoutDir}:${tag}`, bundle], { timeoutMs: 900_000 });
  const want = await dumpTree(path.join(bundle, 'rootfs'));
  await mountErofsFile(boot, mnt, devices);
  let got;
  try {
    got = await dumpTree(mnt);
  } finally {
    await unmountAll(mnt);
  }
  const diffs = diffTrees(want, got);
  assert.deepEqual(diffs.slice(0, 50), [], `${diffs.length} differences between umoci unpack and the mounted nydus image`);
  assert.ok(want.size > 0 && want.size === got.size);
  const o: Outcome = {
    seconds: Number(m![1]),
    mbPerSec: Number(m![2]),
    inspectTail: lines.slice(-1),
    entries: got.size,
    blobs: n.manifest.layers.slice(0, -1).map((l) => l.size),
    bootstrapBytes: n.bootstrap.length,
  };
  process.stdout.write(`# ${name}: ${JSON.stringify(o)}\n`);
  fs.rmSync(work, { recursive: true, force: true }); // unpacked trees are big: free them before the next image
  return o;
}

test('busybox image: converted, mounted from file-backed EROFS, identical to umoci unpack', { timeout: 300_000 }, async () => {
  const img = await buildBusyboxImage(path.join(dir, 'busybox-src'));
  const o = await roundTrip('busybox', img.layoutDir, img.ref);
  assert.equal(o.blobs.length, 1);
});

test('debootstrap minbase bookworm: ~7k entries identical to umoci unpack', { timeout: 1_800_000 }, async () => {
  const img = await buildDebootstrapImage(path.join(dir, 'debian-src'));
  fs.rmSync(img.rootfs, { recursive: true, force: true });
  const o = await roundTrip('debootstrap', img.layoutDir, img.ref);
  assert.ok(o.entries > 5000, `${o.entries} entries`);
});

test('two layers with whiteouts, an opaque dir and odd entries: merged exactly as umoci applies them', { timeout: 300_000 }, async () => {
  const img = await buildLayeredImage(path.join(dir, 'layered-src'));
  const o = await roundTrip('layered', img.layoutDir, img.ref);
  assert.equal(o.blobs.length, 2);
});

test('the layered image with 4 KiB and 16 MiB chunks (the chunk-size extremes) mounts identically too', { timeout: 300_000 }, async () => {
  const img = await buildLayeredImage(path.join(dir, 'chunks-src'));
  for (const cs of ['4KiB', '16MiB']) await roundTrip(`layered-${cs}`, img.layoutDir, img.ref, ['--chunk-size', cs]);
});

test('registry source and destination (Basic auth): same image as from the layout, pushed intact', { timeout: 300_000 }, async () => {
  const img = await buildBusyboxImage(path.join(dir, 'reg-src'));
  const reg = await startRegistry({ htpasswd: { user: 'conv', pass: 'secret' } });
  try {
    await pushOciLayout(img.layoutDir, img.ref, reg.url, 'test/busybox:1', { user: 'conv', pass: 'secret' });
    const work = path.join(dir, 'reg');
    const user = ['--user', 'conv:secret'];
    // without credentials: a clear refusal
    const denied = await run('node', [CLI, 'convert', `docker://${reg.host}/test/busybox:1`, `oci:${work}-x:t`]);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /wants credentials: pass --user/);
    // registry → layout gives the same image as layout → layout
    await runOk('node', [CLI, 'convert', ...user, `docker://${reg.host}/test/busybox:1`, `oci:${work}:from-registry`]);
    await runOk('node', [CLI, 'convert', `oci:${img.layoutDir}:${img.ref}`, `oci:${work}:from-layout`]);
    const a = await readNydusLayout(work, 'from-registry');
    const b = await readNydusLayout(work, 'from-layout');
    assert.equal(a.index.manifests[0].digest, b.index.manifests[1].digest);
    // layout → registry: the registry stores the same manifest; blobs verified by their digests on upload
    const push = await runOk('node', [CLI, 'convert', '--json', ...user, `oci:${img.layoutDir}:${img.ref}`, `docker://${reg.host}/test/busybox:nydus`]);
    const pushed = JSON.parse(push.stdout) as { manifest: { digest: string } };
    assert.equal(pushed.manifest.digest, b.index.manifests[1].digest);
    const auth = 'Basic ' + Buffer.from('conv:secret').toString('base64');
    const res = await fetch(`${reg.url}/v2/test/busybox/manifests/nydus`, { headers: { authorization: auth, accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(res.headers.get('docker-content-digest'), pushed.manifest.digest);
    const m = (await res.json()) as { layers: { digest: string }[] };
    for (const l of m.layers) {
      const h = await fetch(`${reg.url}/v2/test/busybox/blobs/${l.digest}`, { method: 'HEAD', headers: { authorization: auth } });
      assert.equal(h.status, 200, l.digest);
    }
    // pushing again skips the blobs the registry has
    await runOk('node', [CLI, 'convert', ...user, `oci:${img.layoutDir}:${img.ref}`, `docker://${reg.host}/test/busybox:nydus2`]);
  } finally {
    await reg.stop();
  }
});
