// Test images: build a tiny busybox image as an OCI layout with umoci, and
// push an OCI layout to a registry over the distribution API (Node's
// fetch, no skopeo).
import crypto from 'node:crypto';
import fs from 'node:fs';
import { chmod, copyFile, lutimes, mkdir, readFile, readdir, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { bin, requireBinaries } from './bins';
import { runOk } from './proc';

/** Applets linked in /bin. wc is there because the tests pipe into it (Debian's ash is not a standalone shell). */
export const BUSYBOX_APPLETS = ['sh', 'ls', 'cat', 'echo', 'sleep', 'wc'] as const;

const EPOCH = '1970-01-01T00:00:00Z';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/**
 * Builds dir/oci (an OCI layout) holding tag "busybox": one gzip layer with
 * /bin/busybox, its applet symlinks and empty /etc /tmp /proc /sys /dev.
 * File times and created/history dates are fixed, so the digests only
 * change if /bin/busybox or umoci change.
 */
export async function buildBusyboxImage(dir: string): Promise<{ layoutDir: string; ref: string }> {
  requireBinaries(['umoci', 'busybox']);
  await assertStatic(bin('busybox'));
  const rootfs = join(dir, 'rootfs');
  const layoutDir = join(dir, 'oci');
  const ref = 'busybox';
  await rm(rootfs, { recursive: true, force: true });
  await rm(layoutDir, { recursive: true, force: true });
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev']) await mkdir(join(rootfs, d), { recursive: true });
  await chmod(join(rootfs, 'tmp'), 0o1777);
  await copyFile(bin('busybox'), join(rootfs, 'bin/busybox'));
  await chmod(join(rootfs, 'bin/busybox'), 0o755);
  for (const a of BUSYBOX_APPLETS) await symlink('busybox', join(rootfs, 'bin', a));
  await pinTimes(rootfs);

  const umoci = bin('umoci');
  const image = `${layoutDir}:${ref}`;
  await runOk(umoci, ['init', '--layout', layoutDir]);
  await runOk(umoci, ['new', '--image', image]);
  await runOk(umoci, ['insert', '--image', image, '--history.created', EPOCH,
    '--history.created_by', 'lazysnap test busybox', rootfs, '/']);
  await runOk(umoci, ['config', '--image', image, '--created', EPOCH, '--history.created', EPOCH,
    '--config.cmd', '/bin/sh', '--config.env', 'PATH=/bin', '--os', 'linux', '--architecture', 'amd64']);
  await runOk(umoci, ['gc', '--layout', layoutDir]); // drop the intermediate manifests/configs
  return { layoutDir, ref };
}

/** Writes each of `names` in `dir` as `bytes` random bytes (incompressible: a blob as large); returns their sha256s, in order. */
export function randomFiles(dir: string, names: string[], bytes: number): string[] {
  fs.mkdirSync(dir, { recursive: true });
  return names.map((n) => {
    const data = crypto.randomBytes(bytes);
    fs.writeFileSync(join(dir, n), data);
    return crypto.createHash('sha256').update(data).digest('hex');
  });
}

/** A root for a nydus test image: a static busybox with `applets` linked to it in bin/, and random `names` in data/; returns their sha256s. */
export function busyboxDataTree(src: string, applets: string[], names: string[], bytes: number): string[] {
  fs.mkdirSync(join(src, 'bin'), { recursive: true });
  fs.copyFileSync(bin('busybox'), join(src, 'bin/busybox'));
  fs.chmodSync(join(src, 'bin/busybox'), 0o755);
  for (const a of applets) fs.symlinkSync('busybox', join(src, 'bin', a));
  return randomFiles(join(src, 'data'), names, bytes);
}

/** Sets atime/mtime of every entry (symlinks themselves included) to the epoch. */
async function pinTimes(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await pinTimes(p);
    await lutimes(p, 0, 0);
  }
  await lutimes(dir, 0, 0);
}

/** Copying a dynamically linked busybox (Debian's "busybox" package) would give an image that cannot run. */
async function assertStatic(path: string): Promise<void> {
  const elf = await readFile(path);
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    if (elf.readUInt32LE(phoff + i * phentsize) === 3 /* PT_INTERP */) {
      throw new Error(`${path} is dynamically linked; install apt-get install -t bookworm busybox-static`);
    }
  }
}

