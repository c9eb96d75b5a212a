// A throwaway OCI registry (Debian's docker-registry, distribution 2.8) on
// 127.0.0.1 with filesystem storage, optional htpasswd auth, and its log
// (including the access log) in a file that tests can read.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bin, requireBinaries } from './bins';
import { runOk, spawnDaemon, stopDaemon, tail, isRunning, type Daemon } from './proc';
import { makeTempDir, removeTempDir } from './tmp';
import { freePort, waitFor } from './wait';

export interface RegistryOptions {
  htpasswd?: { user: string; pass: string };
  /** Directory for config, storage and log. Default: a new temp dir, deleted by stop(). */
  dir?: string;
}

export interface Registry {
  url: string; // http://127.0.0.1:PORT
  host: string; // 127.0.0.1:PORT
  port: number;
  dir: string;
  logPath: string;
  configPath: string;
  auth?: { user: string; pass: string };
  daemon: Daemon;
  stop(): Promise<void>;
}

/** Starts docker-registry; retries with another port if one was taken between probe and bind. */
export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  requireBinaries(opts.htpasswd ? ['registry', 'htpasswd'] : ['registry']);
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? await makeTempDir('registry');
  await mkdir(join(dir, 'storage'), { recursive: true });
  let htpasswdPath: string | undefined;
  if (opts.htpasswd) {
    htpasswdPath = join(dir, 'htpasswd');
    // distribution only accepts bcrypt entries.
    const r = await runOk(bin('htpasswd'), ['-Bbn', opts.htpasswd.user, opts.htpasswd.pass]);
    await writeFile(htpasswdPath, r.stdout);
  }
  let lastErr: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      return await startOnce(dir, ownDir, opts.htpasswd, htpasswdPath, attempt);
    } catch (e) {
      lastErr = e;
      if (!String(e).includes('address already in use')) break;
    }
  }
  if (ownDir) await removeTempDir(dir);
  throw lastErr;
}

async function startOnce(dir: string, ownDir: boolean, auth: Registry['auth'], htpasswdPath: string | undefined,
  attempt: number): Promise<Registry> {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const url = `http://${host}`;
  const configPath = join(dir, 'config.yml');
  const logPath = join(dir, `registry${attempt > 1 ? `-${attempt}` : ''}.log`);
  // JSON is valid YAML, so no YAML writer is needed.
  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: 'info', formatter: 'text', accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: join(dir, 'storage') },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: host, secret: 'lazysnap-test-secret' },
  };
  if (htpasswdPath) config.auth = { htpasswd: { realm: 'basic-realm', path: htpasswdPath } };
  await writeFile(configPath, JSON.stringify(config, null, 2) + '\n');

  const daemon = spawnDaemon(bin('registry'), ['serve', configPath], logPath);
  const stop = async () => {
    await stopDaemon(daemon, 'SIGTERM', 5_000);
    if (ownDir) await removeTempDir(dir);
  };
  try {
    await waitFor(async () => {
      if (!isRunning(daemon)) throw new Error(`docker-registry exited during startup:\n${await tail(logPath)}`);
      try {
        const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        return res.status === 200 || res.status === 401;
      } catch {
        return false;
      }
    }, { what: `docker-registry to answer GET ${url}/v2/ (log: ${logPath})`, timeoutMs: 15_000 });
  } catch (e) {
    await stopDaemon(daemon, 'SIGKILL');
    throw e;
  }
  return { url, host, port, dir, logPath, configPath, auth, daemon, stop };
}
