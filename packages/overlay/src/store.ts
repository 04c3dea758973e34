/**
 * An image store laid out as Docker's overlay2 driver lays out `/var/lib/docker`:
 *
 * ```
 * <root>/overlay2/<cache-id>/{diff,link,lower,work}   one dir per layer (lower/work above the base)
 * <root>/overlay2/l/<26-char id> -> ../<cache-id>/diff
 * <root>/image/overlay2/imagedb/content/sha256/<image id>         the config bytes
 * <root>/image/overlay2/imagedb/metadata/sha256/<image id>/lastUpdated
 * <root>/image/overlay2/layerdb/sha256/<chain id>/{diff,size,cache-id,parent}
 * <root>/image/overlay2/repositories.json
 * <root>/content/blobs/sha256/<hex>      original blobs, manifests and configs (save/push)
 * <root>/content/images/sha256/<image id>  the manifest digest an image was stored from
 * <root>/containers/<id>.json            container records (writable layers `overlay2/<id>`)
 * <root>/tmp/<pid>-<rand>                staging (removed by the next open when <pid> is dead)
 * ```
 *
 * Layers are shared by chain ID. Every write is staged and renamed into place; overlay2 dirs,
 * short links, layerdb, imagedb, container records and repositories.json change only under one
 * lock file (`<root>/lock`). A writer killed at any point leaves nothing visible: `open`
 * removes what it left (staging of dead pids, overlay2 dirs no layer or container owns, dangling
 * short links, temp files). A layerdb entry carries, for `fsck --verify`, Docker's
 * `tar-split.json.gz` (recorded by the engine while it extracted the layer: the exact tar is
 * rebuilt from it and the diff dir, and must hash to the diff_id) and a manifest of the diff
 * dir's metadata (`stevedore-diff.json.gz`, see manifest.ts; with content hashes too when the
 * layer cannot be rebuilt from its dir).
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, readFileSync } from 'node:fs';
import { chmod, mkdir, open, readdir, readFile, readlink, rename, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  type ApplyLayerOptions,
  type ApplyLayerReport,
  appendStream,
  applyLayer,
  canApplyWhileWriting,
  Digest,
  GrowingFile,
  Hasher,
  hashFile,
  StevedoreError,
  sha256,
} from '@stevedore/core';
import {
  chainIds,
  DockerArchive,
  type Image,
  OciLayoutReader,
  parseConfig,
  parseImageManifest,
  parseReference,
  type Reference,
  verifiedAs,
} from '@stevedore/image';
import { exists, mkdirp, randomId, shortLinkId, symlinkAtomic, writeFileAtomic, writeFilesSynced } from './fsutil.js';
import { pidAlive, withLock } from './lock.js';
import { DIFF_MANIFEST_FILE, diffManifestOf, encodeDiffManifest, takeDiffManifest } from './manifest.js';
import { TAR_SPLIT_FILE } from './tar-split.js';

export interface StoreOptions {
  /** Data root. Default: `STEVEDORE_ROOT`, else `/var/lib/stevedore` as root, else `~/.local/share/stevedore`. */
  root?: string;
  /** Layers applied at once while loading (default 4). */
  concurrency?: number;
}

/** One layer as stored (layerdb entry + its overlay2 dir). */
export interface StoredLayer {
  chainId: Digest;
  diffId: Digest;
  parent: Digest | undefined;
  cacheId: string;
  /** Docker's `size`: bytes of the diff dir (non-directories, each inode once). */
  size: number;
  /** The 26-character short link name under `overlay2/l/`. */
  link: string;
  /** `overlay2/<cache-id>` (absolute). */
  dir: string;
  diffDir: string;
}

export interface StoredImage {
  id: Digest;
  config: ReturnType<typeof parseConfig>;
  rawConfig: Uint8Array;
  /** Base first. */
  layers: StoredLayer[];
  /** Digest of the manifest it was stored from (when known). */
  manifestDigest: Digest | undefined;
}

export interface LoadResult {
  imageId: Digest;
  chainIds: Digest[];
  /** Repositories.json keys written (e.g. `nginx:latest`, `nginx@sha256:…`). */
  refs: string[];
  /** Layers this call applied (the others were there already). */
  applied: number;
}

