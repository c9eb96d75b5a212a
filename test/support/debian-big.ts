// A debian image of more than 1 GB uncompressed for the startup benchmark
// (issue #13): the debootstrap minbase rootfs, then a scientific Python
// layer, then a JDK layer, each the diff umoci computes after apt-get
// installed the packages in a chroot of the rootfs below. Its start command
// imports numpy and scipy.linalg: a real program that reads a small part of
// the image. Built on the host (the apt layers need the Debian mirror) and
// cached; the UML guest reads the cached layout through hostfs.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { EPOCH, IMAGE_PATH_ENV, buildCachedImage, readCachedImage, regularFiles } from './debian-python';
import { mountErofsFile } from './oci-layout';
import { runOk } from './proc';

export const BIG_IMAGE_CACHE = '/var/cache/lazysnap-test/debian-big';
const REF = 'debian-big';
/** Bumped when the image or expect.json changes: an older cache is rebuilt. */
const EXPECT_VERSION = 1;
const MIN_ROOTFS_BYTES = 1e9;

/** The layers above the minbase one, bottom up. No recommends: they would pull in a desktop's worth. */
const LAYERS = [
  { tag: 'scipy', packages: ['python3-scipy', 'python3-pandas', 'python3-matplotlib', 'python3-sklearn'] },
  { tag: REF, packages: ['openjdk-17-jdk-headless'] },
];

/** Prints "ready 1.0"; imports numpy, scipy.linalg and thus OpenBLAS, LAPACK and libgfortran. */
export const BIG_START_COMMAND = ['python3', '-c', "import numpy, scipy.linalg; print('ready', scipy.linalg.det(numpy.eye(3)))"];

export interface StartReads {
  command: string[];
  /** what it printed on the host */
  output: string;
  /** wall time of the run on the host, from a fresh mount */
  hostMs: number;
  /** the readahead of the mount the bytes were read through */
  readaheadKiB: number;
  /** bytes of the image's files in the page cache after the run, readahead included: the part read */
  readBytes: number;
  /** the files with at least one page read, and the sum of their whole sizes (a bound for whole-file fetching) */
  readFiles: number;
  readFilesBytes: number;
}

export interface BigImageExpect {
  version: number;
  /** regular files of the final rootfs and the sum of their sizes */
  rootfsFiles: number;
  rootfsBytes: number;
  /** sizes of the layer blobs as stored (gzip), bottom up */
  layerBytes: number[];
  packages: string[];
  start: StartReads;
  buildSeconds: number;
}

export interface BigImage {
  layoutDir: string;
  ref: string;
  expect: BigImageExpect;
}

export function cachedBigImage(): BigImage {
  return readCachedImage<BigImageExpect>(BIG_IMAGE_CACHE, REF, EXPECT_VERSION,
    'npm run bench:startup does it, or: node -e \'require("./dist/test/support/debian-big").buildBigImage()\'');
}

/**
 * Runs argv chrooted in rootfs, with /proc mounted (openjdk's postinst needs
 * it) and the host's resolv.conf bound over the rootfs's, both in a private
 * mount namespace: they vanish with the process, whatever happens to it, and
 * never reach the layer.
 */
export async function inChroot(rootfs: string, argv: string[], timeoutMs: number, env: Record<string, string> = {}) {
  const script = [
    'mount -t proc proc "$0/proc"',
    // (a symlink would be followed on the host's side)
    'if [ -f "$0/etc/resolv.conf" ] && [ ! -L "$0/etc/resolv.conf" ]; then mount --bind /etc/resolv.conf "$0/etc/resolv.conf"; fi',
    'exec chroot "$0" "$@"',
  ].join('\n');
  return runOk('unshare', ['--mount', '--propagation', 'private', '--fork', 'sh', '-ec', script, rootfs, ...argv], {
    timeoutMs,
    env: { PATH: IMAGE_PATH_ENV.slice('PATH='.length), HOME: '/root', LC_ALL: 'C', ...env },
  });
}

