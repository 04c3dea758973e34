/**
 * The contract between the TypeScript API and the Rust core. Two implementations exist: the
 * Node-API addon (`native.ts`) and the WebAssembly module (`wasm.ts`). Both must give identical
 * results for identical inputs; the shared vitest suite runs against each.
 */
export type DigestAlgorithm = 'sha256' | 'sha512';
export const DIGEST_ALGORITHMS: readonly DigestAlgorithm[] = ['sha256', 'sha512'];

export type BackendKind = 'native' | 'wasm';

/** A streaming hasher owned by a backend. `finish` consumes it. */
export interface HasherBackend {
  update(data: Uint8Array): void;
  clone(): HasherBackend;
  /** Returns `algorithm:hex`; the hasher cannot be used afterwards. */
  finish(): string;
}

export interface Backend {
  readonly kind: BackendKind;
  version(): string;
  /** Throws `ERR_INVALID_DIGEST` with the reason. */
  parseDigest(digest: string): { algorithm: DigestAlgorithm; hex: string };
  /** Hashes on the calling thread. */
  hash(algorithm: DigestAlgorithm, data: Uint8Array): string;
  /** Hashes off the JS thread where the backend can (native: libuv pool). */
  hashAsync(algorithm: DigestAlgorithm, data: Uint8Array): Promise<string>;
  createHasher(algorithm: DigestAlgorithm): HasherBackend;
}
