// The fanotify pre-content backend on the host's own kernel (>= 6.14): a
// nydus image mounted file-backed, its blob files filled on demand through
// content/ from local blobs, every byte equal to the source; readers that
// never notice a dead worker, a dead lazysnapd, or both at once (the group
// then lives in systemd's fd store); and the seed's failover test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { killWorkers, startLazysnapd, Lazysnapd, LAZYSNAPD_JS } from '../support/lazysnapd';
import { makeTempDir, removeTempDir, unmountAll } from '../support/tmp';
import { run, runOk } from '../support/proc';
import { waitFor, canConnect } from '../support/wait';
import { startFakeSystemd } from '../support/fake-systemd';
import { parseConfig } from '../../config/config';
import { findKeepers, pidAlive } from '../../worker/fanotify/keeper';
import { makeSourceTree, treeDigest } from '../support/guest';
import { nydusFromDir } from '../support/nydus-from-dir';
import { startReader as startTreeReader } from '../support/reader';
import { scrape, total, type Samples } from '../support/metrics';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
const FAILOVER = path.resolve(__dirname, '../kernel/failover.js');
const HANG_READER = path.resolve(__dirname, '../kernel/hang-reader.js');
let dir: string;
let d: Lazysnapd;
let ref: string;
let src: string;

const cli = async (...a: string[]) => (await runOk(process.execPath, [CLI, ...a, '--address', d.address], { timeoutMs: 300_000 })).stdout;

before(async () => {
  dir = await makeTempDir('fanotify');
  src = path.join(dir, 'src');
  // big enough that a reader is still reading a second after it starts
  makeSourceTree(src, { files: 300, bigFiles: 8, bigSize: 16 << 20 });
  ref = await nydusFromDir(src, path.join(dir, 'img'));
  const root = path.join(dir, 'root');
  d = await startLazysnapd({
    root,
    address: path.join(dir, 'snap.sock'),
    // "auto": this host has no /dev/cachefiles (no CACHEFILES_ONDEMAND), so fanotify serves
    config: `root = "${root}"\n[log]\nlevel = "info"\n[fscache]\nenabled = true\nbackend = "auto"\n[admin]\nmount_dirs = ["${dir}"]\n` +
      `[metrics]\naddress = "${path.join(dir, 'metrics.sock')}"\n`,
  });
});

/** lazysnapd's metrics once the serving worker has reported (every second) what was just done. */
async function metricsNow(): Promise<Samples> {
  await new Promise((r) => setTimeout(r, 1500));
  return scrape(path.join(dir, 'metrics.sock'));
}

after(async () => {
  if (dir) await unmountAll(dir);
  await d?.stop();
  // a failed test may leave a lazysnapd's workers serving (they outlive it by design)
  for (const r of ['root', 'root-a', 'root-b', 'root-h', 'root-k']) if (dir) killWorkers(path.join(dir, r));
  if (dir && !process.env.KEEP) await removeTempDir(dir);
});

test('a nydus image read through fanotify pre-content equals its source', { timeout: 300_000 }, async () => {
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  await cli('mount', ref, mnt);
  const blobs = fs.readdirSync(path.join(d.root, 'cache'), { recursive: true }) as string[];
  assert.ok(blobs.length >= 2, `a volume dir and its blob file: ${blobs}`);
  assert.deepEqual(treeDigest(mnt), treeDigest(src));
  const s = JSON.parse(await cli('status', '--json'));
  assert.equal(s.worker.backend, 'fanotify');
  assert.ok(s.worker.stats.fills > 0, JSON.stringify(s.worker.stats));
  assert.equal(s.worker.stats.eventsDenied, 0);
  assert.equal(s.backend, 'fanotify');
  assert.match(fs.readFileSync(d.logPath, 'utf8'), /fscache on-demand is not available here; trying fanotify pre-content/);
  assert.deepEqual(s.images.map((i: { backend: string }) => i.backend), ['fanotify']);
  assert.match(await cli('status'), /lazy images: served through fanotify[\s\S]*lazy through fanotify, blobs from local/);
  await cli('umount', mnt);
  assert.deepEqual(fs.readdirSync(path.join(d.root, 'cache')), [], 'an unmounted image leaves no blob files');
});

