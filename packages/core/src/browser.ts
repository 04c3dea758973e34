/**
 * @stevedore/core for browsers: always the WebAssembly build, loaded asynchronously.
 * Call `await init()` once before using the API. No Node built-ins are imported here.
 */
import { configureBackend } from './api.js';
import type { Backend } from './backend.js';
import { wasmBackend } from './wasm.js';

export * from './api.js';
export type { Backend, BackendKind, DigestAlgorithm, HasherBackend } from './backend.js';
export { DIGEST_ALGORITHMS } from './backend.js';
export { StevedoreError } from './errors.js';
export * from './layers.js';

let ready: Promise<Backend> | undefined;

/**
 * Loads the wasm core. `source` defaults to `stevedore_core.wasm` next to this package's
 * `dist/` (as bundlers resolve `new URL(…, import.meta.url)`); pass a URL, a fetch Response or
 * the bytes to load it from elsewhere.
 */
export function init(source?: URL | string | Response | BufferSource): Promise<Backend> {
  ready ??= (async () => {
    const from = source ?? new URL('../wasm/stevedore_core.wasm', import.meta.url);
    const b =
      typeof from === 'string' || from instanceof URL ? await wasmBackend(fetch(from)) : await wasmBackend(from);
    configureBackend({ backend: b });
    return b;
  })();
  return ready;
}
