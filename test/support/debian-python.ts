// A two-layer debian+python OCI image for the lazy pull-and-run tests: the
// debootstrap minbase rootfs, then a layer that adds python3-minimal (the
// diff umoci computes, whiteouts included). Built on the host, which can
// reach the Debian mirror; the UML guest has no network and reads the cached
// layout through hostfs. expect.json holds checksums taken from the rootfs
// the layers were made from, for the container's python to reproduce.
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { debootstrapTarball } from './oci-layout';
import { runOk } from './proc';
import { startRegistry, type Registry } from './registry';
import { pushOciLayout } from './images';
import { buildPauseImage } from './guest-containerd';

export const DEBIAN_PYTHON_CACHE = '/var/cache/lazysnap-test/debian-python';
const DEBIAN_MIRROR = 'http://deb.debian.org/debian';
export const EPOCH = '1970-01-01T00:00:00Z';
export const IMAGE_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Bumped when expect.json gains fields: an older cache is rebuilt. */
const EXPECT_VERSION = 2;
/** Files outside python, read by other tests (their real paths and sha256). */
const OTHER_FILES = ['/usr/bin/perl', '/usr/bin/dpkg'];

export interface DebianPythonExpect {
  version: number;
  /** The interpreter's real path, e.g. /usr/bin/python3.11, and the sha256 of its bytes. */
  python: string;
  pythonSha256: string;
  /** The standard library directory, its regular files and the digest PYTHON_TREE_DIGEST prints for it. */
  stdlib: string;
  stdlibFiles: number;
  stdlibDigest: string;
  rootfsBytes: number;
  /** real path -> sha256, for OTHER_FILES */
  files: Record<string, string>;
}

export interface DebianPythonImage {
  layoutDir: string;
  ref: string;
  expect: DebianPythonExpect;
}

/**
 * Run in the container with `python3 -B -c`: prints "file <sha256>" of the
 * interpreter and "tree <n> <digest>" over the standard library, where the
 * digest is sha256 over "<path>\0<sha256 hex>\n" for each regular file in
 * sorted walk order. -B: importing must not write .pyc files into the tree.
 */
export const PYTHON_TREE_DIGEST = [
  'import hashlib, os, stat, sys',
  'def walk(d):',
  '    for n in sorted(os.listdir(d)):',
  '        p = os.path.join(d, n)',
  '        m = os.lstat(p).st_mode',
  '        if stat.S_ISDIR(m): yield from walk(p)',
  '        elif stat.S_ISREG(m): yield p',
  'def sha(p):',
  '    with open(p, "rb") as f: return hashlib.sha256(f.read()).hexdigest()',
  'exe = os.path.realpath(sys.executable)',
  'lib = os.path.dirname(os.__file__)',
  'print("file", exe, sha(exe))',
  't = hashlib.sha256(); n = 0',
  'for p in walk(lib):',
  '    t.update(p.encode() + b"\\0" + sha(p).encode() + b"\\n"); n += 1',
  'print("tree", lib, n, t.hexdigest())',
].join('\n');

