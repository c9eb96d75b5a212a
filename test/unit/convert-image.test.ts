// `convert` end to end on small OCI layouts: the nydus image it writes
// (manifest, config, bootstrap layer, blobs), determinism, media types, and
// every kind of bad input: contained with a warning, or refused with a clear
// error and nothing written outside DST.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { convert } from '../../image/convert';
import { ImageError, parsePlatform, pickPlatform, type Index } from '../../image/convert/oci';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { NULL_ADDR } from '../../image/erofs/image';
import { verifyBlobs, blobsIn } from '../../image/inspect/inspect';
import { LAYER_MEDIA, TarSpec, compressLayer, layoutFromTars, readNydusLayout, sha256hex, tarBuffer, tarStream, writeLayout } from '../support/oci-layout';
import { makeTempDir, removeTempDir } from '../support/tmp';

const f = (name: string | Buffer, data: string | Buffer = 'x', o: Partial<TarSpec> = {}): TarSpec => ({ name, data: Buffer.isBuffer(data) ? data : Buffer.from(data), ...o });
const rand = (n: number) => crypto.randomBytes(n);

function listAll(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) out.push(path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
  return out.sort();
}

async function withDir(label: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await makeTempDir(label);
  try {
    await fn(dir);
  } finally {
    await removeTempDir(dir);
  }
}

/** Converts and returns the error, checking nothing was left beside DST. */
async function refused(dir: string, src: string): Promise<Error> {
  const out = path.join(dir, 'out');
  const before = fs.readdirSync(dir).sort();
  const err = await convert(`oci:${src}:latest`, `oci:${out}:n`, { warn: () => {} }).then(
    () => assert.fail('conversion should have been refused'),
    (e: Error) => e,
  );
  assert.deepEqual(fs.readdirSync(dir).sort(), before, 'nothing written beside DST');
  assert.equal(fs.existsSync(out), false);
  return err;
}

const IMAGE: TarSpec[][] = [
  [
    { name: 'etc', type: 'dir', mode: 0o755, mtime: 1_600_000_000 },
    f('etc/hosts', '127.0.0.1 localhost\n', { mode: 0o644, uid: 0, gid: 0, mtime: 1_600_000_001, mtimeNsec: 250 }),
    f('bin/big', rand(3 * (1 << 20) + 123), { mode: 0o755 }),
    f('bin/big-copy', Buffer.alloc(0)),
  ],
  [f('etc/hosts', 'replaced\n'), f('etc/dup', 'replaced\n'), f('usr/share/x', 'x'.repeat(100000))],
];

