/**
 * OCI image layout (a directory: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`) and
 * oci-archive (a tar of one), read and written. Tags are the `org.opencontainers.image.ref.name`
 * annotation of `index.json` entries.
 *
 * Reading verifies everything (see `ReadOptions.verify`). Blob paths are built only from parsed
 * `Digest`s (grammar checked), never from other strings; blobs may be named by sha256 or sha512.
 * In a layout directory, a blob or `index.json` reached through a symlink that leads out of the
 * directory is refused (ERR_ARCHIVE_BAD_LINK); in an oci-archive, links are followed inside the
 * archive only. An index.json entry may be an index (`skopeo copy --all`, buildx): `image(tag)`
 * resolves it, through nested indexes (at most `MAX_INDEX_DEPTH`), to one platform's image.
 * Layers may be plain tar, gzip or zstd (zstd needs the native engine).
 *
 * Writing a directory layout (`OciLayout.putImage`): each blob is written to a staging file under
 * `<dir>/.stevedore-ingest/`, hashed while written, checked against its size and digest, synced,
 * then renamed to `blobs/<alg>/<hex>`; an existing blob is left alone (a repeated put is a no-op).
 * `index.json` is re-read under a lock file (`index.json.lock`), updated, written to a temp file
 * and renamed, so images added by others are kept. Adding a tag moves it from any other entry.
 */
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, realpath, rm, rmdir, stat, writeFile } from 'node:fs/promises';
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
  isIndex,
  isManifest,
  layerCompression,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_LAYER,
  OCI_LAYER_GZIP,
  OCI_LAYER_ZSTD,
  OCI_MANIFEST,
} from './media-types.js';
import type { Image, Index } from './model.js';
import { formatPlatform, hostPlatform, type Platform, parsePlatform, selectPlatform } from './platform.js';
import { type Descriptor, type ImageIndex, parseImageIndex } from './schema.js';

/** The annotation that holds a tag in an OCI layout's index.json. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** containerd/Docker 25+: the full image name of an index.json entry. */
export const CONTAINERD_IMAGE_NAME_ANNOTATION = 'io.containerd.image.name';

const LAYOUT_VERSION = '1.0.0';
/** How deep indexes may nest in a layout (index.json → index → … → manifest). */
export const MAX_INDEX_DEPTH = 8;
const encoder = new TextEncoder();

/** One image entry of a layout. */
export interface LayoutEntry {
  descriptor: Descriptor;
  /** The ref.name annotation, if any. */
  tag: string | undefined;
}

/**
 * The real path of `name` inside the layout `root` (itself a real path), following symlinks only
 * while they stay inside the layout; undefined when it does not exist. A symlink (of the file or
 * of a directory on the way) that leads out of the layout is refused (ERR_ARCHIVE_BAD_LINK): the
 * layout's files are read by name inside the layout, never from elsewhere on the host.
 */
async function insideLayout(root: string, name: string): Promise<string | undefined> {
  const p = path.join(root, name);
  let real: string;
  try {
    real = await realpath(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      // A dangling symlink is a bad link, not a missing blob.
      const link = await lstat(p).catch(() => undefined);
      if (link?.isSymbolicLink()) {
        throw new ArchiveError('ERR_ARCHIVE_BAD_LINK', `${root}: ${name} is a dangling symlink`);
      }
      return undefined;
    }
    if (code === 'ELOOP') throw new ArchiveError('ERR_ARCHIVE_BAD_LINK', `${root}: ${name}: too many symlinks`);
    throw e;
  }
  const rel = path.relative(root, real);
  if (rel === '' || rel.startsWith(`..${path.sep}`) || rel === '..' || path.isAbsolute(rel)) {
    throw new ArchiveError(
      'ERR_ARCHIVE_BAD_LINK',
      `${root}: ${name} leads through a symlink to ${JSON.stringify(real)}, outside the layout`,
    );
  }
  return real;
}

/** Opens with O_NOFOLLOW (the path was resolved: a symlink here is a swap after the check). */
const NOFOLLOW = constants.O_RDONLY | constants.O_NOFOLLOW;

function dirStore(root: string, label: string): BlobStore {
  const name = (d: Digest) => `blobs/${d.algorithm}/${d.hex}`;
  // Real paths of the blobs `size` found, for `open` and `path` (both called after `size`).
  const resolved = new Map<string, string>();
  const where = (d: Digest) => resolved.get(d.toString()) ?? path.join(root, name(d));
  return {
    label,
    async size(d) {
      const real = await insideLayout(root, name(d));
      if (real === undefined) return undefined;
      const s = await stat(real);
      if (!s.isFile()) return undefined;
      resolved.set(d.toString(), real);
      return s.size;
    },
    open: (d) => readNoFollow(where(d)),
    path: where,
  };
}

