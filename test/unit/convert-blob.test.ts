// The data blob writer, read back through DataBlob: chunk infos v2, digests,
// ToC sections, dedup, holes, raw chunks, blob id = sha256(file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlobWriter, FileChunker, HOLE, WRITER_BLOB_FEATURES } from '../../image/blob/writer';
import { DataBlob, readSection } from '../../image/blob/datablob';
import { FileSource } from '../../image/blob/source';
import { parseTarHeader, TAR_BLOCK } from '../../image/blob/tar';
import { Bytes } from '../../image/bytes';
import { BlobFeature, Compressor } from '../../image/rafs/bootstrap';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-blob-'));
const rand = (n: number, seed: string) => {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i += 32) crypto.createHash('sha256').update(seed + i).digest().copy(out, i);
  return out;
};

async function writeSample(dir: string, inflight = 4) {
  const w = await BlobWriter.create(path.join(dir, 'blob'), { chunkSize: 1 << 20, inflight });
  const a = rand(1 << 20, 'a');
  const text = Buffer.from('hello nydus '.repeat(100000)).subarray(0, 1 << 20);
  const idx = [
    await w.put(a),
    await w.put(text),
    await w.put(Buffer.alloc(1 << 20)),
    await w.put(a),
    await w.put(rand(5000, 'small')),
    await w.put(Buffer.from('tail')),
  ];
  const r = (await w.finish())!;
  return { r, idx, a, text };
}

