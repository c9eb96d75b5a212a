// docker://HOST/REPO[:TAG|@DIGEST] for `lazysnap convert`, through registry/
// (the one registry client): the source is resolved and its layers streamed
// (retried, resumed with Range, verified), the result staged in a temporary
// directory and pushed (HEAD, cross-repository mount, monolithic or chunked
// upload, manifest PUT). Mirrors, CAs and capabilities come from hosts.toml,
// credentials from --user over docker's config.json.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { RegistryClient, RegistryClientOptions, Repository } from '../../registry/client';
import { CredentialSource, chainCredentials, dockerConfigCredentials, staticCredentials } from '../../registry/docker-config';
import { AuthError } from '../../registry/errors';
import { DEFAULT_HOSTS_DIR } from '../../registry/hosts';
import { DEFAULT_PLATFORM, ImageRef, parseImageRef } from '../../registry/manifest';
import { Pusher, PushOutcome, fileUpload } from '../../registry/push';
import { streamBlob } from '../../registry/stream';
import {
  Descriptor,
  ImageDest,
  ImageError,
  ImageSource,
  Platform,
  ResolvedImage,
  checkConfig,
  checkManifest,
  parseConfig,
  parseDigest,
} from './oci';

export interface RegistryOptions {
  /** "user:pass" for the registries SRC and DST name (their mirrors get none); over docker's config.json */
  user?: string;
  /** http:// for registries that have no hosts.toml (loopback ones always are) */
  plainHttp?: boolean;
  /** containerd's hosts.toml directory: mirrors, CAs, capabilities (default /etc/containerd/certs.d) */
  hostsDir?: string;
  /** repositories of DST's registry to mount blobs from before uploading them */
  mountFrom?: string[];
  /** blobs larger than this are uploaded in PATCH chunks of this size (default: one PUT up to 64 MiB, 16 MiB chunks above) */
  uploadChunkSize?: number;
  /** blobs pushed at once (default 3) */
  pushConcurrency?: number;
  /** client settings (timeouts, retries) */
  client?: Partial<RegistryClientOptions>;
  /** called as each blob of DST starts, progresses and ends its push */
  onPushStart?(i: number, n: number, d: Descriptor): void;
  onPushBytes?(i: number, bytes: number): void;
  onPushDone?(i: number, n: number, d: Descriptor, outcome: PushOutcome, seconds: number): void;
}

export interface DockerRef {
  ref: ImageRef;
  /** tag or digest */
  reference: string;
}

/** `docker://HOST/REPO[:TAG|@DIGEST]`, or without the prefix when the first component looks like a host. */
export function parseDockerRef(s: string): DockerRef | null {
  const prefixed = s.startsWith('docker://');
  const r = prefixed ? s.slice(9) : s;
  const slash = r.indexOf('/');
  if (!prefixed) {
    const first = slash > 0 ? r.slice(0, slash) : '';
    if (!/[.:]/.test(first) && first !== 'localhost') return null;
  }
  let ref: ImageRef;
  try {
    ref = parseImageRef(r);
  } catch (e) {
    if (!prefixed) return null;
    throw new ImageError((e as Error).message);
  }
  return { ref, reference: ref.digest ?? ref.tag ?? 'latest' };
}

const show = (d: DockerRef) => `docker://${d.ref.host}/${d.ref.repo}${d.ref.digest ? `@${d.ref.digest}` : `:${d.ref.tag}`}`;

/** --user's credentials for `hosts`, over docker's config.json. */
export function convertCredentials(user: string | undefined, hosts: string[]): CredentialSource {
  let mine: CredentialSource | undefined;
  if (user !== undefined) {
    const i = user.indexOf(':');
    if (i < 0) throw new ImageError('--user wants USER:PASS');
    const c = { username: user.slice(0, i), password: user.slice(i + 1) };
    mine = staticCredentials(Object.fromEntries(hosts.map((h) => [h, c])));
  }
  return chainCredentials(mine, dockerConfigCredentials());
}

/** One client for both sides of a conversion (one pool, one token cache), made when first needed. */
export class Registries {
  private client?: RegistryClient;
  readonly credentials: CredentialSource;

  constructor(private readonly opts: RegistryOptions, hosts: string[]) {
    this.credentials = convertCredentials(opts.user, hosts);
  }

