// Our server alone: stale upload purging (at start, periodically, from garbage-collect), referrers
// pagination with `Link: <…>; rel="next"`, and the static site next to /v2/ (`serve --ui`).
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/harness/index.js';
import { garbageCollect, parseDuration, purgeUploads, type ServerOptions, startServer } from '../src/index.js';
import { configBlob, type Json, OCI_MANIFEST, ociManifest, pushBlob, req, sha, tempDir } from './helpers.js';

const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of closers) await c();
});
async function server(o: Partial<ServerOptions> = {}) {
  const root = o.root ?? tempDir('maint');
  const s = await startServer({ root, ...o });
  closers.push(() => s.close());
  return { ...s, root };
}

const HOUR = 3600_000;
const uploadDir = (root: string, name: string, id: string) =>
  path.join(root, 'docker/registry/v2/repositories', name, '_uploads', id);
/** An upload session as distribution writes it (`startedat` in RFC 3339, seconds). */
function plantUpload(root: string, name: string, id: string, startedMsAgo?: number): string {
  const dir = uploadDir(root, name, id);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'data'), 'partial');
  if (startedMsAgo !== undefined) {
    writeFileSync(
      path.join(dir, 'startedat'),
      new Date(Date.now() - startedMsAgo).toISOString().replace(/\.\d+Z$/, 'Z'),
    );
  }
  return dir;
}
const uuid = (n: number) => `${String(n).padStart(8, '0')}-0000-4000-8000-000000000000`;

describe('stale upload purging', () => {
  it('at start: sessions older than the age go (nested names too), fresh ones and ones without startedat stay', async () => {
    const root = tempDir('purge');
    const stale = plantUpload(root, 'a/b/c', uuid(1), 8 * 24 * HOUR);
    const staleTop = plantUpload(root, 'top', uuid(2), 200 * HOUR);
    const fresh = plantUpload(root, 'top', uuid(3), HOUR);
    const undated = plantUpload(root, 'top', uuid(4));
    const s = await server({ root });
    expect([existsSync(stale), existsSync(staleTop), existsSync(fresh), existsSync(undated)]).toEqual([
      false,
      false,
      true,
      true,
    ]);
    // the purged session is unknown to the API, the fresh one still resumable
    expect((await req(`${s.url}/v2/top/blobs/uploads/${uuid(2)}`)).status).toBe(404);
    expect((await req(`${s.url}/v2/top/blobs/uploads/${uuid(3)}`)).status).toBe(204);
  });

  it('periodically, and never in read-only mode or when turned off', async () => {
    const ro = tempDir('purge-ro');
    const keptRo = plantUpload(ro, 'x', uuid(5), 400 * HOUR);
    await server({ root: ro, readOnly: true });
    const off = tempDir('purge-off');
    const keptOff = plantUpload(off, 'x', uuid(6), 400 * HOUR);
    await server({ root: off, uploadPurging: false });
    expect([existsSync(keptRo), existsSync(keptOff)]).toEqual([true, true]);

    const root = tempDir('purge-tick');
    await server({ root, uploadPurging: { maxAgeMs: HOUR, intervalMs: 50 } });
    const later = plantUpload(root, 'x', uuid(7), 2 * HOUR); // planted after the first run
    await waitFor(async () => (existsSync(later) ? undefined : true), { timeoutMs: 10_000 });
  });

  it('purgeUploads dry run reports without removing; garbage-collect --purge-uploads removes', async () => {
    const root = tempDir('purge-gc');
    const dir = plantUpload(root, 'r', uuid(8), 30 * HOUR);
    expect(await purgeUploads(root, { maxAgeMs: 24 * HOUR, dryRun: true })).toEqual([`r/_uploads/${uuid(8)}`]);
    expect(existsSync(dir)).toBe(true);
    expect((await garbageCollect(root, { uploadMaxAgeMs: 48 * HOUR })).purgedUploads).toEqual([]);
    expect((await garbageCollect(root, { uploadMaxAgeMs: 24 * HOUR })).purgedUploads).toEqual([
      `r/_uploads/${uuid(8)}`,
    ]);
    expect(existsSync(dir)).toBe(false);
  });

  it('parses durations, and says what is wrong with a bad one', () => {
    expect(parseDuration('168h')).toBe(168 * HOUR);
    expect(parseDuration('7d')).toBe(168 * HOUR);
    expect(parseDuration('1h30m')).toBe(1.5 * HOUR);
    expect(parseDuration('250ms')).toBe(250);
    for (const bad of ['', '10', 'h', '1 h', '5y', '-1h']) expect(() => parseDuration(bad)).toThrow(/bad duration/);
  });
});

