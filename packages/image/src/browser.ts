/**
 * The browser-safe part of @stevedore/image (`@stevedore/image/browser`): references, media
 * types, strict JSON, validated documents, platforms, chain IDs and the model interfaces —
 * everything except the archive and layout readers/writers, which use node:fs.
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