/** The same digests as PYTHON_TREE_DIGEST, computed by Node over an unpacked rootfs. */
export function expectFromRootfs(rootfs: string): DebianPythonExpect {
  const inRoot = (p: string) => path.join(rootfs, p);
  const realPath = (p: string) => {
    for (let i = 0; i < 10 && fs.lstatSync(inRoot(p)).isSymbolicLink(); i++) {
      const target = fs.readlinkSync(inRoot(p));
      p = target.startsWith('/') ? target : path.posix.resolve(path.posix.dirname(p), target);
    }
    return p;
  };
  const python = realPath('/usr/bin/python3');
  const version = /python3\.\d+$/.exec(python)?.[0];
  if (!version) throw new Error(`unexpected interpreter path ${python}`);
  const stdlib = `/usr/lib/${version}`;
  const sha = (p: string) => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
  const tree = crypto.createHash('sha256');
  let stdlibFiles = 0;
  const walk = (d: string) => {
    // Python's sorted() on str orders by code point; these names are ASCII, where that is byte order.
    for (const n of fs.readdirSync(inRoot(d)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
      const p = `${d}/${n}`;
      const st = fs.lstatSync(inRoot(p));
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) {
        tree.update(`${p}\0${sha(inRoot(p))}\n`);
        stdlibFiles++;
      }
    }
  };
  walk(stdlib);
  const rootfsBytes = regularFiles(rootfs).bytes;
  const files: Record<string, string> = {};
  for (const f of OTHER_FILES) files[realPath(f)] = sha(inRoot(realPath(f)));
  return { version: EXPECT_VERSION, python, pythonSha256: sha(inRoot(python)), stdlib, stdlibFiles, stdlibDigest: tree.digest('hex'), rootfsBytes, files };
}

/** Count and total size of the regular files under dir (symlinks not followed). */
export function regularFiles(dir: string): { files: number; bytes: number } {
  const r = { files: 0, bytes: 0 };
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        r.files++;
        r.bytes += fs.lstatSync(p).size;
      }
    }
  };
  walk(dir);
  return r;
}

/**
 * Layer 1 of the debian images: an OCI layout at layoutDir with the
 * debootstrap minbase rootfs as the one layer of the image tagged `tag`
 * (unpacked under work, then removed).
 */
async function initDebianLayout(work: string, layoutDir: string, tag: string): Promise<void> {
  const base = await debootstrapTarball();
  const baseRoot = path.join(work, 'base');
  await fsp.mkdir(baseRoot);
  await runOk('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-C', baseRoot, '-xpzf', base], { timeoutMs: 300_000 });
  await runOk('umoci', ['init', '--layout', layoutDir]);
  await runOk('umoci', ['new', '--image', `${layoutDir}:${tag}`]);
  await runOk('umoci', ['insert', '--image', `${layoutDir}:${tag}`, '--history.created', EPOCH, '--history.created_by', 'debootstrap --variant=minbase bookworm', baseRoot, '/'], { timeoutMs: 600_000 });
  await fsp.rm(baseRoot, { recursive: true, force: true });
}

/**
 * A cached image built on the host (cache/oci, tag `ref`, cache/expect.json
 * of `version`), or fails with how to build it (the guest cannot: no network).
 */
export function readCachedImage<E extends { version: number }>(cache: string, ref: string, version: number, howToBuild: string):
  { layoutDir: string; ref: string; expect: E } {
  const expectPath = path.join(cache, 'expect.json');
  if (!fs.existsSync(expectPath)) throw new Error(`${cache} is missing: it is built on the host before the guest boots (${howToBuild})`);
  const expect = JSON.parse(fs.readFileSync(expectPath, 'utf8')) as E;
  if (expect.version !== version) throw new Error(`${expectPath} is version ${expect.version}, not ${version}: rebuild it on the host`);
  return { layoutDir: path.join(cache, 'oci'), ref, expect };
}

export function cachedDebianPythonImage(): DebianPythonImage {
  return readCachedImage<DebianPythonExpect>(DEBIAN_PYTHON_CACHE, 'debian-python', EXPECT_VERSION,
    'dist/test/integration/kernel.test.js does it, or: node -e \'require("./dist/test/support/debian-python").buildDebianPythonImage()\'');
}

/**
 * Builds the image once (debootstrap needs the Debian mirror; about two
 * minutes), then returns the cached one. The cache is replaced whole or not
 * at all.
 */
