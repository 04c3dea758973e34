// Manifests, indexes, configs and descriptors: fixtures built by code, every rule of schema.ts.
import { Digest, sha256 } from '@stevedore/core';
import {
  DOCKER_CONFIG,
  DOCKER_LAYER_GZIP,
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  DOCKER_SCHEMA1_MANIFEST,
  DOCKER_SCHEMA1_MANIFEST_SIGNED,
  ImageFormatError,
  type ImageFormatErrorCode,
  isImageIndex,
  isImageManifest,
  OCI_CONFIG,
  OCI_EMPTY,
  OCI_INDEX,
  OCI_LAYER_GZIP,
  OCI_MANIFEST,
  parseConfig,
  parseDescriptor,
  parseImageIndex,
  parseImageManifest,
  parseManifest,
  parseSchema1Manifest,
  validateDescriptor,
} from '@stevedore/image';
import { describe, expect, it } from 'vitest';

const enc = (s: string) => new TextEncoder().encode(s);
const json = (v: unknown) => enc(JSON.stringify(v));
const digestOf = (s: string) => sha256(enc(s)).toString();

const CONFIG_TEXT = JSON.stringify({
  architecture: 'amd64',
  os: 'linux',
  rootfs: { type: 'layers', diff_ids: [digestOf('layer 0 tar'), digestOf('layer 1 tar')] },
});

function descriptor(mediaType: string, content: string, extra: Record<string, unknown> = {}) {
  return { mediaType, digest: digestOf(content), size: enc(content).length, ...extra };
}

function ociManifest(extra: Record<string, unknown> = {}) {
  return {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: descriptor(OCI_CONFIG, CONFIG_TEXT),
    layers: [descriptor(OCI_LAYER_GZIP, 'layer 0'), descriptor(OCI_LAYER_GZIP, 'layer 1')],
    ...extra,
  };
}

function dockerManifest(extra: Record<string, unknown> = {}) {
  return {
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST,
    config: descriptor(DOCKER_CONFIG, CONFIG_TEXT),
    layers: [descriptor(DOCKER_LAYER_GZIP, 'layer 0')],
    ...extra,
  };
}

function ociIndex(extra: Record<string, unknown> = {}) {
  return {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      descriptor(OCI_MANIFEST, 'amd64 manifest', { platform: { architecture: 'amd64', os: 'linux' } }),
      descriptor(OCI_MANIFEST, 'arm64 manifest', { platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } }),
      descriptor(OCI_MANIFEST, 'attestation', {
        platform: { architecture: 'unknown', os: 'unknown' },
        annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
      }),
    ],
    ...extra,
  };
}

function dockerList(extra: Record<string, unknown> = {}) {
  return {
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST_LIST,
    manifests: [
      descriptor(DOCKER_MANIFEST, 'amd64', { platform: { architecture: 'amd64', os: 'linux' } }),
      descriptor(DOCKER_MANIFEST, 'win', {
        platform: { architecture: 'amd64', os: 'windows', 'os.version': '10.0.17763.1', 'os.features': ['win32k'] },
      }),
    ],
    ...extra,
  };
}

function failure(fn: () => unknown): ImageFormatError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ImageFormatError) return e;
    throw e;
  }
  throw new Error('expected an ImageFormatError');
}

function expectFailure(fn: () => unknown, code: ImageFormatErrorCode, path: string | undefined, message: RegExp) {
  const e = failure(fn);
  expect({ code: e.code, path: e.path }).toEqual({ code, path });
  expect(e.message).toMatch(message);
}

