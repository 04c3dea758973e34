/**
 * Per-layer scans (digest, diff_id and a listing with per-file sha256, in one streamed pass),
 * the changes each layer makes, the merged filesystem and the space wasted by files that later
 * layers overwrite or delete.
 */
import { LayerIndex, type LayerScan, LayerStack, scanLayer, type TarListing, TarReader } from '@stevedore/core/browser';
import { normalizePath } from './archive.js';
import type { LayerSource } from './image.js';

export type ChangeKind = 'added' | 'changed' | 'deleted' | 'opaque';

export interface Change {
  path: string;
  kind: ChangeKind;
  type: string;
  size: number;
}

export interface Waste {
  path: string;
  size: number;
  /** What hides the file in the merged view. */
  by: string;
}

export interface LayerAnalysis {
  scan: LayerScan;
  index: LayerIndex;
  changes: Change[];
  wasted: Waste[];
  wastedBytes: number;
}

/** One row of the merged filesystem: depth first, as `LayerStack.walk` gives it. */
export interface FsNode {
  path: string;
  name: string;
  depth: number;
  type: string;
  size: number;
  layer: number;
  implicit: boolean;
  linkName: string;
  digest: string;
  mode: number;
  /** Index one past this node's subtree in the flat list. */
  end: number;
}

const OPAQUE = '.wh..wh..opq';
const WH = '.wh.';

/** Digest, diff_id and listing (per-file sha256) of a layer blob, in one streamed pass. */
export async function scanSource(source: LayerSource): Promise<LayerScan> {
  return scanLayer(await source.open());
}

function indexFrom(entries: TarListing[]): LayerIndex {
  return LayerIndex.fromEntries(
    entries.map((e) => ({
      path: e.pathBytes,
      type: e.type,
      linkName: e.linkNameBytes,
      mode: e.mode & 0o7777,
      uid: e.uid,
      gid: e.gid,
      size: e.size,
      mtime: e.mtime,
      content: e.digest ?? '',
      xattrs: e.xattrs,
    })),
  );
}

function split(path: string): [string, string] {
  const i = path.lastIndexOf('/');
  return i < 0 ? ['', path] : [path.slice(0, i), path.slice(i + 1)];
}

/** Changes, wasted space and indexes for every layer (base first). */
export function analyse(scans: LayerScan[]): { layers: LayerAnalysis[]; stack: LayerStack } {
  const indexes = scans.map((s) => indexFrom(s.entries));
  const stack = new LayerStack(indexes);
  const layers = scans.map((scan, i) => {
    const lower = i > 0 ? new LayerStack(indexes.slice(0, i)) : undefined;
    const changes: Change[] = [];
    const wasted: Waste[] = [];
    let wastedBytes = 0;
    for (const e of scan.entries) {
      const path = normalizePath(e.path);
      if (!path) continue;
      const [dir, base] = split(path);
      if (base === OPAQUE) {
        changes.push({ path: dir, kind: 'opaque', type: 'directory', size: 0 });
        continue;
      }
      if (base.startsWith(WH)) {
        changes.push({ path: (dir ? dir + '/' : '') + base.slice(WH.length), kind: 'deleted', type: '', size: 0 });
        continue;
      }
      const below = lower?.resolve(path);
      changes.push({ path, kind: below?.kind === 'found' ? 'changed' : 'added', type: e.type, size: e.size });
      if (e.type !== 'file' && e.type !== 'hardlink') continue;
      const top = stack.resolve(path);
      if (top.kind === 'found' && top.layer === i) continue;
      const by =
        top.kind === 'found'
          ? `overwritten by layer ${top.layer}`
          : top.kind === 'whiteout'
            ? `deleted by layer ${top.layer}`
            : top.kind === 'shadowed'
              ? `hidden by layer ${top.layer}`
              : 'not visible';
      wasted.push({ path, size: e.size, by });
      wastedBytes += e.size;
    }
    return { scan, index: indexes[i] as LayerIndex, changes, wasted, wastedBytes };
  });
  return { layers, stack };
}

/** The merged view as a flat depth-first list with subtree bounds (for a virtualized tree). */
export function mergedTree(stack: LayerStack): FsNode[] {
  const nodes: FsNode[] = [];
  const open: number[] = [];
  for (const s of stack.walk()) {
    if (!s.path) continue;
    const depth = s.path.split('/').length - 1;
    while (open.length > depth) (nodes[open.pop() as number] as FsNode).end = nodes.length;
    const [, name] = split(s.path);
    nodes.push({
      path: s.path,
      name,
      depth,
      type: s.entry.type,
      size: s.entry.size,
      layer: s.layer,
      implicit: s.implicit,
      linkName: s.entry.linkName,
      digest: s.entry.content,
      mode: s.entry.mode,
      end: nodes.length + 1,
    });
    if (s.entry.type === 'directory') open.push(nodes.length - 1);
  }
  while (open.length) (nodes[open.pop() as number] as FsNode).end = nodes.length;
  return nodes;
}

/**
 * A file's bytes from a layer: re-streams the layer blob (decompressing as needed), reading
 * only the data events of that entry. `limit` caps what is kept (for previews).
 */
export async function readFileFromLayer(
  source: LayerSource,
  path: string,
  limit = Number.POSITIVE_INFINITY,
): Promise<{ data: Uint8Array[]; size: number; truncated: boolean }> {
  let stream = await source.open();
  const reader = stream.getReader();
  const first = await reader.read();
  const head = first.value ?? new Uint8Array();
  const rest = new ReadableStream<Uint8Array>({
    start(ctl) {
      if (head.length) ctl.enqueue(head);
      if (first.done) ctl.close();
    },
    async pull(ctl) {
      const { done, value } = await reader.read();
      if (done) ctl.close();
      else ctl.enqueue(value);
    },
    cancel: () => reader.cancel(),
  });
  const gz = head[0] === 0x1f && head[1] === 0x8b;
  const zstd = head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd;
  stream =
    gz || zstd
      ? rest.pipeThrough(
          new DecompressionStream(gz ? 'gzip' : ('zstd' as CompressionFormat)) as unknown as TransformStream<
            Uint8Array,
            Uint8Array
          >,
        )
      : rest;
  const tar = new TarReader({ withData: true });
  const want = normalizePath(path);
  const data: Uint8Array[] = [];
  let kept = 0;
  let size = 0;
  let inside = false;
  let found = false;
  let hardlink = '';
  const r = stream.getReader();
  try {
    outer: for (;;) {
      const { done, value } = await r.read();
      const events = done ? tar.end() : tar.push(value);
      for (const ev of events) {
        if (ev.type === 'entry') {
          inside = normalizePath(ev.header.path) === want;
          if (inside) {
            found = true;
            size = ev.header.size;
            if (ev.header.type === 'hardlink') hardlink = ev.header.linkName;
          }
        } else if (ev.type === 'data' && inside) {
          if (kept < limit) {
            const piece = ev.data.subarray(0, Math.min(ev.data.length, limit - kept));
            data.push(piece.slice());
            kept += piece.length;
          }
        } else if (ev.type === 'entry-end' && inside) {
          break outer;
        }
      }
      if (done) break;
    }
  } finally {
    await r.cancel().catch(() => {});
  }
  if (hardlink) return readFileFromLayer(source, hardlink, limit);
  if (!found) throw new Error(`${path} is not in layer ${source.name}`);
  return { data, size, truncated: kept < size };
}
