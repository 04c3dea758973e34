/**
 * @stevedore/core for Node: the native addon when it loads, the WebAssembly build otherwise
 * or when `STEVEDORE_BACKEND=wasm` (`native` makes a missing addon an error).
 */
import { createReadStream, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { backend, configureBackend, Digest, Hasher } from './api.js';
import type { Backend, DigestAlgorithm } from './backend.js';
import { asStevedoreError, StevedoreError } from './errors.js';
import { collectListing, listTarStream, type TarListing } from './layers.js';
import { loadNativeAddon, type NativeAddon, nativeBackend } from './native.js';
import { wasmBackendSync } from './wasm.js';
import { decodeTarEvents } from './wire.js';

export * from './api.js';
export type { Backend, BackendKind, DigestAlgorithm, HasherBackend } from './backend.js';
export { DIGEST_ALGORITHMS } from './backend.js';
export {
  type ApplyLayerOptions,
  type ApplyLayerReport,
  appendStream,
  appendToFile,
  applyLayer,
  type CreateLayerOptions,
  type CreateLayerReport,
  canApplyWhileWriting,
  createLayer,
  DIRECT_IO_ALIGN,
  type FlattenLayer,
  type FlattenOptions,
  flattenLayers,
  GrowingFile,
  hasNativeEngine,
  type LayerProgress,
  type LayerWarning,
  openForDirectWrite,
  scanTree,
  type TreeEntry,
  verifyLayerFile,
  zstdDecompress,
} from './engine.js';
export { StevedoreError } from './errors.js';
export * from './layers.js';

const wasmPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'wasm', 'stevedore_core.wasm');
let nativeAddon: NativeAddon | undefined;

/** Loads the WebAssembly build synchronously from this package's `wasm/` folder. */
export function loadWasmBackend(): Backend {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = new Uint8Array(readFileSync(wasmPath));
  } catch (e) {
    throw new StevedoreError('ERR_WASM_LOAD', `cannot read ${wasmPath}: ${(e as Error).message} (run the build)`);
  }
  return wasmBackendSync(new WebAssembly.Module(bytes));
}

/** Loads the native addon; throws `ERR_NATIVE_LOAD` with the reason when it cannot. */
export function loadNativeBackend(): Backend {
  const loaded = loadNativeAddon();
  if ('error' in loaded) throw new StevedoreError('ERR_NATIVE_LOAD', loaded.error);
  nativeAddon = loaded.addon;
  return nativeBackend(loaded.addon);
}

function selectBackend(): Backend {
  const wanted = process.env.STEVEDORE_BACKEND;
  if (wanted === 'wasm') return loadWasmBackend();
  if (wanted === 'native') return loadNativeBackend();
  if (wanted && wanted !== 'auto') {
    throw new StevedoreError('ERR_INVALID_ARG_VALUE', `STEVEDORE_BACKEND must be native, wasm or auto, got ${wanted}`);
  }
  try {
    return loadNativeBackend();
  } catch {
    return loadWasmBackend();
  }
}

configureBackend({ loader: selectBackend });

/** Use a specific backend from now on (tests run the same suite against each). */
export function useBackend(kind: 'native' | 'wasm' | Backend): Backend {
  const b = typeof kind === 'object' ? kind : kind === 'native' ? loadNativeBackend() : loadWasmBackend();
  configureBackend({ backend: b, loader: selectBackend });
  return b;
}

/**
 * Hashes a file: natively it is read and hashed on libuv's pool in one call; with WASM it is
 * streamed through a hasher. Memory stays flat either way.
 */
export async function hashFile(
  path: string,
  algorithm: DigestAlgorithm = 'sha256',
): Promise<{ digest: Digest; size: number }> {
  const b = backend();
  if (b.kind === 'native' && nativeAddon) {
    const r = await nativeBackend(nativeAddon).hashFile(algorithm, path);
    return { digest: Digest.fromCore(r.digest), size: r.size };
  }
  const h = new Hasher(algorithm);
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  } catch (e) {
    throw new StevedoreError('ERR_IO', `hash ${path}: ${(e as Error).message}`, { cause: e });
  }
  return { digest: h.digest(), size: h.size };
}

/**
 * Lists a tar file (optionally hashing each regular file). Natively the file is read and
 * parsed on libuv's pool in one call; with WASM it is streamed through the reader.
 */
export async function listTarFile(path: string, options: { hash?: DigestAlgorithm } = {}): Promise<TarListing[]> {
  const b = backend();
  if (b.kind === 'native' && nativeAddon) {
    let encoded: Uint8Array;
    try {
      encoded = await nativeAddon.tarScanFile(path, options.hash ?? null);
    } catch (e) {
      throw asStevedoreError(e);
    }
    const out: TarListing[] = [];
    collectListing(decodeTarEvents(encoded, undefined, [], true), out);
    return out;
  }
  try {
    return await listTarStream(createReadStream(path, { highWaterMark: 1 << 20 }), options);
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT' || (e as { syscall?: string }).syscall) {
      throw new StevedoreError('ERR_IO', `read ${path}: ${(e as Error).message}`, { cause: e });
    }
    throw e;
  }
}
