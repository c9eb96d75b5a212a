// The addon's chunk decoding (native/src/chunk.cc): blake3 against the BLAKE3
// project's published test vectors (input byte i is i % 251), and
// decodeChunk on zstd, lz4_block and stored chunks: good
// chunks fill dst exactly, every corruption comes back as a reason, never as
// a good result, and bad arguments throw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { blake3, decodeChunk } from '../../native';
import { compress } from '../../image/codec/decompress';
import { Compressor, DigestAlgo } from '../../image/rafs/bootstrap';

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

for (const [name, comp, z] of cases) {
  for (const algo of [DigestAlgo.Blake3, DigestAlgo.Sha256]) {
    const want = algo === DigestAlgo.Blake3 ? blake3(data) : crypto.createHash('sha256').update(data).digest();
    test(`${name}, ${DigestAlgo[algo]}: good, corrupt, wrong size, wrong digest`, async () => {
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

test('decodeChunk checks its arguments', () => {
  const d = Buffer.alloc(10);
  assert.throws(() => decodeChunk(Compressor.Gzip, d, d, 0, Buffer.alloc(32)), RangeError);
  assert.throws(() => decodeChunk(Compressor.Zstd, d, d, 0, Buffer.alloc(31)), RangeError);
  assert.throws(() => decodeChunk(Compressor.Zstd, d, d, 2, Buffer.alloc(32)), RangeError);
  assert.throws(() => decodeChunk(Compressor.Zstd, 'x' as unknown as Buffer, d, 0, Buffer.alloc(32)), TypeError);
});

test('many decodes in flight at once all come back right', async () => {
  const z = compress(Compressor.Zstd, data);
  const want = blake3(data);
  const outs = Array.from({ length: 64 }, () => Buffer.alloc(data.length));
  const why = await Promise.all(outs.map((o) => decodeChunk(Compressor.Zstd, z, o, DigestAlgo.Blake3, want)));
  assert.deepEqual(new Set(why), new Set(['']));
  for (const o of outs) assert.ok(o.equals(data));
});
