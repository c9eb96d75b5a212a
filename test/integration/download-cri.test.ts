// "A nydus image always runs": with no lazy backend (fscache.backend =
// "download"), containerd's CRI pulls the debian+python nydus image into
// lazysnap and runs it; lazysnapd downloads each blob whole (fetched,
// decompressed, verified) before the mount. fanotify-cri.test.js, run with
// LAZYSNAP_TEST_BACKEND=download.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { run } from '../support/proc';
import { failureReport } from '../support/tap-failures';

const REPO = path.resolve(__dirname, '../../..');

test('CRI pull and run of a nydus image with no lazy backend: blobs downloaded whole by lazysnapd', { timeout: 30 * 60_000 }, async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, LAZYSNAP_TEST_BACKEND: 'download' };
  delete env.NODE_TEST_CONTEXT; // else the child acts as a runner's child and reports nothing
  const r = await run(process.execPath, ['--test', path.join(REPO, 'dist/test/integration/fanotify-cri.test.js')], { timeoutMs: 28 * 60_000, env, cwd: REPO });
  console.log(r.stdout.split('\n').filter((l) => /^# (tests|pass|fail)|backend download/.test(l)).join('\n'));
  assert.equal(r.code, 0, failureReport(r.stdout, `${r.stdout}\n${r.stderr}`));
  assert.match(r.stdout, /^# pass [1-9]\d*$/m);
  assert.match(r.stdout, /^# fail 0$/m);
});
