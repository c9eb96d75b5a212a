// The cache's bound, through containerd's CRI on the host's own kernel
// (fanotify backend): three lazy images whose blobs total twice [cache]
// max_size are pulled and read; a container on the first keeps reading all
// along. The images no container uses are culled (least recently used
// first) until usage is under the bound; the running container reads every
// byte right; the evictions are counted in the metrics.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { requireBinaries } from '../support/bins';
import type { CriClient } from '../support/cri';
import { buildPauseImage } from '../support/guest-containerd';
import { startCriNode, type CriNode } from '../support/cri-node';
import { busyboxDataTree, pushOciLayout } from '../support/images';
import { LAZYSNAPD_JS, type Lazysnapd } from '../support/lazysnapd';
import { run, runOk } from '../support/proc';
import { startRegistry, type Registry } from '../support/registry';
import { makeTempDir, removeTempDir } from '../support/tmp';
import { nydusFromDir } from '../support/nydus-from-dir';
import { scrape, total } from '../support/metrics';

const CLI = join(__dirname, '../../cmd/lazysnap.js');
const MiB = 1 << 20;
/** per image: FILES files of FILE_BYTES random bytes (incompressible: the blob is as large) */
const FILES = 12;
const FILE_BYTES = 2 * MiB;
const MAX = 36 * MiB; // three images of ~24 MiB: twice the bound
let dir = '';
let registry: Registry | undefined;
let lazysnapd: Lazysnapd | undefined;
let node: CriNode | undefined;
let cri: CriClient;
const refs: string[] = [];
const digests: string[][] = [];

before(async () => {
  requireBinaries(['containerd', 'ctr', 'shim', 'runc', 'registry', 'busybox']);
  dir = await makeTempDir('cache-bound');
  registry = await startRegistry({ dir: join(dir, 'registry') });
  for (let n = 0; n < 3; n++) {
    const src = join(dir, `src${n}`);
    digests.push(busyboxDataTree(src, ['sh', 'cat', 'sha256sum', 'sleep', 'echo'], Array.from({ length: FILES }, (_, i) => `f${String(i).padStart(2, '0')}`), FILE_BYTES));
    const ref = await nydusFromDir(src, join(dir, `img${n}`));
    await pushOciLayout(ref.split(':')[1], 'nydus', registry.url, `test/bound${n}:1`);
    refs.push(`${registry.host}/test/bound${n}:1`);
  }
  const pause = await buildPauseImage(join(dir, 'pause'));
  await pushOciLayout(pause.layoutDir, pause.ref, registry.url, 'test/pause:1');
  node = await startCriNode({
    dir,
    registryHost: registry.host,
    sandboxImage: `${registry.host}/test/pause:1`,
    config: (p) =>
      `root = "${p.root}"\n[fscache]\nenabled = true\nbackend = "fanotify"\nprefetch = "off"\n` +
      `[cache]\nmax_size = "${MAX}"\nlow_water_percent = 80\n` +
      `[metrics]\naddress = "${join(dir, 'metrics.sock')}"\n` +
      `[registry]\nplain_http = true\nconfig_path = "${p.certsDir}"\n`,
  });
  lazysnapd = node.lazysnapd;
  cri = node.cri;
}, { timeout: 20 * 60_000 });

after(async () => {
  await node?.stop();
  await registry?.stop().catch(() => {});
  if (dir) await removeTempDir(dir);
}, { timeout: 120_000 });

const status = async () => JSON.parse((await runOk(process.execPath, [CLI, 'status', '--json', '--address', lazysnapd!.address])).stdout);
const logs = async () => (node ? node.logs() : '');

test('three images of twice max_size: the idle ones are culled, least recently used first, to under the bound; a running container reads on, byte-exact', { timeout: 900_000 }, async (t) => {
  for (const ref of refs) await cri.pullImage(ref);
  // the first image's container reads one file every second for 12 s, across the culling
  const reader = cri.runToCompletion(refs[0], ['/bin/sh', '-c', `for f in /data/*; do sha256sum "$f" || exit 1; sleep 1; done`],
    { logRoot: join(dir, 'pod-logs'), name: 'long-reader', timeoutMs: 300_000 });
  // a second lazysnapd on the same root, while that container reads: refused in one line naming the first; the first serves on
  await new Promise((r) => setTimeout(r, 1500));
  const second = await run(process.execPath, [LAZYSNAPD_JS, '--config', `${lazysnapd!.root}.config.toml`, '--root', lazysnapd!.root, '--address', join(dir, 'second.sock')], { timeoutMs: 30_000 });
  assert.equal(second.code, 1, second.stderr);
  assert.match(second.stderr.trim(), new RegExp(`^lazysnapd: root ${lazysnapd!.root} is in use by lazysnapd pid ${lazysnapd!.proc.pid} \\(serving ${lazysnapd!.address}\\)[^\\n]*$`));
  // the other two are read whole, one after the other, and their containers exit
  for (const n of [1, 2]) {
    const r = await cri.runToCompletion(refs[n], ['/bin/sh', '-c', 'sha256sum /data/*'], { logRoot: join(dir, 'pod-logs'), name: `read-${n}` });
    assert.equal(r.exitCode, 0, `${r.logs}${await logs()}`);
    for (let i = 0; i < FILES; i++) assert.match(r.stdout, new RegExp(`^${digests[n][i]}  /data/f${String(i).padStart(2, '0')}$`, 'm'));
  }
  // within a few checks (every 5 s) the cache is back under its bound while the first container still runs
  let s = await status();
  for (let t0 = Date.now(); Date.now() - t0 < 30_000 && !(s.cache.usage <= MAX && s.cache.evictions >= 1); s = await status()) {
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.ok(s.cache.usage <= MAX, `usage ${s.cache.usage} > ${MAX}${await logs()}`);
  assert.ok(s.cache.evictions >= 1, `no eviction: ${JSON.stringify(s.cache)}${await logs()}`);
  const kept = s.images.map((i: { imageRef: string }) => i.imageRef);
  const culled = fs.readFileSync(lazysnapd!.logPath, 'utf8').split('\n').filter((l) => l.includes('culled an image')).map((l) => JSON.parse(l));
  t.diagnostic(`bound ${MAX} bytes: usage ${s.cache.usage} after ${s.cache.evictions} images culled (${culled.map((c) => `${c.fsid} freed ${c.freed}`).join(', ')}); kept ${kept.join(', ')}`);
  assert.ok(kept.includes(refs[0]), `the running container's image is kept: ${kept}`);
  assert.ok(!kept.includes(refs[1]), `the least recently used idle image went first: ${kept}`);
  const r = await reader;
  assert.equal(r.exitCode, 0, `${r.logs}${await logs()}`);
  for (let i = 0; i < FILES; i++) assert.match(r.stdout, new RegExp(`^${digests[0][i]}  /data/f${String(i).padStart(2, '0')}$`, 'm'));
  const m = await scrape(join(dir, 'metrics.sock'));
  assert.ok(total(m, 'snapshotter_cache_blobs_deleted_total') >= 1, 'evicted blobs are counted');
  assert.match(fs.readFileSync(lazysnapd!.logPath, 'utf8'), /culled an image no container uses from the cache/);
  // a culled image runs again: mounted lazily at its next container
  const again = await cri.runToCompletion(refs[1], ['/bin/sh', '-c', 'sha256sum /data/f00'], { logRoot: join(dir, 'pod-logs'), name: 'again' });
  assert.equal(again.exitCode, 0, again.logs);
  assert.match(again.stdout, new RegExp(`^${digests[1][0]}  /data/f00$`, 'm'));
});
