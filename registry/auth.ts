// Authentication for one registry host: anonymous until the host says 401,
// then what its challenge asks for. Basic sends the credentials; Bearer
// exchanges them (or nothing, for anonymous pulls) at the token realm for a
// token scoped to `repository:<name>:pull` (`pull,push` to push), cached
// per scope set until shortly before it expires. A 401 with a cached token drops the token; the caller retries
// once with a fresh one (tokens expiring in the middle of a lazy load).
import type { Logger } from 'pino';
import { Challenge, challengeScopes, parseChallenges } from './challenge';
import { CredentialSource, Credentials, credentialKey } from './docker-config';
import { AuthError, RegistryError, RegistryErrorInfo } from './errors';
import { HttpPool, errorText, readLimited, send } from './http';
import type { RegistryHost, TlsSettings } from './hosts';
import { RetryPolicy, parseRetryAfter, retryDelay, sleep } from './retry';
import { TokenCache, FetchedToken } from './token-cache';
import { HttpStatusError } from './errors';

export interface AuthContext {
  pool: HttpPool;
  credentials: CredentialSource;
  tokens: TokenCache;
  retry: RetryPolicy;
  userAgent: string;
  /** TLS for token realms on other hosts (extra CAs) */
  realmTls?: TlsSettings;
  log?: Logger;
}

export function pullScope(repo: string): string {
  return `repository:${repo}:pull`;
}

/** Push needs pull too: a pusher HEADs blobs and reads upload sessions. */
export function pushScope(repo: string): string {
  return `repository:${repo}:pull,push`;
}

/**
 * "repository:x:push,pull" → "repository:x:pull,push": registries list
 * actions in any order (distribution's challenge comes from a Go map), and a
 * scope must compare, and key the token cache, the same either way.
 */
export function normalizeScope(scope: string): string {
  const i = scope.lastIndexOf(':');
  if (i < 0) return scope;
  const actions = [...new Set(scope.slice(i + 1).split(',').filter(Boolean))].sort();
  return `${scope.slice(0, i)}:${actions.join(',')}`;
}

/** The sorted, de-duplicated scope list a token is asked for (and cached under). */
function scopeSet(scopes: string[], extra: string[]): string[] {
  return [...new Set([...scopes, ...extra].map(normalizeScope))].sort();
}

function basicHeader(c: { username: string; password: string }): string {
  return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64');
}

type Mode = { kind: 'anonymous' } | { kind: 'basic' } | { kind: 'bearer'; realm: string; service?: string; extraScopes: string[] };

export class HostAuth {
  private mode: Mode = { kind: 'anonymous' };

  constructor(readonly host: RegistryHost, private readonly ctx: AuthContext, private readonly creds: CredentialSource) {}

  private credentials(): Promise<Credentials | undefined> {
    return this.creds(this.host.host);
  }

  /** The Authorization header for a request needing `scopes`, or undefined (anonymous so far). */
  async authorization(scopes: string[], signal?: AbortSignal): Promise<string | undefined> {
    const m = this.mode;
    if (m.kind === 'anonymous') return undefined;
    const creds = await this.credentials();
    if (m.kind === 'basic') {
      if (!creds || !('password' in creds)) return undefined;
      return basicHeader(creds);
    }
    if (creds && 'registryToken' in creds) return `Bearer ${creds.registryToken}`;
    const all = scopeSet(scopes, m.extraScopes);
    const key = `${m.realm}|${m.service ?? ''}|${all.join(' ')}|${credentialKey(creds)}`;
    const token = await this.ctx.tokens.getOrFetch(key, () => this.fetchToken(m.realm, m.service, all, creds, signal));
    return `Bearer ${token}`;
  }

