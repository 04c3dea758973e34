// Fixtures built by code: layer tars, image configs, legacy docker-archives (hostile ones too).

import { open } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { type LayerEntryInput, sha256, TarWriter, writeTar } from '@stevedore/core';

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