export interface LoadOptions {
  /** References to tag (familiar or full). */
  tags?: (string | Reference)[];
  /** Also record `name@<manifest digest>` for each tag's repository (as `docker pull` does). */
  digestRefs?: boolean;
  onLayer?: (event: { diffId: Digest; state: 'exists' | 'applying' | 'applied' }) => void;
  /** While a layer is extracted: compressed blob bytes read so far (about ten times a second). */
  onExtract?: (event: { diffId: Digest; bytes: number }) => void;
  /**
   * The repository the blobs came from (full name, e.g. `docker.io/library/nginx`): records
   * Docker's `distribution/diffid-by-digest` and `v2metadata-by-diffid` as `docker pull` does.
   */
  sourceRepository?: string;
}

const HEX64 = /^[a-f0-9]{64}$/;

export function defaultRoot(): string {
  if (process.env.STEVEDORE_ROOT) return path.resolve(process.env.STEVEDORE_ROOT);
  if (process.getuid?.() === 0) return '/var/lib/stevedore';
  return path.join(os.homedir(), '.local', 'share', 'stevedore');
}

interface Staged {
  index: number;
  stage: string;
  size: number;
  /** The gzip'd content manifest of `stage/diff`. */
  manifest: Uint8Array;
  /** The layer's tar-split (`tar-split.json.gz`), unless it cannot rebuild the tar. */
  tarSplit: Uint8Array | undefined;
}

/** `<name>.tmp-<pid>-<hex>` (writeFileAtomic, symlinkAtomic), `lock.<pid>.<hex>` and `lock.stale-<pid>-<hex>` (lock.ts). */
const TEMP_NAME = /(?:\.tmp-|^lock\.(?:stale-)?)(\d+)[-.][0-9a-f]+$/;

export class Store {
  readonly overlayDir: string;
  readonly linkDir: string;
  readonly imageRoot: string;
  readonly layerdb: string;
  readonly imagedb: string;
  readonly blobDir: string;
  readonly tmpDir: string;
  readonly lockFile: string;
  readonly containersDir: string;
  readonly concurrency: number;

  private constructor(
    readonly root: string,
    options: StoreOptions,
  ) {
    this.overlayDir = path.join(root, 'overlay2');
    this.linkDir = path.join(this.overlayDir, 'l');
    this.imageRoot = path.join(root, 'image', 'overlay2');
    this.layerdb = path.join(this.imageRoot, 'layerdb');
    this.imagedb = path.join(this.imageRoot, 'imagedb');
    this.blobDir = path.join(root, 'content', 'blobs', 'sha256');
    this.tmpDir = path.join(root, 'tmp');
    this.lockFile = path.join(root, 'lock');
    this.containersDir = path.join(root, 'containers');
    this.concurrency = options.concurrency ?? 4;
  }

  /** Opens (creating) a store; removes what dead processes left behind (see `recover`). */
  static async open(options: StoreOptions = {}): Promise<Store> {
    const root = path.resolve(options.root ?? defaultRoot());
    const s = new Store(root, options);
    await mkdirp(root);
    await chmod(root, 0o700);
    for (const d of [
      s.linkDir,
      path.join(s.layerdb, 'sha256'),
      path.join(s.layerdb, 'tmp'),
      path.join(s.imagedb, 'content', 'sha256'),
      path.join(s.imagedb, 'metadata', 'sha256'),
      s.blobDir,
      path.join(root, 'content', 'ingest'),
      path.join(root, 'content', 'images', 'sha256'),
      s.tmpDir,
      s.containersDir,
    ]) {
      await mkdirp(d);
    }
    await s.cleanStaging();
    await withLock(s.lockFile, () => s.recover());
    return s;
  }

