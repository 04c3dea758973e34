// Fixtures built by code: layer tars, image configs, legacy docker-archives (hostile ones too).

import { mkdirSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { type LayerEntryInput, sha256, sha512, TarWriter, writeTar } from '@stevedore/core';

const enc = new TextEncoder();

export function layerTar(files: Record<string, string>): Uint8Array {
  return writeTar(
    Object.entries(files).map(([p, c]) => ({
      entry: { path: p, type: 'file', mode: 0o644 } as LayerEntryInput,
      data: enc.encode(c),
    })),
  );
}

export function configFor(layers: Uint8Array[], extra: Record<string, unknown> = {}): Uint8Array {
  return enc.encode(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(l).toString()) },
      ...extra,
    }),
  );
}

export interface LegacyImage {
  tags: string[];
  layers: Uint8Array[];
  /** Store layer i gzip-compressed. */
  gzipLayers?: boolean;
  config?: Uint8Array;
}

/** A legacy docker-archive as `docker save` (≤ 24) writes it; `mutate` can make it hostile. */
export function legacyArchive(
  images: LegacyImage[],
  mutate: (m: {
    manifest: Record<string, unknown>[];
    members: { entry: LayerEntryInput; data?: Uint8Array }[];
  }) => void = () => {},
): Uint8Array {
  const members: { entry: LayerEntryInput; data?: Uint8Array }[] = [];
  const manifest: Record<string, unknown>[] = [];
  const seen = new Set<string>();
  for (const img of images) {
    const config = img.config ?? configFor(img.layers);
    const cfgHex = sha256(config).hex;
    if (!seen.has(cfgHex)) members.push({ entry: { path: `${cfgHex}.json`, type: 'file' }, data: config });
    seen.add(cfgHex);
    const paths: string[] = [];
    for (const l of img.layers) {
      const stored = img.gzipLayers ? new Uint8Array(gzipSync(l)) : l;
      const id = sha256(stored).hex;
      if (!seen.has(id)) {
        members.push({ entry: { path: `${id}/`, type: 'directory' } });
        members.push({ entry: { path: `${id}/layer.tar`, type: 'file' }, data: stored });
      }
      seen.add(id);
      paths.push(`${id}/layer.tar`);
    }
    manifest.push({ Config: `${cfgHex}.json`, RepoTags: img.tags, Layers: paths });
  }
  const m = { manifest, members };
  mutate(m);
  m.members.push({ entry: { path: 'manifest.json', type: 'file' }, data: enc.encode(JSON.stringify(m.manifest)) });
  return writeTar(m.members);
}

export async function collect(s: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of s) parts.push(new Uint8Array(c));
  return new Uint8Array(Buffer.concat(parts));
}

/** Streams members to a tar file (for archives too big to build in memory). */
export async function writeTarFileForTest(
  file: string,
  members: { name: string; data?: Uint8Array; size?: number; open?: () => AsyncIterable<Uint8Array> }[],
): Promise<void> {
  const w = new TarWriter('pax');
  const fh = await open(file, 'w');
  const put = async (b: Uint8Array) => {
    if (b.length) await fh.write(b);
  };
  for (const m of members) {
    await put(w.header({ path: m.name, type: 'file', size: m.data?.length ?? m.size ?? 0 }));
    if (m.data) await put(w.data(m.data));
    else if (m.open) for await (const c of m.open()) await put(w.data(c));
    await put(w.endEntry());
  }
  await put(w.finish());
  await fh.close();
}

/** One image of a hand-written archive: config bytes, plain layer tars (base first), tags. */
export interface HandImage {
  config: Uint8Array;
  layers: Uint8Array[];
  /** Familiar tags as `docker save` writes them (`x:1`, `localhost:5000/a/b:1`); none = saved by ID. */
  tags: string[];
  platform?: { architecture: string; os: string; variant?: string };
}

/** `docker.io/library/x:1` for `x:1`, as Docker 25 writes `io.containerd.image.name`. */
function fullName(tag: string): string {
  const [first] = tag.split('/');
  const hasHost = tag.includes('/') && (first!.includes('.') || first!.includes(':') || first === 'localhost');
  if (hasHost) return tag;
  return tag.includes('/') ? `docker.io/${tag}` : `docker.io/library/${tag}`;
}

/**
 * A docker-archive laid out as Docker 25+ `docker save` writes it (moby image/tarexport/save.go):
 * `blobs/sha256/` holds each config, each layer tar (named by its diff_id), a legacy v1 JSON per
 * layer and one OCI manifest per image (its config descriptor carries the platform); `index.json`
 * has one entry per tag (annotations `io.containerd.image.name` and `org.opencontainers.image.ref.name`,
 * and the platform), none for an image saved by ID; `manifest.json` entries point into
 * `blobs/sha256/`; `repositories` maps familiar names to the top layer. `emptyOciLayers` writes
 * what Docker 25.0.0 wrote (OCI manifests with `layers: []`, moby#47065).
 */
