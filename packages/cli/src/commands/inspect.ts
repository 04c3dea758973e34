/** `inspect SRC` and `history SRC`, for any transport. */
import type { Image } from '@stevedore/image';
import type { RegistryClient } from '@stevedore/registry';
import type { Output } from '../output.js';
import { humanSize, type RegistryOpts, registryClient } from './common.js';
import { openSource, parseLocation, type Source } from './transports.js';

async function withSource<T>(
  text: string,
  o: RegistryOpts & { root?: string },
  f: (s: Source, c: () => RegistryClient) => Promise<T>,
) {
  const loc = parseLocation(text);
  let client: RegistryClient | undefined;
  const getClient = () => {
    client ??= registryClient(o);
    return client;
  };
  try {
    const source = await openSource(loc, { client: getClient, platform: o.platform, root: o.root });
    try {
      return await f(source, getClient);
    } finally {
      await source.close();
    }
  } finally {
    await client?.close();
  }
}

/** The fields of `skopeo inspect` and `docker image inspect`, from the manifest and config. */
export interface InspectResult {
  Name: string;
  Digest: string;
  Id: string;
  RepoTags: string[];
  RepoDigests: string[];
  Created: string | null;
  Author: string | null;
  DockerVersion: string | null;
  Architecture: string;
  Variant: string | null;
  Os: string;
  Labels: Record<string, string>;
  Env: string[];
  Config: Record<string, unknown>;
  RootFS: { Type: string; Layers: string[] };
  Layers: string[];
  LayersData: { MIMEType: string; Digest: string; Size: number }[];
  MediaType: string;
  Size: number;
}

export function describe(image: Image, name: string, repoTags: string[], repoDigests: string[]): InspectResult {
  const c = image.config;
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : null);
  return {
    Name: name,
    Digest: image.digest.toString(),
    Id: image.manifest.config.digest.toString(),
    RepoTags: repoTags,
    RepoDigests: repoDigests,
    Created: str(c.created),
    Author: str(c.author),
    DockerVersion: str(c.docker_version),
    Architecture: c.architecture,
    Variant: str(c.variant),
    Os: c.os,
    Labels: c.config?.Labels ?? {},
    Env: c.config?.Env ?? [],
    Config: (c.config ?? {}) as Record<string, unknown>,
    RootFS: { Type: c.rootfs.type, Layers: c.rootfs.diff_ids.map(String) },
    Layers: image.layers.map((l) => l.digest.toString()),
    LayersData: image.layers.map((l) => ({ MIMEType: l.mediaType, Digest: l.digest.toString(), Size: l.size })),
    MediaType: image.manifest.mediaType,
    Size: image.layers.reduce((s, l) => s + l.size, 0),
  };
}

export async function inspectCommand(
  text: string,
  o: RegistryOpts & { tags?: boolean; root?: string },
  out: Output,
): Promise<void> {
  await withSource(text, o, async (s, client) => {
    let repoTags = s.repoTags;
    let name = text;
    const repoDigests: string[] = [...(s.repoDigests ?? [])];
    if (s.ref && loc(text) !== 'store') {
      name = s.ref.name;
      repoDigests.push(`${s.ref.name}@${s.image.digest}`);
      // As skopeo: the repository's tags (--no-tags skips the listing and leaves RepoTags empty).
      repoTags = o.tags === false ? [] : await client().listTags(s.ref, { pageSize: 100 });
    }
    const result = describe(s.image, name, repoTags, repoDigests);
    out.data(result, () => JSON.stringify(result, null, 2));
  });
}

export interface HistoryRow {
  created: string | null;
  createdBy: string;
  comment: string;
  emptyLayer: boolean;
  /** The layer blob this step made (null for empty layers). */
  layer: string | null;
  diffId: string | null;
  size: number;
}

export async function historyCommand(
  text: string,
  o: RegistryOpts & { noTrunc?: boolean; root?: string },
  out: Output,
): Promise<void> {
  await withSource(text, o, async (s) => {
    const rows = historyOf(s.image);
    // Newest first, as `docker history` prints it.
    const newest = [...rows].reverse();
    out.data(newest, () => table(newest, Boolean(o.noTrunc)));
  });
}

export function historyOf(image: Image): HistoryRow[] {
  const history = image.config.history ?? [];
  const rows: HistoryRow[] = [];
  let li = 0;
  const layerRow = (h: (typeof history)[number] | undefined): HistoryRow => {
    const l = image.layers[li++];
    return {
      created: h?.created ?? null,
      createdBy: h?.created_by ?? '',
      comment: h?.comment ?? '',
      emptyLayer: false,
      layer: l ? l.digest.toString() : null,
      diffId: l ? l.diffId.toString() : null,
      size: l ? l.size : 0,
    };
  };
  for (const h of history) {
    if (h.empty_layer) {
      rows.push({
        created: h.created ?? null,
        createdBy: h.created_by ?? '',
        comment: h.comment ?? '',
        emptyLayer: true,
        layer: null,
        diffId: null,
        size: 0,
      });
    } else {
      rows.push(layerRow(h));
    }
  }
  // Layers the history does not account for (history is optional).
  while (li < image.layers.length) rows.push(layerRow(undefined));
  return rows;
}

function table(rows: HistoryRow[], noTrunc: boolean): string {
  const cut = (s: string, n: number) => (noTrunc || s.length <= n ? s : `${s.slice(0, n - 1)}…`);
  const lines = [['LAYER', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT']];
  for (const r of rows) {
    lines.push([
      r.layer ? (noTrunc ? r.layer : r.layer.slice(7, 19)) : '<missing>',
      r.created ?? '',
      cut(r.createdBy.replace(/\s+/g, ' '), 45),
      humanSize(r.size),
      r.comment,
    ]);
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? '').length)));
  return lines
    .map((l) =>
      l
        .map((c, i) => (i === l.length - 1 ? c : c.padEnd(widths[i]! + 2)))
        .join('')
        .trimEnd(),
    )
    .join('\n');
}

const loc = (text: string) => parseLocation(text).transport;