export async function buildDebianPythonImage(): Promise<DebianPythonImage> {
  try {
    return cachedDebianPythonImage();
  } catch {
    // missing or outdated: build it
  }
  await buildCachedImage(DEBIAN_PYTHON_CACHE, 'python', async (work, layoutDir) => {
    // layer 2: what installing python3-minimal changed, as umoci's diff of the rootfs it unpacked
    const pyRoot = path.join(work, 'python');
    await runOk('/usr/sbin/debootstrap', ['--variant=minbase', '--include=python3-minimal', 'bookworm', pyRoot, DEBIAN_MIRROR], { timeoutMs: 900_000 });
    await runOk('sh', ['-c', 'rm -f "$1"/var/cache/apt/archives/*.deb && rm -rf "$1"/var/lib/apt/lists/*', 'sh', pyRoot]);
    const bundle = path.join(work, 'bundle');
    await runOk('umoci', ['unpack', '--image', `${layoutDir}:debian`, bundle], { timeoutMs: 600_000 });
    await fsp.rm(path.join(bundle, 'rootfs'), { recursive: true, force: true });
    await fsp.rename(pyRoot, path.join(bundle, 'rootfs'));
    await runOk('umoci', ['repack', '--image', `${layoutDir}:debian-python`, '--history.created', EPOCH, '--history.created_by', 'apt-get install python3-minimal', bundle], { timeoutMs: 600_000 });
    await runOk('umoci', ['config', '--image', `${layoutDir}:debian-python`, '--created', EPOCH, '--history.created', EPOCH,
      '--config.cmd', '/usr/bin/python3', '--config.env', IMAGE_PATH_ENV,
      '--os', 'linux', '--architecture', 'amd64']);
    await runOk('umoci', ['rm', '--image', `${layoutDir}:debian`]);
    await runOk('umoci', ['gc', '--layout', layoutDir]);
    return expectFromRootfs(path.join(bundle, 'rootfs'));
  });
  return cachedDebianPythonImage();
}

/**
 * Builds a cached image in a scratch directory beside `cache` and swaps it
 * in whole: an interrupted build leaves the old cache or none, never half of
 * one. `build` gets the scratch directory and a layout (cache/oci to be)
 * whose image "debian" is the minbase layer, and returns expect.json.
 */
export async function buildCachedImage(cache: string, label: string,
  build: (work: string, layoutDir: string) => Promise<{ version: number }>): Promise<void> {
  const parent = path.dirname(cache);
  await fsp.mkdir(parent, { recursive: true });
  const work = await fsp.mkdtemp(path.join(parent, `build-${label}-`));
  try {
    const out = path.join(work, 'out');
    const layoutDir = path.join(out, 'oci');
    await fsp.mkdir(out);
    await initDebianLayout(work, layoutDir, 'debian');
    const expect = await build(work, layoutDir);
    await fsp.writeFile(path.join(out, 'expect.json'), JSON.stringify(expect, null, 1));
    await fsp.rm(cache, { recursive: true, force: true });
    await fsp.rename(out, cache);
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

/** The debian+python image converted to nydus and pushed, with a pause image, to a registry of its own under `dir` (a CRI node's images). */
export async function pushPythonAndPause(dir: string): Promise<{
  dp: DebianPythonImage; registry: Registry; pyNydus: string; pyRef: string; pauseRef: string;
}> {
  const dp = await buildDebianPythonImage();
  const registry = await startRegistry({ dir: path.join(dir, 'registry') });
  const pyNydus = path.join(dir, 'nydus-python');
  await runOk(process.execPath, [path.join(__dirname, '../../cmd/lazysnap.js'), 'convert', `oci:${dp.layoutDir}:${dp.ref}`, `oci:${pyNydus}:1`], { timeoutMs: 600_000 });
  await pushOciLayout(pyNydus, '1', registry.url, 'test/debian-python:1');
  const pause = await buildPauseImage(path.join(dir, 'pause'));
  await pushOciLayout(pause.layoutDir, pause.ref, registry.url, 'test/pause:1');
  return { dp, registry, pyNydus, pyRef: `${registry.host}/test/debian-python:1`, pauseRef: `${registry.host}/test/pause:1` };
}
