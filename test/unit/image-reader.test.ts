// The RAFS v6 reader against real bytes written by upstream nydus-image.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Bootstrap, Compressor, DigestAlgo, deviceTableEnd, deviceTags } from '../../image/rafs/bootstrap';
import { Bytes } from '../../image/bytes';
import { DataBlob, INLINE_DECODE_MAX, readSection } from '../../image/blob/datablob';
import { parseToc } from '../../image/blob/toc';
import { chunksCovering, ChunkInfo, encodeChunkInfosV2, parseChunkInfos } from '../../image/blob/chunkinfo';
import { ErofsImage } from '../../image/erofs/image';
import { superblockChecksum, updateSuperblockChecksum } from '../../image/erofs/superblock';
import { decompress, compress } from '../../image/codec/decompress';
import { FormatError } from '../../image/errors';
import { FIXTURE_BLOB_ID, cutsOf, memorySource, nydusFixtures } from '../support/fixtures';
import { buildSyntheticBlob } from '../support/testblob';

const fx = nydusFixtures();
const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

test('fixture bootstrap: superblock, device table and blob table facts', () => {
  const bs = new Bootstrap(fx.bootstrap());
  const sb = bs.erofs.sb;
  assert.equal(sb.magic, 0xe0f5e1e2);
  assert.ok(sb.featureCompat & 0x40000000, 'RAFS_V6');
  assert.equal(sb.featureIncompat, 0xc);
  assert.equal(sb.extraDevices, 1);
  assert.equal(sb.devtSlotoff, 11);
  assert.deepEqual(bs.devices, [{ tag: FIXTURE_BLOB_ID, blocks: 9, mappedBlkaddr: 512 }]);
  assert.equal(bs.ext.flags, 0x194);
  const e = bs.blobs[0];
  assert.equal(e.blobId, FIXTURE_BLOB_ID);
  assert.equal(e.chunkCount, 2);
  assert.equal(e.chunkSize, 1 << 20);
  assert.equal(e.compressor, Compressor.Zstd);
  assert.equal(e.digester, DigestAlgo.Blake3);
  assert.equal(e.features, 0x70000021);
  assert.equal(e.compressedSize, 14554);
  assert.equal(e.uncompressedSize, 36864);
  assert.equal(e.tocSize, 1024);
  assert.equal(e.ciOffset, 8314);
  assert.equal(e.ciCompressedSize, 32);
  assert.equal(bs.chunkTable().length, 2);
});

test('deviceTags: the blobs a mount asks fscache for, from the image\'s head only; none without a device table', () => {
  const full = new Bytes(fx.bootstrap(), 'fixture');
  const end = deviceTableEnd(full);
  assert.equal(end, 4096, 'the fixture\'s device table (slot 11) lies in its first block');
  assert.deepEqual(deviceTags(new Bytes(fx.bootstrap().subarray(0, end), 'head')), [FIXTURE_BLOB_ID]);
  const buf = Buffer.from(fx.bootstrap());
  buf.writeUInt32LE(buf.readUInt32LE(1024 + 80) & ~0x8, 1024 + 80); // feature_incompat without DEVICE_TABLE
  assert.deepEqual(deviceTags(new Bytes(buf, 'no table')), []);
  assert.throws(() => deviceTags(new Bytes(fx.bootstrap().subarray(0, 1100), 'short')), FormatError);
});

test('fixture tree: lib.rs 16931 bytes and sync_io.rs 13400 bytes, chunk-based on device 1', () => {
  const img = new Bootstrap(fx.bootstrap()).erofs;
  const files = [...img.walk()].map((e) => [e.path, e.inode.size, e.inode.layout]);
  assert.deepEqual(files, [
    ['/', 67, 2],
    ['/lib.rs', 16931, 4],
    ['/sync_io.rs', 13400, 4],
  ]);
  const lib = [...img.walk()][1].inode;
  assert.deepEqual(img.chunkMap(lib), { chunkBits: 20, chunks: [{ deviceId: 1, blkaddr: 0 }] });
});

test('fixture blob: chunk infos, ToC, digests; every chunk decompresses and verifies', async () => {
  const bs = new Bootstrap(fx.bootstrap());
  const blob = await DataBlob.open(bs.blobs[0], memorySource(fx.blob()));
  assert.deepEqual(
    blob.chunks.map((c) => [c.uOffset, c.uSize, c.cOffset, c.cSize]),
    [
      [0, 16931, 0, 4828],
      [20480, 13400, 4828, 2974],
    ],
  );
  assert.deepEqual(blob.toc!.entries.map((e) => e.name), ['image.blob', 'blob.meta', 'blob.meta.header', 'blob.digest']);
  assert.equal(blob.toc!.offset, 13530);
  assert.equal(blob.header.ciEntries, 2);
  const data = await Promise.all(blob.chunks.map((c) => blob.readChunk(c)));
  assert.equal(data[0].length, 16931);
  assert.equal(data[1].length, 13400);
  assert.match(data[0].toString('utf8', 0, 20), /^\/\/ Copyright/);
  // the chunk table of the bootstrap carries the same digests as the blob
  assert.deepEqual(bs.chunkTableDigests(0), blob.digests);
});