async function* readNoFollow(file: string): AsyncIterable<Uint8Array> {
  const fh = await open(file, NOFOLLOW);
  try {
    yield* fh.createReadStream({ highWaterMark: 1 << 20, autoClose: false }) as AsyncIterable<Buffer>;
  } finally {
    await fh.close();
  }
}

/** A blob store over the `blobs/<alg>/<hex>` members of a tar archive. */
export function tarStore(tar: TarFile, label: string): BlobStore {
  const name = (d: Digest) => `blobs/${d.algorithm}/${d.hex}`;
  return {
    label,
    async size(d) {
      // Absent: undefined. Present but a link that leaves the archive or dangles: that error.
      if (!tar.members.has(name(d))) return undefined;
      return tar.resolve(name(d), `${label}: blob ${d.toString()}`).size;
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

  /**
   * Opens a layout directory. Its files are read inside it: a blob, `index.json` or `oci-layout`
   * that is a symlink leading out of the directory is refused (ERR_ARCHIVE_BAD_LINK).
   */
  static async openDir(dir: string, options: ReadOptions = {}): Promise<OciLayoutReader> {
    const max = options.limits?.maxBytes ?? 4 * 1024 * 1024;
    const root = await realpath(dir).catch(() => undefined);
    if (root === undefined)
      throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${dir}: no such directory: not an OCI image layout`);
    const read = async (name: string) => {
      const p = await insideLayout(root, name);
      const s = p === undefined ? undefined : await stat(p);
      if (!p || !s?.isFile())
        throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${dir}: no ${name}: not an OCI image layout`);
      if (s.size > max)
        throw new ArchiveError(
          'ERR_ARCHIVE_FORMAT',
          `${dir}: ${name}: ${s.size} bytes is more than the limit of ${max}`,
        );
      const fh = await open(p, NOFOLLOW);
      try {
        return new Uint8Array(await fh.readFile());
      } finally {
        await fh.close();
      }
    };
    checkLayoutFile(await read('oci-layout'), dir);
    const index = parseImageIndex(await read('index.json'), undefined, options.limits);
    return new OciLayoutReader(dir, dirStore(root, dir), index, options, async () => {});
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

  /** The image entries of index.json, in document order (entries that are indexes are not listed: see `refs`). */
  entries(): LayoutEntry[] {
    return this.refs().filter((e) => isManifest(e.descriptor.mediaType));
  }

  /** The entries of index.json that are images or indexes, in document order. */
  refs(): LayoutEntry[] {
    return this.index.manifests
      .filter((d) => isManifest(d.mediaType) || isIndex(d.mediaType))
      .map((d) => ({ descriptor: d, tag: d.annotations?.[REF_NAME_ANNOTATION] }));
  }

  /** The tags (ref.name annotations) of index.json, of images and of indexes. */
  tags(): string[] {
    return this.refs().flatMap((e) => (e.tag === undefined ? [] : [e.tag]));
  }

  /**
   * The image tagged `tag` (the ref.name annotation), or the only entry when `tag` is omitted.
   * An entry that is an index (a multi-platform image, as `skopeo copy --all` writes it) is
   * resolved, through nested indexes, to the image for `platform` (default: this host's). With
   * no tag, index.json itself is resolved by platform when it holds several untagged entries
   * that all name their platform.
   */
  async image(tag?: string, options: { platform?: Platform | string } = {}): Promise<StoredImage> {
    const refs = this.refs();
    let entry: LayoutEntry | undefined;
    if (tag === undefined) {
      if (refs.length !== 1) {
        if (refs.length > 1 && refs.every((e) => e.tag === undefined && e.descriptor.platform)) {
          return this.pick(this.index.manifests, 'index.json', options.platform, 0);
        }
        throw new ArchiveError(
          'ERR_IMAGE_NOT_FOUND',
          `${this.label}: ${refs.length} images; name one by tag (${this.tags().join(', ')})`,
        );
      }
      entry = refs[0];
    } else {
      entry = refs.find((e) => e.tag === tag);
      if (!entry)
        throw new ArchiveError(
          'ERR_IMAGE_NOT_FOUND',
          `${this.label}: no image tagged ${JSON.stringify(tag)} (have ${this.tags().join(', ') || 'none'})`,
        );
    }
    const d = (entry as LayoutEntry).descriptor;
    if (isIndex(d.mediaType)) return (await this.indexAt(d)).imageFor(options.platform);
    return this.imageAt(d);
  }

  /** The image an index.json (or nested index) descriptor points to. */
  async imageAt(d: Descriptor): Promise<StoredImage> {
    if (!isManifest(d.mediaType)) {
      throw new ArchiveError(
        'ERR_ARCHIVE_FORMAT',
        `${this.label}: ${d.digest.toString()} is a ${d.mediaType}, not an image manifest`,
      );
    }
    const max = this.options.limits?.maxBytes ?? 4 * 1024 * 1024;
    const raw = await readBlob(this.store, d.digest, d.size, max, 'manifest');
    return loadImage(this.store, raw, this.options, d.mediaType, d.digest);
  }

  /**
   * The index a descriptor points to (an OCI image index or a Docker manifest list), whose
   * `imageFor` picks a platform. Indexes nest at most {@link MAX_INDEX_DEPTH} deep.
   */
  async indexAt(d: Descriptor): Promise<Index> {
    return this.loadIndex(d, 1);
  }

  private async loadIndex(d: Descriptor, depth: number): Promise<Index> {
    if (!isIndex(d.mediaType)) {
      throw new ArchiveError(
        'ERR_ARCHIVE_FORMAT',
        `${this.label}: ${d.digest.toString()} is a ${d.mediaType}, not an index`,
      );
    }
    if (depth > MAX_INDEX_DEPTH) {
      throw new ArchiveError(
        'ERR_ARCHIVE_FORMAT',
        `${this.label}: index ${d.digest.toString()}: indexes nested more than ${MAX_INDEX_DEPTH} deep`,
      );
    }
    const max = this.options.limits?.maxBytes ?? 4 * 1024 * 1024;
    const raw = await readBlob(this.store, d.digest, d.size, max, 'index');
    const index = parseImageIndex(raw, d.mediaType, this.options.limits);
    return {
      digest: d.digest,
      index,
      rawManifest: raw,
      manifests: index.manifests,
      image: (c) => this.imageAt(c),
      childIndex: (c) => this.loadIndex(c, depth + 1),
      imageFor: (platform) => this.pick(index.manifests, `index ${d.digest.toString()}`, platform, depth),
    };
  }

  /** The image for `platform` among `manifests`, following nested indexes. */
  private async pick(
    manifests: readonly Descriptor[],
    what: string,
    platform: Platform | string | undefined,
    depth: number,
  ): Promise<StoredImage> {
    const wanted =
      platform === undefined ? hostPlatform() : typeof platform === 'string' ? parsePlatform(platform) : platform;
    const d = selectPlatform(manifests, wanted);
    if (!d) {
      const have = manifests.flatMap((m) => (m.platform ? [formatPlatform(m.platform)] : []));
      throw new ArchiveError(
        'ERR_IMAGE_NOT_FOUND',
        `${this.label}: ${what}: no image for ${formatPlatform(wanted)} (have ${have.join(', ') || 'no platforms'})`,
      );
    }
    if (isIndex(d.mediaType)) return (await this.loadIndex(d, depth + 1)).imageFor(platform) as Promise<StoredImage>;
    return this.imageAt(d);
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
  /**
   * Write blobs past the page cache (`O_DIRECT`) where the filesystem supports it. Less CPU
   * for a layout written once and not read again soon (on some VMs the page-cache copy costs
   * more than the download); a read right after then comes from disk. Default false.
   */
  directIo?: boolean;
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
  private constructor(
    readonly dir: string,
    private readonly directIo = false,
  ) {}

  /** Opens (creating when absent) a layout directory for writing. */
  static async open(dir: string, options: Pick<OciWriteOptions, 'directIo'> = {}): Promise<OciLayout> {
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
    return new OciLayout(dir, options.directIo ?? false);
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
      const got = await writeStreamToFile(stream, staging, trusted ? null : digest.algorithm, {
        direct: this.directIo,
      });
      if (size !== undefined && got.size !== size) {
        throw new ArchiveError(
          'ERR_SIZE_MISMATCH',
          `${this.dir}: blob ${digest.toString()}: size mismatch (expected ${size}, got ${got.size})`,
        );
      }
      if (got.digest !== undefined && !got.digest.equals(digest)) {
        throw new ArchiveError(
          'ERR_DIGEST_MISMATCH',
          `${this.dir}: blob ${digest.toString()} as received: digest mismatch (got ${got.digest.toString()}); ` +
            'the source sent other bytes than its digest names, nothing was stored',
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
    // A layer that offers its bytes unverified (a registry download) is hashed here, in the pass
    // that writes it (putBlob checks the digest before the blob is kept).
    await Promise.all(
      image.layers.map((l) =>
        this.putBlob(l.digest, l.size, () => (l.compressedUnverified ? l.compressedUnverified() : l.compressed())),
      ),
    );
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
    /** What the config is stored as (default: the manifest's config digest). */
    configDigest?: Digest;
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
    members.push(bytesMember(blob(e.configDigest ?? image.manifest.config.digest), image.rawConfig));
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