test('blob writer: dedup, holes, raw chunks; DataBlob reads every chunk back verified', async () => {
  const dir = tmp();
  try {
    const { r, idx, a, text } = await writeSample(dir);
    assert.deepEqual(idx, [0, 1, HOLE, 0, 2, 3]);
    assert.deepEqual(r.stats, { chunks: 4, dedupHits: 1, holes: 1, rawChunks: 3, dataBytes: 4 * (1 << 20) + 5004 });
    const file = fs.readFileSync(r.path);
    assert.equal(r.id, crypto.createHash('sha256').update(file).digest('hex'), 'blob id = sha256 of the whole file');
    assert.equal(r.entry.compressedSize, file.length);
    assert.equal(r.entry.features, WRITER_BLOB_FEATURES);
    assert.equal(WRITER_BLOB_FEATURES, BlobFeature.ALIGNED | BlobFeature.CHUNK_INFO_V2 | BlobFeature.INLINED_CHUNK_DIGEST | BlobFeature.HAS_TAR_HEADER | BlobFeature.HAS_TOC | BlobFeature.CAP_TAR_TOC);
    assert.deepEqual(r.uOffsets, [0, 1 << 20, 2 << 20, (2 << 20) + 8192]);
    assert.equal(r.entry.uncompressedSize, (2 << 20) + 8192 + 4096);
    const src = await FileSource.open(r.path);
    try {
      const blob = await DataBlob.open({ ...r.entry, blobIndex: 0 }, src);
      assert.deepEqual(blob.chunks.map((c) => [c.uOffset, c.uSize, c.compressed]), [
        [0, 1 << 20, false], // random: stored raw
        [1 << 20, 1 << 20, true],
        [2 << 20, 5000, false],
        [(2 << 20) + 8192, 4, false],
      ]);
      assert.equal(blob.chunks[1].cOffset, blob.chunks[0].cSize, 'chunk data is contiguous from 0');
      assert.equal(blob.chunks[0].cSize, 1 << 20, 'a raw chunk has cSize = uSize');
      assert.ok((await blob.readChunk(blob.chunks[0])).equals(a));
      assert.ok((await blob.readChunk(blob.chunks[1])).equals(text));
      assert.equal((await blob.readChunk(blob.chunks[3])).toString(), 'tail');
      // every section sits where the ToC says, after its data, with a tar header naming it
      const toc = blob.toc!;
      assert.deepEqual(toc.entries.map((e) => e.name), ['image.blob', 'blob.meta', 'blob.meta.header', 'blob.digest']);
      const dataEnd = blob.chunks[3].cOffset + blob.chunks[3].cSize;
      const ib = toc.entries[0];
      assert.equal(ib.compressedOffset, dataEnd, 'nydus records image.blob at its end');
      assert.equal(ib.compressedSize, dataEnd);
      assert.equal(ib.uncompressedSize, r.entry.uncompressedSize);
      assert.ok(ib.uncompressedDigest.equals(crypto.createHash('sha256').update(file.subarray(0, dataEnd + TAR_BLOCK)).digest()));
      const b = new Bytes(file, 'blob');
      assert.deepEqual(parseTarHeader(b, dataEnd, 'h'), { name: 'image.blob', size: dataEnd });
      assert.equal(r.entry.ciOffset, dataEnd + TAR_BLOCK);
      assert.deepEqual(parseTarHeader(b, r.entry.ciOffset + r.entry.ciCompressedSize + 4096, 'h'), { name: 'blob.meta', size: r.entry.ciCompressedSize + 4096 });
      const dg = toc.entries[3];
      assert.deepEqual(parseTarHeader(b, dg.compressedOffset + dg.compressedSize, 'h'), { name: 'blob.digest', size: 4 * 32 });
      assert.equal(toc.offset, dg.compressedOffset + dg.compressedSize + TAR_BLOCK);
      assert.equal(r.entry.tocSize, 4 * 128 + TAR_BLOCK);
      assert.ok(r.entry.tocDigest.equals(toc.digest));
      for (const e of toc.entries.slice(1)) await readSection(src, e, 'blob');
      assert.equal(r.entry.ciCompressor, Compressor.Zstd);
      assert.equal(blob.header.features, WRITER_BLOB_FEATURES);
      assert.equal(blob.header.ciEntries, 4);
    } finally {
      await src.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('blob writer: the same bytes whether one chunk or many compress at once', async () => {
  const d1 = tmp();
  const d2 = tmp();
  try {
    const a = await writeSample(d1, 1);
    const b = await writeSample(d2, 16);
    assert.equal(a.r.id, b.r.id);
    assert.ok(fs.readFileSync(a.r.path).equals(fs.readFileSync(b.r.path)));
  } finally {
    fs.rmSync(d1, { recursive: true, force: true });
    fs.rmSync(d2, { recursive: true, force: true });
  }
});

test('blob writer: reused chunk buffers never mix chunks (many chunks of many sizes, few in flight)', async () => {
  const dir = tmp();
  try {
    const w = await BlobWriter.create(path.join(dir, 'blob'), { chunkSize: 64 << 10, inflight: 3 });
    const caller = Buffer.alloc(64 << 10); // one buffer, reused by the caller as FileChunker does
    const chunks: Buffer[] = [];
    for (let i = 0; i < 60; i++) {
      const n = 1 + ((i * 7919) % (64 << 10));
      // alternate: random (stored raw), text (compressed), random with a text tail
      const c = i % 3 === 0 ? rand(n, `r${i}`) : i % 3 === 1 ? Buffer.from(`chunk ${i} `.repeat(n)).subarray(0, n) : Buffer.concat([rand(n >> 1, `m${i}`), Buffer.alloc(n - (n >> 1), `${i}`)]);
      chunks.push(c);
      c.copy(caller);
      assert.equal(await w.put(caller.subarray(0, n)), i);
      caller.fill(0xee); // what the writer kept must be its own copy
    }
    const r = (await w.finish())!;
    assert.ok(r.stats.rawChunks > 0 && r.stats.rawChunks < 60, 'both raw and compressed chunks');
    const src = await FileSource.open(r.path);
    try {
      const blob = await DataBlob.open({ ...r.entry, blobIndex: 0 }, src);
      for (let i = 0; i < 60; i++) assert.ok((await blob.readChunk(blob.chunks[i])).equals(chunks[i]), `chunk ${i}`);
    } finally {
      await src.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('blob writer: small chunks compress in batches (by bytes and by count) and each reads back as put', async () => {
  const dir = tmp();
  try {
    const w = await BlobWriter.create(path.join(dir, 'blob'), { chunkSize: 64 << 10, inflight: 2 });
    const caller = Buffer.alloc(64 << 10);
    const chunks: Buffer[] = [];
    // 700 tiny chunks (more than one batch holds by count), then a run that fills batches by bytes, then full chunks
    const sizes = [
      ...Array.from({ length: 700 }, (_, i) => 4 + ((i * 37) % 200)),
      ...Array.from({ length: 40 }, (_, i) => 5000 + i * 1000),
      64 << 10,
      64 << 10,
      5,
    ];
    for (const [i, n] of sizes.entries()) {
      const c = i % 2 ? rand(n, `s${i}`) : Buffer.from(`small chunk ${i} `.repeat(n)).subarray(0, n);
      c.writeUInt32LE(i + 1, 0); // no two alike (none deduplicated), none all zeros (no holes)
      chunks.push(c);
      c.copy(caller);
      assert.equal(await w.put(caller.subarray(0, n)), i);
      caller.fill(0xee);
    }
    const r = (await w.finish())!;
    assert.equal(r.stats.chunks, sizes.length);
    assert.ok(r.stats.rawChunks > 0 && r.stats.rawChunks < sizes.length, 'both raw and compressed chunks');
    const src = await FileSource.open(r.path);
    try {
      const blob = await DataBlob.open({ ...r.entry, blobIndex: 0 }, src);
      let cOffset = 0;
      for (let i = 0; i < sizes.length; i++) {
        const c = blob.chunks[i];
        assert.equal(c.cOffset, cOffset, `chunk ${i} follows the one before`);
        cOffset += c.cSize;
        assert.ok((await blob.readChunk(c)).equals(chunks[i]), `chunk ${i}`);
      }
    } finally {
      await src.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('blob writer: a blob without data is not written; chunker cuts files at chunk boundaries', async () => {
  const dir = tmp();
  try {
    const w = await BlobWriter.create(path.join(dir, 'empty'), { chunkSize: 4096 });
    const ch = new FileChunker(w, 4096);
    for (let i = 0; i < 10; i++) await ch.write(Buffer.alloc(1000));
    assert.deepEqual([...(await ch.end())], [HOLE, HOLE, HOLE]);
    assert.equal(await w.finish(), null);
    assert.equal(fs.existsSync(path.join(dir, 'empty')), false);

    const w2 = await BlobWriter.create(path.join(dir, 'b'), { chunkSize: 4096 });
    const ch2 = new FileChunker(w2, 4096);
    const data = rand(10000, 'f');
    for (let i = 0; i < data.length; i += 333) await ch2.write(data.subarray(i, i + 333));
    assert.deepEqual([...(await ch2.end())], [0, 1, 2]);
    assert.deepEqual([...(await ch2.end())], [], 'next file starts empty');
    const r = (await w2.finish())!;
    assert.deepEqual(r.uOffsets, [0, 4096, 8192]);
    await assert.rejects(BlobWriter.create(path.join(dir, 'c'), { chunkSize: 3000 }), /power of two/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