test('small chunks decode on the calling thread, bigger ones on the threadpool; both verify and refuse a bent chunk', async () => {
  const sizes = [4096, 30_001, INLINE_DECODE_MAX, INLINE_DECODE_MAX + 1, 1 << 20];
  const b = await buildSyntheticBlob({ chunkSizes: sizes, seed: 'inline-decode' });
  const blob = await DataBlob.open(b.entry, memorySource(b.data));
  for (const c of blob.chunks) {
    const want = b.uncompressed.subarray(c.uOffset, c.uOffset + c.uSize);
    const bytes = b.data.subarray(c.cOffset, c.cOffset + c.cSize);
    // whole, and in pieces (what asParts gives a small chunk is one piece; cutsOf also cuts it small)
    for (const [how, compressed] of [['whole', bytes] as [string, Buffer], ...cutsOf(bytes)]) {
      const dst = Buffer.alloc(c.uSize);
      const p = blob.decodeChunk(c, compressed, dst);
      // inline: written before decodeChunk returns (whether a pool decode is done by now is a race: not checked)
      if (c.uSize <= INLINE_DECODE_MAX) assert.ok(dst.equals(want), `chunk of ${c.uSize}, ${how}: decoded before it returned`);
      await p;
      assert.ok(dst.equals(want), `chunk of ${c.uSize}, ${how}`);
    }
    const bent = Buffer.from(bytes);
    bent[bent.length >> 1] ^= 0x20;
    await assert.rejects(blob.decodeChunk(c, bent, Buffer.alloc(c.uSize)), FormatError, `bent chunk of ${c.uSize}`);
  }
});

test('chunk lookup: the kernel READ(0, 4096) maps to chunk 0; ranges in gaps and past the end', async () => {
  const bs = new Bootstrap(fx.bootstrap());
  const blob = await DataBlob.open(bs.blobs[0], memorySource(fx.blob()));
  const idx = (off: number, len: number) => blob.chunksFor(off, len).map((c) => c.index);
  assert.deepEqual(idx(0, 4096), [0]);
  assert.deepEqual(idx(16384, 4096), [0], 'the zero tail up to the 4 KiB boundary belongs to chunk 0');
  assert.deepEqual(idx(20480, 1), [1]);
  assert.deepEqual(idx(0, 36864), [0, 1]);
  assert.deepEqual(idx(36864, 4096), []);
  assert.deepEqual(idx(0, 0), []);
});

test('chunk lookup agrees with a linear scan on 10,000 random ranges', () => {
  const chunks: ChunkInfo[] = [];
  let u = 0;
  for (let i = 0; i < 500; i++) {
    const size = 1 + Math.floor(Math.random() * 300_000);
    chunks.push({ index: i, uOffset: u, uSize: size, cOffset: 0, cSize: 1, compressed: true, flags: 0 });
    u += Math.ceil(size / 4096) * 4096 + (Math.random() < 0.1 ? 8192 : 0);
  }
  const scan = (off: number, len: number) =>
    chunks.filter((c) => len > 0 && c.uOffset < off + len && Math.ceil((c.uOffset + c.uSize) / 4096) * 4096 > off).map((c) => c.index);
  for (let i = 0; i < 10_000; i++) {
    const off = Math.floor(Math.random() * (u + 10000));
    const len = Math.floor(Math.random() * 2_000_000);
    assert.deepEqual(chunksCovering(chunks, off, len).map((c) => c.index), scan(off, len), `[${off}, +${len})`);
  }
});

test('chunk infos v2 round-trip through the encoder', () => {
  const chunks = [
    { uOffset: 0, uSize: 1 << 20, cOffset: 0, cSize: 12345, compressed: true, flags: 1 },
    { uOffset: 1 << 20, uSize: 100, cOffset: 12345, cSize: 100, compressed: false, flags: 0 },
  ];
  const parsed = parseChunkInfos(encodeChunkInfosV2(chunks), 0x4, 2, 'ci');
  assert.deepEqual(parsed, chunks.map((c, i) => ({ index: i, ...c })));
});

