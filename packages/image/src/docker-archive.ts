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
 * each `layer.tar` as stored (media type `…layer.v1.tar` for plain tar, `+gzip` for gzip).
 * For plain layers `digest == diffId`. For a Docker 25+ archive, the manifest stored in the
 * OCI layout is used when one matches the entry's config.
 */
import { type Digest, sha256 } from '@stevedore/core';
import { ArchiveError, fileRange, isGzip, peek, removeQuietly, stagingDir, writeStreamToFile } from './archive/io.js';
import { checkLayerCount, type ReadOptions, StoredImage, StoredLayer, verifyLayers } from './archive/stored.js';
import { TarFile, type TarFileOptions } from './archive/tar-file.js';
import { bytesMember, type OutMember, writeTarFile } from './archive/tar-out.js';
import { parseJsonDocument } from './json.js';
import { layerCompression, OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST } from './media-types.js';
import type { Image, Layer } from './model.js';
import { CONTAINERD_IMAGE_NAME_ANNOTATION, layoutMembers, OciLayoutReader, REF_NAME_ANNOTATION } from './oci-layout.js';
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

/** The digest a config member name encodes (`<hex>.json`, `blobs/sha256/<hex>`), if any. */
function digestInName(name: string): string | undefined {
  const legacy = /^([a-f0-9]{64})\.json$/.exec(name);
  if (legacy) return `sha256:${legacy[1]}`;
  const blob = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(name);
  if (blob) return `sha256:${blob[1]}`;
  return undefined;
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
        const img = await layout.imageAt(e.descriptor);
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
      if (named !== undefined && named !== configDigest.toString()) {
        throw new ArchiveError(
          'ERR_DIGEST_MISMATCH',
          `${what}: config ${entry.Config}: digest mismatch (expected ${named}, got ${configDigest.toString()})`,
        );
      }
      const config = parseConfig(rawConfig, undefined, options.limits);
      checkLayerCount(entry.Layers.length, config.rootfs.diff_ids.length, maxLayers, what);
      const fromLayout = byConfig.get(configDigest.toString());
      let image: StoredImage;
      // Plain layers whose sha256 the index pass computed from these very bytes and found equal
      // to their digest and diff_id: verified already, not hashed again here (reading them later,
      // `compressed()` still verifies what it reads).
      const hashed = new Set<Layer>();
      if (fromLayout) {
        image = fromLayout;
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
          const gz = isGzip(await peek(open, 2));
          const diffId = config.rootfs.diff_ids[j] as Digest;
          if (!gz && !m.digest.equals(diffId)) {
            throw new ArchiveError(
              'ERR_DIGEST_MISMATCH',
              `${lwhat}: ${ref}: diff_id mismatch (expected ${diffId.toString()}, got ${m.digest.toString()})`,
            );
          }
          const mediaType = gz ? OCI_LAYER_GZIP : OCI_LAYER;
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
    const found = this.images.find((i) => i.repoTags.includes(tag) || i.repoTags.includes(`docker.io/library/${tag}`));
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
        const cfg = image.manifest.config.digest;
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
        const doc = {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: {
            mediaType: OCI_CONFIG,
            digest: image.manifest.config.digest.toString(),
            size: image.rawConfig.length,
          },
          layers: layers.map((l) => ({ mediaType: OCI_LAYER, digest: l.digest.toString(), size: l.size })),
        };
        manifestJson.push({
          Config: `blobs/sha256/${image.manifest.config.digest.hex}`,
          RepoTags: tags?.length ? tags : null,
          Layers: layers.map((l) => `blobs/sha256/${l.digest.hex}`),
        });
        const top = layers[layers.length - 1];
        for (const t of tags ?? []) {
          const { repo, tag } = splitTag(t);
          if (top) addRepository(repositories, repo, tag, top.digest.hex);
        }
        return { image, raw: encoder.encode(JSON.stringify(doc)), mediaType: OCI_MANIFEST, layers, tags: tags ?? [] };
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
