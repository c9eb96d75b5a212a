// kubelet's credential-provider plugins as a source of registry credentials
// (its --image-credential-provider-config and -bin-dir): the same config
// file (CredentialProviderConfig, YAML or JSON), the same exec protocol
// (CredentialProviderRequest on stdin, CredentialProviderResponse on
// stdout), the same matchImages rules and response caching. So a node whose
// kubelet gets ECR, GCR or ACR credentials from a plugin reads private
// images lazily with the same plugin.
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { Credentials } from './docker-config';

export class CredentialProviderError extends Error {}

export interface Provider {
  name: string;
  matchImages: string[];
  /** ms */
  defaultCacheDurationMs: number;
  apiVersion: string;
  args: string[];
  env: Record<string, string>;
}

const PROVIDER_API_VERSIONS = ['credentialprovider.kubelet.k8s.io/v1', 'credentialprovider.kubelet.k8s.io/v1beta1', 'credentialprovider.kubelet.k8s.io/v1alpha1'];

/** Go's time.Duration syntax ("5m", "1h30m", "300s", "1.5h"), in ms. */
export function parseGoDuration(s: string): number {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let ms = 0;
  let at = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    ms += Number(m[1]) * unit[m[2]];
    at = re.lastIndex;
  }
  if (at !== s.length || s.length === 0) throw new CredentialProviderError(`bad duration "${s.slice(0, 40)}"`);
  return ms;
}