const config = (root: string) =>
  `root = "${root}"\n[log]\nlevel = "info"\n[fscache]\nenabled = true\nbackend = "fanotify"\n[admin]\nmount_dirs = ["${dir}"]\n`;

const startReader = (mnt: string) => startTreeReader(mnt, src);

/** A lazysnapd of its own (root-<tag>, <tag>.sock) with the image mounted at mnt-<tag>. */
async function mountedBy(tag: string) {
  const root = path.join(dir, `root-${tag}`);
  const address = path.join(dir, `${tag}.sock`);
  const first = await startLazysnapd({ root, address, config: config(root) });
  const mnt = path.join(dir, `mnt-${tag}`);
  fs.mkdirSync(mnt);
  await runOk(process.execPath, [CLI, 'mount', ref, mnt, '--address', address]);
  return { root, address, first, mnt };
}

/** Starts a reader of `mnt` and lets it read for 300 ms; `finished` says whether it has finished since. */
async function readerUnderWay(mnt: string) {
  const reading = startReader(mnt);
  let done = false;
  void reading.then(() => (done = true), () => undefined);
  await new Promise((r) => setTimeout(r, 300));
  return { reading, finished: () => done };
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone, or a standby that was never started
    }
  }
}

const workersOf = (root: string): number[] => JSON.parse(fs.readFileSync(path.join(root, 'fscache', 'workers.json'), 'utf8'));
const srcFiles = () => [...treeDigest(src).values()].filter((v) => v !== 'dir' && !v.startsWith('->')).length;

test('mounted straight from a registry (lazysnap mount docker://…): blobs arrive by Range GETs as files are read', { timeout: 300_000 }, async () => {
  const { startRegistry } = await import('../support/registry');
  const { pushOciLayout } = await import('../support/images');
  const registry = await startRegistry({ dir: path.join(dir, 'registry') });
  try {
    await pushOciLayout(ref.split(':')[1], 'nydus', registry.url, 'test/fan:1');
    const mnt = path.join(dir, 'mnt-reg');
    fs.mkdirSync(mnt);
    const gets = () => fs.readFileSync(registry.logPath, 'utf8').split('\n').filter((l) => l.includes('lazysnap/') && /"GET [^"]*\/blobs\/[^"]*" 206 /.test(l)).length;
    const beforeMount = gets();
    await cli('mount', `docker://${registry.host}/test/fan:1`, mnt);
    const one = path.join(mnt, 'd1', 'e1', 'f1');
    assert.deepEqual(fs.readFileSync(one), fs.readFileSync(path.join(src, 'd1', 'e1', 'f1')));
    // Counted from before the mount: the worker opens a mounted blob at once (its ToC) and may fetch ahead, so the
    // read's own GET can come before the read. The access log line is written once a response is sent: waited for.
    await waitFor(() => gets() > beforeMount, { what: `a Range GET of a blob by lazysnap in ${registry.logPath}`, timeoutMs: 5000 });
    assert.deepEqual(treeDigest(mnt), treeDigest(src));
    const s = JSON.parse(await cli('status', '--json'));
    const img = s.images.find((i: { imageRef: string }) => i.imageRef === `${registry.host}/test/fan:1`);
    assert.ok(img, JSON.stringify(s.images));
    assert.equal(img.source, 'registry');
    const m = await metricsNow();
    const image_ref = `${registry.host}/test/fan:1`;
    assert.ok(total(m, 'lazysnap_read_latency_microseconds_count', { image_ref, result: 'filled' }) > 0, 'READs of the image were counted');
    assert.ok(total(m, 'lazysnap_fetched_bytes_total', { image_ref }) > 0, 'bytes fetched for the image');
    assert.ok(total(m, 'lazysnap_read_bytes_total', { image_ref }) > 0);
    assert.ok(total(m, 'lazysnap_registry_requests_total', { host: registry.host }) > 0);
    assert.equal(total(m, 'lazysnap_read_latency_microseconds_count', { image_ref, result: 'eio' }), 0, 'no READ failed');
    assert.equal(total(m, 'lazysnap_registry_errors_total'), 0);
    assert.equal(total(m, 'lazysnap_build_info', { backend: 'fanotify' }), 1);
    await cli('umount', mnt);
  } finally {
    await registry.stop();
  }
});

