// What registries in the wild do that the reference registry does not (or only on request),
// reproduced against the real registry (`docker-registry`) with a loopback proxy in front that
// injects the quirk: chunked responses without Content-Length and manifests served as
// application/json, text/plain or application/octet-stream (the kind is read from the body);
// indexes with buildx attestation manifests; Docker schema 1 manifests (the real registry still
// converts schema 2 to signed schema 1 for a client that accepts nothing else); 429/503 with
// Retry-After in both forms; connections reset mid-blob with and without Accept-Ranges.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import type http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sha256 } from '@stevedore/core';
import {
  copyImage,
  DOCKER_MANIFEST,
  DOCKER_SCHEMA1_MANIFEST,
  DOCKER_SCHEMA1_MANIFEST_SIGNED,
  type Image,
  OCI_INDEX,
  OCI_MANIFEST,
  ociLayoutSink,
  parseReference,
} from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { type Registry, startRegistry } from '../../../test/harness/index.js';
import { pull, pullImage, RegistryClient, RegistryError, RemoteIndex, registrySink } from '../src/index.js';
import { busyboxImage, collect, type FaultProxy, layerTar, memImage, startProxy } from './fixtures.js';

const { canRun } = useRealComponents({ registry: true, dockerd: false });

const work = mkdtempSync(path.join(tmpdir(), 'sd-registry-quirks-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const enc = new TextEncoder();
const fast = { retry: { baseDelayMs: 10, maxDelayMs: 3000 }, credentials: false as const };
const isManifestGet = (req: http.IncomingMessage) => req.method === 'GET' && /\/manifests\//.test(req.url ?? '');
const isBlobGet = (req: http.IncomingMessage, digest?: string) =>
  req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '') && (!digest || req.url!.includes(digest));

/** Headers of a chunked response: no Content-Length (Node then sends Transfer-Encoding: chunked). */
const chunked =
  (extra: Record<string, string | undefined> = {}) =>
  (h: http.IncomingHttpHeaders): http.IncomingHttpHeaders => {
    const out: http.IncomingHttpHeaders = { ...h };
    delete out['content-length'];
    for (const [k, v] of Object.entries(extra)) {
      if (v === undefined) delete out[k];
      else out[k] = v;
    }
    return out;
  };

describe.skipIf(!canRun)('registry quirks, injected by a proxy in front of the real registry', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  const oci = busyboxImage('quirks\n', 1024 * 1024);
  const docker = memImage([layerTar({ 'd.txt': 'docker schema 2\n' }), layerTar({ 'e.txt': 'second\n' })], {
    docker: true,
  });
  const amd64 = memImage([layerTar({ arch: 'amd64\n' })], { gzip: true, platform: 'linux/amd64' });
  const arm64 = memImage([layerTar({ arch: 'arm64\n' })], { gzip: true, platform: 'linux/arm64' });
  let ociNoType: Uint8Array;
  let index: Uint8Array;
  let indexNoType: Uint8Array;

  /** A buildx attestation manifest (an in-toto layer, an unknown/unknown config). */
  function attestation(): Image {
    const statement = enc.encode(JSON.stringify({ _type: 'https://in-toto.io/Statement/v0.1', subject: [] }));
    const img = memImage([statement], { platform: 'unknown/unknown' });
    const raw = JSON.parse(Buffer.from(img.rawManifest).toString('utf8'));
    raw.layers[0].mediaType = 'application/vnd.in-toto+json';
    raw.layers[0].annotations = { 'in-toto.io/predicate-type': 'https://spdx.dev/Document' };
    const rawManifest = enc.encode(JSON.stringify(raw));
    return {
      ...img,
      digest: sha256(rawManifest),
      rawManifest,
      manifest: { ...img.manifest, layers: [{ ...img.manifest.layers[0]!, mediaType: raw.layers[0].mediaType }] },
    };
  }

  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startProxy(reg.url);
    const c = new RegistryClient(fast);
    const at = (r: string) => parseReference(`${reg.host}/${r}`);
    await copyImage(oci, registrySink(c, at('sd/oci:1')));
    await copyImage(docker, registrySink(c, at('sd/docker:1')));
    // an OCI manifest and an OCI index without the optional mediaType field
    const m = JSON.parse(Buffer.from(oci.rawManifest).toString('utf8'));
    delete m.mediaType;
    ociNoType = enc.encode(JSON.stringify(m));
    await c.putManifest(at('sd/oci:notype'), ociNoType, OCI_MANIFEST);
    // a multi-platform index as buildx pushes it: attestation manifests listed first
    const attAmd = attestation();
    const attArm = attestation();
    for (const [img, tag] of [
      [amd64, 'amd64'],
      [arm64, 'arm64'],
      [attAmd, 'att-amd64'],
      [attArm, 'att-arm64'],
    ] as const) {
      await copyImage(img, registrySink(c, at(`sd/multi:${tag}`)));
    }
    const entry = (img: Image, platform: Record<string, string>, annotations?: Record<string, string>) => ({
      mediaType: OCI_MANIFEST,
      digest: img.digest.toString(),
      size: img.rawManifest.length,
      platform,
      ...(annotations ? { annotations } : {}),
    });
    const unknown = { os: 'unknown', architecture: 'unknown' };
    const attests = (img: Image) => ({
      'vnd.docker.reference.digest': img.digest.toString(),
      'vnd.docker.reference.type': 'attestation-manifest',
    });
    const manifests = [
      entry(attAmd, unknown, attests(amd64)),
      entry(attArm, unknown, attests(arm64)),
      entry(arm64, { os: 'linux', architecture: 'arm64' }),
      entry(amd64, { os: 'linux', architecture: 'amd64' }),
    ];
    index = enc.encode(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));
    indexNoType = enc.encode(JSON.stringify({ schemaVersion: 2, manifests }));
    await c.putManifest(at('sd/multi:1'), index, OCI_INDEX);
    await c.putManifest(at('sd/multi:notype'), indexNoType, OCI_INDEX);
    await c.close();
  }, 60_000);
  afterAll(async () => {
    await proxy?.close();
    await reg?.stop();
  });

  describe('2. chunked responses and wrong manifest Content-Types', () => {
    const cases: [string, string, () => Uint8Array, string][] = [
      ['OCI manifest', 'sd/oci:1', () => oci.rawManifest, OCI_MANIFEST],
      ['OCI manifest without mediaType', 'sd/oci:notype', () => ociNoType, OCI_MANIFEST],
      ['Docker schema 2 manifest', 'sd/docker:1', () => docker.rawManifest, DOCKER_MANIFEST],
      ['OCI index', 'sd/multi:1', () => index, OCI_INDEX],
      ['OCI index without mediaType', 'sd/multi:notype', () => indexNoType, OCI_INDEX],
    ];
    for (const contentType of [
      'application/json',
      'text/plain; charset=utf-8',
      'application/octet-stream',
      undefined,
    ]) {
      it(`manifests served chunked as ${contentType ?? 'no Content-Type'}, without Docker-Content-Digest: kind from the body`, async () => {
        const c = new RegistryClient(fast);
        proxy.fault = (req, _res, forward) => {
          if (!isManifestGet(req)) return false;
          forward(undefined, { headers: chunked({ 'content-type': contentType, 'docker-content-digest': undefined }) });
          return true;
        };
        proxy.seen = [];
        try {
          for (const [, repoTag, raw, mediaType] of cases) {
            const m = await c.getManifest(parseReference(`${proxy.host}/${repoTag}`));
            expect(m.mediaType).toBe(mediaType);
            expect(m.digest.equals(sha256(raw()))).toBe(true);
            // and by digest: checked against the bytes
            const byDigest = await c.getManifest(parseReference(`${proxy.host}/${repoTag.split(':')[0]}@${m.digest}`));
            expect(byDigest.mediaType).toBe(mediaType);
          }
        } finally {
          proxy.fault = undefined;
          await c.close();
        }
      });
    }

    it('HEAD of a manifest served as application/json without Content-Length: kind and size unknown, digest known', async () => {
      const c = new RegistryClient(fast);
      proxy.fault = (req, _res, forward) => {
        if (req.method !== 'HEAD' || !req.url?.includes('/manifests/')) return false;
        forward(undefined, { headers: chunked({ 'content-type': 'application/json' }) });
        return true;
      };
      try {
        const h = await c.headManifest(parseReference(`${proxy.host}/sd/oci:1`));
        expect(h).toEqual({ digest: oci.digest, mediaType: undefined, size: undefined });
        proxy.fault = undefined;
        const plain = await c.headManifest(parseReference(`${proxy.host}/sd/oci:1`));
        expect(plain).toEqual({ digest: oci.digest, mediaType: OCI_MANIFEST, size: oci.rawManifest.length });
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });

    it('a whole pull with chunked manifests and blobs (no Content-Length anywhere), verified', async () => {
      const c = new RegistryClient(fast);
      proxy.fault = (req, _res, forward) => {
        if (req.method !== 'GET' || !req.url?.startsWith('/v2/sd/')) return false;
        forward(undefined, { headers: chunked(isManifestGet(req) ? { 'content-type': 'application/json' } : {}) });
        return true;
      };
      try {
        const pulled = await pullImage(c, `${proxy.host}/sd/oci:1`);
        expect(pulled.digest.equals(oci.digest)).toBe(true);
        const dir = path.join(work, 'layout-chunked');
        await copyImage(pulled, ociLayoutSink(dir));
        for (const l of oci.layers) {
          const p = path.join(dir, 'blobs', 'sha256', l.digest.hex);
          expect(existsSync(p)).toBe(true);
        }
        expect((await collect(pulled.layers[1]!.uncompressed())).length).toBeGreaterThan(0);
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });

    it('a chunked blob whose connection drops is resumed (the chunked framing tells a drop from the end)', async () => {
      const c = new RegistryClient(fast);
      const layer = oci.layers[2]!;
      let n = 0;
      proxy.seen = [];
      proxy.fault = (req, _res, forward) => {
        if (!isBlobGet(req, layer.digest.toString())) return false;
        forward(undefined, { headers: chunked(), ...(n++ === 0 ? { dropAfter: 300_000 } : {}) });
        return true;
      };
      try {
        const bytes = await collect(c.fetchBlob(parseReference(`${proxy.host}/sd/oci:1`), layer.digest, layer.size));
        expect(sha256(bytes).equals(layer.digest)).toBe(true);
        expect(n).toBe(2);
        const ranges = proxy.seen.filter((s) => s.url.includes('/blobs/')).map((s) => s.headers.range);
        expect(ranges).toEqual([undefined, expect.stringMatching(new RegExp(`^bytes=[1-9]\\d*-${layer.size - 1}$`))]);
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });
  });

  describe('3. an index with attestation manifests', () => {
    it('a default pull on linux/amd64 picks the amd64 image, never an attestation', async () => {
      const c = new RegistryClient(fast);
      try {
        const idx = await pull(c, parseReference(`${proxy.host}/sd/multi:1`));
        expect(idx).toBeInstanceOf(RemoteIndex);
        expect((idx as RemoteIndex).manifests[0]!.annotations?.['vnd.docker.reference.type']).toBe(
          'attestation-manifest',
        );
        if (process.arch === 'x64') {
          const img = await pullImage(c, `${proxy.host}/sd/multi:1`);
          expect(img.digest.equals(amd64.digest)).toBe(true);
        }
        for (const [platform, want] of [
          ['linux/amd64', amd64],
          ['linux/arm64', arm64],
          [{ os: 'linux', architecture: 'amd64' }, amd64],
        ] as const) {
          const img = await pullImage(c, `${proxy.host}/sd/multi:1`, { platform });
          expect(img.digest.equals(want.digest)).toBe(true);
          expect(img.config.architecture).toBe(want.config.architecture);
        }
        // the index without a mediaType, served as application/json, works the same
        proxy.fault = (req, _res, forward) => {
          if (!isManifestGet(req)) return false;
          forward(undefined, { headers: chunked({ 'content-type': 'application/json' }) });
          return true;
        };
        const img = await pullImage(c, `${proxy.host}/sd/multi:notype`, { platform: 'linux/amd64' });
        expect(img.digest.equals(amd64.digest)).toBe(true);
        // a platform only attestations claim is not found (attestations are not images)
        const e = await pullImage(c, `${proxy.host}/sd/multi:1`, { platform: 'linux/s390x' }).catch(
          (x) => x as RegistryError,
        );
        expect((e as RegistryError).code).toBe('ERR_PLATFORM_NOT_FOUND');
        expect((e as RegistryError).message).toContain('linux/s390x');
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });
  });

  describe('4. Docker schema 1 manifests', () => {
    const expectSchema1 = (e: unknown, ref: string, mediaType: string) => {
      expect(e).toBeInstanceOf(RegistryError);
      const r = e as RegistryError;
      expect(r.code).toBe('ERR_MANIFEST_SCHEMA1');
      expect(r.message).toContain(ref);
      expect(r.message).toContain(mediaType);
      expect(r.message).toMatch(/schema 1/);
      // what to do about it
      expect(r.hint).toMatch(/push the image again/);
    };

    it('the real registry converting schema 2 to signed schema 1 (v1+prettyjws): a clear error, not a digest mismatch', async () => {
      const c = new RegistryClient(fast);
      // a registry that has only schema 1: the proxy asks the real registry for nothing else
      proxy.fault = (req, _res, forward) => {
        if (!isManifestGet(req)) return false;
        req.headers.accept = DOCKER_SCHEMA1_MANIFEST_SIGNED;
        forward();
        return true;
      };
      proxy.seen = [];
      try {
        const ref = `${proxy.host}/sd/docker:1`;
        const e = await c.getManifest(parseReference(ref)).catch((x) => x);
        expectSchema1(e, ref, DOCKER_SCHEMA1_MANIFEST_SIGNED);
        // really schema 1 from the registry: signed, and the registry's digest is of the unsigned payload
        const raw = await fetch(`${reg.url}/v2/sd/docker/manifests/1`, {
          headers: { accept: DOCKER_SCHEMA1_MANIFEST_SIGNED },
        });
        expect(raw.headers.get('content-type')).toBe(DOCKER_SCHEMA1_MANIFEST_SIGNED);
        const body = await raw.json();
        expect(body.schemaVersion).toBe(1);
        expect(body.signatures.length).toBeGreaterThan(0);
        // a pull fails the same way
        expectSchema1(await pullImage(c, ref).catch((x) => x), ref, DOCKER_SCHEMA1_MANIFEST_SIGNED);
        // served as application/json the body tells
        proxy.fault = (req, _res, forward) => {
          if (!isManifestGet(req)) return false;
          req.headers.accept = DOCKER_SCHEMA1_MANIFEST_SIGNED;
          forward(undefined, { headers: chunked({ 'content-type': 'application/json' }) });
          return true;
        };
        expectSchema1(await c.getManifest(parseReference(ref)).catch((x) => x), ref, 'schemaVersion 1');
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });

    it('unsigned schema 1 (v1+json)', async () => {
      const c = new RegistryClient(fast);
      const layer = docker.layers[0]!;
      const unsigned = JSON.stringify({
        schemaVersion: 1,
        name: 'sd/docker',
        tag: 'v1',
        architecture: 'amd64',
        fsLayers: [{ blobSum: layer.digest.toString() }],
        history: [{ v1Compatibility: JSON.stringify({ id: 'a'.repeat(64) }) }],
      });
      proxy.fault = (req, res) => {
        if (!isManifestGet(req)) return false;
        res.writeHead(200, { 'content-type': DOCKER_SCHEMA1_MANIFEST });
        res.end(unsigned);
        return true;
      };
      try {
        const ref = `${proxy.host}/sd/docker:v1`;
        expectSchema1(await c.getManifest(parseReference(ref)).catch((x) => x), ref, DOCKER_SCHEMA1_MANIFEST);
        const byDigest = `${proxy.host}/sd/docker@${sha256(enc.encode(unsigned))}`;
        expectSchema1(await pullImage(c, byDigest).catch((x) => x), byDigest, DOCKER_SCHEMA1_MANIFEST);
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });
  });

  describe('6. Retry-After and connections reset mid-blob', () => {
    it('429 with an HTTP-date Retry-After on a manifest, 503 with Retry-After seconds on a blob: waited for, then success', async () => {
      const c = new RegistryClient(fast);
      const layer = oci.layers[1]!;
      let manifest429 = 0;
      let blob503 = 0;
      proxy.fault = (req, res) => {
        if (isManifestGet(req) && manifest429++ === 0) {
          // HTTP-dates have whole seconds: at least 1 s from now
          res.writeHead(429, {
            'retry-after': new Date(Date.now() + 2000).toUTCString(),
            'content-type': 'application/json',
          });
          res.end(JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'pull rate limit' }] }));
          return true;
        }
        if (isBlobGet(req, layer.digest.toString()) && blob503++ === 0) {
          res.writeHead(503, { 'retry-after': '1' });
          res.end('<html>Service Unavailable</html>');
          return true;
        }
        return false;
      };
      try {
        let t0 = Date.now();
        const m = await c.getManifest(parseReference(`${proxy.host}/sd/oci:1`));
        expect(m.digest.equals(oci.digest)).toBe(true);
        expect(manifest429).toBe(2);
        expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
        t0 = Date.now();
        const bytes = await collect(c.fetchBlob(parseReference(`${proxy.host}/sd/oci:1`), layer.digest, layer.size));
        expect(sha256(bytes).equals(layer.digest)).toBe(true);
        expect(blob503).toBe(2);
        expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });

    it('a Retry-After beyond the cap waits the cap; when retries run out the error says so', async () => {
      const c = new RegistryClient({ ...fast, retry: { retries: 2, baseDelayMs: 10, maxDelayMs: 300 } });
      let n = 0;
      proxy.fault = (req, res) => {
        if (!isManifestGet(req)) return false;
        n++;
        res.writeHead(429, { 'retry-after': '3600', 'content-type': 'application/json' });
        res.end(
          JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'You have reached your pull rate limit' }] }),
        );
        return true;
      };
      try {
        const t0 = Date.now();
        const e = await c.getManifest(parseReference(`${proxy.host}/sd/oci:1`)).catch((x) => x as RegistryError);
        const took = Date.now() - t0;
        expect(n).toBe(3);
        expect(took).toBeGreaterThanOrEqual(550);
        expect(took).toBeLessThan(3000);
        expect((e as RegistryError).code).toBe('ERR_REGISTRY_RATE_LIMITED');
        expect((e as RegistryError).has('TOOMANYREQUESTS')).toBe(true);
        expect((e as RegistryError).message).toContain(`${proxy.host}/sd/oci`);
        // a Retry-After that is neither seconds nor a date: the normal backoff, not a busy loop
        expect(c.transport.delayFor(3, 'soon')).toBeGreaterThan(0);
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });

    it('reset mid-blob by a server advertising Accept-Ranges: resumed with Range (after a 503 on the resume), verified', async () => {
      const c = new RegistryClient(fast);
      const layer = oci.layers[2]!;
      let n = 0;
      proxy.seen = [];
      proxy.fault = (req, res, forward) => {
        if (!isBlobGet(req, layer.digest.toString())) return false;
        n++;
        if (n === 1) forward(undefined, { dropAfter: 400_000 });
        else if (n === 2) {
          res.writeHead(503, { 'retry-after': '0' });
          res.end();
        } else forward();
        return true;
      };
      try {
        const bytes = await collect(c.fetchBlob(parseReference(`${proxy.host}/sd/oci:1`), layer.digest, layer.size));
        expect(sha256(bytes).equals(layer.digest)).toBe(true);
        const blobGets = proxy.seen.filter((s) => s.url.includes(layer.digest.toString()));
        const [first, resume, again] = blobGets.map((s) => s.headers.range);
        expect(blobGets.length).toBe(3);
        expect(first).toBeUndefined();
        expect(resume).toMatch(new RegExp(`^bytes=[1-9]\\d*-${layer.size - 1}$`));
        expect(again).toBe(resume); // the 503 is retried with the same Range
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });

    it('reset mid-blob by a server without Accept-Ranges: restarted from zero (no Range), verified', async () => {
      const c = new RegistryClient(fast);
      const layer = oci.layers[2]!;
      let n = 0;
      proxy.seen = [];
      proxy.fault = (req, res, forward) => {
        if (!isBlobGet(req, layer.digest.toString())) return false;
        if (req.headers.range) {
          // would a server that did not advertise ranges be asked for one, it fails the request
          res.writeHead(416);
          res.end();
          return true;
        }
        forward(undefined, {
          headers: chunked({ 'accept-ranges': undefined }),
          ...(n++ === 0 ? { dropAfter: 400_000 } : {}),
        });
        return true;
      };
      try {
        const bytes = await collect(c.fetchBlob(parseReference(`${proxy.host}/sd/oci:1`), layer.digest, layer.size));
        expect(sha256(bytes).equals(layer.digest)).toBe(true);
        const blobGets = proxy.seen.filter((s) => s.url.includes(layer.digest.toString()));
        expect(blobGets.map((s) => s.headers.range)).toEqual([undefined, undefined]);
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });

    it('a resume answered 416 (the server will not do ranges after all) restarts from zero', async () => {
      const c = new RegistryClient(fast);
      const layer = oci.layers[2]!;
      let n = 0;
      proxy.seen = [];
      proxy.fault = (req, res, forward) => {
        if (!isBlobGet(req, layer.digest.toString())) return false;
        if (req.headers.range) {
          res.writeHead(416, { 'content-range': `bytes */${layer.size}` });
          res.end();
          return true;
        }
        forward(undefined, n++ === 0 ? { dropAfter: 400_000 } : {});
        return true;
      };
      try {
        const bytes = await collect(c.fetchBlob(parseReference(`${proxy.host}/sd/oci:1`), layer.digest, layer.size));
        expect(sha256(bytes).equals(layer.digest)).toBe(true);
        const blobGets = proxy.seen.filter((s) => s.url.includes(layer.digest.toString()));
        const ranges = blobGets.map((s) => s.headers.range);
        expect(ranges).toEqual([undefined, expect.stringMatching(/^bytes=[1-9]/), undefined]);
      } finally {
        proxy.fault = undefined;
        await c.close();
      }
    });
  });
});
