/**
 * docker-archive: what `docker save` writes and `docker load` reads.
 *
 * Two layouts are read:
 * - legacy (Docker ≤ 24): `manifest.json` (`[{Config, RepoTags, Layers}]`), `repositories`,
 *   `<config hex>.json`, `<v1 id>/layer.tar` (sometimes a symlink to another layer's tar);
 * - Docker 25+: an OCI layout (`oci-layout`, `index.json`, `blobs/sha256/…`) plus a
 *   `manifest.json` whose paths point into `blobs/sha256/`.
 * The archive itself may be gzip-compressed; layers inside may be plain tar or gzip.
 *
 * Reading streams the archive once through the core's `TarReader` to index members (offset,
 * size, sha256), then reads members by range: memory stays flat. Everything is verified: the
 * config's sha256 against the digest its name encodes (`<hex>.json`, `blobs/sha256/<hex>`);
 * each layer's diff_id (sha256 of the uncompressed tar) against `rootfs.diff_ids`; the layer
 * count against the config. Member references in manifest.json are resolved inside the archive;
 * absolute paths and `..` are refused (ERR_ARCHIVE_MEMBER_PATH).
 *
 * For a legacy archive the manifest is synthesized: an OCI image manifest whose config
 * descriptor has the config's digest and whose layer descriptors have the digest and size of
 * each `layer.tar` as stored (media type `…layer.v1.tar` for plain tar, `+gzip`/`+zstd` by the
 * blob's magic). For plain layers `digest == diffId`. For a Docker 25+ archive, the manifest
 * stored in the OCI layout is used when one matches the entry's config; it must name the same
 * layer blobs as manifest.json (else ERR_ARCHIVE_FORMAT). An image without an index.json entry
 * (saved by ID) and Docker 25.0.0's OCI manifests without layers (moby#47065) are read from
 * manifest.json alone, as `docker load` reads them. Tags match in familiar or full form
 * (`x:1` = `docker.io/library/x:1`).
 */
import { Digest, hash, sha256 } from '@stevedore/core';
import {
  ArchiveError,
  fileRange,
  isGzip,
  isZstd,
  peek,
  removeQuietly,
  stagingDir,
  writeStreamToFile,
} from './archive/io.js';
import { checkLayerCount, type ReadOptions, StoredImage, StoredLayer, verifyLayers } from './archive/stored.js';
import { TarFile, type TarFileOptions } from './archive/tar-file.js';
import { bytesMember, type OutMember, writeTarFile } from './archive/tar-out.js';
import { parseJsonDocument } from './json.js';
import {
  layerCompression,
  OCI_CONFIG,
  OCI_LAYER,
  OCI_LAYER_GZIP,
  OCI_LAYER_ZSTD,
  OCI_MANIFEST,
} from './media-types.js';
import type { Image, Layer } from './model.js';
import { CONTAINERD_IMAGE_NAME_ANNOTATION, layoutMembers, OciLayoutReader, REF_NAME_ANNOTATION } from './oci-layout.js';
import { tryParseReference } from './reference.js';
import { parseConfig, parseImageManifest } from './schema.js';

const encoder = new TextEncoder();

/** An image read from a docker-archive, with the tags the archive gives it. */
export interface DockerArchiveImage extends Image {
  /** `RepoTags` of its manifest.json entry (may be empty). */
  readonly repoTags: readonly string[];
  /** The image ID: digest of the config. */
  readonly configDigest: Digest;
}