test('a corrupt chunk in a blob: its bytes give EIO, never wrong data, and the other files read', { timeout: 300_000 }, async () => {
  const layout = ref.split(':')[1];
  const bad = path.join(dir, 'bad-layout');
  fs.cpSync(layout, bad, { recursive: true });
  const { readNydusLayout } = await import('../support/oci-layout');
  const n = await readNydusLayout(bad, 'nydus');
  const blob = n.blobFiles[0];
  const buf = fs.readFileSync(blob);
  buf[Math.floor(buf.length / 2)] ^= 0x5a;
  fs.writeFileSync(blob, buf);
  const mnt = path.join(dir, 'mnt-bad');
  fs.mkdirSync(mnt);
  await cli('mount', `oci:${bad}:nydus`, mnt);
  try {
    const r = await startReader(mnt);
    assert.equal(r.mismatchedBytes, 0, 'never a wrong byte');
    assert.ok(r.readsFailed >= 1 && r.readsFailed <= 3, `the files on the bad chunk fail: ${r.errors.join('; ')}`);
    assert.ok(r.errors.every((e) => /EIO|i\/o error/i.test(e)), r.errors.join('; '));
    assert.ok(r.files - r.readsFailed >= srcFiles() - 3, `${r.files - r.readsFailed} of ${srcFiles()} files read`);
    const s = JSON.parse(await cli('status', '--json'));
    assert.ok(s.worker.stats.eventsDenied >= 1);
    assert.ok(total(await metricsNow(), 'lazysnap_read_latency_microseconds_count', { result: 'eio' }) >= 1, 'the EIOs are counted');
  } finally {
    await cli('umount', mnt);
  }
});

test('a second lazysnapd on the same root exits 1 naming the first one\'s pid; the first keeps serving its reader', { timeout: 300_000 }, async () => {
  const mnt = path.join(dir, 'mnt-lock');
  fs.mkdirSync(mnt);
  await cli('mount', ref, mnt);
  try {
    const reading = startReader(mnt);
    await new Promise((r) => setTimeout(r, 200));
    const second = await run(process.execPath, [LAZYSNAPD_JS, '--config', `${d.root}.config.toml`, '--root', d.root, '--address', path.join(dir, 'second.sock')], { timeoutMs: 30_000 });
    assert.equal(second.code, 1, second.stderr);
    const lines = second.stderr.trim().split('\n');
    assert.equal(lines.length, 1, second.stderr);
    assert.match(lines[0], new RegExp(`^lazysnapd: root ${d.root} is in use by lazysnapd pid ${d.proc.pid} \\(serving ${d.address}\\)`));
    assert.ok(!fs.existsSync(path.join(dir, 'second.sock')), 'the second one served nothing');
    const r = await reading;
    assert.equal(r.readsFailed, 0, r.errors.slice(0, 5).join('; '));
    assert.equal(r.mismatchedBytes, 0);
    assert.equal(r.files, srcFiles());
    assert.ok(JSON.parse(await cli('status', '--json')).worker.pid > 0, 'the first still answers');
  } finally {
    await cli('umount', mnt);
  }
});

test('kill -9 lazysnapd mid-read, start it again: the worker keeps the group, takes it back, the reader never notices', { timeout: 300_000 }, async () => {
  const { root, address, first, mnt } = await mountedBy('a');
  const oldWorker = JSON.parse((await runOk(process.execPath, [CLI, 'status', '--json', '--address', address])).stdout).worker.pid;
  const { reading, finished } = await readerUnderWay(mnt);
  await first.kill9();
  assert.ok(!finished(), 'the reader was still reading when lazysnapd died');
  assert.ok(fs.existsSync(`/proc/${oldWorker}`), 'the worker outlives lazysnapd');
  const second = await startLazysnapd({ root, address, config: config(root) });
  try {
    const r = await reading;
    const log = fs.readFileSync(second.logPath, 'utf8');
    assert.equal(r.readsFailed, 0, `${r.errors.slice(0, 10).join('; ')}\n--- lazysnapd log ---\n${log.slice(-6000)}`);
    assert.equal(r.mismatchedBytes, 0);
    assert.equal(r.files, srcFiles());
    assert.match(log, /took the fanotify group back from the running worker/);
    const s = JSON.parse((await runOk(process.execPath, [CLI, 'status', '--json', '--address', address])).stdout);
    assert.notEqual(s.worker.pid, oldWorker, 'the old worker was retired');
    await runOk(process.execPath, [CLI, 'umount', mnt, '--address', address]);
  } finally {
    await second.stop();
  }
});

