// A worker's warm-up goes through the real fetch path (writer, loopback
// registry, registry client, DataBlob, fill) and checks the bytes it reads:
// if that path changes so that the warm-up no longer fits it, this fails
// instead of every first read silently paying the cold start again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import pino from 'pino';
import { warmFetchPath } from '../../worker/warm-up';

test('the warm-up opens and reads its own blob through the fetch path, and leaves nothing behind', async () => {
  const lines: Array<{ msg: string; ms?: number }> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const before = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('lazysnap-warm-up-'));
  assert.equal(await warmFetchPath(log), true, JSON.stringify(lines));
  assert.ok(lines.some((l) => l.msg === 'fetch path warmed up' && typeof l.ms === 'number'), JSON.stringify(lines));
  const after = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('lazysnap-warm-up-'));
  assert.deepEqual(after, before, 'its temporary blob is removed');
});

test('every fd the warm-up opens is closed when it resolves (a fanotify worker holds orphans\' fd numbers only after it)', async () => {
  const log = pino({ level: 'silent' });
  await warmFetchPath(log); // the first: whatever Node opens once for good (its thread pool, its resolver) is opened here
  const fds = () => fs.readdirSync('/proc/self/fd').map(Number).sort((a, b) => a - b);
  const before = fds();
  assert.equal(await warmFetchPath(log), true);
  assert.deepEqual(fds(), before);
});

test('a warm-up that cannot run (no usable temp dir) says so and resolves false: it never takes the worker down', async () => {
  const lines: Array<{ level: number; msg: string }> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const was = process.env.TMPDIR;
  process.env.TMPDIR = '/nonexistent/lazysnap-test';
  try {
    assert.equal(await warmFetchPath(log), false);
  } finally {
    if (was === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = was;
  }
  assert.ok(lines.some((l) => l.level === 40 && /warming the fetch path up failed/.test(l.msg)), JSON.stringify(lines));
});

test('a warm-up stopped by its signal (the worker serves now) resolves false at once, leaving no fd and no temp dir', async () => {
  const lines: Array<{ level: number; msg: string }> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  await warmFetchPath(pino({ level: 'silent' })); // Node's own once-only fds opened first
  const fds = () => fs.readdirSync('/proc/self/fd').map(Number).sort((a, b) => a - b);
  const before = fds();
  const tmpBefore = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('lazysnap-warm-up-'));
  for (const after of [0, 5, 20]) {
    const stop = new AbortController();
    const p = warmFetchPath(log, stop.signal);
    setTimeout(() => stop.abort(), after);
    assert.equal(typeof (await p), 'boolean');
  }
  const stopped = new AbortController();
  stopped.abort();
  assert.equal(await warmFetchPath(log, stopped.signal), false);
  assert.ok(lines.some((l) => l.msg === 'warm-up stopped: the worker serves now'), JSON.stringify(lines));
  assert.ok(!lines.some((l) => l.level >= 40), `a stop is no warning: ${JSON.stringify(lines)}`);
  assert.deepEqual(fds(), before);
  assert.deepEqual(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('lazysnap-warm-up-')), tmpBefore);
});
