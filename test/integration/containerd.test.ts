// End to end with a real containerd 1.6 and lazysnapd as its proxy
// snapshotter: pull a busybox image from a local registry, run it, and
// remove everything again.
//
// LAZYSNAP_IT_SNAPSHOTTER=overlayfs runs the same steps against containerd's
// built-in snapshotter, to check the harness without lazysnapd.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { requireBinaries } from '../support/bins';
import { startContainerd, type Containerd } from '../support/containerd';
import { buildBusyboxImage, pushOciLayout, readImageConfig } from '../support/images';
import { startLazysnapd, type Lazysnapd } from '../support/lazysnapd';
import { run, tail } from '../support/proc';
import { startRegistry, type Registry } from '../support/registry';
import { SnapshotsClient } from '../support/snapshots-client';
import { makeTempDir, removeTempDir } from '../support/tmp';
import { waitFor } from '../support/wait';

const SNAPSHOTTER = process.env.LAZYSNAP_IT_SNAPSHOTTER ?? 'lazysnap';
const useLazysnap = SNAPSHOTTER === 'lazysnap';

let dir: string | undefined;
let registry: Registry | undefined;
let daemon: Lazysnapd | undefined;
let ctrd: Containerd | undefined;
let ref = '';
let layerChainId = '';

before(async () => {
  requireBinaries(['containerd', 'ctr', 'shim', 'runc', 'registry', 'umoci', 'busybox']);
  dir = await makeTempDir('ctrd');
  registry = await startRegistry({ dir: join(dir, 'registry') });
  const img = await buildBusyboxImage(join(dir, 'image'));
  await pushOciLayout(img.layoutDir, img.ref, registry.url, 'test/busybox:1');
  ref = `${registry.host}/test/busybox:1`;
  // One layer: its chain ID is its diff ID.
  layerChainId = (await readImageConfig(img.layoutDir, img.ref)).config.rootfs.diff_ids[0];

  const snapSock = join(dir, 'lazysnap.sock');
  if (useLazysnap) daemon = await startLazysnapd({ root: join(dir, 'lazysnap'), address: snapSock });
  ctrd = await startContainerd({ dir: join(dir, 'containerd'), snapshotterSocket: snapSock, registryHost: registry.host });
}, { timeout: 120_000 });

after(async () => {
  const errors: unknown[] = [];
  const attempt = async (f: (() => Promise<void>) | undefined) => {
    try { await f?.(); } catch (e) { errors.push(e); }
  };
  await attempt(ctrd?.stop);
  await attempt(daemon && (() => daemon!.stop()));
  await attempt(registry?.stop);
  if (dir && !process.env.LAZYSNAP_KEEP_TMP) await attempt(() => removeTempDir(dir!));
  else if (dir) console.log(`# kept ${dir}`);
  if (errors.length > 0) throw new AggregateError(errors, 'teardown failed');
});

/** ctr that fails with both daemons' log tails attached. */
async function ctr(args: string[]) {
  const r = await ctrd!.ctr(args);
  if (r.code !== 0) {
    assert.fail(`ctr ${args.join(' ')} exited ${r.code}\n--- stderr ---\n${r.stderr}\n--- stdout ---\n${r.stdout}` +
      `\n--- containerd log ---\n${await tail(ctrd!.logPath, 3000)}` +
      (daemon ? `\n--- lazysnapd log ---\n${await tail(daemon.logPath, 3000)}` : ''));
  }
  return r;
}

/** ctr run --rm of a shell command in `ref`, output read from a bind-mounted file; fails like ctr(). */
async function ctrRun(id: string, command: string) {
  const r = await ctrd!.ctrRun({ snapshotter: SNAPSHOTTER, ref, id, command });
  if (r.code !== 0) {
    assert.fail(`ctr run ${command} exited ${r.code}\n--- stderr ---\n${r.stderr}\n--- stdout ---\n${r.stdout}` +
      `\n--- containerd log ---\n${await tail(ctrd!.logPath, 3000)}` +
      (daemon ? `\n--- lazysnapd log ---\n${await tail(daemon.logPath, 3000)}` : ''));
  }
  return r;
}

interface SnapshotRow { key: string; parent: string; kind: string }

async function snapshotRows(): Promise<SnapshotRow[]> {
  const r = await ctr(['snapshots', '--snapshotter', SNAPSHOTTER, 'ls']);
  return r.stdout.trim().split('\n').slice(1).filter(Boolean).map((l) => {
    const f = l.trim().split(/\s+/);
    // KEY PARENT KIND; PARENT is empty for base layers.
    return f.length === 2 ? { key: f[0], parent: '', kind: f[1] } : { key: f[0], parent: f[1], kind: f[2] };
  });
}

test('ctr images pull --snapshotter lazysnap unpacks the image', { timeout: 120_000 }, async () => {
  await ctr(['images', 'pull', '--plain-http', '--snapshotter', SNAPSHOTTER, ref]);
  const r = await ctr(['images', 'ls', '-q']);
  assert.ok(r.stdout.split('\n').includes(ref), `images ls does not list ${ref}:\n${r.stdout}`);
});

