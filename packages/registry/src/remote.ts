/**
 * Remote images: the `Image`/`Layer`/`Index` interfaces over a registry (so
 * `copyImage(await pullImage(...), ociLayoutSink(dir))` pulls into an OCI layout), pushing images
 * and indexes, and `registrySink` (so `copyImage(src, registrySink(ref))` pushes).
 */
import { type Digest, Hasher } from '@stevedore/core';
import {
  type Descriptor,
  type Image,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type ImageSink,
  type Index,
  isImageIndex,
  isIndex,
  isManifest,
  layerCompression,
  markVerified,
  type Platform,
  parseConfig,
  parseImageIndex,
  parseReference,
  type Reference,
  selectPlatform,
} from '@stevedore/image';
import type { CallOptions, RegistryClient, Repo } from './client.js';
import { decompress } from './decompress.js';
import { RegistryError } from './errors.js';

/** A layer of a remote image; `compressed()` streams from the registry, verified (and resumed). */
export class RemoteLayer implements Layer {
  constructor(
    private readonly client: RegistryClient,
    readonly repo: Repo,
    readonly descriptor: Descriptor,
    readonly diffId: Digest,
    private readonly signal?: AbortSignal,
  ) {}
  get digest(): Digest {
    return this.descriptor.digest;
  }
  get size(): number {
    return this.descriptor.size;
  }
  get mediaType(): string {
    return this.descriptor.mediaType;
  }
  compressed(): AsyncIterable<Uint8Array> {
    // fetchBlob checks size and digest before it completes: a sink need not hash it again
    return markVerified(this.client.fetchBlob(this.repo, this.digest, this.size, { signal: this.signal }), {
      digest: this.digest,
      size: this.size,
    });
  }
  /**
   * The blob's bytes WITHOUT the digest check (size and resume still apply): only for a
   * consumer that verifies the digest itself before trusting or keeping anything — the layer
   * engine does (`applyLayer` with `expectedDigest`), so a pull that extracts while it
   * downloads hashes the blob once instead of twice.
   */
  compressedUnverified(): AsyncIterable<Uint8Array> {
    return this.client.fetchBlob(this.repo, this.digest, this.size, { signal: this.signal, verify: false });
  }
  /** The layer's tar (gzip and zstd decompressed), verified against the diff_id at its end. */
  async *uncompressed(): AsyncIterable<Uint8Array> {
    const compression = layerCompression(this.mediaType) ?? 'none';
    const h = new Hasher(this.diffId.algorithm);
    const source =
      compression === 'none'
        ? this.compressed()
        : decompress(compression, this.compressed(), {
            registry: this.repo.registry,
            repository: this.repo.repository,
            operation: `pull layer ${this.digest}`,
          });
    for await (const c of source) {
      h.update(c);
      yield c;
    }
    h.digest().verify(this.diffId, `layer ${this.digest}: diff_id`);
  }
}

type Layer = import('@stevedore/image').Layer;

/** One image on a registry, with its manifest and config fetched and verified. */
export class RemoteImage implements Image {
  constructor(
    readonly ref: Reference,
    readonly digest: Digest,
    readonly manifest: ImageManifest,
    readonly rawManifest: Uint8Array,
    readonly config: ImageConfig,
    readonly rawConfig: Uint8Array,
    readonly layers: readonly RemoteLayer[],
  ) {}
}

/** A multi-platform index on a registry. */
export class RemoteIndex implements Index {
  constructor(
    private readonly client: RegistryClient,
    readonly ref: Reference,
    readonly digest: Digest,
    readonly index: ImageIndex,
    readonly rawManifest: Uint8Array,
    private readonly options: CallOptions = {},
  ) {}
  get manifests(): readonly Descriptor[] {
    return this.index.manifests;
  }
  async image(d: Descriptor): Promise<Image> {
    if (!isManifest(d.mediaType)) throw this.kindError(d, 'an image manifest');
    const r = await pull(this.client, this.ref.withDigest(d.digest), this.options);
    if (!(r instanceof RemoteImage)) throw this.kindError(d, 'an image manifest');
    return r;
  }
  async childIndex(d: Descriptor): Promise<Index> {
    if (!isIndex(d.mediaType)) throw this.kindError(d, 'an index');
    const r = await pull(this.client, this.ref.withDigest(d.digest), this.options);
    if (!(r instanceof RemoteIndex)) throw this.kindError(d, 'an index');
    return r;
  }
  async imageFor(platform?: Platform | string): Promise<Image> {
    const d = selectPlatform(this.index, platform);
    if (!d) {
      throw new RegistryError(
        'ERR_PLATFORM_NOT_FOUND',
        `no image for ${typeof platform === 'string' ? platform : platform ? `${platform.os}/${platform.architecture}` : 'this platform'}`,
        {
          registry: this.ref.registry,
          repository: this.ref.repository,
          operation: `pull ${this.ref}`,
        },
      );
    }
    return isIndex(d.mediaType) ? (await this.childIndex(d)).imageFor(platform) : this.image(d);
  }
  private kindError(d: Descriptor, want: string): RegistryError {
    return new RegistryError('ERR_REGISTRY_PROTOCOL', `${d.digest} (${d.mediaType}) is not ${want}`, {
      registry: this.ref.registry,
      repository: this.ref.repository,
      operation: `pull ${this.ref}`,
    });
  }
}

