// A throwaway PKI made with openssl (a test CA and a server certificate for
// 127.0.0.1 and localhost), and docker-registry started with settings
// test/support/registry.ts does not offer: token auth and TLS.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { bin, requireBinaries } from './bins';
import { runOk, spawnDaemon, stopDaemon, tail, isRunning } from './proc';
import type { Registry } from './registry';
import { makeTempDir, removeTempDir } from './tmp';
import { freePort, waitFor } from './wait';

const OPENSSL = '/usr/bin/openssl';

export interface TestPki {
  dir: string;
  caPath: string;
  ca: string;
  certPath: string;
  keyPath: string;
  cert: string;
  key: string;
}

/** A CA and a server certificate (SAN IP:127.0.0.1, DNS:localhost) signed by it; P-256 keys, valid 2 days. */
export async function makeTestPki(dir: string): Promise<TestPki> {
  await mkdir(dir, { recursive: true });
  const p = (f: string) => join(dir, f);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await runOk(OPENSSL, ['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2',
    '-subj', '/CN=lazysnap test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await runOk(OPENSSL, ['req', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=127.0.0.1']);
  await writeFile(p('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' +
    'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n');
  await runOk(OPENSSL, ['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial',
    '-out', p('server.pem'), '-days', '2', '-extfile', p('server.ext')]);
  return {
    dir,
    caPath: p('ca.pem'),
    ca: await readFile(p('ca.pem'), 'utf8'),
    certPath: p('server.pem'),
    keyPath: p('server.key'),
    cert: await readFile(p('server.pem'), 'utf8'),
    key: await readFile(p('server.key'), 'utf8'),
  };
}

export interface CustomRegistryOptions {
  /** the registry's `auth` section, e.g. {token: {realm, service, issuer, rootcertbundle}} or {htpasswd: {...}} */
  auth?: Record<string, unknown>;
  /** serve HTTPS with this certificate */
  tls?: { certificate: string; key: string; ca: string };
  dir?: string;
}

/**
 * docker-registry on 127.0.0.1 with a config of our choosing (token auth,
 * TLS). Same shape as startRegistry(); url is https:// with tls.
 */
export async function startCustomRegistry(opts: CustomRegistryOptions = {}): Promise<Registry & { agent?: Agent }> {
  requireBinaries(['registry']);
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? await makeTempDir('registry');
  await mkdir(join(dir, 'storage'), { recursive: true });
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const url = `${opts.tls ? 'https' : 'http'}://${host}`;
  const configPath = join(dir, 'config.yml');
  const logPath = join(dir, 'registry.log');
  const http: Record<string, unknown> = { addr: host, secret: 'lazysnap-test-secret' };
  if (opts.tls) http.tls = { certificate: opts.tls.certificate, key: opts.tls.key };
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
  if (opts.auth) config.auth = opts.auth;
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
    if (ownDir) await removeTempDir(dir);
    throw e;
  }
  return { url, host, port, dir, logPath, configPath, daemon, stop, agent };
}
