// Token auth (the distribution token spec) against the real registry (`docker-registry`, CNCF
// distribution 2.8): the registry is configured with `auth.token` and a self-signed RSA
// certificate (made with the openssl CLI); the token server of ./token-server.ts (node:http on
// 127.0.0.1) signs RS256 JWTs carrying the certificate in `x5c` and grants only what a user may
// have: "alice" may pull and push `alice/*`, "admin" everything, anonymous may pull `public/*`.
// Everything goes through `RegistryClient`. Only loopback addresses.
// Skips when the registry binary is missing, unless STEVEDORE_REQUIRE_DOCKER=1.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sha256 } from '@stevedore/core';
import { copyImage, OciLayoutReader, ociLayoutSink, parseReference } from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bins, cleanupAll, installExitHooks, type Registry } from '../../../test/harness/index.js';
import { pullImage, RegistryClient, RegistryError, registrySink } from '../src/index.js';
import { busyboxImage, collect, type FaultProxy, layerTar, memImage, startProxy } from './fixtures.js';
import { b64url, SERVICE, startTokenRegistry, type TokenServer, USERS } from './token-server.js';

const canRun = existsSync(bins.registry) && existsSync(bins.openssl);
const required = process.env.STEVEDORE_REQUIRE_DOCKER === '1';

installExitHooks();
afterAll(async () => {
  await cleanupAll();
});

it.runIf(required && !canRun)('STEVEDORE_REQUIRE_DOCKER=1 but the registry or openssl binary is missing', () => {
  expect.fail(`need ${bins.registry} and ${bins.openssl}`);
});

