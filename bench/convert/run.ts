// Converter throughput (#15) on two images, next to mkfs.erofs, measured in
// one run: the debootstrap minbase image (one layer) and the 1.5 GB debian +
// scipy + JDK image of the peers benchmark (three layers), when it is cached.
//
// Rivals, each run in turn with lazysnap (A B A B ...), ratio taken pair by
// pair so a drift of the machine touches both:
// - mkfs.erofs 1.9.4 --tar=f on the same gzip layers, one image per layer,
//   gunzipped by gzip -dc in a pipe (its own --ungzip fails at the end of
//   umoci's layers: "failed to gzread"; the pipe gives it a second process):
//   plain (copies file data), and zstd level 3 in 1 MiB physical clusters on
//   2 threads (what lazysnap does: 1 MiB zstd chunks);
// - mkfs.erofs 1.5 (Debian bookworm's) on the unpacked tree (minbase only:
//   1.5 has no --tar).
// Every rate divides the image's uncompressed tar bytes by wall time, so a
// ratio of rates is a ratio of times. Peak RSS and CPU (user + system, all
// processes of the command) are GNU time's: CPU against wall says how much
// of the two cores a tool keeps busy. lazysnap also
// gunzips, checks sha256 (layer digest and diff_id), blake3s every chunk
// and names its blobs by sha256.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDebootstrapImage } from '../../test/support/oci-layout';
import { BIG_IMAGE_CACHE, cachedBigImage } from '../../test/support/debian-big';
import { run, runOk } from '../../test/support/proc';
import { makeTempDir, removeTempDir } from '../../test/support/tmp';
import { median } from '../stats';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
const ROOT = path.resolve(__dirname, '../../..');
const ROUNDS = Number(process.env.CONVERT_ROUNDS ?? 3);

interface Measure {
  wallS: number;
  peakMiB: number;
  cpuS: number;
}

