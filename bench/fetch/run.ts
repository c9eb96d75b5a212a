// Cold fetch of a ~256 MiB nydus blob through the chunk fetcher (prefetch of
// the whole blob: Range GETs, zstd, blake3 per chunk, pwrite into a cache
// file) next to `curl` downloading the same blob whole from the same
// registry, measured in one run: once directly against docker-registry on
// 127.0.0.1, once through a shaping proxy (bench/fetch/shaper.ts: +20 ms RTT,
// 200 Mbit/s). Also a READ-driven pass: sequential 128 KiB fills with 8 in
// flight, as kernel readahead would issue them, with the worker's readahead. And the same work with no
// network: every chunk decoded, verified and written (the floor), and the
// chunk fetcher reading the blob from memory; and the floor again with every
// chunk on the threadpool, as small chunks were before they decoded inline.
//
// Env: BENCH_REPS (default 2) repetitions per measurement, alternating;
// BENCH_MIB (default 256) target compressed size; BENCH_CHUNK_KIB (default
// 1024) the chunk size (a layer of small files has chunks of tens of KiB).
import { spawn, ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { RegistryClient } from '../../registry/client';
import { RemoteBlobContent } from '../../content/remote/chunk-fetcher';
import { FetchScheduler } from '../../content/remote/scheduler';
import { buildSyntheticBlob, uploadBlob } from '../../test/support/testblob';
import { startRegistry } from '../../test/support/registry';
import { asParts, memorySource } from '../../test/support/fixtures';
import { makeTempDir, removeTempDir } from '../../test/support/tmp';
import { DataBlob, INLINE_DECODE_MAX } from '../../image/blob/datablob';
import type { ChunkInfo } from '../../image/blob/chunkinfo';
import { Compressor, type BlobEntry } from '../../image/rafs/bootstrap';
import { decodeChunk } from '../../native';
import type { RangeReader } from '../../content/remote/source';
import { alignUp } from '../../content/content';
import { BufferPool } from '../../content/buffer-pool';
import { writeCache } from '../../worker/device';
import { median } from '../stats';
import { curlDownload } from '../curl';
import { ReadaheadStreams } from '../../content/readahead';

const MiB = 1 << 20;
const REPS = Number(process.env.BENCH_REPS ?? 2);
const TARGET_MIB = Number(process.env.BENCH_MIB ?? 256);
const CHUNK = Number(process.env.BENCH_CHUNK_KIB ?? 1024) * 1024;

interface Target {
  name: string;
  host: string;
}

/**
 * A cache file written the way the fscache worker writes it: aligned buffers
 * from the worker's pool, its pwrite (small on the loop, big on the
 * threadpool), the buffer back to the pool once written (worker/device.ts).
 */
async function cacheFile(p: string) {
  await fs.rm(p, { force: true });
  const fh = await fs.open(p, 'w+');
  const pool = new BufferPool(64 << 20);
  return {
    fh,
    sink: async (off: number, data: Buffer) => {
      await writeCache(fh.fd, data, off);
      pool.give(data);
    },
    alloc: (n: number) => pool.take(n),
  };
}

/** An in-memory blob as a RangeReader: the fetcher's pipeline with no network under it. */
function memoryReader(data: Buffer): RangeReader {
  const src = memorySource(data); // each read a copy, in a socket's pieces, as a response body comes
  return { name: src.name, size: src.size, readRange: async (off, len) => asParts(await src.read(off, len)) };
}

type Decode = (c: ChunkInfo, compressed: Buffer, dst: Buffer) => Promise<unknown>;

/** Every chunk on the threadpool, the small ones too (as before INLINE_DECODE_MAX): to show what decoding those inline saves. */
function onPool(blob: DataBlob): Decode {
  return async (c, compressed, dst) => {
    const why = await decodeChunk(c.compressed ? blob.entry.compressor : Compressor.None, compressed, dst.subarray(0, c.uSize),
      blob.entry.digester, blob.digests![c.index]);
    if (why) throw new Error(`chunk ${c.index}: ${why}`);
  };
}

/** The work without the fetcher: every chunk decoded and verified (2 per core in flight) and pwritten. */
async function decodeFloor(blob: DataBlob, data: Buffer, file: string, decode: Decode = (c, z, d) => blob.decodeChunk(c, z, d)): Promise<number> {
  const cf = await cacheFile(file);
  const t0 = process.hrtime.bigint();
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < blob.chunks.length; i = next++) {
      const c = blob.chunks[i];
      const dst = cf.alloc(alignUp(c.uSize));
      await decode(c, data.subarray(c.cOffset, c.cOffset + c.cSize), dst);
      await cf.sink(c.uOffset, dst);
    }
  };
  await Promise.all(Array.from({ length: 2 * os.cpus().length }, lane));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await cf.fh.close();
  return s;
}

