/**
 * Docker's own data root (`/var/lib/docker`, overlay2 graph driver), read without the daemon and
 * strictly read-only: nothing under it is ever created, changed or renamed (files are opened
 * read-only; mounts use its diff dirs as overlay lower dirs only).
 *
 * ```
 * image/overlay2/repositories.json                      tags and digests → image id
 * image/overlay2/imagedb/content/sha256/<image id>      config bytes (hashed: must give the id)
 * image/overlay2/imagedb/metadata/sha256/<id>/parent    the build parent (intermediate images)
 * image/overlay2/layerdb/sha256/<chain id>/{diff,size,cache-id,tar-split.json.gz}
 * overlay2/<cache-id>/{diff,link}, overlay2/l/<link> → ../<cache-id>/diff
 * ```
 *
 * Chain IDs are computed from the config's diff_ids, never read. A layer's exact tar (the bytes
 * its diff_id is the digest of) is reassembled as `docker save` does it: the headers and padding
 * recorded in `tar-split.json.gz`, file contents from the diff dir; the result is hashed and must
 * equal the diff_id. So an imported image keeps Docker's image ID and chain IDs. Its layer blobs
 * are gzip-compressed by us: their (compressed) digests differ from the registry's.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, constants as fsConstants } from 'node:fs';
import { lstat, mkdir, mkdtemp, open, readdir, readlink, realpath, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { applyLayer, createLayer, Digest, Hasher, StevedoreError, sha256 } from '@stevedore/core';
import {
  chainIds,
  DOCKER_CONFIG,
  DOCKER_LAYER_GZIP,
  DOCKER_MANIFEST,
  type Image,
  type ImageConfig,
  type Layer,
  parseConfig,
  parseImageManifest,
  parseReference,
} from '@stevedore/image';
import { type MountInfo, overlaySupported, runMount } from './mount.js';
import type { LoadResult, Store } from './store.js';
import { reassembleTarSplit } from './tar-split.js';
import { MergedView } from './view.js';

export const DEFAULT_DOCKER_ROOT = '/var/lib/docker';

const HEX64 = /^[a-f0-9]{64}$/;
const LINK = /^[A-Z2-7]{26}$/;
/** Caps before parsing (configs as manifests elsewhere; repositories.json holds every tag). */
const MAX_CONFIG = 4 << 20;
const MAX_REPOSITORIES = 64 << 20;

export interface DockerImageSummary {
  id: Digest;
  /** Familiar `name:tag`, sorted (as `docker image inspect` RepoTags). */
  repoTags: string[];
  /** Familiar `name@sha256:…` (the registry's manifest digests), sorted. */
  repoDigests: string[];
  created: string | undefined;
  /** Docker's image size: the sum of its layers' layerdb `size` (uncompressed diff dir bytes). */
  size: number;
  /** The build parent (legacy builder), when recorded. */
  parent: Digest | undefined;
}

export interface DockerLayer {
  /** Digest of the uncompressed layer tar (from the config). */
  diffId: Digest;
  /** Computed from the diff_ids, base first. */
  chainId: Digest;
  cacheId: string;
  /** `overlay2/<cache-id>/diff` (absolute). */
  diffDir: string;
  /** layerdb `size`: bytes of the diff dir. */
  size: number;
  /** `overlay2/l/<link>`, when the short link checks out. */
  link: string | undefined;
  /** layerdb `tar-split.json.gz` (absolute), when present. */
  tarSplit: string | undefined;
}

export interface DockerImage extends DockerImageSummary {
  config: ImageConfig;
  rawConfig: Uint8Array;
  /** Base first. */
  layers: DockerLayer[];
}

function fail(code: string, message: string, cause?: unknown): never {
  throw new StevedoreError(code, message, cause ? { cause } : undefined);
}

/** Reads a file read-only, refusing more than `max` bytes before parsing. */
async function readCapped(file: string, max: number, what: string): Promise<Buffer> {
  const fh = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile()) fail('ERR_DOCKER_ROOT_CORRUPT', `${what}: ${file} is not a regular file`);
    if (st.size > max) fail('ERR_DOCKER_ROOT_CORRUPT', `${what}: ${file} is ${st.size} bytes (cap ${max})`);
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

