// Runs the kernel-path tests inside the UML test kernel (built from Debian's
// linux-source-6.12 by kernel/build.sh, cached after the first build). These
// are never skipped: a machine that cannot boot the kernel fails them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { run } from '../support/proc';
import { buildDebianPythonImage } from '../support/debian-python';
import { CONVERTED_IMAGES_ENV, makeConvertedImages } from '../support/converted-images';
import { failureReport } from '../support/tap-failures';

const REPO = path.resolve(__dirname, '../../..');
const KERNEL_RUN = path.join(REPO, 'scripts', 'kernel-run.sh');

async function inGuest(args: string[], timeoutMs: number, extraEnv: NodeJS.ProcessEnv = {}) {
  // The runner marks its children with NODE_TEST_CONTEXT; a `node --test` in
  // the guest that inherits it acts as a child and reports nothing.
  const env: NodeJS.ProcessEnv = { ...process.env, ...extraEnv, LAZYSNAP_KERNEL: kernel, [CONVERTED_IMAGES_ENV]: convertedDir };
  delete env.NODE_TEST_CONTEXT;
  const r = await run('bash', [KERNEL_RUN, ...args], { timeoutMs, cwd: REPO, env });
  return { ...r, out: `${r.stdout}\n${r.stderr}` };
}

let kernel = '';
/** the guest's nydus test images, converted here once for all guest runs (test/support/converted-images.ts) */
let convertedDir = '';

// The guest has no network: the debian+python image of the lazy pull-and-run
// tests is built here, on the host, and read by the guest through hostfs; so
// are the nydus images those tests push, converted here once, not in each run.
// The kernel is built here (or waited for: scripts/test.sh starts its build in
// the background), so no guest's timeout counts a build.
before(async () => {
  const k = await run('bash', [path.join(REPO, 'kernel', 'build.sh')], { timeoutMs: 60 * 60_000, cwd: REPO });
  assert.equal(k.code, 0, `kernel/build.sh failed:\n${k.stderr.slice(-4000)}`);
  kernel = k.stdout.trim().split('\n').pop()!;
  await buildDebianPythonImage();
  convertedDir = fs.mkdtempSync('/var/tmp/lazysnap-converted-');
  await makeConvertedImages(convertedDir);
}, { timeout: 80 * 60_000 });

after(() => {
  if (convertedDir) fs.rmSync(convertedDir, { recursive: true, force: true });
});

// One guest at a time, and each alone on the machine: two at once (tried,
// one per core) slowed each more than twice over, healthy workers were
// judged hung and the suite ran out of time.
test('kernel tests in the UML guest (fscache on-demand, native addon)', { timeout: 40 * 60_000 }, async () => {
  const files = fs.readdirSync(path.join(REPO, 'dist/test/kernel')).filter((f) => f.endsWith('.test.js')).map((f) => `dist/test/kernel/${f}`);
  assert.ok(files.length >= 2, 'kernel test files are built');
  const r = await inGuest(['-t', '1800', '--', 'node', '--test', '--test-concurrency=1', ...files], 40 * 60_000);
  const summary = r.stdout.split('\n').filter((l) => /^# (tests|pass|fail)/.test(l)).join(', ');
  console.log(`guest: ${summary}`);
  assert.equal(r.code, 0, failureReport(r.stdout, r.out));
  assert.match(r.stdout, /^# pass [1-9]\d*$/m, 'the guest ran tests');
  assert.match(r.stdout, /^# fail 0$/m);
});

// The CRI suite and the lazy pull-and-run suite again (the containerd-facing
// guest tests): bookworm's 1.6.20 ran them above; 2.1.9 with a native version
// 3 config. kernel/bad-chunk is about the worker, not containerd: once is enough.
for (const [series, version] of [['1.7', '1.7.24'], ['2.1', '2.1.9']] as const) {
  test(`CRI and lazy pull-and-run again with containerd ${version} (unpacked by scripts/containerd.sh)`, { timeout: 30 * 60_000 }, async () => {
    const dir = await run('bash', [path.join(REPO, 'scripts', 'containerd.sh'), series], { timeoutMs: 10 * 60_000 });
    assert.equal(dir.code, 0, dir.stderr);
    const r = await inGuest(['-t', '1500', '--', 'node', '--test', '--test-concurrency=1', 'dist/test/kernel/cri.test.js', 'dist/test/kernel/lazy-pull.test.js'],
      28 * 60_000, { LAZYSNAP_CONTAINERD_DIR: dir.stdout.trim() });
    console.log(`guest (containerd ${version}): ${r.stdout.split('\n').filter((l) => /^# (tests|pass|fail)/.test(l)).join(', ')}`);
    assert.equal(r.code, 0, failureReport(r.stdout, r.out));
    assert.match(r.stdout, new RegExp(`containerd ${version.replace(/\./g, '\\.')}`));
    assert.match(r.stdout, /^# fail 0$/m);
  });
}

test('failover: a reader never notices 100 kills of the fscache worker', { timeout: 60 * 60_000 }, async () => {
  const r = await inGuest(['-t', '3000', '-m', '4G', '-f', '2048', '--', 'node', 'dist/test/kernel/failover.js'], 55 * 60_000);
  const line = /^failover: kills=(\d+) reads_failed=(\d+) mismatched_bytes=(\d+) worst_stall_ms=(\d+)$/m.exec(r.stdout);
  console.log(r.stdout.trim());
  assert.ok(line, `no failover line:\n${r.out.slice(-6000)}`);
  assert.ok(Number(line[1]) >= 100, `kills ${line[1]}`);
  assert.equal(line[2], '0', 'reads_failed');
  assert.equal(line[3], '0', 'mismatched_bytes');
  assert.equal(r.code, 0, r.out.slice(-6000));
});
