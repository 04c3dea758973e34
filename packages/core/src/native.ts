import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type {
  Backend,
  DigestAlgorithm,
  HasherBackend,
  LayerIndexBackend,
  LayerStackBackend,
  TarScannerBackend,
  TarScanOptions,
  WhiteoutForm,
} from './backend.js';
import { asStevedoreError, StevedoreError } from './errors.js';
import { decodeNames, decodeResolution, decodeStat, decodeStats, decodeTarEvents } from './wire.js';

/** An opaque handle to Rust state owned by the addon. */
declare const handleBrand: unique symbol;
type Handle = { readonly [handleBrand]: 'Handle' };

/** The addon's exports, as registered in `crates/node/src/lib.rs` (`EXPORTS`). */
export interface NativeAddon {
  version(): string;
  parseDigest(digest: string): { algorithm: DigestAlgorithm; hex: string };
  hash(algorithm: string, data: Uint8Array): string;
  hashAsync(algorithm: string, data: Uint8Array): Promise<string>;
  hashFile(algorithm: string, path: string): Promise<{ digest: string; size: number }>;
  hasherCreate(algorithm: string): Handle;
  hasherUpdate(hasher: Handle, data: Uint8Array): void;
  hasherClone(hasher: Handle): Handle;
  hasherFinish(hasher: Handle): string;
  tarScannerCreate(
    hash: string | null,
    collectEntries: boolean,
    maxExtensionSize: number | null,
    maxEntryMetadata: number | null,
  ): Handle;
  tarScannerPush(scanner: Handle, chunk: Uint8Array, withData: boolean): Uint8Array;
  tarScannerFinish(scanner: Handle): Uint8Array;
  tarScanFile(path: string, hash: string | null): Promise<Uint8Array>;
  layerIndexFromScanner(scanner: Handle, form: WhiteoutForm): Handle;
  layerIndexFromEntries(encoded: Uint8Array, form: WhiteoutForm): Handle;
  layerStackCreate(indexes: Handle[]): Handle;
  layerStackResolve(stack: Handle, path: Uint8Array): Uint8Array;
  layerStackStat(stack: Handle, path: Uint8Array, follow: boolean): Uint8Array;
  layerStackReaddir(stack: Handle, path: Uint8Array): Uint8Array;
  layerStackWalk(stack: Handle): Uint8Array;
  tarWriterCreate(format: string): Handle;
  tarWriterHeader(writer: Handle, record: Uint8Array): Uint8Array;
  tarWriterData(writer: Handle, chunk: Uint8Array): void;
  tarWriterEndEntry(writer: Handle): Uint8Array;
  tarWriterFinish(writer: Handle): Uint8Array;
  progressCreate(): Handle;
  progressRead(progress: Handle): { compressed: number; uncompressed: number; entries: number };
  layerApply(
    source: string,
    target: string,
    options: object | null,
    progress: unknown,
    growing?: Handle | null,
  ): Promise<import('./engine.js').ApplyLayerReport>;
  growingCreate(): Handle;
  zstdDecoderCreate(windowLogMax: number): Handle;
  zstdDecoderPush(decoder: Handle, chunk: Uint8Array): [Uint8Array, number];
  zstdDecoderFinish(decoder: Handle): void;
  growingEnd(growing: Handle, ok: boolean): void;
  layerFlatten(
    sources: string[],
    target: string,
    options: (object | null)[] | null,
    parallel: number | null,
    progress: unknown,
  ): Promise<import('./engine.js').ApplyLayerReport[]>;
  treeScan(dir: string, hash?: boolean): Promise<string>;
  layerVerify(source: string, options: object | null): Promise<import('./engine.js').ApplyLayerReport>;
  fileAppend(
    fd: number,
    chunks: Uint8Array[],
    hasher: Handle | null,
    growing?: Handle | null,
    writeback?: boolean | null,
    direct?: boolean | null,
  ): Promise<number>;
  hasherUpdateAsync(hasher: Handle, chunks: Uint8Array[]): Promise<number>;
  layerCreate(
    source: string,
    out: string,
    options: object | null,
    progress: unknown,
  ): Promise<import('./engine.js').CreateLayerReport>;
}

/** napi-rs file naming: `<binaryName>.<platform>-<arch>[-<abi>].node`. */
export function nativeBinaryName(): string {
  // process.platform, not an import of node:process (whose ESM facade costs ~5 ms to build)
  const { platform, arch } = process;
  const abi = platform === 'linux' ? (isMusl() ? '-musl' : '-gnu') : platform === 'win32' ? '-msvc' : '';
  return `stevedore.${platform}-${arch}${abi}.node`;
}

