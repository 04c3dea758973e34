/**
 * Building images from layers and a config, like `docker import` (no base) and `crane append`
 * (a base image plus layers). The result is an in-memory `Image` whose layers stream from their
 * sources; write it anywhere with `copyImage` (OCI layout, docker-archive, registry, store).
 */
import { createReadStream } from 'node:fs';
import { Digest, hashFile, scanLayer, sha256 } from '@stevedore/core';
import { ArchiveError } from './archive/io.js';
import { StoredImage, StoredLayer } from './archive/stored.js';
import {
  DOCKER_CONFIG,
  DOCKER_LAYER,
  DOCKER_LAYER_GZIP,
  DOCKER_MANIFEST,
  OCI_CONFIG,
  OCI_LAYER,
  OCI_LAYER_GZIP,
  OCI_LAYER_ZSTD,
  OCI_MANIFEST,
} from './media-types.js';
import type { Image, Layer } from './model.js';
import { parseConfig, parseImageManifest } from './schema.js';

const encoder = new TextEncoder();

/**
 * A layer from a blob file (plain tar, gzip or zstd, by magic bytes). Its digest is computed
 * from the file and its diff_id from the decompressed bytes (both streamed: flat memory); pass
 * `diffId` when known to skip decompressing now (it is still verified when the layer is read).
 */
export async function layerFromFile(
  file: string,
  options: { diffId?: Digest; mediaTypes?: 'oci' | 'docker' } = {},
): Promise<Layer> {
  const { digest, size } = await hashFile(file);
  const head = await firstBytes(file, 4);
  const kind = head[0] === 0x1f && head[1] === 0x8b ? 'gzip' : head[0] === 0x28 && head[1] === 0xb5 ? 'zstd' : 'tar';
  const docker = options.mediaTypes === 'docker';
  if (kind === 'zstd' && docker) {
    throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${file}: Docker media types have no zstd layer; use OCI media types`);
  }
  const mediaType =
    kind === 'gzip'
      ? docker
        ? DOCKER_LAYER_GZIP
        : OCI_LAYER_GZIP
      : kind === 'zstd'
        ? OCI_LAYER_ZSTD
        : docker
          ? DOCKER_LAYER
          : OCI_LAYER;
  let diffId = options.diffId;
  if (!diffId) {
    if (kind === 'tar') diffId = digest;
    else {
      const scan = await scanLayer(createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>);
      diffId = Digest.parse(scan.diffId);
    }
  }
  const open = () => createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>;
  return new StoredLayer(digest, diffId, size, mediaType, open, file);
}

async function firstBytes(file: string, n: number): Promise<Uint8Array> {
  for await (const chunk of createReadStream(file, { start: 0, end: n - 1 })) return new Uint8Array(chunk as Buffer);
  return new Uint8Array();
}

export interface BuildOptions {
  /** Extra history text for the appended layers (`created_by`), one per layer or one for all. */
  createdBy?: string | string[];
  comment?: string;
  /** Seconds since the epoch for `created` (default: now); fix it for reproducible images. */
  created?: number;
  /** Overrides merged into the config's `config` (Cmd, Entrypoint, Env, WorkingDir, Labels…). */
  config?: Record<string, unknown>;
  /** Platform of an image built without a base (default linux/amd64). */
  platform?: { os: string; architecture: string; variant?: string };
  /** Media types of the manifest: those of the base (default), or OCI / Docker. */
  mediaTypes?: 'oci' | 'docker';
}

/**
 * `base` + `layers` → a new image: diff_ids and history appended, config overrides applied,
 * a manifest listing the base's layers then the new ones. With no base, an image of just the
 * given layers (`docker import`). Media types of the new layers must fit the manifest's family.
 */
export function appendLayers(base: Image | undefined, layers: readonly Layer[], options: BuildOptions = {}): Image {
  const docker = options.mediaTypes ? options.mediaTypes === 'docker' : base?.manifest.mediaType === DOCKER_MANIFEST;
  const created = new Date((options.created ?? Date.now() / 1000) * 1000).toISOString();
  // Keep the base config's unknown fields: start from its raw JSON.
  const cfg = (base ? JSON.parse(new TextDecoder().decode(base.rawConfig)) : {}) as Record<string, unknown> & {
    rootfs?: { type: string; diff_ids: string[] };
    history?: Record<string, unknown>[];
    config?: Record<string, unknown>;
  };
  if (!base) {
    const p = options.platform ?? { os: 'linux', architecture: 'amd64' };
    cfg.architecture = p.architecture;
    cfg.os = p.os;
    if (p.variant) cfg.variant = p.variant;
  }
  cfg.created = created;
  cfg.rootfs = {
    type: 'layers',
    diff_ids: [...(cfg.rootfs?.diff_ids ?? []), ...layers.map((l) => l.diffId.toString())],
  };
  const by = Array.isArray(options.createdBy)
    ? options.createdBy
    : layers.map(() => options.createdBy ?? 'stevedore append');
  cfg.history = [
    ...(cfg.history ?? []),
    ...layers.map((_, i) => ({
      created,
      created_by: by[i] ?? by[by.length - 1] ?? 'stevedore append',
      ...(options.comment ? { comment: options.comment } : {}),
    })),
  ];
  if (options.config) cfg.config = { ...(cfg.config ?? {}), ...options.config };
  const rawConfig = encoder.encode(JSON.stringify(cfg));
  const config = parseConfig(rawConfig);
  const all = [...(base?.layers ?? []), ...layers];
  for (const l of layers) {
    const dockerType = l.mediaType.startsWith('application/vnd.docker.');
    if (dockerType !== docker) {
      throw new ArchiveError(
        'ERR_ARCHIVE_FORMAT',
        `layer ${l.digest}: media type ${l.mediaType} does not fit ${docker ? 'a Docker' : 'an OCI'} manifest`,
      );
    }
  }
  const manifest = {
    schemaVersion: 2,
    mediaType: docker ? DOCKER_MANIFEST : OCI_MANIFEST,
    config: {
      mediaType: docker ? DOCKER_CONFIG : OCI_CONFIG,
      digest: sha256(rawConfig).toString(),
      size: rawConfig.length,
    },
    layers: all.map((l) => ({ mediaType: l.mediaType, digest: l.digest.toString(), size: l.size })),
  };
  const rawManifest = encoder.encode(JSON.stringify(manifest));
  return new StoredImage(parseImageManifest(rawManifest, manifest.mediaType), rawManifest, config, rawConfig, all);
}
