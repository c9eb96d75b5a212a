// Bearer tokens by (token realm, service, scopes, credentials), reused until
// shortly before they expire. Concurrent requests for the same key share one
// token fetch.

export const DEFAULT_TOKEN_LIFETIME_S = 60;

export interface FetchedToken {
  token: string;
  /** seconds, from the token response's expires_in */
  expiresIn?: number;
}

interface Entry {
  token: string;
  /** when we stop using it (ms since epoch) */
  useUntil: number;
}

/**
 * How long a token with lifetime `expiresIn` seconds is used: the lifetime
 * minus 10% (at most 30 s) of safety margin, so a token is not sent just as it
 * expires. expires_in absent or ≤ 0 means the spec's default, 60 s.
 */
export function tokenUseMs(expiresIn: number | undefined): number {
  const life = expiresIn !== undefined && Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn : DEFAULT_TOKEN_LIFETIME_S;
  return Math.max(500, (life - Math.min(30, life * 0.1)) * 1000);
}

export class TokenCache {
  private readonly tokens = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<string>>();

  constructor(private readonly now: () => number = Date.now, private readonly maxEntries = 1024) {}

  get(key: string): string | undefined {
    const e = this.tokens.get(key);
    if (!e) return undefined;
    if (this.now() >= e.useUntil) {
      this.tokens.delete(key);
      return undefined;
    }
    return e.token;
  }

  set(key: string, t: FetchedToken): void {
    if (this.tokens.size >= this.maxEntries) this.tokens.delete(this.tokens.keys().next().value!);
    this.tokens.set(key, { token: t.token, useUntil: this.now() + tokenUseMs(t.expiresIn) });
  }

  /** Forgets a token the registry refused (only if it is still the cached one). */
  invalidate(key: string, token?: string): void {
    const e = this.tokens.get(key);
    if (e && (token === undefined || e.token === token)) this.tokens.delete(key);
  }

  /** A cached token, or the result of fetch() (shared by concurrent callers). */
  async getOrFetch(key: string, fetch: () => Promise<FetchedToken>): Promise<string> {
    const hit = this.get(key);
    if (hit) return hit;
    let p = this.pending.get(key);
    if (!p) {
      p = fetch().then((t) => {
        this.set(key, t);
        return t.token;
      });
      const done = () => this.pending.delete(key);
      p.then(done, done);
      this.pending.set(key, p);
    }
    return p;
  }

  get size(): number {
    return this.tokens.size;
  }
}
