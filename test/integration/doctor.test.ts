// `lazysnap doctor` on this host's own kernel (6.18: fanotify pre-content and
// EROFS file-backed mounts, no fscache on-demand): each finding matches what
// the kernel does when asked directly, and a bad cache filesystem, a bad
// containerd config and exposed credentials each get their failing line.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../support/proc';
import { makeTempDir, removeTempDir } from '../support/tmp';
import type { Finding } from '../../doctor/finding';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
let dir = '';

before(async () => {
  dir = await makeTempDir('doctor');
});
after(async () => {
  if (dir) {
    await run('umount', [path.join(dir, 'tmpfs')]);
    await removeTempDir(dir);
  }
});

async function doctor(config: string, containerd: string, ...extra: string[]) {
  const cfgFile = path.join(dir, `c-${Math.random().toString(36).slice(2)}.toml`);
  fs.writeFileSync(cfgFile, config);
  const r = await run(process.execPath, [CLI, 'doctor', '--json', '--config', cfgFile, '--containerd-config', containerd, ...extra], { timeoutMs: 60_000 });
  const findings = JSON.parse(r.stdout) as Finding[];
  const of = (check: string) => findings.find((f) => f.check === check) ?? assert.fail(`no "${check}" in ${r.stdout}`);
  return { code: r.code, findings, of };
}

const kernelAtLeast = (maj: number, min: number) => {
  const [a, b] = os.release().split('.').map(Number);
  return a > maj || (a === maj && b >= min);
};

test('on this host: the findings match what the kernel does', { timeout: 120_000 }, async () => {
  const cache = path.join(dir, 'cache');
  const ctrd = path.join(dir, 'containerd.toml');
  fs.writeFileSync(ctrd, `version = 2\n[proxy_plugins.lazysnap]\n  type = "snapshot"\n  address = "${path.join(dir, 's.sock')}"\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "lazysnap"\n  disable_snapshot_annotations = false\n`);
  const d = await doctor(`root = "${path.join(dir, 'root')}"\naddress = "${path.join(dir, 's.sock')}"\n[fscache]\ncache_dir = "${cache}"\n[registry]\ndocker_config = "${path.join(dir, 'none.json')}"\nconfig_path = "${path.join(dir, 'certs.d')}"\n`, ctrd);
  const fanotify = kernelAtLeast(6, 14);
  assert.equal(d.of('kernel: fanotify pre-content events').verdict, fanotify ? 'ok' : 'warn', `Linux ${os.release()}`);
  assert.equal(d.of('kernel: EROFS file-backed mounts').verdict, kernelAtLeast(6, 12) ? 'ok' : 'warn');
  assert.equal(d.of('kernel: overlay').verdict, 'ok');
  const device = fs.existsSync('/dev/cachefiles');
  assert.equal(d.of('kernel: cachefiles on-demand').verdict === 'ok', device, 'on-demand only where the device is');
  assert.match(d.of('lazy images').detail, new RegExp(device ? 'fscache' : fanotify ? 'through fanotify' : 'downloaded whole'));
  assert.equal(d.of('cache dir: filesystem').verdict, 'ok');
  assert.equal(d.of('containerd: proxy plugin').verdict, 'ok');
  assert.equal(d.of('containerd: CRI').verdict, 'ok');
  assert.equal(d.of('state: socket').verdict, 'warn', 'no lazysnapd runs on this socket');
  assert.equal(d.code, d.findings.some((f) => f.verdict === 'fail') ? 1 : 0);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('.lazysnap-doctor')), [], 'the probes leave nothing behind');
});

test('a tmpfs cache dir, a containerd config without lazysnap and world-readable credentials fail, each with its fix', { timeout: 120_000 }, async () => {
  const tmpfs = path.join(dir, 'tmpfs');
  fs.mkdirSync(tmpfs);
  assert.equal((await run('mount', ['-t', 'tmpfs', 'none', tmpfs])).code, 0);
  const creds = path.join(dir, 'config.json');
  fs.writeFileSync(creds, '{"auths":{}}', { mode: 0o644 });
  fs.chmodSync(creds, 0o644);
  const ctrd = path.join(dir, 'ctrd-bare.toml');
  fs.writeFileSync(ctrd, 'version = 2\n');
  const d = await doctor(`root = "${path.join(dir, 'root2')}"\n[fscache]\ncache_dir = "${path.join(tmpfs, 'cache')}"\n[registry]\ndocker_config = "${creds}"\n`, ctrd);
  assert.equal(d.code, 1);
  assert.match(d.of('cache dir: filesystem').detail, /tmpfs/);
  assert.equal(d.of('cache dir: filesystem').verdict, 'fail');
  assert.equal(d.of('containerd: proxy plugin').verdict, 'fail');
  const c = d.of('registry: credentials');
  assert.equal(c.verdict, 'fail');
  assert.match(c.fix ?? '', /chmod 600/);
  // the text form: one line per finding, the fix under it
  const cfgFile = path.join(dir, 'text.toml');
  fs.writeFileSync(cfgFile, `root = "${path.join(dir, 'root2')}"\n`);
  const text = await run(process.execPath, [CLI, 'doctor', '--no-probes', '--config', cfgFile, '--containerd-config', ctrd]);
  assert.match(text.stdout, /^FAIL  containerd: proxy plugin: no \[proxy_plugins\] entry in .*\n      fix: add \[proxy_plugins\.lazysnap\]/m);
  assert.doesNotMatch(text.stdout, /fanotify pre-content events/, '--no-probes probes nothing');
});
