// Converter throughput on the debootstrap bookworm minbase image, next to
// mkfs.erofs (erofs-utils 1.5) building a plain, uncompressed EROFS image of
// the same unpacked tree, measured in one run. Both rates divide the same
// number (the tree's apparent size) by wall-clock time, so the ratio is the
// time ratio. The converter does more (gunzip, three sha256s, blake3 and zstd
// per chunk); mkfs.erofs copies file data into one image.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDebootstrapImage } from '../../test/support/oci-layout';
import { run, runOk } from '../../test/support/proc';
import { makeTempDir, removeTempDir } from '../../test/support/tmp';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');

async function timed(cmd: string, args: string[]): Promise<number> {
  const t0 = process.hrtime.bigint();
  await runOk(cmd, args, { timeoutMs: 1_800_000 });
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-convert');
  try {
    process.stderr.write('building the debootstrap image (cached rootfs tarball + umoci)...\n');
    const img = await buildDebootstrapImage(dir);
    const bytes = Number((await runOk('du', ['-sb', '--apparent-size', img.rootfs])).stdout.split('\t')[0]);
    const files = Number((await runOk('sh', ['-c', `find "${img.rootfs}" | wc -l`])).stdout.trim());
    // warm the page cache for both inputs
    await runOk('sh', ['-c', `cat "${img.layoutDir}"/blobs/sha256/* > /dev/null; tar -cf - -C "${img.rootfs}" . > /dev/null`]);
    const mkfsVersion = `erofs-utils ${(await run('dpkg-query', ['-W', '-f', '${Version}', 'erofs-utils'])).stdout.trim() || '?'}`;

    const conv = await timed('node', [CLI, 'convert', `oci:${img.layoutDir}:${img.ref}`, `oci:${path.join(dir, 'nydus')}:bench`]);
    const mkfs = await timed('mkfs.erofs', ['-T0', path.join(dir, 'plain.erofs'), img.rootfs]);
    // for reference: zstd on one worker thread (pays off only when a second core is really free)
    const conv1 = await timed('node', [CLI, 'convert', '--workers', '1', `oci:${img.layoutDir}:${img.ref}`, `oci:${path.join(dir, 'nydus-w1')}:bench`]);
    const nydus = Number((await runOk('du', ['-sb', path.join(dir, 'nydus')])).stdout.split('\t')[0]);
    const plain = fs.statSync(path.join(dir, 'plain.erofs')).size;
    const mb = (n: number) => (n / 1e6).toFixed(1);
    const load = (await runOk('cat', ['/proc/loadavg'])).stdout.split(' ').slice(0, 3).join(' ');
    const rate = (s: number) => bytes / 1e6 / s;
    process.stdout.write(
      `tree: ${mb(bytes)} MB in ${files} entries (debootstrap --variant=minbase bookworm)\n` +
        `lazysnap convert: ${conv.toFixed(2)} s  ${rate(conv).toFixed(1)} MB/s  (nydus image ${mb(nydus)} MB: zstd blob + bootstrap)\n` +
        `lazysnap convert --workers 1: ${conv1.toFixed(2)} s  ${rate(conv1).toFixed(1)} MB/s\n` +
        `mkfs.erofs:       ${mkfs.toFixed(2)} s  ${rate(mkfs).toFixed(1)} MB/s  (plain EROFS ${mb(plain)} MB, ${mkfsVersion.trim()})\n` +
        `ratio convert/mkfs.erofs: ${(rate(conv) / rate(mkfs)).toFixed(2)}  (load average ${load}, ${os.cpus().length} CPUs)\n`,
    );
  } finally {
    await removeTempDir(dir);
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
