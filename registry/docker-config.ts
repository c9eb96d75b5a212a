// Registry credentials: handed in by the caller (the snapshotter passes what
// containerd's CRI pull used), or read from docker's config.json:
//   { "auths": { "host": { "auth": base64("user:pass") | "identitytoken": "…" } },
//     "credHelpers": { "host": "ecr-login" }, "credsStore": "pass" }
// Helpers run as `docker-credential-<name> get` with the server on stdin and
// answer {"ServerURL","Username","Secret"} (Username "<token>" = identity token).
// Nothing here logs a secret; errors name the host and helper only.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export type Credentials =
  | { username: string; password: string }
  /** an OAuth2 refresh token (docker's identitytoken), exchanged at the token endpoint */
  | { identityToken: string; username?: string }
  /** a bearer token used as is */
  | { registryToken: string };

/** Credentials for a host ("host[:port]"), or undefined for anonymous access. */
export type CredentialSource = (host: string) => Promise<Credentials | undefined>;

export interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** docker.io's aliases all mean the same credentials. */
const DOCKER_HUB = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);
const DOCKER_HUB_SERVER = 'https://index.docker.io/v1/';

/** "https://host:5000/v1/" → "host:5000"; docker hub aliases → "docker.io". */
export function normalizeHost(key: string): string {
  let h = key.trim();
  h = h.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  h = h.replace(/\/.*$/, '').toLowerCase();
  return DOCKER_HUB.has(h) ? 'docker.io' : h;
}

/** The default location: $DOCKER_CONFIG/config.json, else ~/.docker/config.json. */
export function defaultDockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.DOCKER_CONFIG || path.join(env.HOME || os.homedir(), '.docker'), 'config.json');
}

/**
 * Why a credentials file is exposed (readable or writable by group or
 * others, or not a regular file), or null if it is private or absent.
 */
export function credentialFileExposure(file: string): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return null;
  }
  if (!st.isFile()) return `${file} is not a regular file`;
  if (st.mode & 0o077) return `${file} has mode ${(st.mode & 0o777).toString(8)}: others can read the registry credentials in it (chmod 600)`;
  return null;
}

export function parseDockerConfig(text: string, file = 'config.json'): DockerConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    // V8's message quotes the text around the error, which may be a credential: keep only where it is.
    const at = /position (\d+)/.exec((e as Error).message);
    throw new Error(`${file}: not JSON${at ? ` (error at byte ${at[1]})` : ''}`);
  }
  if (typeof doc !== 'object' || doc === null) throw new Error(`${file}: not a JSON object`);
  return doc as DockerConfig;
}

/** Decodes an `auths` entry. Throws (naming the host, never the secret) on malformed base64. */
export function decodeAuthEntry(host: string, e: NonNullable<DockerConfig['auths']>[string], file = 'config.json'):
  Credentials | undefined {
  if (e.identitytoken) return { identityToken: e.identitytoken, username: e.username };
  if (e.registrytoken) return { registryToken: e.registrytoken };
  if (e.auth) {
    const text = Buffer.from(e.auth, 'base64').toString('utf8');
    const i = text.indexOf(':');
    if (i <= 0) throw new Error(`${file}: auths["${host}"].auth is not base64 "user:password"`);
    return { username: text.slice(0, i), password: text.slice(i + 1) };
  }
  if (e.username !== undefined && e.password !== undefined) return { username: e.username, password: e.password };
  return undefined;
}

/** Finds the auths entry for a host, matching keys with or without scheme and path. */
export function lookupAuths(cfg: DockerConfig, host: string, file = 'config.json'): Credentials | undefined {
  const want = normalizeHost(host);
  for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
    if (normalizeHost(key) === want) {
      const c = decodeAuthEntry(key, entry, file);
      if (c) return c;
    }
  }
  return undefined;
}

/** The helper for a host: credHelpers[host] first, else credsStore. */
export function helperFor(cfg: DockerConfig, host: string): string | undefined {
  const want = normalizeHost(host);
  for (const [key, helper] of Object.entries(cfg.credHelpers ?? {})) if (normalizeHost(key) === want) return helper;
  return cfg.credsStore || undefined;
}

