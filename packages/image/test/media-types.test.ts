import {
  baseMediaType,
  DOCKER_CONFIG,
  DOCKER_LAYER,
  DOCKER_LAYER_FOREIGN,
  DOCKER_LAYER_FOREIGN_GZIP,
  DOCKER_LAYER_GZIP,
  DOCKER_LAYER_ZSTD,
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  DOCKER_SCHEMA1_MANIFEST,
  DOCKER_SCHEMA1_MANIFEST_SIGNED,
  isConfig,
  isIndex,
  isLayer,
  isManifest,
  isNondistributable,
  isSchema1,
  layerCompression,
  layerMediaTypeWith,
  OCI_CONFIG,
  OCI_EMPTY,
  OCI_INDEX,
  OCI_LAYER,
  OCI_LAYER_GZIP,
  OCI_LAYER_NONDISTRIBUTABLE,
  OCI_LAYER_NONDISTRIBUTABLE_GZIP,
  OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
  OCI_LAYER_ZSTD,
  OCI_MANIFEST,
} from '@stevedore/image';
import { describe, expect, it } from 'vitest';

describe('media types', () => {
  it('are the strings the specs define', () => {
    expect(OCI_MANIFEST).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(OCI_INDEX).toBe('application/vnd.oci.image.index.v1+json');
    expect(OCI_CONFIG).toBe('application/vnd.oci.image.config.v1+json');
    expect(OCI_LAYER).toBe('application/vnd.oci.image.layer.v1.tar');
    expect(OCI_LAYER_GZIP).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
    expect(OCI_LAYER_ZSTD).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
    expect(OCI_LAYER_NONDISTRIBUTABLE_GZIP).toBe('application/vnd.oci.image.layer.nondistributable.v1.tar+gzip');
    expect(OCI_EMPTY).toBe('application/vnd.oci.empty.v1+json');
    expect(DOCKER_MANIFEST).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(DOCKER_MANIFEST_LIST).toBe('application/vnd.docker.distribution.manifest.list.v2+json');
    expect(DOCKER_CONFIG).toBe('application/vnd.docker.container.image.v1+json');
    expect(DOCKER_LAYER_GZIP).toBe('application/vnd.docker.image.rootfs.diff.tar.gzip');
    expect(DOCKER_LAYER_FOREIGN_GZIP).toBe('application/vnd.docker.image.rootfs.foreign.diff.tar.gzip');
    expect(DOCKER_SCHEMA1_MANIFEST_SIGNED).toBe('application/vnd.docker.distribution.manifest.v1+prettyjws');
    expect(DOCKER_SCHEMA1_MANIFEST).toBe('application/vnd.docker.distribution.manifest.v1+json');
  });

  it('classify manifests, indexes, configs and schema 1', () => {
    expect([OCI_MANIFEST, DOCKER_MANIFEST].every(isManifest)).toBe(true);
    expect([OCI_INDEX, DOCKER_MANIFEST_LIST].every(isIndex)).toBe(true);
    expect([OCI_CONFIG, DOCKER_CONFIG].every(isConfig)).toBe(true);
    expect([DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_MANIFEST_SIGNED].every(isSchema1)).toBe(true);
    expect(isManifest(OCI_INDEX)).toBe(false);
    expect(isIndex(OCI_MANIFEST)).toBe(false);
    expect(isManifest(DOCKER_SCHEMA1_MANIFEST_SIGNED)).toBe(false);
    expect(isManifest(undefined)).toBe(false);
    expect(isLayer(OCI_CONFIG)).toBe(false);
    // Content-Type headers: parameters and case do not matter
    expect(isManifest(`${OCI_MANIFEST}; charset=utf-8`)).toBe(true);
    expect(isIndex(' Application/VND.OCI.Image.Index.v1+JSON ')).toBe(true);
    expect(baseMediaType('Application/JSON; charset=UTF-8')).toBe('application/json');
  });

  it.each([
    [OCI_LAYER, 'none', false],
    [OCI_LAYER_GZIP, 'gzip', false],
    [OCI_LAYER_ZSTD, 'zstd', false],
    [OCI_LAYER_NONDISTRIBUTABLE, 'none', true],
    [OCI_LAYER_NONDISTRIBUTABLE_GZIP, 'gzip', true],
    [OCI_LAYER_NONDISTRIBUTABLE_ZSTD, 'zstd', true],
    [DOCKER_LAYER, 'none', false],
    [DOCKER_LAYER_GZIP, 'gzip', false],
    [DOCKER_LAYER_ZSTD, 'zstd', false],
    [DOCKER_LAYER_FOREIGN, 'none', true],
    [DOCKER_LAYER_FOREIGN_GZIP, 'gzip', true],
  ] as const)('layer %s: %s, nondistributable %s', (mediaType, compression, nondistributable) => {
    expect(isLayer(mediaType)).toBe(true);
    expect(layerCompression(mediaType)).toBe(compression);
    expect(isNondistributable(mediaType)).toBe(nondistributable);
  });

  it('reads compression from unknown tar-like types and refuses non-layers', () => {
    expect(layerCompression('application/vnd.example.layer.v1.tar+gzip')).toBe('gzip');
    expect(layerCompression('application/vnd.example.thing.tar.zstd')).toBe('zstd');
    expect(layerCompression('application/vnd.example.thing.tar')).toBe('none');
    expect(layerCompression(OCI_CONFIG)).toBeUndefined();
    expect(layerCompression(undefined)).toBeUndefined();
  });

  it('maps a layer type to another compression in the same family', () => {
    expect(layerMediaTypeWith(OCI_LAYER, 'gzip')).toBe(OCI_LAYER_GZIP);
    expect(layerMediaTypeWith(OCI_LAYER_GZIP, 'zstd')).toBe(OCI_LAYER_ZSTD);
    expect(layerMediaTypeWith(DOCKER_LAYER_GZIP, 'none')).toBe(DOCKER_LAYER);
    expect(layerMediaTypeWith(OCI_LAYER_NONDISTRIBUTABLE, 'gzip')).toBe(OCI_LAYER_NONDISTRIBUTABLE_GZIP);
    expect(layerMediaTypeWith(DOCKER_LAYER_FOREIGN_GZIP, 'none')).toBe(DOCKER_LAYER_FOREIGN);
    expect(() => layerMediaTypeWith(DOCKER_LAYER_FOREIGN_GZIP, 'zstd')).toThrow(/no zstd variant/);
    expect(() => layerMediaTypeWith(OCI_CONFIG, 'gzip')).toThrow(/not a layer media type/);
  });
});
