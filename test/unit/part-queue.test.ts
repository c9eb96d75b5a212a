import test from 'node:test';
import assert from 'node:assert/strict';
import { PartQueue } from '../../content/part-queue';

test('parts run in the order asked, at most atOnce at a time; each settles as its fill does', async () => {
  const q = new PartQueue(2);
  const started: number[] = [];
  const gates: Array<() => void> = [];
  const results = [0, 1, 2, 3].map((i) => q.run(async () => {
    started.push(i);
    await new Promise<void>((r) => (gates[i] = r));
    if (i === 2) throw new Error('part 2 failed');
    return i * 10;
  }));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(started, [0, 1], 'two at once');
  assert.equal(q.running, 2);
  assert.equal(q.waiting, 2);
  gates[1]();
  assert.equal(await results[1], 10);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(started, [0, 1, 2], 'the next in order takes the freed place');
  gates[2]();
  await assert.rejects(results[2], /part 2 failed/);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(started, [0, 1, 2, 3]);
  gates[0]();
  gates[3]();
  assert.deepEqual(await Promise.all([results[0], results[3]]), [0, 30]);
  assert.equal(q.running + q.waiting, 0);
});

test('at least one part at a time, whatever it is told', async () => {
  const q = new PartQueue(0);
  assert.equal(await q.run(async () => 'ran'), 'ran');
});