describe('parseManifest: valid documents', () => {
  it('reads an OCI manifest into typed values', () => {
    const m = parseManifest(json(ociManifest({ annotations: { 'org.opencontainers.image.ref.name': 'v1' } })));
    if (!isImageManifest(m)) throw new Error('expected a manifest');
    expect(m.mediaType).toBe(OCI_MANIFEST);
    expect(m.config.digest).toBeInstanceOf(Digest);
    expect(m.config.digest.toString()).toBe(digestOf(CONFIG_TEXT));
    expect(m.layers.map((l) => l.size)).toEqual([7, 7]);
    expect(m.annotations).toEqual({ 'org.opencontainers.image.ref.name': 'v1' });
    // the typed value serializes back to the document (digests as strings)
    expect(JSON.parse(JSON.stringify(m))).toEqual(
      ociManifest({ annotations: { 'org.opencontainers.image.ref.name': 'v1' } }),
    );
  });

  it("infers OCI types when the document has no mediaType, and takes the transport's", () => {
    const { mediaType: _, ...bare } = ociManifest();
    expect(parseManifest(json(bare)).mediaType).toBe(OCI_MANIFEST);
    expect(parseManifest(json(bare), OCI_MANIFEST).mediaType).toBe(OCI_MANIFEST);
    const { mediaType: __, ...bareIndex } = ociIndex();
    expect(parseManifest(json(bareIndex)).mediaType).toBe(OCI_INDEX);
    // generic transport types say nothing
    expect(parseManifest(json(bare), 'application/json').mediaType).toBe(OCI_MANIFEST);
    // parameters on the transport's type are ignored
    expect(parseManifest(json(ociManifest()), `${OCI_MANIFEST}; charset=utf-8`).mediaType).toBe(OCI_MANIFEST);
  });

  it('reads a Docker schema 2 manifest', () => {
    const m = parseImageManifest(json(dockerManifest()), DOCKER_MANIFEST);
    expect(m.mediaType).toBe(DOCKER_MANIFEST);
    expect(m.layers[0]?.mediaType).toBe(DOCKER_LAYER_GZIP);
  });

  it('reads an OCI index and a Docker manifest list', () => {
    const idx = parseImageIndex(json(ociIndex()));
    expect(idx.manifests).toHaveLength(3);
    expect(idx.manifests[1]?.platform).toEqual({ architecture: 'arm64', os: 'linux', variant: 'v8' });
    const list = parseManifest(json(dockerList()), DOCKER_MANIFEST_LIST);
    expect(isImageIndex(list)).toBe(true);
    if (isImageIndex(list)) expect(list.manifests[1]?.platform?.['os.version']).toBe('10.0.17763.1');
  });

  it('reads OCI 1.1 artifacts fields: artifactType, subject, embedded data', () => {
    const m = parseImageManifest(
      json(
        ociManifest({
          artifactType: 'application/vnd.example.sbom.v1+json',
          config: descriptor(OCI_EMPTY, '{}', { data: btoa('{}') }),
          layers: [],
          subject: descriptor(OCI_MANIFEST, 'the image'),
        }),
      ),
    );
    expect(m.artifactType).toBe('application/vnd.example.sbom.v1+json');
    expect(m.subject?.digest.toString()).toBe(digestOf('the image'));
    expect(m.layers).toEqual([]);
  });

  it('keeps unknown fields', () => {
    const m = parseImageManifest(json(ociManifest({ 'x-extra': { a: 1 } })));
    expect(m['x-extra']).toEqual({ a: 1 });
  });
});

