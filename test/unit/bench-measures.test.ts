// The measures the benchmarks' failover figures rest on: percentiles by
// nearest rank, the stall per kill (the longest read in flight at a kill or
// begun within 1 s after it) and its control window before each kill.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { percentile } from '../../bench/stats';
import { controlStalls, worstRead, type Call } from '../../bench/failover';

test('percentile: nearest rank, so p99 of 100 values is the 99th smallest', () => {
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted on purpose
  assert.equal(percentile(xs, 99), 99);
  assert.equal(percentile(xs, 50), 50);
  assert.equal(percentile(xs, 100), 100);
  assert.equal(percentile(xs, 0), 1);
  // of 101 values p99 is the largest but one, rounded up: the 100th
  assert.equal(percentile([...xs, 101], 99), 100);
  assert.equal(percentile([7], 99), 7);
  assert.equal(percentile([], 50), 0);
  assert.deepEqual(xs.slice(0, 2), [100, 99], 'the input is left as it was');
});

test('worstRead: the longest read in flight at the kill or begun within 1 s, measured from the kill', () => {
  const k = 10_000;
  const calls: Call[] = [
    [9_000, 9_500], // over before the kill: not counted
    [9_900, 10_120], // in flight at the kill: 120 ms of it after
    [10_200, 10_300], // 100 ms
    [10_900, 11_200], // began within the second: 300 ms, the worst
    [11_100, 13_000], // began after the second: not counted
  ];
  assert.deepEqual(worstRead(k, calls), { ms: 300, beganAfterKillMs: 900 });
  assert.deepEqual(worstRead(k, [[9_000, 9_500]]), { ms: 0, beganAfterKillMs: 0 }, 'no read near the kill');
});

test('controlStalls: the second before each kill, only where the reader read and no kill fell', () => {
  // a read every 10 ms of 5 ms, one of 80 ms at 1_000, from 0 to 10_000
  const calls: Call[] = [];
  for (let t = 0; t < 10_000; t += 10) calls.push(t === 1_000 ? [t, t + 80] : [t, t + 5]);
  // kill at 2_000: its window is 900..1_900 and holds the 80 ms read; kill at 2_500: its window holds the kill
  // at 2_000, so it is left out; kill at 9_000: 5 ms; kill at 20_000: the reader had ended, left out
  assert.deepEqual(controlStalls([2_000, 2_500, 9_000, 20_000], calls), [80, 5]);
});