describe('referrers pagination', () => {
  it('pages of referrersPageSize in digest order, linked with rel="next" (the filter carried along)', async () => {
    const s = await server({ referrersPageSize: 2 });
    const repo = 'ref/page';
    const config = configBlob('subject');
    await pushBlob(s.url, repo, config);
    const subject = ociManifest(config, []);
    const put = (body: Uint8Array, ref: string) =>
      req(`${s.url}/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body });
    expect((await put(subject, 'v1')).status).toBe(201);
    const subjectDesc = { mediaType: OCI_MANIFEST, digest: sha(subject), size: subject.length };
    const referrers: string[] = [];
    for (let i = 0; i < 5; i++) {
      const artifactType = i < 3 ? 'application/vnd.example.sbom' : 'application/vnd.example.sig';
      const m = ociManifest(config, [], { artifactType, subject: subjectDesc, annotations: { i: String(i) } });
      expect((await put(m, sha(m))).status).toBe(201);
      referrers.push(sha(m));
    }
    /** Follows Link headers from `first`; returns the pages' digests and their headers. */
    const walk = async (first: string) => {
      const pages: string[][] = [];
      const filters: (string | null)[] = [];
      let next: string | undefined = first;
      while (next) {
        const r = await req(new URL(next, s.url).toString());
        expect(r.status).toBe(200);
        pages.push(r.json().manifests.map((m: Json) => m.digest));
        filters.push(r.headers.get('oci-filters-applied'));
        const link = r.headers.get('link');
        next = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
        expect(pages.length).toBeLessThan(10);
      }
      return { pages, filters };
    };
    const all = await walk(`/v2/${repo}/referrers/${sha(subject)}`);
    expect(all.pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(all.pages.flat()).toEqual([...referrers].sort());
    const sboms = await walk(`/v2/${repo}/referrers/${sha(subject)}?artifactType=application/vnd.example.sbom`);
    expect(sboms.pages.map((p) => p.length)).toEqual([2, 1]);
    expect(sboms.filters).toEqual(['artifactType', 'artifactType']);
    expect(sboms.pages.flat()).toEqual(referrers.slice(0, 3).sort());
    // a client's smaller n is honoured; a bigger one is capped; a bad one refused
    expect((await walk(`/v2/${repo}/referrers/${sha(subject)}?n=1`)).pages).toHaveLength(5);
    expect((await walk(`/v2/${repo}/referrers/${sha(subject)}?n=100`)).pages).toHaveLength(3);
    expect((await req(`${s.url}/v2/${repo}/referrers/${sha(subject)}?n=zero`)).status).toBe(400);
  });
});

describe('static site next to /v2/', () => {
  const site = tempDir('site');
  mkdirSync(path.join(site, 'assets'));
  writeFileSync(
    path.join(site, 'index.html'),
    '<!doctype html><script type="module" src="/assets/app-1a2b.js"></script>',
  );
  writeFileSync(path.join(site, 'assets', 'app-1a2b.js'), 'fetch("/v2/")');
  writeFileSync(path.join(site, 'assets', 'core-3c4d.wasm'), new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));
  const outside = tempDir('outside');
  writeFileSync(path.join(outside, 'secret.txt'), 'secret');
  symlinkSync(path.join(outside, 'secret.txt'), path.join(site, 'leak.txt'));

  it('serves the files with their content types, the page at / and client routes; /v2/ is still the registry', async () => {
    const s = await server({ staticDir: site });
    const get = (p: string, init: { method?: string } = {}) => req(`${s.url}${p}`, init);
    const page = await get('/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(Buffer.from(page.body).toString()).toContain('/assets/app-1a2b.js');
    const js = await get('/assets/app-1a2b.js');
    expect([js.status, js.headers.get('content-type')]).toEqual([200, 'text/javascript; charset=utf-8']);
    expect(js.headers.get('cache-control')).toContain('immutable');
    const wasm = await get('/assets/core-3c4d.wasm');
    expect([wasm.status, wasm.headers.get('content-type'), wasm.body.length]).toEqual([200, 'application/wasm', 8]);
    expect((await get('/layers/3')).headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect((await get('/assets/app-1a2b.js', { method: 'HEAD' })).headers.get('content-length')).toBe('13');
    const api = await get('/v2/');
    expect([api.status, api.headers.get('docker-distribution-api-version')]).toEqual([200, 'registry/2.0']);
    expect((await get('/v2/nothing/here')).status).toBe(404);
  });

  it('refuses what is not a file of the site: missing files, .., symlinks out, writes', async () => {
    const s = await server({ staticDir: site });
    const status = async (p: string, method = 'GET') => (await req(`${s.url}${p}`, { method })).status;
    expect(await status('/missing.js')).toBe(404);
    expect(await status('/leak.txt')).toBe(404);
    expect(await status('/assets/..%2f..%2f..%2fetc%2fpasswd')).toBe(404);
    // dot segments are resolved by URL parsing before any file lookup: this is the page's route /etc/passwd
    const dots = await req(`${s.url}/%2e%2e/%2e%2e/etc/passwd`);
    expect(dots.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(Buffer.from(dots.body).toString()).not.toContain('root:');
    expect(await status('/a%00b')).toBe(404);
    expect(await status('/index.html', 'POST')).toBe(405);
  });

  it('a directory without index.html is refused at start', async () => {
    await expect(startServer({ root: tempDir('no-site'), staticDir: tempDir('empty-site') })).rejects.toThrow(
      /holds no index\.html/,
    );
  });
});
