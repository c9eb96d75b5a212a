// The host-side containerd tests (ctr pull and run of a plain image, then
// removal; CRI lazy pull-and-run through the fanotify backend) again against
// trixie's 1.7.24 and sid's 2.1.9, each unpacked by scripts/containerd.sh;
// bookworm's 1.6.20 runs them in containerd.test.js and fanotify-cri.test.js.
// 2.1.9 gets a native version 3 config (test/support/containerd.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { run } from '../support/proc';
import { failureReport } from '../support/tap-failures';

const REPO = path.resolve(__dirname, '../../..');

for (const [series, version] of [['1.7', '1.7.24'], ['2.1', '2.1.9']] as const) {
  test(`ctr pull and run of a plain image, CRI lazy pull-and-run through fanotify, with containerd ${version}`, { timeout: 25 * 60_000 }, async () => {
    const dir = await run('bash', [path.join(REPO, 'scripts', 'containerd.sh'), series], { timeoutMs: 10 * 60_000 });
    assert.equal(dir.code, 0, dir.stderr);
    const env: NodeJS.ProcessEnv = { ...process.env, LAZYSNAP_CONTAINERD_DIR: dir.stdout.trim() };
    delete env.NODE_TEST_CONTEXT; // else the child acts as a runner's child and reports nothing
    const r = await run(process.execPath, ['--test', '--test-concurrency=1', path.join(REPO, 'dist/test/integration/containerd.test.js'),
      path.join(REPO, 'dist/test/integration/fanotify-cri.test.js')], { timeoutMs: 14 * 60_000, env, cwd: REPO });
    console.log(`containerd ${version}: ${r.stdout.split('\n').filter((l) => /^# (tests|pass|fail)/.test(l)).join(', ')}`);
    assert.equal(r.code, 0, failureReport(r.stdout, `${r.stdout}\n${r.stderr}`));
    assert.match(r.stdout, /^# pass [1-9]\d*$/m);
    assert.match(r.stdout, /^# fail 0$/m);
  });
}
