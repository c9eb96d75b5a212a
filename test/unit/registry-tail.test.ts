// A blob's tail with one suffix-Range GET (bytes=-N): the size from
// Content-Range, and what a server that answers otherwise gets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { RegistryClient } from '../../registry/client';
import { ProtocolError } from '../../registry/errors';
import { RemoteBlobContent } from '../../content/remote/chunk-fetcher';
import { metadataTailBytes } from '../../image/blob/datablob';
import { buildSyntheticBlob } from '../support/testblob';

type Mode = 'suffix' | 'ignore-range' | 'no-suffix' | 'wrong-range' | 'bad-request';
const seen: string[] = [];

async function withServer(blob: Buffer, mode: Mode, fn: (repo: ReturnType<RegistryClient['repository']>, digest: string) => Promise<void>) {
  const digest = `sha256:${crypto.createHash('sha256').update(blob).digest('hex')}`;
  const server = http.createServer((req, res) => {
    if (req.url !== `/v2/r/blobs/${digest}`) return void res.writeHead(404).end();
    seen.push(`${req.method} ${req.headers.range ?? ''}`);
    const r = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (r) {
      const [from, to] = [Number(r[1]), Number(r[2])];
      return void res.writeHead(206, { 'content-length': to - from + 1, 'content-range': `bytes ${from}-${to}/${blob.length}` }).end(blob.subarray(from, to + 1));
    }
    if (req.method === 'HEAD') return void res.writeHead(200, { 'content-length': blob.length }).end();
    const m = /^bytes=-(\d+)$/.exec(req.headers.range ?? '');
    if (!m || mode === 'ignore-range') return void res.writeHead(200, { 'content-length': blob.length }).end(blob);
    if (mode === 'no-suffix') return void res.writeHead(416, { 'content-range': `bytes */${blob.length}` }).end();
    if (mode === 'bad-request') return void res.writeHead(400).end('suffix ranges are not supported');
    const from = Math.max(0, blob.length - Number(m[1])) + (mode === 'wrong-range' ? 1 : 0);
    const to = blob.length - 1;
    res.writeHead(206, { 'content-length': to - from + 1, 'content-range': `bytes ${from}-${to}/${blob.length}` }).end(blob.subarray(from, to + 1));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = new RegistryClient({ plainHttp: true, retry: { attempts: 2, baseDelayMs: 5, maxDelayMs: 10 } });
  try {
    await fn(client.repository(`127.0.0.1:${(server.address() as AddressInfo).port}`, 'r'), digest);
  } finally {
    await client.close();
    server.close();
  }
}

test('readBlobTail: the last n bytes and the size; all of a shorter blob; a 200 within the bound read whole', async () => {
  const blob = crypto.randomBytes(100_000);
  await withServer(blob, 'suffix', async (repo, d) => {
    const t = await repo.readBlobTail(d, 4096);
    assert.deepEqual([t.size, t.off], [blob.length, blob.length - 4096]);
    assert.ok(t.data.equals(blob.subarray(-4096)));
    const all = await repo.readBlobTail(d, 1 << 20);
    assert.deepEqual([all.size, all.off, all.data.length], [blob.length, 0, blob.length]);
  });
  await withServer(blob, 'ignore-range', async (repo, d) => {
    const t = await repo.readBlobTail(d, 4096);
    assert.deepEqual([t.size, t.off], [blob.length, blob.length - 4096]);
    assert.ok(t.data.equals(blob.subarray(-4096)));
  });
});

test('readBlobTail: a server without suffix ranges, or with a Content-Range that does not end the blob, is a ProtocolError', async () => {
  const blob = crypto.randomBytes(50_000);
  await withServer(blob, 'no-suffix', async (repo, d) => {
    await assert.rejects(repo.readBlobTail(d, 4096), (e: Error) => e instanceof ProtocolError && /416/.test(e.message));
  });
  await withServer(blob, 'wrong-range', async (repo, d) => {
    await assert.rejects(repo.readBlobTail(d, 4096), (e: Error) => e instanceof ProtocolError && /Content-Range/.test(e.message));
  });
});

test('opening a blob: one suffix GET; where the server refuses it (416, 400) or gets it wrong, one try of it, then a HEAD and ranged reads as before', async () => {
  const b = await buildSyntheticBlob({ chunkSizes: [200_000, 300_000, 100_000], seed: 'tail-unit' });
  for (const mode of ['suffix', 'no-suffix', 'wrong-range', 'bad-request'] as const) {
    await withServer(b.data, mode, async (repo) => {
      seen.length = 0;
      const content = await RemoteBlobContent.open(repo, b.entry);
      const out = Buffer.alloc(content.size);
      const opened = seen.length;
      await content.fill(0, content.size, async (o, buf) => void buf.copy(out, o), (n) => Buffer.alloc(n));
      assert.ok(out.equals(b.uncompressed), mode);
      if (mode === 'suffix') assert.deepEqual(seen.slice(0, opened), [`GET bytes=-${metadataTailBytes(b.entry)}`]);
      else assert.deepEqual(seen.slice(0, 2), [`GET bytes=-${metadataTailBytes(b.entry)}`, 'HEAD '], `${mode}:\n${seen.join('\n')}`);
    });
  }
});
