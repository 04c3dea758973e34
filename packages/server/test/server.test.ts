// Our server alone: concurrent pushes of one blob, garbage collection, htpasswd auth, read-only
// mode, CORS, request logging, graceful close, hostile inputs.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, describe, expect, it } from 'vitest';
import { garbageCollect, startServer } from '../src/index.js';
import { configBlob, OCI_MANIFEST, ociManifest, pushBlob, pushBlobMono, rand, req, sha, tempDir } from './helpers.js';

const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of closers) await c();
});
async function server(o: Partial<Parameters<typeof startServer>[0]> = {}) {
  const root = tempDir('srv');
  const s = await startServer({ root, ...o });
  closers.push(() => s.close());
  return { ...s, root };
}
const blobPath = (root: string, d: string) =>
  path.join(root, 'docker/registry/v2/blobs/sha256', d.slice(7, 9), d.slice(7), 'data');

describe('stevedore server', () => {
  it('20 concurrent pushes of the same blob (monolithic, session, chunked) all succeed; the stored blob verifies', async () => {
    const s = await server();
    const data = rand(512 * 1024);
    const d = sha(data);
    const chunked = async (i: number) => {
      const start = await req(`${s.url}/v2/same/r${i % 3}/blobs/uploads/`, { method: 'POST' });
      let loc = new URL(start.headers.get('location')!, s.url).toString();
      for (let off = 0; off < data.length; off += 100_000) {
        const part = data.subarray(off, off + 100_000);
        const p = await req(loc, {
          method: 'PATCH',
          headers: { 'content-range': `${off}-${off + part.length - 1}`, 'content-type': 'application/octet-stream' },
          body: part,
        });
        expect(p.status).toBe(202);
        loc = new URL(p.headers.get('location')!, s.url).toString();
      }
      const u = new URL(loc);
      u.searchParams.set('digest', d);
      const f = await req(u.toString(), { method: 'PUT' });
      expect(f.status).toBe(201);
    };
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        i % 3 === 0
          ? pushBlobMono(s.url, `same/r${i % 3}`, data)
          : i % 3 === 1
            ? pushBlob(s.url, `same/r${i % 3}`, data)
            : chunked(i),
      ),
    );
    expect(sha(readFileSync(blobPath(s.root, d)))).toBe(d);
    for (const r of ['same/r0', 'same/r1', 'same/r2']) {
      const g = await req(`${s.url}/v2/${r}/blobs/${d}`);
      expect(sha(g.body)).toBe(d);
      // every session was cleaned up
      const uploads = path.join(s.root, 'docker/registry/v2/repositories', r, '_uploads');
      expect(existsSync(uploads) ? readdirSync(uploads) : []).toEqual([]);
    }
    expect(readdirSync(path.join(s.root, 'docker/registry/v2/.stevedore-tmp'))).toEqual([]);
  });

  it('garbage-collect: dry run reports, the real run sweeps only unreferenced blobs', async () => {
    const s = await server();
    const keep = rand(1000);
    const drop = rand(1000);
    const orphan = rand(1000);
    const cfgA = configBlob('a');
    const cfgB = configBlob('b');
    for (const b of [keep, drop, orphan, cfgA, cfgB]) await pushBlob(s.url, 'gc/x', b);
    const mA = ociManifest(cfgA, [keep]);
    const mB = ociManifest(cfgB, [drop]);
    for (const [t, m] of [
      ['a', mA],
      ['b', mB],
    ] as const) {
      expect(
        (
          await req(`${s.url}/v2/gc/x/manifests/${t}`, {
            method: 'PUT',
            headers: { 'content-type': OCI_MANIFEST },
            body: m,
          })
        ).status,
      ).toBe(201);
    }
    expect((await req(`${s.url}/v2/gc/x/manifests/${sha(mB)}`, { method: 'DELETE' })).status).toBe(202);
    const expected = [sha(drop), sha(orphan), sha(cfgB), sha(mB)].sort();
    const dry = await garbageCollect(s.root, { dryRun: true });
    expect(dry.deleted).toEqual(expected);
    expect(existsSync(blobPath(s.root, sha(drop)))).toBe(true);
    const real = await garbageCollect(s.root);
    expect(real.deleted).toEqual(expected);
    for (const d of expected) expect(existsSync(blobPath(s.root, d))).toBe(false);
    expect(real.marked).toEqual([sha(keep), sha(cfgA), sha(mA)].sort());
    const g = await req(`${s.url}/v2/gc/x/manifests/a`);
    expect(sha(g.body)).toBe(sha(mA));
    expect(sha((await req(`${s.url}/v2/gc/x/blobs/${sha(keep)}`)).body)).toBe(sha(keep));
    // untagged manifests go too with removeUntagged
    expect((await req(`${s.url}/v2/gc/x/manifests/a`, { method: 'DELETE' })).status).toBe(202);
    const untagged = await garbageCollect(s.root, { removeUntagged: true });
    expect(untagged.deletedManifests).toEqual([`gc/x@${sha(mA)}`]);
    expect(untagged.deleted).toEqual([sha(keep), sha(cfgA), sha(mA)].sort());
  });

  it('htpasswd basic auth ($2y$ bcrypt as htpasswd -B writes): 401 + WWW-Authenticate, then 200', async () => {
    const file = path.join(tempDir('auth'), 'htpasswd');
    writeFileSync(file, `bob:${bcrypt.hashSync('pw', 5).replace(/^\$2b\$/, '$2y$')}\n`);
    const s = await server({ htpasswd: file, realm: 'test' });
    const no = await req(`${s.url}/v2/`);
    expect(no.status).toBe(401);
    expect(no.headers.get('www-authenticate')).toBe('Basic realm="test"');
    expect(no.json().errors[0].code).toBe('UNAUTHORIZED');
    const auth = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });
    expect((await req(`${s.url}/v2/`, { headers: auth('bob', 'nope') })).status).toBe(401);
    expect((await req(`${s.url}/v2/`, { headers: auth('eve', 'pw') })).status).toBe(401);
    expect((await req(`${s.url}/v2/`, { headers: auth('bob', 'pw') })).status).toBe(200);
    expect((await req(`${s.url}/v2/_catalog`, { headers: auth('bob', 'pw') })).status).toBe(200);
  });

  it('read-only mode: writes → 405 UNSUPPORTED, reads work', async () => {
    const root = tempDir('ro');
    const w = await startServer({ root });
    const d = await pushBlob(w.url, 'ro/x', rand(100));
    await w.close();
    const s = await startServer({ root, readOnly: true });
    closers.push(() => s.close());
    expect((await req(`${s.url}/v2/ro/x/blobs/${d}`)).status).toBe(200);
    for (const [method, p] of [
      ['POST', '/v2/ro/x/blobs/uploads/'],
      ['DELETE', `/v2/ro/x/blobs/${d}`],
      ['PUT', '/v2/ro/x/manifests/t'],
    ] as const) {
      const r = await req(`${s.url}${p}`, { method, body: method === 'GET' ? undefined : '' });
      expect(r.status).toBe(405);
      expect(r.json().errors[0].code).toBe('UNSUPPORTED');
    }
  });

  it('CORS headers and OPTIONS preflight; one log line per request', async () => {
    const lines: string[] = [];
    const s = await server({ corsOrigin: 'https://ui.example', log: (l) => lines.push(l) });
    const r = await req(`${s.url}/v2/`);
    expect(r.headers.get('access-control-allow-origin')).toBe('https://ui.example');
    const exposed = r.headers.get('access-control-expose-headers')!;
    for (const h of ['Docker-Content-Digest', 'Link', 'Location', 'Range', 'OCI-Subject', 'OCI-Filters-Applied']) {
      expect(exposed).toContain(h);
    }
    const pre = await req(`${s.url}/v2/x/blobs/uploads/`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://ui.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization',
      },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-methods')).toContain('PATCH');
    expect(pre.headers.get('access-control-allow-headers')).toBe('authorization');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^127\.0\.0\.1 - "GET \/v2\/ HTTP\/1\.1" 200 2 [\d.]+ms$/);
  });

  it('hostile inputs: bad digests, names, tags, upload ids, ranges', async () => {
    const s = await server();
    const d = await pushBlob(s.url, 'h/x', rand(100));
    for (const [p, status, code] of [
      ['/v2/h/x/blobs/sha256:..%2F..%2Fetc', 400, 'DIGEST_INVALID'],
      ['/v2/h/x/blobs/sha256:abc', 400, 'DIGEST_INVALID'],
      ['/v2/h/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e', 400, 'DIGEST_INVALID'],
      ['/v2/h/..%2F..%2Fx/tags/list', 400, 'NAME_INVALID'],
      ['/v2/h/x/manifests/.hidden', 400, 'TAG_INVALID'],
      ['/v2/h/x/blobs/uploads/..%2F..%2Fz', 404, 'BLOB_UPLOAD_UNKNOWN'],
      ['/v2/h/x/blobs/uploads/00000000-0000-0000-0000-000000000000', 404, 'BLOB_UPLOAD_UNKNOWN'],
    ] as const) {
      const r = await req(`${s.url}${p}`);
      expect([p, r.status, r.json().errors[0].code]).toEqual([p, status, code]);
    }
    const r = await req(`${s.url}/v2/h/x/blobs/${d}`, { headers: { range: 'bytes=500-600' } });
    expect(r.status).toBe(416);
    expect(r.headers.get('content-range')).toBe('bytes */100');
    const unknown = await req(`${s.url}/nope`);
    expect(unknown.status).toBe(404);
  });

  it('graceful close: an in-flight upload finishes, then the port is closed', async () => {
    const s = await startServer({ root: tempDir('close') });
    const data = rand(300_000);
    const u = new URL(`${s.url}/v2/c/x/blobs/uploads/?digest=${sha(data)}`);
    const inflight = new Promise<number>((resolve, reject) => {
      const r = http.request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname + u.search,
          method: 'POST',
          headers: { 'content-length': data.length },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      r.on('error', reject);
      r.write(data.subarray(0, 1000));
      setTimeout(() => r.end(data.subarray(1000)), 300);
    });
    await new Promise((r) => setTimeout(r, 100));
    const closed = s.close();
    expect(await inflight).toBe(201);
    await closed;
    await expect(fetch(`${s.url}/v2/`)).rejects.toThrow();
  });
});
