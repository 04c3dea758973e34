/**
 * The small interfaces every image source and sink implements (registry, OCI layout, docker
 * archive, local store), and that transformations (copy, flatten, append, commit) work on.
 * After go-containerregistry's `v1.Image`/`v1.Layer`/`v1.ImageIndex`.
 *
 * Contracts:
 * - layers are ordered base first, as in the manifest and in `rootfs.diff_ids`;
 * - `digest` and `size` are of the bytes as stored and transferred (compressed for compressed
 *   media types); `diffId` is the digest of the uncompressed tar;
 * - streams are verified: a source fails the iteration at the end when the bytes do not match
 *   the size and digest it promised, and never yields past a mismatch it can detect earlier;
 * - `rawManifest`/`rawConfig` are the exact bytes the digests were computed over.
 */
import type { Digest } from '@stevedore/core';
import type { Platform } from './platform.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest } from './schema.js';

/** One layer of an image. */
export interface Layer {
  /** Digest of the layer blob as stored (compressed bytes for +gzip/+zstd media types). */
  readonly digest: Digest;
  /** Digest of the uncompressed tar (an entry of the config's `rootfs.diff_ids`). */
  readonly diffId: Digest;
  /** Size in bytes of the blob as stored (compressed). */
  readonly size: number;
  readonly mediaType: string;
  /** The blob as stored; verified against `size` and `digest` while streaming. */
  compressed(): AsyncIterable<Uint8Array>;
  /** The uncompressed tar; verified against `diffId` while streaming. */
  uncompressed(): AsyncIterable<Uint8Array>;
  /**
   * Optional: the same bytes as `compressed()` without its digest check (size still enforced),
   * for a consumer that hashes what it stores and checks `digest` itself before keeping
   * anything. A remote layer offers it so that a sink hashes the blob in the same pass as it
   * writes it, instead of the download hashing it first.
   */
  compressedUnverified?(): AsyncIterable<Uint8Array>;
}

/** One image for one platform. */
export interface Image {
  /** Digest of `rawManifest`: what `name@digest` pulls. */
  readonly digest: Digest;
  readonly manifest: ImageManifest;
  /** The manifest bytes exactly as stored. */
  readonly rawManifest: Uint8Array;
  readonly config: ImageConfig;
  /** The config bytes exactly as stored (their digest is the image ID). */
  readonly rawConfig: Uint8Array;
  /** Base first; `layers[i].diffId` is `config.rootfs.diff_ids[i]`. */
  readonly layers: readonly Layer[];
}

/** A multi-platform index (OCI image index or Docker manifest list). */
export interface Index {
  readonly digest: Digest;
  readonly index: ImageIndex;
  readonly rawManifest: Uint8Array;
  /** The entries of the index, in document order. */
  readonly manifests: readonly Descriptor[];
  /** The image an entry points to (its media type must be a manifest type). */
  image(descriptor: Descriptor): Promise<Image>;
  /** A nested index an entry points to (its media type must be an index type). */
  childIndex(descriptor: Descriptor): Promise<Index>;
  /** The best image for a platform (default: this host's); see `selectPlatform`. */
  imageFor(platform?: Platform | string): Promise<Image>;
}
