// The benchmark's images, each pushed in every form a contender pulls: the
// OCI original (overlayfs, and soci with its index as a referrer), nydus
// (lazysnap convert) and eStargz (stargz's ctr-remote). The conversions run
// once per benchmark, before anything is timed, through a containerd of
// their own.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { startContainerd } from '../../test/support/containerd';
import { BIG_START_COMMAND, cachedBigImage } from '../../test/support/debian-big';
import { cachedDebianPythonImage } from '../../test/support/debian-python';
import { buildBusyboxImage, pushOciLayout } from '../../test/support/images';
import { bin } from '../../test/support/bins';
import { runOk } from '../../test/support/proc';
import { pushEstargz, pushSociIndex } from './peers';

const DATA_MB = Number(process.env.STARTUP_DATA_MB ?? 64);
const CLI = join(__dirname, '../../cmd/lazysnap.js');
/** the nydus images' chunk size (lazysnap convert --chunk-size) */
export const CHUNK_SIZE = process.env.STARTUP_CHUNK_SIZE ?? '1MiB';

export interface BenchImage {
  name: string;
  /** repository:tag of each form, on the benchmark's registry */
  repos: { oci: string; nydus: string; estargz: string };
  command: string[];
  /** the OCI original's blobs as pushed (compressed) */
  ociBytes: number;
  /** its files' bytes once unpacked */
  rootfsBytes: number;
  /** what the start reads, measured where the image was built (see debian-big.ts), if it was */
  startReadBytes?: number;
}

interface Original {
  key: string;
  name: string;
  layoutDir: string;
  ref: string;
  command: string[];
  rootfsBytes: number;
  startReadBytes?: number;
}

const layoutBytes = (layoutDir: string) =>
  fs.readdirSync(join(layoutDir, 'blobs', 'sha256')).reduce((n, f) => n + fs.statSync(join(layoutDir, 'blobs', 'sha256', f)).size, 0);

/** busybox + a data layer of random bytes the container never reads. */
async function busybox(dir: string): Promise<Original> {
  const bb = await buildBusyboxImage(join(dir, 'busybox'));
  const data = join(dir, 'data');
  fs.mkdirSync(data, { recursive: true });
  fs.writeFileSync(join(data, 'big'), crypto.randomBytes(DATA_MB << 20));
  await runOk('umoci', ['insert', '--image', `${bb.layoutDir}:${bb.ref}`, data, '/data'], { timeoutMs: 600_000 });
  fs.rmSync(data, { recursive: true });
  const busyboxBytes = fs.statSync(bin('busybox')).size;
  return { key: 'busybox', name: `busybox + ${DATA_MB} MiB data layer`, ...bb, command: ['/bin/sh', '-c', 'echo ready'], rootfsBytes: busyboxBytes + (DATA_MB << 20) };
}

/** debian minbase + python3-minimal, two layers, built on the host (test/support/debian-python.ts). */
function debianPython(): Original {
  const dp = cachedDebianPythonImage();
  return { key: 'debian-python', name: 'debian + python3', layoutDir: dp.layoutDir, ref: dp.ref, command: ['python3', '-c', 'print("ready")'], rootfsBytes: dp.expect.rootfsBytes };
}

/** debian + scipy, pandas, matplotlib, sklearn + a JDK, 1.5 GB, built on the host (test/support/debian-big.ts). */
function big(): Original {
  const b = cachedBigImage();
  return { key: 'big', name: 'debian + scipy stack + JDK', layoutDir: b.layoutDir, ref: b.ref, command: BIG_START_COMMAND, rootfsBytes: b.expect.rootfsBytes, startReadBytes: b.expect.start.readBytes };
}

const ORIGINALS: Record<string, (dir: string) => Promise<Original> | Original> = {
  busybox,
  'debian-python': debianPython,
  big,
};

/** `forms`: which converted forms to push besides the OCI original (the peers' take minutes for the big image). */
export async function prepareImages(dir: string, registryHost: string, wanted: string[], forms: { nydus: boolean; estargz: boolean; soci: boolean } = { nydus: true, estargz: true, soci: true }): Promise<BenchImage[]> {
  const unknown = wanted.filter((w) => !ORIGINALS[w]);
  if (unknown.length) throw new Error(`STARTUP_IMAGES: no image ${unknown.join(', ')}; there are ${Object.keys(ORIGINALS).join(', ')}`);
  fs.mkdirSync(dir, { recursive: true });
  const prep = await startContainerd({ dir: join(dir, 'containerd'), snapshotterSocket: join(dir, 'unused.sock'), snapshotterName: 'unused', registryHost, namespace: 'prep' });
  const out: BenchImage[] = [];
  try {
    for (const key of wanted) {
      const o = await ORIGINALS[key](join(dir, key));
      const repo = `test/${key}`;
      const repos = { oci: `${repo}:1`, nydus: `${repo}-nydus:1`, estargz: `${repo}-estargz:1` };
      const url = `http://${registryHost}`;
      await pushOciLayout(o.layoutDir, o.ref, url, repos.oci);
      if (forms.nydus) {
        const nydus = join(dir, `${key}-nydus`);
        await runOk(process.execPath, [CLI, 'convert', '--chunk-size', CHUNK_SIZE, `oci:${o.layoutDir}:${o.ref}`, `oci:${nydus}:1`], { timeoutMs: 1_800_000 });
        await pushOciLayout(nydus, '1', url, repos.nydus);
        fs.rmSync(nydus, { recursive: true }); // the guest's /run is memory
      }
      if (forms.estargz || forms.soci) {
        // the peers' tools work on the original in a containerd's content store: pulled once for both
        await prep.ctrOk(['image', 'pull', '--plain-http', `${registryHost}/${repos.oci}`], { timeoutMs: 1_800_000 });
        if (forms.estargz) await pushEstargz(prep, `${registryHost}/${repos.oci}`, `${registryHost}/${repos.estargz}`);
        if (forms.soci) await pushSociIndex(prep, `${registryHost}/${repos.oci}`, join(dir, key));
        // the prep containerd's copies are not needed again
        await prep.ctr(['image', 'rm', `${registryHost}/${repos.oci}`, `${registryHost}/${repos.estargz}`]);
      }
      out.push({ name: o.name, repos, command: o.command, ociBytes: layoutBytes(o.layoutDir), rootfsBytes: o.rootfsBytes, startReadBytes: o.startReadBytes });
      console.error(`prepared ${o.name}`);
    }
  } finally {
    await prep.stop();
  }
  return out;
}