test('convert: manifest, config, bootstrap layer and blobs as nydus-snapshotter expects', async () => {
  await withDir('conv', async (dir) => {
    await layoutFromTars(path.join(dir, 'src'), IMAGE);
    const r = await convert(`oci:${dir}/src:latest`, `oci:${dir}/dst:v1`, { warn: () => {} });
    const n = await readNydusLayout(path.join(dir, 'dst'), 'v1');
    const m = n.manifest;
    assert.equal(m.layers.length, 3);
    for (const l of m.layers.slice(0, 2)) {
      assert.equal(l.mediaType, 'application/vnd.oci.image.layer.nydus.blob.v1');
      assert.deepEqual(l.annotations, { 'containerd.io/uncompressed': l.digest, 'containerd.io/snapshot/nydus-blob': 'true' });
      const file = fs.readFileSync(path.join(n.blobsDir, l.digest.slice(7)));
      assert.equal(`sha256:${sha256hex(file)}`, l.digest);
      assert.equal(file.length, l.size);
    }
    const boot = m.layers[2];
    assert.equal(boot.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
    assert.equal(boot.annotations!['containerd.io/snapshot/nydus-bootstrap'], 'true');
    assert.equal(boot.annotations!['containerd.io/snapshot/nydus-fs-version'], '6');
    const gz = fs.readFileSync(path.join(n.blobsDir, boot.digest.slice(7)));
    assert.equal(gz.readUInt32LE(4), 0, 'gzip header mtime 0');
    const tar = zlib.gunzipSync(gz);
    assert.equal(tar.subarray(0, 16).toString(), 'image/image.boot');
    assert.equal(parseInt(tar.subarray(136, 147).toString(), 8), 0, 'tar entry mtime 0');
    assert.equal(m.config.mediaType, 'application/vnd.oci.image.config.v1+json');
    assert.deepEqual(n.config.rootfs.diff_ids, [m.layers[0].digest, m.layers[1].digest, `sha256:${sha256hex(tar)}`]);
    assert.deepEqual(n.index.manifests[0].platform, { os: 'linux', architecture: 'amd64', 'os.features': ['nydus.remoteimage.v1'] });
    assert.equal(r.manifest.digest, n.index.manifests[0].digest);
    // the bootstrap: blob ids as device tags, in manifest order; every chunk verifies
    const bs = new Bootstrap(n.bootstrap);
    assert.deepEqual(bs.devices.map((x) => x.tag), m.layers.slice(0, 2).map((l) => l.digest.slice(7)));
    const v = await verifyBlobs(n.bootstrap, blobsIn(n.blobsDir));
    assert.deepEqual([v.failed, v.missingBlobs.length], [0, 0]);
    assert.equal(v.verified, v.chunks);
    // overlay: layer 2's hosts wins; big stays in blob 0 (device 1)
    const img = bs.erofs;
    const files = new Map([...img.walk()].map((e) => [e.path, e]));
    assert.equal(files.get('/etc/hosts')!.inode.size, 9);
    assert.deepEqual(img.chunkMap(files.get('/etc/hosts')!.inode).chunks.map((c) => c.deviceId), [2]);
    assert.deepEqual(img.chunkMap(files.get('/bin/big')!.inode).chunks.map((c) => c.deviceId), [1, 1, 1, 1]);
    assert.equal(files.get('/etc/hosts')!.inode.mtimeNsec, 0);
  });
});

test('convert: deterministic (twice, and one or many chunks compressing at once), any layer compression, Docker media types', async () => {
  await withDir('det', async (dir) => {
    await layoutFromTars(path.join(dir, 'src'), IMAGE, 'gzip');
    await convert(`oci:${dir}/src:latest`, `oci:${dir}/a:t`, { jobs: 1, warn: () => {} });
    await convert(`oci:${dir}/src:latest`, `oci:${dir}/b:t`, { jobs: 16, warn: () => {} });
    const a = listAll(path.join(dir, 'a')).map((p) => path.relative(path.join(dir, 'a'), p));
    assert.deepEqual(a, listAll(path.join(dir, 'b')).map((p) => path.relative(path.join(dir, 'b'), p)));
    for (const p of a) {
      const fa = path.join(dir, 'a', p);
      if (fs.statSync(fa).isFile()) assert.ok(fs.readFileSync(fa).equals(fs.readFileSync(path.join(dir, 'b', p))), `${p} differs`);
    }
    // same content through tar, zstd and Docker's gzip type gives the same blobs
    const tars = await Promise.all(IMAGE.map((l) => tarBuffer(l)));
    const ref = await readNydusLayout(path.join(dir, 'a'), 't');
    for (const [c, mediaType] of [['none', LAYER_MEDIA.none], ['zstd', LAYER_MEDIA.zstd], ['gzip', 'application/vnd.docker.image.rootfs.diff.tar.gzip']] as const) {
      const src = path.join(dir, `src-${c}-${mediaType.length}`);
      await writeLayout(src, tars.map((t) => ({ bytes: compressLayer(t, c), mediaType, diffId: `sha256:${sha256hex(t)}` })), { manifestMediaType: mediaType.includes('docker') ? 'application/vnd.docker.distribution.manifest.v2+json' : undefined });
      await convert(`oci:${src}:latest`, `oci:${src}-out:t`, { warn: () => {} });
      const got = await readNydusLayout(`${src}-out`, 't');
      assert.deepEqual(got.manifest.layers.map((l) => l.digest), ref.manifest.layers.map((l) => l.digest), `${c} ${mediaType}`);
    }
  });
});

test('convert: into an existing layout adds a tag; a busy non-layout DST is refused up front', async () => {
  await withDir('exist', async (dir) => {
    const lay = path.join(dir, 'lay');
    await layoutFromTars(lay, IMAGE, 'gzip', 'orig');
    await convert(`oci:${lay}:orig`, `oci:${lay}:nydus`, { warn: () => {} });
    const index = JSON.parse(fs.readFileSync(path.join(lay, 'index.json'), 'utf8'));
    assert.deepEqual(index.manifests.map((d: { annotations: Record<string, string> }) => d.annotations['org.opencontainers.image.ref.name']), ['orig', 'nydus']);
    await readNydusLayout(lay, 'nydus');
    fs.mkdirSync(path.join(dir, 'busy'));
    fs.writeFileSync(path.join(dir, 'busy', 'x'), 'x');
    await assert.rejects(convert(`oci:${lay}:orig`, `oci:${dir}/busy:t`, { warn: () => {} }), /not empty and not an OCI layout/);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'busy')), ['x']);
  });
});

