/**
 * Image lifecycle on the store: a stored image as an `Image` (for save/push with the original
 * digests), `commit` of a container layer, `rmi`, `prune` and `fsck`.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, readdir, readFile, readlink, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createGunzip } from 'node:zlib';
import { applyLayer, createLayer, Digest, Hasher, hashFile, StevedoreError, sha256 } from '@stevedore/core';
import {
  chainIds,
  DOCKER_LAYER_GZIP,
  DOCKER_MANIFEST,
  type Image,
  type Layer,
  layerCompression,
  OCI_LAYER_GZIP,
  parseConfig,
  parseImageManifest,
  parseReference,
} from '@stevedore/image';
import { listContainers } from './containers.js';
import { exists, writeFileAtomic } from './fsutil.js';
import { withLock } from './lock.js';
import { compareDiff, DIFF_MANIFEST_FILE, type DiffEntry, readDiffManifest, walkDiff } from './manifest.js';
import { storeMounts } from './mount.js';
import type { LoadResult, Store, StoredLayer } from './store.js';
import { TAR_SPLIT_FILE, verifyTarSplit } from './tar-split.js';

async function* verified(file: string, digest: Digest, size: number): AsyncIterable<Uint8Array> {
  const h = new Hasher(digest.algorithm);
  let n = 0;
  for await (const c of createReadStream(file, { highWaterMark: 1 << 20 })) {
    h.update(c as Buffer);
    n += (c as Buffer).length;
    yield c as Buffer;
  }
  if (n !== size)
    throw new StevedoreError('ERR_SIZE_MISMATCH', `blob ${digest}: size mismatch (expected ${size}, got ${n})`);
  h.digest().verify(digest, `blob ${digest}`);
}

/**
 * A stored image as an `Image` whose manifest, config and layer blobs are the bytes it was
 * stored from (so `copyImage` to a registry or archive gives back the same digests).
 */
export async function storedImage(store: Store, nameOrId: string): Promise<Image> {
  const img = await store.image(nameOrId);
  if (!img.manifestDigest) throw new StevedoreError('ERR_BLOB_NOT_FOUND', `image ${img.id}: no manifest stored`);
  const rawManifest = new Uint8Array(await readFile(store.blobPath(img.manifestDigest)));
  sha256(rawManifest).verify(img.manifestDigest, `manifest ${img.manifestDigest}`);
  const manifest = parseImageManifest(rawManifest);
  const diffIds = img.config.rootfs.diff_ids;
  const layers: Layer[] = manifest.layers.map((d, i) => {
    const file = store.blobPath(d.digest);
    const diffId = diffIds[i]!;
    return {
      digest: d.digest,
      diffId,
      size: d.size,
      mediaType: d.mediaType,
      compressed: () => verified(file, d.digest, d.size),
      async *uncompressed() {
        const c = layerCompression(d.mediaType) ?? 'none';
        if (c !== 'none' && c !== 'gzip') {
          throw new StevedoreError('ERR_UNSUPPORTED', `layer ${d.digest}: ${c} decompression is not supported here`);
        }
        const h = new Hasher(diffId.algorithm);
        const src = c === 'gzip' ? createReadStream(file).pipe(createGunzip()) : createReadStream(file);
        for await (const chunk of src) {
          h.update(chunk as Buffer);
          yield chunk as Buffer;
        }
        h.digest().verify(diffId, `layer ${d.digest}: diff_id`);
      },
    };
  });
  return { digest: img.manifestDigest, manifest, rawManifest, config: img.config, rawConfig: img.rawConfig, layers };
}

export interface CommitOptions {
  tags?: string[];
  /** `created_by` of the history entry (default `stevedore commit`). */
  createdBy?: string;
  comment?: string;
  /** Seconds since the epoch for `created` (default now). */
  created?: number;
}

/**
 * Commits a container layer (`overlay2/<layerId>/diff`, from a writable mount over `image`) as a
 * new image: the upper dir → `createLayer(…, {mode: 'overlay-diff'})` (gzip), config with the
 * new diff_id and a history entry, manifest with the new layer, loaded and tagged. The upper
 * dir alone is the diff only when mounted with redirect_dir and metacopy off (our default).
 */
