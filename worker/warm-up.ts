// A new worker's first blob open and first READ each cost it 50-150 ms more
// than later ones (undici's HTTP parser is compiled at the first request,
// blake3 and zstd are set up at first use, and V8 compiles each function the
// first time it runs); measured in bench/startup, a container's first reads
// waited for that. So a worker, while it waits for its handover or in its
// first moments, opens a tiny blob of its own making through a registry of
// one blob on 127.0.0.1 and reads two chunks of it: the same code as a real
// image's open and READ. Nothing leaves the process; best effort. The bytes
// read are compared with those written: a fetch path that fails here would
// fail on real images too, and says so at start.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { BlobFetcher } from '../content/remote';
import { BlobResult, BlobWriter } from '../image/blob/writer';

const CHUNK = 64 << 10;
const CHUNKS = 3;
const REPO = 'lazysnap/warm-up';

/**
 * Resolves true once a blob was opened and read through the fetch path, its
 * bytes as written. Never rejects. `signal` stops it (a worker handed the
 * device stops warming up: it would take the CPU from the readers it now serves).
 */
export async function warmFetchPath(log: Logger, signal?: AbortSignal): Promise<boolean> {
  const t0 = Date.now();
  const cpu0 = process.cpuUsage();
  let dir: string | undefined;
  let server: http.Server | undefined;
  let fetcher: BlobFetcher | undefined;
  try {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-warm-up-'));
    const writer = await BlobWriter.create(path.join(dir, 'blob'), { chunkSize: CHUNK, level: 1 });
    // compressible, not zero (a zero chunk is a hole and would not be written)
    const chunk = (i: number) => Buffer.alloc(CHUNK, `lazysnap warm-up chunk ${i} `);
    let blob: BlobResult | null;
    try {
      for (let i = 0; i < CHUNKS; i++) {
        signal?.throwIfAborted();
        await writer.put(chunk(i));
      }
      blob = await writer.finish();
    } catch (err) {
      await writer.abort().catch(() => undefined); // its file handle closed: no fd outlives the warm-up
      throw err;
    }
    if (!blob) throw new Error('the warm-up blob has no chunks');
    const data = fs.readFileSync(blob.path);
    server = serveOneBlob(`sha256:${blob.id}`, data);
    await new Promise<void>((resolve, reject) => server!.once('error', reject).listen(0, '127.0.0.1', resolve));
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    // short timeouts: a fanotify worker waits for the warm-up before it serves, so it must end soon whatever happens
    fetcher = new BlobFetcher({ registry: { plainHttp: true, retry: { attempts: 1 }, timeouts: { connectMs: 2000, headersMs: 2000, bodyMs: 2000 } } });
    signal?.throwIfAborted();
    const content = await fetcher.open({ host, repo: REPO, entry: { ...blob.entry, blobIndex: 0 }, signal });
    // two chunks asked for; the fill may bring the third along
    const got = Buffer.alloc(CHUNKS * CHUNK);
    await content.fill(0, 2 * CHUNK, async (at, piece) => void piece.copy(got, at), (n) => Buffer.alloc(n), signal);
    if (!got.subarray(0, 2 * CHUNK).equals(Buffer.concat([chunk(0), chunk(1)]))) throw new Error('the blob read back differs from the blob written');
    const cpu = process.cpuUsage(cpu0);
    log.debug({ ms: Date.now() - t0, cpuMs: Math.round((cpu.user + cpu.system) / 1000) }, 'fetch path warmed up');
    return true;
  } catch (err) {
    if (signal?.aborted) log.debug('warm-up stopped: the worker serves now');
    else log.warn({ err: (err as Error).message }, 'warming the fetch path up failed (the first real read pays for it)');
    return false;
  } finally {
    // every fd it opened is closed before it resolves (a fanotify worker waits for that: worker.ts)
    await fetcher?.close().catch(() => undefined);
    server?.closeAllConnections();
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
    try {
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // a few KiB left in the temp dir
    }
  }
}

/** What a blob's open and reads ask of a registry: HEAD, and GET of one range (`a-b`, or the last n bytes: `-n`). */
function serveOneBlob(digest: string, data: Buffer): http.Server {
  const at = `/v2/${REPO}/blobs/${digest}`;
  return http.createServer((req, res) => {
    if (req.url !== at || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404).end();
      return;
    }
    const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
    const headers = { 'docker-content-digest': digest, 'content-type': 'application/octet-stream' };
    if (req.method === 'HEAD' || !m) {
      res.writeHead(200, { ...headers, 'content-length': data.length }).end(req.method === 'HEAD' ? undefined : data);
      return;
    }
    const suffix = m[1] === '';
    const from = suffix ? Math.max(0, data.length - Number(m[2])) : Number(m[1]);
    const to = suffix || m[2] === '' ? data.length - 1 : Math.min(Number(m[2]), data.length - 1);
    if (from > to || (suffix && m[2] === '')) {
      res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
      return;
    }
    res.writeHead(206, { ...headers, 'content-range': `bytes ${from}-${to}/${data.length}`, 'content-length': to - from + 1 });
    res.end(data.subarray(from, to + 1));
  });
}
