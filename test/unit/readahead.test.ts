// Sequential streams in READs and the windows fetched ahead of them (content/readahead.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReadaheadStreams, aheadParts, windowParts } from '../../content/readahead';

const M = 1 << 20;
const K = 1024;
const opts = { initial: 2 * M, max: 8 * M, streams: 2, gap: 2 * M };

test('a lone READ starts a stream but fetches nothing ahead', () => {
  const r = new ReadaheadStreams(100 * M, opts);
  assert.equal(r.observe(10 * M, 10 * M + 128 * K), null);
  assert.equal(r.observe(50 * M, 50 * M + 128 * K), null, 'far away: another stream');
});

test('a stream that keeps coming gets windows that double up to the bound, each where the last ended', () => {
  const r = new ReadaheadStreams(100 * M, opts);
  assert.equal(r.observe(0, 1 * M), null);
  // the kernel's next READ starts where the filled bytes end
  assert.deepEqual(r.observe(1 * M, 1 * M + 128 * K), { start: 1 * M + 128 * K, end: 3 * M + 128 * K });
  // READs inside the window fetched ahead: the next window once the reader reaches it
  assert.equal(r.observe(1 * M + 128 * K - 4 * K, 1 * M + 128 * K), null, 'before the trigger: nothing more');
  assert.deepEqual(r.observe(1 * M + 128 * K, 1 * M + 256 * K), { start: 3 * M + 128 * K, end: 7 * M + 128 * K });
  assert.deepEqual(r.observe(3 * M + 128 * K, 3 * M + 256 * K), { start: 7 * M + 128 * K, end: 15 * M + 128 * K });
  assert.deepEqual(r.observe(7 * M + 128 * K, 7 * M + 256 * K), { start: 15 * M + 128 * K, end: 23 * M + 128 * K }, 'bounded at max');
});

test('a READ past the end of a widened fill still continues its stream; one past the gap does not', () => {
  const r = new ReadaheadStreams(100 * M, opts);
  r.observe(0, 128 * K); // filled to 1 MiB and more: the next READ starts there
  assert.deepEqual(r.observe(M + 256 * K, M + 384 * K), { start: M + 384 * K, end: 3 * M + 384 * K });
  const q = new ReadaheadStreams(100 * M, opts);
  q.observe(0, 128 * K);
  assert.equal(q.observe(3 * M, 3 * M + 128 * K), null, 'beyond the gap: a stream of its own');
});

test('windows stop at the blob end', () => {
  const r = new ReadaheadStreams(3 * M, opts);
  r.observe(0, M);
  assert.deepEqual(r.observe(M, 2 * M), { start: 2 * M, end: 3 * M });
  assert.equal(r.observe(2 * M, 3 * M), null, 'nothing left to fetch');
});

test('READs behind a stream or far ahead of it ask for nothing; interleaved streams are told apart', () => {
  const r = new ReadaheadStreams(1000 * M, opts);
  r.observe(0, M);
  r.observe(500 * M, 501 * M);
  assert.deepEqual(r.observe(M, 2 * M), { start: 2 * M, end: 4 * M });
  assert.deepEqual(r.observe(501 * M, 502 * M), { start: 502 * M, end: 504 * M });
  assert.equal(r.observe(0, 4 * K), null, 'a READ behind the trigger: part of the stream, no new window');
  assert.deepEqual(r.observe(2 * M, 3 * M), { start: 4 * M, end: 8 * M });
});

test('the least recently used stream is forgotten beyond the bound', () => {
  const r = new ReadaheadStreams(1000 * M, opts);
  r.observe(0, M); // A
  r.observe(100 * M, 101 * M); // B
  r.observe(0, 4 * K); // A used again
  r.observe(200 * M, 201 * M); // C: B goes
  assert.deepEqual(r.observe(M, 2 * M), { start: 2 * M, end: 4 * M }, 'A was kept');
  assert.equal(r.observe(101 * M, 102 * M), null, 'B was forgotten: this starts a new stream');
});

test('max 0 turns readahead off', () => {
  const r = new ReadaheadStreams(100 * M, { ...opts, max: 0 });
  r.observe(0, M);
  assert.equal(r.observe(M, 2 * M), null);
});

test('windowParts: cut in order, the last part short', () => {
  assert.deepEqual(windowParts({ start: M, end: 10 * M + 5 }, 4 * M), [
    { start: M, end: 5 * M }, { start: 5 * M, end: 9 * M }, { start: 9 * M, end: 10 * M + 5 },
  ]);
  assert.deepEqual(windowParts({ start: 0, end: 0 }, 4 * M), []);
});

test('aheadParts: a remote blob\'s window is one fill, a local one\'s 4 MiB parts', () => {
  const win = { start: M, end: 10 * M };
  assert.deepEqual(aheadParts(win, true), [win]);
  assert.deepEqual(aheadParts(win, false), [{ start: M, end: 5 * M }, { start: 5 * M, end: 9 * M }, { start: 9 * M, end: 10 * M }]);
  assert.deepEqual(aheadParts({ start: M, end: M }, true), []);
});

test('seed: a long run of present bytes is a reader\'s trail; a READ at its end gets its first window at once', () => {
  const r = new ReadaheadStreams(100 * M, opts);
  r.seed([[0, 30 * M], [40 * M, M], [60 * M, 40 * M]]);
  // the successor's first READ where the trail ends: without the seed a lone READ, nothing ahead
  assert.deepEqual(r.observe(30 * M, 30 * M + 128 * K), { start: 30 * M + 128 * K, end: 32 * M + 128 * K });
  assert.equal(r.observe(41 * M, 41 * M + 128 * K), null, 'a short run (random reads) is no trail');
  const fresh = new ReadaheadStreams(100 * M, opts);
  assert.equal(fresh.observe(30 * M, 30 * M + 128 * K), null, 'unseeded: a lone READ');
});

test('seed: runs that reach the blob end are no trail, the longest are kept up to the bound, and max 0 seeds none', () => {
  const r = new ReadaheadStreams(100 * M, opts); // streams: 2
  r.seed([[0, 3 * M], [10 * M, 5 * M], [20 * M, 4 * M], [90 * M, 10 * M]]);
  assert.ok(r.observe(15 * M, 15 * M + K), 'the longest');
  assert.ok(r.observe(24 * M, 24 * M + K), 'the second longest');
  assert.equal(r.observe(3 * M, 3 * M + K), null, 'beyond the bound: not seeded');
  const off = new ReadaheadStreams(100 * M, { ...opts, max: 0 });
  off.seed([[0, 30 * M]]);
  assert.equal(off.observe(30 * M, 30 * M + K), null);
});
