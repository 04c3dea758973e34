/**
 * OCI image layout (a directory: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`) and
 * oci-archive (a tar of one), read and written. Tags are the `org.opencontainers.image.ref.name`
 * annotation of `index.json` entries.
 *
 * Reading verifies everything (see `ReadOptions.verify`). Blob paths are built only from parsed
 * `Digest`s (grammar checked), never from other strings.
 *
 * Writing a directory layout (`OciLayout.putImage`): each blob is written to a staging file under
 * `<dir>/.stevedore-ingest/`, hashed while written, checked against its size and digest, synced,
 * then renamed to `blobs/<alg>/<hex>`; an existing blob is left alone (a repeated put is a no-op).
 * `index.json` is re-read under a lock file (`index.json.lock`), updated, written to a temp file
 * and renamed, so images added by others are kept. Adding a tag moves it from any other entry.
 */
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Digest, sha256 } from '@stevedore/core';
import {
  ArchiveError,
  commitRename,
  exists,
  fileRange,
  verifiedAs,
  withLock,
  writeStreamToFile,
} from './archive/io.js';
import { type BlobStore, loadImage, type ReadOptions, readBlob, type StoredImage } from './archive/stored.js';
import { TarFile, type TarFileOptions } from './archive/tar-file.js';
import { bytesMember, type OutMember, writeTarFile } from './archive/tar-out.js';
import { parseJsonDocument } from './json.js';
import {
  DOCKER_CONFIG,
  DOCKER_MANIFEST,
  isManifest,
  layerCompression,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_LAYER,
  OCI_LAYER_GZIP,
  OCI_LAYER_ZSTD,
  OCI_MANIFEST,
} from './media-types.js';
import type { Image } from './model.js';
import { type Descriptor, type ImageIndex, parseImageIndex } from './schema.js';

/** The annotation that holds a tag in an OCI layout's index.json. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** containerd/Docker 25+: the full image name of an index.json entry. */
export const CONTAINERD_IMAGE_NAME_ANNOTATION = 'io.containerd.image.name';

const LAYOUT_VERSION = '1.0.0';
const encoder = new TextEncoder();

/** One image entry of a layout. */
export interface LayoutEntry {
  descriptor: Descriptor;
  /** The ref.name annotation, if any. */
  tag: string | undefined;
}