/** Fetches what `ref` names: an image, or an index (not resolved to a platform). */
export async function pull(
  client: RegistryClient,
  ref: Reference,
  o: CallOptions = {},
): Promise<RemoteImage | RemoteIndex> {
  const m = await client.getManifest(ref, o);
  if (isImageIndex(m.manifest)) return new RemoteIndex(client, ref, m.digest, m.manifest, m.raw, o);
  const manifest = m.manifest;
  const rawConfig = await client.blobBytes(ref, manifest.config.digest, manifest.config.size, o);
  const config = parseConfig(rawConfig, manifest.config.mediaType);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new RegistryError(
      'ERR_REGISTRY_PROTOCOL',
      `manifest has ${manifest.layers.length} layers but the config has ${diffIds.length} diff_ids`,
      { registry: ref.registry, repository: ref.repository, operation: `pull ${ref}` },
    );
  }
  const layers = manifest.layers.map((d, i) => new RemoteLayer(client, ref, d, diffIds[i]!, o.signal));
  return new RemoteImage(ref, m.digest, manifest, m.raw, config, rawConfig, layers);
}

/** Pulls one image: an index is resolved with `selectPlatform` (default: this host's platform). */
export async function pullImage(
  client: RegistryClient,
  ref: Reference | string,
  o: CallOptions & { platform?: Platform | string } = {},
): Promise<Image> {
  const r = await pull(client, typeof ref === 'string' ? parseReference(ref) : ref, o);
  return r instanceof RemoteIndex ? r.imageFor(o.platform) : r;
}

/**
 * Pushes an image's blobs (skipping what is there; mounting layers that come from another
 * repository of the same registry) and its manifest under each tag (or by digest). Returns the
 * manifest digest.
 */
export async function pushImage(
  client: RegistryClient,
  ref: Reference,
  image: Image,
  o: CallOptions & { tags?: string[] } = {},
): Promise<Digest> {
  await client.pushBlob(
    ref,
    image.manifest.config.digest,
    image.manifest.config.size,
    async function* () {
      yield image.rawConfig;
    },
    o,
  );
  // Layers go up in parallel (the client's per-registry limit bounds the connections).
  await Promise.all(
    image.layers.map((l) => {
      const mountFrom =
        l instanceof RemoteLayer && l.repo.registry === ref.registry && l.repo.repository !== ref.repository
          ? l.repo.repository
          : undefined;
      return client.pushBlob(ref, l.digest, l.size, () => l.compressed(), {
        ...o,
        ...(mountFrom ? { mountFrom } : {}),
      });
    }),
  );
  return pushManifestTo(client, ref, image.rawManifest, image.manifest.mediaType, o);
}

async function pushManifestTo(
  client: RegistryClient,
  ref: Reference,
  raw: Uint8Array,
  mediaType: string,
  o: CallOptions & { tags?: string[] },
): Promise<Digest> {
  const tags = o.tags?.length ? o.tags : ref.tag ? [ref.tag] : [];
  const base = parseReference(`${ref.registry}/${ref.repository}`, { defaultTag: false });
  let digest: Digest | undefined;
  if (tags.length === 0) digest = await client.putManifest(base, raw, mediaType, o);
  for (const t of tags) digest = await client.putManifest(base.withTag(t), raw, mediaType, o);
  return digest!;
}

/** Pushes an index: every image it lists (from `index.image`), then the index document itself. */
export async function pushIndex(
  client: RegistryClient,
  ref: Reference,
  index: Index,
  o: CallOptions & { tags?: string[] } = {},
): Promise<Digest> {
  const base = parseReference(`${ref.registry}/${ref.repository}`, { defaultTag: false });
  for (const d of index.manifests) {
    if (isManifest(d.mediaType)) await pushImage(client, base, await index.image(d), { ...o, tags: [] });
    else if (isIndex(d.mediaType)) await pushIndex(client, base, await index.childIndex(d), { ...o, tags: [] });
  }
  parseImageIndex(index.rawManifest);
  return pushManifestTo(client, ref, index.rawManifest, index.index.mediaType, o);
}

/** A sink pushing each image to `target` (tags from `putImage`, else the reference's tag). */
export function registrySink(
  client: RegistryClient,
  target: Reference | string,
  o: CallOptions = {},
): ImageSink & { lastDigest: Digest | undefined } {
  const ref = typeof target === 'string' ? parseReference(target) : target;
  const sink = {
    lastDigest: undefined as Digest | undefined,
    async putImage(image: Image, p: { tags?: string[] } = {}) {
      sink.lastDigest = await pushImage(client, ref, image, { ...o, ...(p.tags ? { tags: p.tags } : {}) });
    },
    async close() {},
  };
  return sink;
}
