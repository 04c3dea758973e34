/**
 * Media types of image manifests, indexes, configs and layers (OCI image-spec 1.1 and Docker's
 * image manifest v2 schema 2 / schema 1), and helpers that classify them.
 *
 * Comparisons ignore media-type parameters and case (`Content-Type` headers may carry
 * `; charset=utf-8`); the constants are the exact strings written into documents.
 */

// OCI image-spec
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_DESCRIPTOR = 'application/vnd.oci.descriptor.v1+json';
export const OCI_LAYOUT_HEADER = 'application/vnd.oci.layout.header.v1+json';
/** The empty JSON blob `{}` (OCI 1.1), used as the config of artifacts. */
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const OCI_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
/** Deprecated by OCI 1.1: layers that must not be pushed to other registries. */
export const OCI_LAYER_NONDISTRIBUTABLE = 'application/vnd.oci.image.layer.nondistributable.v1.tar';
export const OCI_LAYER_NONDISTRIBUTABLE_GZIP = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';
export const OCI_LAYER_NONDISTRIBUTABLE_ZSTD = 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd';

// Docker image manifest v2, schema 2
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
/** Windows base layers that registries must not store (downloaded from the descriptor's `urls`). */
export const DOCKER_LAYER_FOREIGN_GZIP = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';
/** Uncompressed Docker layer (containerd writes it; Docker's own pushes are gzip). */
export const DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar';
export const DOCKER_LAYER_FOREIGN = 'application/vnd.docker.image.rootfs.foreign.diff.tar';
export const DOCKER_LAYER_ZSTD = 'application/vnd.docker.image.rootfs.diff.tar.zstd';
export const DOCKER_PLUGIN_CONFIG = 'application/vnd.docker.plugin.v1+json';

// Docker image manifest v2, schema 1 (deprecated; read-only here)
/** Schema 1 with a JWS signature (what registries serve). */
export const DOCKER_SCHEMA1_MANIFEST_SIGNED = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
/** Schema 1 without a signature. */
export const DOCKER_SCHEMA1_MANIFEST = 'application/vnd.docker.distribution.manifest.v1+json';

/** Media types of image manifests (one platform). */
export const MANIFEST_MEDIA_TYPES = [OCI_MANIFEST, DOCKER_MANIFEST] as const;
/** Media types of indexes (multi-platform lists). */
export const INDEX_MEDIA_TYPES = [OCI_INDEX, DOCKER_MANIFEST_LIST] as const;
export const SCHEMA1_MEDIA_TYPES = [DOCKER_SCHEMA1_MANIFEST_SIGNED, DOCKER_SCHEMA1_MANIFEST] as const;
export const CONFIG_MEDIA_TYPES = [OCI_CONFIG, DOCKER_CONFIG] as const;

export type ImageManifestMediaType = (typeof MANIFEST_MEDIA_TYPES)[number];
export type ImageIndexMediaType = (typeof INDEX_MEDIA_TYPES)[number];
export type ConfigMediaType = (typeof CONFIG_MEDIA_TYPES)[number];

/** The compression of a layer's bytes as stored and transferred. */
export type Compression = 'none' | 'gzip' | 'zstd';

interface LayerInfo {
  compression: Compression;
  /** Must not be pushed to other registries (OCI nondistributable, Docker foreign). */
  nondistributable: boolean;
  oci: boolean;
}

