// Token auth (the distribution token spec) on our server, held to the reference registry's answers:
// both run with the same `auth.token` config (realm, service, issuer, root bundle) and get the
// same requests with the same tokens (none, valid RS256 via x5c, ES256 via an intermediate,
// libtrust `kid`, expired, wrong audience or issuer, untrusted signer, tampered, insufficient
// scope); statuses, challenges and error bodies must agree. Then skopeo pushes and pulls
// through our server with --creds, the token service handing out scoped tokens.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { type Registry, run, startRegistry } from '../../../test/harness/index.js';
import { libtrustKeyId, type RunningServer, startServer } from '../src/index.js';
import { configBlob, type Json, ociManifest, rand, req, sha, tempDir } from './helpers.js';
import {
  type AccessClaim,
  claimsFor,
  ISSUER,
  makePki,
  mint,
  type Pki,
  SERVICE,
  startTokenServer,
  type TokenServer,
  USERS,
} from './tokens.js';

const { canRun } = useRealComponents({ registry: true, dockerd: false });
const SKOPEO = process.env.STEVEDORE_SKOPEO ?? '/usr/bin/skopeo';

/** `Bearer a="1",b="2"` → {a: '1', b: '2'} (scope entries and actions sorted: the reference's order is a Go map's). */
function challenge(h: string | null): Record<string, string> {
  expect(h).toMatch(/^Bearer /);
  const out: Record<string, string> = {};
  for (const m of h!.slice(7).matchAll(/(\w+)="([^"]*)"/g)) out[m[1]!] = m[2]!;
  const sortActions = (e: string) => {
    const i = e.lastIndexOf(':');
    return `${e.slice(0, i)}:${e
      .slice(i + 1)
      .split(',')
      .sort()
      .join(',')}`;
  };
  if (out.scope) out.scope = out.scope.split(' ').map(sortActions).sort().join(' ');
  return out;
}

const repo = (name: string, ...actions: string[]): AccessClaim => ({ type: 'repository', name, actions });

