// kernel/bad-chunk.test.js (a corrupt chunk in the registry's stored blob,
// seen from a container through containerd's CRI) on the host's own kernel,
// through the fanotify backend: only that chunk's bytes give EIO, never a
// wrong byte; every other file reads; no refetch storm; it heals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { run } from '../support/proc';
import { failureReport } from '../support/tap-failures';

const REPO = path.resolve(__dirname, '../../..');

test('a corrupt chunk in the registry, through fanotify and CRI on the host: EIO for its bytes only, healed after', { timeout: 20 * 60_000 }, async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, LAZYSNAP_TEST_BACKEND: 'fanotify' };
  delete env.NODE_TEST_CONTEXT; // else the child acts as a runner's child and reports nothing
  const r = await run(process.execPath, ['--test', path.join(REPO, 'dist/test/kernel/bad-chunk.test.js')], { timeoutMs: 18 * 60_000, env, cwd: REPO });
  console.log(r.stdout.split('\n').filter((l) => /^# (tests|pass|fail)|GETs|healed/.test(l)).join('\n'));
  assert.equal(r.code, 0, failureReport(r.stdout, `${r.stdout}\n${r.stderr}`));
  assert.match(r.stdout, /^# pass 2$/m);
  assert.match(r.stdout, /^# fail 0$/m);
});
