/**
 * @stevedore/server: a registry server (OCI distribution-spec v1.1 + Docker registry v2) on
 * node:http, storing in the reference registry's filesystem layout.
 */
export { type GarbageCollectOptions, type GarbageCollectResult, garbageCollect } from './gc.js';
export { type Htpasswd, loadHtpasswd, parseHtpasswd } from './htpasswd.js';
export { DEFAULT_UPLOAD_MAX_AGE_MS, type PurgeUploadsOptions, parseDuration, purgeUploads } from './purge.js';
export {
  ApiError,
  isValidRepositoryName,
  mediaTypeOf,
  type RunningServer,
  type ServerOptions,
  startServer,
} from './server.js';
export { type StaticSite, staticSite } from './static.js';
export { type DigestParts, parseDigest, Storage, StorageError, type StorageOptions } from './storage.js';
export {
  type Access,
  libtrustKeyId,
  TokenAuth,
  type TokenAuthOptions,
  type TokenDecision,
  TokenError,
} from './token.js';
