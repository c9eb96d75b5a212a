// OCI image structures and the two places images live: an OCI layout
// directory (oci:DIR[:TAG] or a plain path) and a registry (docker.ts).
import crypto from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  describePlatform,
  isIndexType,
  parsePlatform as parseFetcherPlatform,
  selectPlatform,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../../registry/manifest';

// One definition of the OCI structures and platform rules, shared with the
// registry client (registry/manifest.ts).
export type { Descriptor, Platform } from '../../registry/manifest';
export type Manifest = ImageManifest;
export type Index = ImageIndex;

export interface ImageConfig {
  created?: string;
  architecture?: string;
  os?: string;
  rootfs: { type: string; diff_ids: string[] };
  history?: Record<string, unknown>[];
  [k: string]: unknown;
}

export const REF_NAME = 'org.opencontainers.image.ref.name';
export { MANIFEST_ACCEPT as ACCEPT } from '../../registry/manifest';

export class ImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImageError';
  }
}

/** A resolved single-platform image. */
export interface ResolvedImage {
  manifest: Manifest;
  manifestDigest: string;
  config: ImageConfig;
  configBytes: Buffer;
  platform?: Platform;
}

export interface ImageSource {
  readonly name: string;
  resolve(): Promise<ResolvedImage>;
  /** a blob's bytes, streamed */
  blob(d: Descriptor): Promise<AsyncIterable<Buffer>>;
}

export interface ImageDest {
  readonly name: string;
  /** a fresh directory for the output's blobs (blobs/sha256/<hex>); on DST's filesystem for layouts */
  stage(): Promise<string>;
  /** publishes the staged blobs and the manifest; the staging directory is gone afterwards */
  commit(blobs: Descriptor[], manifest: Buffer, manifestDesc: Descriptor): Promise<void>;
  /** removes everything staged */
  abort(): Promise<void>;
}

export function isIndex(mediaType: string | undefined, body: { manifests?: unknown }): boolean {
  return isIndexType(mediaType) || Array.isArray(body.manifests);
}

export function parseDigest(d: string): { alg: string; hex: string } {
  const m = /^(sha256):([a-f0-9]{64})$/.exec(d);
  if (!m) throw new ImageError(`unsupported or malformed digest "${d}"`);
  return { alg: m[1], hex: m[2] };
}

export function parsePlatform(s: string): Platform {
  try {
    return parseFetcherPlatform(s);
  } catch (e) {
    throw new ImageError((e as Error).message);
  }
}

/** The manifest of an index for the wanted platform (arm variants normalised as containerd does). */
export function pickPlatform(index: Index, want: Platform, where: string): Descriptor {
  const d = selectPlatform(index, want);
  if (!d) {
    const have = index.manifests.map((m) => (m.platform ? describePlatform(m.platform) : '?')).join(', ');
    throw new ImageError(`${where}: no manifest for ${describePlatform(want)} (has ${have || 'none'})`);
  }
  return d;
}

export function checkManifest(m: Manifest, where: string): void {
  if (!m || typeof m !== 'object' || !m.config || !Array.isArray(m.layers)) throw new ImageError(`${where} is not an image manifest`);
  for (const d of [m.config, ...m.layers]) {
    parseDigest(d.digest);
    if (!Number.isSafeInteger(d.size) || d.size < 0) throw new ImageError(`${where}: descriptor ${d.digest} has a bad size`);
  }
}

export function parseConfig(b: Buffer, where: string): ImageConfig {
  try {
    return JSON.parse(b.toString('utf8')) as ImageConfig;
  } catch (e) {
    throw new ImageError(`${where}: image config is not JSON: ${(e as Error).message}`);
  }
}

export function checkConfig(c: ImageConfig, where: string): void {
  if (!c || typeof c !== 'object' || !c.rootfs || !Array.isArray(c.rootfs.diff_ids)) throw new ImageError(`${where}: image config has no rootfs.diff_ids`);
}