/** One parsed entry of manifest.json. */
interface ManifestEntry {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

function parseDockerManifest(
  bytes: Uint8Array,
  label: string,
  options: ReadOptions,
  maxLayers: number,
): ManifestEntry[] {
  const value = parseJsonDocument(bytes, `${label}: manifest.json`, options.limits);
  const bad = (why: string) => new ArchiveError('ERR_ARCHIVE_FORMAT', `${label}: manifest.json: ${why}`);
  if (!Array.isArray(value)) throw bad('must be a JSON array');
  return value.map((e: unknown, i) => {
    if (!e || typeof e !== 'object' || Array.isArray(e)) throw bad(`[${i}] must be an object`);
    const o = e as Record<string, unknown>;
    if (typeof o.Config !== 'string') throw bad(`[${i}].Config must be a string`);
    const tags = o.RepoTags ?? [];
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string'))
      throw bad(`[${i}].RepoTags must be a list of strings`);
    const layers = o.Layers ?? [];
    if (!Array.isArray(layers) || !layers.every((t) => typeof t === 'string'))
      throw bad(`[${i}].Layers must be a list of strings`);
    if (layers.length > maxLayers) {
      throw new ArchiveError(
        'ERR_TOO_MANY_LAYERS',
        `${label}: manifest.json[${i}]: ${layers.length} layers is more than the limit of ${maxLayers}`,
      );
    }
    return { Config: o.Config, RepoTags: tags as string[], Layers: layers as string[] };
  });
}

/** The digest a config member name encodes (`<hex>.json`, `blobs/sha256/<hex>`, `blobs/sha512/<hex>`), if any. */
function digestInName(name: string): Digest | undefined {
  const legacy = /^([a-f0-9]{64})\.json$/.exec(name);
  if (legacy) return Digest.parse(`sha256:${legacy[1]}`);
  const blob = /^blobs\/(sha256\/[a-f0-9]{64}|sha512\/[a-f0-9]{128})$/.exec(name);
  if (blob) return Digest.parse((blob[1] as string).replace('/', ':'));
  return undefined;
}

/** A tag in its full form for comparisons (`x:1` and `docker.io/library/x:1` are the same image name). */
function fullTag(tag: string): string {
  return tryParseReference(tag)?.toString() ?? tag;
}

/**
 * manifest.json (what `docker load` reads) and the OCI manifest of the same image must name the
 * same layer blobs, in the same order: an archive that says two different things is refused.
 */
function checkSameLayers(tar: TarFile, entry: ManifestEntry, image: StoredImage, what: string): void {
  if (entry.Layers.length !== image.layers.length) {
    throw new ArchiveError(
      'ERR_ARCHIVE_FORMAT',
      `${what}: manifest.json lists ${entry.Layers.length} layers, the image's OCI manifest ${image.digest.toString()} ${image.layers.length}`,
    );
  }
  for (const [j, ref] of entry.Layers.entries()) {
    const l = image.layers[j] as Layer;
    const m = tar.resolve(ref, `${what}.Layers[${j}]`);
    if (m.name !== `blobs/${l.digest.algorithm}/${l.digest.hex}`) {
      throw new ArchiveError(
        'ERR_ARCHIVE_FORMAT',
        `${what}.Layers[${j}]: ${ref} is not layer ${j} of the image's OCI manifest (${l.digest.toString()})`,
      );
    }
  }
}

/** An opened docker-archive. `close()` removes the temp copy of a gzip archive. */
export class DockerArchive {
  private constructor(
    readonly file: string,
    readonly images: readonly DockerArchiveImage[],
    /** The OCI layout inside a Docker 25+ archive. */
    readonly layout: OciLayoutReader | undefined,
    private readonly tar: TarFile,
  ) {}

  /** Which layout the archive has. */
  get format(): 'legacy' | 'oci' {
    return this.layout ? 'oci' : 'legacy';
  }

  /** Opens, indexes and (with `verify`, the default) fully verifies a docker-archive. */
  static async open(file: string, options: ReadOptions & TarFileOptions = {}): Promise<DockerArchive> {
    const tar = await TarFile.open(file, options);
    try {
      return await DockerArchive.read(tar, file, options);
    } catch (e) {
      await tar.close();
      throw e;
    }
  }

