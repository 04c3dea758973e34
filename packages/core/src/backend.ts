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
  /** The native addon's handle, when this hasher lives there (engine calls feed it off-thread). */
  readonly nativeHandle?: unknown;
  /** Feeds `chunks` off the JS thread (native only). */
  updateAsync?(chunks: Uint8Array[]): Promise<void>;
}

export interface Backend extends LayerBackend {
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

/** How a layer marks deletions: OCI `.wh.` files, or overlayfs char 0/0 + opaque xattr. */
export type WhiteoutForm = 'oci' | 'overlay' | 'overlay-user';

export interface TarScanOptions {
  /** Hash each regular file's data (the digest arrives with its `entry-end` event). */
  hash?: DigestAlgorithm | null;
  /** Keep the entries so the scan can become a layer index. */
  collectEntries?: boolean;
  /** Cap on one PAX/GNU extension record (default 1 MiB). */
  maxExtensionSize?: number;
  /** Cap on all header metadata of one entry (default 2 MiB). */
  maxEntryMetadata?: number;
}

/** A streaming tar scanner owned by a backend. */
export interface TarScannerBackend {
  /** Consumes all of `chunk`; data events are views into `chunk`. */
  push(chunk: Uint8Array, withData: boolean): import('./wire.js').TarEvent[];
  /** Ends the input; throws when the archive stopped mid-entry. */
  finish(): import('./wire.js').TarEvent[];
  /** The layer index of the scanned archive (needs `collectEntries`); consumes the scanner. */
  toIndex(form: WhiteoutForm): LayerIndexBackend;
}

/** An immutable layer index owned by a backend (opaque to TS). */
export interface LayerIndexBackend {
  readonly backend: BackendKind;
}

export interface LayerStackBackend {
  resolve(path: Uint8Array): import('./wire.js').Resolution;
  stat(path: Uint8Array, follow: boolean): import('./wire.js').StackStat;
  readdir(path: Uint8Array): string[];
  walk(): import('./wire.js').StackStat[];
}

export type TarFormat = 'pax' | 'gnu' | 'ustar';

/** A deterministic tar writer owned by a backend: bytes out, the caller writes the data. */
export interface TarWriterBackend {
  header(record: Uint8Array): Uint8Array;
  data(chunk: Uint8Array): void;
  endEntry(): Uint8Array;
  finish(): Uint8Array;
}

export interface LayerBackend {
  createTarWriter(format: TarFormat): TarWriterBackend;
  createTarScanner(options: TarScanOptions): TarScannerBackend;
  layerIndexFromEntries(encoded: Uint8Array, form: WhiteoutForm): LayerIndexBackend;
  /** Base layer first; the indexes stay usable. */
  createLayerStack(layers: LayerIndexBackend[]): LayerStackBackend;
}
