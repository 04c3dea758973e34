/**
 * `WWW-Authenticate` parsing (RFC 7235): several challenges in one header (or several headers),
 * auth-params with token or quoted-string values (quoted strings may hold commas and `\"`).
 */

export interface Challenge {
  /** Lower-case scheme: `basic`, `bearer`, … */
  scheme: string;
  /** Lower-case parameter names → values (unquoted). */
  params: Record<string, string>;
}

const TCHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;

/** Parses one or more `WWW-Authenticate` header values into challenges, in order. */
export function parseWwwAuthenticate(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const values = Array.isArray(header) ? header : [header];
  const out: Challenge[] = [];
  for (const v of values) out.push(...parseOne(v));
  return out;
}

function parseOne(s: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = s.length;
  const skipWs = () => {
    while (i < n && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && TCHAR.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipWs();
    if (s[i] === ',') {
      i++;
      continue;
    }
    const start = i;
    const t = token();
    if (!t) {
      i++; // junk character: skip it
      continue;
    }
    skipWs();
    if (s[i] === '=' && current) {
      // auth-param of the current challenge (token68 values are not used by registries)
      i++;
      skipWs();
      let value: string;
      if (s[i] === '"') {
        i++;
        let v = '';
        while (i < n && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < n) i++;
          v += s[i];
          i++;
        }
        i++; // closing quote
        value = v;
      } else {
        const vs = i;
        while (i < n && s[i] !== ',' && s[i] !== ' ' && s[i] !== '\t') i++;
        value = s.slice(vs, i);
      }
      current.params[t.toLowerCase()] = value;
      continue;
    }
    // A new challenge: `scheme [params]`; a token directly followed by '=' with no challenge yet is malformed.
    if (s[i] === '=') {
      i = start + t.length + 1;
      continue;
    }
    current = { scheme: t.toLowerCase(), params: {} };
    out.push(current);
  }
  return out;
}

/** Splits a `scope` parameter (space-separated) into scopes. */
export function splitScopes(scope: string | undefined): string[] {
  return (scope ?? '').split(' ').filter((x) => x.length > 0);
}