function dirStore(root: string): BlobStore {
  const blob = (d: Digest) => path.join(root, 'blobs', d.algorithm, d.hex);
  return {
    label: root,
    async size(d) {
      try {
        const s = await stat(blob(d));
        return s.isFile() ? s.size : undefined;
      } catch {
        return undefined;
      }
    },
    open(d) {
      return createReadStream(blob(d), { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
    },
    path: blob,
  };
}

/** A blob store over the `blobs/<alg>/<hex>` members of a tar archive. */
export function tarStore(tar: TarFile, label: string): BlobStore {
  const name = (d: Digest) => `blobs/${d.algorithm}/${d.hex}`;
  return {
    label,
    async size(d) {
      return tar.has(name(d)) ? tar.resolve(name(d), label).size : undefined;
    },
    open(d) {
      // Unverified bytes, as `BlobStore.open` promises: every reader verifies them against `d`
      // (a second check against the index pass's hash would only hash them twice).
      const m = tar.resolve(name(d), `${label}: blob ${d.toString()}`);
      return fileRange(tar.file, m.dataOffset, m.size);
    },
  };
}

/** Checks an `oci-layout` file's bytes. */
function checkLayoutFile(bytes: Uint8Array, label: string): void {
  const v = parseJsonDocument(bytes, `${label}: oci-layout`, { maxBytes: 64 * 1024 }) as {
    imageLayoutVersion?: unknown;
  };
  if (
    !v ||
    typeof v !== 'object' ||
    typeof v.imageLayoutVersion !== 'string' ||
    !v.imageLayoutVersion.startsWith('1.')
  ) {
    throw new ArchiveError(
      'ERR_ARCHIVE_FORMAT',
      `${label}: oci-layout: unsupported imageLayoutVersion ${JSON.stringify(v?.imageLayoutVersion)}`,
    );
  }
}

/** Reader of an OCI layout, as a directory or as an oci-archive. */
export class OciLayoutReader {
  private constructor(
    readonly label: string,
    readonly store: BlobStore,
    readonly index: ImageIndex,
    private readonly options: ReadOptions,
    private readonly onClose: () => Promise<void>,
  ) {}

  /** Opens a layout directory. */
  static async openDir(dir: string, options: ReadOptions = {}): Promise<OciLayoutReader> {
    const max = options.limits?.maxBytes ?? 4 * 1024 * 1024;
    const read = async (name: string) => {
      const p = path.join(dir, name);
      const s = await stat(p).catch(() => undefined);
      if (!s?.isFile()) throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${dir}: no ${name}: not an OCI image layout`);
      if (s.size > max)
        throw new ArchiveError(
          'ERR_ARCHIVE_FORMAT',
          `${dir}: ${name}: ${s.size} bytes is more than the limit of ${max}`,
        );
      return new Uint8Array(await readFile(p));
    };
    checkLayoutFile(await read('oci-layout'), dir);
    const index = parseImageIndex(await read('index.json'), undefined, options.limits);
    return new OciLayoutReader(dir, dirStore(dir), index, options, async () => {});
  }

  /** Opens an oci-archive (a tar, or gzip tar, of a layout). */
  static async openArchive(file: string, options: ReadOptions & TarFileOptions = {}): Promise<OciLayoutReader> {
    const tar = await TarFile.open(file, options);
    try {
      return await OciLayoutReader.fromTar(tar, file, options, () => tar.close());
    } catch (e) {
      await tar.close();
      throw e;
    }
  }

  /** @internal: a layout inside an already indexed tar (oci-archive, Docker 25+ docker-archive). */
  static async fromTar(
    tar: TarFile,
    label: string,
    options: ReadOptions,
    onClose: () => Promise<void>,
  ): Promise<OciLayoutReader> {
    const max = options.limits?.maxBytes ?? 4 * 1024 * 1024;
    checkLayoutFile(await tar.read('oci-layout', 64 * 1024, `${label}: oci-layout`), label);
    const index = parseImageIndex(await tar.read('index.json', max, `${label}: index.json`), undefined, options.limits);
    return new OciLayoutReader(label, tarStore(tar, label), index, options, onClose);
  }

  /** The image entries of index.json, in document order (nested indexes are not listed). */
  entries(): LayoutEntry[] {
    return this.index.manifests
      .filter((d) => isManifest(d.mediaType))
      .map((d) => ({ descriptor: d, tag: d.annotations?.[REF_NAME_ANNOTATION] }));
  }

  tags(): string[] {
    return this.entries().flatMap((e) => (e.tag === undefined ? [] : [e.tag]));
  }

  /**
   * The image tagged `tag` (the ref.name annotation), or the only image when `tag` is omitted.
   */
  async image(tag?: string): Promise<StoredImage> {
    const entries = this.entries();
    let entry: LayoutEntry | undefined;
    if (tag === undefined) {
      if (entries.length !== 1) {
        throw new ArchiveError(
          'ERR_IMAGE_NOT_FOUND',
          `${this.label}: ${entries.length} images; name one by tag (${this.tags().join(', ')})`,
        );
      }
      entry = entries[0];
    } else {
      entry = entries.find((e) => e.tag === tag);
      if (!entry)
        throw new ArchiveError(
          'ERR_IMAGE_NOT_FOUND',
          `${this.label}: no image tagged ${JSON.stringify(tag)} (have ${this.tags().join(', ') || 'none'})`,
        );
    }
    return this.imageAt((entry as LayoutEntry).descriptor);
  }

  /** The image an index.json descriptor points to. */
  async imageAt(d: Descriptor): Promise<StoredImage> {
    const max = this.options.limits?.maxBytes ?? 4 * 1024 * 1024;
    const raw = await readBlob(this.store, d.digest, d.size, max, 'manifest');
    return loadImage(this.store, raw, this.options, d.mediaType);
  }

  async close(): Promise<void> {
    await this.onClose();
  }
}

// --- writing -----------------------------------------------------------------------------------

/** Options of the OCI sinks. */
export interface OciWriteOptions {
  /**
   * Rewrite Docker schema 2 manifests as OCI manifests (same config and layer bytes, OCI media
   * types; the manifest digest changes). Default true: umoci and other OCI tools want OCI types.
   */
  ociMediaTypes?: boolean;
}

const DOCKER_TO_OCI_LAYER: Record<string, string> = {
  none: OCI_LAYER,
  gzip: OCI_LAYER_GZIP,
  zstd: OCI_LAYER_ZSTD,
};

/** The manifest bytes to store for `image` in an OCI layout (`image.rawManifest` unless converted). */
export function ociManifestBytes(image: Image, options: OciWriteOptions = {}): { raw: Uint8Array; mediaType: string } {
  if (image.manifest.mediaType !== DOCKER_MANIFEST || options.ociMediaTypes === false) {
    return { raw: image.rawManifest, mediaType: image.manifest.mediaType };
  }
  const m = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: {
      mediaType: image.manifest.config.mediaType === DOCKER_CONFIG ? OCI_CONFIG : image.manifest.config.mediaType,
      digest: image.manifest.config.digest.toString(),
      size: image.manifest.config.size,
    },
    layers: image.manifest.layers.map((l) => ({
      mediaType: DOCKER_TO_OCI_LAYER[layerCompression(l.mediaType) ?? 'none'] ?? l.mediaType,
      digest: l.digest.toString(),
      size: l.size,
      ...(l.annotations ? { annotations: l.annotations } : {}),
    })),
    ...(image.manifest.annotations ? { annotations: image.manifest.annotations } : {}),
  };
  return { raw: encoder.encode(JSON.stringify(m)), mediaType: OCI_MANIFEST };
}

function indexEntry(
  digest: Digest,
  size: number,
  mediaType: string,
  tag: string | undefined,
  platform?: Descriptor['platform'],
) {
  return {
    mediaType,
    digest: digest.toString(),
    size,
    ...(tag !== undefined ? { annotations: { [REF_NAME_ANNOTATION]: tag } } : {}),
    ...(platform ? { platform } : {}),
  };
}

function platformOf(image: Image): Descriptor['platform'] {
  const c = image.config;
  return {
    architecture: c.architecture,
    os: c.os,
    ...(c.variant ? { variant: c.variant } : {}),
  } as Descriptor['platform'];
}

/** A writable OCI layout directory (created if missing). */
export class OciLayout {
  private constructor(readonly dir: string) {}

  /** Opens (creating when absent) a layout directory for writing. */
  static async open(dir: string): Promise<OciLayout> {
    await mkdir(path.join(dir, 'blobs'), { recursive: true, mode: 0o755 });
    const layoutFile = path.join(dir, 'oci-layout');
    if (!(await exists(layoutFile))) {
      await writeFile(layoutFile, JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }), { flag: 'wx' }).catch(
        (e: NodeJS.ErrnoException) => {
          if (e.code !== 'EEXIST') throw e;
        },
      );
    } else {
      checkLayoutFile(new Uint8Array(await readFile(layoutFile)), dir);
    }
    return new OciLayout(dir);
  }

  private blobPath(d: Digest): string {
    return path.join(this.dir, 'blobs', d.algorithm, d.hex);
  }

  /**
   * Stores a blob: staged, verified against `digest` (and `size`), renamed. Returns false when
   * it was already there (a no-op).
   */
  async putBlob(digest: Digest, size: number | undefined, source: () => AsyncIterable<Uint8Array>): Promise<boolean> {
    const target = this.blobPath(digest);
    if (await exists(target)) return false;
    const ingest = path.join(this.dir, '.stevedore-ingest');
    await mkdir(ingest, { recursive: true, mode: 0o700 });
    await mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
    const staging = path.join(
      ingest,
      `${digest.hex}.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2)}`,
    );
    try {
      const stream = source();
      // A stream that verifies itself against this very digest and size (a layer's `compressed()`,
      // a registry download) is not hashed a second time: its last step throws on a mismatch, so
      // the write below only completes with the expected bytes. Anything else is hashed here.
      const self = verifiedAs(stream);
      const trusted = self?.digest.equals(digest) && (size === undefined || self?.size === size);
      const got = await writeStreamToFile(stream, staging, trusted ? null : digest.algorithm);
      if (size !== undefined && got.size !== size) {
        throw new ArchiveError(
          'ERR_SIZE_MISMATCH',
          `${this.dir}: blob ${digest.toString()}: size mismatch (expected ${size}, got ${got.size})`,
        );
      }
      if (got.digest !== undefined && !got.digest.equals(digest)) {
        throw new ArchiveError(
          'ERR_DIGEST_MISMATCH',
          `${this.dir}: blob: digest mismatch (expected ${digest.toString()}, got ${got.digest.toString()})`,
        );
      }
      await commitRename(staging, target);
      return true;
    } finally {
      await rm(staging, { force: true });
      await rmdir(ingest).catch(() => {}); // fails while other writers stage: fine
    }
  }

  /**
   * Adds `image` (blobs first, then the index entry) tagged `tags` (none: untagged). The index is
   * updated under its lock; other images are kept; a tag moves to this image. Idempotent.
   * Returns the manifest digest as stored.
   */
  async putImage(image: Image, options: { tags?: string[] } & OciWriteOptions = {}): Promise<Digest> {
    await this.putBlob(image.manifest.config.digest, image.manifest.config.size, async function* () {
      yield image.rawConfig;
    });
    // Layers are independent: fetch/verify/store them in parallel (a remote source bounds its
    // own connections).
    await Promise.all(image.layers.map((l) => this.putBlob(l.digest, l.size, () => l.compressed())));
    const { raw, mediaType } = ociManifestBytes(image, options);
    const digest = sha256(raw);
    await this.putBlob(digest, raw.length, async function* () {
      yield raw;
    });
    const tags = options.tags?.length ? options.tags : [undefined];
    await this.updateIndex((manifests) => {
      let out = manifests;
      for (const tag of tags) {
        out = out.filter((m) => {
          const t = (m.annotations as Record<string, string> | undefined)?.[REF_NAME_ANNOTATION];
          if (tag === undefined) return !(t === undefined && m.digest === digest.toString());
          return t !== tag;
        });
        out.push(indexEntry(digest, raw.length, mediaType, tag, platformOf(image)));
      }
      return out;
    });
    return digest;
  }

  /** Re-reads index.json under the lock, applies `change`, writes a temp file, renames. */
  private async updateIndex(
    change: (manifests: Record<string, unknown>[]) => Record<string, unknown>[],
  ): Promise<void> {
    const indexFile = path.join(this.dir, 'index.json');
    await withLock(`${indexFile}.lock`, async () => {
      let doc: Record<string, unknown> = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
      if (await exists(indexFile)) {
        const bytes = new Uint8Array(await readFile(indexFile));
        parseImageIndex(bytes); // validate before trusting it
        doc = parseJsonDocument(bytes, `${this.dir}: index.json`) as Record<string, unknown>;
      }
      const manifests = change([...((doc.manifests as Record<string, unknown>[]) ?? [])]);
      const next = { ...doc, schemaVersion: 2, mediaType: OCI_INDEX, manifests };
      const tmp = `${indexFile}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify(next), { mode: 0o644 });
      await commitRename(tmp, indexFile);
    });
  }
}

