import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { arch, platform } from 'node:process';
import { fileURLToPath } from 'node:url';
import type { Backend, DigestAlgorithm, HasherBackend } from './backend.js';
import { asStevedoreError } from './errors.js';

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
}

/** napi-rs file naming: `<binaryName>.<platform>-<arch>[-<abi>].node`. */
export function nativeBinaryName(): string {
  const abi = platform === 'linux' ? (isMusl() ? '-musl' : '-gnu') : platform === 'win32' ? '-msvc' : '';
  return `stevedore.${platform}-${arch}${abi}.node`;
}

function isMusl(): boolean {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return !report?.header?.glibcVersionRuntime;
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
  };
}