export function docker25Archive(images: HandImage[], opts: { emptyOciLayers?: boolean } = {}): Uint8Array {
  const blobs = new Map<string, Uint8Array>();
  const put = (b: Uint8Array) => {
    const d = sha256(b);
    blobs.set(d.hex, b);
    return { digest: d.toString(), size: b.length };
  };
  const manifestJson: Record<string, unknown>[] = [];
  const index: Record<string, unknown>[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  for (const img of images) {
    const platform = img.platform ?? { architecture: 'amd64', os: 'linux' };
    const cfg = put(img.config);
    const layers = img.layers.map((l, i) => {
      put(enc.encode(JSON.stringify({ id: sha256(l).hex, created: '1970-01-01T00:00:00Z', os: 'linux', n: i })));
      return put(l);
    });
    const manifest = put(
      enc.encode(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg, platform },
          layers: opts.emptyOciLayers
            ? []
            : layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
        }),
      ),
    );
    for (const tag of img.tags) {
      const at = tag.lastIndexOf(':');
      const repo = tag.slice(0, at);
      const t = tag.slice(at + 1);
      index.push({
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...manifest,
        annotations: { 'io.containerd.image.name': fullName(tag), 'org.opencontainers.image.ref.name': t },
        platform,
      });
      repositories[repo] = { ...repositories[repo], [t]: (layers[layers.length - 1]?.digest ?? '').slice(7) };
    }
    manifestJson.push({
      Config: `blobs/sha256/${cfg.digest.slice(7)}`,
      RepoTags: img.tags.length ? img.tags : null,
      Layers: layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`),
    });
  }
  const members: { entry: LayerEntryInput; data?: Uint8Array }[] = [
    { entry: { path: 'blobs/', type: 'directory' } },
    { entry: { path: 'blobs/sha256/', type: 'directory' } },
  ];
  for (const [hex, b] of [...blobs].sort(([a], [c]) => a.localeCompare(c))) {
    members.push({ entry: { path: `blobs/sha256/${hex}`, type: 'file' }, data: b });
  }
  const file = (p: string, v: unknown) =>
    members.push({ entry: { path: p, type: 'file' }, data: enc.encode(JSON.stringify(v)) });
  file('index.json', { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: index });
  file('manifest.json', manifestJson);
  file('oci-layout', { imageLayoutVersion: '1.0.0' });
  if (Object.keys(repositories).length) file('repositories', repositories);
  return writeTar(members);
}

/** A blob written into a layout directory under `blobs/<alg>/<hex>`; returns its descriptor fields. */
export function putBlob(
  dir: string,
  bytes: Uint8Array,
  algorithm: 'sha256' | 'sha512' = 'sha256',
): { digest: string; size: number } {
  const d = algorithm === 'sha256' ? sha256(bytes) : sha512(bytes);
  mkdirSync(path.join(dir, 'blobs', algorithm), { recursive: true });
  writeFileSync(path.join(dir, 'blobs', algorithm, d.hex), bytes);
  return { digest: d.toString(), size: bytes.length };
}

/** Writes `oci-layout` and `index.json` (the given descriptors, as they are) into `dir`. */
export function writeLayoutIndex(
  dir: string,
  manifests: Record<string, unknown>[],
  extra: Record<string, unknown> = {},
) {
  mkdirSync(path.join(dir, 'blobs'), { recursive: true });
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests, ...extra }));
}

/**
 * Writes one image into a layout by hand: config and layer blobs (stored as given in `stored`,
 * with `mediaType`), and its manifest. Returns the manifest descriptor (not yet in index.json).
 */
export function handImage(
  dir: string,
  o: {
    config: Uint8Array;
    stored: Uint8Array[];
    mediaType: string;
    algorithm?: 'sha256' | 'sha512';
    annotations?: Record<string, string>;
  },
): { mediaType: string; digest: string; size: number } {
  const alg = o.algorithm ?? 'sha256';
  const config = putBlob(dir, o.config, alg);
  const layers = o.stored.map((b) => ({ mediaType: o.mediaType, ...putBlob(dir, b, alg) }));
  const manifest = putBlob(
    dir,
    enc.encode(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers,
        ...(o.annotations ? { annotations: o.annotations } : {}),
      }),
    ),
    alg,
  );
  return { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest };
}