/** One image to put in an archive, with its tags. */
export interface ArchiveEntry {
  image: Image;
  tags?: string[];
}

/**
 * The members of an OCI layout for `entries` (blobs deduplicated by digest, sorted), plus the
 * index. `extraIndexAnnotations` adds per-tag annotations (Docker 25+: the full image name).
 * @internal shared with the docker-archive writer.
 */
export function layoutMembers(
  entries: {
    image: Image;
    raw: Uint8Array;
    mediaType: string;
    layers: { digest: Digest; size: number; open: () => AsyncIterable<Uint8Array> }[];
    tags: string[];
  }[],
  tagAnnotations: (tag: string) => Record<string, string> = (tag) => ({ [REF_NAME_ANNOTATION]: tag }),
): OutMember[] {
  const members: OutMember[] = [
    bytesMember('oci-layout', encoder.encode(JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }))),
  ];
  const blob = (d: Digest) => `blobs/${d.algorithm}/${d.hex}`;
  const manifests: Record<string, unknown>[] = [];
  for (const e of entries) {
    const { image } = e;
    members.push(bytesMember(blob(image.manifest.config.digest), image.rawConfig));
    for (const l of e.layers) members.push({ name: blob(l.digest), size: l.size, open: l.open });
    const digest = sha256(e.raw);
    members.push(bytesMember(blob(digest), e.raw));
    const base = { mediaType: e.mediaType, digest: digest.toString(), size: e.raw.length, platform: platformOf(image) };
    if (e.tags.length === 0) manifests.push(base);
    for (const tag of e.tags) manifests.push({ ...base, annotations: tagAnnotations(tag) });
  }
  members.push(
    bytesMember('index.json', encoder.encode(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }))),
  );
  return members;
}

/**
 * Writes an oci-archive (a deterministic tar of an OCI layout) holding `entries`. Blobs are
 * stored as they are (digests preserved); Docker manifests are converted unless
 * `ociMediaTypes: false`. Staged next to `file`, then renamed.
 */
export async function writeOciArchive(
  file: string,
  entries: ArchiveEntry[],
  options: OciWriteOptions = {},
): Promise<void> {
  const prepared = entries.map((e) => {
    const { raw, mediaType } = ociManifestBytes(e.image, options);
    return {
      image: e.image,
      raw,
      mediaType,
      tags: e.tags ?? [],
      layers: e.image.layers.map((l) => ({ digest: l.digest, size: l.size, open: () => l.compressed() })),
    };
  });
  await writeTarFile(file, layoutMembers(prepared));
}

/** Parses a digest from a blob member name `blobs/<alg>/<hex>`, or undefined. */
export function digestOfBlobName(name: string): Digest | undefined {
  const m = /^blobs\/([a-z0-9]+)\/([a-zA-Z0-9=_-]+)$/.exec(name);
  if (!m) return undefined;
  try {
    return Digest.parse(`${m[1]}:${m[2]}`);
  } catch {
    return undefined;
  }
}