/** `oci:DIR[:TAG]`, or a directory path (with an index.json, for sources). */
export interface LayoutRef {
  dir: string;
  tag?: string;
}

export function parseLayoutRef(s: string): LayoutRef | null {
  if (s.startsWith('oci:')) {
    const rest = s.slice(4);
    // the tag is after the last ':' unless that ':' is part of the path
    const i = rest.lastIndexOf(':');
    if (i > 0 && !rest.slice(i + 1).includes('/')) return { dir: path.resolve(rest.slice(0, i)), tag: rest.slice(i + 1) || undefined };
    return { dir: path.resolve(rest) };
  }
  if (s.startsWith('/') || s.startsWith('./') || s.startsWith('../') || s === '.') return { dir: path.resolve(s) };
  // a bare relative name is a layout only if it is one (else it may be HOST/REPO:TAG)
  if (existsSync(path.join(s, 'index.json'))) return { dir: path.resolve(s) };
  return null;
}

function blobPath(dir: string, digest: string): string {
  const { alg, hex } = parseDigest(digest);
  return path.join(dir, 'blobs', alg, hex);
}

async function readJson<T>(file: string, what: string): Promise<T> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new ImageError(`cannot read ${what} (${file}): ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new ImageError(`${what} (${file}) is not JSON: ${(e as Error).message}`);
  }
}

export class LayoutSource implements ImageSource {
  readonly name: string;
  constructor(private readonly ref: LayoutRef, private readonly platform = { os: 'linux', architecture: 'amd64' }) {
    this.name = `oci:${ref.dir}${ref.tag ? ':' + ref.tag : ''}`;
  }

  async resolve(): Promise<ResolvedImage> {
    const index = await readJson<Index>(path.join(this.ref.dir, 'index.json'), `${this.name} index.json`);
    const all = index.manifests ?? [];
    let desc: Descriptor | undefined;
    if (this.ref.tag) {
      desc = all.find((d) => d.annotations?.[REF_NAME] === this.ref.tag);
      if (!desc) throw new ImageError(`${this.name}: no manifest tagged "${this.ref.tag}" (tags: ${all.map((d) => d.annotations?.[REF_NAME]).filter(Boolean).join(', ') || 'none'})`);
    } else {
      desc = all[0];
      if (!desc) throw new ImageError(`${this.name}: index.json lists no manifests`);
    }
    let platform = desc.platform;
    let body = await this.json<Manifest & Index>(desc);
    if (isIndex(desc.mediaType, body)) {
      desc = pickPlatform(body, this.platform, this.name);
      platform = desc.platform;
      body = await this.json<Manifest & Index>(desc);
    }
    checkManifest(body, `${this.name} manifest ${desc.digest}`);
    const configBytes = await this.bytes(body.config);
    const config = parseConfig(configBytes, this.name);
    checkConfig(config, this.name);
    platform ??= config.os && config.architecture ? { os: config.os, architecture: config.architecture } : undefined;
    return { manifest: body, manifestDigest: desc.digest, config, configBytes, platform };
  }

  private async bytes(d: Descriptor): Promise<Buffer> {
    const file = blobPath(this.ref.dir, d.digest);
    const b = await fs.readFile(file).catch((e: Error) => {
      throw new ImageError(`${this.name}: cannot read blob ${d.digest}: ${e.message}`);
    });
    const got = `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;
    if (got !== d.digest) throw new ImageError(`${this.name}: blob ${d.digest} does not match its digest (content is ${got})`);
    return b;
  }

  private async json<T>(d: Descriptor): Promise<T> {
    const b = await this.bytes(d);
    try {
      return JSON.parse(b.toString('utf8')) as T;
    } catch (e) {
      throw new ImageError(`${this.name}: ${d.digest} is not JSON: ${(e as Error).message}`);
    }
  }

  async blob(d: Descriptor): Promise<AsyncIterable<Buffer>> {
    const file = blobPath(this.ref.dir, d.digest);
    await fs.access(file).catch((e: Error) => {
      throw new ImageError(`${this.name}: missing blob ${d.digest}: ${e.message}`);
    });
    return createReadStream(file, { highWaterMark: 1 << 20 });
  }
}

