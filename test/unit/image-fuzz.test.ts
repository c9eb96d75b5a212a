// Mutated and truncated bootstraps and blobs: every outcome is a result or a
// FormatError, never another exception, a crash or a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { DataBlob } from '../../image/blob/datablob';
import { parseToc } from '../../image/blob/toc';
import { FormatError } from '../../image/errors';
import { describeBootstrap } from '../../image/inspect/inspect';
import { memorySource, nydusFixtures } from '../support/fixtures';

const fx = nydusFixtures();
const ITER = Number(process.env.FUZZ_ITER ?? 3000);

/** A tiny deterministic PRNG, so a failure names a reproducible seed. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

function mutate(src: Buffer, r: () => number, hot: [number, number][]): Buffer {
  const b = Buffer.from(src);
  const kind = r();
  if (kind < 0.15) return b.subarray(0, Math.floor(r() * b.length));
  const n = 1 + Math.floor(r() * 8);
  for (let i = 0; i < n; i++) {
    // mostly hit the structures, sometimes anywhere
    const [lo, hi] = r() < 0.8 ? hot[Math.floor(r() * hot.length)] : [0, b.length];
    const at = lo + Math.floor(r() * (hi - lo));
    if (at >= b.length) continue;
    const v = r();
    b[at] = v < 0.3 ? 0xff : v < 0.5 ? 0 : Math.floor(r() * 256);
  }
  return b;
}

const expectFormatErrorOnly = (seed: number, e: unknown) => {
  if (!(e instanceof FormatError)) {
    assert.fail(`seed ${seed}: ${(e as Error)?.stack ?? e}`);
  }
};

test(`fuzz: ${ITER} mutated bootstraps`, () => {
  const good = fx.bootstrap();
  // superblock, ext superblock, device slots, blob table, chunk table, inodes/dirs
  const hot: [number, number][] = [[1024, 1152], [1152, 1216], [1408, 1536], [4096, 4352], [16384, 16544], [8192, 12288]];
  let errors = 0;
  for (let seed = 1; seed <= ITER; seed++) {
    const buf = mutate(good, rng(seed), hot);
    try {
      const r = describeBootstrap('fuzz', buf);
      assert.ok(r.tree.length >= 1);
      new Bootstrap(buf).chunkTable();
    } catch (e) {
      expectFormatErrorOnly(seed, e);
      errors++;
    }
  }
  assert.ok(errors > ITER / 10, `most mutations should be detected (${errors})`);
});

test(`fuzz: ${ITER} mutated and truncated blobs`, async () => {
  const bs = new Bootstrap(fx.bootstrap());
  const good = fx.blob();
  const hot: [number, number][] = [[0, 7802], [8314, 8346], [8346, 8400], [12400, 12460], [12954, 13018], [13530, 14554]];
  let errors = 0;
  for (let seed = 1; seed <= ITER; seed++) {
    const buf = mutate(good, rng(seed), hot);
    try {
      const blob = await DataBlob.open(bs.blobs[0], memorySource(buf));
      for (const c of blob.chunks) {
        const data = await blob.readChunk(c);
        // whatever survived the mutation must be the original bytes: digests guard them
        const orig = await (await DataBlob.open(bs.blobs[0], memorySource(good))).readChunk(c);
        assert.ok(data.equals(orig), `seed ${seed}: chunk ${c.index} returned wrong bytes`);
      }
    } catch (e) {
      expectFormatErrorOnly(seed, e);
      errors++;
    }
  }
  assert.ok(errors > 0);
});

test('fuzz: ToC tails of every length', () => {
  const b = fx.tocBlob();
  for (let n = 0; n <= 1100; n++) {
    try {
      parseToc(b.subarray(b.length - n), b.length, 'toc');
    } catch (e) {
      expectFormatErrorOnly(n, e);
    }
  }
});
