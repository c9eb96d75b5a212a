// The nydus images that kernel/lazy-pull and kernel/learn push to their
// registries, made by `lazysnap convert`. The suite runs kernel/lazy-pull
// three times (containerd 1.6, 1.7 and 2.x), and in the guest these
// conversions took about 40 s of each run: integration/kernel.test.ts makes
// them once, on the host, and names their directory in CONVERTED_IMAGES_ENV
// (the guest reads it through hostfs). A guest run without it (by hand)
// makes its own. Conversion itself is tested on the host (integration/convert-*).
import crypto from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { buildBusyboxImage } from './images';
import { cachedDebianPythonImage } from './debian-python';
import { runOk } from './proc';

export const CONVERTED_IMAGES_ENV = 'LAZYSNAP_CONVERTED_IMAGES';
/** Each of /data/big1 and /data/big2, MiB: random, so reads take a while and span many chunks. */
export const BIG_MB = 32;

/** OCI layouts of nydus images, each tagged '1'. */
export interface ConvertedImages {
  /** busybox alone */
  plain: string;
  /** busybox and /data/big1, /data/big2 (its first layer is `plain`'s, so the two share a blob) */
  data: string;
  /** busybox and 4 MiB of random /data/warm, 256 KiB chunks: blobs and chain IDs of its own (the warm-on-pull test) */
  warm: string;
  /** debian+python (test/support/debian-python.ts) */
  python: string;
  /** sha256 of /data/big1 and /data/big2 */
  bigSha: Record<string, string>;
}

const CLI = join(__dirname, '../../cmd/lazysnap.js');
const convert = (args: string[]) => runOk(process.execPath, [CLI, 'convert', ...args], { timeoutMs: 600_000 });

/** Makes the images in `dir` (which must not hold them yet). */
export async function makeConvertedImages(dir: string): Promise<ConvertedImages> {
  fs.mkdirSync(dir, { recursive: true });
  const out: ConvertedImages = { plain: join(dir, 'nydus-plain'), data: join(dir, 'nydus-data'), warm: join(dir, 'nydus-warm'), python: join(dir, 'nydus-python'), bigSha: {} };
  const bb = await buildBusyboxImage(join(dir, 'busybox'));
  await convert([`oci:${bb.layoutDir}:${bb.ref}`, `oci:${out.plain}:1`]);
  /** busybox and a layer of random files at /data (`umoci insert` into a copy of the busybox layout), converted */
  const withData = async (name: string, files: Record<string, number>, to: string, convertArgs: string[] = []) => {
    const layout = join(dir, `busybox-${name}`);
    const data = join(dir, `data-${name}`);
    fs.cpSync(bb.layoutDir, layout, { recursive: true });
    fs.mkdirSync(data);
    const sha: Record<string, string> = {};
    for (const [file, bytes] of Object.entries(files)) {
      const b = crypto.randomBytes(bytes);
      fs.writeFileSync(join(data, file), b);
      sha[file] = crypto.createHash('sha256').update(b).digest('hex');
    }
    await runOk('umoci', ['insert', '--image', `${layout}:${bb.ref}`, data, '/data'], { timeoutMs: 300_000 });
    await convert([...convertArgs, `oci:${layout}:${bb.ref}`, `oci:${to}:1`]);
    fs.rmSync(data, { recursive: true });
    fs.rmSync(layout, { recursive: true });
    return sha;
  };
  out.bigSha = await withData('big', { big1: BIG_MB << 20, big2: BIG_MB << 20 }, out.data);
  await withData('warm', { warm: 4 << 20 }, out.warm, ['--chunk-size', '256KiB']);
  fs.rmSync(join(dir, 'busybox'), { recursive: true });
  const dp = cachedDebianPythonImage();
  await convert([`oci:${dp.layoutDir}:${dp.ref}`, `oci:${out.python}:1`]);
  fs.writeFileSync(join(dir, 'images.json'), JSON.stringify(out));
  return out;
}

/** The images integration/kernel.test.ts made for this run, if it did. */
export function preparedConvertedImages(): ConvertedImages | undefined {
  const dir = process.env[CONVERTED_IMAGES_ENV];
  return dir ? (JSON.parse(fs.readFileSync(join(dir, 'images.json'), 'utf8')) as ConvertedImages) : undefined;
}