const STAGE_PREFIX = '.lazysnap-convert-';

/**
 * Writes into a temporary directory beside DST, then moves the result in:
 * a new layout is renamed into place; an existing one gets the new blobs and
 * an index.json swapped in atomically. Nothing is written elsewhere.
 */
export class LayoutDest implements ImageDest {
  readonly name: string;
  private tmp: string | null = null;

  constructor(readonly ref: LayoutRef) {
    this.name = `oci:${ref.dir}${ref.tag ? ':' + ref.tag : ''}`;
  }

  /** Refuses a DST that exists and is neither a layout nor an empty directory, before any work. */
  async check(): Promise<void> {
    const st = await fs.stat(this.ref.dir).catch(() => null);
    const parent = path.dirname(this.ref.dir);
    const pst = await fs.stat(parent).catch(() => null);
    if (!pst?.isDirectory()) throw new ImageError(`${this.name}: parent directory ${parent} does not exist`);
    if (!st) return;
    if (!st.isDirectory()) throw new ImageError(`${this.name}: ${this.ref.dir} exists and is not a directory`);
    const names = await fs.readdir(this.ref.dir);
    if (names.length && !names.includes('oci-layout')) throw new ImageError(`${this.name}: ${this.ref.dir} is not empty and not an OCI layout`);
  }

  async stage(): Promise<string> {
    await this.check();
    this.tmp = await fs.mkdtemp(path.join(path.dirname(this.ref.dir), STAGE_PREFIX));
    await fs.mkdir(path.join(this.tmp, 'blobs', 'sha256'), { recursive: true });
    return this.tmp;
  }

  async commit(_blobs: Descriptor[], _manifest: Buffer, manifestDesc: Descriptor): Promise<void> {
    const tmp = this.tmp;
    if (!tmp) throw new Error('commit before stage');
    const dst = this.ref.dir;
    const exists = await fs.stat(dst).then(() => true, () => false);
    const empty = exists && (await fs.readdir(dst)).length === 0;
    const layout = JSON.stringify({ imageLayoutVersion: '1.0.0' });
    if (!exists || empty) {
      await fs.writeFile(path.join(tmp, 'oci-layout'), layout);
      await fs.writeFile(path.join(tmp, 'index.json'), JSON.stringify(newIndex([], manifestDesc)));
      if (empty) await fs.rmdir(dst);
      await fs.rename(tmp, dst);
      this.tmp = null;
      return;
    }
    // existing layout: move blobs in, then swap index.json
    const index = await readJson<Index>(path.join(dst, 'index.json'), `${this.name} index.json`);
    const from = path.join(tmp, 'blobs', 'sha256');
    const to = path.join(dst, 'blobs', 'sha256');
    await fs.mkdir(to, { recursive: true });
    for (const f of await fs.readdir(from)) {
      const target = path.join(to, f);
      if (await fs.stat(target).then(() => true, () => false)) continue;
      await fs.rename(path.join(from, f), target);
    }
    const next = path.join(tmp, 'index.json');
    await fs.writeFile(next, JSON.stringify(newIndex(index.manifests ?? [], manifestDesc)));
    await fs.rename(next, path.join(dst, 'index.json'));
    await fs.rm(tmp, { recursive: true, force: true });
    this.tmp = null;
  }

  async abort(): Promise<void> {
    if (this.tmp) await fs.rm(this.tmp, { recursive: true, force: true });
    this.tmp = null;
  }
}

/** index.json with d added, replacing any manifest with the same ref name. */
function newIndex(old: Descriptor[], d: Descriptor): Index {
  const name = d.annotations?.[REF_NAME];
  const keep = old.filter((o) => !(name ? o.annotations?.[REF_NAME] === name : o.digest === d.digest));
  return { schemaVersion: 2, manifests: [...keep, d] };
}
