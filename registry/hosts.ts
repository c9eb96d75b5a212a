// containerd's registry host configuration (`config_path`, "certs.d"):
// <config_path>/<host>/hosts.toml names mirrors tried in order, then the
// upstream `server`:
//
//   server = "https://registry.example.com"
//   [host."https://mirror.local:5000"]
//     capabilities = ["pull", "resolve"]
//     ca = "mirror-ca.pem"            # or ["a.pem", "b.pem"]; relative to the hosts.toml
//     skip_verify = false
//     override_path = false           # true: the URL path is the API root as is (no /v2 appended)
//     [host."https://mirror.local:5000".header]
//       x-custom = "1"                # or ["a", "b"]
//
// Lookup order for the directory is containerd's: "host_port_", "host:port", "_default".
import fs from 'node:fs';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';

export type Capability = 'pull' | 'resolve' | 'push';
const ALL_CAPS: Capability[] = ['pull', 'resolve', 'push'];

export interface TlsSettings {
  /** PEM CA certificates to trust (in addition to none: a custom CA replaces the system roots for this host) */
  ca?: string[];
  skipVerify?: boolean;
  /** client certificate and key, PEM */
  cert?: string;
  key?: string;
}

export interface RegistryHost {
  /** API root without trailing slash, e.g. "https://mirror.local:5000/v2" */
  api: string;
  /** scheme://host[:port] */
  origin: string;
  /** host[:port] as written in the URL: the key for credentials and logs */
  host: string;
  capabilities: Set<Capability>;
  tls: TlsSettings;
  /** extra request headers */
  headers: Record<string, string[]>;
  /** a mirror, not the registry the image names: requests carry ?ns=<registry> */
  mirror: boolean;
}

/** One host as written in hosts.toml, before CA files are read. */
export interface HostSpec {
  url: string;
  capabilities: Capability[];
  caPaths: string[];
  clientPaths: Array<[string, string | undefined]>;
  skipVerify: boolean;
  overridePath: boolean;
  headers: Record<string, string[]>;
  mirror: boolean;
}

/** containerd's usual config_path, where the CLI looks for hosts.toml by default */
export const DEFAULT_HOSTS_DIR = '/etc/containerd/certs.d';

export interface HostsOptions {
  /** containerd's config_path (e.g. /etc/containerd/certs.d); unset → only the default host */
  configPath?: string;
  /** allow http:// for the default host even if it is not a loopback address */
  plainHttp?: boolean;
}

export function isLoopbackHost(host: string): boolean {
  const h = hostname(host);
  return h === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::1';
}

/** "host:port" → "host"; "[::1]:5000" → "::1". */
export function hostname(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']'));
  const i = host.lastIndexOf(':');
  return i > 0 && host.indexOf(':') === i ? host.slice(0, i) : host;
}

/** The registry's own server when nothing is configured: docker.io's real name, https except for loopback. */
export function defaultServer(registry: string, plainHttp = false): string {
  if (registry === 'docker.io') return 'https://registry-1.docker.io';
  const scheme = plainHttp || isLoopbackHost(registry) ? 'http' : 'https';
  return `${scheme}://${registry}`;
}

/** Candidate hosts.toml directories for a registry, in containerd's order. */
export function hostDirs(configPath: string, registry: string): string[] {
  const dirs: string[] = [];
  const i = registry.lastIndexOf(':');
  if (i > 0 && !registry.endsWith(']')) dirs.push(path.join(configPath, `${registry.slice(0, i)}_${registry.slice(i + 1)}_`));
  dirs.push(path.join(configPath, registry), path.join(configPath, '_default'));
  return dirs;
}

const strings = (v: unknown, what: string): string[] => {
  if (v === undefined) return [];
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  throw new Error(`${what}: expected a string or an array of strings`);
};

const bool = (v: unknown, what: string): boolean => {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new Error(`${what}: expected true or false`);
  return v;
};

