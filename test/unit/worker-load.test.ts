// What a worker loads before it can serve: every failover that finds no
// loaded standby waits for it (seconds in the UML guest, where each module
// file costs a few ms). undici's and prom-client's indexes load 110 and 88
// files the worker never uses; it takes the modules it needs directly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

const DIST = path.resolve(__dirname, '../..');

test('the worker loads neither undici\'s index nor prom-client\'s (nor their default metrics and OpenTelemetry)', () => {
  const entry = path.join(DIST, 'cmd/lazysnap-fscache-worker.js');
  // Loads the entry's imports without running it: its settings are missing, so it exits 2 once they are loaded.
  const script = `process.on('exit', () => process.stdout.write(JSON.stringify(Object.keys(require.cache)))); require(${JSON.stringify(entry)});`;
  let out = '';
  try {
    execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LAZYSNAP_WORKER_SETTINGS: '' } });
  } catch (e) {
    out = (e as { stdout: string }).stdout;
  }
  const files: string[] = JSON.parse(out);
  assert.ok(files.some((f) => f.endsWith(path.join('worker', 'worker.js'))), 'the worker\'s own modules loaded');
  assert.ok(files.some((f) => f.includes('/node_modules/undici/lib/')), 'undici\'s agent loaded');
  const indexes = files.filter((f) => /\/node_modules\/(undici|prom-client)\/index\.js$/.test(f) || f.includes('/node_modules/@opentelemetry/'));
  assert.deepEqual(indexes, []);
  assert.ok(files.length < 200, `${files.length} module files`);
});