/** Runs a shell command under GNU time: wall seconds (our clock), peak RSS (the largest process) and CPU seconds (all of them). */
async function measure(script: string): Promise<Measure> {
  const t0 = process.hrtime.bigint();
  const r = await runOk('/usr/bin/time', ['-f', 'peak-kib %M cpu %U %S', 'bash', '-o', 'pipefail', '-c', script], { timeoutMs: 1_800_000 });
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const m = /peak-kib (\d+) cpu ([\d.]+) ([\d.]+)/.exec(r.stderr);
  if (!m) throw new Error(`no peak RSS and CPU from GNU time in: ${r.stderr.slice(-300)}`);
  return { wallS, peakMiB: Number(m[1]) / 1024, cpuS: Number(m[2]) + Number(m[3]) };
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

interface Image {
  name: string;
  layoutDir: string;
  ref: string;
  /** the gzip layer files, bottom up */
  layers: string[];
  rootfs?: string;
}

function layerFiles(layoutDir: string, ref: string): string[] {
  const index = JSON.parse(fs.readFileSync(path.join(layoutDir, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const m = index.manifests.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === ref) ?? index.manifests[0];
  const blob = (digest: string) => path.join(layoutDir, 'blobs', ...digest.split(':'));
  const manifest = JSON.parse(fs.readFileSync(blob(m.digest), 'utf8')) as { layers: { digest: string; mediaType: string }[] };
  for (const l of manifest.layers) {
    if (!l.mediaType.endsWith('gzip')) throw new Error(`${ref}: layer ${l.digest} is ${l.mediaType}, not gzip`);
  }
  return manifest.layers.map((l) => blob(l.digest));
}

interface Row {
  label: string;
  script(out: string): string;
}

async function benchImage(img: Image, dir: string, mkfs194: string): Promise<string> {
  const out = path.join(dir, 'out');
  // once, untimed: warms the page cache and reads the tar size from the converter's own count
  const first = JSON.parse((await runOk('node', [CLI, 'convert', '--json', `oci:${img.layoutDir}:${img.ref}`, `oci:${out}:bench`], { timeoutMs: 1_800_000 })).stdout) as {
    uncompressedBytes: number;
    inputBytes: number;
  };
  const bytes = first.uncompressedBytes;
  const lazysnap = (o: string) => `rm -rf ${q(o)} && exec node ${q(CLI)} convert oci:${q(img.layoutDir)}:${img.ref} oci:${q(o)}:bench >/dev/null`;
  const perLayer = (args: string) => (o: string) =>
    `rm -rf ${q(o)} && mkdir -p ${q(o)} && ` + img.layers.map((l, i) => `gzip -dc ${q(l)} | ${q(mkfs194)} --quiet --tar=f ${args} ${q(path.join(o, `layer${i}.erofs`))}`).join(' && ');
  const rivals: Row[] = [
    { label: 'gzip -dc \\| mkfs.erofs 1.9.4 --tar=f, zstd level 3, 1 MiB pclusters, 2 threads', script: perLayer('-zzstd,level=3 -C1048576 --workers=2') },
    { label: 'gzip -dc \\| mkfs.erofs 1.9.4 --tar=f, uncompressed', script: perLayer('') },
  ];
  if (img.rootfs) rivals.push({ label: 'mkfs.erofs 1.5 on the unpacked tree, uncompressed', script: (o) => `rm -rf ${q(o)} && mkdir -p ${q(o)} && exec mkfs.erofs -T0 ${q(path.join(o, 'plain.erofs'))} ${q(img.rootfs!)} >/dev/null` });

  const lz: Measure[] = [];
  const results = rivals.map(() => ({ runs: [] as Measure[], ratios: [] as number[] }));
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < rivals.length; i++) {
      const a = await measure(lazysnap(out));
      const b = await measure(rivals[i].script(path.join(dir, 'rival')));
      lz.push(a);
      results[i].runs.push(b);
      results[i].ratios.push(b.wallS / a.wallS);
    }
  }
  const mbs = (s: number) => (bytes / 1e6 / s).toFixed(1);
  const lines = [
    `#### ${img.name}: ${img.layers.length} gzip layer(s), ${(first.inputBytes / 1e6).toFixed(1)} MB in, ${(bytes / 1e6).toFixed(1)} MB of tar`,
    '',
    '| tool | wall (median) | MB/s | CPU, user + system (median) | peak RSS | lazysnap ÷ it (speed, median of pairs) |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  const wall = median(lz.map((m) => m.wallS));
  const cpu = (ms: Measure[]) => `${median(ms.map((m) => m.cpuS)).toFixed(2)} s`;
  lines.push(`| lazysnap convert (zstd level 3, 1 MiB chunks) | ${wall.toFixed(2)} s | ${mbs(wall)} | ${cpu(lz)} | ${median(lz.map((m) => m.peakMiB)).toFixed(0)} MiB | 1.00 |`);
  rivals.forEach((rv, i) => {
    const w = median(results[i].runs.map((m) => m.wallS));
    lines.push(`| ${rv.label} | ${w.toFixed(2)} s | ${mbs(w)} | ${cpu(results[i].runs)} | ${median(results[i].runs.map((m) => m.peakMiB)).toFixed(0)} MiB | ${median(results[i].ratios).toFixed(2)} |`);
  });
  return lines.join('\n') + '\n';
}

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-convert');
  try {
    const mkfs194 = (await runOk('bash', [path.join(ROOT, 'scripts/erofs-utils.sh')], { timeoutMs: 900_000 })).stdout.trim();
    const images: Image[] = [];
    process.stderr.write('building the debootstrap image (cached rootfs tarball + umoci)...\n');
    const small = await buildDebootstrapImage(path.join(dir, 'minbase'));
    images.push({ name: 'debootstrap --variant=minbase bookworm', ...small, layers: layerFiles(small.layoutDir, small.ref) });
    if (fs.existsSync(path.join(BIG_IMAGE_CACHE, 'expect.json'))) {
      const big = cachedBigImage();
      images.push({ name: 'debian + scipy stack + JDK (the peers benchmark\'s 1.5 GB image)', layoutDir: big.layoutDir, ref: big.ref, layers: layerFiles(big.layoutDir, big.ref) });
    } else {
      process.stderr.write(`the 1.5 GB image is not cached (${BIG_IMAGE_CACHE}): npm run bench:startup:prepare builds it; only the minbase image is measured\n`);
    }
    const load = (await runOk('cat', ['/proc/loadavg'])).stdout.split(' ').slice(0, 3).join(' ');
    const zstd = (await run('dpkg-query', ['-W', '-f', '${Version}', 'libzstd1'])).stdout.trim();
    process.stdout.write(
      `bench/convert ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} CPUs, load average ${load} at the start, ` +
        `${ROUNDS} rounds (lazysnap and each rival in turn), libzstd ${zstd}\n\n`,
    );
    for (const img of images) {
      const sub = path.join(dir, img.name.replace(/\W+/g, '-'));
      fs.mkdirSync(sub, { recursive: true });
      process.stdout.write((await benchImage(img, sub, mkfs194)) + '\n');
      fs.rmSync(sub, { recursive: true, force: true });
    }
  } finally {
    await removeTempDir(dir);
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
