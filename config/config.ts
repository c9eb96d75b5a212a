// lazysnapd's configuration: TOML, every key optional, unknown keys refused
// (a typo must not silently fall back to a default). Errors are one line.
import { parse, TomlError } from 'smol-toml';
import { excerpt } from '../log/excerpt';
import { readFailure, readRegularFile } from './read-file';
import { parseSize } from './size';

/** A config is a few KiB; more is a wrong path (a device, a log file), refused before it is read. */
export const MAX_CONFIG_BYTES = 1 << 20;

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  /** where snapshots and metadata live */
  root: string;
  /** the unix socket containerd dials ([proxy_plugins] address) */
  address: string;
  log: { level: LogLevel };
  fscache: {
    /** "auto": when /dev/cachefiles exists */
    enabled: boolean | 'auto';
    /**
     * The kernel interface lazy images are served through: "fscache"
     * (EROFS over fscache on-demand), "fanotify" (EROFS file-backed mounts
     * with fanotify pre-content events, Linux >= 6.14), "download" (no lazy
     * backend: blobs are downloaded whole before a nydus image runs), or
     * "auto": fscache where it binds, else fanotify where the kernel has
     * it, else download.
     */
    backend: 'auto' | 'fscache' | 'fanotify' | 'download';
    device: string;
    /** the cachefiles cache dir; needs xattrs (ext4, xfs); "" = <root>/cache */
    cache_dir: string;
    tag: string;
    /** shared fscache domain_id for images pulled through containerd ("" = one volume per image) */
    domain: string;
    /** keep a loaded standby worker so failover is a handover, not a process start */
    standby_worker: boolean;
    /**
     * "on-pull": mount an image when its bootstrap layer is committed and fetch
     * its blobs in the background; "on-start": from the first container on; "off"
     */
    prefetch: 'on-pull' | 'on-start' | 'off';
    /**
     * Every READ the kernel sends is answered within this many ms: with the
     * data, or with EIO for the reader. Shared by every retry under it.
     */
    read_deadline_ms: number;
    /**
     * A serving worker that sends no heartbeat for this many ms (stopped,
     * spinning, blocked), or holds a READ this long past its deadline, is
     * killed and the standby takes over.
     */
    hang_timeout_ms: number;
  };
  /** where lazy images' blobs are fetched from */
  registry: {
    /** containerd's registry config_path: <dir>/<host>/hosts.toml (mirrors, CAs, plain HTTP) */
    config_path: string;
    /** docker's config.json: auths and credential helpers */
    docker_config: string;
    /** http:// for hosts without hosts.toml (loopback registries always use it) */
    plain_http: boolean;
    /** kubelet's CredentialProviderConfig (--image-credential-provider-config); "" = none */
    credential_provider_config: string;
    /** where its plugins are (--image-credential-provider-bin-dir) */
    credential_provider_bin_dir: string;
    /**
     * A chunk whose bytes keep failing verification gives EIO, without a
     * GET, for this many ms; then the next READ of it tries it once more.
     */
    bad_chunk_cooldown_ms: number;
  };
  cri: {
    /**
     * A CRI ImageService proxy in front of containerd (kubelet's
     * --image-service-endpoint): it keeps each PullImage's credentials
     * (imagePullSecrets) so lazy reads of private images work. "" = off.
     */
    image_proxy_address: string;
    /** containerd's socket, where the proxy passes every call */
    containerd_address: string;
  };
  /** learned prefetch (both lazy backends) */
  learn: {
    /**
     * record what a container's start reads of an image that has no trace
     * yet. Off by default: while recording, reads are not widened, which made
     * the first start of a 1.5 GB image 2x slower (bench/startup); record where
     * traces are made, and share them (trace --load, convert --prefetch-trace).
     */
    record: boolean;
    /** the start: this many ms from the container's create */
    window_ms: number;
    /** at the next mount of a traced image, fetch the recorded chunks first, in order (then whole-blob prefetch, if on) */
    replay: boolean;
  };
  cache: {
    /**
     * Bound on the blob cache (cache_dir): past it, the blobs of images no
     * container uses are culled, least recently used first, down to
     * low_water_percent of it; prefetch stops before it would cross it.
     * "0" = no bound. Bytes, or with K/M/G/T (binary) units.
     */
    max_size: string;
    low_water_percent: number;
  };
  metrics: {
    /**
     * Where lazysnapd serves Prometheus metrics (GET /metrics): "host:port"
     * (TCP) or an absolute path (a unix socket); "" = off.
     */
    address: string;
  };
  admin: {
    /**
     * `lazysnap mount` mounts only beneath these directories (after symlinks
     * are resolved), and always nosuid,nodev: the CLI must not be a way to
     * mount over /etc or /usr/bin.
     */
    mount_dirs: string[];
  };
}

