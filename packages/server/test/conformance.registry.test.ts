// OCI distribution-spec workflows (pull, push, content discovery, content management), step by
// step, run with the SAME assertions against our server and the reference registry
// (`docker-registry serve`, 2.8, storage delete enabled). Where the reference registry 2.8 lacks
// a feature the assertion is made for ours only, and the test says so in its name:
// - the referrers API and the OCI-Subject header (distribution-spec v1.1, not in 2.8);
// - tags-list pagination (`n`/`last`, added to distribution after 2.8);
// - DELETE of a tag (v1.1; 2.8 answers 400/405);
// - NAME_INVALID (2.8's router answers a bare 404 for names outside the grammar).
// Skips the reference half when the registry binary is missing, unless STEVEDORE_REQUIRE_DOCKER=1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, installExitHooks } from '../../../test/harness/index.js';
import {
  configBlob,
  DOCKER_CONFIG,
  DOCKER_LAYER,
  DOCKER_MANIFEST,
  enc,
  hasReference,
  type Json,
  type Kind,
  OCI_INDEX,
  OCI_MANIFEST,
  ociManifest,
  pushBlob,
  rand,
  req,
  requireDocker,
  sha,
  startTarget,
  type Target,
} from './helpers.js';

installExitHooks();
afterAll(async () => {
  await cleanupAll();
});

it.runIf(requireDocker && !hasReference)('STEVEDORE_REQUIRE_DOCKER=1 but the registry binary is missing', () => {
  expect.fail('need docker-registry');
});

const kinds: Kind[] = hasReference ? ['stevedore', 'reference'] : ['stevedore'];

const errCode = (r: { json: () => Json }) => {
  const j = r.json();
  expect(Array.isArray(j.errors)).toBe(true);
  expect(typeof j.errors[0].code).toBe('string');
  expect(typeof j.errors[0].message).toBe('string');
  return j.errors[0].code as string;
};

