/**
 * `Image` and `Layer` implementations over a blob store (an OCI layout directory, or the members
 * of a tar archive). Every blob is verified: documents when read, layers while streaming, and,
 * with `verify` (the default), every layer's digest and diff_id eagerly when the image is opened.
 */
import { type Digest, hasNativeEngine, StevedoreError, sha256, verifyLayerFile } from '@stevedore/core';
import type { DocumentLimits } from '../json.js';
import { layerCompression } from '../media-types.js';
import type { Image, Layer } from '../model.js';
import { type ImageConfig, type ImageManifest, parseConfig, parseImageManifest } from '../schema.js';
import { ArchiveError, DEFAULT_MAX_LAYERS, drain, maybeDecompress, type Opener, readAll, verified } from './io.js';

/** Options of every reader. */
export interface ReadOptions {
  /**
   * Hash every layer (digest and diff_id) when the image is opened (`true`, the default); or
   * `'on-read'`: a layer is verified when its compressed stream is first read — the check runs
   * alongside the read (natively, for blobs kept as files) and the stream's end waits for it, so
   * a copy to a registry uploads while verifying and fails before its manifest is pushed.
   * Layers never read are then never verified (what `skopeo inspect` does too).
   */
  verify?: boolean | 'on-read';
  /** Most layers per image. Default 1000. */
  maxLayers?: number;
  /** Caps on manifests and configs (default 4 MiB, depth 64). */
  limits?: DocumentLimits;
  /** Budget of uncompressed bytes per layer (default unlimited). */
  maxLayerBytes?: number;
}

/** Raw blob access by digest: `open` gives unverified bytes, `size` undefined when absent. */
export interface BlobStore {
  readonly label: string;
  size(digest: Digest): Promise<number | undefined>;
  open(digest: Digest): AsyncIterable<Uint8Array>;
  /** The blob's file, for stores that keep blobs as files (native verification reads it). */
  path?(digest: Digest): string;
}

/** Reads a blob fully (documents), checking size and digest. */
export async function readBlob(
  store: BlobStore,
  digest: Digest,
  size: number | undefined,
  max: number,
  what: string,
): Promise<Uint8Array> {
  const have = await store.size(digest);
  if (have === undefined) {
    throw new ArchiveError('ERR_ARCHIVE_MEMBER_MISSING', `${store.label}: ${what} ${digest.toString()}: blob missing`);
  }
  if (size !== undefined && have !== size) {
    throw new ArchiveError(
      'ERR_SIZE_MISMATCH',
      `${store.label}: ${what} ${digest.toString()}: size mismatch (expected ${size}, got ${have})`,
    );
  }
  if (have > max) {
    throw new ArchiveError(
      'ERR_ARCHIVE_FORMAT',
      `${store.label}: ${what} ${digest.toString()}: ${have} bytes is more than the limit of ${max}`,
    );
  }
  return readAll(
    verified(store.open(digest), { digest, size: have }, `${store.label}: ${what} ${digest.toString()}`),
    max,
    what,
  );
}

/** A layer read through openers; both streams are verified. */
export class StoredLayer implements Layer {
  /** With `verify: 'on-read'`: the layer's full check, started by the first read. */
  private checking: Promise<void> | undefined;

  constructor(
    readonly digest: Digest,
    readonly diffId: Digest,
    readonly size: number,
    readonly mediaType: string,
    private readonly openRaw: Opener,
    private readonly what: string,
    private readonly maxBytes?: number,
    private readonly checkOnRead?: () => Promise<void>,
  ) {}

  /** The stored bytes, their size and digest checked. */
  private stored(): AsyncIterable<Uint8Array> {
    return verified(
      this.openRaw(),
      { digest: this.digest, size: this.size },
      `${this.what}: layer ${this.digest.toString()}`,
    );
  }

  compressed(): AsyncIterable<Uint8Array> {
    const stream = this.stored();
    if (!this.checkOnRead) return stream;
    if (!this.checking) {
      this.checking = this.checkOnRead();
      this.checking.catch(() => {}); // awaited at the end of the stream
    }
    const checking = this.checking;
    return (async function* () {
      yield* stream;
      await checking; // the diff_id too, before the consumer takes the layer as complete
    })();
  }

  uncompressed(): AsyncIterable<Uint8Array> {
    const what = `${this.what}: layer ${this.digest.toString()}`;
    // By the bytes, not the media type, as docker and the native engine do: a `+gzip` layer
    // that is really a plain tar reads the same on every path.
    const raw = maybeDecompress(() => this.stored(), what, this.maxBytes); // checks its own diff_id
    return verified(raw, { digest: this.diffId }, `${what}: diff_id`);
  }
}

export class StoredImage implements Image {
  readonly digest: Digest;
  /**
   * `digest` is the digest the manifest was found by (already verified against `rawManifest`:
   * a layout may name it with sha512); sha256 of `rawManifest` when omitted.
   */
  constructor(
    readonly manifest: ImageManifest,
    readonly rawManifest: Uint8Array,
    readonly config: ImageConfig,
    readonly rawConfig: Uint8Array,
    readonly layers: readonly Layer[],
    digest?: Digest,
  ) {
    this.digest = digest ?? sha256(rawManifest);
  }
}