/** The embedded defaults: lazysnapd runs with no config file at all. */
export const DEFAULT_CONFIG_TOML = `# lazysnapd configuration (every key is optional)
root = "/var/lib/lazysnap"
address = "/run/lazysnap/snapshotter.sock"

[log]
level = "info"  # trace, debug, info, warn, error, fatal, silent

[fscache]
enabled = "auto"           # "auto" (when /dev/cachefiles exists), true, false
backend = "auto"            # "fscache", "fanotify" (EROFS file-backed + fanotify pre-content, Linux >= 6.14),
                            # "download" (no lazy backend: nydus blobs downloaded whole before the image runs),
                            # or "auto" (fscache where it binds, else fanotify, else download)
device = "/dev/cachefiles"
cache_dir = ""             # "" = <root>/cache; fscache: must support xattrs; fanotify: must accept pre-content marks (ext4, xfs; not tmpfs)
tag = "lazysnap"
domain = "lazysnap"        # images share blobs (and their cache) in this domain; "" = none
standby_worker = true
prefetch = "on-pull"       # "on-pull", "on-start" (first container) or "off": on-demand reads only
# 30 s: time for retries after a capped Retry-After (10 s), or for a READ queued behind a host's
# 8 x 4 MiB GETs at ~10 Mbit/s; EIO is worse than waiting, but stay far below the 120 s hung-task warning.
read_deadline_ms = 30000   # a READ gets its data or EIO within this; every retry under it shares it
# 4 s: healthy serving workers went at most 1.2 s between heartbeats under the failover test (a kill every
# 200-500 ms, a standby's Node start on the guest's one CPU), 0.3-0.8 s elsewhere: 3x that and more, so a GC pause or
# a busy 2-core host never trips it; and a hung worker's readers stall about this long (4.1-5.1 s in kernel/hang).
hang_timeout_ms = 4000     # a serving worker silent this long is killed and replaced (readers stall about this long)

[registry]
config_path = "/etc/containerd/certs.d"   # hosts.toml per registry host, as containerd reads it
docker_config = "/root/.docker/config.json"
plain_http = false
credential_provider_config = ""   # kubelet's --image-credential-provider-config, to read private images with its plugins
credential_provider_bin_dir = ""  # kubelet's --image-credential-provider-bin-dir
bad_chunk_cooldown_ms = 60000     # a chunk that keeps failing verification gives EIO this long, then is tried once more

[cri]
image_proxy_address = ""   # e.g. "/run/lazysnap/cri-image.sock" for kubelet's --image-service-endpoint: private images read lazily with their pull's credentials
containerd_address = "/run/containerd/containerd.sock"

[learn]
record = false             # record what the first container start of an image reads (files, chunks, order); costs that start
                           # its widened reads (up to 2x slower for a big image): turn it on where traces are made, then share them
window_ms = 20000          # the start: this long from the container's create
replay = true              # later mounts of the image fetch those chunks first, in that order, ahead of the reads

[cache]
max_size = "0"             # e.g. "20GiB": blobs of images no container uses are culled (LRU) past it; "0" = no bound
low_water_percent = 80     # culling goes down to this much of max_size

[metrics]
address = ""              # Prometheus GET /metrics: "127.0.0.1:9110" (host:port) or a unix socket path; "" = off

[admin]
mount_dirs = ["/mnt", "/run/lazysnap/mnt"]   # lazysnap mount: only beneath these (symlinks resolved), nosuid,nodev
`;

export class ConfigError extends Error {}

type Leaf = 'string' | 'boolean' | 'number' | 'string|boolean' | 'string[]';
type Shape = { [k: string]: Leaf | Shape };
const SHAPE: Shape = {
  root: 'string',
  address: 'string',
  log: { level: 'string' },
  fscache: { enabled: 'string|boolean', backend: 'string', device: 'string', cache_dir: 'string', tag: 'string', domain: 'string', standby_worker: 'boolean', prefetch: 'string', read_deadline_ms: 'number', hang_timeout_ms: 'number' },
  registry: { config_path: 'string', docker_config: 'string', plain_http: 'boolean', credential_provider_config: 'string', credential_provider_bin_dir: 'string', bad_chunk_cooldown_ms: 'number' },
  cri: { image_proxy_address: 'string', containerd_address: 'string' },
  learn: { record: 'boolean', window_ms: 'number', replay: 'boolean' },
  cache: { max_size: 'string', low_water_percent: 'number' },
  metrics: { address: 'string' },
  admin: { mount_dirs: 'string[]' },
};