async function readSmall(file: string): Promise<string | undefined> {
  try {
    return (await readCapped(file, 4096, 'layerdb')).toString('utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isDirectory();
  } catch {
    return false;
  }
}

/** True when `child` is `parent` or inside it (after resolving symlinks of what exists). */
async function inside(child: string, parent: string): Promise<boolean> {
  const real = async (p: string): Promise<string> => {
    const abs = path.resolve(p);
    try {
      return await realpath(abs);
    } catch {
      const up = path.dirname(abs);
      return up === abs ? abs : path.join(await real(up), path.basename(abs));
    }
  };
  const rel = path.relative(await real(parent), await real(child));
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/** A Docker data root (overlay2), opened read-only. */
export class DockerRoot {
  readonly imageRoot: string;
  readonly overlayDir: string;
  /** Images `images()` left out, and why (as dockerd skips them at start). */
  readonly skipped: string[] = [];

  private constructor(readonly root: string) {
    this.imageRoot = path.join(root, 'image', 'overlay2');
    this.overlayDir = path.join(root, 'overlay2');
  }

  /** Checks `root` is a Docker data root using the overlay2 driver. Reads only. */
  static async open(root: string = DEFAULT_DOCKER_ROOT): Promise<DockerRoot> {
    const abs = path.resolve(root);
    let drivers: string[];
    try {
      if (!(await stat(abs)).isDirectory()) fail('ERR_NOT_DOCKER_ROOT', `${abs} is not a directory`);
      drivers = await readdir(path.join(abs, 'image'));
    } catch (e) {
      if (e instanceof StevedoreError) throw e;
      fail(
        'ERR_NOT_DOCKER_ROOT',
        `${abs} is not a Docker data root (no image/ directory): give docker's --data-root, default ${DEFAULT_DOCKER_ROOT}`,
        e,
      );
    }
    if (!drivers.includes('overlay2')) {
      const others = drivers.filter((d) => !d.startsWith('.'));
      if (others.length === 0) fail('ERR_NOT_DOCKER_ROOT', `${abs} is not a Docker data root (image/ is empty)`);
      fail(
        'ERR_DOCKER_DRIVER_UNSUPPORTED',
        `${abs} uses the ${others.join(', ')} storage driver: only overlay2 data roots can be read`,
      );
    }
    const r = new DockerRoot(abs);
    if (!(await isDir(path.join(r.imageRoot, 'imagedb'))) || !(await isDir(r.overlayDir))) {
      fail('ERR_NOT_DOCKER_ROOT', `${abs} is not a Docker overlay2 data root (no imagedb or overlay2/ directory)`);
    }
    return r;
  }

  // ---- names ---------------------------------------------------------------------------------

  /** repositories.json: familiar repository → `name:tag` / `name@digest` → image id. */
  async repositories(): Promise<Record<string, Record<string, string>>> {
    let raw: Buffer;
    try {
      raw = await readCapped(path.join(this.imageRoot, 'repositories.json'), MAX_REPOSITORIES, 'repositories.json');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw e;
    }
    let v: unknown;
    try {
      v = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      fail('ERR_DOCKER_ROOT_CORRUPT', `${this.imageRoot}/repositories.json: ${(e as Error).message}`, e);
    }
    const repos = (v as { Repositories?: unknown })?.Repositories;
    if (!repos || typeof repos !== 'object') return {};
    const out: Record<string, Record<string, string>> = {};
    for (const [name, entries] of Object.entries(repos as Record<string, unknown>)) {
      if (!entries || typeof entries !== 'object') continue;
      const kept: Record<string, string> = {};
      for (const [k, id] of Object.entries(entries as Record<string, unknown>)) {
        if (typeof id === 'string' && /^sha256:[a-f0-9]{64}$/.test(id)) kept[k] = id;
      }
      out[name] = kept;
    }
    return out;
  }

  /** Image ids present in imagedb. */
  async imageIds(): Promise<Digest[]> {
    const names = await readdir(path.join(this.imageRoot, 'imagedb', 'content', 'sha256')).catch(() => []);
    return names
      .filter((n) => HEX64.test(n))
      .sort()
      .map((n) => Digest.parse(`sha256:${n}`));
  }

  /**
   * Resolves a name as dockerd does: a full image id (`sha256:` optional); then `name[:tag]` or
   * `name@digest` in repositories.json (default tag `latest`); then a unique id prefix.
   */
  async resolve(nameOrId: string): Promise<Digest> {
    const ids = await this.imageIds();
    const full = /^(?:sha256:)?([a-f0-9]{64})$/.exec(nameOrId);
    if (full) {
      const hit = ids.find((d) => d.hex === full[1]);
      if (hit) return hit;
      fail('ERR_IMAGE_NOT_FOUND', `no such image in ${this.root}: ${nameOrId}`);
    }
    let ref: ReturnType<typeof parseReference> | undefined;
    try {
      ref = parseReference(nameOrId);
    } catch {
      ref = undefined;
    }
    if (ref) {
      const name = ref.familiarName();
      const key = ref.digest ? `${name}@${ref.digest}` : `${name}:${ref.tag ?? 'latest'}`;
      const id = (await this.repositories())[name]?.[key];
      if (id) return Digest.parse(id);
    }
    const prefix = /^(?:sha256:)?([a-f0-9]+)$/.exec(nameOrId);
    if (prefix) {
      const hits = ids.filter((d) => d.hex.startsWith(prefix[1]!));
      if (hits.length === 1) return hits[0]!;
      if (hits.length > 1) {
        fail(
          'ERR_AMBIGUOUS_IMAGE_ID',
          `image id prefix ${nameOrId} is ambiguous (${hits.length} images: ${hits
            .map((h) => h.hex.slice(0, 12))
            .join(', ')}): give more characters`,
        );
      }
    }
    if (!ref && !prefix)
      fail('ERR_INVALID_REFERENCE', `${JSON.stringify(nameOrId)} is neither a reference nor an image id`);
    fail('ERR_IMAGE_NOT_FOUND', `no such image in ${this.root}: ${nameOrId}`);
  }

  // ---- images --------------------------------------------------------------------------------

  private async rawConfig(id: Digest): Promise<Uint8Array> {
    const file = path.join(this.imageRoot, 'imagedb', 'content', 'sha256', id.hex);
    let raw: Buffer;
    try {
      raw = await readCapped(file, MAX_CONFIG, `image ${id}`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') fail('ERR_IMAGE_NOT_FOUND', `no such image: ${id}`, e);
      throw e;
    }
    const bytes = new Uint8Array(raw);
    // The id is the config's digest: recompute it, never take the file name's word for it.
    sha256(bytes).verify(id, `image ${id}: config in ${file}`);
    return bytes;
  }

  private async parent(id: Digest): Promise<Digest | undefined> {
    const text = await readSmall(path.join(this.imageRoot, 'imagedb', 'metadata', 'sha256', id.hex, 'parent'));
    return text && /^sha256:[a-f0-9]{64}$/.test(text) ? Digest.parse(text) : undefined;
  }

  private async names(): Promise<Map<string, { tags: string[]; digests: string[] }>> {
    const byId = new Map<string, { tags: string[]; digests: string[] }>();
    for (const entries of Object.values(await this.repositories())) {
      for (const [key, id] of Object.entries(entries)) {
        const n = byId.get(id) ?? { tags: [], digests: [] };
        (key.includes('@') ? n.digests : n.tags).push(key);
        byId.set(id, n);
      }
    }
    for (const n of byId.values()) {
      n.tags.sort();
      n.digests.sort();
    }
    return byId;
  }

  /** One image with its layer chain (every layer dir checked). */
  async image(
    nameOrId: string | Digest,
    allNames?: Map<string, { tags: string[]; digests: string[] }>,
  ): Promise<DockerImage> {
    const id = typeof nameOrId === 'string' ? await this.resolve(nameOrId) : nameOrId;
    const rawConfig = await this.rawConfig(id);
    const config = parseConfig(rawConfig);
    const layers = await this.layers(id, config);
    const names = (allNames ?? (await this.names())).get(id.toString());
    return {
      id,
      repoTags: names?.tags ?? [],
      repoDigests: names?.digests ?? [],
      created: config.created ?? undefined,
      size: layers.reduce((s, l) => s + l.size, 0),
      parent: await this.parent(id),
      config,
      rawConfig,
      layers,
    };
  }

  private async layers(id: Digest, config: ImageConfig): Promise<DockerLayer[]> {
    const diffIds = config.rootfs.diff_ids;
    const chains = chainIds(diffIds);
    const out: DockerLayer[] = [];
    for (const [i, chainId] of chains.entries()) {
      const diffId = diffIds[i]!;
      const what = `image ${id.hex.slice(0, 12)}: layer ${i} (chain ${chainId}, diff_id ${diffId})`;
      const dir = path.join(this.imageRoot, 'layerdb', 'sha256', chainId.hex);
      if (!(await isDir(dir))) fail('ERR_LAYER_NOT_FOUND', `${what}: not in docker's layerdb (${dir} missing)`);
      const recorded = await readSmall(path.join(dir, 'diff'));
      if (recorded !== diffId.toString()) {
        fail('ERR_DOCKER_ROOT_CORRUPT', `${what}: layerdb records diff ${recorded ?? '(none)'}`);
      }
      const cacheId = (await readSmall(path.join(dir, 'cache-id'))) ?? '';
      if (!HEX64.test(cacheId)) fail('ERR_DOCKER_ROOT_CORRUPT', `${what}: bad cache-id ${JSON.stringify(cacheId)}`);
      const diffDir = path.join(this.overlayDir, cacheId, 'diff');
      if (!(await isDir(diffDir))) fail('ERR_LAYER_NOT_FOUND', `${what}: diff dir ${diffDir} missing`);
      const size = Number.parseInt((await readSmall(path.join(dir, 'size'))) ?? '0', 10);
      const link = await readSmall(path.join(this.overlayDir, cacheId, 'link'));
      const linkOk =
        link !== undefined &&
        LINK.test(link) &&
        (await readlink(path.join(this.overlayDir, 'l', link)).catch(() => '')) === `../${cacheId}/diff`;
      const tarSplit = path.join(dir, 'tar-split.json.gz');
      out.push({
        diffId,
        chainId,
        cacheId,
        diffDir,
        size: Number.isFinite(size) ? size : 0,
        link: linkOk ? link : undefined,
        tarSplit: (await lstat(tarSplit).catch(() => undefined))?.isFile() ? tarSplit : undefined,
      });
    }
    return out;
  }

  /**
   * The images `docker images` lists (tagged ones, and untagged ones no other image builds on);
   * `all` adds the intermediate images of legacy builds. Images whose config does not hash to
   * their id or whose layers are missing are left out and noted in `skipped`.
   */
  async images(options: { all?: boolean } = {}): Promise<DockerImageSummary[]> {
    const names = await this.names();
    const out: DockerImageSummary[] = [];
    const parents = new Set<string>();
    for (const id of await this.imageIds()) {
      let img: DockerImage;
      try {
        img = await this.image(id, names);
      } catch (e) {
        this.skipped.push(`image ${id}: ${(e as Error).message}`);
        continue;
      }
      if (img.parent) parents.add(img.parent.toString());
      const { config: _c, rawConfig: _r, layers: _l, ...summary } = img;
      out.push(summary);
    }
    return out.filter(
      (i) => options.all || i.repoTags.length > 0 || i.repoDigests.length > 0 || !parents.has(i.id.toString()),
    );
  }

  /** The userspace merged view of an image (no mount, no root). */
  async view(nameOrId: string | DockerImage, options: { hash?: boolean } = {}): Promise<MergedView> {
    const img = typeof nameOrId === 'string' ? await this.image(nameOrId) : nameOrId;
    return MergedView.fromDirs(
      img.layers.map((l) => l.diffDir),
      options,
    );
  }

  // ---- layer tars ----------------------------------------------------------------------------

  /**
   * Writes a layer's exact tar (reassembled from tar-split + diff dir) to `out`, gzip'd when
   * asked, and checks it hashes to the diff_id. Returns the digest and size of what was written.
   */
  async writeLayerTar(
    layer: DockerLayer,
    out: string,
    options: { gzip?: boolean } = {},
  ): Promise<{ digest: Digest; size: number }> {
    if (!layer.tarSplit) {
      fail(
        'ERR_LAYER_NOT_FOUND',
        `layer ${layer.diffId}: no tar-split.json.gz in docker's layerdb, so its exact tar cannot be rebuilt`,
      );
    }
    const diff = new Hasher('sha256');
    const written = new Hasher('sha256');
    const hashDiff = async function* (src: AsyncIterable<Uint8Array>) {
      for await (const c of src) {
        diff.update(c);
        yield c;
      }
    };
    const hashWritten = async function* (src: AsyncIterable<Uint8Array>) {
      for await (const c of src) {
        written.update(c as Buffer);
        yield c;
      }
    };
    const source = Readable.from(
      hashDiff(reassembleTarSplit(layer.tarSplit, layer.diffDir, 'ERR_DOCKER_ROOT_CORRUPT')),
    );
    const sink = createWriteStream(out, { mode: 0o600, flags: 'wx' });
    if (options.gzip) await pipeline(source, createGzip({ level: 6 }), hashWritten, sink);
    else await pipeline(source, hashWritten, sink);
    const got = diff.digest();
    if (!got.equals(layer.diffId)) {
      fail(
        'ERR_DIGEST_MISMATCH',
        `layer ${layer.diffId}: the tar rebuilt from ${layer.diffDir} hashes to ${got}: the diff dir changed after docker stored it`,
      );
    }
    return { digest: written.digest(), size: written.size };
  }
}

// ---- mount / unpack / import ---------------------------------------------------------------------

async function refuseInside(root: DockerRoot, target: string, what: string): Promise<void> {
  if (await inside(target, root.root)) {
    fail(
      'ERR_INVALID_ARG_VALUE',
      `${what} ${path.resolve(target)} is inside docker's data root ${root.root}: choose another place`,
    );
  }
}

/**
 * Mounts a Docker image read-only at `target` with kernel overlay, its lower dirs being Docker's
 * diff dirs (by their `l/` short links, from inside `overlay2/`, as dockerd does); a single
 * layer is a read-only bind mount. Unmount with `umount`.
 */
export async function mountDockerImage(root: DockerRoot, nameOrId: string, target: string): Promise<MountInfo> {
  const img = await root.image(nameOrId);
  if (img.layers.length === 0) fail('ERR_IMAGE_FORMAT', `${nameOrId}: image has no layers`);
  await refuseInside(root, target, 'mount point');
  if (process.getuid?.() !== 0) {
    fail(
      'ERR_MOUNT_PERMISSION',
      `mount ${nameOrId}: kernel overlay mounts need root (use unpack, or the userspace view)`,
    );
  }
  if (!overlaySupported()) fail('ERR_OVERLAY_UNAVAILABLE', `mount ${nameOrId}: the kernel has no overlay filesystem`);
  await mkdir(target, { recursive: true });
  const lowers = [...img.layers].reverse().map((l) => (l.link ? `l/${l.link}` : `${l.cacheId}/diff`));
  const info: MountInfo = {
    target: path.resolve(target),
    imageId: img.id.toString(),
    backend: 'overlay',
    lowerdir: lowers.join(':'),
    mountOptions: '',
  };
  if (img.layers.length === 1) {
    // overlayfs wants two lower dirs without an upper: a single layer is a read-only bind.
    info.backend = 'bind';
    info.mountOptions = 'bind,ro';
    await runMount(['--bind', '-o', 'ro', img.layers[0]!.diffDir, info.target], root.overlayDir, nameOrId);
    return info;
  }
  // Lower dirs only: overlayfs is read-only and writes nothing to them.
  info.mountOptions = `ro,lowerdir=${info.lowerdir}`;
  if (info.mountOptions.length >= 4096) {
    fail('ERR_MOUNT_OPTIONS_TOO_LONG', `mount ${nameOrId}: ${img.layers.length} layers do not fit in one page`);
  }
  await runMount(['-t', 'overlay', 'overlay', '-o', info.mountOptions, info.target], root.overlayDir, nameOrId);
  return info;
}

async function emptyOrAbsent(dir: string): Promise<void> {
  const names = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [];
    fail('ERR_INVALID_ARG_VALUE', `${dir}: ${e.message}`, e);
  });
  if (names.length > 0) fail('ERR_INVALID_ARG_VALUE', `${dir} is not empty: unpack into a new directory`);
}

/**
 * Flattens a Docker image into `target` (absent or empty): each layer's exact tar is rebuilt
 * (checked against its diff_id) and applied base first, whiteouts deleting, in a staging dir
 * next to `target` that is renamed into place only when complete.
 */
export async function unpackDockerImage(root: DockerRoot, nameOrId: string, target: string): Promise<DockerImage> {
  const img = await root.image(nameOrId);
  const abs = path.resolve(target);
  await refuseInside(root, abs, 'unpack target');
  await emptyOrAbsent(abs);
  await mkdir(path.dirname(abs), { recursive: true });
  const stage = await mkdtemp(path.join(path.dirname(abs), `.${path.basename(abs)}.stevedore-${process.pid}-`));
  try {
    const rootfs = path.join(stage, 'rootfs');
    await mkdir(rootfs, { mode: 0o755 });
    for (const [i, l] of img.layers.entries()) {
      const tar = path.join(stage, `layer-${i}.tar`);
      await root.writeLayerTar(l, tar);
      await applyLayer(tar, rootfs, { mode: 'apply', expectedDiffId: l.diffId });
      await rm(tar, { force: true });
    }
    await rename(rootfs, abs);
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
  return img;
}

export interface DockerImportOptions {
  /** Tags in our store (default: the image's RepoTags in Docker). */
  tags?: string[];
  /**
   * Create each layer from its diff dir with `createLayer(…, {mode: 'overlay-diff'})` instead of
   * rebuilding Docker's exact tar (for layers without tar-split). The diff_ids, and so the image
   * ID and chain IDs, then differ from Docker's.
   */
  rebuild?: boolean;
  onLayer?: (event: { diffId: Digest; state: 'exists' | 'applying' | 'applied' }) => void;
}

export interface DockerImportResult extends LoadResult {
  /** Docker's image id (equal to `imageId` unless rebuilt). */
  dockerId: Digest;
  /** The gzip'd layer blobs now in the content store (not the registry's digests). */
  layerDigests: Digest[];
}

/**
 * Imports a Docker image into our store: Docker's config bytes as they are (same image ID),
 * each layer's exact tar rebuilt from tar-split + diff dir (checked against its diff_id),
 * gzip'd deterministically into the content store (so save/push work; the compressed digests
 * are ours, not the registry's), then applied into our own diff dirs by `loadImage`.
 */
export async function importDockerImage(
  root: DockerRoot,
  store: Store,
  nameOrId: string,
  options: DockerImportOptions = {},
): Promise<DockerImportResult> {
  const img = await root.image(nameOrId);
  await refuseInside(root, store.root, 'store');
  const tmp = await mkdtemp(path.join(store.tmpDir, `${process.pid}-docker-import-`));
  try {
    const blobs: { digest: Digest; diffId: Digest; size: number; file: string }[] = [];
    for (const [i, l] of img.layers.entries()) {
      const file = path.join(tmp, `layer-${i}-${randomBytes(4).toString('hex')}.tar.gz`);
      if (options.rebuild) {
        const made = await createLayer(l.diffDir, file, { mode: 'overlay-diff', compression: 'gzip' });
        blobs.push({
          digest: Digest.parse(made.digest),
          diffId: Digest.parse(made.diffId),
          size: made.compressedSize,
          file,
        });
      } else {
        const w = await root.writeLayerTar(l, file, { gzip: true });
        blobs.push({ digest: w.digest, diffId: l.diffId, size: w.size, file });
      }
    }
    let rawConfig = img.rawConfig;
    if (options.rebuild) {
      const cfg = JSON.parse(new TextDecoder().decode(img.rawConfig)) as { rootfs: { diff_ids: string[] } };
      cfg.rootfs.diff_ids = blobs.map((b) => b.diffId.toString());
      rawConfig = new TextEncoder().encode(JSON.stringify(cfg));
    }
    const rawManifest = new TextEncoder().encode(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: DOCKER_MANIFEST,
        config: { mediaType: DOCKER_CONFIG, digest: sha256(rawConfig).toString(), size: rawConfig.length },
        layers: blobs.map((b) => ({ mediaType: DOCKER_LAYER_GZIP, digest: b.digest.toString(), size: b.size })),
      }),
    );
    const layers: Layer[] = blobs.map((b) => ({
      digest: b.digest,
      diffId: b.diffId,
      size: b.size,
      mediaType: DOCKER_LAYER_GZIP,
      compressed: () => createReadStream(b.file),
      uncompressed: () => createReadStream(b.file).pipe(createGunzip()),
    }));
    const image: Image = {
      digest: sha256(rawManifest),
      manifest: parseImageManifest(rawManifest),
      rawManifest,
      config: parseConfig(rawConfig),
      rawConfig,
      layers,
    };
    const result = await store.loadImage(image, {
      tags: options.tags ?? img.repoTags,
      ...(options.onLayer ? { onLayer: options.onLayer } : {}),
    });
    return { ...result, dockerId: img.id, layerDigests: blobs.map((b) => b.digest) };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
