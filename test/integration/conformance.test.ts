// containerd 1.6.20's own snapshotter suite against a running lazysnapd.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { makeTempDir, removeTempDir } from '../support/tmp';
import { startLazysnapd } from '../support/lazysnapd';
import { runConformance } from '../support/conformance';

let cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

test('containerd snapshotter conformance suite: 19 passed, 0 failed', { timeout: 25 * 60_000 }, async () => {
  const dir = await makeTempDir('conf');
  cleanup.push(() => removeTempDir(dir));
  const d = await startLazysnapd({ root: path.join(dir, 'root'), address: path.join(dir, 'snap.sock') });
  cleanup.push(() => d.stop());
  const r = await runConformance(d.address);
  console.log(`conformance: ${r.summary}`);
  assert.equal(r.failed, 0, r.output.slice(-6000));
  assert.equal(r.passed, 19, r.output.slice(-6000));
});