describe.skipIf(!canRun)('token auth: our server and the reference registry answer alike', () => {
  let pki: Pki;
  let tokens: TokenServer;
  let ours: RunningServer;
  let ref: Registry;
  const work = tempDir('token');

  beforeAll(async () => {
    pki = await makePki(work);
    tokens = await startTokenServer(pki.rsa);
    const auth = { realm: tokens.url, service: SERVICE, issuer: ISSUER };
    [ours, ref] = await Promise.all([
      startServer({ root: tempDir('token-root'), token: { ...auth, rootCertBundle: pki.bundlePath } }),
      startRegistry({ config: { auth: { token: { ...auth, rootcertbundle: pki.bundlePath } } } }),
    ]);
  });
  afterAll(async () => {
    await ours?.close();
    await ref?.stop();
    await tokens?.close();
  });

  const now = () => Math.floor(Date.now() / 1000);
  const pullPublic = () => claimsFor([repo('public/hello', 'pull')]);
  const kidHeader = () => ({ typ: 'JWT', alg: 'RS256', kid: libtrustKeyId(pki.rsa.chain[0]!.publicKey) });
  const tampered = () => {
    const [h, , s] = mint(pki.rsa, pullPublic()).split('.');
    const c = Buffer.from(JSON.stringify(claimsFor([repo('public/hello', '*')]))).toString('base64url');
    return `${h}.${c}.${s}`;
  };
  const mountPath = `/v2/alice/y/blobs/uploads/?mount=sha256:${'a'.repeat(64)}&from=public/hello`;

  // [what, method, path, token (undefined: none), expected status, expected `error` challenge param]
  const cases: [string, string, string, (() => string) | undefined, number, string | undefined][] = [
    ['no token: /v2/', 'GET', '/v2/', undefined, 401, undefined],
    ['no token: pull', 'GET', '/v2/public/hello/tags/list', undefined, 401, undefined],
    ['no token: push', 'POST', '/v2/alice/x/blobs/uploads/', undefined, 401, undefined],
    ['no token: delete', 'DELETE', `/v2/alice/x/manifests/sha256:${'b'.repeat(64)}`, undefined, 401, undefined],
    ['no token: catalog', 'GET', '/v2/_catalog', undefined, 401, undefined],
    ['no token: cross-repo mount', 'POST', mountPath, undefined, 401, undefined],
    [
      'RS256, x5c = a bundle certificate',
      'GET',
      '/v2/public/hello/tags/list',
      () => mint(pki.rsa, pullPublic()),
      404,
      undefined,
    ],
    ['ES256, x5c leaf ← intermediate ← bundle CA', 'GET', '/v2/', () => mint(pki.ec, claimsFor([])), 200, undefined],
    [
      'RS256, libtrust kid of a bundle key',
      'GET',
      '/v2/',
      () => mint(pki.rsa, claimsFor([]), kidHeader()),
      200,
      undefined,
    ],
    [
      'expired 30 s ago (within the leeway)',
      'GET',
      '/v2/',
      () => mint(pki.rsa, { ...claimsFor([]), exp: now() - 30 }),
      200,
      undefined,
    ],
    [
      'expired an hour ago',
      'GET',
      '/v2/',
      () => mint(pki.rsa, { ...claimsFor([]), exp: now() - 3600, nbf: now() - 7200 }),
      401,
      'invalid_token',
    ],
    [
      'not valid before an hour from now',
      'GET',
      '/v2/',
      () => mint(pki.rsa, { ...claimsFor([]), nbf: now() + 3600 }),
      401,
      'invalid_token',
    ],
    [
      'wrong audience',
      'GET',
      '/v2/',
      () => mint(pki.rsa, { ...claimsFor([]), aud: 'another-registry' }),
      401,
      'invalid_token',
    ],
    [
      'wrong issuer',
      'GET',
      '/v2/',
      () => mint(pki.rsa, { ...claimsFor([]), iss: 'evil-issuer' }),
      401,
      'invalid_token',
    ],
    ['signer not in the bundle', 'GET', '/v2/', () => mint(pki.rogue, claimsFor([])), 401, 'invalid_token'],
    [
      'rogue kid',
      'GET',
      '/v2/',
      () => mint(pki.rogue, claimsFor([]), { ...kidHeader(), kid: libtrustKeyId(pki.rogue.chain[0]!.publicKey) }),
      401,
      'invalid_token',
    ],
    [
      'bundle cert in x5c, signed by another key',
      'GET',
      '/v2/',
      () => mint({ ...pki.rogue, chain: pki.rsa.chain }, claimsFor([])),
      401,
      'invalid_token',
    ],
    [
      'ES256 leaf without its intermediate',
      'GET',
      '/v2/',
      () => mint({ ...pki.ec, chain: [pki.ec.chain[0]!] }, claimsFor([])),
      401,
      'invalid_token',
    ],
    ['claims changed after signing', 'GET', '/v2/public/hello/tags/list', tampered, 401, 'invalid_token'],
    [
      'alg none',
      'GET',
      '/v2/',
      () =>
        `${mint(pki.rsa, claimsFor([]), { typ: 'JWT', alg: 'none', kid: kidHeader().kid }).split('.').slice(0, 2).join('.')}.`,
      401,
      'invalid_token',
    ],
    ['garbage', 'GET', '/v2/', () => 'not-a-jwt', 401, 'invalid_token'],
    [
      'pull token, push request',
      'POST',
      '/v2/alice/x/blobs/uploads/',
      () => mint(pki.rsa, claimsFor([repo('alice/x', 'pull')])),
      401,
      'insufficient_scope',
    ],
    [
      'token for another repository',
      'GET',
      '/v2/public/hello/tags/list',
      () => mint(pki.rsa, claimsFor([repo('public/other', 'pull')])),
      401,
      'insufficient_scope',
    ],
    [
      'pull,push token, delete request',
      'DELETE',
      `/v2/alice/x/manifests/sha256:${'b'.repeat(64)}`,
      () => mint(pki.rsa, claimsFor([repo('alice/x', 'pull', 'push')])),
      401,
      'insufficient_scope',
    ],
    [
      '"*" grants push',
      'POST',
      '/v2/alice/x/blobs/uploads/',
      () => mint(pki.rsa, claimsFor([repo('alice/x', '*')])),
      202,
      undefined,
    ],
    [
      'mount without pull on the source',
      'POST',
      mountPath,
      () => mint(pki.ec, claimsFor([repo('alice/y', 'pull', 'push')])),
      401,
      'insufficient_scope',
    ],
    [
      'catalog with a repository token',
      'GET',
      '/v2/_catalog',
      () => mint(pki.rsa, claimsFor([repo('public/hello', 'pull')])),
      401,
      'insufficient_scope',
    ],
    [
      'catalog with registry:catalog:*',
      'GET',
      '/v2/_catalog',
      () => mint(pki.rsa, claimsFor([{ type: 'registry', name: 'catalog', actions: ['*'] }])),
      200,
      undefined,
    ],
  ];

  it.each(cases)('%s', async (_what, method, p, token, status, error) => {
    const t = token?.();
    const headers: Record<string, string> = t ? { authorization: `Bearer ${t}` } : {};
    const [a, b] = await Promise.all([
      req(`${ours.url}${p}`, { method, headers }),
      req(`${ref.url}${p}`, { method, headers }),
    ]);
    expect([a.status, b.status]).toEqual([status, status]);
    if (status !== 401) return;
    const [ca, cb] = [challenge(a.headers.get('www-authenticate')), challenge(b.headers.get('www-authenticate'))];
    expect(ca).toEqual(cb);
    expect(ca.realm).toBe(tokens.url);
    expect(ca.service).toBe(SERVICE);
    expect(ca.error).toBe(error);
    // the body: UNAUTHORIZED with the access the request needed, as distribution details it
    const [ea, eb]: Json[] = [a.json().errors, b.json().errors];
    expect(ea).toHaveLength(1);
    expect(ea[0].code).toBe('UNAUTHORIZED');
    expect({ ...ea[0], detail: ea[0].detail ?? null }).toEqual({ ...eb[0], detail: eb[0].detail ?? null });
  });

  it('an audience list holding the service is accepted (RFC 7519; distribution 3 too, 2.8 refuses it)', async () => {
    const t = mint(pki.rsa, { ...claimsFor([]), aud: ['other', SERVICE] });
    const headers = { authorization: `Bearer ${t}` };
    expect((await req(`${ours.url}/v2/`, { headers })).status).toBe(200);
    expect((await req(`${ref.url}/v2/`, { headers })).status).toBe(401);
    const other = mint(pki.rsa, { ...claimsFor([]), aud: ['other', 'another'] });
    expect((await req(`${ours.url}/v2/`, { headers: { authorization: `Bearer ${other}` } })).status).toBe(401);
  });

  it('the challenge scopes: pull, pull,push, delete, the catalog, both repositories of a mount', async () => {
    const scope = async (method: string, p: string) =>
      challenge((await req(`${ours.url}${p}`, { method })).headers.get('www-authenticate')).scope;
    expect(await scope('GET', '/v2/')).toBeUndefined();
    expect(await scope('GET', '/v2/public/hello/manifests/1')).toBe('repository:public/hello:pull');
    expect(await scope('PATCH', '/v2/alice/x/blobs/uploads/abcdef12')).toBe('repository:alice/x:pull,push');
    expect(await scope('DELETE', `/v2/alice/x/blobs/sha256:${'c'.repeat(64)}`)).toBe('repository:alice/x:delete');
    expect(await scope('GET', '/v2/_catalog')).toBe('registry:catalog:*');
    expect(await scope('POST', mountPath)).toBe('repository:alice/y:pull,push repository:public/hello:pull');
  });

  it.runIf(existsSync(SKOPEO))(
    'skopeo --creds pushes and pulls through the token flow; wrong or no creds are refused',
    async () => {
      const layout = path.join(work, 'layout');
      const configDigest = writeOciLayout(layout);
      const skopeo = async (args: string[]) => (await run(SKOPEO, args, { timeoutMs: 120_000 })).stdout;
      const dest = `docker://${ours.host}/alice/app:1`;
      const before = tokens.requests.length;
      await skopeo([
        'copy',
        '--dest-tls-verify=false',
        '--dest-creds',
        `alice:${USERS.alice}`,
        `oci:${layout}:v1`,
        dest,
      ]);
      // skopeo asked the realm for alice, for push on alice/app
      const asked = tokens.requests.slice(before);
      expect(asked.some((r) => r.user === 'alice' && r.scopes.includes('repository:alice/app:pull,push'))).toBe(true);
      const back = path.join(work, 'back');
      await skopeo(['copy', '--src-tls-verify=false', '--src-creds', `alice:${USERS.alice}`, dest, `oci:${back}:v1`]);
      const inspect = JSON.parse(
        await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', `alice:${USERS.alice}`, dest]),
      );
      expect(inspect.config.digest).toBe(configDigest);
      expect(inspect.layers).toHaveLength(1);
      // no credentials: the token has no access to alice/app, our server says so
      await expect(skopeo(['inspect', '--raw', '--tls-verify=false', '--no-creds', dest])).rejects.toThrow(
        /unauthorized|authentication required|401/i,
      );
      // a wrong password never gets a token
      await expect(skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', 'alice:nope', dest])).rejects.toThrow(
        /401|unauthorized|invalid username/i,
      );
      // admin sees the catalog (registry:catalog:*), alice does not
      const tokenFor = async (user: string, scope: string) => {
        const auth = `Basic ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`;
        const r = await req(`${tokens.url}?service=${SERVICE}&scope=${encodeURIComponent(scope)}`, {
          headers: { authorization: auth },
        });
        return r.json().token as string;
      };
      const catalog = (t: string) => req(`${ours.url}/v2/_catalog`, { headers: { authorization: `Bearer ${t}` } });
      const admin = await catalog(await tokenFor('admin', 'registry:catalog:*'));
      expect(admin.status).toBe(200);
      expect(admin.json().repositories).toEqual(['alice/app']);
      expect((await catalog(await tokenFor('alice', 'registry:catalog:*'))).status).toBe(401);
    },
  );
});

/** A one-layer OCI image layout tagged v1 (fixtures built by code). */
function writeOciLayout(dir: string): string {
  const layer = rand(4096);
  const config = configBlob('token');
  const manifest = ociManifest(config, [layer]);
  mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const b of [layer, config, manifest]) writeFileSync(path.join(dir, 'blobs', 'sha256', sha(b).slice(7)), b);
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const desc = {
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    digest: sha(manifest),
    size: manifest.length,
    annotations: { 'org.opencontainers.image.ref.name': 'v1' },
  };
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [desc] }));
  return sha(config);
}
