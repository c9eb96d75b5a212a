// bench/startup: time from CRI PullImage to a container's first output,
// lazysnap with a nydus image against containerd's overlayfs snapshotter
// pulling the OCI original in full. Directly, and behind a shaping proxy
// (+20 ms RTT, 200 Mbit/s). Runs in the UML guest: npm run bench:startup
import crypto from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import type net from 'node:net';
import { buildPauseImage, startGuestContainerd } from '../../test/support/guest-containerd';
import { guestDir, requireFscacheKernel } from '../../test/support/guest';
import { buildBusyboxImage, pushOciLayout } from '../../test/support/images';
import { startLazysnapd } from '../../test/support/lazysnapd';
import { run, runOk } from '../../test/support/proc';
import { unmountAll } from '../../test/support/tmp';
import { startRegistry } from '../../test/support/registry';
import { startShaper } from '../fetch/shaper';
import { cachedDebianPythonImage } from '../../test/support/debian-python';

const DATA_MB = Number(process.env.STARTUP_DATA_MB ?? 64);
const CLI = join(__dirname, '../../cmd/lazysnap.js');

/** Bytes the registry sent for requests logged after `from` (logrus: http.response.written). */
function bytesServed(logPath: string, from: number): number {
  const text = fs.readFileSync(logPath, 'utf8').slice(from);
  let n = 0;
  for (const m of text.matchAll(/http\.response\.written=(\d+)/g)) n += Number(m[1]);
  return n;
}

interface BenchImage {
  name: string;
  /** repositories of the OCI original and the converted image */
  oci: string;
  nydus: string;
  command: string[];
  ociBytes: number;
}

const layoutBytes = (layoutDir: string) =>
  fs.readdirSync(join(layoutDir, 'blobs', 'sha256')).reduce((n, f) => n + fs.statSync(join(layoutDir, 'blobs', 'sha256', f)).size, 0);

async function pushBoth(dir: string, name: string, layoutDir: string, ref: string, registryUrl: string): Promise<void> {
  await pushOciLayout(layoutDir, ref, registryUrl, `test/${name}:1`);
  const nydus = join(dir, `${name}-nydus`);
  await runOk(process.execPath, [CLI, 'convert', `oci:${layoutDir}:${ref}`, `oci:${nydus}:1`], { timeoutMs: 600_000 });
  await pushOciLayout(nydus, '1', registryUrl, `test/${name}-nydus:1`);
  fs.rmSync(nydus, { recursive: true }); // the guest's /run is memory
}

/** busybox + a data layer the container never reads. */
async function busyboxImage(dir: string, registryUrl: string): Promise<BenchImage> {
  const bb = await buildBusyboxImage(join(dir, 'app'));
  const data = join(dir, 'data');
  fs.mkdirSync(data);
  fs.writeFileSync(join(data, 'big'), crypto.randomBytes(DATA_MB << 20));
  await runOk('umoci', ['insert', '--image', `${bb.layoutDir}:${bb.ref}`, data, '/data'], { timeoutMs: 600_000 });
  fs.rmSync(data, { recursive: true });
  await pushBoth(dir, 'app', bb.layoutDir, bb.ref, registryUrl);
  return { name: `busybox + ${DATA_MB} MiB data layer`, oci: 'app', nydus: 'app-nydus', command: ['/bin/sh', '-c', 'echo ready'], ociBytes: layoutBytes(bb.layoutDir) };
}

/** debian minbase + python3-minimal, two layers, built on the host (test/support/debian-python.ts). */
async function debianPythonImage(dir: string, registryUrl: string): Promise<BenchImage> {
  const dp = cachedDebianPythonImage();
  await pushBoth(dir, 'python', dp.layoutDir, dp.ref, registryUrl);
  return { name: 'debian + python3', oci: 'python', nydus: 'python-nydus', command: ['python3', '-c', 'print("ready")'], ociBytes: layoutBytes(dp.layoutDir) };
}

