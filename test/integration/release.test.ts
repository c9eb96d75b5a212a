// The release artifact as an operator installs and upgrades it: built by
// scripts/release.sh; installed into an empty prefix with only a shell and
// coreutils on PATH (no node, npm or compiler); its unit passes
// systemd-analyze verify; lazysnapd starts from the unit's ExecStart; then a
// second version is installed over it and lazysnapd restarted (the README's
// upgrade) while a reader reads a lazily mounted image, which never notices.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { killWorkers } from '../support/lazysnapd';
import { isRunning, run, runOk, spawnDaemon, stopDaemon, tail, type Daemon } from '../support/proc';
import { makeTempDir, removeTempDir, unmountAll } from '../support/tmp';
import { canConnect, waitFor } from '../support/wait';
import { makeSourceTree, treeDigest } from '../support/guest';
import { nydusFromDir } from '../support/nydus-from-dir';
import { startReader } from '../support/reader';

const REPO = path.resolve(__dirname, '../../..');
const VERSION = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).version as string;
const NEXT = `${VERSION}-upgrade-test`;
/** what the installer and the installed programs may use: a shell, coreutils, and util-linux's mount and umount (lazysnapd's fscache mounts) */
const TOOLS = ['sh', 'dirname', 'basename', 'cp', 'mv', 'ln', 'readlink', 'sed', 'mkdir', 'rm', 'chmod', 'cat', 'mount', 'umount'];

let dir = '';
let artifacts: Record<string, string> = {};
let prefix = '';
let env: NodeJS.ProcessEnv = {};

before(async () => {
  dir = await makeTempDir('release');
  for (const v of [VERSION, NEXT]) {
    const r = await runOk('bash', [path.join(REPO, 'scripts/release.sh')], { cwd: REPO, env: { ...process.env, LAZYSNAP_VERSION: v }, timeoutMs: 600_000 });
    artifacts[v] = path.join(REPO, r.stdout.trim().split('\n').pop()!);
  }
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  for (const t of TOOLS) fs.symlinkSync(execFileSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).trim(), path.join(bin, t));
  env = { PATH: bin };
  prefix = path.join(dir, 'prefix');
}, { timeout: 20 * 60_000 });

after(async () => {
  if (dir) {
    await unmountAll(dir);
    killWorkers(path.join(dir, 'root'));
    await removeTempDir(dir);
  }
});

/** Unpacks an artifact and runs its `install` with only the tools above. */
async function install(version: string): Promise<string> {
  const at = path.join(dir, `unpacked-${version}`);
  fs.mkdirSync(at, { recursive: true });
  await runOk('tar', ['-C', at, '-xzf', artifacts[version]]);
  const r = await runOk(path.join(at, `lazysnap-${version}`, 'install'), ['--prefix', prefix, '--unit-dir', path.join(dir, 'units')], { env });
  return r.stdout + r.stderr;
}

