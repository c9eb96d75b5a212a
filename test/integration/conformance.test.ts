// containerd's own snapshotter suites against a running lazysnapd: 1.6.20's
// (bookworm) and 2.1.9's (sid).
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

async function lazysnapd(tag: string) {
  const dir = await makeTempDir(tag);
  cleanup.push(() => removeTempDir(dir));
  const d = await startLazysnapd({ root: path.join(dir, 'root'), address: path.join(dir, 'snap.sock') });
  cleanup.push(() => d.stop());
  return d;
}

test('containerd 1.6.20 snapshotter conformance suite: 19 passed, 0 failed', { timeout: 25 * 60_000 }, async () => {
  const d = await lazysnapd('conf');
  const r = await runConformance(d.address);
  console.log(`conformance (1.6.20): ${r.summary}`);
  assert.equal(r.failed, 0, r.output.slice(-6000));
  assert.equal(r.passed, 19, r.output.slice(-6000));
});

// Rename: for the names overlayfs and fuse-overlayfs the 1.7 and 2.x suites
// leave out renaming a directory of a lower layer, which overlay without
// redirect_dir (this host's default) refuses with EXDEV. lazysnap's active
// snapshots are overlay mounts exactly like containerd's overlayfs, so it is
// tested as one; under its own name that one case fails with EXDEV.
test('containerd 2.1.9 snapshotter conformance suite (sid): 20 passed, 0 failed', { timeout: 30 * 60_000 }, async () => {
  const d = await lazysnapd('conf-sid');
  const r = await runConformance(d.address, 'lazysnap', { suite: 'sid', suiteName: 'overlayfs' });
  console.log(`conformance (2.1.9): ${r.summary}`);
  assert.equal(r.failed, 0, r.output.slice(-6000));
  assert.equal(r.passed, 20, r.output.slice(-6000));
});
