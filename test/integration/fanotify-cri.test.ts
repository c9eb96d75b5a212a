// Lazy pull-and-run on the host's own kernel, through the fanotify backend
// (no UML, no fscache): containerd's CRI pulls the debian+python image
// (converted by lazysnap, in a local registry) into lazysnap; python3 in a
// container checksums its interpreter and standard library, whose bytes
// arrive from the registry through fanotify pre-content events. containerd
// downloads no data blob. Runs with the containerd on PATH (bookworm's
// 1.6.20), or the one in LAZYSNAP_CONTAINERD_DIR (containerd-versions.test).
// With LAZYSNAP_TEST_BACKEND=download (download-cri.test): no lazy backend,
// and the image still pulls and runs, from blobs lazysnapd downloads whole.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { requireBinaries } from '../support/bins';
import type { CriClient } from '../support/cri';
import { startCriNode, type CriNode } from '../support/cri-node';
import type { Lazysnapd } from '../support/lazysnapd';
import { runOk } from '../support/proc';
import type { Registry } from '../support/registry';
import { makeTempDir, removeTempDir } from '../support/tmp';
import { readNydusLayout } from '../support/oci-layout';
import { pushPythonAndPause, PYTHON_TREE_DIGEST, type DebianPythonExpect } from '../support/debian-python';
import { containerdVersion } from '../support/containerd';

const CLI = join(__dirname, '../../cmd/lazysnap.js');
const BACKEND = process.env.LAZYSNAP_TEST_BACKEND === 'download' ? 'download' : 'fanotify';
let dir = '';
let registry: Registry | undefined;
let lazysnapd: Lazysnapd | undefined;
let node: CriNode | undefined;
let cri: CriClient;
let pyRef = '';
let py: { expect: DebianPythonExpect; config: string; bootstrap: string; blobs: string[] } | undefined;

before(async () => {
  requireBinaries(['containerd', 'ctr', 'shim', 'runc', 'registry']);
  dir = await makeTempDir('fanotify-cri');
  const { dp, pyNydus, pauseRef, ...pushed } = await pushPythonAndPause(dir);
  registry = pushed.registry;
  pyRef = pushed.pyRef;
  const pn = await readNydusLayout(pyNydus, '1');
  py = {
    expect: dp.expect,
    config: pn.manifest.config.digest,
    bootstrap: pn.manifest.layers[pn.manifest.layers.length - 1].digest,
    blobs: pn.manifest.layers.slice(0, -1).map((l) => l.digest),
  };
  node = await startCriNode({
    dir,
    registryHost: registry.host,
    sandboxImage: pauseRef,
    config: (p) =>
      `root = "${p.root}"\n[log]\nlevel = "info"\n` +
      `[fscache]\nenabled = true\nbackend = "${BACKEND}"\nprefetch = "off"\n` +
      `[registry]\nplain_http = true\nconfig_path = "${p.certsDir}"\n`,
  });
  lazysnapd = node.lazysnapd;
  cri = node.cri;
  console.log(`# containerd ${containerdVersion().text}, lazysnap backend ${BACKEND}`);
}, { timeout: 30 * 60_000 });

after(async () => {
  await node?.stop();
  await registry?.stop().catch(() => {});
  if (dir) await removeTempDir(dir);
}, { timeout: 120_000 });

const logs = async () => (node ? node.logs() : '');

/** Paths containerd GETs from the registry for a repository (its user agent), from the access log. */
const containerdGets = (repo: string) =>
  fs.readFileSync(registry!.logPath, 'utf8').split('\n')
    .filter((l) => l.includes('containerd/'))
    .map((l) => new RegExp(`"GET (/v2/${repo}/[^ ?"]+)`).exec(l)?.[1])
    .filter((x): x is string => !!x);

test(`CRI PullImage of the debian+python image into lazysnap (${BACKEND}) fetches only its manifest, config and bootstrap`, { timeout: 300_000 }, async () => {
  await cri.pullImage(pyRef).catch(async (e) => assert.fail(`${(e as Error).message}${await logs()}`));
  for (const t0 = Date.now(); Date.now() - t0 < 5000 && !containerdGets('test/debian-python').some((g) => g.endsWith(py!.bootstrap));) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const gets = containerdGets('test/debian-python');
  const blobs = new Set(gets.filter((g) => g.includes('/blobs/')).map((g) => g.split('/blobs/')[1]));
  assert.deepEqual([...blobs].sort(), [py!.config, py!.bootstrap].sort(), `containerd's GETs: ${gets.join(' ')}`);
});

test(`python3 in a debian+python container checksums its files, which come from the registry through lazysnap (${BACKEND})`, { timeout: 600_000 }, async (t) => {
  const r = await cri
    .runToCompletion(pyRef, ['python3', '-B', '-c', PYTHON_TREE_DIGEST], { logRoot: join(dir, 'pod-logs'), name: 'python' })
    .catch(async (e) => assert.fail(`${(e as Error).message}${await logs()}`));
  assert.equal(r.exitCode, 0, `${r.logs}${await logs()}`);
  const e = py!.expect;
  assert.match(r.stdout, new RegExp(`^file ${e.python} ${e.pythonSha256}$`, 'm'), r.logs);
  assert.match(r.stdout, new RegExp(`^tree ${e.stdlib} ${e.stdlibFiles} ${e.stdlibDigest}$`, 'm'), r.logs);
  assert.deepEqual(containerdGets('test/debian-python').filter((g) => py!.blobs.some((d) => g.endsWith(d))), [], 'containerd never downloads a data blob');
  const s = JSON.parse((await runOk(process.execPath, [CLI, 'status', '--json', '--address', lazysnapd!.address])).stdout);
  const img = s.images.find((i: { imageRef: string }) => i.imageRef === pyRef);
  assert.ok(img, 'the image runs lazily');
  assert.equal(img.backend, BACKEND);
  assert.equal(s.backend, BACKEND);
  const lazysnapGot = py!.blobs.filter((d) => fs.readFileSync(registry!.logPath, 'utf8').split('\n').some((l) => l.includes('lazysnap/') && l.includes(`/blobs/${d}`)));
  if (BACKEND === 'download') {
    assert.deepEqual(lazysnapGot.sort(), [...py!.blobs].sort(), 'lazysnapd downloaded every data blob itself');
    assert.match(fs.readFileSync(lazysnapd!.logPath, 'utf8'), /nydus images are downloaded whole before they run/);
    return;
  }
  assert.ok(lazysnapGot.length > 0, 'the worker fetched from the registry');
  assert.equal(s.worker.stats.eventsDenied, 0);
  const total = img.blobs.reduce((n: number, b: { bytes: number }) => n + b.bytes, 0);
  const present = img.blobs.reduce((n: number, b: { bytesPresent: number | null }) => n + (b.bytesPresent ?? 0), 0);
  t.diagnostic(`python run: ${present} of ${total} uncompressed blob bytes present; ${s.worker.stats.events} events, ${s.worker.stats.fills} fills`);
  assert.ok(s.worker.stats.fills > 0, 'bytes were filled on demand');
});