export async function commit(
  store: Store,
  image: string,
  layerId: string,
  options: CommitOptions = {},
): Promise<LoadResult> {
  const base = await storedImage(store, image);
  const upper = path.join(store.overlayDir, layerId, 'diff');
  if (!/^[a-f0-9]{64}$/.test(layerId) || !(await exists(upper))) {
    throw new StevedoreError('ERR_LAYER_NOT_FOUND', `container layer ${layerId} not found`);
  }
  const tmp = await mkdtemp(path.join(store.tmpDir, `${process.pid}-commit-`));
  try {
    const blob = path.join(tmp, 'layer.tar.gz');
    const made = await createLayer(upper, blob, { mode: 'overlay-diff', compression: 'gzip' });
    const digest = Digest.parse(made.digest);
    const diffId = Digest.parse(made.diffId);
    await store.putBlob(digest, made.compressedSize, createReadStream(blob));
    const docker = base.manifest.mediaType === DOCKER_MANIFEST;
    const created = new Date((options.created ?? Date.now() / 1000) * 1000).toISOString();
    const cfg = JSON.parse(new TextDecoder().decode(base.rawConfig)) as Record<string, unknown> & {
      rootfs: { diff_ids: string[] };
      history?: unknown[];
    };
    cfg.rootfs.diff_ids = [...cfg.rootfs.diff_ids, diffId.toString()];
    cfg.history = [
      ...(cfg.history ?? []),
      {
        created,
        created_by: options.createdBy ?? 'stevedore commit',
        ...(options.comment ? { comment: options.comment } : {}),
      },
    ];
    cfg.created = created;
    const rawConfig = new TextEncoder().encode(JSON.stringify(cfg));
    const m = JSON.parse(new TextDecoder().decode(base.rawManifest)) as {
      config: { digest: string; size: number };
      layers: unknown[];
    };
    m.config = { ...m.config, digest: sha256(rawConfig).toString(), size: rawConfig.length };
    m.layers = [
      ...m.layers,
      { mediaType: docker ? DOCKER_LAYER_GZIP : OCI_LAYER_GZIP, digest: digest.toString(), size: made.compressedSize },
    ];
    const rawManifest = new TextEncoder().encode(JSON.stringify(m));
    const newLayer: Layer = {
      digest,
      diffId,
      size: made.compressedSize,
      mediaType: docker ? DOCKER_LAYER_GZIP : OCI_LAYER_GZIP,
      compressed: () => verified(store.blobPath(digest), digest, made.compressedSize),
      uncompressed: () => {
        throw new StevedoreError('ERR_UNSUPPORTED', 'not needed');
      },
    };
    const img: Image = {
      digest: sha256(rawManifest),
      manifest: parseImageManifest(rawManifest),
      rawManifest,
      config: parseConfig(rawConfig),
      rawConfig,
      layers: [...base.layers, newLayer],
    };
    return await store.loadImage(img, { tags: options.tags ?? [] });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The chain IDs the stored images (but `except`) use, from imagedb. */
async function usedChains(store: Store, except?: Digest): Promise<Set<string>> {
  const used = new Set<string>();
  for (const id of await store.imageIds()) {
    if (except?.equals(id)) continue;
    const raw = new Uint8Array(await readFile(path.join(store.imagedb, 'content', 'sha256', id.hex)));
    for (const c of chainIds(parseConfig(raw).rootfs.diff_ids)) used.add(c.hex);
  }
  return used;
}

/**
 * Removes a tag (or every tag of an image id); when no tag is left the image is deleted and its
 * layers are released (those no other image uses). Returns the removed image ids and chain IDs.
 */
export async function rmi(
  store: Store,
  nameOrId: string,
): Promise<{ untagged: string[]; deleted: string[]; layers: string[] }> {
  const id = await store.resolveImageId(nameOrId);
  const untagged: string[] = [];
  const deleted: string[] = [];
  const layers: string[] = [];
  await withLock(store.lockFile, async () => {
    const repos = await store.readRepositories();
    const isId = /^(sha256:)?[a-f0-9]{12,64}$/.test(nameOrId);
    let key: string | undefined;
    if (!isId) {
      const ref = parseReference(nameOrId);
      key = ref.digest ? `${ref.familiarName()}@${ref.digest}` : `${ref.familiarName()}:${ref.tag ?? 'latest'}`;
    }
    for (const [name, entries] of Object.entries(repos.Repositories)) {
      for (const [k, v] of Object.entries(entries)) {
        if (v !== id.toString()) continue;
        if (isId || k === key) {
          delete entries[k];
          untagged.push(k);
        }
      }
      if (Object.keys(entries).length === 0) delete repos.Repositories[name];
    }
    const stillTagged = Object.values(repos.Repositories).some((e) => Object.values(e).includes(id.toString()));
    // What deleting the image would release: its layers from the top down to the first one that
    // another image or a container layer still uses.
    const release: StoredLayer[] = [];
    if (!stillTagged) {
      const raw = new Uint8Array(await readFile(path.join(store.imagedb, 'content', 'sha256', id.hex)));
      const used = await usedChains(store, id);
      const containerLowers = await containerLowerLinks(store);
      for (const c of [...chainIds(parseConfig(raw).rootfs.diff_ids)].reverse()) {
        if (used.has(c.hex)) break; // a shared prefix: everything below is used too
        const l = await store.layer(c);
        if (!l) continue;
        if (containerLowers.has(l.link)) break; // a container layer still sits on it
        release.push(l);
      }
      // Deleting a layer under an active mount would empty the mounted tree: refuse, as docker
      // refuses to remove an image a container uses. (Read-only fuse-overlayfs mounts do not
      // show their layers in mountinfo and cannot be seen here.)
      const mounted = new Map<string, string[]>();
      for (const m of storeMounts(store)) {
        for (const dir of (m.lowerdir ?? '').split(':')) {
          const link = path.basename(dir);
          mounted.set(link, [...(mounted.get(link) ?? []), m.target]);
        }
      }
      const targets = [...new Set(release.flatMap((l) => mounted.get(l.link) ?? []))];
      if (targets.length) {
        throw new StevedoreError(
          'ERR_IMAGE_MOUNTED',
          `cannot remove ${nameOrId}: image ${id.hex.slice(0, 12)} is mounted at ${targets.join(', ')} (umount it first)`,
        );
      }
    }
    await writeFileAtomic(path.join(store.imageRoot, 'repositories.json'), JSON.stringify(repos));
    if (stillTagged) return;
    await rm(path.join(store.imagedb, 'content', 'sha256', id.hex), { force: true });
    await rm(path.join(store.imagedb, 'metadata', 'sha256', id.hex), { recursive: true, force: true });
    await rm(path.join(store.root, 'content', 'images', 'sha256', id.hex), { force: true });
    deleted.push(id.toString());
    for (const l of release) {
      // Hide the layerdb entry first (rename), then delete the data.
      const gone = path.join(store.layerdb, 'tmp', `${process.pid}-remove-${l.chainId.hex}`);
      await rename(path.join(store.layerdb, 'sha256', l.chainId.hex), gone);
      await store.removeLayerDir(l.cacheId);
      await rm(gone, { recursive: true, force: true });
      layers.push(l.chainId.toString());
    }
  });
  return { untagged, deleted, layers };
}

/** Short links that container layers (overlay2 dirs not in layerdb) sit on. */
async function containerLowerLinks(store: Store): Promise<Set<string>> {
  const known = new Set<string>();
  for (const c of await readdir(path.join(store.layerdb, 'sha256'))) {
    const id = (await readFile(path.join(store.layerdb, 'sha256', c, 'cache-id'), 'utf8').catch(() => '')).trim();
    known.add(id);
  }
  const out = new Set<string>();
  for (const d of await readdir(store.overlayDir)) {
    if (d === 'l' || known.has(d)) continue;
    const lower = (await readFile(path.join(store.overlayDir, d, 'lower'), 'utf8').catch(() => '')).trim();
    for (const l of lower.split(':')) if (l) out.add(l.replace(/^l\//, ''));
  }
  return out;
}

/** Removes content blobs no stored image references. Returns the removed digests. */
export async function prune(store: Store): Promise<string[]> {
  const removed: string[] = [];
  await withLock(store.lockFile, async () => {
    const keep = new Set<string>();
    for (const id of await store.imageIds()) {
      keep.add(id.hex);
      const img = await store.image(id);
      if (!img.manifestDigest) continue;
      keep.add(img.manifestDigest.hex);
      for (const b of await store.layerBlobs(img)) keep.add(b.digest.hex);
    }
    for (const hex of await readdir(store.blobDir)) {
      if (keep.has(hex)) continue;
      await rm(path.join(store.blobDir, hex), { force: true });
      removed.push(`sha256:${hex}`);
    }
  });
  return removed;
}

/**
 * Checks the store: layerdb ↔ overlay2 dirs, short links, lower chains, container records,
 * configs and blobs; with `verify`, also every diff dir's content (`verifyLayers`). The layout
 * is checked under the store lock (a concurrent load is never seen half-way); blobs and diff
 * dirs are hashed outside it.
 */
export async function fsck(store: Store, options: { verify?: boolean } = {}): Promise<string[]> {
  const problems = await withLock(store.lockFile, () => checkLayout(store));
  for (const hex of await readdir(store.blobDir)) {
    let digest: Digest;
    try {
      ({ digest } = await hashFile(path.join(store.blobDir, hex)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // pruned meanwhile
      throw e;
    }
    if (digest.hex !== hex) problems.push(`blob sha256:${hex}: content hashes to ${digest}`);
  }
  if (options.verify) problems.push(...(await verifyLayers(store)).problems);
  return problems;
}

async function checkLayout(store: Store): Promise<string[]> {
  const problems: string[] = [];
  const cacheIds = new Set<string>();
  for (const c of await readdir(path.join(store.layerdb, 'sha256'))) {
    const chain = Digest.parse(`sha256:${c}`);
    let l: Awaited<ReturnType<Store['layer']>>;
    try {
      l = await store.layer(chain);
    } catch (e) {
      problems.push(`layer ${chain}: ${(e as Error).message}`);
      continue;
    }
    if (!l) {
      problems.push(`layer ${chain}: unreadable layerdb entry`);
      continue;
    }
    cacheIds.add(l.cacheId);
    if (!(await exists(l.diffDir))) problems.push(`layer ${chain}: ${l.diffDir} missing`);
    const target = await readlink(path.join(store.linkDir, l.link)).catch(() => '');
    if (target !== `../${l.cacheId}/diff`)
      problems.push(`layer ${chain}: short link l/${l.link} → ${target || 'missing'}`);
    if (l.parent) {
      const p = await store.layer(l.parent);
      if (!p) problems.push(`layer ${chain}: parent ${l.parent} missing`);
      else {
        const want = await store.lowerChain(p.dir);
        const got = (await readFile(path.join(l.dir, 'lower'), 'utf8').catch(() => '')).trim();
        if (want !== got) problems.push(`layer ${chain}: lower is ${got || 'missing'}, expected ${want}`);
      }
    }
  }
  for (const id of await store.imageIds()) {
    try {
      await store.image(id);
    } catch (e) {
      problems.push(`image ${id}: ${(e as Error).message}`);
    }
  }
  for (const link of await readdir(store.linkDir)) {
    const target = await readlink(path.join(store.linkDir, link)).catch(() => '');
    if (!(await exists(path.join(store.linkDir, target)))) problems.push(`short link l/${link} → ${target}: dangling`);
  }
  const containers = await listContainers(store);
  for (const c of containers) {
    if (!(await exists(c.upperDir))) problems.push(`container ${c.id}: ${c.upperDir} missing`);
  }
  const owned = new Set([...cacheIds, ...containers.map((c) => c.id)]);
  for (const d of await readdir(store.overlayDir)) {
    if (d !== 'l' && !owned.has(d)) {
      problems.push(`overlay2/${d}: no layer or container owns it (left by an interrupted write)`);
    }
  }
  return problems;
}

/**
 * Re-proves every layer's diff dir: the exact tar rebuilt from its tar-split (tar-split.ts) must
 * hash to its diff_id, and a re-walk of the dir must match the manifest recorded when the layer
 * was extracted (manifest.ts): each changed, added or missing path is one problem, named with its
 * layer. A layer stored without a manifest is checked by extracting its blob again
 * (verified against its digest and diff_id) into staging and comparing the two dirs (or, without
 * the blob, by its tar-split alone).
 */
export async function verifyLayers(store: Store): Promise<{ checked: number; problems: string[] }> {
  const chains = (await readdir(path.join(store.layerdb, 'sha256'))).sort();
  // Layers are independent: a few at once (each mostly waits on reads and native hashing).
  let blobs: Promise<Map<string, Digest>> | undefined;
  const blobsOf = () => {
    blobs ??= blobsByDiffId(store);
    return blobs;
  };
  const results: { checked: boolean; problems: string[] }[] = new Array(chains.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < chains.length; i = next++) results[i] = await verifyLayer(store, chains[i]!, blobsOf);
  };
  const width = Math.min(4, Math.max(1, os.availableParallelism?.() ?? os.cpus().length), chains.length);
  await Promise.all(Array.from({ length: width }, worker));
  return {
    checked: results.filter((r) => r.checked).length,
    problems: results.flatMap((r) => r.problems),
  };
}

/** {@link verifyLayers} of one layerdb entry. */
async function verifyLayer(
  store: Store,
  c: string,
  blobsOf: () => Promise<Map<string, Digest>>,
): Promise<{ checked: boolean; problems: string[] }> {
  const problems: string[] = [];
  const done = (checked: boolean) => ({ checked, problems });
  const chain = Digest.parse(`sha256:${c}`);
  const l = await store.layer(chain).catch(() => undefined);
  if (!l) return done(false); // fsck's layout check reports unreadable entries
  const what = `layer ${chain} (diff_id ${l.diffId})`;
  try {
    const m = await readDiffManifest(path.join(store.layerdb, 'sha256', c, DIFF_MANIFEST_FILE));
    if (m && (m.diffId !== l.diffId.toString() || m.chainId !== chain.toString())) {
      problems.push(`${what}: content manifest is for ${m.chainId} (diff_id ${m.diffId})`);
      return done(false);
    }
    const tarSplit = path.join(store.layerdb, 'sha256', c, TAR_SPLIT_FILE);
    const rebuildable = await exists(tarSplit);
    let recorded = m?.entries;
    // A manifest without content hashes leaves the content to the tar-split: without it, the
    // blob extracted again is the reference (as for a layer without a manifest).
    const contentUnproven =
      recorded !== undefined &&
      !rebuildable &&
      recorded.some((e) => e.type === 'file' && e.size > 0 && e.hardlink === undefined && e.sha256 === undefined);
    if (!recorded || contentUnproven) {
      const blob = (await blobsOf()).get(l.diffId.toString());
      if (blob && (await store.hasBlob(blob))) recorded = await extractedEntries(store, blob, l.diffId);
      else if (contentUnproven) {
        problems.push(`${what}: ${TAR_SPLIT_FILE} is missing and no blob is stored: file contents cannot be verified`);
        return done(false);
      } else if (!rebuildable) {
        problems.push(`${what}: no content manifest, tar-split or blob to verify against`);
        return done(false);
      }
    }
    // Metadata (and content, for layers without a tar-split): the manifest, walked without
    // hashing when it holds no hashes. Content: the exact tar rebuilt from the tar-split must
    // hash to the diff_id; a path the manifest already reports is not reported twice.
    const found: string[] = [];
    if (recorded) {
      const hashed = recorded.some((e) => e.sha256 !== undefined);
      const actual = (await walkDiff(l.diffDir, { hash: hashed })).entries;
      if (!hashed) for (const e of actual) delete e.sha256;
      found.push(...compareDiff(recorded, actual));
    }
    if (rebuildable) {
      for (const p of await verifyTarSplit(tarSplit, l.diffDir, l.diffId, 'ERR_STORE_CORRUPT')) {
        if (p.path === undefined) {
          found.push(p.message);
          continue;
        }
        // One line per path: a changed content joins what the manifest saw (an mtime, say);
        // a missing or re-typed file the manifest reported already.
        const at = found.findIndex((d) => d.startsWith(`${p.path}: `));
        if (at < 0) found.push(`${p.path}: ${p.message}`);
        else if (p.kind === 'content' && !found[at]!.includes(': sha256 ')) found[at] += `, ${p.message}`;
      }
    }
    for (const d of found.sort()) problems.push(`${what}: ${d}`);
    return done(true);
  } catch (e) {
    problems.push(`${what}: ${(e as Error).message}`);
    return done(false);
  }
}

/** diff_id → layer blob digest, from the manifests of the stored images. */
async function blobsByDiffId(store: Store): Promise<Map<string, Digest>> {
  const out = new Map<string, Digest>();
  for (const id of await store.imageIds()) {
    try {
      const img = await store.image(id);
      const blobs = await store.layerBlobs(img);
      img.config.rootfs.diff_ids.forEach((d, i) => {
        if (blobs[i]) out.set(d.toString(), blobs[i].digest);
      });
    } catch {
      // an image without a stored manifest cannot help
    }
  }
  return out;
}

/** The entries of a fresh, verified extraction of `blob` (in staging, removed after). */
async function extractedEntries(store: Store, blob: Digest, diffId: Digest): Promise<DiffEntry[]> {
  const stage = await mkdtemp(path.join(store.tmpDir, `${process.pid}-verify-`));
  try {
    await applyLayer(store.blobPath(blob), path.join(stage, 'diff'), {
      mode: 'overlay',
      expectedDigest: blob,
      expectedDiffId: diffId,
      xattrNamespace: process.getuid?.() === 0 ? 'trusted' : 'user',
    });
    return (await walkDiff(path.join(stage, 'diff'))).entries;
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}
