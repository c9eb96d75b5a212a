// A pulled image's blob metadata read at pull (mounts/blob-meta-at-pull.ts):
// one GET per blob into the metadata cache, none again, and then the
// worker's open of each blob costs the registry nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { blobMetaAtPull } from '../../mounts/blob-meta-at-pull';
import { BlobMetaCache } from '../../content/remote/meta-cache';
import { remoteOpener } from '../../worker/remote-opener';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { nydusFromDir } from '../support/nydus-from-dir';
import { readNydusLayout } from '../support/oci-layout';
import { makeTempDir, removeTempDir } from '../support/tmp';

test('at pull: each blob\'s metadata in one GET, none twice, and the worker opens them from disk', { timeout: 120_000 }, async () => {
  const dir = await makeTempDir('meta-at-pull');
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    const m = /^\/v2\/test\/img\/blobs\/sha256:([0-9a-f]{64})$/.exec(req.url ?? '');
    const file = m && path.join(dir, 'nydus', 'blobs', 'sha256', m[1]);
    if (!file || !fs.existsSync(file)) return void res.writeHead(404).end();
    seen.push(`${req.method} ${m![1].slice(0, 8)} ${req.headers.range ?? ''}`);
    const blob = fs.readFileSync(file);
    const suffix = /^bytes=-(\d+)$/.exec(req.headers.range ?? '');
    const span = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    const [from, to] = suffix ? [Math.max(0, blob.length - Number(suffix[1])), blob.length - 1] : span ? [Number(span[1]), Number(span[2])] : [0, blob.length - 1];
    if (req.method === 'HEAD') return void res.writeHead(200, { 'content-length': blob.length }).end();
    res.writeHead(suffix || span ? 206 : 200, { 'content-length': to - from + 1, 'content-range': `bytes ${from}-${to}/${blob.length}` }).end(blob.subarray(from, to + 1));
  });
  try {
    const src = path.join(dir, 'src');
    for (const d of ['a', 'b']) fs.mkdirSync(path.join(src, d), { recursive: true });
    fs.writeFileSync(path.join(src, 'a', 'one'), Buffer.alloc(300_000, 1));
    fs.writeFileSync(path.join(src, 'b', 'two'), 'two\n');
    await nydusFromDir(src, dir);
    const img = await readNydusLayout(path.join(dir, 'nydus'), 'nydus');
    const bootFile = path.join(dir, 'image.boot');
    fs.writeFileSync(bootFile, img.bootstrap);
    const blobIds = new Bootstrap(img.bootstrap).blobs.map((b) => b.blobId);
    assert.ok(blobIds.length >= 1);

    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const imageRef = `127.0.0.1:${(server.address() as AddressInfo).port}/test/img:1`;
    const metaDir = path.join(dir, 'blobmeta');
    const registry = { hostsDir: '', dockerConfig: path.join(dir, 'no-config.json'), plainHttp: true, criCredentialsDir: '', credentialProviderConfig: '', credentialProviderBinDir: '' };
    const log = pino({ level: 'silent' });
    const cache = new BlobMetaCache(metaDir);
    const atPull = blobMetaAtPull(remoteOpener({ registry, readDeadlineMs: 30_000, blobMetaDir: metaDir }, log).open, cache, log);

    await atPull(bootFile, imageRef);
    for (const id of blobIds) assert.ok(cache.has(id), `metadata of ${id} kept`);
    assert.equal(seen.length, blobIds.length, `one GET per blob: ${seen.join(', ')}`);
    assert.ok(seen.every((s) => /^GET \w+ bytes=-\d+$/.test(s)), seen.join(', '));

    await atPull(bootFile, imageRef); // pulled again (another tag): nothing to read
    assert.equal(seen.length, blobIds.length);

    // the worker's open (its own process, the same cache dir): no request
    seen.length = 0;
    const worker = remoteOpener({ registry, readDeadlineMs: 30_000, blobMetaDir: metaDir }, log);
    const bs = new Bootstrap(img.bootstrap);
    for (const [i, entry] of bs.blobs.entries()) await worker.open({ imageRef }, entry, bs.chunkTableDigests(i));
    assert.deepEqual(seen, []);

    // a bootstrap that does not parse is a warning, not a throw
    fs.writeFileSync(path.join(dir, 'bad.boot'), 'not a bootstrap');
    await atPull(path.join(dir, 'bad.boot'), imageRef);
  } finally {
    server.close();
    await removeTempDir(dir);
  }
});