async function fetcherFromMemory(entry: BlobEntry, data: Buffer, file: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const reader = memoryReader(data);
  const blob = await DataBlob.open(entry, memorySource(data), null);
  const content = new RemoteBlobContent(blob, reader, { scheduler: new FetchScheduler() });
  const cf = await cacheFile(file);
  const res = await content.prefetch(cf.sink, cf.alloc).done;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await cf.fh.close();
  if (!res.complete) throw new Error(`prefetch incomplete: ${JSON.stringify(res)}`);
  return s;
}

async function fetcherPrefetch(host: string, entry: BlobEntry, file: string, verify?: Buffer):
  Promise<{ s: number; gets: number; verifyFailures: number; retries: number }> {
  const client = new RegistryClient();
  const t0 = process.hrtime.bigint();
  const content = await RemoteBlobContent.open(client.repository(host, 'bench/blob'), entry, { scheduler: new FetchScheduler() });
  const cf = await cacheFile(file);
  const res = await content.prefetch(cf.sink, cf.alloc).done;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await cf.fh.close();
  await client.close();
  if (!res.complete) throw new Error(`prefetch incomplete: ${JSON.stringify(res)}`);
  if (verify) {
    const got = await fs.readFile(file);
    if (!got.subarray(0, verify.length).equals(verify)) throw new Error('prefetched bytes differ from the blob');
  }
  return { s, gets: content.stats.gets, verifyFailures: content.stats.verifyFailures, retries: client.stats.retries };
}

