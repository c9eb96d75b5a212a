// The addon's chunk decoding (native/src/chunk.cc): blake3 against the BLAKE3
// project's published test vectors (input byte i is i % 251), and
// decodeChunk on zstd, lz4_block and stored chunks, whole or in pieces (a
// response body as the socket delivered it), on the threadpool and inline
// (decodeChunkSync, for small chunks): good chunks fill dst exactly, every
// corruption comes back as a reason, never as a good result, and bad
// arguments throw. And the converter's side: compressChunks, a batch of
// chunks in one job, each frame decoding back to its chunk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { blake3, compressChunks, decodeChunk as decodeOnPool, decodeChunkSync } from '../../native';
import { compress } from '../../image/codec/decompress';
import { Compressor, DigestAlgo } from '../../image/rafs/bootstrap';
import { asParts, cutsOf } from '../support/fixtures';

const pattern = (len: number) => Buffer.from(Array.from({ length: len }, (_, i) => i % 251));

test('blake3 matches the published test vectors and multi-chunk inputs', () => {
  const vectors: Array<[number, string]> = [
    [0, 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262'],
    [1, '2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213'],
    [1023, '10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11'],
    [1024, '42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7'],
    [1025, 'd00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444'],
    [8193, 'bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b'],
    // 1 MiB and an odd size past it (hash-wasm's WebAssembly build agreed on 2026-12-05): the SIMD paths
    [1 << 20, '74cb441fd087764ca9c3694da742ebe30cbeb3060a17009ca81825c7a8d10343'],
    [(1 << 20) + 7, '89541f1047f7a56806fe16efda4c2cdc45f141c838e413019f0124189fa55232'],
  ];
  for (const [len, hex] of vectors) assert.equal(blake3(pattern(len)).toString('hex'), hex, `length ${len}`);
  // a view into a larger buffer hashes only its own bytes
  const big = pattern(4096);
  assert.ok(blake3(big.subarray(0, 1023)).equals(blake3(pattern(1023))));
});

const data = Buffer.concat([pattern(100_000), crypto.randomBytes(31_072)]);
const cases: Array<[string, number, Buffer]> = [
  ['zstd', Compressor.Zstd, compress(Compressor.Zstd, data)],
  ['lz4_block', Compressor.Lz4Block, compress(Compressor.Lz4Block, data)],
  ['stored', Compressor.None, data],
];

type Decode = typeof decodeOnPool;
/** the same decoder on the threadpool and on the calling thread: every case runs through both */
const decoders: Array<[string, Decode]> = [
  ['threadpool', decodeOnPool],
  ['inline', (...a: Parameters<Decode>) => Promise.resolve(decodeChunkSync(...a))],
];

for (const [where, decodeChunk] of decoders) {
  for (const [name, comp, z] of cases) {
    for (const algo of [DigestAlgo.Blake3, DigestAlgo.Sha256]) {
      const want = algo === DigestAlgo.Blake3 ? blake3(data) : crypto.createHash('sha256').update(data).digest();
      test(`${name}, ${DigestAlgo[algo]}, ${where}: good, corrupt, wrong size, wrong digest`, async () => {
        const dst = Buffer.alloc(data.length);
        assert.equal(await decodeChunk(comp, z, dst, algo, want), '');
        assert.ok(dst.equals(data));

        const wrongDigest = Buffer.from(want);
        wrongDigest[7] ^= 1;
        assert.match(await decodeChunk(comp, z, Buffer.alloc(data.length), algo, wrongDigest), /^digest mismatch: got [0-9a-f]{64}, want [0-9a-f]{64}$/);

        // one flipped byte in the middle of the compressed bytes: never a good result
        const bent = Buffer.from(z);
        bent[bent.length >> 1] ^= 0x55;
        assert.notEqual(await decodeChunk(comp, bent, Buffer.alloc(data.length), algo, want), '');

        // a dst of another size than the chunk inflates to
        assert.match(await decodeChunk(comp, z, Buffer.alloc(data.length + 1), algo, want), /wrong size|does not decompress|stored chunk is/);
        assert.notEqual(await decodeChunk(comp, z, Buffer.alloc(data.length - 1), algo, want), '');
        // truncated input
        assert.notEqual(await decodeChunk(comp, z.subarray(0, z.length - 3), Buffer.alloc(data.length), algo, want), '');
      });
    }
  }

  for (const [name, comp, z] of cases) {
    const want = blake3(data);
    test(`${name} in pieces, ${where}: good, corrupt, wrong size, truncated, too long`, async () => {
      for (const [how, parts] of cutsOf(z)) {
        const dst = Buffer.alloc(data.length);
        assert.equal(await decodeChunk(comp, parts, dst, DigestAlgo.Blake3, want), '', how);
        assert.ok(dst.equals(data), how);

        const bent = Buffer.from(z);
        bent[bent.length >> 1] ^= 0x55;
        assert.notEqual(await decodeChunk(comp, cutsOf(bent).find(([h]) => h === how)![1], Buffer.alloc(data.length), DigestAlgo.Blake3, want), '', how);
        assert.notEqual(await decodeChunk(comp, parts, Buffer.alloc(data.length + 1), DigestAlgo.Blake3, want), '', `${how}: dst too long`);
        assert.notEqual(await decodeChunk(comp, parts, Buffer.alloc(data.length - 1), DigestAlgo.Blake3, want), '', `${how}: dst too short`);
        const short = cutsOf(z.subarray(0, z.length - 3)).find(([h]) => h === how)![1];
        assert.notEqual(await decodeChunk(comp, short, Buffer.alloc(data.length), DigestAlgo.Blake3, want), '', `${how}: truncated`);
        assert.notEqual(await decodeChunk(comp, [...parts, Buffer.from('xyz')], Buffer.alloc(data.length), DigestAlgo.Blake3, want), '', `${how}: bytes after the chunk`);
        // and after each failure, the thread's decoder still decodes a good chunk right
        const again = Buffer.alloc(data.length);
        assert.equal(await decodeChunk(comp, parts, again, DigestAlgo.Blake3, want), '', `${how}: after failures`);
        assert.ok(again.equals(data), how);
      }
    });
  }
}

const decodeChunk = decodeOnPool;

test('decodeChunk and decodeChunkSync check their arguments', () => {
  const d = Buffer.alloc(10);
  assert.throws(() => decodeChunk(Compressor.Gzip, d, d, 0, Buffer.alloc(32)), RangeError);
  assert.throws(() => decodeChunk(Compressor.Zstd, d, d, 0, Buffer.alloc(31)), RangeError);
  assert.throws(() => decodeChunk(Compressor.Zstd, d, d, 2, Buffer.alloc(32)), RangeError);
  assert.throws(() => decodeChunk(Compressor.Zstd, 'x' as unknown as Buffer, d, 0, Buffer.alloc(32)), TypeError);
  assert.throws(() => decodeChunk(Compressor.Zstd, [d, 'x' as unknown as Buffer], d, 0, Buffer.alloc(32)), TypeError);
  assert.throws(() => decodeChunkSync(Compressor.Gzip, d, d, 0, Buffer.alloc(32)), RangeError);
  assert.throws(() => decodeChunkSync(Compressor.Zstd, d, d, 0, Buffer.alloc(31)), RangeError);
  assert.throws(() => decodeChunkSync(Compressor.Zstd, d, d, 2, Buffer.alloc(32)), RangeError);
  assert.throws(() => decodeChunkSync(Compressor.Zstd, 'x' as unknown as Buffer, d, 0, Buffer.alloc(32)), TypeError);
  assert.throws(() => decodeChunkSync(Compressor.Zstd, [d, 'x' as unknown as Buffer], d, 0, Buffer.alloc(32)), TypeError);
});

test('many decodes in flight at once all come back right', async () => {
  const z = compress(Compressor.Zstd, data);
  const want = blake3(data);
  const outs = Array.from({ length: 64 }, () => Buffer.alloc(data.length));
  // whole and in pieces, interleaved on the pool's threads
  const why = await Promise.all(outs.map((o, i) => decodeChunk(Compressor.Zstd, i % 2 ? asParts(z) : z, o, DigestAlgo.Blake3, want)));
  assert.deepEqual(new Set(why), new Set(['']));
  for (const o of outs) assert.ok(o.equals(data));
});

test('compressChunks: a batch of chunks back to back, one frame each at its chunk\'s offset; what does not shrink gets 0', async () => {
  const chunks = [
    Buffer.from('compressible text '.repeat(3000)),
    crypto.randomBytes(5000), // does not shrink: stored raw
    Buffer.from('x'),
    pattern(70000),
    Buffer.alloc(4096, 7),
  ];
  const src = Buffer.concat([...chunks, Buffer.alloc(100, 0xaa)]); // room left over: not part of any chunk
  const dst = Buffer.alloc(src.length, 0xee);
  const sizes = new Uint32Array(chunks.length);
  await compressChunks(src, Uint32Array.from(chunks.map((c) => c.length)), dst, sizes, 3);
  let off = 0;
  chunks.forEach((c, i) => {
    if (i === 1 || i === 2) assert.equal(sizes[i], 0, `chunk ${i} does not shrink`);
    else assert.ok(sizes[i] > 0 && sizes[i] < c.length, `chunk ${i} shrinks`);
    off += c.length;
  });
  off = 0;
  for (let i = 0; i < chunks.length; i++) {
    if (sizes[i]) {
      const out = Buffer.alloc(chunks[i].length);
      assert.equal(await decodeChunk(Compressor.Zstd, dst.subarray(off, off + sizes[i]), out, DigestAlgo.Blake3, blake3(chunks[i])), '', `chunk ${i}`);
      assert.ok(out.equals(chunks[i]));
    }
    off += chunks[i].length;
  }
  // a batch of one is the same frame as that chunk compressed in a batch of many
  const one = Buffer.alloc(chunks[3].length);
  const oneSize = new Uint32Array(1);
  await compressChunks(chunks[3], Uint32Array.of(chunks[3].length), one, oneSize, 3);
  const at = chunks[0].length + chunks[1].length + chunks[2].length;
  assert.ok(one.subarray(0, oneSize[0]).equals(dst.subarray(at, at + sizes[3])));
});

test('compressChunks checks its arguments', () => {
  const b = Buffer.alloc(10);
  const sizes = new Uint32Array(2);
  assert.throws(() => compressChunks(b, Uint32Array.of(6, 5), b, sizes, 3), RangeError, 'lengths past src');
  assert.throws(() => compressChunks(b, Uint32Array.of(5, 5), Buffer.alloc(9), sizes, 3), RangeError, 'lengths past dst');
  assert.throws(() => compressChunks(b, Uint32Array.of(5, 5), b, new Uint32Array(1), 3), RangeError, 'sizes too short');
  assert.throws(() => compressChunks(b, [5, 5] as unknown as Uint32Array, b, sizes, 3), TypeError);
  assert.throws(() => compressChunks(b, Uint32Array.of(5, 5), b, new Int32Array(2) as unknown as Uint32Array, 3), TypeError);
  assert.throws(() => compressChunks(b, Uint32Array.of(5, 5), b, sizes, 1000), RangeError);
});
