// A deliberately small registry client for `lazysnap convert` (pull one image,
// push one image) on Node's global fetch: plain HTTP for localhost, Basic
// auth, and the Bearer token dance with those credentials. The production
// client (retries, token refresh, mirrors, Range reads) lives in fetcher/;
// this one is isolated behind ImageSource/ImageDest so it can be swapped.
import crypto from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  ACCEPT,
  Descriptor,
  ImageDest,
  ImageError,
  ImageSource,
  Index,
  Manifest,
  ResolvedImage,
  checkConfig,
  checkManifest,
  isIndex,
  parseConfig,
  parseDigest,
  pickPlatform,
} from './oci';

export interface RegistryRef {
  host: string;
  repo: string;
  /** tag or sha256 digest */
  reference: string;
}

/** `docker://HOST/REPO[:TAG|@DIGEST]` or `HOST/REPO[:TAG|@DIGEST]` (HOST must look like a host). */
export function parseRegistryRef(s: string): RegistryRef | null {
  const r = s.startsWith('docker://') ? s.slice(9) : s;
  const slash = r.indexOf('/');
  if (slash <= 0) return null;
  const host = r.slice(0, slash);
  if (!s.startsWith('docker://') && !/[.:]/.test(host) && host !== 'localhost') return null;
  let rest = r.slice(slash + 1);
  let reference = 'latest';
  const at = rest.indexOf('@');
  if (at >= 0) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon > rest.lastIndexOf('/')) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
    }
  }
  if (!/^[a-z0-9]+(?:[._\-/][a-z0-9]+)*$/.test(rest)) return null;
  return { host, repo: rest, reference };
}

export interface RegistryOptions {
  /** "user:pass" */
  user?: string;
  plainHttp?: boolean;
  timeoutMs?: number;
}

const isLocal = (host: string) => /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/.test(host);

export class RegistryClient {
  private readonly base: string;
  private readonly basic?: string;
  private authHeader?: string;
  private readonly tokens = new Map<string, string>();

  constructor(readonly ref: RegistryRef, private readonly opts: RegistryOptions = {}) {
    this.base = `${opts.plainHttp || isLocal(ref.host) ? 'http' : 'https'}://${ref.host}`;
    if (opts.user) this.basic = 'Basic ' + Buffer.from(opts.user).toString('base64');
  }

  get name(): string {
    return `${this.ref.host}/${this.ref.repo}:${this.ref.reference}`;
  }

  private url(p: string): string {
    return `${this.base}/v2/${this.ref.repo}/${p}`;
  }

  /** One request; on 401, answers the challenge (Basic or Bearer) and retries once. */
  async request(method: string, url: string, ok: number[], init: RequestInit & { duplex?: 'half' } = {}, scope = 'pull'): Promise<Response> {
    const send = () => {
      const headers = new Headers(init.headers);
      if (this.authHeader) headers.set('authorization', this.authHeader);
      return fetch(url, { ...init, method, headers, redirect: 'follow', signal: AbortSignal.timeout(this.opts.timeoutMs ?? 600_000) });
    };
    let res = await send();
    const replayable = init.body === undefined || init.body === null || Buffer.isBuffer(init.body) || typeof init.body === 'string';
    if (res.status === 401 && replayable) {
      await res.arrayBuffer().catch(() => undefined);
      await this.answer(res.headers.get('www-authenticate') ?? '', scope);
      res = await send();
    }
    if (!ok.includes(res.status)) {
      const text = method === 'HEAD' ? '' : await res.text().catch(() => '');
      throw new ImageError(`${method} ${url}: HTTP ${res.status}${text ? ` ${text.slice(0, 300)}` : ''}`);
    }
    return res;
  }

  private async answer(challenge: string, scope: string): Promise<void> {
    if (/^basic/i.test(challenge)) {
      if (!this.basic) throw new ImageError(`${this.ref.host} wants credentials: pass --user USER:PASS`);
      this.authHeader = this.basic;
      return;
    }
    const m = /^bearer\s+(.*)$/i.exec(challenge);
    if (!m) throw new ImageError(`${this.ref.host}: unsupported auth challenge "${challenge}"`);
    const params = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    const want = params.scope ?? `repository:${this.ref.repo}:${scope}`;
    let token = this.tokens.get(want);
    if (!token) {
      const u = new URL(params.realm);
      if (params.service) u.searchParams.set('service', params.service);
      u.searchParams.set('scope', want);
      const res = await fetch(u, { headers: this.basic ? { authorization: this.basic } : {}, signal: AbortSignal.timeout(60_000) });
      if (!res.ok) throw new ImageError(`token request to ${u.origin}${u.pathname} failed: HTTP ${res.status}`);
      const body = (await res.json()) as { token?: string; access_token?: string };
      token = body.token ?? body.access_token;
      if (!token) throw new ImageError(`token server ${u.origin} returned no token`);
      this.tokens.set(want, token);
    }
    this.authHeader = `Bearer ${token}`;
  }

