// Token-auth test material: a signing PKI made with the openssl CLI, a JWT minter (node:crypto)
// and a token service on 127.0.0.1 (the approach of packages/registry/test/token.registry.test.ts):
// "alice" may pull and push `alice/*`, "admin" everything (and the catalog), anonymous may pull
// `public/*`.
import { createPrivateKey, createSign, type KeyObject, randomBytes, sign, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { bins, run } from '../../../test/harness/index.js';

export const SERVICE = 'stevedore-token-test';
export const ISSUER = 'stevedore-token-test-issuer';
export const USERS: Record<string, string> = { alice: 'alice-secret', admin: 'admin-secret' };

export interface Signer {
  alg: 'RS256' | 'ES256';
  key: KeyObject;
  /** Leaf first, as `x5c` carries it. */
  chain: X509Certificate[];
}

export interface Pki {
  /** The trusted bundle (root CA + the self-signed RSA signer), PEM file. */
  bundlePath: string;
  /** RS256, a self-signed certificate that is itself in the bundle. */
  rsa: Signer;
  /** ES256 (P-256), leaf ← intermediate ← root CA of the bundle. */
  ec: Signer;
  /** RS256, self-signed, NOT in the bundle. */
  rogue: Signer;
}

/** Makes the PKI in `dir` (openssl; a few hundred ms). */
export async function makePki(dir: string): Promise<Pki> {
  mkdirSync(dir, { recursive: true });
  const p = (f: string) => path.join(dir, f);
  const ossl = (args: string[]) => run(bins.openssl, args);
  const selfSigned = (name: string, cn: string, ca: boolean) =>
    // biome-ignore format: flag/value pairs
    ossl([
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2', '-subj', `/CN=${cn}`,
      '-keyout', p(`${name}.key`), '-out', p(`${name}.crt`),
      '-addext', ca ? 'basicConstraints=critical,CA:TRUE' : 'basicConstraints=critical,CA:FALSE',
    ]);
  await Promise.all([
    selfSigned('ca', 'stevedore-test-root-ca', true),
    selfSigned('rsa', 'stevedore-test-rsa-signer', false),
    selfSigned('rogue', 'stevedore-test-rogue-signer', false),
  ]);
  writeFileSync(p('int.ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,digitalSignature\n');
  writeFileSync(p('leaf.ext'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n');
  // biome-ignore format: flag/value pairs
  await ossl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=stevedore-test-intermediate', '-keyout', p('int.key'), '-out', p('int.csr')]);
  // biome-ignore format: flag/value pairs
  await ossl(['x509', '-req', '-in', p('int.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-set_serial', '2', '-days', '2', '-sha256', '-extfile', p('int.ext'), '-out', p('int.crt')]);
  // biome-ignore format: flag/value pairs
  await ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=stevedore-test-ec-signer', '-keyout', p('ec.key'), '-out', p('ec.csr')]);
  // biome-ignore format: flag/value pairs
  await ossl(['x509', '-req', '-in', p('ec.csr'), '-CA', p('int.crt'), '-CAkey', p('int.key'), '-set_serial', '3', '-days', '2', '-sha256', '-extfile', p('leaf.ext'), '-out', p('ec.crt')]);
  const bundlePath = p('bundle.pem');
  writeFileSync(bundlePath, readFileSync(p('ca.crt'), 'utf8') + readFileSync(p('rsa.crt'), 'utf8'));
  const load = (alg: Signer['alg'], name: string, ...chain: string[]): Signer => ({
    alg,
    key: createPrivateKey(readFileSync(p(`${name}.key`))),
    chain: chain.map((c) => new X509Certificate(readFileSync(p(`${c}.crt`)))),
  });
  return {
    bundlePath,
    rsa: load('RS256', 'rsa', 'rsa'),
    ec: load('ES256', 'ec', 'ec', 'int'),
    rogue: load('RS256', 'rogue', 'rogue'),
  };
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export interface AccessClaim {
  type: string;
  name: string;
  actions: string[];
}

/** Claims valid for 5 minutes, with the test issuer and service. */
export function claimsFor(access: AccessClaim[], sub = 'alice'): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: ISSUER,
    sub,
    aud: SERVICE,
    exp: now + 300,
    nbf: now - 10,
    iat: now,
    jti: randomBytes(8).toString('hex'),
    access,
  };
}

/** A compact JWS of `claims` signed by `s`; `header` replaces the default one (`x5c` chain). */
export function mint(s: Signer, claims: Record<string, unknown>, header?: Record<string, unknown>): string {
  const h = header ?? { typ: 'JWT', alg: s.alg, x5c: s.chain.map((c) => c.raw.toString('base64')) };
  const input = `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(claims))}`;
  const sig =
    s.alg === 'ES256'
      ? sign('sha256', Buffer.from(input), { key: s.key, dsaEncoding: 'ieee-p1363' })
      : createSign('RSA-SHA256').update(input).sign(s.key);
  return `${input}.${b64url(sig)}`;
}

function allowed(user: string, type: string, name: string): string[] {
  if (user === 'admin') return type === 'registry' ? ['*'] : ['pull', 'push', 'delete'];
  if (type !== 'repository') return [];
  if (user === 'alice' && name.startsWith('alice/')) return ['pull', 'push'];
  if (name.startsWith('public/')) return ['pull'];
  return [];
}

export interface TokenServer {
  url: string;
  /** Every request's user ('' anonymous) and requested scopes. */
  requests: { user: string; scopes: string[] }[];
  close(): Promise<void>;
}

/** The token service: GET /token?service=…&scope=… with optional Basic auth, signing with `signer`. */
export async function startTokenServer(signer: Signer): Promise<TokenServer> {
  const requests: TokenServer['requests'] = [];
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET' || u.pathname !== '/token') return json(404, { errors: [{ code: 'NOT_FOUND' }] });
    let user = '';
    if (req.headers.authorization) {
      const m = /^Basic (.+)$/i.exec(req.headers.authorization);
      const text = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
      const i = text.indexOf(':');
      const name = text.slice(0, i);
      if (i < 0 || USERS[name] === undefined || USERS[name] !== text.slice(i + 1)) {
        return json(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] });
      }
      user = name;
    }
    const scopes = u.searchParams.getAll('scope').flatMap((s) => s.split(' ').filter(Boolean));
    requests.push({ user, scopes });
    const granted: AccessClaim[] = [];
    for (const s of scopes) {
      const first = s.indexOf(':');
      const last = s.lastIndexOf(':');
      if (first <= 0 || last <= first) continue;
      const [type, name] = [s.slice(0, first), s.slice(first + 1, last)];
      const may = allowed(user, type, name);
      const actions = s
        .slice(last + 1)
        .split(',')
        .filter((a) => may.includes(a));
      if (actions.length) granted.push({ type, name, actions });
    }
    const claims = { ...claimsFor(granted, user), aud: u.searchParams.get('service') ?? SERVICE };
    const token = mint(signer, claims);
    json(200, { token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
