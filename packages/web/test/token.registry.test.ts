// The Bearer token flow in Chromium against the reference distribution registry configured with
// `auth.token` (RS256 JWTs whose x5c certificate is its rootcertbundle, made with openssl) and a
// token service in this file on 127.0.0.1: alice may pull `private/*`, nobody else anything.
// The reference registry sends no CORS headers (and answers no preflight), so this browser runs
// with web security off: CORS has its own test (registry.registry.test.ts); this one is about
// the WWW-Authenticate realm → token → Bearer exchange done by the page's code.
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createSign, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { bins, type Registry, startRegistry } from '../../../test/harness/index.js';
import { launch, openFromRegistry, push, registryImage, results, searchTree, serveDist } from './support.js';

const { canRun } = useRealComponents({ registry: true, dockerd: false });

const SERVICE = 'stevedore-web-test';
const ISSUER = 'stevedore-web-test-issuer';
const PASSWORDS: Record<string, string> = { alice: 'alice-pw', admin: 'admin-pw' };
const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

interface TokenService {
  url: string;
  /** `user scope…` of each request, '' for anonymous. */
  requests: string[];
  close(): Promise<void>;
}

/** GET /token?service=&scope=repository:NAME:ACTIONS with optional Basic auth → a signed JWT. */
async function startTokenService(keyPem: string, certPem: string): Promise<TokenService> {
  const key = createPrivateKey(keyPem);
  const x5c = [new X509Certificate(certPem).raw.toString('base64')];
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    const json = (status: number, body: unknown) =>
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    let user = '';
    const m = /^Basic (.+)$/i.exec(req.headers.authorization ?? '');
    if (m) {
      const [name = '', pw] = Buffer.from(m[1] as string, 'base64')
        .toString('utf8')
        .split(':');
      if (PASSWORDS[name] === undefined || PASSWORDS[name] !== pw)
        return json(401, { errors: [{ code: 'UNAUTHORIZED' }] });
      user = name;
    }
    const scopes = u.searchParams.getAll('scope').flatMap((s) => s.split(' ').filter(Boolean));
    requests.push([user, ...scopes].join(' '));
    const access = scopes.flatMap((s) => {
      const [type, name = '', actions = ''] = s.split(':');
      const may = user === 'admin' || (user === 'alice' && name.startsWith('private/')) ? actions.split(',') : [];
      return type === 'repository' && may.length ? [{ type, name, actions: may }] : [];
    });
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: ISSUER,
      sub: user,
      aud: SERVICE,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access,
    };
    const input = `${b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c }))}.${b64url(JSON.stringify(claims))}`;
    const token = `${input}.${b64url(createSign('RSA-SHA256').update(input).sign(key))}`;
    json(200, { token, expires_in: 300 });
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

describe.skipIf(!canRun)('Bearer token auth in the page (reference registry)', () => {
  let work: string;
  let tokens: TokenService;
  let registry: Registry;
  let dist: http.Server;
  let base: string;
  let browser: Browser;
  const image = registryImage();

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'stevedore-web-token-'));
    const keyPath = join(work, 'token.key');
    const certPath = join(work, 'token.crt');
    // biome-ignore format: flag/value pairs
    execFileSync(bins.openssl, [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
      '-subj', '/CN=stevedore-web-token-signer', '-keyout', keyPath, '-out', certPath,
    ], { stdio: 'pipe' });
    tokens = await startTokenService(readFileSync(keyPath, 'utf8'), readFileSync(certPath, 'utf8'));
    [registry, { server: dist, base }, browser] = await Promise.all([
      startRegistry({
        config: { auth: { token: { realm: tokens.url, service: SERVICE, issuer: ISSUER, rootcertbundle: certPath } } },
      }),
      serveDist(),
      launch(['--disable-web-security']),
    ]);
    const admin = `Basic ${Buffer.from(`admin:${PASSWORDS.admin}`).toString('base64')}`;
    const scope = 'repository:private/app:pull,push';
    const res = await fetch(`${tokens.url}?service=${SERVICE}&scope=${scope}`, { headers: { authorization: admin } });
    const { token } = (await res.json()) as { token: string };
    await push(
      registry.url,
      'private/app',
      '1',
      image.blobs,
      image.manifest,
      'application/vnd.oci.image.manifest.v1+json',
      `Bearer ${token}`,
    );
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await Promise.all([new Promise((r) => dist?.close(r)), registry?.stop(), tokens?.close()]);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('gets a token from the realm with the typed credentials and pulls; anonymous is refused', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    const anonymous = await openFromRegistry(page, base, { registry: registry.url, image: 'private/app:1' });
    expect(anonymous.status).toBe(
      `cannot open private/app:1: the registry at ${registry.url} requires a username and password (anonymous access refused)`,
    );
    const from = tokens.requests.length;
    const s = await openFromRegistry(page, base, {
      registry: registry.url,
      image: 'private/app:1',
      username: 'alice',
      password: PASSWORDS.alice,
    });
    expect(s.status).toMatch(/^verified: \d+ checks passed/);
    expect(s.manifestDigest).toBe(image.manifestDigest);
    expect(s.layers).toEqual(image.layerDigests.map((digest, i) => ({ digest, diffId: image.diffIds[i] })));
    expect(tokens.requests.slice(from)).toContain('alice repository:private/app:pull');
    expect(await searchTree(page, 'app/msg')).toEqual({ 'app/msg': 2 });
    await page.screenshot({ path: join(results, 'web-registry-token.png') });
    await page.close();
  });
});