test('the artifact installs into an empty prefix with nothing but a shell and coreutils (no node, npm or compiler), and runs from it', { timeout: 300_000 }, async () => {
  const out = await install(VERSION);
  assert.match(out, new RegExp(`lazysnap ${VERSION.replace(/\./g, '\\.')} in ${prefix}/lib/lazysnap \\(was: none\\)`));
  for (const cmd of ['lazysnap', 'lazysnapd']) {
    assert.equal((await runOk(path.join(prefix, 'bin', cmd), ['--version'], { env })).stdout.trim(), VERSION);
  }
  const lib = path.join(prefix, 'lib/lazysnap', VERSION);
  assert.ok(fs.existsSync(path.join(lib, 'node/bin/node')), 'Node comes with it');
  assert.ok(fs.existsSync(path.join(lib, 'native/build/Release/lazysnap_native.node')));
  for (const dev of ['node_modules/typescript', 'node_modules/tar-stream', 'dist/test', 'dist/bench']) {
    assert.ok(!fs.existsSync(path.join(lib, dev)), `no ${dev} in a release`);
  }
  const sources = (fs.readdirSync(lib, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts') && !f.startsWith('node_modules/') && !f.endsWith('.d.ts'));
  assert.deepEqual(sources, [], "none of lazysnap's TypeScript sources: it runs from dist/");
});

test("the unit passes systemd-analyze verify and names the prefix's lazysnapd", { timeout: 120_000 }, async () => {
  const unit = fs.readFileSync(path.join(dir, 'units/lazysnapd.service'), 'utf8');
  assert.match(unit, new RegExp(`^ExecStart=${prefix}/bin/lazysnapd$`, 'm'));
  assert.match(unit, /^Type=notify$/m);
  assert.match(unit, /^FileDescriptorStoreMax=\d+$/m);
  assert.match(unit, /^Restart=always$/m);
  assert.match(unit, /^RestartSec=[1-9]/m, 'no restart loop at full speed');
  assert.match(unit, /^KillMode=process$/m, 'workers outlive a lazysnapd restart');
  const r = await run('systemd-analyze', ['verify', path.join(dir, 'units/lazysnapd.service')]);
  assert.equal(r.code, 0, `systemd-analyze verify: ${r.stdout}${r.stderr}`);
  assert.equal(r.stderr.trim(), '', 'no warning');
});

test('upgrade: install the next version and restart lazysnapd while a reader reads a lazy image; it never notices', { timeout: 600_000 }, async () => {
  const src = path.join(dir, 'src');
  makeSourceTree(src, { files: 200, bigFiles: 12, bigSize: 16 << 20 });
  const ref = await nydusFromDir(src, path.join(dir, 'img'));
  const root = path.join(dir, 'root');
  const address = path.join(dir, 'snap.sock');
  const config = path.join(dir, 'config.toml');
  fs.writeFileSync(config, `root = "${root}"\naddress = "${address}"\n[fscache]\nenabled = true\nbackend = "fanotify"\n[admin]\nmount_dirs = ["${dir}"]\n`);
  const execStart = /^ExecStart=(.*)$/m.exec(fs.readFileSync(path.join(dir, 'units/lazysnapd.service'), 'utf8'))![1].split(' ');
  const start = async (n: number): Promise<Daemon> => {
    const d = spawnDaemon(execStart[0], [...execStart.slice(1), '--config', config], path.join(dir, `lazysnapd-${n}.log`), env);
    await waitFor(async () => {
      if (!isRunning(d)) throw new Error(`lazysnapd exited: ${await tail(path.join(dir, `lazysnapd-${n}.log`))}`);
      return fs.existsSync(address) && canConnect(address);
    }, { what: 'lazysnapd from the prefix', timeoutMs: 30_000 });
    return d;
  };
  const cli = async (...a: string[]) => (await runOk(path.join(prefix, 'bin/lazysnap'), [...a, '--config', config], { env })).stdout;
  const first = await start(1);
  let second: Daemon | undefined;
  try {
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    await cli('mount', ref, mnt);
    assert.equal(JSON.parse(await cli('status', '--json')).version, VERSION);
    // the README's upgrade: install, then restart (systemctl restart sends SIGTERM, then starts ExecStart)
    assert.match(await install(NEXT), new RegExp(`\\(was: ${VERSION.replace(/\./g, '\\.')}\\)`));
    const reading = startReader(mnt, src);
    let finished = false;
    void reading.then(() => (finished = true), () => undefined);
    await new Promise((r) => setTimeout(r, 300));
    await stopDaemon(first, 'SIGTERM');
    assert.ok(!finished, 'the reader was still reading when lazysnapd stopped');
    second = await start(2);
    const r = await reading;
    assert.equal(r.readsFailed, 0, r.errors.slice(0, 5).join('; '));
    assert.equal(r.mismatchedBytes, 0);
    assert.equal(r.files, [...treeDigest(src).values()].filter((v) => v !== 'dir' && !v.startsWith('->')).length);
    const s = JSON.parse(await cli('status', '--json'));
    assert.equal(s.version, NEXT, 'the new version serves');
    assert.deepEqual(fs.readdirSync(path.join(prefix, 'lib/lazysnap')).sort(), [VERSION, NEXT, 'current'].sort(), 'the previous version is kept');
    const worker = fs.readFileSync(`/proc/${s.worker.pid}/cmdline`, 'utf8');
    assert.ok(worker.includes(`/lib/lazysnap/${NEXT}/`), `the serving worker runs the new version: ${worker}`);
    await cli('umount', mnt);
  } finally {
    await stopDaemon(first, 'SIGKILL');
    if (second) await stopDaemon(second, 'SIGTERM');
  }
});
