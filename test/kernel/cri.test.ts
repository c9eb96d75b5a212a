// Containers through containerd's CRI plugin with lazysnap as the CRI
// snapshotter, in the UML test kernel: what a kubelet does (PullImage,
// RunPodSandbox, CreateContainer, StartContainer, ...), spoken by our own
// CRI client. A plain OCI image from a registry in the guest is pulled,
// unpacked into lazysnapd (fscache on, as in production) and run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { requireBinaries } from '../support/bins';
import type { CriClient } from '../support/cri';
import { buildPauseImage, startGuestContainerd, type GuestContainerd } from '../support/guest-containerd';
import { guestDir, requireFscacheKernel, sha256File } from '../support/guest';
import { buildBusyboxImage, pushOciLayout, readImageConfig } from '../support/images';
import { startLazysnapd, type Lazysnapd } from '../support/lazysnapd';
import { tail } from '../support/proc';
import { startRegistry, type Registry } from '../support/registry';
import { SnapshotsClient } from '../support/snapshots-client';
import { unmountAll } from '../support/tmp';
import { waitFor } from '../support/wait';
import { Kind } from '../../snapshotter/storage/info';
import { LABEL } from '../../snapshotter/remote';
import type { WireInfo } from '../../proto/types';

let dir = '';
let registry: Registry | undefined;
let lazysnapd: Lazysnapd | undefined;
let ctrd: GuestContainerd | undefined;
let snaps: SnapshotsClient | undefined;
let cri: CriClient;

const image = { ref: '', manifestDigest: '', layerDigest: '', chainId: '' };
let pauseRef = '';

before(async () => {
  const fscacheDir = requireFscacheKernel();
  requireBinaries(['containerd', 'ctr', 'shim', 'runc', 'registry', 'umoci', 'busybox']);
  dir = guestDir('cri');

  registry = await startRegistry({ dir: join(dir, 'registry') });
  const bb = await buildBusyboxImage(join(dir, 'busybox'));
  image.manifestDigest = (await pushOciLayout(bb.layoutDir, bb.ref, registry.url, 'test/busybox:1')).digest;
  image.ref = `${registry.host}/test/busybox:1`;
  const { manifest, config } = await readImageConfig(bb.layoutDir, bb.ref);
  assert.equal(manifest.layers.length, 1, 'the busybox test image has one layer');
  image.layerDigest = manifest.layers[0].digest;
  image.chainId = config.rootfs.diff_ids[0]; // one layer: its chain ID is its diff ID
  const pause = await buildPauseImage(join(dir, 'pause'));
  await pushOciLayout(pause.layoutDir, pause.ref, registry.url, 'test/pause:1');
  pauseRef = `${registry.host}/test/pause:1`;

  const root = join(dir, 'lazysnap');
  lazysnapd = await startLazysnapd({
    root,
    address: join(dir, 'lazysnap.sock'),
    config: `root = "${root}"\n[log]\nlevel = "debug"\n` +
      `[fscache]\nenabled = true\ncache_dir = "${join(fscacheDir, 'cache-cri')}"\ntag = "lazysnap-cri"\n`,
  });
  ctrd = await startGuestContainerd({
    dir: join(dir, 'containerd'),
    snapshotterSocket: lazysnapd.address,
    registryHost: registry.host,
    sandboxImage: pauseRef,
  });
  cri = ctrd.cri;
  snaps = new SnapshotsClient(lazysnapd.address);
  console.log(`${ctrd.runtimeVersion}; containerd log ${ctrd.logPath}; lazysnapd log ${lazysnapd.logPath}`);
}, { timeout: 300_000 });

after(async () => {
  const errors: unknown[] = [];
  const attempt = async (f: (() => Promise<void>) | undefined) => {
    try { await f?.(); } catch (e) { errors.push(e); }
  };
  snaps?.close();
  await attempt(ctrd?.stop); // kills what a failed test left running
  await attempt(lazysnapd && (() => lazysnapd!.stop()));
  await attempt(registry?.stop);
  if (dir) await attempt(() => unmountAll(dir));
  if (errors.length > 0) throw new AggregateError(errors, 'teardown failed');
}, { timeout: 120_000 });

/** Both daemons' log tails, for assertion messages. */
async function logs(): Promise<string> {
  return `\n--- containerd log (${ctrd?.logPath}) ---\n${ctrd ? await tail(ctrd.logPath, 3000) : ''}` +
    `\n--- lazysnapd log (${lazysnapd?.logPath}) ---\n${lazysnapd ? await tail(lazysnapd.logPath, 3000) : ''}`;
}

function dump(infos: WireInfo[]): string {
  return JSON.stringify(infos.map((i) => ({ name: i.name, parent: i.parent, kind: i.kind, labels: i.labels })), null, 1);
}

const active = (infos: WireInfo[]) => infos.filter((i) => i.kind === Kind.Active);