const work = mkdtempSync(path.join(tmpdir(), 'sd-registry-token-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.skipIf(!canRun)('token auth (distribution token spec) against the real registry', () => {
  let reg: Registry;
  let tokens: TokenServer;
  let proxy: FaultProxy;
  const fast = { retry: { baseDelayMs: 10, maxDelayMs: 2000 } };
  const asUser = (user: string) => async () => ({ username: user, password: USERS[user]! });
  const app = busyboxImage('alice was here\n', 512 * 1024);
  const pub = memImage([layerTar({ 'hello.txt': 'public hello\n' })], { gzip: true });
  /** Scope sets of the token requests since `from` (each sorted, joined by a space). */
  const scopeSets = (from = 0) => tokens.requests.slice(from).map((r) => [...r.scopes].sort().join(' '));

  beforeAll(async () => {
    ({ reg, tokens } = await startTokenRegistry(work));
    proxy = await startProxy(reg.url);
    // Seed public/hello as admin.
    const c = new RegistryClient({ ...fast, credentials: asUser('admin') });
    await copyImage(pub, registrySink(c, `${reg.host}/public/hello:1`));
    await c.close();
  }, 60_000);
  afterAll(async () => {
    await proxy?.close();
    await reg?.stop();
    await tokens?.close();
  });

  it('the registry asks for a bearer token from our realm', async () => {
    const res = await fetch(`${reg.url}/v2/public/hello/manifests/1`);
    expect(res.status).toBe(401);
    const wa = res.headers.get('www-authenticate') ?? '';
    expect(wa).toContain(`Bearer realm="${tokens.url}"`);
    expect(wa).toContain(`service="${SERVICE}"`);
    expect(wa).toContain('scope="repository:public/hello:pull"');
  });

  it('the registry verifies our JWTs: a valid one is accepted, a tampered one refused', async () => {
    const get = async (qs: string, auth?: string) => {
      const r = await fetch(`${tokens.url}?${qs}`, auth ? { headers: { authorization: auth } } : {});
      expect(r.status).toBe(200);
      return ((await r.json()) as { token: string }).token;
    };
    const basic = `Basic ${Buffer.from(`alice:${USERS.alice}`).toString('base64')}`;
    const good = await get(`service=${SERVICE}&scope=repository:public/hello:pull`);
    const ok = await fetch(`${reg.url}/v2/public/hello/manifests/1`, {
      headers: { authorization: `Bearer ${good}`, accept: pub.manifest.mediaType },
    });
    expect(ok.status).toBe(200);
    // anonymous token, claims edited to grant alice/app: the signature no longer matches
    const anon = await get(`service=${SERVICE}&scope=repository:alice/app:pull`);
    const [h, p, sig] = anon.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString('utf8'));
    expect(claims.access).toEqual([]);
    claims.access = [{ type: 'repository', name: 'alice/app', actions: ['pull'] }];
    const forged = `${h}.${b64url(JSON.stringify(claims))}.${sig}`;
    const bad = await fetch(`${reg.url}/v2/alice/app/tags/list`, { headers: { authorization: `Bearer ${forged}` } });
    expect(bad.status).toBe(401);
    // and a genuine alice token for alice/app is accepted on the same URL
    const real = await get(`service=${SERVICE}&scope=repository:alice/app:pull`, basic);
    const fine = await fetch(`${reg.url}/v2/alice/app/tags/list`, { headers: { authorization: `Bearer ${real}` } });
    expect([200, 404]).toContain(fine.status); // 404 NAME_UNKNOWN before alice's push
  });

  it('anonymous pull of a public repository works', async () => {
    const from = tokens.requests.length;
    const c = new RegistryClient({ ...fast, credentials: false });
    const img = await pullImage(c, `${reg.host}/public/hello:1`);
    expect(img.digest.equals(pub.digest)).toBe(true);
    const bytes = await collect(img.layers[0]!.compressed());
    expect(sha256(bytes).equals(pub.layers[0]!.digest)).toBe(true);
    await c.close();
    const reqs = tokens.requests.slice(from);
    expect(reqs.length).toBe(1);
    expect(reqs[0]).toMatchObject({
      user: '',
      account: null,
      service: SERVICE,
      scopes: ['repository:public/hello:pull'],
      granted: [{ type: 'repository', name: 'public/hello', actions: ['pull'] }],
    });
  });

  it('anonymous push is refused with UNAUTHORIZED and the login hint', async () => {
    const c = new RegistryClient({ ...fast, credentials: false });
    const err = await copyImage(pub, registrySink(c, `${reg.host}/public/hello:2`)).catch((e: unknown) => e);
    await c.close();
    expect(err).toBeInstanceOf(RegistryError);
    const e = err as RegistryError;
    expect(['ERR_REGISTRY_UNAUTHORIZED', 'ERR_REGISTRY_DENIED']).toContain(e.code);
    expect(e.status === 401 || e.status === 403).toBe(true);
    expect(e.hint).toBe(`run \`stevedore login ${reg.host}\``);
    expect(e.message).toContain(`stevedore login ${reg.host}`);
    // the token server was asked for push and granted pull only
    const last = tokens.requests.at(-1)!;
    expect(last.user).toBe('');
    expect(last.scopes).toContain('repository:public/hello:pull,push');
    expect(last.granted).toEqual([{ type: 'repository', name: 'public/hello', actions: ['pull'] }]);
    // nothing was tagged
    const admin = new RegistryClient({ ...fast, credentials: asUser('admin') });
    expect(await admin.listTags(parseReference(`${reg.host}/public/hello`))).toEqual(['1']);
    await admin.close();
  });

  it('alice may not push outside alice/*, and a wrong password fails at the token server', async () => {
    const c = new RegistryClient({ ...fast, credentials: asUser('alice') });
    const e1 = (await copyImage(pub, registrySink(c, `${reg.host}/bob/app:1`)).catch(
      (e: unknown) => e,
    )) as RegistryError;
    await c.close();
    expect(e1).toBeInstanceOf(RegistryError);
    expect(e1.code).toBe('ERR_REGISTRY_UNAUTHORIZED');
    expect(tokens.requests.at(-1)).toMatchObject({ user: 'alice', account: 'alice', granted: [] });

    const bad = new RegistryClient({ ...fast, credentials: async () => ({ username: 'alice', password: 'nope' }) });
    const e2 = (await pullImage(bad, `${reg.host}/alice/app:1`).catch((e: unknown) => e)) as RegistryError;
    await bad.close();
    expect(e2).toBeInstanceOf(RegistryError);
    expect(e2.code).toBe('ERR_REGISTRY_UNAUTHORIZED');
    expect(e2.has('UNAUTHORIZED')).toBe(true);
    expect(e2.hint).toContain(`stevedore login ${reg.host}`);
  });

  it('alice pushes alice/app (pull → pull,push escalation) and pulls it back verified, tokens cached per scope', async () => {
    const from = tokens.requests.length;
    const c = new RegistryClient({ ...fast, credentials: asUser('alice'), chunkSize: 256 * 1024 });
    const ref = parseReference(`${reg.host}/alice/app:1`);
    // a pull-scoped request first: nothing there yet
    expect(await c.headManifest(ref)).toBeUndefined();
    expect(scopeSets(from)).toEqual(['repository:alice/app:pull']);
    // push: blob HEADs, uploads (monolithic and chunked) and the manifest PUT need pull,push
    const sink = registrySink(c, ref);
    await copyImage(app, sink);
    expect(sink.lastDigest!.equals(app.digest)).toBe(true);
    expect(scopeSets(from)).toEqual(['repository:alice/app:pull', 'repository:alice/app:pull,push']);
    expect(tokens.requests.at(-1)!.granted).toEqual([
      { type: 'repository', name: 'alice/app', actions: ['pull', 'push'] },
    ]);
    // pull back with the same client: the cached pull token, no new token request
    const pulled = await pullImage(c, ref);
    expect(pulled.digest.equals(app.digest)).toBe(true);
    const dir = path.join(work, 'alice-app');
    await copyImage(pulled, ociLayoutSink(dir), { tags: ['1'] });
    for (const l of app.layers) {
      const bytes = readFileSync(path.join(dir, 'blobs', 'sha256', l.digest.hex));
      expect(sha256(bytes).equals(l.digest)).toBe(true);
    }
    expect((await collect(pulled.layers[2]!.uncompressed())).length).toBeGreaterThan(512 * 1024);
    const reader = await OciLayoutReader.openDir(dir);
    expect((await reader.image('1')).digest.equals(app.digest)).toBe(true);
    // a second push is a no-op per blob, still on the cached pull,push token
    await copyImage(app, registrySink(c, ref));
    await c.close();
    expect(scopeSets(from)).toEqual(['repository:alice/app:pull', 'repository:alice/app:pull,push']);
    for (const r of tokens.requests.slice(from)) expect(r).toMatchObject({ user: 'alice', account: 'alice' });
  });

  it('credentials from a temp DOCKER_CONFIG: alice pulls alice/app', async () => {
    const dcDir = path.join(work, 'docker-config');
    mkdirSync(dcDir, { recursive: true });
    writeFileSync(
      path.join(dcDir, 'config.json'),
      JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`alice:${USERS.alice}`).toString('base64') } } }),
    );
    const saved = process.env.DOCKER_CONFIG;
    process.env.DOCKER_CONFIG = dcDir;
    let c: RegistryClient;
    try {
      c = new RegistryClient(fast); // default credentials: docker's config.json (read at construction)
    } finally {
      if (saved === undefined) delete process.env.DOCKER_CONFIG;
      else process.env.DOCKER_CONFIG = saved;
    }
    const from = tokens.requests.length;
    const img = await pullImage(c, `${reg.host}/alice/app:1`);
    expect(img.digest.equals(app.digest)).toBe(true);
    await c.close();
    expect(tokens.requests.slice(from)).toMatchObject([
      { user: 'alice', scopes: ['repository:alice/app:pull'], granted: [{ name: 'alice/app', actions: ['pull'] }] },
    ]);
  });

  it('cross-repository mount alice/app → alice/other asks for repository:alice/app:pull and mounts', async () => {
    // through the loopback proxy, to see the requests the client makes
    const c = new RegistryClient({ ...fast, credentials: asUser('alice') });
    const src = await pullImage(c, `${proxy.host}/alice/app:1`);
    const from = tokens.requests.length;
    proxy.seen = [];
    const sink = registrySink(c, `${proxy.host}/alice/other:1`);
    await copyImage(src, sink);
    expect(sink.lastDigest!.equals(app.digest)).toBe(true);
    // the mount token carries both repositories
    const mountReq = tokens.requests.slice(from).find((r) => r.scopes.includes('repository:alice/app:pull'));
    expect(mountReq).toBeDefined();
    expect([...mountReq!.scopes].sort()).toEqual(['repository:alice/app:pull', 'repository:alice/other:pull,push']);
    expect(mountReq!.granted).toEqual([
      { type: 'repository', name: 'alice/app', actions: ['pull'] },
      { type: 'repository', name: 'alice/other', actions: ['pull', 'push'] },
    ]);
    // every layer was mounted (POST ?mount=…&from=alice/app), none uploaded
    for (const l of app.layers) {
      const posts = proxy.seen.filter(
        (s) => s.method === 'POST' && s.url.includes(`mount=${encodeURIComponent(l.digest.toString())}`),
      );
      expect(posts.length).toBeGreaterThan(0);
      expect(posts.every((s) => s.url.includes('from=alice%2Fapp'))).toBe(true);
    }
    expect(proxy.seen.filter((s) => s.method === 'PATCH').length).toBe(0);
    const blobPuts = proxy.seen.filter((s) => s.method === 'PUT' && s.url.includes('/blobs/uploads/'));
    // only the config blob (not a remote layer, so not mounted) is uploaded
    expect(blobPuts.length).toBe(1);
    expect(blobPuts[0]!.url).toContain(encodeURIComponent(app.manifest.config.digest.toString()));
    // and the direct API says 'mounted' for a layer already in alice/app
    const third = parseReference(`${proxy.host}/alice/third`);
    const l0 = app.layers[0]!;
    expect(await c.pushBlob(third, l0.digest, l0.size, () => l0.compressed(), { mountFrom: 'alice/app' })).toBe(
      'mounted',
    );
    // pulled back from the new repository, verified
    const back = await pullImage(c, `${reg.host}/alice/other:1`);
    expect(back.digest.equals(app.digest)).toBe(true);
    for (const [i, l] of back.layers.entries()) {
      expect(sha256(await collect(l.compressed())).equals(app.layers[i]!.digest)).toBe(true);
    }
    await c.close();
  });

  it('tokens are cached per scope: one alice client asked for alice/app:pull,push once in all', () => {
    const counts = new Map<string, number>();
    for (const s of scopeSets()) counts.set(s, (counts.get(s) ?? 0) + 1);
    expect(counts.get('repository:alice/app:pull,push')).toBe(1);
  });
});