describe('parseManifest: media types', () => {
  it('requires the document and the transport to agree', () => {
    expectFailure(
      () => parseManifest(json(ociManifest()), DOCKER_MANIFEST),
      'ERR_MANIFEST_MEDIA_TYPE_MISMATCH',
      'mediaType',
      /media type mismatch: the document says application\/vnd\.oci\.image\.manifest\.v1\+json, the transport says application\/vnd\.docker\.distribution\.manifest\.v2\+json/,
    );
    expectFailure(
      () => parseManifest(json(ociIndex()), OCI_MANIFEST),
      'ERR_MANIFEST_MEDIA_TYPE_MISMATCH',
      'mediaType',
      /mismatch/,
    );
  });

  it('requires mediaType in Docker documents', () => {
    const { mediaType: _, ...bare } = dockerManifest();
    expectFailure(
      () => parseManifest(json(bare), DOCKER_MANIFEST),
      'ERR_MANIFEST_INVALID',
      'mediaType',
      /^image manifest: mediaType: required field is missing$/,
    );
  });

  it('refuses unknown media types', () => {
    expectFailure(
      () => parseManifest(json(ociManifest({ mediaType: 'application/vnd.oci.artifact.manifest.v1+json' }))),
      'ERR_MANIFEST_UNSUPPORTED_MEDIA_TYPE',
      'mediaType',
      /unsupported media type application\/vnd\.oci\.artifact\.manifest\.v1\+json/,
    );
    expectFailure(
      () => parseManifest(json(ociManifest({ mediaType: undefined })), 'application/vnd.example+json'),
      'ERR_MANIFEST_UNSUPPORTED_MEDIA_TYPE',
      undefined,
      /unsupported media type application\/vnd\.example\+json/,
    );
    expectFailure(
      () => parseManifest(json(ociManifest({ mediaType: 5 }))),
      'ERR_MANIFEST_INVALID',
      'mediaType',
      /must be string, got number 5/,
    );
  });

  it('refuses documents that could be read as a manifest or an index (CVE-2021-41190)', () => {
    expectFailure(
      () => parseManifest(json({ ...ociManifest(), manifests: [] })),
      'ERR_MANIFEST_AMBIGUOUS',
      'manifests',
      /an image manifest \(application\/vnd\.oci\.image\.manifest\.v1\+json\) must not have a "manifests" field/,
    );
    expectFailure(
      () => parseManifest(json({ ...ociIndex(), layers: [] })),
      'ERR_MANIFEST_AMBIGUOUS',
      'layers',
      /must not have "config" or "layers"/,
    );
    const { mediaType: _, ...bare } = { ...ociManifest(), manifests: [] };
    expectFailure(() => parseManifest(json(bare)), 'ERR_MANIFEST_AMBIGUOUS', undefined, /has both "manifests"/);
    expectFailure(() => parseManifest(json({ schemaVersion: 2 })), 'ERR_MANIFEST_AMBIGUOUS', undefined, /neither/);
  });

  it('parseImageManifest / parseImageIndex insist on their kind', () => {
    expectFailure(
      () => parseImageManifest(json(ociIndex())),
      'ERR_MANIFEST_UNSUPPORTED_MEDIA_TYPE',
      undefined,
      /expected an image manifest/,
    );
    expectFailure(
      () => parseImageIndex(json(ociManifest())),
      'ERR_MANIFEST_UNSUPPORTED_MEDIA_TYPE',
      undefined,
      /expected an index/,
    );
  });
});

describe('parseManifest: schema 1', () => {
  const schema1 = {
    schemaVersion: 1,
    name: 'library/busybox',
    tag: 'latest',
    architecture: 'amd64',
    fsLayers: [{ blobSum: digestOf('b') }, { blobSum: digestOf('a') }],
    history: [{ v1Compatibility: '{"id":"b"}' }, { v1Compatibility: '{"id":"a"}' }],
  };

  it.each([
    ['its schemaVersion', json(schema1), undefined],
    ['the transport (signed)', json(ociManifest()), DOCKER_SCHEMA1_MANIFEST_SIGNED],
    ['its mediaType', json({ ...schema1, mediaType: DOCKER_SCHEMA1_MANIFEST }), undefined],
  ])('is recognised by %s and refused as read-only', (_, bytes, transport) => {
    const e = failure(() => parseManifest(bytes, transport));
    expect(e.code).toBe('ERR_MANIFEST_SCHEMA1');
    expect(e.message).toMatch(/schema 1 is deprecated and read-only/);
    expect(e.message).toMatch(/not pulled, converted, pushed, saved or signature-verified/);
    expect(e.message).toMatch(/parseSchema1Manifest/);
  });

  it('can be inspected with parseSchema1Manifest', () => {
    const signed = parseSchema1Manifest(
      json({ ...schema1, signatures: [{ header: {}, signature: 'x', protected: 'y' }] }),
    );
    expect(signed.mediaType).toBe(DOCKER_SCHEMA1_MANIFEST_SIGNED);
    expect(signed.signed).toBe(true);
    expect(signed.fsLayers.map((l) => l.blobSum.toString())).toEqual([digestOf('b'), digestOf('a')]);
    const unsigned = parseSchema1Manifest(json(schema1), DOCKER_SCHEMA1_MANIFEST);
    expect(unsigned.mediaType).toBe(DOCKER_SCHEMA1_MANIFEST);
    expect(unsigned.signed).toBe(false);
    expectFailure(
      () => parseSchema1Manifest(json(schema1), OCI_MANIFEST),
      'ERR_MANIFEST_MEDIA_TYPE_MISMATCH',
      undefined,
      /the document is schema 1/,
    );
    expectFailure(
      () => parseSchema1Manifest(json({ ...schema1, fsLayers: [{ blobSum: 'nope' }] })),
      'ERR_MANIFEST_INVALID',
      'fsLayers[0].blobSum',
      /must be a digest/,
    );
  });
});