function parseSpec(url: string, t: Record<string, unknown>, baseDir: string, mirror: boolean, where: string): HostSpec {
  const caps = strings(t.capabilities, `${where}.capabilities`);
  for (const c of caps) if (!ALL_CAPS.includes(c as Capability)) throw new Error(`${where}.capabilities: unknown capability "${c}"`);
  const abs = (p: string) => (path.isAbsolute(p) ? p : path.join(baseDir, p));
  const clientPaths: Array<[string, string | undefined]> = [];
  const client = t.client;
  if (typeof client === 'string') clientPaths.push([abs(client), undefined]);
  else if (Array.isArray(client)) {
    if (client.length === 2 && client.every((x) => typeof x === 'string')) clientPaths.push([abs(client[0] as string), abs(client[1] as string)]);
    else {
      for (const pair of client) {
        const [c, k] = strings(pair, `${where}.client`);
        clientPaths.push([abs(c), k === undefined ? undefined : abs(k)]);
      }
    }
  } else if (client !== undefined) throw new Error(`${where}.client: expected a path or [cert, key]`);
  const headers: Record<string, string[]> = {};
  if (t.header !== undefined) {
    if (typeof t.header !== 'object' || t.header === null || Array.isArray(t.header)) throw new Error(`${where}.header: expected a table`);
    for (const [k, v] of Object.entries(t.header)) headers[k.toLowerCase()] = strings(v, `${where}.header.${k}`);
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`${where}: "${url}" is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`${where}: "${url}" must be http:// or https://`);
  return {
    url,
    capabilities: caps.length ? (caps as Capability[]) : [...ALL_CAPS],
    caPaths: strings(t.ca, `${where}.ca`).map(abs),
    clientPaths,
    skipVerify: bool(t.skip_verify, `${where}.skip_verify`),
    overridePath: bool(t.override_path, `${where}.override_path`),
    headers,
    mirror,
  };
}

/**
 * Parses a hosts.toml: the [host."…"] entries in file order, then the
 * server (or the registry's default server when none is given).
 */
export function parseHostsToml(text: string, registry: string, baseDir: string, file = 'hosts.toml',
  plainHttp = false): HostSpec[] {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  const out: HostSpec[] = [];
  const hosts = doc.host;
  if (hosts !== undefined) {
    if (typeof hosts !== 'object' || hosts === null || Array.isArray(hosts)) throw new Error(`${file}: "host" must be a table of tables`);
    for (const [url, t] of Object.entries(hosts as Record<string, unknown>)) {
      if (typeof t !== 'object' || t === null || Array.isArray(t)) throw new Error(`${file}: host."${url}" must be a table`);
      out.push(parseSpec(url, t as Record<string, unknown>, baseDir, true, `${file}: host."${url}"`));
    }
  }
  if (doc.server !== undefined && typeof doc.server !== 'string') throw new Error(`${file}: server must be a string`);
  const server = (doc.server as string | undefined) ?? defaultServer(registry, plainHttp);
  // The server's own settings are the top-level keys.
  out.push(parseSpec(server, doc, baseDir, false, `${file}: server`));
  // A mirror entry for the server itself is not a mirror.
  for (const s of out) if (new URL(s.url).host === registry) s.mirror = false;
  return out;
}

/** API root: "/v2" appended unless override_path (containerd's rule). */
export function apiRoot(url: string, overridePath: boolean): string {
  const u = new URL(url);
  let p = u.pathname.replace(/\/+$/, '');
  if (!overridePath && !p.endsWith('/v2')) p += '/v2';
  return `${u.protocol}//${u.host}${p}`;
}

function readPem(p: string, what: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch (e) {
    throw new Error(`${what}: cannot read ${p}: ${(e as Error).message}`);
  }
}

/** Reads CA and client files and builds the hosts. */
export function materialize(specs: HostSpec[], file = 'hosts.toml'): RegistryHost[] {
  return specs.map((s) => {
    const u = new URL(s.url);
    const tls: TlsSettings = { skipVerify: s.skipVerify };
    if (s.caPaths.length) tls.ca = s.caPaths.map((p) => readPem(p, `${file}: ca of ${s.url}`));
    if (s.clientPaths.length) {
      const [c, k] = s.clientPaths[0];
      tls.cert = readPem(c, `${file}: client of ${s.url}`);
      tls.key = k ? readPem(k, `${file}: client key of ${s.url}`) : tls.cert;
    }
    return {
      api: apiRoot(s.url, s.overridePath),
      origin: `${u.protocol}//${u.host}`,
      host: u.host,
      capabilities: new Set(s.capabilities),
      tls,
      headers: s.headers,
      mirror: s.mirror,
    };
  });
}

/** The hosts to try for a registry, in order (mirrors first, the server last). */
export function resolveHosts(registry: string, opts: HostsOptions = {}): RegistryHost[] {
  if (opts.configPath) {
    for (const dir of hostDirs(opts.configPath, registry)) {
      const file = path.join(dir, 'hosts.toml');
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
        throw new Error(`cannot read ${file}: ${(e as Error).message}`);
      }
      return materialize(parseHostsToml(text, registry, dir, file, opts.plainHttp), file);
    }
  }
  return materialize([{
    url: defaultServer(registry, opts.plainHttp),
    capabilities: [...ALL_CAPS],
    caPaths: [],
    clientPaths: [],
    skipVerify: false,
    overridePath: false,
    headers: {},
    mirror: false,
  }]);
}