  /**
   * After a 401: learns the host's challenge and forgets the credential that
   * failed. Returns true if retrying with authorization() may succeed.
   */
  async unauthorized(wwwAuthenticate: string | string[] | undefined, scopes: string[], used: string | undefined,
    info: RegistryErrorInfo): Promise<boolean> {
    const challenges = parseChallenges(wwwAuthenticate);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    const basic = challenges.find((c) => c.scheme === 'basic');
    const creds = await this.credentials();
    if (bearer) {
      const prev = this.mode;
      const asked = new Set(scopes.map(normalizeScope));
      const extra = challengeScopes(bearer).map(normalizeScope).filter((s) => !asked.has(s));
      this.mode = { kind: 'bearer', realm: bearer.params.realm, service: bearer.params.service, extraScopes: extra };
      if (used?.startsWith('Bearer ')) {
        const token = used.slice(7);
        // Any cached copy of the refused token goes; the retry fetches a new one.
        if (prev.kind === 'bearer') {
          const all = scopeSet(scopes, prev.extraScopes);
          this.ctx.tokens.invalidate(`${prev.realm}|${prev.service ?? ''}|${all.join(' ')}|${credentialKey(creds)}`, token);
        }
        if (creds && 'registryToken' in creds) throw new AuthError('the registry refused the configured registry token', info);
        this.ctx.log?.info({ host: this.host.host, scopes, error: bearer.params.error }, 'bearer token refused; re-authenticating');
      }
      return true;
    }
    if (basic) {
      this.mode = { kind: 'basic' };
      if (!creds || !('password' in creds)) {
        throw new AuthError(`the registry asks for Basic credentials and none are configured for ${this.host.host}`, info);
      }
      if (used?.startsWith('Basic ')) throw new AuthError(`the registry refused the Basic credentials for ${this.host.host}`, info);
      return true;
    }
    throw new AuthError(`HTTP 401 without a usable challenge (WWW-Authenticate: ${describeChallenges(challenges)})`, info);
  }

  private async fetchToken(realm: string, service: string | undefined, scopes: string[], creds: Credentials | undefined,
    signal?: AbortSignal): Promise<FetchedToken> {
    let u: URL;
    try {
      u = new URL(realm);
    } catch {
      throw new AuthError(`token realm "${realm}" is not a URL`, { host: this.host.host });
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new AuthError(`token realm "${realm}" is not http(s)`, { host: this.host.host });
    const info: RegistryErrorInfo = { host: u.host, what: `token for ${scopes.join(' ')} from ${u.origin}${u.pathname}` };
    const tls = u.host === this.host.host ? this.host.tls : (this.ctx.realmTls ?? {});
    const agent = this.ctx.pool.agent(tls);
    const headers: Record<string, string> = { 'user-agent': this.ctx.userAgent, accept: 'application/json' };
    let method: 'GET' | 'POST' = 'GET';
    let body: string | undefined;
    if (creds && 'identityToken' in creds) {
      // OAuth2 refresh-token grant, as docker and containerd do with an identity token.
      method = 'POST';
      headers['content-type'] = 'application/x-www-form-urlencoded';
      const form = new URLSearchParams({ grant_type: 'refresh_token', client_id: 'lazysnap', refresh_token: creds.identityToken });
      if (service) form.set('service', service);
      if (scopes.length) form.set('scope', scopes.join(' '));
      body = form.toString();
    } else {
      if (service) u.searchParams.set('service', service);
      for (const s of scopes) u.searchParams.append('scope', s);
      if (creds && 'password' in creds) {
        headers.authorization = basicHeader(creds);
        if (creds.username) u.searchParams.set('account', creds.username);
      }
    }
    const policy = this.ctx.retry;
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await send(agent, u.toString(), { method, headers, body, signal }, info);
        if (res.status === 401 || res.status === 403) {
          await errorText(res);
          throw new AuthError(`the token server refused ${creds ? `the credentials for ${this.host.host}` : 'anonymous access'} (HTTP ${res.status})`, { ...info, status: res.status });
        }
        if (res.status !== 200) {
          throw new HttpStatusError(res.status, info, await errorText(res), parseRetryAfter(res.headers['retry-after']));
        }
        const text = (await readLimited(res, 1 << 20, info, signal)).toString('utf8');
        let j: { token?: unknown; access_token?: unknown; expires_in?: unknown };
        try {
          j = JSON.parse(text);
        } catch {
          throw new AuthError('the token server answered with something that is not JSON', info);
        }
        const token = typeof j.token === 'string' && j.token ? j.token : typeof j.access_token === 'string' ? j.access_token : '';
        if (!token) throw new AuthError('the token server answered without a token', info);
        const expiresIn = typeof j.expires_in === 'number' ? j.expires_in : undefined;
        this.ctx.log?.debug({ host: this.host.host, realm: `${u.origin}${u.pathname}`, scopes, expiresIn }, 'got a bearer token');
        return { token, expiresIn };
      } catch (e) {
        const err = e as RegistryError;
        if (!(e instanceof RegistryError) || !err.retryable || attempt >= policy.attempts) {
          if (e instanceof RegistryError) err.withAttempts(attempt);
          throw e;
        }
        await sleep(retryDelay(attempt, policy, (e as HttpStatusError).retryAfterMs), signal, info.what);
      }
    }
  }
}

function describeChallenges(cs: Challenge[]): string {
  return cs.length ? cs.map((c) => c.scheme).join(', ') : 'none';
}