async function main() {
  const fscacheDir = requireFscacheKernel();
  const dir = guestDir('startup');
  const registry = await startRegistry({ dir: join(dir, 'registry') });
  const wanted = (process.env.STARTUP_IMAGES ?? 'busybox,debian-python').split(',');
  const images: BenchImage[] = [];
  if (wanted.includes('busybox')) images.push(await busyboxImage(dir, registry.url));
  if (wanted.includes('debian-python')) images.push(await debianPythonImage(dir, registry.url));
  const pause = await buildPauseImage(join(dir, 'pause'));
  await pushOciLayout(pause.layoutDir, pause.ref, registry.url, 'test/pause:1');

  const shaper: net.Server = await startShaper({ upstreamHost: '127.0.0.1', upstreamPort: registry.port, delayMs: 10, bitsPerSec: 200e6, windowBytes: 4 << 20 });
  const shapedHost = `127.0.0.1:${(shaper.address() as net.AddressInfo).port}`;

  const rows: { image: BenchImage; net: string; mode: string; ms: number; bytes: number }[] = [];
  let runNo = 0;
  for (const image of images) {
    for (const [netName, host] of [['direct', registry.host], ['20 ms RTT, 200 Mbit/s', shapedHost]] as const) {
      for (const mode of ['overlayfs (OCI, full pull)', 'lazysnap (nydus, prefetch on pull)', 'lazysnap (nydus, on demand only)'] as const) {
        const sub = join(dir, `run-${runNo++}`);
        fs.mkdirSync(sub);
        const lazy = mode.startsWith('lazysnap');
        const lz = lazy
          ? await startLazysnapd({
              root: join(sub, 'root'),
              address: join(sub, 'lazysnap.sock'),
              config: `root = "${join(sub, 'root')}"\n[log]\nlevel = "warn"\n[fscache]\nenabled = true\ncache_dir = "${join(fscacheDir, `startup-${runNo}`)}"\nprefetch = "${mode.includes('on demand') ? 'off' : 'on-pull'}"\n[registry]\nplain_http = true\n`,
            })
          : undefined;
        const ctrd = await startGuestContainerd({
          dir: join(sub, 'containerd'),
          snapshotterSocket: lz?.address ?? join(sub, 'unused.sock'),
          criSnapshotter: lazy ? 'lazysnap' : 'overlayfs',
          registryHost: host,
          sandboxImage: `${host}/test/pause:1`,
        });
        try {
          // the sandbox image is not what is measured: pull it first
          await ctrd.cri.pullImage(`${host}/test/pause:1`);
          const ref = `${host}/test/${lazy ? image.nydus : image.oci}:1`;
          const logFrom = fs.statSync(registry.logPath).size;
          const t0 = performance.now();
          await ctrd.cri.pullImage(ref);
          const r = await ctrd.cri.runToCompletion(ref, image.command, { logRoot: join(sub, 'logs'), name: 'startup' });
          const ms = performance.now() - t0;
          if (r.exitCode !== 0 || !/ready/.test(r.stdout)) throw new Error(`${image.name}, ${mode}: container failed: ${r.logs}`);
          rows.push({ image, net: netName, mode, ms, bytes: bytesServed(registry.logPath, logFrom) });
        } finally {
          await ctrd.stop();
          await lz?.stop();
          // the image stays mounted, so its worker stays (by design): free /dev/cachefiles for the next run
          await unmountAll(sub);
          await run('pkill', ['-9', '-f', 'lazysnap-fscache-worker']);
          // containerd's content and snapshots of this run are not needed again; /run is memory
          try {
            fs.rmSync(sub, { recursive: true, force: true });
          } catch (e) {
            console.error(`could not remove ${sub}: ${(e as Error).message}`);
          }
        }
      }
    }
  }
  shaper.close();
  await registry.stop();

  console.log('bench/startup: PullImage -> first output of the container ("ready"), UML guest, containerd 1.6.20 CRI');
  console.log('| image | network | snapshotter | pull to first output | bytes from the registry |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const r of rows) {
    console.log(`| ${r.image.name} (${(r.image.ociBytes / 2 ** 20).toFixed(1)} MiB) | ${r.net} | ${r.mode} | ${(r.ms / 1000).toFixed(2)} s | ` +
      `${(r.bytes / 2 ** 20).toFixed(2)} MiB (${((100 * r.bytes) / r.image.ociBytes).toFixed(1)}% of the image) |`);
  }
  for (const image of images) {
    for (const n of new Set(rows.map((r) => r.net))) {
      const [full, warm, demand] = rows.filter((r) => r.image === image && r.net === n);
      console.log(`speedup (${image.name}, ${n}): ${(full.ms / demand.ms).toFixed(2)}x on demand only, ${(full.ms / warm.ms).toFixed(2)}x with prefetch on pull`);
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
