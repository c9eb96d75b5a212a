// kernel/cri-private.test.js (a private image under Kubernetes: the CRI
// image proxy and kubelet's credential-provider plugins) on the host's own
// kernel, through the fanotify backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { run } from '../support/proc';
import { failureReport } from '../support/tap-failures';

const REPO = path.resolve(__dirname, '../../..');

test('private images through CRI on the host (fanotify): the pull secret through the image proxy, and a credential-provider plugin', { timeout: 20 * 60_000 }, async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, LAZYSNAP_TEST_BACKEND: 'fanotify' };
  delete env.NODE_TEST_CONTEXT; // else the child acts as a runner's child and reports nothing
  const r = await run(process.execPath, ['--test', path.join(REPO, 'dist/test/kernel/cri-private.test.js')], { timeoutMs: 18 * 60_000, env, cwd: REPO });
  console.log(r.stdout.split('\n').filter((l) => /^# (tests|pass|fail)/.test(l)).join('\n'));
  assert.equal(r.code, 0, failureReport(r.stdout, `${r.stdout}\n${r.stderr}`));
  assert.match(r.stdout, /^# pass 2$/m);
  assert.match(r.stdout, /^# fail 0$/m);
});
