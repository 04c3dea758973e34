// The client against the real distribution registry (`docker-registry`, no root needed): plain
// HTTP, TLS with a test CA from a certs.d directory, htpasswd basic auth; a fault-injecting
// loopback proxy in front (dropped connections, 503/429, flipped bytes, cross-host redirects).
// Skips when the registry binary is missing, unless STEVEDORE_REQUIRE_DOCKER=1.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Digest, sha256 } from '@stevedore/core';
import { copyImage, OciLayoutReader, ociLayoutSink, parseReference } from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bins, cleanupAll, installExitHooks, type Registry, startRegistry } from '../../../test/harness/index.js';
import { type ProgressEvent, pullImage, RegistryClient, type RegistryError, registrySink } from '../src/index.js';
import { busyboxImage, collect, type FaultProxy, layerTar, memImage, startProxy } from './fixtures.js';

const canRun = existsSync(bins.registry);
const required = process.env.STEVEDORE_REQUIRE_DOCKER === '1';
const SKOPEO = process.env.STEVEDORE_SKOPEO ?? '/usr/bin/skopeo';

installExitHooks();
afterAll(async () => {
  await cleanupAll();
});

it.runIf(required && !canRun)('STEVEDORE_REQUIRE_DOCKER=1 but the registry binary is missing', () => {
  expect.fail(`need ${bins.registry}`);
});