/** apt-get install in a chroot of rootfs, then drops apt's downloads and lists (as debian-python does). */
async function aptInstall(rootfs: string, packages: string[]): Promise<void> {
  const noninteractive = { DEBIAN_FRONTEND: 'noninteractive' };
  await inChroot(rootfs, ['apt-get', 'update', '-q'], 600_000);
  await inChroot(rootfs, ['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...packages], 3_600_000, noninteractive);
  await inChroot(rootfs, ['apt-get', 'clean'], 60_000);
  await runOk('sh', ['-c', 'rm -rf "$1"/var/lib/apt/lists/*', 'sh', rootfs]);
}

/**
 * Prints the page cache residency (mincore(2)) of the regular files under a
 * directory as JSON. Python's ctypes: neither Node nor the mmap module
 * exposes mincore.
 */
const RESIDENT = `
import ctypes, json, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
PS = os.sysconf('SC_PAGE_SIZE')
def resident(p, size):
    fd = os.open(p, os.O_RDONLY)
    try:
        a = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED: maps without reading
        if a in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), 'mmap ' + p)
        try:
            n = (size + PS - 1) // PS
            vec = (ctypes.c_ubyte * n)()
            if libc.mincore(a, size, vec) != 0:
                raise OSError(ctypes.get_errno(), 'mincore ' + p)
            return sum(min(PS, size - i * PS) for i in range(n) if vec[i] & 1)
        finally:
            libc.munmap(a, size)
    finally:
        os.close(fd)
out = {'bytes': 0, 'files': 0, 'filesBytes': 0}
for d, dirs, names in os.walk(sys.argv[1]):
    for n in names:
        p = os.path.join(d, n)
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            r = resident(p, st.st_size)
            if r:
                out['bytes'] += r; out['files'] += 1; out['filesBytes'] += st.st_size
json.dump(out, sys.stdout)
`;

/**
 * What `command` reads of a rootfs, measured the way the guest reads an
 * image: the rootfs is made an uncompressed EROFS image (next to it, removed
 * after), mounted fresh, so its page cache starts empty, the command runs
 * chrooted in the mount, and the pages cached afterwards are counted. That
 * is the bytes the kernel read for the start, its readahead included (the
 * mount's own bdi: 128 KiB by default, recorded), not the bytes syscalls
 * asked for. Not the host's filesystem: its device readahead (8 MiB here)
 * would pull in most of every file touched.
 */
export async function measureStartReads(rootfs: string, command: string[]): Promise<StartReads> {
  const image = `${rootfs}.erofs`;
  const mnt = `${rootfs}.mnt`;
  await runOk('mkfs.erofs', ['--quiet', image, rootfs], { timeoutMs: 1_800_000 });
  try {
    await fsp.mkdir(mnt);
    const bdis = new Set(fs.readdirSync(BDI));
    await mountErofsFile(image, mnt, []);
    try {
      const readaheadKiB = mountReadahead(bdis);
      const t0 = performance.now();
      const r = await inChroot(mnt, command, 300_000);
      const hostMs = Math.round(performance.now() - t0);
      const after = JSON.parse((await runOk('/usr/bin/python3', ['-c', RESIDENT, mnt], { timeoutMs: 600_000 })).stdout) as { bytes: number; files: number; filesBytes: number };
      return { command, output: r.stdout.trim(), hostMs, readaheadKiB, readBytes: after.bytes, readFiles: after.files, readFilesBytes: after.filesBytes };
    } finally {
      await runOk('umount', [mnt]);
    }
  } finally {
    await fsp.rm(image, { force: true });
    await fsp.rm(mnt, { recursive: true, force: true });
  }
}

const BDI = '/sys/class/bdi';

/** read_ahead_kb of the bdi a file-backed EROFS mount made: the erofs-<n> entry that was not in `before`. */
function mountReadahead(before: Set<string>): number {
  const made = fs.readdirSync(BDI).filter((n) => n.startsWith('erofs-') && !before.has(n));
  if (made.length !== 1) throw new Error(`cannot tell the new mount's bdi among ${JSON.stringify(made)} (another erofs mount at the same time?)`);
  return Number(fs.readFileSync(path.join(BDI, made[0], 'read_ahead_kb'), 'utf8').trim());
}

/**
 * Builds the image once (about two minutes with a fast mirror; apt needs
 * it), then returns the cached one. The cache is replaced whole or not at
 * all. Fails if the rootfs comes out under 1 GB.
 */
export async function buildBigImage(): Promise<BigImage> {
  try {
    return cachedBigImage();
  } catch {
    // missing or outdated: build it
  }
  const t0 = performance.now();
  const log = (m: string) => console.log(`debian-big: ${m} (${Math.round((performance.now() - t0) / 1000)} s)`);
  await buildCachedImage(BIG_IMAGE_CACHE, 'big', async (work, layoutDir) => {
    log('minbase layer');
    const bundle = path.join(work, 'bundle');
    const rootfs = path.join(bundle, 'rootfs');
    await runOk('umoci', ['unpack', '--image', `${layoutDir}:debian`, bundle], { timeoutMs: 600_000 });
    // each layer is umoci's diff of the rootfs apt changed; --refresh-bundle makes it the base of the next diff
    for (const l of LAYERS) {
      await aptInstall(rootfs, l.packages);
      log(`installed ${l.packages.join(' ')}`);
      await runOk('umoci', ['repack', '--refresh-bundle', '--image', `${layoutDir}:${l.tag}`, '--history.created', EPOCH,
        '--history.created_by', `apt-get install --no-install-recommends ${l.packages.join(' ')}`, bundle], { timeoutMs: 1_800_000 });
      log(`layer ${l.tag}`);
    }
    await runOk('umoci', ['config', '--image', `${layoutDir}:${REF}`, '--created', EPOCH, '--history.created', EPOCH,
      ...BIG_START_COMMAND.flatMap((a) => ['--config.cmd', a]), '--config.env', IMAGE_PATH_ENV, '--os', 'linux', '--architecture', 'amd64']);
    for (const tag of ['debian', ...LAYERS.map((l) => l.tag).filter((t) => t !== REF)]) await runOk('umoci', ['rm', '--image', `${layoutDir}:${tag}`]);
    await runOk('umoci', ['gc', '--layout', layoutDir]);
    const size = regularFiles(rootfs);
    if (size.bytes < MIN_ROOTFS_BYTES) throw new Error(`the rootfs holds ${size.bytes} bytes, less than ${MIN_ROOTFS_BYTES}: add packages`);
    const start = await measureStartReads(rootfs, BIG_START_COMMAND);
    if (!/^ready\b/m.test(start.output)) throw new Error(`${BIG_START_COMMAND.join(' ')} printed ${JSON.stringify(start.output)}`);
    log(`start read ${start.readBytes} bytes`);
    const expect: BigImageExpect = {
      version: EXPECT_VERSION,
      rootfsFiles: size.files,
      rootfsBytes: size.bytes,
      layerBytes: layerSizes(layoutDir, REF),
      packages: LAYERS.flatMap((l) => l.packages),
      start,
      buildSeconds: Math.round((performance.now() - t0) / 1000),
    };
    log(`rootfs ${size.bytes} bytes in ${size.files} files, layers ${expect.layerBytes.join(' + ')} bytes; ` +
      `start read ${start.readBytes} bytes (${start.readFiles} files of ${start.readFilesBytes} bytes)`);
    return expect;
  });
  log(`built ${BIG_IMAGE_CACHE}`);
  return cachedBigImage();
}

/** The stored sizes of the layers of the image tagged `tag`, bottom up. */
function layerSizes(layoutDir: string, tag: string): number[] {
  const blob = (digest: string) => JSON.parse(fs.readFileSync(path.join(layoutDir, 'blobs', 'sha256', digest.slice('sha256:'.length)), 'utf8'));
  const index = JSON.parse(fs.readFileSync(path.join(layoutDir, 'index.json'), 'utf8'));
  const d = index.manifests.find((m: { annotations?: Record<string, string> }) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!d) throw new Error(`${layoutDir}: no ${tag}`);
  return (blob(d.digest) as { layers: { size: number }[] }).layers.map((l) => l.size);
}