describe.each(kinds)('distribution-spec workflows against %s', (kind) => {
  let t: Target;
  let base: string;
  const ours = kind === 'stevedore';
  const repo = 'conf/app';
  const layerA = rand(3000);
  const layerB = rand(5000);
  const config = configBlob('conf');
  let manifest: Uint8Array;
  let manifestDigest: string;

  beforeAll(async () => {
    t = await startTarget(kind);
    base = `${t.url}`;
  });
  afterAll(async () => {
    await t?.stop();
  });

  // --- pull / base ------------------------------------------------------------------------

  it('GET /v2/ → 200 with Docker-Distribution-API-Version', async () => {
    const r = await req(`${base}/v2/`);
    expect(r.status).toBe(200);
    expect(r.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });

  // --- push ---------------------------------------------------------------------------------

  it('monolithic POST ?digest= → 201 with Location and Docker-Content-Digest', async () => {
    const d = sha(layerA);
    const r = await req(`${base}/v2/${repo}/blobs/uploads/?digest=${d}`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: layerA,
    });
    if (!ours) {
      // distribution 2.8 has no single-POST upload: it answers 202 and opens a session, which
      // the spec allows; the client then completes with PUT.
      expect(r.status).toBe(202);
      const put = new URL(r.headers.get('location')!, base);
      put.searchParams.set('digest', d);
      const fin = await req(put.toString(), {
        method: 'PUT',
        headers: { 'content-type': 'application/octet-stream' },
        body: layerA,
      });
      expect(fin.status).toBe(201);
      return;
    }
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toContain(`/v2/${repo}/blobs/${d}`);
    expect(r.headers.get('docker-content-digest')).toBe(d);
  });

  it('chunked: POST → 202, PATCH chunks with Content-Range, status, out-of-order → 416, PUT → 201', async () => {
    const d = sha(layerB);
    const start = await req(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expect(start.status).toBe(202);
    expect(start.headers.get('docker-upload-uuid')).toBeTruthy();
    expect(start.headers.get('range')).toBe('0-0');
    let loc = new URL(start.headers.get('location')!, base).toString();

    const p1 = await req(loc, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream', 'content-range': '0-1999', 'content-length': '2000' },
      body: layerB.subarray(0, 2000),
    });
    expect(p1.status).toBe(202);
    expect(p1.headers.get('range')).toBe('0-1999');
    loc = new URL(p1.headers.get('location')!, base).toString();

    const status = await req(loc);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe('0-1999');

    // a chunk that does not start where the upload ends → 416 (ours only: distribution 2.8
    // ignores Content-Range on PATCH and would append the bytes)
    if (ours) {
      const bad = await req(loc, {
        method: 'PATCH',
        headers: { 'content-type': 'application/octet-stream', 'content-range': '3000-3999', 'content-length': '1000' },
        body: layerB.subarray(3000, 4000),
      });
      expect(bad.status).toBe(416);

      const again = await req(loc);
      expect(again.headers.get('range')).toBe('0-1999');
      loc = new URL(again.headers.get('location')!, base).toString();
    }

    const p2 = await req(loc, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream', 'content-range': '2000-3999', 'content-length': '2000' },
      body: layerB.subarray(2000, 4000),
    });
    expect(p2.status).toBe(202);
    expect(p2.headers.get('range')).toBe('0-3999');
    const put = new URL(p2.headers.get('location')!, base);
    put.searchParams.set('digest', d);
    const fin = await req(put.toString(), {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-range': '4000-4999', 'content-length': '1000' },
      body: layerB.subarray(4000),
    });
    expect(fin.status).toBe(201);
    expect(fin.headers.get('location')).toContain(`/v2/${repo}/blobs/${d}`);
    expect(fin.headers.get('docker-content-digest')).toBe(d);
  });

  it('PUT with a wrong digest → 400 DIGEST_INVALID and nothing becomes visible', async () => {
    const data = rand(777);
    const wrong = sha(rand(10));
    const start = await req(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    const put = new URL(start.headers.get('location')!, base);
    put.searchParams.set('digest', wrong);
    const r = await req(put.toString(), {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: data,
    });
    expect(r.status).toBe(400);
    expect(errCode(r)).toBe('DIGEST_INVALID');
    expect((await req(`${base}/v2/${repo}/blobs/${wrong}`, { method: 'HEAD' })).status).toBe(404);
    expect((await req(`${base}/v2/${repo}/blobs/${sha(data)}`, { method: 'HEAD' })).status).toBe(404);
    if (!ours) return; // 2.8: no single-POST upload (see above)
    // monolithic too
    const mono = await req(`${base}/v2/${repo}/blobs/uploads/?digest=${wrong}`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: data,
    });
    expect(mono.status).toBe(400);
    expect(errCode(mono)).toBe('DIGEST_INVALID');
    expect((await req(`${base}/v2/${repo}/blobs/${wrong}`, { method: 'HEAD' })).status).toBe(404);
  });

  it('DELETE of an upload session → 204, then its status is 404 BLOB_UPLOAD_UNKNOWN', async () => {
    const start = await req(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    const loc = new URL(start.headers.get('location')!, base).toString();
    expect((await req(loc, { method: 'DELETE' })).status).toBe(204);
    const r = await req(loc);
    expect(r.status).toBe(404);
    expect(errCode(r)).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('cross-repository mount → 201; an unmountable blob → 202 (a new session)', async () => {
    const d = sha(layerA);
    const r = await req(`${base}/v2/conf/other/blobs/uploads/?mount=${d}&from=${repo}`, { method: 'POST' });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toContain(`/v2/conf/other/blobs/${d}`);
    expect(r.headers.get('docker-content-digest')).toBe(d);
    expect((await req(`${base}/v2/conf/other/blobs/${d}`, { method: 'HEAD' })).status).toBe(200);
    const miss = await req(`${base}/v2/conf/other/blobs/uploads/?mount=${sha(rand(5))}&from=${repo}`, {
      method: 'POST',
    });
    expect(miss.status).toBe(202);
    expect(miss.headers.get('location')).toContain('/v2/conf/other/blobs/uploads/');
  });

  it('blob HEAD/GET: headers, bytes, Range → 206, unknown → 404 BLOB_UNKNOWN', async () => {
    const d = sha(layerB);
    const head = await req(`${base}/v2/${repo}/blobs/${d}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(layerB.length));
    expect(head.headers.get('docker-content-digest')).toBe(d);
    const get = await req(`${base}/v2/${repo}/blobs/${d}`);
    expect(get.status).toBe(200);
    expect(Buffer.compare(get.body, layerB)).toBe(0);
    const part = await req(`${base}/v2/${repo}/blobs/${d}`, { headers: { range: 'bytes=100-199' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 100-199/${layerB.length}`);
    expect(Buffer.compare(part.body, layerB.subarray(100, 200))).toBe(0);
    const unknown = await req(`${base}/v2/${repo}/blobs/${sha(rand(9))}`);
    expect(unknown.status).toBe(404);
    expect(errCode(unknown)).toBe('BLOB_UNKNOWN');
  });

  it('manifest PUT with a missing blob → 400 MANIFEST_BLOB_UNKNOWN; invalid JSON → 400 MANIFEST_INVALID', async () => {
    const m = ociManifest(config, [layerA]); // config not pushed yet
    const r = await req(`${base}/v2/${repo}/manifests/missing`, {
      method: 'PUT',
      headers: { 'content-type': OCI_MANIFEST },
      body: m,
    });
    expect(r.status).toBe(400);
    expect(errCode(r)).toBe('MANIFEST_BLOB_UNKNOWN');
    const bad = await req(`${base}/v2/${repo}/manifests/bad`, {
      method: 'PUT',
      headers: { 'content-type': OCI_MANIFEST },
      body: '{"schemaVersion": 2, "mediaType": ',
    });
    expect(bad.status).toBe(400);
    expect(errCode(bad)).toBe('MANIFEST_INVALID');
  });

  it('OCI manifest PUT by tag → 201 with Location and Docker-Content-Digest', async () => {
    await pushBlob(base, repo, config);
    manifest = ociManifest(config, [layerA, layerB]);
    manifestDigest = sha(manifest);
    const r = await req(`${base}/v2/${repo}/manifests/v1`, {
      method: 'PUT',
      headers: { 'content-type': OCI_MANIFEST },
      body: manifest,
    });
    expect(r.status).toBe(201);
    expect(r.headers.get('docker-content-digest')).toBe(manifestDigest);
    expect(r.headers.get('location')).toContain(`/v2/${repo}/manifests/${manifestDigest}`);
  });

  it('manifest PUT by a digest that does not match the body → 400 DIGEST_INVALID', async () => {
    const r = await req(`${base}/v2/${repo}/manifests/${sha(rand(3))}`, {
      method: 'PUT',
      headers: { 'content-type': OCI_MANIFEST },
      body: manifest,
    });
    expect(r.status).toBe(400);
    expect(errCode(r)).toBe('DIGEST_INVALID');
  });

  it('Docker v2 manifest and OCI index: PUT, GET with their media types; index with an unknown child → MANIFEST_BLOB_UNKNOWN', async () => {
    const dcfg = configBlob('docker');
    await pushBlob(base, repo, dcfg);
    const dm = enc({
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { mediaType: DOCKER_CONFIG, digest: sha(dcfg), size: dcfg.length },
      layers: [{ mediaType: DOCKER_LAYER, digest: sha(layerA), size: layerA.length }],
    });
    const p = await req(`${base}/v2/${repo}/manifests/docker`, {
      method: 'PUT',
      headers: { 'content-type': DOCKER_MANIFEST },
      body: dm,
    });
    expect(p.status).toBe(201);
    const g = await req(`${base}/v2/${repo}/manifests/docker`, { headers: { accept: DOCKER_MANIFEST } });
    expect(g.status).toBe(200);
    expect(g.headers.get('content-type')).toBe(DOCKER_MANIFEST);
    expect(Buffer.compare(g.body, dm)).toBe(0);

    const index = enc({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          digest: manifestDigest,
          size: manifest.length,
          platform: { os: 'linux', architecture: 'amd64' },
        },
        {
          mediaType: DOCKER_MANIFEST,
          digest: sha(dm),
          size: dm.length,
          platform: { os: 'linux', architecture: 'arm64' },
        },
      ],
    });
    const pi = await req(`${base}/v2/${repo}/manifests/multi`, {
      method: 'PUT',
      headers: { 'content-type': OCI_INDEX },
      body: index,
    });
    expect(pi.status).toBe(201);
    expect(pi.headers.get('docker-content-digest')).toBe(sha(index));
    const gi = await req(`${base}/v2/${repo}/manifests/${sha(index)}`, { headers: { accept: OCI_INDEX } });
    expect(gi.status).toBe(200);
    expect(gi.headers.get('content-type')).toBe(OCI_INDEX);
    expect(Buffer.compare(gi.body, index)).toBe(0);

    const badIndex = enc({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: sha(rand(4)), size: 100, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    });
    const pb = await req(`${base}/v2/${repo}/manifests/broken`, {
      method: 'PUT',
      headers: { 'content-type': OCI_INDEX },
      body: badIndex,
    });
    expect(pb.status).toBe(400);
    expect(errCode(pb)).toBe('MANIFEST_BLOB_UNKNOWN');
  });

  it('manifest GET/HEAD by tag and digest: Content-Type, Docker-Content-Digest, bytes; unknown → 404 MANIFEST_UNKNOWN', async () => {
    for (const ref of ['v1', manifestDigest]) {
      const g = await req(`${base}/v2/${repo}/manifests/${ref}`, { headers: { accept: OCI_MANIFEST } });
      expect(g.status).toBe(200);
      expect(g.headers.get('content-type')).toBe(OCI_MANIFEST);
      expect(g.headers.get('docker-content-digest')).toBe(manifestDigest);
      expect(Buffer.compare(g.body, manifest)).toBe(0);
      const h = await req(`${base}/v2/${repo}/manifests/${ref}`, { method: 'HEAD', headers: { accept: OCI_MANIFEST } });
      expect(h.status).toBe(200);
      expect(h.headers.get('content-length')).toBe(String(manifest.length));
      expect(h.headers.get('docker-content-digest')).toBe(manifestDigest);
    }
    const u = await req(`${base}/v2/${repo}/manifests/nope`, { headers: { accept: OCI_MANIFEST } });
    expect(u.status).toBe(404);
    expect(errCode(u)).toBe('MANIFEST_UNKNOWN');
  });

  // --- content discovery ----------------------------------------------------------------------

  it('tags list: sorted; unknown repository → 404 NAME_UNKNOWN', async () => {
    const r = await req(`${base}/v2/${repo}/tags/list`);
    expect(r.status).toBe(200);
    const j = r.json();
    expect(j.name).toBe(repo);
    // v1.1 asks for lexical order; distribution 2.8 returns directory order, so sort for it
    expect(ours ? j.tags : [...j.tags].sort()).toEqual(['docker', 'multi', 'v1']);
    const u = await req(`${base}/v2/conf/nothing/tags/list`);
    expect(u.status).toBe(404);
    expect(errCode(u)).toBe('NAME_UNKNOWN');
  });

  it.runIf(ours)('tags list pagination n/last with Link (ours only: not in distribution 2.8)', async () => {
    const r = await req(`${base}/v2/${repo}/tags/list?n=2`);
    expect(r.json().tags).toEqual(['docker', 'multi']);
    expect(r.headers.get('link')).toBe(`</v2/${repo}/tags/list?last=multi&n=2>; rel="next"`);
    const next = await req(`${base}${/<([^>]+)>/.exec(r.headers.get('link')!)![1]}`);
    expect(next.json().tags).toEqual(['v1']);
    expect(next.headers.get('link')).toBeNull();
  });

  it('catalog with pagination: n, last, Link rel="next"', async () => {
    await pushBlob(base, 'conf/zzz', rand(10));
    const zcfg = configBlob('z');
    await pushBlob(base, 'conf/zzz', zcfg);
    const zm = ociManifest(zcfg, []);
    expect(
      (
        await req(`${base}/v2/conf/zzz/manifests/1`, {
          method: 'PUT',
          headers: { 'content-type': OCI_MANIFEST },
          body: zm,
        })
      ).status,
    ).toBe(201);
    const all = await req(`${base}/v2/_catalog`);
    expect(all.status).toBe(200);
    // conf/other holds only a mounted blob: a repository for both (distribution lists dirs with _layers)
    expect(all.json().repositories).toEqual(['conf/app', 'conf/other', 'conf/zzz']);
    const p1 = await req(`${base}/v2/_catalog?n=1`);
    expect(p1.json().repositories).toEqual(['conf/app']);
    const link = p1.headers.get('link');
    expect(link).toMatch(/^<\/v2\/_catalog\?(last=conf%2Fapp&n=1|n=1&last=conf%2Fapp)>; rel="next"$/);
    const p2 = await req(`${base}${/<([^>]+)>/.exec(link!)![1]}`);
    expect(p2.json().repositories).toEqual(['conf/other']);
  });

  it.runIf(ours)(
    'referrers API: OCI-Subject on PUT, index of referrers, artifactType filter (ours only: not in 2.8)',
    async () => {
      const empty = enc('{}');
      await pushBlob(base, repo, empty);
      const mk = (artifactType: string, note: string) =>
        enc({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          artifactType,
          config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(empty), size: 2 },
          layers: [{ mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(empty), size: 2 }],
          subject: { mediaType: OCI_MANIFEST, digest: manifestDigest, size: manifest.length },
          annotations: { note },
        });
      const sig = mk('application/vnd.example.sig', 'sig');
      const sbom = mk('application/vnd.example.sbom', 'sbom');
      for (const m of [sig, sbom]) {
        const r = await req(`${base}/v2/${repo}/manifests/${sha(m)}`, {
          method: 'PUT',
          headers: { 'content-type': OCI_MANIFEST },
          body: m,
        });
        expect(r.status).toBe(201);
        expect(r.headers.get('oci-subject')).toBe(manifestDigest);
      }
      const all = await req(`${base}/v2/${repo}/referrers/${manifestDigest}`);
      expect(all.status).toBe(200);
      expect(all.headers.get('content-type')).toBe(OCI_INDEX);
      const idx = all.json();
      expect(idx.mediaType).toBe(OCI_INDEX);
      expect(idx.manifests.map((m: { digest: string }) => m.digest).sort()).toEqual([sha(sig), sha(sbom)].sort());
      const s = idx.manifests.find((m: { digest: string }) => m.digest === sha(sig));
      expect(s).toEqual({
        mediaType: OCI_MANIFEST,
        digest: sha(sig),
        size: sig.length,
        artifactType: 'application/vnd.example.sig',
        annotations: { note: 'sig' },
      });
      const f = await req(`${base}/v2/${repo}/referrers/${manifestDigest}?artifactType=application/vnd.example.sbom`);
      expect(f.headers.get('oci-filters-applied')).toBe('artifactType');
      expect(f.json().manifests.map((m: { digest: string }) => m.digest)).toEqual([sha(sbom)]);
      const none = await req(`${base}/v2/${repo}/referrers/${sha(rand(3))}`);
      expect(none.status).toBe(200);
      expect(none.json().manifests).toEqual([]);
    },
  );

  it.runIf(ours)('NAME_INVALID for a name outside the grammar; manifests over 4 MiB → 413 (ours only)', async () => {
    const r = await req(`${base}/v2/Bad_Name/tags/list`);
    expect(r.status).toBe(400);
    expect(errCode(r)).toBe('NAME_INVALID');
    const big = new Uint8Array(4 * 1024 * 1024 + 1).fill(32);
    const m = await req(`${base}/v2/${repo}/manifests/big`, {
      method: 'PUT',
      headers: { 'content-type': OCI_MANIFEST },
      body: big,
    });
    expect(m.status).toBe(413);
    expect(errCode(m)).toBe('SIZE_INVALID');
  });

  // --- content management -------------------------------------------------------------------

  it('DELETE manifest by digest → 202, then GET → 404 MANIFEST_UNKNOWN and the tag is gone', async () => {
    const dcfg = configBlob('del');
    await pushBlob(base, repo, dcfg);
    const m = ociManifest(dcfg, [layerA]);
    expect(
      (
        await req(`${base}/v2/${repo}/manifests/todelete`, {
          method: 'PUT',
          headers: { 'content-type': OCI_MANIFEST },
          body: m,
        })
      ).status,
    ).toBe(201);
    const del = await req(`${base}/v2/${repo}/manifests/${sha(m)}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    const g = await req(`${base}/v2/${repo}/manifests/${sha(m)}`, { headers: { accept: OCI_MANIFEST } });
    expect(g.status).toBe(404);
    expect(errCode(g)).toBe('MANIFEST_UNKNOWN');
    expect((await req(`${base}/v2/${repo}/manifests/todelete`, { headers: { accept: OCI_MANIFEST } })).status).toBe(
      404,
    );
    expect((await req(`${base}/v2/${repo}/tags/list`)).json().tags).not.toContain('todelete');
    const again = await req(`${base}/v2/${repo}/manifests/${sha(m)}`, { method: 'DELETE' });
    expect(again.status).toBe(404);
  });

  it.runIf(ours)('DELETE of a tag → 202, the manifest stays (ours only: 2.8 refuses tag deletes)', async () => {
    const d = await req(`${base}/v2/${repo}/manifests/docker`, { method: 'DELETE' });
    expect(d.status).toBe(202);
    expect((await req(`${base}/v2/${repo}/manifests/docker`)).status).toBe(404);
    expect((await req(`${base}/v2/${repo}/tags/list`)).json().tags).toEqual(['multi', 'v1']);
  });

  it('DELETE blob → 202, then HEAD/GET → 404 BLOB_UNKNOWN', async () => {
    const data = rand(1234);
    const d = await pushBlob(base, repo, data);
    const del = await req(`${base}/v2/${repo}/blobs/${d}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    expect((await req(`${base}/v2/${repo}/blobs/${d}`, { method: 'HEAD' })).status).toBe(404);
    const g = await req(`${base}/v2/${repo}/blobs/${d}`);
    expect(g.status).toBe(404);
    expect(errCode(g)).toBe('BLOB_UNKNOWN');
  });
});
