// `lazysnap doctor` in the UML guest (Linux 6.12 with fscache on-demand, no
// fanotify pre-content): each finding matches this kernel, as
// integration/doctor checks them against the host's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { run } from '../support/proc';
import { guestDir, requireFscacheKernel } from '../support/guest';
import type { Finding } from '../../doctor/finding';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');

test('doctor in the guest: cachefiles binds on demand, no pre-content events, lazy images through fscache', { timeout: 120_000 }, async (t) => {
  const cache = requireFscacheKernel();
  const dir = guestDir('doctor');
  const cfg = path.join(dir, 'config.toml');
  fs.writeFileSync(cfg, `root = "${path.join(dir, 'root')}"\naddress = "${path.join(dir, 's.sock')}"\n[fscache]\ncache_dir = "${path.join(cache, 'doctor')}"\n`);
  const r = await run(process.execPath, [CLI, 'doctor', '--json', '--config', cfg, '--containerd-config', path.join(dir, 'none.toml')], { timeoutMs: 60_000 });
  const findings = JSON.parse(r.stdout) as Finding[];
  const of = (check: string) => findings.find((f) => f.check === check) ?? assert.fail(`no "${check}" in ${r.stdout}`);
  t.diagnostic(findings.map((f) => `${f.verdict} ${f.check}: ${f.detail}`).join('\n'));
  assert.equal(of('kernel: cachefiles on-demand').verdict, 'ok', of('kernel: cachefiles on-demand').detail);
  assert.equal(of('kernel: fanotify pre-content events').verdict, 'warn', 'Linux 6.12 has no pre-content class');
  assert.equal(of('kernel: overlay').verdict, 'ok');
  assert.match(of('lazy images').detail, /through fscache/);
  assert.equal(of('containerd: config').verdict, 'fail', 'no containerd config here');
  assert.equal(r.code, 1, 'a failing finding is exit status 1');
});
