import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tapFailures, failureReport } from '../support/tap-failures';

// A stream as node --test prints it in the guest: nested subtests, one failing.
const TAP = [
  'TAP version 13',
  '# Subtest: passes',
  'ok 1 - passes',
  '  ---',
  '  duration_ms: 3',
  '  ...',
  '# Subtest: kill -9 mid-read',
  'not ok 2 - kill -9 mid-read',
  '  ---',
  "  location: '/x/restart.test.js:50:1'",
  '  error: |-',
  '    the worker outlives lazysnapd',
  '  ...',
  '# log line {"level":30}',
  '1..2',
  '# fail 1',
].join('\n');

test('tapFailures keeps each failing test with its error block, and nothing of the passing ones', () => {
  const f = tapFailures(TAP);
  assert.match(f, /^not ok 2 - kill -9 mid-read/);
  assert.match(f, /the worker outlives lazysnapd/);
  assert.match(f, /restart\.test\.js:50/);
  assert.doesNotMatch(f, /passes|log line/);
  assert.equal(tapFailures(TAP.replace('not ok 2', 'ok 2')), '');
});

test('failureReport puts the failures before a bounded tail, and bounds each failure', () => {
  const long = TAP.replace('the worker outlives lazysnapd', 'x'.repeat(10_000));
  const r = failureReport(long, 'y'.repeat(50_000), 100);
  assert.ok(r.indexOf('not ok 2') < r.indexOf('--- last output'));
  assert.ok(r.length < 3000, `report is ${r.length} chars`);
  assert.match(r, /more\]/);
});