/** The descriptor in index.json whose org.opencontainers.image.ref.name is tag. */
export async function resolveLayoutManifest(layoutDir: string, tag: string): Promise<Descriptor> {
  const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as { manifests?: Descriptor[] };
  const found = (index.manifests ?? []).filter((d) => d.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (found.length !== 1) throw new Error(`${layoutDir}/index.json has ${found.length} manifests tagged ${tag}`);
  return found[0];
}

export function readLayoutBlob(layoutDir: string, digest: string): Promise<Buffer> {
  const [alg, hex] = digest.split(':');
  if (!alg || !hex || !/^[a-z0-9]+$/.test(alg) || !/^[a-f0-9]+$/.test(hex)) throw new Error(`bad digest ${digest}`);
  return readFile(join(layoutDir, 'blobs', alg, hex));
}

/** The image config of a tagged single-platform image (for diff_ids, cmd, ...). */
export async function readImageConfig(layoutDir: string, tag: string): Promise<{
  manifest: { config: Descriptor; layers: Descriptor[] };
  config: { rootfs: { diff_ids: string[] }; config?: Record<string, unknown> };
}> {
  const desc = await resolveLayoutManifest(layoutDir, tag);
  const manifest = JSON.parse((await readLayoutBlob(layoutDir, desc.digest)).toString());
  const config = JSON.parse((await readLayoutBlob(layoutDir, manifest.config.digest)).toString());
  return { manifest, config };
}

/** Basic credentials, or a bearer token (a token server's sign(), for a token-auth registry). */
export type PushAuth = { user: string; pass: string } | { token: string };

/**
 * Pushes layoutDir:tag to registryUrl as repoTag ("test/busybox:1"):
 * blobs first (skipping ones the registry has), then the manifest; image
 * indexes are pushed with their child manifests by digest. Returns the
 * pushed manifest's descriptor.
 */
export async function pushOciLayout(layoutDir: string, tag: string, registryUrl: string, repoTag: string,
  auth?: PushAuth): Promise<Descriptor> {
  const { repo, reference } = splitRepoTag(repoTag);
  const client = new PushClient(registryUrl.replace(/\/+$/, ''), repo, auth);
  const desc = await resolveLayoutManifest(layoutDir, tag);
  await pushManifestTree(client, layoutDir, desc, reference);
  return { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
}

async function pushManifestTree(c: PushClient, layoutDir: string, desc: Descriptor, reference: string): Promise<void> {
  const body = await readLayoutBlob(layoutDir, desc.digest);
  const m = JSON.parse(body.toString()) as { mediaType?: string; manifests?: Descriptor[]; config?: Descriptor;
    layers?: Descriptor[] };
  if (Array.isArray(m.manifests)) {
    for (const child of m.manifests) await pushManifestTree(c, layoutDir, child, child.digest);
  } else {
    for (const blob of [...(m.config ? [m.config] : []), ...(m.layers ?? [])]) {
      await c.pushBlob(blob.digest, await readLayoutBlob(layoutDir, blob.digest));
    }
  }
  await c.putManifest(reference, desc.mediaType ?? m.mediaType, body, desc.digest);
}

function splitRepoTag(repoTag: string): { repo: string; reference: string } {
  const at = repoTag.indexOf('@');
  if (at > 0) return { repo: repoTag.slice(0, at), reference: repoTag.slice(at + 1) };
  const colon = repoTag.lastIndexOf(':');
  if (colon <= repoTag.lastIndexOf('/')) return { repo: repoTag, reference: 'latest' };
  return { repo: repoTag.slice(0, colon), reference: repoTag.slice(colon + 1) };
}

/** Just enough of the distribution push API (monolithic uploads, Basic auth or a given bearer token). */
class PushClient {
  private readonly headers: Record<string, string> = {};

  constructor(private readonly base: string, private readonly repo: string, auth?: PushAuth) {
    if (auth && 'token' in auth) this.headers.authorization = `Bearer ${auth.token}`;
    else if (auth) this.headers.authorization = 'Basic ' + Buffer.from(`${auth.user}:${auth.pass}`).toString('base64');
  }

  async pushBlob(digest: string, data: Buffer): Promise<void> {
    const blobUrl = `${this.base}/v2/${this.repo}/blobs/${digest}`;
    const head = await this.request('HEAD', blobUrl, [200, 404]);
    if (head.status === 200) return;
    const start = await this.request('POST', `${this.base}/v2/${this.repo}/blobs/uploads/`, [202]);
    const location = start.headers.get('location');
    if (!location) throw new Error(`POST ${this.repo}/blobs/uploads/ returned no Location`);
    const put = new URL(location, this.base);
    put.searchParams.set('digest', digest);
    await this.request('PUT', put.toString(), [201], data, 'application/octet-stream');
  }

  async putManifest(reference: string, mediaType: string, body: Buffer, digest: string): Promise<void> {
    const res = await this.request('PUT', `${this.base}/v2/${this.repo}/manifests/${reference}`, [201], body, mediaType);
    const got = res.headers.get('docker-content-digest');
    if (got && got !== digest) throw new Error(`registry stored ${this.repo}:${reference} as ${got}, expected ${digest}`);
  }

  private async request(method: string, url: string, ok: number[], body?: Buffer, contentType?: string):
    Promise<Response> {
    const headers: Record<string, string> = { ...this.headers };
    if (contentType) headers['content-type'] = contentType;
    const res = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(60_000) });
    const text = method === 'HEAD' ? '' : await res.text();
    if (!ok.includes(res.status)) throw new Error(`${method} ${url} → HTTP ${res.status}: ${text.slice(0, 500)}`);
    return res;
  }
}