test('ToC fixture: offset 9010, size 1024, its sha256, four entries, sections verify', async () => {
  const b = fx.tocBlob();
  const toc = parseToc(b.subarray(b.length - 1024), b.length, 'toc fixture');
  assert.equal(toc.offset, 9010);
  assert.equal(toc.size, 1024);
  assert.equal(sha256(b.subarray(9010, 10034)), '4fdfbb36ef74a3c63a28e2abafa54044c7594155beb6ddad9f36825cfe58286c');
  assert.equal(toc.digest.toString('hex'), '4fdfbb36ef74a3c63a28e2abafa54044c7594155beb6ddad9f36825cfe58286c');
  assert.deepEqual(toc.entries.map((e) => e.name).sort(), ['blob.meta', 'blob.meta.header', 'image.blob', 'image.boot']);
  assert.equal(toc.entries.find((e) => e.name === 'blob.meta')!.uncompressedSize, 0x30);
  assert.equal(toc.entries.find((e) => e.name === 'blob.meta.header')!.uncompressedSize, 0x1000);
  // the inlined bootstrap (zstd) names this blob's chunks; the chunk table supplies their digests
  const boot = await readSection(memorySource(b), toc.entries.find((e) => e.name === 'image.boot')!, 'toc fixture');
  const bs = new Bootstrap(boot, 'inlined bootstrap');
  const blob = await DataBlob.open(bs.blobs[0], memorySource(b), bs.chunkTableDigests(0));
  assert.deepEqual([...bs.erofs.walk()].map((e) => e.path), ['/', '/error.rs', '/lib.rs', '/logger.rs']);
  for (const c of blob.chunks) await blob.readChunk(c);
});

test('zstd fixture decompresses to the ToC blob', () => {
  const b = fx.tocBlob();
  assert.ok(decompress(Compressor.Zstd, fx.tocZstd(), b.length, 'zstd fixture').equals(b));
});

test('lz4, gzip and none codecs round-trip; wrong sizes are errors', () => {
  const data = crypto.randomBytes(5000);
  const text = Buffer.from('abc'.repeat(3000));
  for (const algo of [Compressor.None, Compressor.Lz4Block, Compressor.Gzip, Compressor.Zstd]) {
    for (const d of [data, text]) assert.ok(decompress(algo, compress(algo, d), d.length, 't').equals(d), Compressor[algo]);
    assert.throws(() => decompress(algo, compress(algo, text), text.length + 1, 't'), FormatError);
  }
  assert.throws(() => decompress(Compressor.Zstd, Buffer.from('not zstd'), 10, 'garbage'), /garbage: Zstd data does not decompress/);
});

test('superblock checksum: verified when SB_CHKSUM is set, and recomputed after edits', () => {
  const buf = Buffer.from(fx.bootstrap());
  buf.writeUInt32LE(buf.readUInt32LE(1024 + 8) | 1, 1024 + 8); // claim SB_CHKSUM
  assert.throws(() => new ErofsImage(buf), /superblock.checksum 0x0 does not match crc32c/);
  updateSuperblockChecksum(buf);
  assert.equal(buf.readUInt32LE(1028), superblockChecksum(buf));
  new ErofsImage(buf);
  buf[1408] ^= 1; // a device tag byte, covered by the checksum
  assert.throws(() => new ErofsImage(buf), /does not match crc32c/);
});

test('corrupt inputs give FormatErrors that name the structure', async () => {
  const good = fx.bootstrap();
  const bad = (edit: (b: Buffer) => void) => {
    const b = Buffer.from(good);
    edit(b);
    return b;
  };
  const cases: [Buffer, RegExp][] = [
    [good.subarray(0, 1100), /superblock: bytes \[1024, 1152\)/],
    [bad((b) => b.writeUInt32LE(0x12345678, 1024)), /superblock.magic is 0x12345678/],
    [bad((b) => b.writeUInt32LE(0xffff0, 1024 + 80)), /feature_incompat has unsupported bits/],
    [bad((b) => b.writeUInt32LE(1 << 30, 1152 + 8)), /blob table: bytes/],
    [bad((b) => b.writeUInt32LE(100, 1152 + 16)), /blob table size 100 is not a multiple/],
    [bad((b) => b.write('zz', 4096)), /blob_id .* is not 64 hex/],
    [bad((b) => b.writeUInt16LE(60000, 1024 + 14)), /inode 60000/],
  ];
  for (const [buf, re] of cases) {
    assert.throws(
      () => {
        const bs = new Bootstrap(buf);
        [...bs.erofs.walk()];
      },
      (e: unknown) => e instanceof FormatError && re.test(e.message),
      re.source,
    );
  }
  const bs = new Bootstrap(good);
  const blob = fx.blob();
  const flipped = Buffer.from(blob);
  flipped[100] ^= 0xff; // inside chunk 0's compressed bytes
  const b2 = await DataBlob.open(bs.blobs[0], memorySource(flipped));
  await assert.rejects(b2.readChunk(b2.chunks[0]), (e: unknown) => e instanceof FormatError && /chunk 0: (digest mismatch|Zstd data)/.test(e.message));
  await b2.readChunk(b2.chunks[1]);
  await assert.rejects(DataBlob.open(bs.blobs[0], memorySource(blob.subarray(0, 9000))), FormatError);
  const badDigest = Buffer.from(blob);
  badDigest[12954] ^= 1;
  await assert.rejects(DataBlob.open(bs.blobs[0], memorySource(badDigest)), /ToC digest|section blob.digest: sha256/);
});