  async manifest(reference: string): Promise<{ body: Buffer; mediaType: string; digest: string }> {
    const res = await this.request('GET', this.url(`manifests/${reference}`), [200], { headers: { accept: ACCEPT } });
    const body = Buffer.from(await res.arrayBuffer());
    const digest = `sha256:${crypto.createHash('sha256').update(body).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference) throw new ImageError(`${this.name}: manifest ${reference} does not match its digest`);
    return { body, mediaType: (res.headers.get('content-type') ?? '').split(';')[0], digest };
  }

  async blobStream(digest: string): Promise<AsyncIterable<Buffer>> {
    parseDigest(digest);
    const res = await this.request('GET', this.url(`blobs/${digest}`), [200]);
    if (!res.body) throw new ImageError(`${this.name}: blob ${digest} has no body`);
    return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
  }

  async blobBytes(digest: string): Promise<Buffer> {
    const res = await this.request('GET', this.url(`blobs/${digest}`), [200]);
    const b = Buffer.from(await res.arrayBuffer());
    const got = `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;
    if (got !== digest) throw new ImageError(`${this.name}: blob ${digest} does not match its digest (content is ${got})`);
    return b;
  }

  async hasBlob(digest: string): Promise<boolean> {
    const res = await this.request('HEAD', this.url(`blobs/${digest}`), [200, 404], {}, 'pull,push');
    return res.status === 200;
  }

  /** Monolithic upload: POST for a session, PUT the file with ?digest=. Skipped if the registry has it. */
  async pushBlob(digest: string, size: number, file: string): Promise<boolean> {
    if (await this.hasBlob(digest)) return false;
    const start = await this.request('POST', this.url('blobs/uploads/'), [202], {}, 'pull,push');
    const loc = start.headers.get('location');
    if (!loc) throw new ImageError(`${this.name}: upload session without a Location`);
    const put = new URL(loc, this.base);
    put.searchParams.set('digest', digest);
    await this.request('PUT', put.toString(), [201], {
      body: Readable.toWeb(createReadStream(file, { highWaterMark: 1 << 20 })) as unknown as RequestInit['body'],
      duplex: 'half',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    });
    return true;
  }

  async putManifest(reference: string, mediaType: string, body: Buffer): Promise<void> {
    await this.request('PUT', this.url(`manifests/${reference}`), [201], { body, headers: { 'content-type': mediaType } }, 'pull,push');
  }
}

export class RegistrySource implements ImageSource {
  readonly name: string;
  private readonly client: RegistryClient;

  constructor(ref: RegistryRef, opts: RegistryOptions, private readonly platform = { os: 'linux', architecture: 'amd64' }) {
    this.client = new RegistryClient(ref, opts);
    this.name = `docker://${this.client.name}`;
  }

  async resolve(): Promise<ResolvedImage> {
    const json = (b: Buffer) => {
      try {
        return JSON.parse(b.toString('utf8')) as Manifest & Index;
      } catch (e) {
        throw new ImageError(`${this.name}: manifest is not JSON: ${(e as Error).message}`);
      }
    };
    let m = await this.client.manifest(this.client.ref.reference);
    let body = json(m.body);
    let platform;
    if (isIndex(m.mediaType, body)) {
      const d = pickPlatform(body, this.platform, this.name);
      platform = d.platform;
      m = await this.client.manifest(d.digest);
      body = json(m.body);
    }
    checkManifest(body, `${this.name} manifest ${m.digest}`);
    const configBytes = await this.client.blobBytes(body.config.digest);
    const config = parseConfig(configBytes, this.name);
    checkConfig(config, this.name);
    platform ??= config.os && config.architecture ? { os: config.os, architecture: config.architecture } : undefined;
    return { manifest: body, manifestDigest: m.digest, config, configBytes, platform };
  }

  blob(d: Descriptor): Promise<AsyncIterable<Buffer>> {
    return this.client.blobStream(d.digest);
  }
}

/** Stages blobs in a temporary directory (there is no DST directory), then pushes blobs and the manifest. */
export class RegistryDest implements ImageDest {
  readonly name: string;
  readonly client: RegistryClient;
  private tmp: string | null = null;

  constructor(ref: RegistryRef, opts: RegistryOptions, private readonly tmpRoot = os.tmpdir()) {
    this.client = new RegistryClient(ref, opts);
    this.name = `docker://${this.client.name}`;
  }

  async stage(): Promise<string> {
    this.tmp = await fs.mkdtemp(path.join(this.tmpRoot, 'lazysnap-convert-'));
    await fs.mkdir(path.join(this.tmp, 'blobs', 'sha256'), { recursive: true });
    return this.tmp;
  }

  async commit(blobs: Descriptor[], manifest: Buffer, manifestDesc: Descriptor): Promise<void> {
    const tmp = this.tmp;
    if (!tmp) throw new Error('commit before stage');
    for (const d of blobs) await this.client.pushBlob(d.digest, d.size, path.join(tmp, 'blobs', 'sha256', parseDigest(d.digest).hex));
    await this.client.putManifest(this.client.ref.reference, manifestDesc.mediaType, manifest);
    await this.abort();
  }

  async abort(): Promise<void> {
    if (this.tmp) await fs.rm(this.tmp, { recursive: true, force: true });
    this.tmp = null;
  }
}
