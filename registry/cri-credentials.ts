// Credentials that came with a CRI PullImage (Kubernetes' imagePullSecrets),
// kept per repository so the worker's lazy reads of that image can use them:
// one file per host/repo in a 0700 directory, each 0600, written whole
// (temp file, rename) so a reader never sees half of one. Never logged.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Credentials } from './docker-config';

/** CRI's AuthConfig, as the proxy decodes it. */
export interface CriAuth {
  username?: string;
  password?: string;
  /** base64 "user:pass" */
  auth?: string;
  identity_token?: string;
  registry_token?: string;
}

/** What a CRI AuthConfig says, as the registry client takes it; undefined for an empty one (anonymous). */
export function credentialsOf(a: CriAuth | null | undefined): Credentials | undefined {
  if (!a) return undefined;
  if (a.registry_token) return { registryToken: a.registry_token };
  if (a.identity_token) return { identityToken: a.identity_token, ...(a.username ? { username: a.username } : {}) };
  if (a.username || a.password) return { username: a.username ?? '', password: a.password ?? '' };
  if (a.auth) {
    const s = Buffer.from(a.auth, 'base64').toString('utf8');
    const i = s.indexOf(':');
    if (i > 0) return { username: s.slice(0, i), password: s.slice(i + 1) };
  }
  return undefined;
}

const fileOf = (dir: string, host: string, repo: string) =>
  path.join(dir, `${crypto.createHash('sha256').update(`${host}/${repo}`).digest('hex').slice(0, 32)}.json`);

export function saveCriCredentials(dir: string, host: string, repo: string, creds: Credentials): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const file = fileOf(dir, host, repo);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ host, repo, credentials: creds }), { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** The credentials the last pull of host/repo came with, if any (read at each call: a later pull may bring new ones). */
export function loadCriCredentials(dir: string, host: string, repo: string): Credentials | undefined {
  if (!dir) return undefined;
  try {
    const v = JSON.parse(fs.readFileSync(fileOf(dir, host, repo), 'utf8')) as { host?: string; repo?: string; credentials?: Credentials };
    return v.host === host && v.repo === repo ? v.credentials : undefined;
  } catch {
    return undefined;
  }
}