function check(obj: Record<string, unknown>, shape: Shape, where: string) {
  for (const [k, v] of Object.entries(obj)) {
    const want = shape[k];
    const name = where ? `${where}.${k}` : k;
    if (want === undefined) throw new ConfigError(`unknown key "${name}"`);
    if (want === 'string[]') {
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new ConfigError(`"${name}" must be an array of strings, got ${excerpt(JSON.stringify(v))}`);
    } else if (typeof want === 'string') {
      if (!want.split('|').includes(typeof v)) throw new ConfigError(`"${name}" must be a ${want.replace('|', ' or ')}, got ${excerpt(JSON.stringify(v) ?? String(v))}`);
    } else {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(`"${name}" must be a table`);
      check(v as Record<string, unknown>, want, name);
    }
  }
}

/** Parses TOML text over the defaults. */
export function parseConfig(text: string): Config {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      throw new ConfigError(`line ${e.line}, column ${e.column}: ${e.message.split('\n')[0].replace(/^Invalid TOML document: /, '')}`);
    }
    throw e;
  }
  check(doc, SHAPE, '');
  const base = parse(DEFAULT_CONFIG_TOML) as unknown as Config;
  const log = { ...base.log, ...((doc.log as object) ?? {}) };
  const fscache = { ...base.fscache, ...((doc.fscache as object) ?? {}) };
  const registry = { ...base.registry, ...((doc.registry as object) ?? {}) };
  const admin = { ...base.admin, ...((doc.admin as object) ?? {}) };
  const metrics = { ...base.metrics, ...((doc.metrics as object) ?? {}) };
  const cache = { ...base.cache, ...((doc.cache as object) ?? {}) };
  const cri = { ...base.cri, ...((doc.cri as object) ?? {}) };
  const learn = { ...base.learn, ...((doc.learn as object) ?? {}) };
  const cfg: Config = { ...base, ...(doc as Partial<Config>), log, fscache, registry, cri, learn, cache, metrics, admin };
  const lwin = cfg.learn.window_ms;
  if (!Number.isSafeInteger(lwin) || lwin < 1000 || lwin > 600_000) {
    throw new ConfigError(`"learn.window_ms" must be an integer from 1000 to 600000, got ${JSON.stringify(lwin)}`);
  }
  if (cfg.registry.credential_provider_config && !cfg.registry.credential_provider_bin_dir) {
    throw new ConfigError('"registry.credential_provider_config" needs "registry.credential_provider_bin_dir" (where its plugins are)');
  }
  for (const k of ['image_proxy_address', 'containerd_address'] as const) {
    if (cfg.cri[k] && !cfg.cri[k].startsWith('/')) throw new ConfigError(`"cri.${k}" must be an absolute socket path, got ${JSON.stringify(excerpt(cfg.cri[k]))}`);
  }
  try {
    parseSize(cfg.cache.max_size);
  } catch (e) {
    throw new ConfigError(`"cache.max_size": ${(e as Error).message}`);
  }
  const lw = cfg.cache.low_water_percent;
  if (!Number.isInteger(lw) || lw < 10 || lw > 100) throw new ConfigError(`"cache.low_water_percent" must be an integer from 10 to 100, got ${JSON.stringify(lw)}`);
  if (cfg.fscache.enabled !== true && cfg.fscache.enabled !== false && cfg.fscache.enabled !== 'auto') {
    throw new ConfigError(`"fscache.enabled" must be true, false or "auto", got ${JSON.stringify(cfg.fscache.enabled)}`);
  }
  if (!['auto', 'fscache', 'fanotify', 'download'].includes(cfg.fscache.backend)) {
    throw new ConfigError(`"fscache.backend" must be "auto", "fscache", "fanotify" or "download", got ${JSON.stringify(cfg.fscache.backend).slice(0, 80)}`);
  }
  if (!['on-pull', 'on-start', 'off'].includes(cfg.fscache.prefetch)) {
    throw new ConfigError(`"fscache.prefetch" must be "on-pull", "on-start" or "off", got ${JSON.stringify(cfg.fscache.prefetch)}`);
  }
  const rd = cfg.fscache.read_deadline_ms;
  if (!Number.isSafeInteger(rd) || rd < 100 || rd > 600_000) {
    throw new ConfigError(`"fscache.read_deadline_ms" must be an integer from 100 to 600000, got ${JSON.stringify(rd)}`);
  }
  const ht = cfg.fscache.hang_timeout_ms;
  if (!Number.isSafeInteger(ht) || ht < 1000 || ht > 600_000) {
    throw new ConfigError(`"fscache.hang_timeout_ms" must be an integer from 1000 to 600000, got ${JSON.stringify(ht)}`);
  }
  const bc = cfg.registry.bad_chunk_cooldown_ms;
  if (!Number.isSafeInteger(bc) || bc < 1000 || bc > 86_400_000) {
    throw new ConfigError(`"registry.bad_chunk_cooldown_ms" must be an integer from 1000 to 86400000, got ${JSON.stringify(bc)}`);
  }
  if (!/^[A-Za-z0-9._-]{1,32}$/.test(cfg.fscache.tag)) throw new ConfigError(`"fscache.tag" must be 1-32 characters of [A-Za-z0-9._-]`);
  if (cfg.fscache.domain && !/^[A-Za-z0-9._-]{1,64}$/.test(cfg.fscache.domain)) throw new ConfigError(`"fscache.domain" must be 1-64 characters of [A-Za-z0-9._-]`);
  if (cfg.fscache.cache_dir && !cfg.fscache.cache_dir.startsWith('/')) throw new ConfigError(`"fscache.cache_dir" must be an absolute path`);
  if (!LOG_LEVELS.includes(cfg.log.level)) {
    throw new ConfigError(`"log.level" must be one of ${LOG_LEVELS.join(', ')}, got "${excerpt(cfg.log.level)}"`);
  }
  if (!cfg.root.startsWith('/')) throw new ConfigError(`"root" must be an absolute path, got "${excerpt(cfg.root)}"`);
  if (!cfg.address.startsWith('/')) throw new ConfigError(`"address" must be an absolute path, got "${excerpt(cfg.address)}"`);
  if (cfg.metrics.address && !cfg.metrics.address.startsWith('/') && !parseListenAddress(cfg.metrics.address)) {
    throw new ConfigError(`"metrics.address" must be "host:port" or an absolute unix socket path, got ${JSON.stringify(excerpt(cfg.metrics.address))}`);
  }
  for (const d of cfg.admin.mount_dirs) {
    // "/" would allow any mountpoint, which is what the list is there to prevent
    if (!d.startsWith('/') || d.replace(/\/+$/, '') === '') {
      throw new ConfigError(`"admin.mount_dirs" entries must be absolute directories other than "/", got ${JSON.stringify(excerpt(d))}`);
    }
  }
  return cfg;
}