test('CRI PullImage unpacks the image into lazysnap; its layer carries the cri.* labels', { timeout: 300_000 }, async (t) => {
  const t0 = performance.now();
  const imageId = await cri.pullImage(image.ref).catch(async (e) => assert.fail(`${(e as Error).message}${await logs()}`));
  t.diagnostic(`PullImage ${image.ref}: ${Math.round(performance.now() - t0)} ms`);
  assert.match(imageId, /^sha256:[0-9a-f]{64}$/);

  const status = await cri.imageStatus(image.ref);
  assert.ok(status, 'ImageStatus finds the pulled image');
  assert.equal(status.id, imageId);
  assert.ok(status.repo_tags.includes(image.ref), `repo_tags ${status.repo_tags}`);
  assert.ok(status.repo_digests.includes(`${registry!.host}/test/busybox@${image.manifestDigest}`),
    `repo_digests ${status.repo_digests}`);
  assert.ok(Number(status.size) > 0);
  assert.ok((await cri.listImages()).some((i) => i.id === imageId), 'ListImages has it');

  const infos = await snaps!.list();
  const layers = infos.filter((i) => i.labels[LABEL.imageRef] === image.ref);
  assert.equal(layers.length, 1, `one snapshot labelled with ${image.ref}:\n${dump(infos)}`);
  const [layer] = layers;
  assert.equal(layer.kind, Kind.Committed);
  assert.equal(layer.parent, '');
  // The backend name is <namespace>/<seq>/<chainID>.
  assert.match(layer.name, new RegExp(`^k8s\\.io/\\d+/${image.chainId}$`));
  assert.equal(layer.labels[LABEL.snapshotRef], image.chainId);
  assert.equal(layer.labels[LABEL.layerDigest], image.layerDigest);
  assert.equal(layer.labels[LABEL.manifestDigest], image.manifestDigest);
  assert.equal(layer.labels[LABEL.imageLayers], image.layerDigest);
  assert.deepEqual(active(infos), [], 'no extraction snapshot is left active');
});

test('a container of the pulled image runs through CRI on lazysnap; its file matches the host', { timeout: 300_000 },
  async (t) => {
    let containerKey = '';
    let layerName = '';
    const r = await cri.runToCompletion(image.ref,
      ['/bin/sh', '-c', 'echo hello from lazysnap; /bin/busybox sha256sum /bin/busybox'], {
        logRoot: join(dir, 'pod-logs'),
        name: 'checksum',
        onCreated: async ({ containerId }) => {
          // The container's rootfs is an active lazysnap snapshot on the image's layer.
          const infos = await snaps!.list();
          const mine = infos.filter((i) => i.name.endsWith(`/${containerId}`));
          assert.equal(mine.length, 1, `one snapshot for container ${containerId}:\n${dump(infos)}`);
          assert.equal(mine[0].kind, Kind.Active);
          layerName = infos.find((i) => i.labels[LABEL.imageRef] === image.ref)?.name ?? '(none)';
          assert.equal(mine[0].parent, layerName);
          containerKey = mine[0].name;
        },
      }).catch(async (e) => assert.fail(`${(e as Error).stack}${await logs()}`));
    const tm = r.timings;
    t.diagnostic(`pod (first: CRI pulls the sandbox image ${pauseRef}) ${ms(tm.podMs)}, create ${ms(tm.createMs)}, ` +
      `start ${ms(tm.startMs)}, run to exit ${ms(tm.runMs)}, teardown ${ms(tm.teardownMs)}`);
    assert.equal(r.exitCode, 0, `exit ${r.exitCode} (${r.status.reason}: ${r.status.message})\n${r.logs}`);
    assert.equal(r.stderr, '');
    const [hello, sum] = r.stdout.trimEnd().split('\n');
    assert.equal(hello, 'hello from lazysnap');
    assert.equal(sum, `${sha256File('/bin/busybox')}  /bin/busybox`);
    assert.ok(await cri.imageStatus(pauseRef), 'CRI pulled the sandbox image itself');

    // CRI deletes the container's snapshot from its metadata at once; the
    // backend's Remove follows with containerd's garbage collection. A
    // deletion during a running collection waits for the next trigger:
    // after 10 s, trigger one.
    const t0 = Date.now();
    let collected = false;
    const infos = await waitFor(async () => {
      const all = await snaps!.list();
      if (active(all).length === 0) return all;
      if (!collected && Date.now() - t0 > 10_000) {
        collected = true;
        t.diagnostic('containerd had not collected the pod\'s snapshots after 10 s: running its GC');
        await ctrd!.collectGarbage();
      }
      return false;
    }, { what: 'lazysnapd to hold no active snapshots after the pod is gone', timeoutMs: 60_000, intervalMs: 250 })
      .catch(async (e) => assert.fail(`${(e as Error).message}:\n${dump(await snaps!.list())}${await logs()}`));
    assert.ok(!infos.some((i) => i.name === containerKey), `${containerKey} is gone`);
    assert.ok(infos.some((i) => i.name === layerName), 'the image layer stays');
  });

test('a failing container: exit code and stderr come back through CRI', { timeout: 300_000 }, async (t) => {
  const r = await cri.runToCompletion(image.ref, ['/bin/sh', '-c', 'echo to-stdout; echo to-stderr >&2; exit 7'], {
    logRoot: join(dir, 'pod-logs'),
    name: 'failing',
  }).catch(async (e) => assert.fail(`${(e as Error).stack}${await logs()}`));
  const tm = r.timings;
  t.diagnostic(`pod ${ms(tm.podMs)}, create ${ms(tm.createMs)}, start ${ms(tm.startMs)}, ` +
    `run to exit ${ms(tm.runMs)}, teardown ${ms(tm.teardownMs)}`);
  assert.equal(r.exitCode, 7);
  assert.equal(r.stdout, 'to-stdout\n');
  assert.equal(r.stderr, 'to-stderr\n');
  assert.equal(r.status.reason, 'Error');
});

function ms(x: number): string {
  return `${Math.round(x)} ms`;
}
