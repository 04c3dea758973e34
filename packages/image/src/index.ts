/**
 * @stevedore/image: the image model shared by every stevedore source and sink. References,
 * media types, validated manifests/indexes/configs, platforms, chain IDs, and the `Layer`,
 * `Image` and `Index` interfaces.
 */

export {
  ArchiveError,
  type ArchiveErrorCode,
  DEFAULT_MAX_LAYERS,
  markVerified,
  type VerifiedAs,
  verifiedAs,
} from './archive/io.js';
export type { ReadOptions } from './archive/stored.js';
export type { TarFileOptions } from './archive/tar-file.js';
export { appendLayers, type BuildOptions, layerFromFile } from './builder.js';
export * from './chain.js';
export * from './copy.js';
export {
  DockerArchive,
  type DockerArchiveImage,
  type DockerArchiveWriteOptions,
  writeDockerArchive,
} from './docker-archive.js';
export {
  DEFAULT_MAX_DOCUMENT_BYTES,
  DEFAULT_MAX_JSON_DEPTH,
  type DocumentLimits,
  ImageFormatError,
  type ImageFormatErrorCode,
  parseJsonDocument,
} from './json.js';
export * from './media-types.js';
export type { Image, Index, Layer } from './model.js';
export {
  type ArchiveEntry,
  CONTAINERD_IMAGE_NAME_ANNOTATION,
  type LayoutEntry,
  MAX_INDEX_DEPTH,
  OciLayout,
  OciLayoutReader,
  type OciWriteOptions,
  ociManifestBytes,
  REF_NAME_ANNOTATION,
  writeOciArchive,
} from './oci-layout.js';
export * from './platform.js';
export * from './reference.js';
export * from './schema.js';