  get(): RegistryClient {
    this.client ??= new RegistryClient({
      hostsDir: this.opts.hostsDir ?? DEFAULT_HOSTS_DIR,
      plainHttp: this.opts.plainHttp,
      credentials: this.credentials,
      ...this.opts.client,
    });
    return this.client;
  }

  async close(): Promise<void> {
    await this.client?.close();
  }
}

/** An AuthError when nothing is configured for the host says how to configure something. */
async function explainAuth<T>(name: string, host: string, creds: CredentialSource, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof AuthError && !(await creds(host).catch(() => undefined))) {
      throw new ImageError(`${name}: the registry wants credentials: pass --user USER:PASS or log in with docker login (${e.message})`);
    }
    throw e;
  }
}

export class RegistrySource implements ImageSource {
  readonly name: string;
  private readonly repo: Repository;

  constructor(readonly ref: DockerRef, private readonly registries: Registries, private readonly platform: Platform = DEFAULT_PLATFORM) {
    this.name = show(ref);
    this.repo = registries.get().repository(ref.ref.host, ref.ref.repo);
  }

  async resolve(): Promise<ResolvedImage> {
    return explainAuth(this.name, this.ref.ref.host, this.registries.credentials, async () => {
      const m = await this.repo.getManifest(this.ref.reference, { platform: this.platform });
      checkManifest(m.manifest, `${this.name} manifest ${m.digest}`);
      const configBytes = await this.repo.fetchBlob(m.manifest.config.digest, { maxBytes: 64 << 20 });
      const config = parseConfig(configBytes, this.name);
      checkConfig(config, this.name);
      const platform = m.index?.index.manifests.find((d) => d.digest === m.digest)?.platform ??
        (config.os && config.architecture ? { os: config.os, architecture: config.architecture } : undefined);
      return { manifest: m.manifest, manifestDigest: m.digest, config, configBytes, platform };
    });
  }

  async blob(d: Descriptor): Promise<AsyncIterable<Buffer>> {
    parseDigest(d.digest);
    return streamBlob(this.repo, d.digest, { size: d.size });
  }
}

/** Runs fn over items, at most n at once; the first failure stops new starts and is thrown. */
async function eachLimited<T>(items: T[], n: number, fn: (t: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        await fn(items[i], i);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(n, items.length) }, worker));
  const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw bad.reason;
}

/** Stages blobs in a temporary directory (there is no DST directory), then pushes the blobs and the manifest. */
export class RegistryDest implements ImageDest {
  readonly name: string;
  private readonly repo: Repository;
  private tmp: string | null = null;

  constructor(readonly ref: DockerRef, private readonly registries: Registries, private readonly opts: RegistryOptions = {},
    private readonly tmpRoot = os.tmpdir()) {
    this.name = show(ref);
    this.repo = registries.get().repository(ref.ref.host, ref.ref.repo);
  }

  async stage(): Promise<string> {
    this.tmp = await fs.mkdtemp(path.join(this.tmpRoot, 'lazysnap-convert-'));
    await fs.mkdir(path.join(this.tmp, 'blobs', 'sha256'), { recursive: true });
    return this.tmp;
  }

  async commit(blobs: Descriptor[], manifest: Buffer, manifestDesc: Descriptor): Promise<void> {
    const tmp = this.tmp;
    if (!tmp) throw new Error('commit before stage');
    const cs = this.opts.uploadChunkSize;
    const pusher = new Pusher(this.repo, cs ? { chunkSize: cs, monolithicMax: cs } : {});
    await explainAuth(this.name, this.ref.ref.host, this.registries.credentials, async () => {
      await eachLimited(blobs, this.opts.pushConcurrency ?? 3, async (d, i) => {
        const t0 = process.hrtime.bigint();
        this.opts.onPushStart?.(i, blobs.length, d);
        const file = path.join(tmp, 'blobs', 'sha256', parseDigest(d.digest).hex);
        const outcome = await pusher.pushBlob(fileUpload(file, d.digest, d.size), {
          mountFrom: this.opts.mountFrom,
          onProgress: (b) => this.opts.onPushBytes?.(i, b),
        });
        this.opts.onPushDone?.(i, blobs.length, d, outcome, Number(process.hrtime.bigint() - t0) / 1e9);
      });
      await pusher.putManifest(this.ref.reference, manifestDesc.mediaType, manifest);
    });
    await this.abort();
  }

  async abort(): Promise<void> {
    if (this.tmp) await fs.rm(this.tmp, { recursive: true, force: true });
    this.tmp = null;
  }
}