test('ctr run --snapshotter lazysnap runs a container', { timeout: 120_000 }, async () => {
  const id = `lazysnap-it-${process.pid}-${Date.now()}`; // runc state under /run/containerd is shared
  const r = await ctrRun(id, 'echo hello-from-lazysnap; ls /bin | wc -l');
  // /bin: busybox + sh ls cat echo sleep wc
  assert.equal(r.stdout, 'hello-from-lazysnap\n7\n');
});

test('ctr snapshots ls shows the committed layer', async () => {
  const rows = await snapshotRows();
  const layer = rows.find((s) => s.key === layerChainId);
  assert.ok(layer, `no snapshot ${layerChainId} in ${JSON.stringify(rows)}`);
  assert.equal(layer.kind, 'Committed');
  assert.equal(layer.parent, '');
  assert.ok(!rows.some((s) => s.kind === 'Active'), `active snapshot left after ctr run --rm: ${JSON.stringify(rows)}`);
});

test('removing the image and its snapshots leaves lazysnapd empty', { timeout: 60_000 }, async () => {
  await ctr(['images', 'rm', '--sync', ref]);
  // Children before parents; the image's GC may already have taken some.
  const rows = await snapshotRows();
  const depth = (k: string): number => {
    const p = rows.find((s) => s.key === k)?.parent;
    return p ? 1 + depth(p) : 0;
  };
  for (const s of [...rows].sort((a, b) => depth(b.key) - depth(a.key))) {
    await ctr(['snapshots', '--snapshotter', SNAPSHOTTER, 'rm', s.key]);
  }
  assert.deepEqual(await snapshotRows(), []);
  if (!daemon) return;
  // containerd removes backend snapshots in its asynchronous GC: poll the daemon itself.
  const client = new SnapshotsClient(daemon.address);
  try {
    let last: string[] = [];
    await waitFor(async () => {
      last = (await client.list()).map((i) => i.name);
      return last.length === 0;
    }, { what: 'lazysnapd to hold no snapshots after containerd GC', timeoutMs: 30_000 }).catch((e: Error) => {
      throw new Error(`${e.message}; still listed: ${JSON.stringify(last)}`);
    });
  } finally {
    client.close();
  }
});

// `lazysnap pull` through containerd's own services (content, leases, diff,
// images, snapshots): a plain image is fetched and unpacked as ctr would;
// GC keeps it once the pull's lease is gone.
test('lazysnap pull of a plain image: ctr lists it, ctr run runs it, and a GC keeps it', { timeout: 120_000 }, async (t) => {
  if (!useLazysnap) return t.skip('the overlayfs check of the harness');
  const cli = join(__dirname, '../../cmd/lazysnap.js');
  const r = await run(process.execPath, [cli, 'pull', ref, '--address', ctrd!.address, '-n', ctrd!.namespace,
    '--hosts-dir', ctrd!.hostsDir, '--json'], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `${r.stderr}\n--- containerd log ---\n${await tail(ctrd!.logPath, 3000)}`);
  assert.deepEqual((JSON.parse(r.stdout) as { layers: { how: string }[] }).layers.map((l) => l.how), ['unpacked']);
  const lease = (await ctr(['leases', 'create'])).stdout.trim().split(/\s+/)[0];
  await ctr(['leases', 'delete', '--sync', lease]); // a synchronous GC
  assert.ok((await ctr(['images', 'ls', '-q'])).stdout.split('\n').includes(ref));
  assert.ok((await snapshotRows()).some((s) => s.key === layerChainId && s.kind === 'Committed'), 'the layer survived GC');
  const id = `lazysnap-pull-${process.pid}-${Date.now()}`;
  const out = await ctrRun(id, 'echo pulled-by-lazysnap');
  assert.equal(out.stdout, 'pulled-by-lazysnap\n');
  await ctr(['images', 'rm', '--sync', ref]);
});

test('lazysnap pull says what is wrong: no containerd at the address, no such image', { timeout: 60_000 }, async (t) => {
  if (!useLazysnap) return t.skip('the overlayfs check of the harness');
  const cli = join(__dirname, '../../cmd/lazysnap.js');
  const noCtrd = await run(process.execPath, [cli, 'pull', ref, '--address', join(dir!, 'none.sock'), '--hosts-dir', ctrd!.hostsDir]);
  assert.equal(noCtrd.code, 1);
  const errors = noCtrd.stderr.trim().split('\n').filter((l) => l.startsWith('lazysnap: '));
  assert.equal(errors.length, 1, noCtrd.stderr);
  assert.match(errors[0], /UNAVAILABLE|No connection|ENOENT/);
  assert.doesNotMatch(noCtrd.stderr, /\n\s+at /, 'no stack trace');
  const missing = await run(process.execPath, [cli, 'pull', `${registry!.host}/test/none:1`, '--address', ctrd!.address, '--hosts-dir', ctrd!.hostsDir]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^lazysnap: .*(not found|NOT_FOUND|404|unknown)/im);
});
