// A throwaway OCI registry (Debian's docker-registry, distribution 2.8) on
// 127.0.0.1 with filesystem storage, optional htpasswd or token auth,
// optional TLS, and its log (including the access log) in a file that tests
// can read.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { bin, requireBinaries } from './bins';
import { runOk, spawnDaemon, stopDaemon, tail, isRunning, type Daemon } from './proc';
import { makeTempDir, removeTempDir } from './tmp';
import { freePort, waitFor } from './wait';

export interface RegistryOptions {
  htpasswd?: { user: string; pass: string };
  /** the registry's `auth` section as is, e.g. {token: {realm, service, issuer, rootcertbundle}} (instead of htpasswd) */
  authConfig?: Record<string, unknown>;
  /** serve HTTPS with this certificate (tests/support/tls.ts makes one) */
  tls?: { certificate: string; key: string; ca: string };
  /** Directory for config, storage and log. Default: a new temp dir, deleted by stop(). */
  dir?: string;
}

export interface Registry {
  url: string; // http(s)://127.0.0.1:PORT
  host: string; // 127.0.0.1:PORT
  port: number;
  dir: string;
  logPath: string;
  configPath: string;
  auth?: { user: string; pass: string };
  /** with tls: an undici agent that trusts the registry's CA (closed by stop()) */
  agent?: Agent;
  daemon: Daemon;
  stop(): Promise<void>;
}

/** Starts docker-registry; retries with another port if one was taken between probe and bind. */
export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  requireBinaries(opts.htpasswd ? ['registry', 'htpasswd'] : ['registry']);
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? await makeTempDir('registry');
  await mkdir(join(dir, 'storage'), { recursive: true });
  let authConfig = opts.authConfig;
  if (opts.htpasswd) {
    const htpasswdPath = join(dir, 'htpasswd');
    // distribution only accepts bcrypt entries.
    const r = await runOk(bin('htpasswd'), ['-Bbn', opts.htpasswd.user, opts.htpasswd.pass]);
    await writeFile(htpasswdPath, r.stdout);
    authConfig = { htpasswd: { realm: 'basic-realm', path: htpasswdPath } };
  }
  let lastErr: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      return await startOnce(dir, ownDir, opts, authConfig, attempt);
    } catch (e) {
      lastErr = e;
      if (!String(e).includes('address already in use')) break;
    }
  }
  if (ownDir) await removeTempDir(dir);
  throw lastErr;
}

async function startOnce(dir: string, ownDir: boolean, opts: RegistryOptions, authConfig: Record<string, unknown> | undefined,
  attempt: number): Promise<Registry> {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const url = `${opts.tls ? 'https' : 'http'}://${host}`;
  const configPath = join(dir, 'config.yml');
  const logPath = join(dir, `registry${attempt > 1 ? `-${attempt}` : ''}.log`);
  const http: Record<string, unknown> = { addr: host, secret: 'lazysnap-test-secret' };
  if (opts.tls) http.tls = { certificate: opts.tls.certificate, key: opts.tls.key };
  // JSON is valid YAML, so no YAML writer is needed.
  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: 'info', formatter: 'text', accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: join(dir, 'storage') },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http,
  };
  if (authConfig) config.auth = authConfig;
  await writeFile(configPath, JSON.stringify(config, null, 2) + '\n');

  const agent = opts.tls ? new Agent({ connect: { ca: opts.tls.ca } }) : undefined;
  const daemon = spawnDaemon(bin('registry'), ['serve', configPath], logPath);
  const stop = async () => {
    await agent?.close();
    await stopDaemon(daemon, 'SIGTERM', 5_000);
    if (ownDir) await removeTempDir(dir);
  };
  try {
    await waitFor(async () => {
      if (!isRunning(daemon)) throw new Error(`docker-registry exited during startup:\n${await tail(logPath)}`);
      try {
        const res = await request(`${url}/v2/`, { dispatcher: agent, headersTimeout: 1000, bodyTimeout: 1000 });
        await res.body.dump();
        return res.statusCode === 200 || res.statusCode === 401;
      } catch {
        return false;
      }
    }, { what: `docker-registry to answer GET ${url}/v2/ (log: ${logPath})`, timeoutMs: 15_000 });
  } catch (e) {
    await stopDaemon(daemon, 'SIGKILL');
    await agent?.close();
    throw e;
  }
  return { url, host, port, dir, logPath, configPath, auth: opts.htpasswd, agent, daemon, stop };
}