  private static async read(tar: TarFile, label: string, options: ReadOptions): Promise<DockerArchive> {
    const max = options.limits?.maxBytes ?? 4 * 1024 * 1024;
    const maxLayers = options.maxLayers ?? 1000;
    if (!tar.has('manifest.json')) {
      throw new ArchiveError(
        'ERR_ARCHIVE_FORMAT',
        `${label}: no manifest.json: not a docker-archive (or a pre-1.10 one, not supported)`,
      );
    }
    const entries = parseDockerManifest(
      await tar.read('manifest.json', max, `${label}: manifest.json`),
      label,
      options,
      maxLayers,
    );
    let layout: OciLayoutReader | undefined;
    const byConfig = new Map<string, Awaited<ReturnType<OciLayoutReader['imageAt']>>>();
    if (tar.has('oci-layout') && tar.has('index.json')) {
      layout = await OciLayoutReader.fromTar(tar, label, { ...options, verify: false }, async () => {});
      for (const e of layout.entries()) {
        let img: StoredImage;
        try {
          img = await layout.imageAt(e.descriptor);
        } catch (err) {
          // Docker 25.0.0 wrote OCI manifests with no layers (moby#47065); `docker load` reads
          // manifest.json only, and so do we for such an image.
          if (err instanceof ArchiveError && err.code === 'ERR_LAYER_COUNT_MISMATCH') continue;
          throw err;
        }
        byConfig.set(img.manifest.config.digest.toString(), img);
      }
    }
    const images: DockerArchiveImage[] = [];
    for (const [i, entry] of entries.entries()) {
      const what = `${label}: manifest.json[${i}]`;
      const configMember = tar.resolve(entry.Config, `${what}.Config`);
      const rawConfig = await tar.read(entry.Config, max, `${what}.Config`);
      const configDigest = sha256(rawConfig);
      const named = digestInName(configMember.name) ?? digestInName(entry.Config);
      const got = named?.algorithm === 'sha512' ? hash('sha512', rawConfig) : configDigest;
      if (named !== undefined && !named.equals(got)) {
        throw new ArchiveError(
          'ERR_DIGEST_MISMATCH',
          `${what}: config ${entry.Config}: digest mismatch (expected ${named.toString()}, got ${got.toString()})`,
        );
      }
      const config = parseConfig(rawConfig, undefined, options.limits);
      checkLayerCount(entry.Layers.length, config.rootfs.diff_ids.length, maxLayers, what);
      const fromLayout = byConfig.get(configDigest.toString()) ?? (named ? byConfig.get(named.toString()) : undefined);
      if (fromLayout) checkSameLayers(tar, entry, fromLayout, what);
      let image: StoredImage;
      // Plain layers whose sha256 the index pass computed from these very bytes and found equal
      // to their digest and diff_id: verified already, not hashed again here (reading them later,
      // `compressed()` still verifies what it reads).
      const hashed = new Set<Layer>();
      if (fromLayout) {
        // A fresh object per entry: two entries may share a config (and so the layout's image).
        image = new StoredImage(
          fromLayout.manifest,
          fromLayout.rawManifest,
          fromLayout.config,
          fromLayout.rawConfig,
          fromLayout.layers,
          fromLayout.digest,
        );
        for (const l of image.layers) {
          const blob = `blobs/${l.digest.algorithm}/${l.digest.hex}`;
          const m = tar.has(blob) ? tar.resolve(blob, `${what}: layer ${l.digest.toString()}`) : undefined;
          if (
            m?.digest?.equals(l.digest) &&
            m.size === l.size &&
            l.digest.equals(l.diffId) &&
            layerCompression(l.mediaType) === 'none'
          )
            hashed.add(l);
        }
      } else {
        const layers: StoredLayer[] = [];
        const descriptors: { mediaType: string; digest: string; size: number }[] = [];
        for (const [j, ref] of entry.Layers.entries()) {
          const lwhat = `${what}.Layers[${j}]`;
          const m = tar.resolve(ref, lwhat);
          if (!m.digest) throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${lwhat}: ${ref} was not hashed`);
          const open = () => fileRange(tar.file, m.dataOffset, m.size);
          // docker writes plain tars; other producers (containerd's image store behind Docker 25+,
          // hand-made archives) name gzip or zstd blobs
          const head = await peek(open, 4);
          const gz = isGzip(head) || isZstd(head);
          const diffId = config.rootfs.diff_ids[j] as Digest;
          if (!gz && !m.digest.equals(diffId)) {
            throw new ArchiveError(
              'ERR_DIGEST_MISMATCH',
              `${lwhat}: ${ref}: diff_id mismatch (expected ${diffId.toString()}, got ${m.digest.toString()})`,
            );
          }
          const mediaType = isZstd(head) ? OCI_LAYER_ZSTD : gz ? OCI_LAYER_GZIP : OCI_LAYER;
          const layer = new StoredLayer(m.digest, diffId, m.size, mediaType, open, what, options.maxLayerBytes);
          if (!gz) hashed.add(layer); // m.digest (this member's bytes) == diffId, checked above
          layers.push(layer);
          descriptors.push({ mediaType, digest: m.digest.toString(), size: m.size });
        }
        const manifestDoc = {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: OCI_CONFIG, digest: configDigest.toString(), size: rawConfig.length },
          layers: descriptors,
        };
        const rawManifest = encoder.encode(JSON.stringify(manifestDoc));
        image = new StoredImage(parseImageManifest(rawManifest), rawManifest, config, rawConfig, layers);
      }
      if (options.verify ?? true) await verifyLayers(image, (l) => hashed.has(l));
      images.push(Object.assign(image, { repoTags: entry.RepoTags, configDigest }) as StoredImage & DockerArchiveImage);
    }
    return new DockerArchive(label, images, layout, tar);
  }

  /** The image tagged `tag` (`name:tag` as in RepoTags), or the only image when omitted. */
  image(tag?: string): DockerArchiveImage {
    if (tag === undefined) {
      if (this.images.length !== 1)
        throw new ArchiveError('ERR_IMAGE_NOT_FOUND', `${this.file}: ${this.images.length} images; name one by tag`);
      return this.images[0] as DockerArchiveImage;
    }
    const full = fullTag(tag);
    const found =
      this.images.find((i) => i.repoTags.includes(tag)) ??
      this.images.find((i) => i.repoTags.some((t) => fullTag(t) === full));
    if (!found)
      throw new ArchiveError(
        'ERR_IMAGE_NOT_FOUND',
        `${this.file}: no image tagged ${tag} (have ${this.images.flatMap((i) => i.repoTags).join(', ') || 'none'})`,
      );
    return found;
  }

  async close(): Promise<void> {
    await this.tar.close();
  }
}

/** Options of `writeDockerArchive`. */
export interface DockerArchiveWriteOptions {
  /**
   * `legacy` (default): `manifest.json`, `repositories`, `<config hex>.json`,
   * `<diff_id hex>/layer.tar` — what docker 20.10 and later load. `oci`: the Docker 25+ layout
   * (an OCI layout plus a manifest.json pointing into `blobs/sha256/`).
   */
  layout?: 'legacy' | 'oci';
  /** Where compressed layers are decompressed before being written (default: next to the output). */
  tempDir?: string;
}

function addRepository(into: Record<string, Record<string, string>>, repo: string, tag: string, id: string): void {
  const tags = into[repo] ?? {};
  tags[tag] = id;
  into[repo] = tags;
}

/** A tag as docker writes it in RepoTags/repositories: `name:tag` (Docker Hub names short). */
function splitTag(tag: string): { repo: string; tag: string } {
  const at = tag.lastIndexOf(':');
  if (at > tag.lastIndexOf('/') && at > 0) return { repo: tag.slice(0, at), tag: tag.slice(at + 1) };
  return { repo: tag, tag: 'latest' };
}

/**
 * Writes `entries` as one docker-archive. Layers are written uncompressed (docker's own form):
 * a layer whose media type is plain tar is copied as it is (its digest is kept); a compressed
 * layer is decompressed to a staging file first (verified against its diff_id) — its digest
 * then becomes its diff_id. A layer shared by several images is written once. Output is
 * deterministic (sorted members, mtime 0) and goes to a staging file renamed into place.
 */
export async function writeDockerArchive(
  file: string,
  entries: { image: Image; tags?: string[] }[],
  options: DockerArchiveWriteOptions = {},
): Promise<void> {
  const stage = await stagingDir(options.tempDir ? `${options.tempDir}/x` : file);
  try {
    const plain = new Map<string, { digest: Digest; size: number; open: () => AsyncIterable<Uint8Array> }>();
    for (const { image } of entries) {
      for (const l of image.layers) {
        const key = l.diffId.toString();
        if (plain.has(key)) continue;
        if (layerCompression(l.mediaType) === 'none' && l.digest.equals(l.diffId)) {
          plain.set(key, { digest: l.diffId, size: l.size, open: () => l.compressed() });
        } else {
          const p = `${stage}/${l.diffId.hex}.tar`;
          const got = await writeStreamToFile(l.uncompressed(), p, null); // uncompressed() verifies the diff_id
          plain.set(key, { digest: l.diffId, size: got.size, open: () => fileRange(p, 0, got.size) });
        }
      }
    }
    const layerOf = (image: Image) =>
      image.layers.map(
        (l) =>
          plain.get(l.diffId.toString()) as { digest: Digest; size: number; open: () => AsyncIterable<Uint8Array> },
      );
    const manifestJson: { Config: string; RepoTags: string[] | null; Layers: string[] }[] = [];
    const repositories: Record<string, Record<string, string>> = {};
    let members: OutMember[];
    if ((options.layout ?? 'legacy') === 'legacy') {
      members = [];
      for (const { image, tags } of entries) {
        // Docker names an image by the sha256 of its config, whatever digest a manifest used.
        const cfg = sha256(image.rawConfig);
        members.push(bytesMember(`${cfg.hex}.json`, image.rawConfig));
        const layers = layerOf(image);
        for (const l of layers) {
          members.push({ name: `${l.digest.hex}/layer.tar`, size: l.size, open: l.open });
          members.push(bytesMember(`${l.digest.hex}/VERSION`, encoder.encode('1.0')));
        }
        manifestJson.push({
          Config: `${cfg.hex}.json`,
          RepoTags: tags?.length ? tags : null,
          Layers: layers.map((l) => `${l.digest.hex}/layer.tar`),
        });
        const top = layers[layers.length - 1];
        for (const t of tags ?? []) {
          const { repo, tag } = splitTag(t);
          if (top) addRepository(repositories, repo, tag, top.digest.hex);
        }
      }
    } else {
      const prepared = entries.map(({ image, tags }) => {
        const layers = layerOf(image);
        const configDigest = sha256(image.rawConfig);
        const doc = {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: {
            mediaType: OCI_CONFIG,
            digest: configDigest.toString(),
            size: image.rawConfig.length,
          },
          layers: layers.map((l) => ({ mediaType: OCI_LAYER, digest: l.digest.toString(), size: l.size })),
        };
        manifestJson.push({
          Config: `blobs/sha256/${configDigest.hex}`,
          RepoTags: tags?.length ? tags : null,
          Layers: layers.map((l) => `blobs/sha256/${l.digest.hex}`),
        });
        const top = layers[layers.length - 1];
        for (const t of tags ?? []) {
          const { repo, tag } = splitTag(t);
          if (top) addRepository(repositories, repo, tag, top.digest.hex);
        }
        const raw = encoder.encode(JSON.stringify(doc));
        return { image, configDigest, raw, mediaType: OCI_MANIFEST, layers, tags: tags ?? [] };
      });
      members = layoutMembers(prepared, (tag) => {
        const full = tag.includes('/') || !tag.includes(':') ? tag : `docker.io/library/${tag}`;
        return { [CONTAINERD_IMAGE_NAME_ANNOTATION]: full, [REF_NAME_ANNOTATION]: splitTag(tag).tag };
      });
    }
    members.push(bytesMember('manifest.json', encoder.encode(JSON.stringify(manifestJson))));
    if (Object.keys(repositories).length)
      members.push(bytesMember('repositories', encoder.encode(JSON.stringify(repositories))));
    await writeTarFile(file, members);
  } finally {
    await removeQuietly(stage);
  }
}
