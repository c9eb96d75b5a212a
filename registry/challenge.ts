// WWW-Authenticate (RFC 7235 §4.1): one or more challenges, each a scheme
// followed by a token68 or comma-separated auth-params whose values may be
// quoted strings containing commas and escaped quotes:
//   Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull,push"
//   Basic realm="x", Bearer realm="y"

export interface Challenge {
  /** lower-cased: "bearer", "basic", … */
  scheme: string;
  /** lower-cased parameter names */
  params: Record<string, string>;
  token68?: string;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const TOKEN68 = /[A-Za-z0-9\-._~+/]/;

/** Parses one or more WWW-Authenticate header values. Malformed trailing input is ignored, not thrown. */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  if (Array.isArray(header)) return header.flatMap((h) => parseChallenges(h));
  const s = header;
  let p = 0;
  const out: Challenge[] = [];
  const ws = () => {
    while (p < s.length && (s[p] === ' ' || s[p] === '\t')) p++;
  };
  const token = (): string => {
    const start = p;
    while (p < s.length && TCHAR.test(s[p])) p++;
    return s.slice(start, p);
  };
  const quoted = (): string => {
    // s[p] === '"'
    p++;
    let v = '';
    while (p < s.length && s[p] !== '"') {
      if (s[p] === '\\' && p + 1 < s.length) p++;
      v += s[p++];
    }
    p++; // closing quote (or end)
    return v;
  };

  while (p < s.length) {
    ws();
    while (p < s.length && (s[p] === ',' || s[p] === ' ' || s[p] === '\t')) p++;
    const scheme = token();
    if (!scheme) {
      p++; // garbage: skip a character and resync
      continue;
    }
    const ch: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(ch);
    ws();
    // token68?
    const save = p;
    let t68 = '';
    while (p < s.length && TOKEN68.test(s[p])) t68 += s[p++];
    if (t68) {
      while (p < s.length && s[p] === '=') t68 += s[p++];
      ws();
      if (p >= s.length || s[p] === ',') {
        ch.token68 = t68;
        continue;
      }
    }
    p = save;
    // auth-params
    for (;;) {
      ws();
      const before = p;
      const name = token();
      if (!name) break;
      ws();
      if (s[p] !== '=') {
        // the next challenge's scheme
        p = before;
        break;
      }
      p++;
      ws();
      const value = s[p] === '"' ? quoted() : token();
      ch.params[name.toLowerCase()] = value;
      ws();
      if (s[p] !== ',') break;
      // a comma ends this param; is the next item a param or a new challenge?
      p++;
      ws();
      const look = p;
      const next = token();
      ws();
      const isParam = next !== '' && s[p] === '=';
      p = look;
      if (!isParam) break;
    }
  }
  return out;
}

/** The scopes a Bearer challenge names (space-separated in one scope param). */
export function challengeScopes(ch: Challenge): string[] {
  return (ch.params.scope ?? '').split(' ').filter(Boolean);
}