const LAYERS: ReadonlyMap<string, LayerInfo> = new Map([
  [OCI_LAYER, { compression: 'none', nondistributable: false, oci: true }],
  [OCI_LAYER_GZIP, { compression: 'gzip', nondistributable: false, oci: true }],
  [OCI_LAYER_ZSTD, { compression: 'zstd', nondistributable: false, oci: true }],
  [OCI_LAYER_NONDISTRIBUTABLE, { compression: 'none', nondistributable: true, oci: true }],
  [OCI_LAYER_NONDISTRIBUTABLE_GZIP, { compression: 'gzip', nondistributable: true, oci: true }],
  [OCI_LAYER_NONDISTRIBUTABLE_ZSTD, { compression: 'zstd', nondistributable: true, oci: true }],
  [DOCKER_LAYER, { compression: 'none', nondistributable: false, oci: false }],
  [DOCKER_LAYER_GZIP, { compression: 'gzip', nondistributable: false, oci: false }],
  [DOCKER_LAYER_ZSTD, { compression: 'zstd', nondistributable: false, oci: false }],
  [DOCKER_LAYER_FOREIGN, { compression: 'none', nondistributable: true, oci: false }],
  [DOCKER_LAYER_FOREIGN_GZIP, { compression: 'gzip', nondistributable: true, oci: false }],
] satisfies [string, LayerInfo][]);

/** `type/subtype` without parameters, lowercased: `Application/JSON; charset=utf-8` → `application/json`. */
export function baseMediaType(mediaType: string): string {
  const semi = mediaType.indexOf(';');
  return (semi >= 0 ? mediaType.slice(0, semi) : mediaType).trim().toLowerCase();
}

function inList(list: readonly string[], mediaType: string | undefined): boolean {
  return mediaType !== undefined && list.includes(baseMediaType(mediaType));
}

/** An OCI image index or a Docker manifest list. */
export function isIndex(mediaType: string | undefined): boolean {
  return inList(INDEX_MEDIA_TYPES, mediaType);
}

/** An OCI image manifest or a Docker schema 2 manifest (not schema 1, not an index). */
export function isManifest(mediaType: string | undefined): boolean {
  return inList(MANIFEST_MEDIA_TYPES, mediaType);
}

/** A Docker schema 1 manifest, signed or not. */
export function isSchema1(mediaType: string | undefined): boolean {
  return inList(SCHEMA1_MEDIA_TYPES, mediaType);
}

/** An OCI or Docker image config. */
export function isConfig(mediaType: string | undefined): boolean {
  return inList(CONFIG_MEDIA_TYPES, mediaType);
}

/** One of the OCI or Docker layer media types above. */
export function isLayer(mediaType: string | undefined): boolean {
  return mediaType !== undefined && LAYERS.has(baseMediaType(mediaType));
}

/** Nondistributable (OCI) or foreign (Docker) layer: must not be pushed to another registry. */
export function isNondistributable(mediaType: string | undefined): boolean {
  return mediaType !== undefined && LAYERS.get(baseMediaType(mediaType))?.nondistributable === true;
}

/**
 * The compression of a layer media type: `none`, `gzip` or `zstd`; undefined when it is not a
 * known layer type. (An OCI `+gzip`/`+zstd` suffix on an unknown tar-like type is also read.)
 */
export function layerCompression(mediaType: string | undefined): Compression | undefined {
  if (mediaType === undefined) return undefined;
  const base = baseMediaType(mediaType);
  const known = LAYERS.get(base);
  if (known) return known.compression;
  if (/\.tar\+gzip$/.test(base) || /\.tar\.gzip$/.test(base)) return 'gzip';
  if (/\.tar\+zstd$/.test(base) || /\.tar\.zstd$/.test(base)) return 'zstd';
  if (/\.tar$/.test(base)) return 'none';
  return undefined;
}

/**
 * The layer media type with the given compression, in the same family (OCI or Docker) and
 * distributability as `mediaType`. Throws for media types that are not layers, and for Docker
 * foreign layers with zstd (no such type exists).
 */
export function layerMediaTypeWith(mediaType: string, compression: Compression): string {
  const info = LAYERS.get(baseMediaType(mediaType));
  if (!info) throw new TypeError(`not a layer media type: ${mediaType}`);
  for (const [type, other] of LAYERS) {
    if (
      other.oci === info.oci &&
      other.nondistributable === info.nondistributable &&
      other.compression === compression
    ) {
      return type;
    }
  }
  throw new TypeError(`no ${compression} variant of ${mediaType}`);
}