export function checkLayerCount(n: number, diffIds: number, max: number, what: string): void {
  if (n > max || diffIds > max) {
    throw new ArchiveError(
      'ERR_TOO_MANY_LAYERS',
      `${what}: ${Math.max(n, diffIds)} layers is more than the limit of ${max}`,
    );
  }
  if (n !== diffIds) {
    throw new ArchiveError('ERR_LAYER_COUNT_MISMATCH', `${what}: ${n} layers but the config lists ${diffIds} diff_ids`);
  }
}

/**
 * Verifies every layer of an image (flat memory: streams are hashed, not kept). `done` names
 * layers already verified from the same bytes (e.g. hashed by an archive's index pass).
 */
export async function verifyLayers(image: Image, done?: (layer: Layer) => boolean): Promise<void> {
  const todo = image.layers.filter((l) => !done?.(l));
  // A few layers at a time: decompression runs on the thread pool, hashing on this thread.
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < todo.length && !failed) {
      const l = todo[next++] as Layer;
      try {
        if (layerCompression(l.mediaType) === 'none' && l.digest.equals(l.diffId)) await drain(l.compressed());
        else await drain(l.uncompressed());
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(VERIFY_CONCURRENCY, todo.length) }, worker));
}

const VERIFY_CONCURRENCY = 4;

/** Loads the image a manifest blob describes from a blob store. */
export async function loadImage(
  store: BlobStore,
  rawManifest: Uint8Array,
  options: ReadOptions,
  expectedMediaType?: string,
  digest?: Digest,
): Promise<StoredImage> {
  const max = options.limits?.maxBytes ?? 4 * 1024 * 1024;
  const manifest = parseImageManifest(rawManifest, expectedMediaType, options.limits);
  const what = `${store.label}: image ${(digest ?? sha256(rawManifest)).toString()}`;
  const maxLayers = options.maxLayers ?? DEFAULT_MAX_LAYERS;
  if (manifest.layers.length > maxLayers) {
    throw new ArchiveError(
      'ERR_TOO_MANY_LAYERS',
      `${what}: ${manifest.layers.length} layers is more than the limit of ${maxLayers}`,
    );
  }
  const rawConfig = await readBlob(store, manifest.config.digest, manifest.config.size, max, 'config');
  const config = parseConfig(rawConfig, manifest.config.mediaType, options.limits);
  checkLayerCount(manifest.layers.length, config.rootfs.diff_ids.length, maxLayers, what);
  const layers: Layer[] = [];
  for (const [i, d] of manifest.layers.entries()) {
    const have = await store.size(d.digest);
    if (have === undefined) {
      throw new ArchiveError('ERR_ARCHIVE_MEMBER_MISSING', `${what}: layer ${d.digest.toString()}: blob missing`);
    }
    if (have !== d.size) {
      throw new ArchiveError(
        'ERR_SIZE_MISMATCH',
        `${what}: layer ${d.digest.toString()}: size mismatch (expected ${d.size}, got ${have})`,
      );
    }
    const diffId = config.rootfs.diff_ids[i] as Digest;
    const file = store.path?.bind(store);
    const check =
      options.verify !== 'on-read'
        ? undefined
        : file && hasNativeEngine()
          ? () =>
              verifyLayerFile(file(d.digest), {
                expectedDigest: d.digest,
                expectedDiffId: diffId,
                maxUncompressedBytes: options.maxLayerBytes,
              }).then(
                () => {},
                (e) => {
                  throw inContext(e, `${what}: layer ${d.digest.toString()}`);
                },
              )
          : () => drain(layer.uncompressed());
    const layer: StoredLayer = new StoredLayer(
      d.digest,
      diffId,
      d.size,
      d.mediaType,
      () => store.open(d.digest),
      what,
      options.maxLayerBytes,
      check,
    );
    layers.push(layer);
  }
  const image = new StoredImage(manifest, rawManifest, config, rawConfig, layers, digest);
  if (options.verify === true || options.verify === undefined) {
    const file = store.path?.bind(store);
    if (file && hasNativeEngine()) await verifyLayerFiles(image, file, what, options.maxLayerBytes);
    else await verifyLayers(image);
  }
  return image;
}

/**
 * {@link verifyLayers} for blobs kept as files: the native engine reads each file off the JS
 * thread, decompressing and hashing in parallel, and checks digest and diff_id.
 */
async function verifyLayerFiles(
  image: Image,
  file: (d: Digest) => string,
  what: string,
  maxLayerBytes: number | undefined,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < image.layers.length && !failed) {
      const l = image.layers[next++] as Layer;
      try {
        await verifyLayerFile(file(l.digest), {
          expectedDigest: l.digest,
          expectedDiffId: l.diffId,
          maxUncompressedBytes: maxLayerBytes,
        });
      } catch (e) {
        failed = true;
        throw inContext(e, `${what}: layer ${l.digest.toString()}`);
      }
    }
  };
  // Each verification keeps two threads busy (decompression, hashing).
  await Promise.all(Array.from({ length: Math.min(2, image.layers.length) }, worker));
}

/** The engine's error (ERR_DIGEST_MISMATCH, ERR_TAR_*, ERR_LAYER_LIMIT, ...) with the context. */
function inContext(e: unknown, what: string): unknown {
  return e instanceof StevedoreError ? new StevedoreError(e.code, `${what}: ${e.message}`, { cause: e }) : e;
}
