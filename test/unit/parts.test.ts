// sliceParts (content/remote/parts.ts): a chunk's bytes as views of a
// response body's pieces, checked against slicing the joined buffer at every
// boundary case; nothing is copied.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { sliceParts } from '../../content/remote/parts';
import { asParts } from '../support/fixtures';

test('every slice of a body in pieces equals the slice of the joined body', () => {
  const body = crypto.randomBytes(300_000);
  const parts = asParts(body);
  assert.ok(Buffer.concat(parts).equals(body));
  const edges = [0, 1, 65535, 65536, 65537, 81920, 81921, 121921, body.length - 1, body.length];
  for (const off of edges) {
    for (const end of edges) {
      if (end < off) continue;
      const got = sliceParts(parts, off, end - off);
      assert.ok(Buffer.concat(got).equals(body.subarray(off, end)), `[${off}, ${end})`);
      assert.ok(got.every((p) => p.length > 0), 'no empty views');
      assert.ok(got.every((p) => p.buffer === body.buffer), 'views of the body, not copies');
    }
  }
});

test('a slice beyond the bytes given is short, as subarray is; a bad one throws', () => {
  const parts = asParts(Buffer.alloc(1000));
  assert.equal(Buffer.concat(sliceParts(parts, 900, 101)).length, 100);
  assert.deepEqual(sliceParts(parts, 1000, 5), []);
  assert.throws(() => sliceParts(parts, -1, 10), RangeError);
  assert.throws(() => sliceParts(parts, 0, 1.5), RangeError);
  assert.deepEqual(sliceParts(parts, 1000, 0), []);
});