/** Parses kubelet's CredentialProviderConfig. */
export function parseProviderConfig(text: string, file = 'credential provider config'): Provider[] {
  let doc: Record<string, unknown>;
  try {
    // loaded here, not at the top: most nodes have no provider config, and every worker start would pay ~20 ms for it
    doc = (require('yaml') as typeof import('yaml')).parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new CredentialProviderError(`${file}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc?.kind !== 'CredentialProviderConfig') throw new CredentialProviderError(`${file}: kind is ${JSON.stringify(doc?.kind)}, not CredentialProviderConfig`);
  const list = doc.providers;
  if (!Array.isArray(list)) throw new CredentialProviderError(`${file}: "providers" must be a list`);
  return list.map((p: Record<string, unknown>, i) => {
    const where = `${file}: providers[${i}]`;
    if (typeof p?.name !== 'string' || !/^[A-Za-z0-9._-]+$/.test(p.name)) throw new CredentialProviderError(`${where}: "name" must be a file name in the bin dir`);
    if (!Array.isArray(p.matchImages) || !p.matchImages.every((m) => typeof m === 'string')) throw new CredentialProviderError(`${where}: "matchImages" must be a list of strings`);
    if (typeof p.apiVersion !== 'string' || !PROVIDER_API_VERSIONS.includes(p.apiVersion)) throw new CredentialProviderError(`${where}: "apiVersion" must be one of ${PROVIDER_API_VERSIONS.join(', ')}`);
    const env = Array.isArray(p.env) ? Object.fromEntries((p.env as { name: string; value: string }[]).map((e) => [String(e.name), String(e.value)])) : {};
    return {
      name: p.name,
      matchImages: p.matchImages as string[],
      defaultCacheDurationMs: typeof p.defaultCacheDuration === 'string' ? parseGoDuration(p.defaultCacheDuration) : 0,
      apiVersion: p.apiVersion,
      args: Array.isArray(p.args) ? p.args.map(String) : [],
      env,
    };
  });
}

/** "host[:port]/path" of an image reference, without tag or digest. */
function splitImage(image: string): { host: string; port: string; path: string } {
  const noDigest = image.split('@')[0];
  const slash = noDigest.indexOf('/');
  const hostPort = slash < 0 ? noDigest : noDigest.slice(0, slash);
  let rest = slash < 0 ? '' : noDigest.slice(slash + 1);
  const colon = rest.lastIndexOf(':');
  if (colon >= 0 && !rest.slice(colon).includes('/')) rest = rest.slice(0, colon); // the tag
  const [host, port = ''] = hostPort.split(':');
  return { host, port, path: rest };
}

/**
 * kubelet's rule: the same number of domain parts, each matching (a `*`
 * glob matches within one part), the port equal if the pattern has one, the
 * pattern's path a prefix of the image's.
 */
export function matchImage(pattern: string, image: string): boolean {
  const p = splitImage(pattern.replace(/^https?:\/\//, ''));
  const i = splitImage(image);
  const pp = p.host.split('.');
  const ip = i.host.split('.');
  if (pp.length !== ip.length) return false;
  for (let k = 0; k < pp.length; k++) {
    const re = new RegExp(`^${pp[k].split('*').map((x) => x.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^.]*')}$`);
    if (!re.test(ip[k])) return false;
  }
  if (p.port && p.port !== i.port) return false;
  return i.path === p.path || p.path === '' || i.path.startsWith(`${p.path}/`);
}

interface CacheEntry {
  until: number;
  key: string;
  auth: Record<string, Credentials>;
}

/** Runs plugins for images their matchImages cover; answers from the cache while a response's cacheDuration lasts. */
export class CredentialProviders {
  private readonly cache: CacheEntry[] = [];

  constructor(
    readonly providers: Provider[],
    private readonly binDir: string,
    private readonly timeoutMs = 10_000,
  ) {}

  async credentialsFor(image: string): Promise<Credentials | undefined> {
    const now = Date.now();
    for (const p of this.providers.filter((x) => x.matchImages.some((m) => matchImage(m, image)))) {
      const { host, port, path: repo } = splitImage(image);
      const registry = port ? `${host}:${port}` : host;
      const cached = this.cache.find((c) => c.until > now && [`${p.name}|global`, `${p.name}|registry|${registry}`, `${p.name}|image|${registry}/${repo}`].includes(c.key));
      const auth = cached?.auth ?? (await this.run(p, image, registry, repo));
      const hit = Object.keys(auth).sort((a, b) => b.length - a.length).find((k) => matchImage(k, image));
      if (hit) return auth[hit];
    }
    return undefined;
  }

  private async run(p: Provider, image: string, registry: string, repo: string): Promise<Record<string, Credentials>> {
    const req = JSON.stringify({ kind: 'CredentialProviderRequest', apiVersion: p.apiVersion, image });
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(path.join(this.binDir, p.name), p.args, { env: { ...process.env, ...p.env }, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), this.timeoutMs);
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', (e) => reject(new CredentialProviderError(`credential provider ${p.name}: ${e.message}`)));
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) resolve(stdout);
        else reject(new CredentialProviderError(`credential provider ${p.name} ${signal ? `was killed (${signal}, after ${this.timeoutMs} ms?)` : `exited ${code}`}: ${stderr.trim().split('\n')[0]?.slice(0, 200) ?? ''}`));
      });
      child.stdin.on('error', () => {});
      child.stdin.end(req);
    });
    let res: { kind?: string; cacheKeyType?: string; cacheDuration?: string; auth?: Record<string, { username?: string; password?: string }> };
    try {
      res = JSON.parse(out);
    } catch {
      throw new CredentialProviderError(`credential provider ${p.name}: its answer is not JSON`);
    }
    if (res.kind !== 'CredentialProviderResponse') throw new CredentialProviderError(`credential provider ${p.name}: kind ${JSON.stringify(res.kind)}, not CredentialProviderResponse`);
    const auth: Record<string, Credentials> = {};
    for (const [k, v] of Object.entries(res.auth ?? {})) auth[k] = { username: String(v?.username ?? ''), password: String(v?.password ?? '') };
    const ms = res.cacheDuration ? parseGoDuration(res.cacheDuration) : p.defaultCacheDurationMs;
    const type = (res.cacheKeyType ?? 'Image').toLowerCase();
    if (ms > 0) {
      const key = type === 'global' ? `${p.name}|global` : type === 'registry' ? `${p.name}|registry|${registry}` : `${p.name}|image|${registry}/${repo}`;
      this.cache.push({ key, until: Date.now() + ms, auth });
      if (this.cache.length > 1000) this.cache.splice(0, this.cache.length - 1000);
    }
    return auth;
  }
}
