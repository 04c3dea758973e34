/**
 * @stevedore/image: the image model shared by every stevedore source and sink. References,
 * media types, validated manifests/indexes/configs, platforms, chain IDs, and the `Layer`,
 * `Image` and `Index` interfaces.
 */
export * from './chain.js';
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
export * from './platform.js';
export * from './reference.js';
export * from './schema.js';