test("without systemd: lazysnapd and every worker killed mid-read; the dead worker's fd keeper keeps the group, a new lazysnapd takes it back, the reader never notices", { timeout: 300_000 }, async () => {
  const { root, address, first, mnt } = await mountedBy('k');
  const workers = workersOf(root);
  const { reading, finished } = await readerUnderWay(mnt);
  await first.kill9();
  killAll(workers);
  // Now only the keeper holds the group: without it, the kernel would allow every pending event (zeros).
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(!finished(), 'the reader was still reading while nothing served it');
  const second = await startLazysnapd({ root, address, config: config(root) });
  try {
    const r = await reading;
    const log = fs.readFileSync(second.logPath, 'utf8');
    assert.equal(r.readsFailed, 0, `${r.errors.slice(0, 10).join('; ')}\n--- lazysnapd log ---\n${log.slice(-6000)}`);
    assert.equal(r.mismatchedBytes, 0, 'no zeros, no wrong byte');
    assert.equal(r.files, srcFiles());
    assert.match(log, /took the fanotify group back from the dead worker's fd keeper/);
    // the successor answered what the dead worker left, and ended its keeper
    // (the serving worker has a keeper of its own)
    const deadKept = () => [...findKeepers(path.join(root, 'fscache', 'journals')).keys()].filter((w) => !pidAlive(w));
    await waitFor(() => deadKept().length === 0, { what: "the dead worker's keeper to be ended" })
      .catch((e) => assert.fail(`${(e as Error).message}\n--- lazysnapd log ---\n${fs.readFileSync(second.logPath, 'utf8').slice(-8000)}`));
    await runOk(process.execPath, [CLI, 'umount', mnt, '--address', address]);
  } finally {
    await second.stop();
  }
});

test('under systemd: lazysnapd and every worker killed mid-read; the fd store keeps the group, and the reader never notices', { timeout: 300_000 }, async () => {
  const root = path.join(dir, 'root-b');
  fs.mkdirSync(root, { recursive: true });
  const address = path.join(dir, 'b.sock');
  const cfgPath = path.join(dir, 'b.toml');
  fs.writeFileSync(cfgPath, config(root));
  const logPath = path.join(dir, 'b.log');
  const logFd = fs.openSync(logPath, 'a');
  const sd = startFakeSystemd(path.join(dir, 'notify.sock'), [process.execPath, LAZYSNAPD_JS, '--config', cfgPath, '--address', address], logFd);
  const { events, until } = sd;
  try {
    sd.send('start');
    await until('FDSTORE=1 with the group', (e) => e.event === 'notify' && String(e.state).includes('FDNAME=fanotify') && e.fds === 1);
    await until('READY=1', (e) => e.event === 'notify' && e.state === 'READY=1');
    await waitFor(() => canConnect(address), { what: 'lazysnapd socket' });
    const mnt = path.join(dir, 'mnt-b');
    fs.mkdirSync(mnt);
    await runOk(process.execPath, [CLI, 'mount', ref, mnt, '--address', address]);
    const workers = workersOf(root);
    const { reading, finished } = await readerUnderWay(mnt);
    const mark = events.length;
    sd.send('kill9');
    await until('killed', (e) => e.event === 'killed', mark);
    // Now the fd store is the only holder of the group: without it, the kernel would allow every pending event (zeros).
    killAll(workers);
    await new Promise((r) => setTimeout(r, 500)); // the reader waits on its events meanwhile
    assert.ok(!finished(), 'the reader was still reading while nothing served it');
    sd.send('start');
    await until('restart with the stored group', (e) => e.event === 'started' && e.listen_fds === 1, mark);
    const r = await reading;
    const log = fs.readFileSync(logPath, 'utf8');
    assert.equal(r.readsFailed, 0, `${r.errors.slice(0, 10).join('; ')}\n--- lazysnapd log ---\n${log.slice(-6000)}`);
    assert.equal(r.mismatchedBytes, 0, 'no zeros, no wrong byte');
    assert.equal(r.files, srcFiles());
    assert.match(log, /took the fanotify group back from the systemd fd store/);
    await waitFor(() => canConnect(address), { what: 'lazysnapd socket after restart' });
    await runOk(process.execPath, [CLI, 'umount', mnt, '--address', address]);
  } finally {
    await sd.stop();
    fs.closeSync(logFd);
  }
});

test('a fanotify worker stopped or spinning mid-read is replaced within the hang bound; readers get every byte', { timeout: 300_000 }, async (t) => {
  const BOUND = parseConfig('').fscache.hang_timeout_ms;
  const root = path.join(dir, 'root-h');
  const h = await startLazysnapd({
    root,
    address: path.join(dir, 'h.sock'),
    config: config(root),
    // SIGUSR2 makes a worker spin on its event loop (worker/worker.ts); workers inherit lazysnapd's environment.
    env: { ...process.env, LAZYSNAP_TEST_HOOKS: '1' },
  });
  const hcli = async (...a: string[]) => (await runOk(process.execPath, [CLI, ...a, '--address', h.address], { timeoutMs: 60_000 })).stdout;
  const stalls: string[] = [];
  try {
    for (const [i, sig] of (['SIGSTOP', 'SIGSTOP', 'SIGUSR2'] as const).entries()) {
      const mnt = path.join(dir, `mnt-h${i}`);
      fs.mkdirSync(mnt);
      await hcli('mount', ref, mnt, '--fsid', `hang-${i}`); // a fresh fsid: new blob files, cold
      const before = JSON.parse(await hcli('status', '--json')).worker;
      const p = spawn(process.execPath, [HANG_READER, mnt, src], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      const first = new Promise<void>((resolve) => p.stdout!.on('data', (x) => ((out += x), out.includes('reading') && resolve())));
      const done = new Promise<number | null>((resolve) => p.on('exit', resolve));
      await Promise.race([first, done]);
      process.kill(before.pid, sig);
      if (sig === 'SIGSTOP') {
        // a probe's status answers from lazysnapd alone while the worker is stopped (the whole one would wait on it)
        const brief = JSON.parse(await hcli('status', '--brief', '--json'));
        assert.equal(brief.worker.pid, before.pid);
        assert.ok(!('error' in brief.worker) && !('images' in brief), JSON.stringify(brief));
      }
      assert.equal(await done, 0, out);
      const r = JSON.parse(out.slice(out.indexOf('{')));
      assert.equal(r.readsFailed, 0, r.errors.join('; '));
      assert.equal(r.mismatchedBytes, 0);
      assert.ok(r.worstStallMs >= BOUND - 500, `${sig}: worst stall ${r.worstStallMs.toFixed(0)} ms: the hang did not hold a read`);
      assert.ok(r.worstStallMs <= BOUND + 2500, `${sig}: a read stalled ${r.worstStallMs.toFixed(0)} ms (bound ${BOUND} ms)`);
      stalls.push(`${sig} ${r.worstStallMs.toFixed(0)}`);
      const after = JSON.parse(await hcli('status', '--json')).worker;
      assert.notEqual(after.pid, before.pid);
      assert.equal(after.hangsHealed, before.hangsHealed + 1);
      await hcli('umount', mnt);
    }
    t.diagnostic(`bound ${BOUND} ms; reader's worst stall per hang (ms): ${stalls.join(', ')}`);
  } finally {
    await h.stop();
  }
});

test('failover: a reader never notices 100 kills of the fanotify worker (>= 256 MiB, cold each pass)', { timeout: 45 * 60_000 }, async () => {
  const r = await runOk(process.execPath, [FAILOVER], { env: { ...process.env, FAILOVER_BACKEND: 'fanotify' }, timeoutMs: 40 * 60_000 });
  process.stdout.write(r.stdout.split('\n').filter(Boolean).map((l) => `# ${l}\n`).join(''));
  const line = /^failover: kills=(\d+) reads_failed=(\d+) mismatched_bytes=(\d+) worst_stall_ms=(\d+)$/m.exec(r.stdout);
  assert.ok(line, `no failover line:\n${r.stdout}\n${r.stderr.slice(-4000)}`);
  assert.ok(Number(line[1]) >= 100, `kills=${line[1]}`);
  assert.equal(Number(line[2]), 0, 'reads failed');
  assert.equal(Number(line[3]), 0, 'mismatched bytes');
});
