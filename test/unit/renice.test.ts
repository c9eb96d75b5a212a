// reniceThreads: Linux keeps a nice value per thread, so a process that sets
// nice 10 and then starts libuv's pool (as a standby worker does) has pool
// threads at 10 that its own os.setPriority(0) never lowers. The helper sets
// every thread. Lowering a nice value needs root, as lazysnapd has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { reniceThreads } from '../../worker/renice';

const niceOf = (pid: number) => fs.readdirSync(`/proc/${pid}/task`).map((t) => {
  const s = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
  return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[16]);
});

test('every thread of a process that started its pool at nice 10 goes back to 0', { skip: process.getuid?.() !== 0 && 'needs root' }, async () => {
  // like a standby: nice 10, then the pool starts; then its main thread alone goes back to 0
  const child = spawn(process.execPath, ['-e', `
    const os = require('os'), fs = require('fs');
    os.setPriority(10);
    fs.stat('/', () => { os.setPriority(0); console.log('ready'); setInterval(() => {}, 1000); });
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((r) => child.stdout!.once('data', () => r()));
    const before = niceOf(child.pid!);
    assert.ok(before.filter((n) => n === 10).length >= 4, `the pool's threads stay at nice 10: ${before}`);
    assert.ok(before.includes(0));
    assert.equal(reniceThreads(child.pid!, 0), before.length);
    assert.deepEqual(new Set(niceOf(child.pid!)), new Set([0]));
  } finally {
    child.kill('SIGKILL');
  }
  assert.equal(reniceThreads(2 ** 22 + 12345, 0), 0); // no such process
});
