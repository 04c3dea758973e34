// Blob GETs redirected to another origin, as Docker Hub, GHCR, Quay, ECR, Harbor and
// Artifactory do (307/302/303 to S3, GCS or a CDN with a presigned URL): the real registry
// (`docker-registry`) behind a loopback proxy that answers blob GETs with a redirect to a second
// loopback port (a small "object store" serving the same blobs, like a signed URL would). The
// registry's credentials (Basic from htpasswd, Bearer from the token service) must never reach
// the other origin, relative Locations resolve against the URL that sent them, the bytes are
// still verified against the digest, and a redirect loop ends with an error naming the URL.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sha256 } from '@stevedore/core';
import { copyImage, ociLayoutSink, parseReference } from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { bins, type Registry, startRegistry } from '../../../test/harness/index.js';
import { pullImage, RegistryClient, RegistryError, registrySink } from '../src/index.js';
import {
  type BlobStore,
  blobsOf,
  busyboxImage,
  collect,
  type FaultProxy,
  startBlobStore,
  startProxy,
} from './fixtures.js';
import { startTokenRegistry, type TokenServer, USERS } from './token-server.js';

const { canRun: harnessOk } = useRealComponents({ registry: true, dockerd: false });
const canRun = harnessOk && existsSync(bins.openssl);

