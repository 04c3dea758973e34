/**
 * Garbage collection, as the reference registry's `garbage-collect`: mark every blob reachable
 * from any manifest revision of any repository (the manifest itself, its config and layers, an
 * index's child manifests, a manifest's subject is NOT followed), then sweep every blob in
 * `blobs/` that was not marked. Repository `_layers` links are left alone (as distribution 2.8).
 *
 * Run it while nothing pushes (the reference registry requires read-only mode for the same
 * reason): a blob uploaded between mark and sweep, whose manifest is not yet pushed, is swept.
 */
import { purgeUploads } from './purge.js';
import { digestString, parseDigest, Storage } from './storage.js';

export interface GarbageCollectOptions {
  /** Report what would be deleted, delete nothing. */
  dryRun?: boolean;
  /** Also delete manifests that no tag points at (and then what only they referenced). */
  removeUntagged?: boolean;
  /** Also remove upload sessions started longer ago than this (see `purgeUploads`). */
  uploadMaxAgeMs?: number;
  log?: (line: string) => void;
}

export interface GarbageCollectResult {
  marked: string[];
  deleted: string[];
  /** Untagged manifests removed (removeUntagged), as `name@digest`. */
  deletedManifests: string[];
  /** Upload sessions removed (uploadMaxAgeMs), as `name/_uploads/id`. */
  purgedUploads: string[];
}

/** Collects garbage in the storage root `root` (the directory holding `docker/registry/v2`). */
export async function garbageCollect(
  root: string | Storage,
  o: GarbageCollectOptions = {},
): Promise<GarbageCollectResult> {
  const s = typeof root === 'string' ? new Storage(root) : root;
  const log = o.log ?? (() => {});
  const marked = new Set<string>();
  const deletedManifests: string[] = [];
  for (const name of await s.repositories()) {
    const revisions = await s.revisions(name);
    let keep = revisions;
    if (o.removeUntagged) {
      const tagged = new Set<string>();
      for (const t of (await s.tags(name)) ?? []) {
        const d = await s.resolveTag(name, t);
        if (d) tagged.add(digestString(d));
      }
      // children of tagged indexes stay
      for (const d of revisions) {
        if (!tagged.has(digestString(d))) continue;
        for (const c of refsOf(await s.getManifest(name, d), true)) tagged.add(c);
      }
      keep = [];
      for (const d of revisions) {
        if (tagged.has(digestString(d))) keep.push(d);
        else {
          deletedManifests.push(`${name}@${digestString(d)}`);
          if (!o.dryRun) await s.deleteManifest(name, d);
        }
      }
    }
    for (const d of keep) {
      marked.add(digestString(d));
      log(`${name}: marking manifest ${digestString(d)}`);
      for (const r of refsOf(await s.getManifest(name, d), false)) {
        marked.add(r);
        log(`${name}: marking blob ${r}`);
      }
    }
  }
  const deleted: string[] = [];
  for (const d of await s.allBlobs()) {
    const key = digestString(d);
    if (marked.has(key)) continue;
    deleted.push(key);
    log(`blob eligible for deletion: ${key}`);
    if (!o.dryRun) await s.deleteBlobData(d);
  }
  const purgedUploads =
    o.uploadMaxAgeMs === undefined ? [] : await purgeUploads(s, { maxAgeMs: o.uploadMaxAgeMs, dryRun: o.dryRun, log });
  return { marked: [...marked].sort(), deleted: deleted.sort(), deletedManifests, purgedUploads };
}

/** Digests a manifest references (config, layers, child manifests); only children when `childrenOnly`. */
function refsOf(raw: Uint8Array | undefined, childrenOnly: boolean): string[] {
  if (!raw) return [];
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(raw).toString('utf8'));
  } catch {
    return [];
  }
  if (typeof doc !== 'object' || doc === null) return [];
  const m = doc as { config?: { digest?: unknown }; layers?: unknown; manifests?: unknown; fsLayers?: unknown };
  const out: string[] = [];
  const add = (v: unknown) => {
    if (typeof v === 'string' && parseDigest(v)) out.push(v);
  };
  const list = (v: unknown, key: string) => {
    if (Array.isArray(v)) for (const e of v) if (e && typeof e === 'object') add((e as Record<string, unknown>)[key]);
  };
  list(m.manifests, 'digest');
  if (childrenOnly) return out;
  add(m.config?.digest);
  list(m.layers, 'digest');
  list(m.fsLayers, 'blobSum');
  return out;
}