/** Runs `docker-credential-<helper> get`. Resolves undefined when the helper has nothing for the host. */
export function runCredentialHelper(helper: string, host: string, timeoutMs = 10_000): Promise<Credentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) return Promise.reject(new Error(`credential helper name "${helper}" is not valid`));
  const server = normalizeHost(host) === 'docker.io' ? DOCKER_HUB_SERVER : host;
  const cmd = `docker-credential-${helper}`;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, ['get'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} get for ${host} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd} for ${host}: ${e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString();
      if (code !== 0) {
        // The helper protocol's "not found" answer is on stdout; other failures are errors.
        const msg = (stdout + Buffer.concat(err).toString()).trim();
        if (/credentials not found/i.test(msg)) return resolve(undefined);
        // Helper output may echo what it was given (only the host); cap it.
        return reject(new Error(`${cmd} get for ${host} exited with ${code}: ${msg.slice(0, 200)}`));
      }
      let r: { Username?: string; Secret?: string };
      try {
        r = JSON.parse(stdout);
      } catch {
        return reject(new Error(`${cmd} get for ${host} printed something that is not JSON`));
      }
      if (!r.Secret) return resolve(undefined);
      if (r.Username === '<token>') return resolve({ identityToken: r.Secret });
      resolve({ username: r.Username ?? '', password: r.Secret });
    });
    child.stdin.on('error', () => { /* helper exited early */ });
    child.stdin.end(server);
  });
}

export interface DockerConfigSourceOptions {
  /** config.json path; default defaultDockerConfigPath() */
  path?: string;
  /** how long helper answers are reused (ms); default 5 min */
  cacheMs?: number;
  helperTimeoutMs?: number;
}

/**
 * Credentials from docker's config.json. The file is re-read when it changes
 * (mtime), helper answers are cached for cacheMs. A missing file means
 * anonymous access.
 */
export function dockerConfigCredentials(opts: DockerConfigSourceOptions = {}): CredentialSource {
  const file = opts.path ?? defaultDockerConfigPath();
  const cacheMs = opts.cacheMs ?? 5 * 60_000;
  let cfg: DockerConfig | undefined;
  let mtime = -1;
  const cache = new Map<string, { at: number; creds: Promise<Credentials | undefined> }>();
  const load = (): DockerConfig | undefined => {
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch {
      cfg = undefined;
      mtime = -1;
      return undefined;
    }
    if (st.mtimeMs !== mtime) {
      cfg = parseDockerConfig(fs.readFileSync(file, 'utf8'), file);
      mtime = st.mtimeMs;
      cache.clear();
    }
    return cfg;
  };
  return async (host: string) => {
    const c = load();
    if (!c) return undefined;
    const key = normalizeHost(host);
    const hit = cache.get(key);
    if (hit && Date.now() - hit.at < cacheMs) return hit.creds;
    const creds = (async () => {
      const helper = helperFor(c, host);
      if (helper) {
        const got = await runCredentialHelper(helper, host, opts.helperTimeoutMs);
        if (got) return got;
      }
      return lookupAuths(c, host, file);
    })();
    cache.set(key, { at: Date.now(), creds });
    creds.catch(() => cache.delete(key));
    return creds;
  };
}

/** Fixed credentials per host (what the snapshotter hands over). Keys are normalised like config.json's. */
export function staticCredentials(map: Record<string, Credentials>): CredentialSource {
  const m = new Map(Object.entries(map).map(([k, v]) => [normalizeHost(k), v]));
  return async (host) => m.get(normalizeHost(host));
}

/** The first source that has credentials for the host wins. */
export function chainCredentials(...sources: Array<CredentialSource | undefined>): CredentialSource {
  return async (host) => {
    for (const s of sources) {
      if (!s) continue;
      const c = await s(host);
      if (c) return c;
    }
    return undefined;
  };
}

/** A stable, non-reversible key for a credential (for cache keys; never logged as a secret). */
export function credentialKey(c: Credentials | undefined): string {
  if (!c) return 'anon';
  return crypto.createHash('sha256').update(JSON.stringify(c)).digest('hex').slice(0, 16);
}