const work = mkdtempSync(path.join(tmpdir(), 'sd-registry-redirect-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const BLOB_GET = /^\/v2\/.+\/blobs\/(sha256:[a-f0-9]{64})$/;

/** A proxy fault: every blob GET is answered with `status` (cycling) and a Location from `to`. */
function redirectBlobs(proxy: FaultProxy, statuses: number[], to: (digest: string) => string): () => number {
  let n = 0;
  proxy.fault = (req, res) => {
    const m = req.method === 'GET' ? BLOB_GET.exec(req.url ?? '') : null;
    if (!m) return false;
    res.writeHead(statuses[n++ % statuses.length]!, { location: to(m[1]!) });
    res.end();
    return true;
  };
  return () => n;
}

const presigned = (store: BlobStore, digest: string) =>
  `${store.url}/blobs/${digest}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=1200&X-Amz-Signature=${'ab'.repeat(32)}`;

describe.skipIf(!canRun)('blob redirects to another origin (Basic auth registry)', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  let store: BlobStore;
  const img = busyboxImage('redirected\n', 256 * 1024);
  const creds = async () => ({ username: 'alice', password: 's3cret-pw' });
  const fast = { retry: { baseDelayMs: 10, maxDelayMs: 1000 }, credentials: creds };

  beforeAll(async () => {
    reg = await startRegistry({ auth: { username: 'alice', password: 's3cret-pw' } });
    proxy = await startProxy(reg.url);
    // the "object store": the same host, another port (another origin)
    store = await startBlobStore('127.0.0.1');
    store.blobs = await blobsOf(img);
    const c = new RegistryClient(fast);
    await copyImage(img, registrySink(c, `${reg.host}/sd/redir:1`));
    await c.close();
  }, 60_000);
  afterAll(async () => {
    await store?.close();
    await proxy?.close();
    await reg?.stop();
  });

  it('302, 303 and 307 to a presigned URL on another port: followed, no Authorization there, digests verified', async () => {
    const c = new RegistryClient(fast);
    const redirected = redirectBlobs(proxy, [307, 302, 303], (d) => presigned(store, d));
    proxy.seen = [];
    store.seen = [];
    try {
      const ref = parseReference(`${proxy.host}/sd/redir:1`);
      const pulled = await pullImage(c, ref);
      const dir = path.join(work, 'layout-basic');
      await copyImage(pulled, ociLayoutSink(dir));
      for (const l of img.layers) expect(existsSync(path.join(dir, 'blobs', 'sha256', l.digest.hex))).toBe(true);
      // config + every layer went through the redirect (each status at least once)
      expect(redirected()).toBe(img.layers.length + 1);
      expect(proxy.seen.some((s) => s.headers.authorization?.startsWith('Basic '))).toBe(true);
      const fetched = store.seen.filter((s) => s.url.startsWith('/blobs/'));
      expect(fetched.length).toBe(img.layers.length + 1);
      for (const s of fetched) {
        expect(s.headers.authorization).toBeUndefined();
        expect(s.url).toContain('X-Amz-Signature=');
      }
    } finally {
      proxy.fault = undefined;
      await c.close();
    }
  });

  it('relative Locations: from the registry (same origin) and from the other origin (resolved against it)', async () => {
    const c = new RegistryClient(fast);
    const layer = img.layers[2]!;
    const ref = parseReference(`${proxy.host}/sd/redir:1`);
    // 1. the registry answers with a path-only Location on itself; the proxy serves it from the registry
    proxy.fault = (req, res, forward) => {
      const u = req.url ?? '';
      if (req.method === 'GET' && BLOB_GET.test(u)) {
        res.writeHead(307, { location: `/_redirected${u}?sig=1` });
        res.end();
        return true;
      }
      if (u.startsWith('/_redirected/')) {
        req.url = u.slice('/_redirected'.length).replace(/\?sig=1$/, '');
        forward();
        return true;
      }
      return false;
    };
    proxy.seen = [];
    try {
      const bytes = await collect(c.fetchBlob(ref, layer.digest, layer.size));
      expect(sha256(bytes).equals(layer.digest)).toBe(true);
      // same origin: once the registry has challenged, its credentials go along (as docker and Go do)
      const hop = proxy.seen.filter((s) => s.url.startsWith('/_redirected/')).at(-1);
      expect(hop?.headers.authorization?.startsWith('Basic ')).toBe(true);

      // 2. registry → other origin `/sign/<digest>` → a relative `../blobs/<digest>?…` there
      redirectBlobs(proxy, [307], (d) => `${store.url}/sign/${d}`);
      store.seen = [];
      store.fault = (req, res) => {
        const m = /^\/sign\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '');
        if (!m) return false;
        res.writeHead(302, { location: `../blobs/${m[1]}?X-Goog-Signature=0123` });
        res.end();
        return true;
      };
      const again = await collect(c.fetchBlob(ref, layer.digest, layer.size));
      expect(sha256(again).equals(layer.digest)).toBe(true);
      expect(store.seen.map((s) => s.url.replace(/sha256:[a-f0-9]+/, 'D'))).toEqual([
        '/sign/D',
        '/blobs/D?X-Goog-Signature=0123',
      ]);
      for (const s of store.seen) expect(s.headers.authorization).toBeUndefined();
    } finally {
      proxy.fault = undefined;
      store.fault = undefined;
      await c.close();
    }
  });

  it('the bytes from the other origin are verified: a corrupt blob fails with a digest error, nothing stored', async () => {
    const c = new RegistryClient(fast);
    const layer = img.layers[1]!;
    const good = store.blobs.get(layer.digest.toString())!;
    const bad = new Uint8Array(good);
    bad[100] = (bad[100] ?? 0) ^ 0xff;
    store.blobs.set(layer.digest.toString(), bad);
    redirectBlobs(proxy, [307], (d) => presigned(store, d));
    try {
      const ref = parseReference(`${proxy.host}/sd/redir:1`);
      const target = path.join(work, 'dl-corrupt', layer.digest.hex);
      const e = await c.downloadBlob(ref, layer.digest, layer.size, target).catch((x) => x as RegistryError);
      expect(e).toBeInstanceOf(RegistryError);
      expect((e as RegistryError).code).toBe('ERR_DIGEST_MISMATCH');
      expect((e as RegistryError).message).toContain(layer.digest.toString());
      expect(existsSync(target)).toBe(false);
    } finally {
      store.blobs.set(layer.digest.toString(), good);
      proxy.fault = undefined;
      await c.close();
    }
  });

  it('a dropped download from the other origin resumes with Range through the redirect', async () => {
    const c = new RegistryClient(fast);
    const layer = img.layers[2]!;
    redirectBlobs(proxy, [307], (d) => presigned(store, d));
    let dropped = false;
    store.seen = [];
    store.fault = (req, res) => {
      if (dropped || req.headers.range) return false;
      dropped = true;
      const blob = store.blobs.get(layer.digest.toString())!;
      res.writeHead(200, { 'content-length': String(blob.length), 'accept-ranges': 'bytes' });
      res.write(blob.subarray(0, 100_000), () => res.socket?.destroy());
      return true;
    };
    try {
      const bytes = await collect(c.fetchBlob(parseReference(`${proxy.host}/sd/redir:1`), layer.digest, layer.size));
      expect(sha256(bytes).equals(layer.digest)).toBe(true);
      expect(store.seen.map((s) => s.headers.range)).toEqual([undefined, `bytes=100000-${layer.size - 1}`]);
      for (const s of store.seen) expect(s.headers.authorization).toBeUndefined();
    } finally {
      proxy.fault = undefined;
      store.fault = undefined;
      await c.close();
    }
  });

  it('a redirect target answering 401 with its own challenge gets no credentials and does not change the registry auth', async () => {
    const c = new RegistryClient({ ...fast, retry: { retries: 0 } });
    const layer = img.layers[0]!;
    redirectBlobs(proxy, [307], (d) => presigned(store, d));
    store.seen = [];
    // an expired presigned URL, with a challenge pointing at a "token service" of its own
    store.fault = (req, res) => {
      if (!req.url?.startsWith('/blobs/')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ token: 'stolen' }));
        return true;
      }
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="${store.url}/token",service="store"`,
        'content-type': 'application/xml',
      });
      res.end('<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
      return true;
    };
    try {
      const ref = parseReference(`${proxy.host}/sd/redir:1`);
      await c.ping(proxy.host); // the registry's own Basic challenge
      const e = await collect(c.fetchBlob(ref, layer.digest, layer.size)).catch((x) => x as RegistryError);
      expect(e).toBeInstanceOf(RegistryError);
      expect((e as RegistryError).status).toBe(401);
      for (const s of store.seen) expect(s.headers.authorization).toBeUndefined();
      expect(store.seen.filter((s) => s.url.startsWith('/token'))).toEqual([]);
      // the error names where the 401 came from
      expect((e as RegistryError).message).toContain(store.url);
      expect((e as RegistryError).message).not.toContain('X-Amz-Signature');
      // and the registry still gets its Basic credentials afterwards, first time
      store.fault = undefined;
      proxy.seen = [];
      const m = await c.getManifest(ref);
      expect(m.digest.equals(img.digest)).toBe(true);
      expect(proxy.seen.map((s) => s.headers.authorization?.slice(0, 6))).toEqual(['Basic ']);
      const bytes = await collect(c.fetchBlob(ref, layer.digest, layer.size));
      expect(sha256(bytes).equals(layer.digest)).toBe(true);
    } finally {
      proxy.fault = undefined;
      store.fault = undefined;
      await c.close();
    }
  });

  it('a redirect loop ends with a clear error naming the URL, without endless requests', async () => {
    const c = new RegistryClient(fast);
    const layer = img.layers[0]!;
    proxy.fault = (req, res) => {
      const u = req.url ?? '';
      if (req.method === 'GET' && (BLOB_GET.test(u) || u.startsWith('/loop/'))) {
        const n = Number(/^\/loop\/(\d+)/.exec(u)?.[1] ?? 0);
        res.writeHead(302, { location: n % 2 ? `${proxy.url}/loop/${n + 1}` : `/loop/${n + 1}` });
        res.end();
        return true;
      }
      return false;
    };
    proxy.seen = [];
    try {
      const ref = parseReference(`${proxy.host}/sd/redir:1`);
      const e = await collect(c.fetchBlob(ref, layer.digest, layer.size)).catch((x) => x as RegistryError);
      expect(e).toBeInstanceOf(RegistryError);
      expect((e as RegistryError).code).toBe('ERR_REGISTRY_PROTOCOL');
      expect((e as RegistryError).message).toMatch(/too many redirects/);
      expect((e as RegistryError).message).toContain(`${proxy.url}/loop/`);
      expect((e as RegistryError).message).toContain(layer.digest.toString());
      // capped: one request plus at most 10 redirects, and the loop is not retried
      expect(proxy.seen.length).toBeLessThanOrEqual(11);
    } finally {
      proxy.fault = undefined;
      await c.close();
    }
  });
});

describe.skipIf(!canRun)('blob redirects to another origin (Bearer token registry)', () => {
  let reg: Registry;
  let tokens: TokenServer;
  let proxy: FaultProxy;
  let store: BlobStore;
  const img = busyboxImage('bearer redirect\n');

  beforeAll(async () => {
    ({ reg, tokens } = await startTokenRegistry(work));
    proxy = await startProxy(reg.url);
    store = await startBlobStore('127.0.0.1');
    store.blobs = await blobsOf(img);
    const c = new RegistryClient({ credentials: async () => ({ username: 'alice', password: USERS.alice! }) });
    await copyImage(img, registrySink(c, `${reg.host}/alice/redir:1`));
    await c.close();
  }, 60_000);
  afterAll(async () => {
    await store?.close();
    await proxy?.close();
    await reg?.stop();
    await tokens?.close();
  });

  it('the Bearer token goes to the registry only; the presigned URL gets no Authorization', async () => {
    const c = new RegistryClient({ credentials: async () => ({ username: 'alice', password: USERS.alice! }) });
    redirectBlobs(proxy, [307], (d) => presigned(store, d));
    proxy.seen = [];
    store.seen = [];
    try {
      const pulled = await pullImage(c, `${proxy.host}/alice/redir:1`);
      expect(pulled.digest.equals(img.digest)).toBe(true);
      for (const l of pulled.layers) expect(sha256(await collect(l.compressed())).equals(l.digest)).toBe(true);
      expect(proxy.seen.filter((s) => s.headers.authorization?.startsWith('Bearer ')).length).toBeGreaterThan(0);
      expect(store.seen.length).toBe(img.layers.length + 1);
      for (const s of store.seen) expect(s.headers.authorization).toBeUndefined();
    } finally {
      proxy.fault = undefined;
      await c.close();
    }
  });
});
