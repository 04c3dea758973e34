/**
 * `stevedore layers REF`: what each layer of a stored image does to the filesystem (added,
 * changed and deleted files with sizes) and the space it wastes: bytes of files that a later
 * layer overwrites or deletes, so they ship but are never seen. The efficiency score is dive's
 * idea: the share of all file bytes in all layers that survive into the merged rootfs.
 */
import { walkDiffDir } from '@stevedore/overlay';
import type { Output } from '../output.js';
import { humanSize } from './common.js';
import { historyOf } from './inspect.js';
import { findImage, findStoredImage, openStore, type StoreOpts, table } from './store.js';

export interface LayerFile {
  kind: 'A' | 'C' | 'D';
  path: string;
  size: number;
}

export interface LayerReport {
  index: number;
  digest: string;
  diffId: string;
  createdBy: string;
  /** Bytes of the layer's files (as extracted). */
  size: number;
  added: number;
  changed: number;
  deleted: number;
  /** Bytes of this layer's files that later layers overwrite or delete. */
  wasted: number;
  files: LayerFile[];
}

export interface LayersResult {
  image: string;
  id: string;
  totalBytes: number;
  wastedBytes: number;
  /** (totalBytes - wastedBytes) / totalBytes, 1 for an image with no waste. */
  efficiency: number;
  layers: LayerReport[];
  /** The biggest wasted files: path, the layers that carry a copy, and the bytes wasted. */
  wastedFiles: { path: string; layers: number[]; bytes: number }[];
}

export async function layersCommand(name: string, o: StoreOpts & { all?: boolean }, out: Output): Promise<void> {
  const store = await openStore(o);
  const img = await findImage(store, name);
  const image = await findStoredImage(store, img.id.toString());
  const history = historyOf(image).filter((h) => !h.emptyLayer);
  /** The merged rootfs so far: path → the layer that provides it and its size (non-directories). */
  const present = new Map<string, { layer: number; size: number; dir: boolean }>();
  const reports: LayerReport[] = [];
  const wastedFiles = new Map<string, { path: string; layers: number[]; bytes: number }>();
  let total = 0;
  const waste = (p: string, v: { layer: number; size: number; dir: boolean }) => {
    if (v.dir || v.size === 0) return;
    const r = reports[v.layer] as LayerReport;
    r.wasted += v.size;
    const w = wastedFiles.get(p) ?? { path: `/${p}`, layers: [], bytes: 0 };
    w.layers.push(v.layer);
    w.bytes += v.size;
    wastedFiles.set(p, w);
  };
  const removeUnder = (p: string, self: boolean) => {
    let any = false;
    for (const [q, v] of present) {
      if ((self && q === p) || q.startsWith(`${p}/`)) {
        waste(q, v);
        present.delete(q);
        any = true;
      }
    }
    return any;
  };
  for (const [i, layer] of img.layers.entries()) {
    const entries = await walkDiffDir(layer.diffDir);
    const report: LayerReport = {
      index: i,
      digest: image.layers[i]?.digest.toString() ?? '',
      diffId: layer.diffId.toString(),
      createdBy: history[i]?.createdBy ?? '',
      size: 0,
      added: 0,
      changed: 0,
      deleted: 0,
      wasted: 0,
      files: [],
    };
    reports.push(report);
    for (const e of entries) {
      const whiteout =
        (e.type === 'char' && e.devMajor === 0 && e.devMinor === 0) ||
        e.xattrs.some(([k]) => k.endsWith('overlay.whiteout'));
      if (whiteout) {
        const size = [...present].filter(([q]) => q === e.path || q.startsWith(`${e.path}/`));
        const bytes = size.reduce((s, [, v]) => s + (v.dir ? 0 : v.size), 0);
        if (removeUnder(e.path, true)) {
          report.deleted++;
          report.files.push({ kind: 'D', path: `/${e.path}`, size: bytes });
        }
        continue;
      }
      const opaque = e.xattrs.some(([k, v]) => k.endsWith('overlay.opaque') && new TextDecoder().decode(v) === 'y');
      if (e.type === 'directory') {
        if (opaque) removeUnder(e.path, false);
        const had = present.get(e.path);
        if (had && !had.dir) waste(e.path, had);
        present.set(e.path, { layer: i, size: 0, dir: true });
        continue;
      }
      const had = present.get(e.path);
      if (had?.dir) removeUnder(e.path, false);
      if (had) waste(e.path, had);
      const kind = had ? 'C' : 'A';
      if (kind === 'A') report.added++;
      else report.changed++;
      report.size += e.size;
      total += e.size;
      report.files.push({ kind, path: `/${e.path}`, size: e.size });
      present.set(e.path, { layer: i, size: e.size, dir: false });
    }
  }
  const wastedBytes = reports.reduce((s, r) => s + r.wasted, 0);
  const result: LayersResult = {
    image: name,
    id: img.id.toString(),
    totalBytes: total,
    wastedBytes,
    efficiency: total === 0 ? 1 : (total - wastedBytes) / total,
    layers: reports,
    wastedFiles: [...wastedFiles.values()].sort((a, b) => b.bytes - a.bytes),
  };
  out.data(result, () => human(result, Boolean(o.all)));
}

function human(r: LayersResult, all: boolean): string {
  const lines: string[] = [];
  lines.push(
    table([
      ['#', 'LAYER', 'SIZE', 'ADDED', 'CHANGED', 'DELETED', 'WASTED', 'CREATED BY'],
      ...r.layers.map((l) => [
        String(l.index),
        l.digest.slice(7, 19),
        humanSize(l.size),
        String(l.added),
        String(l.changed),
        String(l.deleted),
        humanSize(l.wasted),
        l.createdBy.replace(/\s+/g, ' ').slice(0, 50),
      ]),
    ]),
  );
  const limit = all ? Number.POSITIVE_INFINITY : 10;
  for (const l of r.layers) {
    lines.push('', `layer ${l.index} (${l.digest.slice(7, 19)}):`);
    const files = [...l.files].sort((a, b) => b.size - a.size);
    for (const f of files.slice(0, limit)) lines.push(`  ${f.kind} ${humanSize(f.size).padStart(9)}  ${f.path}`);
    if (files.length > limit) lines.push(`  … ${files.length - limit} more (--all lists every file)`);
  }
  lines.push('');
  if (r.wastedFiles.length) {
    lines.push('wasted (overwritten or deleted by a later layer):');
    for (const w of r.wastedFiles.slice(0, limit)) {
      lines.push(`  ${humanSize(w.bytes).padStart(9)}  ${w.path}  (layer ${w.layers.join(', ')})`);
    }
  }
  lines.push(
    `total ${humanSize(r.totalBytes)}, wasted ${humanSize(r.wastedBytes)}, efficiency ${(r.efficiency * 100).toFixed(1)}%`,
  );
  return lines.join('\n');
}