function isMusl(): boolean {
  // ldd names its libc; reading it costs ~0.1 ms where a process report costs ~10 ms.
  try {
    return readFileSync('/usr/bin/ldd', 'latin1').includes('musl');
  } catch {}
  const r = process.report as (NodeJS.ProcessReport & { excludeNetwork?: boolean }) | undefined;
  if (!r) return false;
  const was = r.excludeNetwork;
  r.excludeNetwork = true; // the slow part of a report, and not needed here
  try {
    const report = r.getReport() as { header?: { glibcVersionRuntime?: string } };
    return !report.header?.glibcVersionRuntime;
  } finally {
    r.excludeNetwork = was;
  }
}

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Loads the addon next to package.json; returns the reason when it cannot. */
export function loadNativeAddon(): { addon: NativeAddon } | { error: string } {
  const file = join(packageRoot, nativeBinaryName());
  if (!existsSync(file)) return { error: `native addon ${nativeBinaryName()} not found in ${packageRoot}` };
  try {
    return { addon: createRequire(import.meta.url)(file) as NativeAddon };
  } catch (e) {
    return { error: `native addon ${file} failed to load: ${(e as Error).message}` };
  }
}

function guard<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw asStevedoreError(e);
  }
}

class NativeHasher implements HasherBackend {
  constructor(
    private readonly addon: NativeAddon,
    private readonly handle: Handle,
  ) {}
  get nativeHandle(): Handle {
    return this.handle;
  }
  async updateAsync(chunks: Uint8Array[]): Promise<void> {
    try {
      await this.addon.hasherUpdateAsync(this.handle, chunks);
    } catch (e) {
      throw asStevedoreError(e);
    }
  }
  update(data: Uint8Array): void {
    guard(() => this.addon.hasherUpdate(this.handle, data));
  }
  clone(): HasherBackend {
    return new NativeHasher(
      this.addon,
      guard(() => this.addon.hasherClone(this.handle)),
    );
  }
  finish(): string {
    return guard(() => this.addon.hasherFinish(this.handle));
  }
}

class NativeIndex implements LayerIndexBackend {
  readonly backend = 'native' as const;
  constructor(readonly handle: Handle) {}
}

function nativeScanner(addon: NativeAddon, o: TarScanOptions): TarScannerBackend {
  const handle = guard(() =>
    addon.tarScannerCreate(
      o.hash ?? null,
      Boolean(o.collectEntries),
      o.maxExtensionSize ?? null,
      o.maxEntryMetadata ?? null,
    ),
  );
  return {
    push: (chunk, withData) =>
      // The addon returns a fresh buffer per call: entries may keep views into it.
      decodeTarEvents(
        guard(() => addon.tarScannerPush(handle, chunk, withData)),
        chunk,
        [],
        true,
      ),
    finish: () =>
      decodeTarEvents(
        guard(() => addon.tarScannerFinish(handle)),
        undefined,
        [],
        true,
      ),
    toIndex: (form) => new NativeIndex(guard(() => addon.layerIndexFromScanner(handle, form))),
  };
}

function nativeStack(addon: NativeAddon, layers: LayerIndexBackend[]): LayerStackBackend {
  const handles = layers.map((l) => {
    if (!(l instanceof NativeIndex)) {
      throw new StevedoreError('ERR_BACKEND_MISMATCH', 'layer index was built by another backend');
    }
    return l.handle;
  });
  const stack = guard(() => addon.layerStackCreate(handles));
  return {
    resolve: (path) => decodeResolution(guard(() => addon.layerStackResolve(stack, path))),
    stat: (path, follow) => decodeStat(guard(() => addon.layerStackStat(stack, path, follow))),
    readdir: (path) => decodeNames(guard(() => addon.layerStackReaddir(stack, path))),
    walk: () => decodeStats(guard(() => addon.layerStackWalk(stack))),
  };
}

export function nativeBackend(addon: NativeAddon): Backend & { hashFile: NativeAddon['hashFile'] } {
  return {
    kind: 'native',
    version: () => addon.version(),
    parseDigest: (d) => guard(() => addon.parseDigest(d)),
    hash: (alg, data) => guard(() => addon.hash(alg, data)),
    hashAsync: async (alg, data) => {
      try {
        return await guard(() => addon.hashAsync(alg, data));
      } catch (e) {
        throw asStevedoreError(e);
      }
    },
    hashFile: async (alg, path) => {
      try {
        return await guard(() => addon.hashFile(alg, path));
      } catch (e) {
        throw asStevedoreError(e);
      }
    },
    createHasher: (alg) =>
      new NativeHasher(
        addon,
        guard(() => addon.hasherCreate(alg)),
      ),
    createTarScanner: (o) => nativeScanner(addon, o),
    createTarWriter: (format) => {
      const w = guard(() => addon.tarWriterCreate(format));
      return {
        header: (record) => guard(() => addon.tarWriterHeader(w, record)),
        data: (chunk) => guard(() => addon.tarWriterData(w, chunk)),
        endEntry: () => guard(() => addon.tarWriterEndEntry(w)),
        finish: () => guard(() => addon.tarWriterFinish(w)),
      };
    },
    layerIndexFromEntries: (encoded, form) => new NativeIndex(guard(() => addon.layerIndexFromEntries(encoded, form))),
    createLayerStack: (layers) => nativeStack(addon, layers),
  };
}
