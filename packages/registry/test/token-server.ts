// The token service of the distribution token spec, for the real registry (`docker-registry`,
// CNCF distribution 2.8) configured with `auth.token` and a self-signed RSA certificate (made
// with the openssl CLI): a node:http server on 127.0.0.1 signing RS256 JWTs that carry the
// certificate in `x5c`, granting only what a user may have: "alice" may pull and push `alice/*`,
// "admin" everything, anonymous may pull `public/*`. `respond` changes the JSON the service
// answers with (registries in the wild differ: `access_token` only, no `expires_in`, …).
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createSign, randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { bins, type Registry, startRegistry } from '../../../test/harness/index.js';

export const SERVICE = 'stevedore-test';
export const ISSUER = 'stevedore-test-issuer';
export const USERS: Record<string, string> = { alice: 'alice-secret', admin: 'admin-secret' };

export interface Access {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequest {
  /** The authenticated user, '' when anonymous. */
  user: string;
  service: string | null;
  account: string | null;
  /** The requested scopes, as sent (each `scope` parameter split on spaces). */
  scopes: string[];
  granted: Access[];
  /** The token handed out. */
  token: string;
}

/** What `user` may do on `type:name` (the intersection with `wanted` is granted). */
function allowed(user: string, type: string, name: string): string[] {
  if (type !== 'repository') return [];
  if (user === 'admin') return ['pull', 'push', 'delete'];
  if (user === 'alice' && name.startsWith('alice/')) return ['pull', 'push'];
  if (name.startsWith('public/')) return ['pull'];
  return [];
}

/** `repository:name:a,b` → {type, name, actions}; names carry no ':' (tags are not part of a scope). */
function parseScope(s: string): Access | undefined {
  const first = s.indexOf(':');
  const last = s.lastIndexOf(':');
  if (first <= 0 || last <= first) return undefined;
  return { type: s.slice(0, first), name: s.slice(first + 1, last), actions: s.slice(last + 1).split(',') };
}

export const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** The JSON the token service answers with; the default is what distribution's own examples send. */
export type TokenResponder = (token: string, issuedAt: number) => Record<string, unknown>;

export const defaultResponse: TokenResponder = (token, now) => ({
  token,
  access_token: token,
  expires_in: 300,
  issued_at: new Date(now * 1000).toISOString(),
});

export interface TokenServer {
  url: string;
  requests: TokenRequest[];
  /** Changes the response body (reset it to `defaultResponse` after a test). */
  respond: TokenResponder;
  /** A JWT the registry accepts: `access` granted to `user`, valid from `nbf` to `exp` (seconds from now). */
  sign(o: { user?: string; access: Access[]; exp?: number; nbf?: number }): string;
  close(): Promise<void>;
}

/** The token service: GET /token?service=…&scope=… with optional Basic auth. */
export async function startTokenServer(keyPem: string, certPem: string): Promise<TokenServer> {
  const key = createPrivateKey(keyPem);
  const x5c = [new X509Certificate(certPem).raw.toString('base64')];
  const requests: TokenRequest[] = [];
  const sign: TokenServer['sign'] = ({ user = '', access, exp = 300, nbf = -10 }) => {
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c };
    const claims = {
      iss: ISSUER,
      sub: user,
      aud: SERVICE,
      exp: now + exp,
      nbf: now + nbf,
      iat: now,
      jti: randomBytes(12).toString('hex'),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = createSign('RSA-SHA256').update(signingInput).sign(key);
    return `${signingInput}.${b64url(signature)}`;
  };
  const t: TokenServer = {
    url: '',
    requests,
    respond: defaultResponse,
    sign,
    close: async () => {},
  };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET' || u.pathname !== '/token') return json(404, { errors: [{ code: 'NOT_FOUND' }] });
    let user = '';
    const authz = req.headers.authorization;
    if (authz) {
      const m = /^Basic (.+)$/i.exec(authz);
      const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
      const colon = decoded.indexOf(':');
      const name = decoded.slice(0, colon);
      if (colon < 0 || USERS[name] === undefined || USERS[name] !== decoded.slice(colon + 1)) {
        return json(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] });
      }
      user = name;
    }
    const service = u.searchParams.get('service');
    const scopes = u.searchParams.getAll('scope').flatMap((s) => s.split(' ').filter(Boolean));
    const granted: Access[] = [];
    for (const s of scopes) {
      const a = parseScope(s);
      if (!a) continue;
      const may = allowed(user, a.type, a.name);
      const actions = a.actions.filter((x) => may.includes(x));
      if (actions.length) granted.push({ type: a.type, name: a.name, actions });
    }
    const token = sign({ user, access: granted });
    requests.push({ user, service, account: u.searchParams.get('account'), scopes, granted, token });
    json(200, t.respond(token, Math.floor(Date.now() / 1000)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  t.url = `http://127.0.0.1:${port}/token`;
  t.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return t;
}

/** The signing key and certificate (openssl), the token service, and the registry trusting it. */
export async function startTokenRegistry(work: string): Promise<{ reg: Registry; tokens: TokenServer }> {
  const keyPath = path.join(work, 'token.key');
  const certPath = path.join(work, 'token.crt');
  // biome-ignore format: flag/value pairs
  execFileSync(bins.openssl, [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
    '-subj', '/CN=stevedore-test-token-signer', '-keyout', keyPath, '-out', certPath,
  ], { stdio: 'pipe' });
  const tokens = await startTokenServer(readFileSync(keyPath, 'utf8'), readFileSync(certPath, 'utf8'));
  try {
    const reg = await startRegistry({
      config: {
        auth: { token: { realm: tokens.url, service: SERVICE, issuer: ISSUER, rootcertbundle: certPath } },
      },
    });
    return { reg, tokens };
  } catch (e) {
    await tokens.close();
    throw e;
  }
}