  /**
   * Under the lock (so no live writer is half-way): removes `overlay2/<id>` dirs that neither a
   * layerdb entry nor a container record owns (a load or container creation killed between its
   * renames), dangling short links, and temp files of dead pids. Returns what it removed.
   */
  async recover(): Promise<string[]> {
    const removed: string[] = [];
    const owned = new Set<string>();
    for (const c of await readdir(path.join(this.layerdb, 'sha256'))) {
      const id = (await readFile(path.join(this.layerdb, 'sha256', c, 'cache-id'), 'utf8').catch(() => '')).trim();
      owned.add(id);
    }
    for (const f of await readdir(this.containersDir)) owned.add(f.replace(/\.json$/, ''));
    for (const d of await readdir(this.overlayDir)) {
      if (!HEX64.test(d) || owned.has(d)) continue;
      await this.removeLayerDir(d);
      removed.push(path.join(this.overlayDir, d));
    }
    for (const link of await readdir(this.linkDir)) {
      const p = path.join(this.linkDir, link);
      const target = await readlink(p).catch(() => '');
      if (
        TEMP_NAME.test(link)
          ? pidAlive(Number(TEMP_NAME.exec(link)![1]))
          : await exists(path.join(this.linkDir, target))
      )
        continue;
      await rm(p, { force: true });
      removed.push(p);
    }
    const metadata = path.join(this.imagedb, 'metadata', 'sha256');
    const dirs = [
      this.root,
      this.imageRoot,
      path.join(this.imagedb, 'content', 'sha256'),
      path.join(this.root, 'content', 'images', 'sha256'),
      this.containersDir,
      path.join(this.imageRoot, 'distribution', 'diffid-by-digest', 'sha256'),
      path.join(this.imageRoot, 'distribution', 'v2metadata-by-diffid', 'sha256'),
      ...(await readdir(metadata)).map((d) => path.join(metadata, d)),
    ];
    for (const dir of dirs) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const m = TEMP_NAME.exec(name);
        if (!m || pidAlive(Number(m[1]))) continue;
        await rm(path.join(dir, name), { force: true });
        removed.push(path.join(dir, name));
      }
    }
    return removed;
  }

  /** Removes staging dirs and ingest files whose owner pid is dead. Returns what it removed. */
  async cleanStaging(): Promise<string[]> {
    const removed: string[] = [];
    for (const dir of [this.tmpDir, path.join(this.root, 'content', 'ingest'), path.join(this.layerdb, 'tmp')]) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const pid = Number.parseInt(name.split('-')[0] ?? '', 10);
        if (pidAlive(pid)) continue;
        await rm(path.join(dir, name), { recursive: true, force: true });
        removed.push(path.join(dir, name));
      }
    }
    return removed;
  }

  private stagingName(): string {
    return `${process.pid}-${randomBytes(8).toString('hex')}`;
  }

  blobPath(d: Digest | string): string {
    const digest = typeof d === 'string' ? Digest.parse(d) : d;
    if (digest.algorithm !== 'sha256') throw new StevedoreError('ERR_UNSUPPORTED', `blob ${digest}: only sha256`);
    return path.join(this.blobDir, digest.hex);
  }

  async hasBlob(d: Digest): Promise<boolean> {
    return exists(this.blobPath(d));
  }

  /** Stores a blob from a stream: ingest file, verify size and digest, fsync, rename. Idempotent. */
  async putBlob(d: Digest, size: number | undefined, source: AsyncIterable<Uint8Array> | Uint8Array): Promise<string> {
    const final = this.blobPath(d);
    if (await exists(final)) return final;
    const ingest = path.join(this.root, 'content', 'ingest', this.stagingName());
    let out: ReturnType<typeof createWriteStream> | undefined;
    try {
      if (source instanceof Uint8Array) await writeFileAtomic(ingest, source);
      else {
        out = createWriteStream(ingest, { mode: 0o600 });
        await pipeline(source, out);
      }
      const got = await hashFile(ingest);
      if (size !== undefined && got.size !== size) {
        throw new StevedoreError('ERR_SIZE_MISMATCH', `blob ${d}: size mismatch (expected ${size}, got ${got.size})`);
      }
      got.digest.verify(d, `blob ${d}`);
      await rename(ingest, final);
      return final;
    } finally {
      // A source that fails early can beat the file's asynchronous open: wait for the stream
      // to close, or the open would recreate the ingest file after it was removed.
      if (out && !out.closed) await once(out, 'close').catch(() => {});
      await rm(ingest, { force: true });
    }
  }

  // ---- layerdb -------------------------------------------------------------------------------

  private layerDir(chain: Digest): string {
    return path.join(this.layerdb, chain.algorithm, chain.hex);
  }

  /** The stored layer for a chain ID, or undefined. */
  async layer(chain: Digest): Promise<StoredLayer | undefined> {
    const dir = this.layerDir(chain);
    const cacheId = readSmallFile(path.join(dir, 'cache-id'))?.trim();
    if (cacheId === undefined) return undefined;
    if (!HEX64.test(cacheId)) throw new StevedoreError('ERR_STORE_CORRUPT', `layer ${chain}: bad cache-id`);
    const ldir = path.join(this.overlayDir, cacheId);
    const need = (file: string) => {
      const text = readSmallFile(file);
      if (text === undefined) throw new StevedoreError('ERR_STORE_CORRUPT', `layer ${chain}: ${file} is missing`);
      return text.trim();
    };
    const diffId = Digest.parse(need(path.join(dir, 'diff')));
    const parentText = readSmallFile(path.join(dir, 'parent'))?.trim();
    const size = Number.parseInt(need(path.join(dir, 'size')), 10);
    const link = need(path.join(ldir, 'link'));
    return {
      chainId: chain,
      diffId,
      parent: parentText ? Digest.parse(parentText) : undefined,
      cacheId,
      size,
      link,
      dir: ldir,
      diffDir: path.join(ldir, 'diff'),
    };
  }

  /** `l/<link>:l/<link>…` of a layer dir, itself first (what goes into a child's `lower`). */
  async lowerChain(layerDir: string): Promise<string> {
    const link = (await readFile(path.join(layerDir, 'link'), 'utf8')).trim();
    const lower = (await readFile(path.join(layerDir, 'lower'), 'utf8').catch(() => '')).trim();
    return lower ? `l/${link}:${lower}` : `l/${link}`;
  }

  /**
   * Creates `overlay2/<id>` from a staged dir holding `diff/` (moved in), with `link`, `lower`
   * (when `parentDir` is given) and `work`, and its `l/` short link. Returns the id and link.
   */
  async createLayerDir(
    staged: string | undefined,
    parentDir: string | undefined,
    id = randomId(),
  ): Promise<{ id: string; link: string; dir: string }> {
    const stage = staged ?? path.join(this.tmpDir, this.stagingName());
    if (!staged) await mkdir(path.join(stage, 'diff'), { recursive: true, mode: 0o755 });
    const link = shortLinkId();
    await this.stageLayerDir(stage, link, parentDir ? await this.lowerChain(parentDir) : undefined);
    return this.publishLayerDir(stage, id, link);
  }

  /** Writes `link`, `lower` and `work` into a staged layer dir (synced; nothing visible yet). */
  private async stageLayerDir(stage: string, link: string, lower: string | undefined): Promise<void> {
    const files: [string, string, number][] = [['link', link, 0o644]];
    if (lower !== undefined) {
      files.push(['lower', lower, 0o644]);
      await mkdir(path.join(stage, 'work'), { mode: 0o700 });
    }
    await writeFilesSynced(stage, files);
  }

  /** Moves a staged layer dir to `overlay2/<id>` and makes its `l/` short link. */
  private async publishLayerDir(
    stage: string,
    id: string,
    link: string,
  ): Promise<{ id: string; link: string; dir: string }> {
    const dir = path.join(this.overlayDir, id);
    await rename(stage, dir);
    await symlinkAtomic(`../${id}/diff`, path.join(this.linkDir, link));
    return { id, link, dir };
  }

  /** Removes an `overlay2/<id>` dir and its short link. */
  async removeLayerDir(id: string): Promise<void> {
    if (!HEX64.test(id)) throw new StevedoreError('ERR_INVALID_ARG_VALUE', `bad layer dir id ${id}`);
    const dir = path.join(this.overlayDir, id);
    const link = (await readFile(path.join(dir, 'link'), 'utf8').catch(() => '')).trim();
    if (/^[A-Z2-7]{26}$/.test(link)) await rm(path.join(this.linkDir, link), { force: true });
    await rm(dir, { recursive: true, force: true });
  }

  // ---- loading -------------------------------------------------------------------------------

  /**
   * Stores an image: blobs into the content store (verified), each missing layer applied in
   * `overlay` mode into its own staged diff dir (in parallel), then — under the lock — the
   * overlay2 dirs, layerdb entries, config, and tags. Nothing is visible until it is complete;
   * concurrent loads of the same image store one copy.
   */
  async loadImage(image: Image, options: LoadOptions = {}): Promise<LoadResult> {
    const diffIds = image.config.rootfs.diff_ids;
    if (diffIds.length !== image.layers.length) {
      throw new StevedoreError(
        'ERR_IMAGE_FORMAT',
        `image has ${image.layers.length} layers but ${diffIds.length} diff_ids in its config`,
      );
    }
    const chains = chainIds(diffIds);
    const imageId = sha256(image.rawConfig);
    // Config and manifest bytes go to the content store first (idempotent, by digest).
    await this.putBlob(imageId, image.rawConfig.length, image.rawConfig);
    await this.putBlob(image.digest, image.rawManifest.length, image.rawManifest);

    // Apply missing layers in parallel into staging dirs.
    const staged: Staged[] = [];
    let next = 0;
    const work = async () => {
      for (;;) {
        const i = next++;
        if (i >= image.layers.length) return;
        const layer = image.layers[i]!;
        const diffId = diffIds[i]!;
        if (await this.layer(chains[i]!)) {
          options.onLayer?.({ diffId, state: 'exists' });
          await this.putLayerBlob(layer);
          continue;
        }
        options.onLayer?.({ diffId, state: 'applying' });
        const stage = path.join(this.tmpDir, this.stagingName());
        await mkdir(stage, { mode: 0o700 });
        try {
          const applyOptions: ApplyLayerOptions = {
            mode: 'overlay',
            expectedDigest: layer.digest,
            expectedDiffId: diffId,
            scan: true,
            // Docker's tar-split rebuilds the exact tar from the diff dir (fsck --verify hashes it
            // against the diff_id): the scan then records metadata only, files are not hashed.
            tarSplit: true,
            // Unprivileged stores mark opaque dirs with `user.overlay.opaque` (fuse-overlayfs and
            // `-o userxattr` read it); `trusted.*` needs CAP_SYS_ADMIN.
            xattrNamespace: process.getuid?.() === 0 ? 'trusted' : 'user',
            ...(options.onExtract ? { onProgress: (p) => options.onExtract?.({ diffId, bytes: p.compressed }) } : {}),
          };
          const diffDir = path.join(stage, 'diff');
          const report =
            (await this.hasBlob(layer.digest)) || !canApplyWhileWriting()
              ? await applyLayer(await this.putLayerBlob(layer), diffDir, applyOptions)
              : await this.downloadAndApply(layer, diffDir, applyOptions);
          // The content manifest of what the engine just extracted and verified (fsck --verify):
          // scanned by the engine itself; its files hashed only when there is no tar-split.
          const taken = report.tree
            ? diffManifestOf(report.tree, diffId, chains[i]!)
            : await takeDiffManifest(diffDir, diffId, chains[i]!);
          staged.push({
            index: i,
            stage,
            size: taken.size,
            manifest: encodeDiffManifest(taken.manifest),
            tarSplit: report.tarSplit,
          });
        } catch (e) {
          await rm(stage, { recursive: true, force: true });
          throw e;
        }
        options.onLayer?.({ diffId, state: 'applied' });
      }
    };
    let failed = false;
    const guarded = async () => {
      try {
        await work();
      } catch (e) {
        failed = true;
        next = image.layers.length; // stop the other workers early
        throw e;
      }
    };
    const results = await Promise.allSettled(
      Array.from({ length: Math.min(this.concurrency, image.layers.length || 1) }, guarded),
    );
    if (failed) {
      await Promise.all(staged.map((s) => rm(s.stage, { recursive: true, force: true })));
      throw (results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason;
    }

    const refs: string[] = [];
    let applied = 0;
    await withLock(this.lockFile, async () => {
      const byIndex = new Map(staged.map((s) => [s.index, s]));
      // Which layers are new, and their `lower` chains (known in memory once the parent's is).
      const plan: { i: number; s: Staged; id: string; link: string; lower: string | undefined }[] = [];
      // the parent of the next layer: a stored one (its chain read only if a new layer follows)
      let parentDir: string | undefined;
      let parentChain: string | undefined;
      for (let i = 0; i < chains.length; i++) {
        const chain = chains[i]!;
        const s = byIndex.get(i);
        const have = await this.layer(chain);
        if (have) {
          if (s) await rm(s.stage, { recursive: true, force: true });
          parentDir = have.dir;
          parentChain = undefined;
          continue;
        }
        if (!s) throw new StevedoreError('ERR_STORE_CORRUPT', `layer ${chain} vanished while loading`);
        if (parentDir) parentChain = await this.lowerChain(parentDir);
        parentDir = undefined;
        const link = shortLinkId();
        plan.push({ i, s, id: randomId(), link, lower: parentChain });
        parentChain = parentChain ? `l/${link}:${parentChain}` : `l/${link}`;
      }
      // Every new layer's files written and synced at once (the journal commits them together),
      // then published in order, parents first: dir and short link, then its layerdb entry.
      const layerdbStages: (string | undefined)[] = [];
      try {
        await Promise.all(
          plan.map(async (p, k) => {
            const [, tmp] = await Promise.all([
              this.stageLayerDir(p.s.stage, p.link, p.lower),
              this.stageLayerdb(diffIds[p.i]!, p.i > 0 ? chains[p.i - 1] : undefined, p.id, p.s),
            ]);
            layerdbStages[k] = tmp;
          }),
        );
        for (const [k, p] of plan.entries()) {
          await this.publishLayerDir(p.s.stage, p.id, p.link);
          await rename(layerdbStages[k]!, this.layerDir(chains[p.i]!));
          applied++;
        }
      } finally {
        // What was not published (after an error): gone; published paths no longer exist here.
        const left = [...plan.map((p) => p.s.stage), ...layerdbStages];
        await Promise.all(left.map((d) => d && rm(d, { recursive: true, force: true })));
      }
      // The distribution records, the manifest record and lastUpdated first (together: the
      // journal commits their fsyncs at once): the imagedb config is what makes the image
      // visible, so it is written last (a kill before it leaves no image).
      const meta = path.join(this.imagedb, 'metadata', 'sha256', imageId.hex);
      await Promise.all([
        options.sourceRepository ? this.writeDistribution(image, options.sourceRepository) : undefined,
        writeFileAtomic(path.join(this.root, 'content', 'images', 'sha256', imageId.hex), image.digest.toString()),
        mkdirp(meta).then(() => writeFileAtomic(path.join(meta, 'lastUpdated'), new Date().toISOString())),
      ]);
      const content = path.join(this.imagedb, 'content', 'sha256', imageId.hex);
      if (!(await exists(content))) await writeFileAtomic(content, image.rawConfig);
      if (options.tags?.length) {
        const repos = await this.readRepositories();
        for (const t of options.tags) {
          const ref = typeof t === 'string' ? parseReference(t) : t;
          const name = ref.familiarName();
          const entry = repos.Repositories[name] ?? {};
          repos.Repositories[name] = entry;
          if (ref.tag !== undefined || !ref.digest) {
            const key = `${name}:${ref.tag ?? 'latest'}`;
            entry[key] = imageId.toString();
            refs.push(key);
          }
          if (options.digestRefs || ref.digest) {
            const key = `${name}@${(ref.digest ?? image.digest).toString()}`;
            entry[key] = imageId.toString();
            refs.push(key);
          }
        }
        await this.writeRepositories(repos);
      }
    });
    return { imageId, chainIds: chains, refs, applied };
  }

  /**
   * Stores a layer blob and applies it at the same time: the blob is written to an ingest file
   * (hashed as it is written, off the JS thread) while the engine reads that file as it grows
   * and extracts it into `diffDir`, so extraction does not wait for the download. The engine
   * checks digest and diff_id itself; the blob is renamed into the content store only once
   * both the download (size, digest) and the extraction succeeded.
   */
  private async downloadAndApply(
    layer: Image['layers'][number],
    diffDir: string,
    applyOptions: ApplyLayerOptions,
  ): Promise<ApplyLayerReport> {
    const final = this.blobPath(layer.digest);
    const ingest = path.join(this.root, 'content', 'ingest', this.stagingName());
    const growing = new GrowingFile();
    const fh = await open(ingest, 'wx', 0o600);
    const download = (async () => {
      // The engine checks the blob's digest as it extracts (expectedDigest), and the blob is only
      // kept once that succeeded: a registry layer is then fetched without hashing it twice.
      const remote = layer.compressedUnverified !== undefined;
      const stream = layer.compressedUnverified ? layer.compressedUnverified() : layer.compressed();
      // Other streams: not hashed again when they verify themselves (their last step throws).
      const self = verifiedAs(stream);
      const trusted =
        remote || (self?.digest.equals(layer.digest) && (self.size === undefined || self.size === layer.size));
      const hasher = trusted ? undefined : new Hasher(layer.digest.algorithm);
      try {
        const size = await appendStream(fh.fd, stream, { hasher, growing });
        if (size !== layer.size) {
          throw new StevedoreError(
            'ERR_SIZE_MISMATCH',
            `blob ${layer.digest}: size mismatch (expected ${layer.size}, got ${size})`,
          );
        }
        hasher?.digest().verify(layer.digest, `blob ${layer.digest}`);
        growing.end(true);
      } catch (e) {
        growing.end(false);
        throw e;
      }
    })();
    const applying = applyLayer(ingest, diffDir, { ...applyOptions, growing });
    const [got, applied] = await Promise.allSettled([download, applying]);
    try {
      // The download's own error says what went wrong first (the engine only saw it end).
      if (got.status === 'rejected') throw got.reason;
      if (applied.status === 'rejected') throw applied.reason;
      await fh.close();
      if (await exists(final)) await rm(ingest, { force: true });
      else await rename(ingest, final);
      return applied.value;
    } finally {
      await fh.close().catch(() => {});
      await rm(ingest, { force: true });
    }
  }

  private async putLayerBlob(layer: Image['layers'][number]): Promise<string> {
    const p = this.blobPath(layer.digest);
    if (await exists(p)) return p;
    return this.putBlob(layer.digest, layer.size, layer.compressed());
  }

  /**
   * A layerdb entry as Docker's layer store writes it: a write-set dir under layerdb/tmp (synced),
   * which the caller renames to `sha256/<chain>`. Returns the write-set dir.
   */
  private async stageLayerdb(
    diffId: Digest,
    parent: Digest | undefined,
    cacheId: string,
    staged: Staged,
  ): Promise<string> {
    const tmp = path.join(this.layerdb, 'tmp', `${process.pid}-write-set-${randomBytes(8).toString('hex')}`);
    await mkdir(tmp, { mode: 0o755 });
    await writeFilesSynced(tmp, [
      ['diff', diffId.toString(), 0o644],
      ['size', String(staged.size), 0o644],
      ['cache-id', cacheId, 0o644],
      ...(parent ? [['parent', parent.toString(), 0o644] as const] : []),
      ...(staged.tarSplit ? [[TAR_SPLIT_FILE, staged.tarSplit, 0o644] as const] : []),
      [DIFF_MANIFEST_FILE, staged.manifest, 0o600],
    ]);
    return tmp;
  }

  private async writeDistribution(image: Image, repository: string): Promise<void> {
    const dist = path.join(this.imageRoot, 'distribution');
    const byDigest = path.join(dist, 'diffid-by-digest', 'sha256');
    const byDiffId = path.join(dist, 'v2metadata-by-diffid', 'sha256');
    await mkdirp(byDigest);
    await mkdirp(byDiffId);
    // Layer by layer in turn, each file would cost two fsyncs in a row; the layers' files are
    // independent. Grouped by diff_id: one diff_id may come with several blob digests.
    const byId = new Map<string, Image['layers'][number][]>();
    for (const l of image.layers) byId.set(l.diffId.hex, [...(byId.get(l.diffId.hex) ?? []), l]);
    await Promise.all(
      [...byId.values()].map(async (group) => {
        const digests = [...new Set(group.map((l) => l.digest.toString()))];
        const diffId = group[0]!.diffId;
        await Promise.all(
          digests.map((d) =>
            writeFileAtomic(path.join(byDigest, d.slice(d.indexOf(':') + 1)), diffId.toString(), 0o644),
          ),
        );
        const file = path.join(byDiffId, diffId.hex);
        let list: { Digest: string; SourceRepository: string; HMAC: string }[] = [];
        try {
          list = JSON.parse(await readFile(file, 'utf8'));
        } catch {
          list = [];
        }
        const missing = digests.filter((d) => !list.some((m) => m.Digest === d && m.SourceRepository === repository));
        if (missing.length === 0) return;
        for (const d of missing) list.push({ Digest: d, SourceRepository: repository, HMAC: '' });
        await writeFileAtomic(file, JSON.stringify(list), 0o644);
      }),
    );
  }

  /** Loads every image of a `docker save` archive, tagging its RepoTags. */
  async loadDockerArchive(file: string, options: Omit<LoadOptions, 'tags'> = {}): Promise<LoadResult[]> {
    const a = await DockerArchive.open(file);
    try {
      const out: LoadResult[] = [];
      for (const img of a.images) out.push(await this.loadImage(img, { ...options, tags: [...img.repoTags] }));
      return out;
    } finally {
      await a.close();
    }
  }

  /** Loads an image of an OCI layout dir (by tag, or the only one), tagged `tags`. */
  async loadOciLayout(dir: string, tag?: string, options: LoadOptions = {}): Promise<LoadResult> {
    const layout = await OciLayoutReader.openDir(dir);
    return this.loadImage(await layout.image(tag), options);
  }

  /**
   * Pulls an image from a registry into the store (blobs verified into the content store, then
   * applied), tagging `ref` and `name@digest` as `docker pull` does.
   */
  async pull(
    ref: string | Reference,
    options: LoadOptions & {
      client?: import('@stevedore/registry').RegistryClient;
      platform?: string;
    } = {},
  ): Promise<LoadResult> {
    const { RegistryClient, pullImage } = await import('@stevedore/registry');
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    const client = options.client ?? new RegistryClient();
    try {
      const img = await pullImage(client, r, options.platform ? { platform: options.platform } : {});
      return await this.loadImage(img, { ...options, tags: [r], digestRefs: true, sourceRepository: r.name });
    } finally {
      if (!options.client) await client.close();
    }
  }

  // ---- repositories.json / images --------------------------------------------------------------

  async readRepositories(): Promise<{ Repositories: Record<string, Record<string, string>> }> {
    try {
      const v = JSON.parse(await readFile(path.join(this.imageRoot, 'repositories.json'), 'utf8'));
      if (v && typeof v === 'object' && v.Repositories && typeof v.Repositories === 'object') return v;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new StevedoreError('ERR_STORE_CORRUPT', `repositories.json: ${(e as Error).message}`, { cause: e });
      }
    }
    return { Repositories: {} };
  }

  private async writeRepositories(v: { Repositories: Record<string, Record<string, string>> }): Promise<void> {
    await writeFileAtomic(path.join(this.imageRoot, 'repositories.json'), JSON.stringify(v), 0o600);
  }

  /** Image ids in imagedb. */
  async imageIds(): Promise<Digest[]> {
    const names = await readdir(path.join(this.imagedb, 'content', 'sha256'));
    return names.filter((n) => HEX64.test(n)).map((n) => Digest.parse(`sha256:${n}`));
  }

  /** Resolves a reference, `sha256:<id>` or a unique id prefix to an image id. */
  async resolveImageId(nameOrId: string): Promise<Digest> {
    const hex = nameOrId.startsWith('sha256:') ? nameOrId.slice(7) : nameOrId;
    if (/^[a-f0-9]{12,64}$/.test(hex)) {
      const hits = (await this.imageIds()).filter((d) => d.hex.startsWith(hex));
      if (hits.length === 1) return hits[0]!;
    }
    const ref = parseReference(nameOrId);
    const repos = await this.readRepositories();
    const name = ref.familiarName();
    const key = ref.digest ? `${name}@${ref.digest}` : `${name}:${ref.tag ?? 'latest'}`;
    const id = repos.Repositories[name]?.[key];
    if (!id) throw new StevedoreError('ERR_IMAGE_NOT_FOUND', `no such image: ${nameOrId}`);
    return Digest.parse(id);
  }

  /** An image of the store with its layers (base first). */
  async image(nameOrId: string | Digest): Promise<StoredImage> {
    const id = typeof nameOrId === 'string' ? await this.resolveImageId(nameOrId) : nameOrId;
    let rawConfig: Uint8Array;
    try {
      rawConfig = new Uint8Array(await readFile(path.join(this.imagedb, 'content', 'sha256', id.hex)));
    } catch {
      throw new StevedoreError('ERR_IMAGE_NOT_FOUND', `no such image: ${id}`);
    }
    sha256(rawConfig).verify(id, `image ${id}: config`);
    const config = parseConfig(rawConfig);
    const chains = chainIds(config.rootfs.diff_ids);
    const found = await Promise.all(chains.map((c) => this.layer(c)));
    const layers: StoredLayer[] = found.map((l, i) => {
      if (!l) throw new StevedoreError('ERR_STORE_CORRUPT', `image ${id}: layer ${chains[i]} missing`);
      return l;
    });
    const m = await readFile(path.join(this.root, 'content', 'images', 'sha256', id.hex), 'utf8').catch(() => '');
    return { id, config, rawConfig, layers, manifestDigest: m ? Digest.parse(m.trim()) : undefined };
  }

  /** The layer blob digests of an image (from its stored manifest), base first. */
  async layerBlobs(img: StoredImage): Promise<{ digest: Digest; mediaType: string; size: number }[]> {
    if (!img.manifestDigest) throw new StevedoreError('ERR_BLOB_NOT_FOUND', `image ${img.id}: no manifest stored`);
    const raw = new Uint8Array(await readFile(this.blobPath(img.manifestDigest)));
    sha256(raw).verify(img.manifestDigest, `manifest ${img.manifestDigest}`);
    const m = parseImageManifest(raw);
    return m.layers.map((d) => ({ digest: d.digest, mediaType: d.mediaType, size: d.size }));
  }

  /** Checks a short link resolves to its layer's diff dir. */
  async checkLink(link: string): Promise<string> {
    return readlink(path.join(this.linkDir, link));
  }

  async statRoot(): Promise<number> {
    return (await stat(this.root)).mode & 0o7777;
  }
}

/**
 * Reads one of the store's small metadata files (an id, a digest, a number); undefined when it
 * does not exist. Synchronous on purpose: these are a few bytes each and an image reads five per
 * layer — promise-based reads cost ~4 thread-pool round trips per file (a 100-layer image took
 * ~35 ms to open that way, ~5 ms like this).
 */
function readSmallFile(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