describe('parseManifest: field errors name the field', () => {
  const layer = (extra: Record<string, unknown>) =>
    ociManifest({ layers: [descriptor(OCI_LAYER_GZIP, 'l0'), { ...descriptor(OCI_LAYER_GZIP, 'l1'), ...extra }] });

  it.each<[string, unknown, string, RegExp]>([
    ['missing config', { ...ociManifest(), config: undefined }, 'config', /required field is missing/],
    ['schemaVersion 3', ociManifest({ schemaVersion: 3 }), 'schemaVersion', /must be 2, got number 3/],
    ['schemaVersion "2"', ociManifest({ schemaVersion: '2' }), 'schemaVersion', /must be integer, got "2"/],
    ['layers not an array', ociManifest({ layers: {} }), 'layers', /must be array, got an object/],
    [
      'a bad digest',
      layer({ digest: 'sha256:xyz!' }),
      'layers[1].digest',
      /must be a digest \(algorithm:encoded.*got "sha256:xyz!"/,
    ],
    ['a short digest', layer({ digest: 'sha256:abc' }), 'layers[1].digest', /sha256 needs 64 hex characters, got 3/],
    [
      'an unsupported algorithm',
      layer({ digest: `blake3:${'a'.repeat(64)}` }),
      'layers[1].digest',
      /unsupported algorithm "blake3"/,
    ],
    ['a negative size', layer({ size: -1 }), 'layers[1].size', /must be >= 0, got number -1/],
    ['a fractional size', layer({ size: 1.5 }), 'layers[1].size', /must be integer, got number 1.5/],
    ['an unsafe size', layer({ size: 2 ** 53 + 2 }), 'layers[1].size', /cannot be represented exactly/],
    ['a missing size', layer({ size: undefined }), 'layers[1].size', /required field is missing/],
    [
      'a bad media type',
      layer({ mediaType: 'not a media type' }),
      'layers[1].mediaType',
      /must be a media type \(type\/subtype\), got "not a media type"/,
    ],
    [
      'a non-string annotation',
      layer({ annotations: { 'org.example.x': 1 } }),
      'layers[1].annotations["org.example.x"]',
      /must be string, got number 1/,
    ],
    ['a bad url', layer({ urls: ['not a url'] }), 'layers[1].urls[0]', /must be a URI/],
    ['bad base64 data', layer({ data: 'not base64!' }), 'layers[1].data', /must be base64/],
    [
      'a platform without os',
      layer({ platform: { architecture: 'amd64' } }),
      'layers[1].platform.os',
      /required field is missing/,
    ],
  ])('%s', (_, doc, path, message) => {
    expectFailure(() => parseManifest(json(doc)), 'ERR_MANIFEST_INVALID', path, message);
  });

  it('names the entry of an index or list', () => {
    const list = dockerList();
    delete (list.manifests[1] as Record<string, unknown>).platform;
    expectFailure(
      () => parseManifest(json(list)),
      'ERR_MANIFEST_INVALID',
      'manifests[1].platform',
      /^manifest list: manifests\[1\]\.platform: required field is missing$/,
    );
  });

  it('refuses keys that differ from a field only by case (Go reads them as that field)', () => {
    const { layers, ...rest } = ociManifest();
    expectFailure(
      () => parseManifest(json({ ...rest, Layers: layers })),
      'ERR_JSON_AMBIGUOUS_KEY',
      undefined,
      /key "Layers" differs from the field "layers" only by case/,
    );
    expectFailure(
      () => parseManifest(json(layerWith({ MediaType: OCI_LAYER_GZIP }))),
      'ERR_JSON_AMBIGUOUS_KEY',
      'layers[0]',
      /"MediaType".*"mediaType"/,
    );
    function layerWith(extra: Record<string, unknown>) {
      return ociManifest({ layers: [{ ...descriptor(OCI_LAYER_GZIP, 'x'), ...extra }] });
    }
  });

  it('verifies embedded data against size and digest', () => {
    const ok = descriptor(OCI_EMPTY, '{}', { data: btoa('{}') });
    expect(validateDescriptor(ok).data).toBe(btoa('{}'));
    expectFailure(
      () => validateDescriptor({ ...ok, data: btoa('{} ') }),
      'ERR_DESCRIPTOR_DATA_MISMATCH',
      'data',
      /embedded data is 3 bytes but size says 2/,
    );
    expectFailure(
      () => validateDescriptor({ ...ok, data: btoa('[]') }),
      'ERR_DESCRIPTOR_DATA_MISMATCH',
      'data',
      /digest mismatch \(expected sha256:44136fa3.*, got sha256:4f53cda1/,
    );
  });

  it('applies the JSON caps', () => {
    expectFailure(
      () => parseManifest(enc('{"schemaVersion":2,"schemaVersion":2}')),
      'ERR_JSON_DUPLICATE_KEY',
      'schemaVersion',
      /duplicate key/,
    );
    expectFailure(
      () => parseManifest(json(ociManifest()), undefined, { maxBytes: 100 }),
      'ERR_DOCUMENT_TOO_LARGE',
      undefined,
      /more than the limit of 100 bytes/,
    );
    const padded = new Uint8Array(4 * 1024 * 1024 + 1).fill(0x20);
    padded.set(json(ociManifest()));
    expectFailure(() => parseManifest(padded), 'ERR_DOCUMENT_TOO_LARGE', undefined, /4194305 bytes/);
    expectFailure(
      () => parseManifest(enc('[]')),
      'ERR_MANIFEST_INVALID',
      undefined,
      /must be a JSON object, got an array/,
    );
  });
});

describe('parseConfig', () => {
  it('reads an OCI config', () => {
    const c = parseConfig(enc(CONFIG_TEXT), OCI_CONFIG);
    expect(c.architecture).toBe('amd64');
    expect(c.rootfs.diff_ids.map(String)).toEqual([digestOf('layer 0 tar'), digestOf('layer 1 tar')]);
    expect(c.rootfs.diff_ids[0]).toBeInstanceOf(Digest);
    expect(JSON.parse(JSON.stringify(c))).toEqual(JSON.parse(CONFIG_TEXT));
  });

  it('reads a Docker config with nulls, extra fields and no layers', () => {
    const docker = {
      architecture: 'arm64',
      variant: 'v8',
      os: 'linux',
      created: '2024-01-01T00:00:00Z',
      docker_version: '20.10.24',
      container_config: { Hostname: '', Cmd: ['/bin/sh', '-c', '#(nop) ENV A=b'] },
      config: {
        Env: ['PATH=/usr/bin'],
        Cmd: null,
        Entrypoint: null,
        Volumes: null,
        OnBuild: null,
        Labels: null,
        ExposedPorts: { '80/tcp': {} },
        Healthcheck: { Test: ['CMD', 'true'], Interval: 30_000_000_000 },
        Image: 'sha256:abc',
      },
      rootfs: { type: 'layers' },
      history: [{ created: '2024-01-01T00:00:00Z', created_by: 'ENV A=b', empty_layer: true }],
    };
    const c = parseConfig(json(docker), DOCKER_CONFIG);
    expect(c.rootfs.diff_ids).toEqual([]);
    expect(c.config?.Cmd).toBeNull();
    expect(c.docker_version).toBe('20.10.24');
    expect(c.config?.Image).toBe('sha256:abc');
    expect(parseConfig(json({ ...docker, rootfs: { type: 'layers', diff_ids: null } })).rootfs.diff_ids).toEqual([]);
  });

  it.each<[string, unknown, ImageFormatErrorCode, string | undefined, RegExp]>([
    ['no rootfs', { architecture: 'amd64', os: 'linux' }, 'ERR_CONFIG_INVALID', 'rootfs', /required field is missing/],
    [
      'no os',
      { architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] } },
      'ERR_CONFIG_INVALID',
      'os',
      /required/,
    ],
    [
      'a wrong rootfs type',
      { architecture: 'amd64', os: 'linux', rootfs: { type: 'tar', diff_ids: [] } },
      'ERR_CONFIG_INVALID',
      'rootfs.type',
      /must be "layers", got "tar"/,
    ],
    [
      'a bad diff_id',
      { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: ['sha256:z!'] } },
      'ERR_CONFIG_INVALID',
      'rootfs.diff_ids[0]',
      /must be a digest/,
    ],
    [
      'a short diff_id',
      { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: ['sha256:ab'] } },
      'ERR_CONFIG_INVALID',
      'rootfs.diff_ids[0]',
      /64 hex characters/,
    ],
    [
      'Env not a list',
      { architecture: 'amd64', os: 'linux', config: { Env: 'A=b' }, rootfs: { type: 'layers' } },
      'ERR_CONFIG_INVALID',
      'config.Env',
      /must be array or null, got "A=b"/,
    ],
    [
      'a non-string label',
      { architecture: 'amd64', os: 'linux', config: { Labels: { a: 1 } }, rootfs: { type: 'layers' } },
      'ERR_CONFIG_INVALID',
      'config.Labels.a',
      /must be string/,
    ],
    [
      'a case variant of Env',
      { architecture: 'amd64', os: 'linux', config: { env: ['A=b'] }, rootfs: { type: 'layers' } },
      'ERR_JSON_AMBIGUOUS_KEY',
      'config',
      /"env" differs from the field "Env"/,
    ],
    [
      'a case variant of rootfs',
      { architecture: 'amd64', os: 'linux', RootFS: {}, rootfs: { type: 'layers' } },
      'ERR_JSON_AMBIGUOUS_KEY',
      undefined,
      /"RootFS"/,
    ],
  ])('refuses %s', (_, doc, code, path, message) => {
    expectFailure(() => parseConfig(json(doc)), code, path, message);
  });

  it('refuses non-config media types', () => {
    expectFailure(
      () => parseConfig(enc(CONFIG_TEXT), OCI_MANIFEST),
      'ERR_CONFIG_UNSUPPORTED_MEDIA_TYPE',
      undefined,
      /unsupported media type/,
    );
  });
});

describe('descriptors', () => {
  it('parseDescriptor reads a descriptor document', () => {
    const d = parseDescriptor(json(descriptor(OCI_MANIFEST, 'm', { annotations: { a: 'b' } })));
    expect(d.digest.toString()).toBe(digestOf('m'));
    expect(d.annotations).toEqual({ a: 'b' });
  });

  it('validateDescriptor names the document it came from', () => {
    const e = failure(() => validateDescriptor({ mediaType: OCI_MANIFEST, size: 1 }, 'index.json manifests[0]'));
    expect(e.code).toBe('ERR_DESCRIPTOR_INVALID');
    expect(e.message).toBe('index.json manifests[0]: digest: required field is missing');
  });
});
