// Token services and challenges as they differ between registries (Docker Hub, GHCR, Quay,
// Harbor, GitLab, Artifactory, ECR…), against the real registry (`docker-registry` with
// `auth.token`) and the token service of ./token-server.ts on another origin (another port):
// a response with `access_token` only, without `expires_in` or with one under a minute (docker
// then keeps the token 60 s); challenges spelled `bearer` with extra parameters; a token that
// expires between two requests (the registry answers 401 invalid_token on a blob: a new token,
// once); a token without the scope asked for (401 insufficient_scope: the error names it).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sha256 } from '@stevedore/core';
import { copyImage, parseReference } from '@stevedore/image';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { bins, type Registry } from '../../../test/harness/index.js';
import { pullImage, RegistryClient, RegistryError, registrySink } from '../src/index.js';
import { collect, type FaultProxy, layerTar, memImage, startProxy } from './fixtures.js';
import { defaultResponse, startTokenRegistry, type TokenServer, USERS } from './token-server.js';

const { canRun: harnessOk } = useRealComponents({ registry: true, dockerd: false });
const canRun = harnessOk && existsSync(bins.openssl);

const work = mkdtempSync(path.join(tmpdir(), 'sd-registry-token-quirks-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.skipIf(!canRun)('token auth quirks against the real registry', () => {
  let reg: Registry;
  let tokens: TokenServer;
  let proxy: FaultProxy;
  const fast = { retry: { baseDelayMs: 10, maxDelayMs: 1000 } };
  const alice = async () => ({ username: 'alice', password: USERS.alice! });
  const pub = memImage([layerTar({ 'hello.txt': 'public\n' }), layerTar({ 'b.txt': 'b\n' })], { gzip: true });

  beforeAll(async () => {
    ({ reg, tokens } = await startTokenRegistry(work));
    proxy = await startProxy(reg.url);
    const admin = new RegistryClient({
      ...fast,
      credentials: async () => ({ username: 'admin', password: USERS.admin! }),
    });
    await copyImage(pub, registrySink(admin, `${reg.host}/public/hello:1`));
    await admin.close();
  }, 60_000);
  afterAll(async () => {
    await proxy?.close();
    await reg?.stop();
    await tokens?.close();
  });
  afterEach(() => {
    tokens.respond = defaultResponse;
    proxy.fault = undefined;
  });

  it('the realm is on another origin than the registry', async () => {
    const res = await fetch(`${reg.url}/v2/public/hello/manifests/1`);
    const realm = /realm="([^"]+)"/.exec(res.headers.get('www-authenticate') ?? '')?.[1];
    expect(new URL(realm!).origin).not.toBe(new URL(reg.url).origin);
  });

  it('a token response with access_token only and no expires_in: used, and cached (60 s)', async () => {
    tokens.respond = (token) => ({ access_token: token });
    const c = new RegistryClient({ ...fast, credentials: false });
    const from = tokens.requests.length;
    try {
      const img = await pullImage(c, `${reg.host}/public/hello:1`);
      for (const l of img.layers) expect(sha256(await collect(l.compressed())).equals(l.digest)).toBe(true);
      await pullImage(c, `${reg.host}/public/hello:1`);
      expect(tokens.requests.length - from).toBe(1);
    } finally {
      await c.close();
    }
  });

  it('an empty "token" next to a valid access_token: the access_token is used', async () => {
    tokens.respond = (token) => ({ token: '', access_token: token, expires_in: 300 });
    const c = new RegistryClient({ ...fast, credentials: false });
    try {
      const img = await pullImage(c, `${reg.host}/public/hello:1`);
      expect(img.digest.equals(pub.digest)).toBe(true);
    } finally {
      await c.close();
    }
  });

  it('expires_in under 60 is taken as 60 s (as docker does): no new token a few seconds later', async () => {
    tokens.respond = (token) => ({ token, expires_in: 1 });
    const c = new RegistryClient({ ...fast, credentials: false });
    const from = tokens.requests.length;
    try {
      await pullImage(c, `${reg.host}/public/hello:1`);
      await sleep(1500);
      const img = await pullImage(c, `${reg.host}/public/hello:1`);
      expect(img.digest.equals(pub.digest)).toBe(true);
      expect(tokens.requests.length - from).toBe(1);
    } finally {
      await c.close();
    }
  });

  it('a challenge spelled `bearer` with extra parameters (and `Basic` offered too)', async () => {
    proxy.fault = (_req, _res, forward) => {
      forward(undefined, {
        headers: (h) => {
          const wa = h['www-authenticate'];
          if (typeof wa !== 'string') return h;
          // distribution: Bearer realm="…",service="…",scope="…" → lowercase scheme, extra params, a second challenge
          const lowered = `bearer ${wa.slice('Bearer '.length)},charset="UTF-8",client_id=docker , error="invalid_token"`;
          return { ...h, 'www-authenticate': [lowered, 'Basic realm="registry"'] as unknown as string };
        },
      });
      return true;
    };
    const c = new RegistryClient({ ...fast, credentials: alice });
    const from = tokens.requests.length;
    try {
      const img = await pullImage(c, `${proxy.host}/public/hello:1`);
      expect(img.digest.equals(pub.digest)).toBe(true);
      const reqs = tokens.requests.slice(from);
      expect(reqs.length).toBe(1);
      expect(reqs[0]).toMatchObject({ user: 'alice', scopes: ['repository:public/hello:pull'] });
    } finally {
      await c.close();
    }
  });

  it('a token that expires before a blob GET: the registry says 401 invalid_token, one new token, the blob verified', async () => {
    const c = new RegistryClient({ ...fast, credentials: false });
    const ref = parseReference(`${proxy.host}/public/hello:1`);
    // the token the client holds "expires" once the manifest is read: the proxy swaps it, on
    // blob GETs, for one the token service signed an hour ago (the registry checks exp itself)
    const expired = tokens.sign({
      access: [{ type: 'repository', name: 'public/hello', actions: ['pull'] }],
      exp: -3600,
      nbf: -7200,
    });
    let first: string | undefined;
    const blobAuth: string[] = [];
    proxy.fault = (req, _res, forward) => {
      const auth = req.headers.authorization;
      if (!auth?.startsWith('Bearer ')) return false;
      first ??= auth;
      if (req.url?.includes('/blobs/')) {
        blobAuth.push(auth === first ? 'first' : 'new');
        if (auth === first) req.headers.authorization = `Bearer ${expired}`;
      }
      forward();
      return true;
    };
    const from = tokens.requests.length;
    try {
      const m = await c.getManifest(ref);
      expect(m.digest.equals(pub.digest)).toBe(true);
      const layer = pub.layers[0]!;
      const bytes = await collect(c.fetchBlob(ref, layer.digest, layer.size));
      expect(sha256(bytes).equals(layer.digest)).toBe(true);
      expect(tokens.requests.length - from).toBe(2);
      expect(blobAuth).toEqual(['first', 'new']);
    } finally {
      await c.close();
    }
  });

  it('a token refused again after the new one: one retry only, then a clear error', async () => {
    const c = new RegistryClient({ ...fast, credentials: false });
    const ref = parseReference(`${proxy.host}/public/hello:1`);
    await c.getManifest(ref); // a valid token for the scope, cached
    const layer = pub.layers[0]!;
    const expired = tokens.sign({
      access: [{ type: 'repository', name: 'public/hello', actions: ['pull'] }],
      exp: -3600,
      nbf: -7200,
    });
    proxy.seen = [];
    proxy.fault = (req, _res, forward) => {
      if (req.url?.includes('/blobs/') && req.headers.authorization) req.headers.authorization = `Bearer ${expired}`;
      forward();
      return true;
    };
    const from = tokens.requests.length;
    try {
      const e = await collect(c.fetchBlob(ref, layer.digest, layer.size)).catch((x) => x as RegistryError);
      expect(e).toBeInstanceOf(RegistryError);
      expect((e as RegistryError).code).toBe('ERR_REGISTRY_UNAUTHORIZED');
      expect((e as RegistryError).message).toContain(layer.digest.toString());
      expect(proxy.seen.filter((s) => s.url.includes('/blobs/')).length).toBe(2);
      expect(tokens.requests.length - from).toBe(1);
    } finally {
      await c.close();
    }
  });

  it('insufficient_scope: the error names the scope the registry asked for', async () => {
    const c = new RegistryClient({ ...fast, credentials: alice });
    try {
      // alice may not pull bob/app: the token grants nothing, the registry answers insufficient_scope
      const pullErr = await pullImage(c, `${reg.host}/bob/app:1`).catch((x) => x as RegistryError);
      expect(pullErr).toBeInstanceOf(RegistryError);
      expect((pullErr as RegistryError).code).toBe('ERR_REGISTRY_UNAUTHORIZED');
      expect((pullErr as RegistryError).message).toContain('insufficient_scope');
      expect((pullErr as RegistryError).message).toContain('repository:bob/app:pull');
      // and a push to public/hello (pull only for alice)
      const pushErr = await copyImage(pub, registrySink(c, `${reg.host}/public/hello:2`)).catch(
        (x) => x as RegistryError,
      );
      expect(pushErr).toBeInstanceOf(RegistryError);
      expect((pushErr as RegistryError).message).toContain('insufficient_scope');
      expect((pushErr as RegistryError).message).toMatch(/repository:public\/hello:(pull,)?push/);
    } finally {
      await c.close();
    }
  });
});