const work = mkdtempSync(path.join(tmpdir(), 'sd-registry-it-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.skipIf(!canRun)('plain HTTP registry behind a fault-injecting proxy', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  const big = busyboxImage('hello from stevedore\n', 3 * 1024 * 1024);
  const fast = { retry: { baseDelayMs: 10, maxDelayMs: 2000 }, credentials: false as const };

  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startProxy(reg.url);
  }, 60_000);
  afterAll(async () => {
    await proxy?.close();
    await reg?.stop();
  });

  it('pushes (monolithic and chunked), pulls into an OCI layout, blobs byte-equal, skopeo agrees on the digest', async () => {
    const events: ProgressEvent[] = [];
    const c = new RegistryClient({
      ...fast,
      chunkSize: 1024 * 1024,
      chunkedUpload: true,
      onProgress: (e) => events.push(e),
    });
    const ref = parseReference(`${reg.host}/sd/app:1`);
    const sink = registrySink(c, ref);
    await copyImage(big, sink);
    expect(sink.lastDigest!.equals(big.digest)).toBe(true);
    // chunked: the 3 MiB layer went up in 1 MiB PATCHes
    const push = events.filter((e) => e.direction === 'push' && e.digest === big.layers[2]!.digest.toString());
    expect(push.length).toBeGreaterThanOrEqual(3);
    // a repeated push is a no-op per blob
    await copyImage(big, registrySink(c, ref));

    const dir = path.join(work, 'layout1');
    const pulled = await pullImage(c, ref);
    expect(pulled.digest.equals(big.digest)).toBe(true);
    await copyImage(pulled, ociLayoutSink(dir), { tags: ['1'] });
    for (const l of big.layers) {
      const bytes = readFileSync(path.join(dir, 'blobs', 'sha256', l.digest.hex));
      expect(sha256(bytes).equals(l.digest)).toBe(true);
      expect(Buffer.compare(bytes, await collect(l.compressed()))).toBe(0);
    }
    const reader = await OciLayoutReader.openDir(dir);
    expect((await reader.image('1')).layers.map((l) => l.digest.toString())).toEqual(
      big.layers.map((l) => l.digest.toString()),
    );
    // diff_id verification of the uncompressed stream
    expect((await collect(pulled.layers[1]!.uncompressed())).length).toBeGreaterThan(0);

    if (existsSync(SKOPEO)) {
      const out = execFileSync(SKOPEO, ['inspect', '--tls-verify=false', `docker://${reg.host}/sd/app:1`], {
        encoding: 'utf8',
      });
      expect(JSON.parse(out).Digest).toBe(big.digest.toString());
    }
    await c.close();
  });

  it('resumes a dropped blob download with a closed Range and verifies the whole blob', async () => {
    const c = new RegistryClient(fast);
    const layer = big.layers[2]!;
    let dropped = 0;
    proxy.seen = [];
    proxy.fault = (req, _res, forward) => {
      if (
        req.method === 'GET' &&
        req.url?.includes(`/blobs/${layer.digest}`) &&
        !req.headers.range &&
        dropped++ === 0
      ) {
        forward(undefined, { dropAfter: 1024 * 1024 });
        return true;
      }
      return false;
    };
    try {
      const ref = parseReference(`${proxy.host}/sd/app:1`);
      const bytes = await collect(c.fetchBlob(ref, layer.digest, layer.size));
      expect(sha256(bytes).equals(layer.digest)).toBe(true);
      const ranges = proxy.seen.filter((s) => s.headers.range).map((s) => s.headers.range);
      expect(ranges.length).toBe(1);
      expect(ranges[0]).toMatch(new RegExp(`^bytes=\\d+-${layer.size - 1}$`));
    } finally {
      proxy.fault = undefined;
      await c.close();
    }
  });

  it('resumes across runs: a kept partial file is re-hashed and continued with Range', async () => {
    const layer = big.layers[2]!;
    const ref = parseReference(`${proxy.host}/sd/app:1`);
    const target = path.join(work, 'dl', layer.digest.hex);
    // first run: the connection drops and no resumes are allowed → the partial file stays
    proxy.fault = (req, _res, forward) => {
      if (req.method === 'GET' && req.url?.includes('/blobs/')) {
        forward(undefined, { dropAfter: 1_500_000 });
        return true;
      }
      return false;
    };
    const c1 = new RegistryClient({ ...fast, maxResumes: 0 });
    await expect(c1.downloadBlob(ref, layer.digest, layer.size, target)).rejects.toThrow(/connection lost/);
    await c1.close();
    expect(existsSync(target)).toBe(false);
    proxy.fault = undefined;
    proxy.seen = [];
    const c2 = new RegistryClient(fast);
    const r = await c2.downloadBlob(ref, layer.digest, layer.size, target);
    await c2.close();
    expect(r.resumedFrom).toBeGreaterThan(0);
    expect(proxy.seen.find((s) => s.url.includes('/blobs/'))?.headers.range).toBe(
      `bytes=${r.resumedFrom}-${layer.size - 1}`,
    );
    expect(sha256(readFileSync(target)).equals(layer.digest)).toBe(true);
  });

  it('a range answered with 200 restarts from zero (prefix re-checked)', async () => {
    const layer = big.layers[2]!;
    const ref = parseReference(`${proxy.host}/sd/app:1`);
    let n = 0;
    proxy.fault = (req, _res, forward) => {
      if (req.method === 'GET' && req.url?.includes('/blobs/')) {
        if (n++ === 0) forward(undefined, { dropAfter: 700_000 });
        else {
          delete req.headers.range; // the "server" ignores Range: a full 200
          forward();
        }
        return true;
      }
      return false;
    };
    const c = new RegistryClient(fast);
    try {
      const bytes = await collect(c.fetchBlob(ref, layer.digest, layer.size));
      expect(sha256(bytes).equals(layer.digest)).toBe(true);
      expect(n).toBe(2);
    } finally {
      proxy.fault = undefined;
      await c.close();
    }
  });

  it('backs off on 503 and on 429 with Retry-After, then succeeds', async () => {
    const c = new RegistryClient(fast);
    const answers = [503, 429];
    proxy.fault = (req, res) => {
      if (req.url?.includes('/manifests/') && answers.length) {
        const s = answers.shift()!;
        res.writeHead(s, s === 429 ? { 'retry-after': '1', 'content-type': 'application/json' } : {});
        res.end(s === 429 ? JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }) : '');
        return true;
      }
      return false;
    };
    try {
      const t0 = Date.now();
      const m = await c.getManifest(parseReference(`${proxy.host}/sd/app:1`));
      expect(m.digest.equals(big.digest)).toBe(true);
      expect(answers).toHaveLength(0);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(950); // Retry-After: 1 honored
    } finally {
      proxy.fault = undefined;
      await c.close();
    }
  });

  it('a flipped byte fails with a digest error and nothing is stored', async () => {
    const c = new RegistryClient(fast);
    const layer = big.layers[1]!;
    proxy.fault = (req, _res, forward) => {
      if (req.method === 'GET' && req.url?.includes(`/blobs/${layer.digest}`)) {
        forward((chunk, pos) => {
          if (pos === 0 && chunk.length > 10) {
            const b = Buffer.from(chunk);
            b[10] = (b[10] ?? 0) ^ 0xff;
            return b;
          }
          return chunk;
        });
        return true;
      }
      return false;
    };
    const dir = path.join(work, 'layout-flip');
    try {
      const img = await pullImage(c, parseReference(`${proxy.host}/sd/app:1`));
      // the layout hashes a registry layer as it writes it (one pass), and refuses to keep it
      const e = await copyImage(img, ociLayoutSink(dir)).catch((x) => x as { code?: string; message: string });
      expect(e.code).toBe('ERR_DIGEST_MISMATCH');
      expect(e.message).toContain(layer.digest.toString());
      expect(existsSync(path.join(dir, 'blobs', 'sha256', layer.digest.hex))).toBe(false);
      const target = path.join(work, 'dl-flip', layer.digest.hex);
      await expect(
        c.downloadBlob(parseReference(`${proxy.host}/sd/app:1`), layer.digest, layer.size, target),
      ).rejects.toThrow(/digest mismatch/);
      expect(existsSync(target)).toBe(false);
    } finally {
      proxy.fault = undefined;
      await c.close();
    }
  });

  it('tags with pagination, catalog, delete manifest and blob, referrers via the tag schema fallback', async () => {
    const c = new RegistryClient(fast);
    const small = memImage([layerTar({ a: 'a' })]);
    for (const t of ['a', 'b', 'c']) await copyImage(small, registrySink(c, `${reg.host}/sd/list:${t}`));
    const repo = parseReference(`${reg.host}/sd/list`);
    // distribution 2.8 ignores n/last for tags (v3 added it): all tags in one page
    expect((await c.listTags(repo)).sort()).toEqual(['a', 'b', 'c']);
    // pagination (n, last, Link) through the proxy answering as a v3 registry does
    proxy.fault = (req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (!u.pathname.endsWith('/tags/list')) return false;
      const all = ['a', 'b', 'c'];
      const n = Number(u.searchParams.get('n') ?? 100);
      const last = u.searchParams.get('last');
      const rest = last ? all.filter((t) => t > last) : all;
      const tags = rest.slice(0, n);
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (rest.length > n) headers.link = `</v2/sd/list/tags/list?last=${tags.at(-1)}&n=${n}>; rel="next"`;
      res.writeHead(200, headers);
      res.end(JSON.stringify({ name: 'sd/list', tags }));
      return true;
    };
    const viaProxy = parseReference(`${proxy.host}/sd/list`);
    proxy.seen = [];
    expect(await c.listTags(viaProxy, { pageSize: 1 })).toEqual(['a', 'b', 'c']);
    expect(proxy.seen.map((x) => x.url)).toEqual([
      '/v2/sd/list/tags/list?n=1',
      '/v2/sd/list/tags/list?n=1&last=a',
      '/v2/sd/list/tags/list?n=1&last=b',
    ]);
    expect(await c.tagsPage(viaProxy, { n: 2 })).toEqual({ tags: ['a', 'b'], next: 'b' });
    proxy.fault = undefined;
    // the real registry paginates the catalog with Link
    expect(await c.catalog(reg.host, { pageSize: 1 })).toEqual(expect.arrayContaining(['sd/app', 'sd/list']));
    // referrers: distribution 2.8 has no API → the sha256-<hex> tag index
    expect(await c.referrers(repo, small.digest)).toEqual([]);
    const sbom = memImage([layerTar({ sbom: '{}' })]);
    await copyImage(sbom, registrySink(c, `${reg.host}/sd/list:sbom`));
    const idx = new TextEncoder().encode(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: sbom.digest.toString(),
            size: sbom.rawManifest.length,
            artifactType: 'application/spdx+json',
          },
        ],
      }),
    );
    await c.putManifest(repo.withTag(`sha256-${small.digest.hex}`), idx, 'application/vnd.oci.image.index.v1+json');
    const refs = await c.referrers(repo, small.digest, { artifactType: 'application/spdx+json' });
    expect(refs.map((d) => d.digest.toString())).toEqual([sbom.digest.toString()]);
    // deletes
    const deleted = await c.deleteManifest(repo.withTag('sbom'));
    expect(deleted.equals(sbom.digest)).toBe(true);
    const missing = await c
      .getManifest(parseReference(`${reg.host}/sd/list@${sbom.digest}`))
      .catch((x) => x as RegistryError);
    expect((missing as RegistryError).code).toBe('ERR_REGISTRY_NOT_FOUND');
    expect((missing as RegistryError).has('MANIFEST_UNKNOWN')).toBe(true);
    await c.deleteBlob(repo, sbom.layers[0]!.digest);
    expect(await c.blobExists(repo, sbom.layers[0]!.digest)).toBe(false);
    await c.close();
  });

  it('mounts a blob from another repository', async () => {
    const c = new RegistryClient(fast);
    const layer = big.layers[0]!;
    const r = await c.pushBlob(
      parseReference(`${reg.host}/sd/other`),
      layer.digest,
      layer.size,
      () => layer.compressed(),
      { mountFrom: 'sd/app' },
    );
    expect(r).toBe('mounted');
    // and a manifest digest reference is checked against the bytes
    const byDigest = await c.getManifest(parseReference(`${reg.host}/sd/app@${big.digest}`));
    expect(byDigest.digest.equals(big.digest)).toBe(true);
    await c.close();
  });

  it('honors AbortSignal', async () => {
    const c = new RegistryClient(fast);
    const ac = new AbortController();
    ac.abort();
    const e = await c
      .getManifest(parseReference(`${reg.host}/sd/app:1`), { signal: ac.signal })
      .catch((x) => x as RegistryError);
    expect((e as RegistryError).code).toBe('ERR_ABORTED');
    await c.close();
  });
});