/** "host:port", "[v6]:port" or ":port" (all interfaces), as nydus-snapshotter's metrics address; null if it is not one. */
export function parseListenAddress(a: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(a);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** Command-line overrides of lazysnapd, checked like the keys they replace. */
export interface ConfigFlags {
  root?: string;
  address?: string;
  logLevel?: string;
}

/** Applies flags over cfg; a bad value is a one-line ConfigError naming the flag. resolve makes paths absolute. */
export function applyFlags(cfg: Config, flags: ConfigFlags, resolve: (p: string) => string): Config {
  for (const [flag, v] of [['--root', flags.root], ['--address', flags.address]] as const) {
    if (v !== undefined && v === '') throw new ConfigError(`${flag} must not be empty`);
  }
  if (flags.logLevel !== undefined && !(LOG_LEVELS as readonly string[]).includes(flags.logLevel)) {
    throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${excerpt(flags.logLevel)}"`);
  }
  return {
    ...cfg,
    root: flags.root ? resolve(flags.root) : cfg.root,
    address: flags.address ? resolve(flags.address) : cfg.address,
    log: { ...cfg.log, level: (flags.logLevel as LogLevel | undefined) ?? cfg.log.level },
  };
}

/** Read by lazysnapd and the CLI when no --config is given and it exists (as containerd reads /etc/containerd/config.toml). */
export const SYSTEM_CONFIG = '/etc/lazysnap/config.toml';

/** --config's file, else the system config if there is one, else none (the embedded defaults). */
export function configFile(flag: string | undefined, exists: (f: string) => boolean): string | undefined {
  if (flag === '') throw new ConfigError('--config must not be empty');
  return flag ?? (exists(SYSTEM_CONFIG) ? SYSTEM_CONFIG : undefined);
}

/** Reads a config file (a regular file of at most MAX_CONFIG_BYTES); no file means the embedded defaults. */
export function loadConfig(file?: string): Config {
  if (!file) return parseConfig('');
  const name = excerpt(file);
  let text: string;
  try {
    text = readRegularFile(file, MAX_CONFIG_BYTES).toString('utf8');
  } catch (e) {
    throw new ConfigError(`config ${name}: ${readFailure(e)}`);
  }
  try {
    return parseConfig(text);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`config ${name}: ${e.message}`);
    throw e;
  }
}
