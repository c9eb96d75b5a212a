// Keep-alive across a blob's requests: after the HEAD that sizes a blob, its
// Range GETs must share connections (each new one costs a TCP, and on a real
// registry a TLS, handshake: round trips a lazy read waits for).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { RegistryClient } from '../../registry/client';

test('Range GETs after a HEAD reuse connections', async () => {
  const blob = crypto.randomBytes(64 << 10);
  const digest = `sha256:${crypto.createHash('sha256').update(blob).digest('hex')}`;
  const ports: Record<string, Set<number>> = { HEAD: new Set(), GET: new Set() };
  const server = http.createServer((req, res) => {
    ports[req.method ?? '']?.add(req.socket.remotePort ?? 0);
    if (req.url !== `/v2/r/blobs/${digest}`) return void res.writeHead(404).end();
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m) return void res.writeHead(200, { 'content-length': blob.length }).end(req.method === 'HEAD' ? undefined : blob);
    const [from, to] = [Number(m[1]), Number(m[2])];
    res.writeHead(206, { 'content-length': to - from + 1, 'content-range': `bytes ${from}-${to}/${blob.length}` }).end(blob.subarray(from, to + 1));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = new RegistryClient({ plainHttp: true });
  try {
    const repo = client.repository(`127.0.0.1:${(server.address() as AddressInfo).port}`, 'r');
    assert.equal(await repo.statBlob(digest), blob.length);
    for (let i = 0; i < 8; i++) {
      const got = await repo.readBlob(digest, i * 4096, 4096, { blobSize: blob.length });
      assert.ok(got.equals(blob.subarray(i * 4096, (i + 1) * 4096)));
    }
    // undici answers a request that follows at once on a second connection while the first is released
    assert.ok(ports.GET.size <= 2, `8 sequential GETs used ${ports.GET.size} connections`);
  } finally {
    await client.close();
    server.close();
  }
});