describe.skipIf(!canRun)('htpasswd basic auth, credentials never follow a cross-host redirect', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  let other: FaultProxy;
  const img = busyboxImage('auth\n');

  beforeAll(async () => {
    reg = await startRegistry({ auth: { username: 'alice', password: 's3cret-pw' } });
    proxy = await startProxy(reg.url);
    // "another host": 127.0.0.2, fetching from the registry with its own credentials (like a presigned URL)
    other = await startProxy(reg.url, '127.0.0.2', { authorization: reg.authHeader! });
  }, 60_000);
  afterAll(async () => {
    await other?.close();
    await proxy?.close();
    await reg?.stop();
  });

  it('anonymous is refused with UNAUTHORIZED and a login hint', async () => {
    const c = new RegistryClient({ credentials: false });
    const e = await c.ping(reg.host).catch((x) => x as RegistryError);
    expect((e as RegistryError).code).toBe('ERR_REGISTRY_UNAUTHORIZED');
    expect((e as RegistryError).status).toBe(401);
    expect((e as RegistryError).message).toContain(`stevedore login ${reg.host}`);
    await c.close();
  });

  it('credentials from config.json: push, pull; blob GETs redirected to 127.0.0.2 arrive without Authorization', async () => {
    const cfgDir = path.join(work, 'docker-cfg');
    mkdirSync(cfgDir, { recursive: true });
    writeFileSync(
      path.join(cfgDir, 'config.json'),
      JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from('alice:s3cret-pw').toString('base64') } } }),
    );
    const { DockerConfig } = await import('../src/index.js');
    const docker = new DockerConfig({ dir: cfgDir });
    const c = new RegistryClient({ credentials: (r) => docker.get(r) });
    const ref = parseReference(`${proxy.host}/sd/auth:1`);
    await copyImage(img, registrySink(c, ref));
    proxy.fault = (req, res) => {
      if (req.method === 'GET' && req.url?.includes('/blobs/')) {
        res.writeHead(307, { location: `${other.url}${req.url}` });
        res.end();
        return true;
      }
      return false;
    };
    try {
      const pulled = await pullImage(c, ref);
      const dir = path.join(work, 'layout-auth');
      await copyImage(pulled, ociLayoutSink(dir));
      expect(proxy.seen.some((s) => s.headers.authorization?.startsWith('Basic '))).toBe(true);
      const redirected = other.seen.filter((s) => s.url.includes('/blobs/'));
      expect(redirected.length).toBe(img.layers.length + 1);
      for (const s of redirected) expect(s.headers.authorization).toBeUndefined();
      for (const l of img.layers) expect(existsSync(path.join(dir, 'blobs', 'sha256', l.digest.hex))).toBe(true);
    } finally {
      proxy.fault = undefined;
      await c.close();
    }
  });
});