async function fetcherReads(host: string, entry: BlobEntry, file: string): Promise<number> {
  const client = new RegistryClient();
  const t0 = process.hrtime.bigint();
  const content = await RemoteBlobContent.open(client.repository(host, 'bench/blob'), entry, { scheduler: new FetchScheduler() });
  const cf = await cacheFile(file);
  // like the kernel, READ only what is not in the cache file yet (it checks with SEEK_DATA)
  const written = new Uint8Array(Math.ceil(content.size / 4096));
  const sink = async (off: number, data: Buffer) => {
    await cf.sink(off, data);
    written.fill(1, off / 4096, (off + data.length) / 4096);
  };
  const step = 128 * 1024;
  // and, like the worker (worker/daemon.ts), windows filled ahead of the stream
  const streams = new ReadaheadStreams(content.size);
  const ahead: Promise<unknown>[] = [];
  let next = 0;
  const worker = async () => {
    while (next < content.size) {
      const off = next;
      next += step;
      if (written.subarray(off / 4096, Math.ceil(Math.min(off + step, content.size) / 4096)).every((x) => x === 1)) continue;
      const fill = content.fill(off, step, sink, cf.alloc);
      const win = streams.observe(off, Math.min(off + step, content.size));
      if (win) ahead.push(content.fillAhead(win.start, win.end - win.start, sink, cf.alloc));
      await fill;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  await Promise.all(ahead);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await cf.fh.close();
  await client.close();
  return s;
}

async function startShaperProcess(upstream: string): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [path.join(__dirname, 'shaper.js'), '--upstream', upstream, '--delay-ms', '10', '--mbit', '200'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (c) => reject(new Error(`shaper exited with ${c}`)));
    setTimeout(() => reject(new Error('shaper did not start')), 10_000);
  });
  return { port, child };
}

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-fetch');
  const reg = await startRegistry();
  let shaper: ChildProcess | undefined;
  try {
    process.stderr.write(`building a ~${TARGET_MIB} MiB blob (${CHUNK / 1024} KiB chunks, zstd, blake3)...\n`);
    // entropy 0.66 compresses chunks to about 2/3
    const chunks = Math.round((TARGET_MIB * MiB * 3) / 2 / CHUNK);
    const b = await buildSyntheticBlob({ chunkSizes: new Array(chunks).fill(CHUNK), entropy: 0.66, seed: 'bench' });
    const size = b.data.length;
    await uploadBlob(reg.url, 'bench/blob', b.data);
    const entry = b.entry;
    const uncompressed = b.uncompressed;
    process.stderr.write(`blob ${(size / MiB).toFixed(1)} MiB (${chunks} chunks, ${(uncompressed.length / MiB).toFixed(0)} MiB uncompressed) pushed\n`);

    // the same work with no network: what the CPU and the page cache allow on this machine
    const file0 = path.join(dir, 'cache-file');
    const blob = await DataBlob.open(entry, memorySource(b.data), null);
    const floorS: number[] = [];
    const poolS: number[] = [];
    const memS: number[] = [];
    for (let i = 0; i < REPS; i++) {
      floorS.push(await decodeFloor(blob, b.data, file0));
      poolS.push(await decodeFloor(blob, b.data, file0, onPool(blob)));
      memS.push(await fetcherFromMemory(entry, b.data, file0));
      process.stderr.write(`  no network rep ${i + 1}: decode+write ${floorS[i].toFixed(2)} s (all on the threadpool ${poolS[i].toFixed(2)} s), ` +
        `chunk fetcher from memory ${memS[i].toFixed(2)} s\n`);
    }
    const floor = median(floorS);
    const pool = median(poolS);

    const sh = await startShaperProcess(reg.host);
    shaper = sh.child;
    const targets: Target[] = [
      { name: 'direct (127.0.0.1)', host: reg.host },
      { name: 'shaped (+20 ms RTT, 200 Mbit/s)', host: `127.0.0.1:${sh.port}` },
    ];
    const file = path.join(dir, 'cache-file');
    const lines: string[] = [];
    for (const t of targets) {
      const url = `http://${t.host}/v2/bench/blob/blobs/${b.digest}`;
      const curlS: number[] = [];
      const fetchS: number[] = [];
      let gets = 0;
      let bad = 0;
      let retries = 0;
      for (let i = 0; i < REPS; i++) {
        curlS.push((await curlDownload(url)).seconds);
        const r = await fetcherPrefetch(t.host, entry, file, i === 0 && t === targets[0] ? uncompressed : undefined);
        fetchS.push(r.s);
        gets = r.gets;
        bad += r.verifyFailures;
        retries += r.retries;
        process.stderr.write(`  ${t.name} rep ${i + 1}: curl ${curlS[i].toFixed(2)} s, chunk fetcher ${fetchS[i].toFixed(2)} s\n`);
      }
      const reads = await fetcherReads(t.host, entry, file);
      const mbs = (s: number) => (size / 1e6 / s).toFixed(0);
      const c = median(curlS);
      const f = median(fetchS);
      lines.push(
        `${t.name}:\n` +
        `  curl (whole blob, 1 GET):             ${c.toFixed(2)} s  ${mbs(c)} MB/s   [${curlS.map((x) => x.toFixed(2)).join(', ')}]\n` +
        `  chunk fetcher prefetch (${gets} GETs):  ${f.toFixed(2)} s  ${mbs(f)} MB/s   [${fetchS.map((x) => x.toFixed(2)).join(', ')}]\n` +
        `  chunk fetcher READs (128 KiB, 8 in flight, readahead): ${reads.toFixed(2)} s  ${mbs(reads)} MB/s\n` +
        `  (prefetch: ${bad} chunk verification failures, ${retries} HTTP retries over ${REPS} runs)\n` +
        `  ratio chunk fetcher / curl (time): ${(f / c).toFixed(2)}   READ-driven / curl: ${(reads / c).toFixed(2)}` +
        `   chunk fetcher / decode+write floor: ${(f / floor).toFixed(2)}\n`,
      );
    }
    const load = (await fs.readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
    process.stdout.write(
      `blob: ${(size / MiB).toFixed(1)} MiB compressed, ${(uncompressed.length / MiB).toFixed(0)} MiB uncompressed, ` +
      `${chunks} × ${CHUNK / 1024} KiB chunks (zstd, blake3); median of ${REPS}; MB/s = compressed MB / s\n` +
      `no network (the blob in memory):\n` +
      `  decode+write floor (every chunk decoded and verified, on the threadpool or inline up to ${INLINE_DECODE_MAX / 1024} KiB, ` +
      `${2 * os.cpus().length} in flight, pwritten): ${floor.toFixed(2)} s  ${(size / 1e6 / floor).toFixed(0)} MB/s   [${floorS.map((x) => x.toFixed(2)).join(', ')}]\n` +
      `  the same with every chunk on the threadpool: ${pool.toFixed(2)} s   [${poolS.map((x) => x.toFixed(2)).join(', ')}]` +
      `   ratio to the floor: ${(pool / floor).toFixed(2)}\n` +
      `  chunk fetcher prefetch from memory:  ${median(memS).toFixed(2)} s   [${memS.map((x) => x.toFixed(2)).join(', ')}]` +
      `   ratio to the floor: ${(median(memS) / floor).toFixed(2)}\n` +
      lines.join('') +
      `(load average ${load}, ${os.cpus().length} CPUs, node ${process.version})\n`,
    );
  } finally {
    shaper?.kill('SIGTERM');
    await reg.stop();
    await removeTempDir(dir);
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