test('bad input contained: .. and absolute paths, / and . root entries, devices, non-UTF-8 names', async () => {
  await withDir('bad', async (dir) => {
    const raw = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // "caf\xe9" (latin1, not UTF-8)
    const warnings: string[] = [];
    await layoutFromTars(path.join(dir, 'src'), [
      [
        { name: '/', type: 'dir', mode: 0o700, uid: 5, gid: 6, mtime: 1_500_000_000 },
        f('../../../etc/evil', 'e'),
        f('/abs/file', 'a'),
        f('ok/../../x', 'y'),
        { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
        { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 300, mode: 0o660 },
        { name: 'dev/fifo', type: 'fifo', mode: 0o600 },
        f(raw, 'latin1 name'),
        f(Buffer.concat([Buffer.from('dir/'), raw, Buffer.from('/inner')]), 'deep'),
      ],
      [{ name: './', type: 'dir', mode: 0o750, uid: 0, gid: 0, mtime: 1_600_000_000 }],
    ]);
    await convert(`oci:${dir}/src:latest`, `oci:${dir}/out:t`, { warn: (m) => warnings.push(m) });
    const n = await readNydusLayout(path.join(dir, 'out'), 't');
    const img = new Bootstrap(n.bootstrap).erofs;
    const paths = [...img.walk()].map((e) => e.path);
    assert.ok(paths.includes('/etc/evil') && paths.includes('/abs/file') && paths.includes('/x'));
    assert.equal(warnings.filter((w) => /climbs above the root|absolute path|contains '\.\.'/.test(w)).length, 3, warnings.join('\n'));
    const root = img.root();
    assert.deepEqual([root.mode & 0o7777, root.uid, root.mtime], [0o750, 0, 1_600_000_000], '"./" of layer 2 sets the root');
    const byName = new Map([...img.walk()].map((e) => [e.path, e.inode]));
    assert.equal(byName.get('/dev/null')!.mode, 0o020666);
    assert.equal(byName.get('/dev/null')!.iu, (1 << 8) | 3);
    assert.equal(byName.get('/dev/sda')!.iu, (300 & 0xff) | (8 << 8) | ((300 & ~0xff) << 12));
    assert.equal(byName.get('/dev/fifo')!.mode, 0o010600);
    const names = img.readdir(root).map((d) => d.name);
    assert.ok(names.some((b) => b.equals(raw)), 'raw name bytes kept');
    // nothing was created on the host for the device entries
    for (const p of listAll(dir)) {
      const st = fs.lstatSync(p);
      assert.ok(!st.isCharacterDevice() && !st.isBlockDevice() && !st.isFIFO(), `${p} is a special file`);
    }
  });
});

test('bad input contained: a huge sparse file becomes holes and costs no blob space or memory', async () => {
  await withDir('sparse', async (dir) => {
    const src = path.join(dir, 'src');
    const size = 1 << 30;
    const tail = rand(1000);
    const entries: TarSpec[] = [{ name: 'huge', zeros: size }, f('after', tail)];
    // the layer: streamed through gzip to disk, never in memory
    const gz = path.join(dir, 'layer.gz');
    const plain = crypto.createHash('sha256');
    await pipeline(Readable.from((async function* () {
      for await (const b of tarStream(entries)) {
        plain.update(b);
        yield b;
      }
    })()), zlib.createGzip({ level: 1 }), fs.createWriteStream(gz));
    const bytes = fs.readFileSync(gz);
    await writeLayout(src, [{ bytes, mediaType: LAYER_MEDIA.gzip, diffId: `sha256:${plain.digest('hex')}` }]);
    const rss0 = process.memoryUsage().rss;
    await convert(`oci:${src}:latest`, `oci:${dir}/out:t`, { warn: () => {} });
    const grew = process.memoryUsage().rss - rss0;
    const n = await readNydusLayout(path.join(dir, 'out'), 't');
    const bs = new Bootstrap(n.bootstrap);
    const huge = [...bs.erofs.walk()].find((e) => e.path === '/huge')!.inode;
    assert.equal(huge.size, size);
    const cm = bs.erofs.chunkMap(huge);
    assert.equal(cm.chunks.length, 1024);
    assert.ok(cm.chunks.every((c) => c.blkaddr === NULL_ADDR));
    assert.equal(bs.blobs[0].chunkCount, 1, 'only the small file has data');
    assert.ok(n.manifest.layers[0].size < 20000, `blob is ${n.manifest.layers[0].size} bytes`);
    assert.ok(grew < 256 << 20, `rss grew by ${grew >> 20} MiB`);
  });
});

test('bad input refused: missing hard link target, truncated layer, wrong digest, diff_id mismatch, unstorable xattr', async () => {
  await withDir('refuse', async (dir) => {
    const one = async (name: string, layers: TarSpec[][]) => {
      const src = path.join(dir, name);
      await layoutFromTars(src, layers);
      return src;
    };
    let e = await refused(dir, await one('hl', [[f('a'), { name: 'b', type: 'link', linkname: 'nope/missing' }]]));
    assert.match(e.message, /hard link "b" points to "nope\/missing", which does not exist/);
    assert.match(e.message, /^layer sha256:[0-9a-f]{64} /);

    e = await refused(dir, await one('xa', [[f('a', 'x', { xattrs: { 'btrfs.compression': 'zstd' } })]]));
    assert.match(e.message, /entry "a": xattr "btrfs.compression" has no EROFS name prefix/);

    // truncated: the stored blob lost its tail
    const tr = await one('trunc', [[f('big', rand(200000))]]);
    const m = JSON.parse(fs.readFileSync(path.join(tr, 'blobs/sha256', JSON.parse(fs.readFileSync(path.join(tr, 'index.json'), 'utf8')).manifests[0].digest.slice(7)), 'utf8'));
    const layer = path.join(tr, 'blobs/sha256', m.layers[0].digest.slice(7));
    fs.truncateSync(layer, Math.floor(fs.statSync(layer).size / 2));
    e = await refused(dir, tr);
    assert.match(e.message, new RegExp(`^layer ${m.layers[0].digest} is truncated`));

    // digest mismatch: an uncompressed layer with one byte changed
    const tar = await tarBuffer([f('a', 'hello')]);
    const wd = path.join(dir, 'wrongdigest');
    const w = await writeLayout(wd, [{ bytes: tar, mediaType: LAYER_MEDIA.none }]);
    const p = path.join(wd, 'blobs/sha256', w.layers[0].digest.slice(7));
    const b = fs.readFileSync(p);
    b[512] ^= 1;
    fs.writeFileSync(p, b);
    e = await refused(dir, wd);
    assert.match(e.message, new RegExp(`^layer ${w.layers[0].digest} does not match its digest`));

    const dd = path.join(dir, 'diffid');
    await writeLayout(dd, [{ bytes: compressLayer(tar, 'gzip'), mediaType: LAYER_MEDIA.gzip, diffId: `sha256:${'0'.repeat(64)}` }]);
    e = await refused(dir, dd);
    assert.match(e.message, /does not match the config's diff_id/);
  });
});

test('convert: a layer without file data gets no blob; identical layers share one blob (device)', async () => {
  await withDir('blobs', async (dir) => {
    const same: TarSpec[] = [f('a/data', 'same bytes in two layers')];
    await layoutFromTars(path.join(dir, 'src'), [same, [{ name: 'only-dirs', type: 'dir', mode: 0o755 }, f('a/.wh.gone', ''), f('empty', '')], same]);
    const r = await convert(`oci:${dir}/src:latest`, `oci:${dir}/out:t`, { warn: () => {} });
    assert.deepEqual(r.layers.map((l) => l.blobIndex), [0, -1, 0]);
    const n = await readNydusLayout(path.join(dir, 'out'), 't');
    assert.equal(n.manifest.layers.length, 2, 'one blob + the bootstrap');
    assert.equal(n.config.rootfs.diff_ids.length, 2);
    const bs = new Bootstrap(n.bootstrap);
    assert.equal(bs.blobs.length, 1);
    const img = bs.erofs;
    const data = [...img.walk()].find((e) => e.path === '/a/data')!.inode;
    assert.deepEqual(img.chunkMap(data).chunks, [{ deviceId: 1, blkaddr: 0 }]);
    assert.equal([...img.walk()].find((e) => e.path === '/empty')!.inode.size, 0);
  });
});

test('platform choice is the registry client\'s: arm variants normalised; a miss lists what the index has', () => {
  const d = (platform: { os: string; architecture: string; variant?: string }, n: string) =>
    ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${n.repeat(64)}`, size: 1, platform });
  const index: Index = { schemaVersion: 2, manifests: [d({ os: 'linux', architecture: 'amd64' }, 'a'), d({ os: 'linux', architecture: 'arm64' }, 'b')] };
  assert.equal(pickPlatform(index, parsePlatform('linux/arm64/v8'), 'src').digest, `sha256:${'b'.repeat(64)}`);
  assert.equal(pickPlatform(index, parsePlatform('linux/amd64'), 'src').digest, `sha256:${'a'.repeat(64)}`);
  assert.throws(() => pickPlatform(index, parsePlatform('linux/s390x'), 'src'), (e) =>
    e instanceof ImageError && /src: no manifest for linux\/s390x \(has linux\/amd64, linux\/arm64\)/.test(e.message));
  assert.throws(() => parsePlatform('linux'), ImageError);
});