describe.skipIf(!canRun)('TLS registry with a test CA', () => {
  let reg: Registry;
  beforeAll(async () => {
    reg = await startRegistry({ tls: true });
  }, 60_000);
  afterAll(async () => {
    await reg?.stop();
  });

  it('is refused without the CA (verified by default), works with <certs.d>/<host:port>/ca.crt', async () => {
    const none = new RegistryClient({
      credentials: false,
      certsDir: path.join(work, 'empty-certs'),
      retry: { retries: 0 },
    });
    const e = await none.ping(reg.host).catch((x) => x as RegistryError);
    expect((e as RegistryError).code).toBe('ERR_REGISTRY_TLS');
    await none.close();
    const certs = path.join(work, 'certs.d');
    mkdirSync(path.join(certs, reg.host), { recursive: true });
    writeFileSync(path.join(certs, reg.host, 'ca.crt'), reg.caPem!);
    const c = new RegistryClient({ credentials: false, certsDir: certs });
    const img = busyboxImage('tls\n');
    const ref = parseReference(`${reg.host}/sd/tls:1`);
    await copyImage(img, registrySink(c, ref));
    const pulled = await pullImage(c, ref);
    expect(pulled.digest.equals(img.digest)).toBe(true);
    expect(Digest.parse(pulled.digest.toString()).equals(img.digest)).toBe(true);
    await c.close();
  });
});
