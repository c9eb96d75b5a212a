// A token server for docker-registry's `auth.token` (distribution's token
// spec): GET /token?service=…&scope=… with optional Basic credentials,
// answering {token, access_token, expires_in, issued_at}. The token is an
// RS256 JWT whose header carries x5c = [base64 DER of the signing cert]; the
// registry trusts that cert through `rootcertbundle`. Claims: iss, sub, aud
// (= service), exp, nbf, iat, jti, access [{type, name, actions}].
//
// For expiry tests the JWT's exp can differ from the expires_in told to the
// client (jwtLifetimeSec): the registry then answers 401 mid-load, as when a
// token is revoked or clocks disagree. distribution allows 60 s of leeway on
// exp, so a token with exp = now − 57 s is refused about 3 s later.
import crypto from 'node:crypto';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from './proc';

export interface TokenServerOptions {
  service?: string;
  issuer?: string;
  /** user → password; requests with wrong credentials get 401 */
  users?: Record<string, string>;
  /** OAuth2 refresh tokens (docker's identitytoken) → user, accepted by POST /token grant_type=refresh_token */
  refreshTokens?: Record<string, string>;
  /** tokens for requests without credentials (anonymous pulls); default true when no users are given */
  allowAnonymous?: boolean;
  /**
   * Repositories anyone may pull: an anonymous request gets a token that
   * grants only these (as Docker Hub answers for a private repository: a
   * token without it, which the registry then refuses).
   */
  publicRepos?: string[];
  /** expires_in told to the client (default 300) */
  expiresIn?: number;
  /** exp − now of the JWT itself, in seconds (default = expiresIn) */
  jwtLifetimeSec?: number;
}

export interface TokenRequest {
  scopes: string[];
  service: string | null;
  user?: string;
  granted: boolean;
  at: number;
}

export interface TokenServer {
  /** the realm: http://127.0.0.1:PORT/token */
  realm: string;
  service: string;
  issuer: string;
  /** the signing certificate (PEM path), for the registry's rootcertbundle */
  certPath: string;
  requests: TokenRequest[];
  opts: TokenServerOptions;
  /** the registry's auth section for this server */
  registryAuth(): Record<string, unknown>;
  /** signs a token directly (for pushing in tests) */
  sign(scopes: string[], sub?: string): string;
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export async function startTokenServer(dir: string, opts: TokenServerOptions = {}): Promise<TokenServer> {
  const keyPath = join(dir, 'token.key');
  const certPath = join(dir, 'token.pem');
  await runOk('/usr/bin/openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath,
    '-days', '2', '-subj', '/CN=lazysnap test token signer']);
  const key = crypto.createPrivateKey(await readFile(keyPath));
  const certDer = new crypto.X509Certificate(await readFile(certPath)).raw;
  const service = opts.service ?? 'test-registry';
  const issuer = opts.issuer ?? 'test-issuer';
  const requests: TokenRequest[] = [];

  const sign = (scopes: string[], sub = ''): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'RS256', typ: 'JWT', x5c: [certDer.toString('base64')] };
    const access = scopes.map((s) => {
      const [type, ...rest] = s.split(':');
      const actions = rest.pop() ?? '';
      return { type, name: rest.join(':'), actions: actions.split(',').filter((a) => a === 'pull' || a === 'push') };
    });
    const lifetime = opts.jwtLifetimeSec ?? opts.expiresIn ?? 300;
    const claims = {
      iss: issuer, sub, aud: service, exp: now + lifetime, nbf: now - 120, iat: now - 120,
      jti: crypto.randomBytes(8).toString('hex'), access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    return `${input}.${b64url(crypto.sign('sha256', Buffer.from(input), key))}`;
  };

  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    if (req.method === 'POST') {
      // OAuth2 refresh-token grant (form body)
      const parts: Buffer[] = [];
      req.on('data', (b: Buffer) => parts.push(b));
      req.on('end', () => {
        const form = new URLSearchParams(Buffer.concat(parts).toString());
        const rt = form.get('refresh_token') ?? '';
        const user = form.get('grant_type') === 'refresh_token' ? opts.refreshTokens?.[rt] : undefined;
        const scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
        requests.push({ scopes, service: form.get('service'), user, granted: user !== undefined, at: Date.now() });
        if (user === undefined) {
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad refresh token"}');
          return;
        }
        const token = sign(scopes, user);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ access_token: token, expires_in: opts.expiresIn ?? 300, issued_at: new Date().toISOString() }));
      });
      return;
    }
    let user: string | undefined;
    let ok = opts.allowAnonymous ?? (!opts.users || !!opts.publicRepos);
    const auth = req.headers.authorization;
    if (auth?.startsWith('Basic ')) {
      const text = Buffer.from(auth.slice(6), 'base64').toString();
      const i = text.indexOf(':');
      user = text.slice(0, i);
      ok = opts.users?.[user] !== undefined && opts.users[user] === text.slice(i + 1);
    }
    const scopes = u.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    requests.push({ scopes, service: u.searchParams.get('service'), user, granted: ok, at: Date.now() });
    if (!ok) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    const granted = user === undefined && opts.publicRepos ? scopes.filter((sc) => opts.publicRepos!.includes(sc.split(':')[1])) : scopes;
    const token = sign(granted, user ?? '');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: opts.expiresIn ?? 300, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  const realm = `http://127.0.0.1:${port}/token`;
  return {
    realm, service, issuer, certPath, requests, opts,
    registryAuth: () => ({ token: { realm, service, issuer, rootcertbundle: certPath } }),
    sign,
    stop: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
