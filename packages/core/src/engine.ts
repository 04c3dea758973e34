/**
 * The layer engine on real directories (Node only, native addon): apply a layer blob to a
 * directory and create a layer from one. Work runs on libuv's pool, never the JS thread;
 * decompression and file writes are pipelined on two threads inside the addon.
 */
import { constants as fsConstants } from 'node:fs';
import { type FileHandle, open as openFile, rename, rm } from 'node:fs/promises';
import type { Digest, Hasher } from './api.js';
import { asStevedoreError, StevedoreError } from './errors.js';
import { loadNativeAddon, type NativeAddon } from './native.js';

export interface LayerProgress {
  /** Applying: compressed bytes read. Creating: compressed bytes written. */
  compressed: number;
  /** Uncompressed tar bytes produced (applying) or written (creating). */
  uncompressed: number;
  entries: number;
}

export interface ApplyLayerOptions {
  /**
   * `overlay` (default): the layer's own diff dir, as Docker's overlay2 driver writes it
   * (`.wh.x` → char device 0/0, opaque marker → `trusted.overlay.opaque=y`); `apply`: flatten
   * onto an existing rootfs (whiteouts delete, opaque clears lower content); `oci`: keep
   * `.wh.` files as they are. With `overlay`/`oci` the target must be absent or empty and is
   * only ever seen complete; with `apply` every change is undone on error.
   */
  mode?: 'overlay' | 'apply' | 'oci';
  /** Digest of the blob as read (compressed); a mismatch fails with both digests. */
  expectedDigest?: Digest | string;
  /** The diff_id (digest of the uncompressed tar). */
  expectedDiffId?: Digest | string;
  /** `user` for unprivileged `-o userxattr` overlay mounts. */
  xattrNamespace?: 'trusted' | 'user';
  /** Set owners from the archive (default: when running as root). */
  preserveOwner?: boolean;
  /** When not preserving owners, record them in `user.rootlesscontainers` (as umoci does). */
  recordOwner?: boolean;
  maxUncompressedBytes?: number;
  maxRatio?: number;
  maxEntries?: number;
  /**
   * GNU sparse files (holes written as zeros): refused by default (ERR_TAR_UNSUPPORTED), since
   * holes cost no archive bytes; above 0, the most map fragments one sparse file may have
   * (65536 is plenty). The total size of regular files then counts against
   * `maxUncompressedBytes`.
   */
  maxSparseEntries?: number;
  /**
   * Also scan the result as {@link scanTree} does (report `tree`), its regular files hashed as
   * they are written instead of read back afterwards: an image store's record of a new diff dir
   * at a fraction of a separate scan's cost.
   */
  scan?: boolean;
  /**
   * Record the layer's tar-split (report `tarSplit`): Docker's `tar-split.json.gz`, which
   * rebuilds the exact tar from the extracted tree (`@stevedore/overlay` reads it back). With
   * `scan: true` the files are then not hashed (the rebuilt tar's digest is the diff_id); when the
   * layer cannot be rebuilt from its tree (a path given twice, a sparse file) the report says
   * why in `tarSplitUnusable` and the scan hashes the files.
   */
  tarSplit?: boolean;
  /** Called about every `progressIntervalMs` (default 100) while the layer is applied. */
  onProgress?: (progress: LayerProgress) => void;
  progressIntervalMs?: number;
  /**
   * The source file is still being written (a download) through {@link appendToFile} with this
   * handle: the layer is applied as the bytes arrive; it fails if the writer ends with `ok:
   * false`.
   */
  growing?: GrowingFile;
}

/**
 * A file that is still being appended to (a blob being downloaded), so that {@link applyLayer}
 * can apply it while it arrives. The writer passes it to {@link appendToFile} and must call
 * `end` exactly once: `end(true)` when every byte is written and verified, `end(false)` on any
 * failure (the apply then fails; a handle dropped without `end` counts as failed).
 */
export class GrowingFile {
  /** @internal */
  readonly handle: unknown;
  constructor() {
    this.handle = addon().growingCreate();
  }
  end(ok: boolean): void {
    addon().growingEnd(this.handle as Parameters<NativeAddon['growingEnd']>[0], ok);
  }
}

export interface LayerWarning {
  path: string;
  message: string;
}

export interface ApplyLayerReport {
  /** Digest of the blob as read (compressed bytes). */
  digest: string;
  /** Digest of the uncompressed tar. */
  diffId: string;
  compressedSize: number;
  uncompressedSize: number;
  compression: 'tar' | 'gzip' | 'zstd';
  entries: number;
  /** Entries or attributes not applied (e.g. devices when not root), with the reason. */
  skipped: LayerWarning[];
  /** With `scan: true`: the applied tree as {@link scanTree} reports it. */
  tree?: { entries: TreeEntry[]; size: number };
  /** With `tarSplit: true`: the gzip'd tar-split, unless `tarSplitUnusable` says why not. */
  tarSplit?: Uint8Array;
  tarSplitUnusable?: string;
}

export interface CreateLayerOptions {
  /** `full` (default): every entry is content; `overlay-diff`: an overlay upper/diff dir. */
  mode?: 'full' | 'overlay-diff';
  xattrNamespace?: 'trusted' | 'user';
  /** Default gzip (level 6); zstd level 3. */
  compression?: 'gzip' | 'zstd' | 'none';
  level?: number;
  /** Clamp mtimes to this time (seconds), like SOURCE_DATE_EPOCH; default: keep them. */
  clampMtime?: number;
  onProgress?: (progress: LayerProgress) => void;
  progressIntervalMs?: number;
}

export interface CreateLayerReport {
  /** Digest of the written blob (compressed). */
  digest: string;
  diffId: string;
  compressedSize: number;
  uncompressedSize: number;
  entries: number;
  skipped: LayerWarning[];
}

let addonRef: NativeAddon | undefined;

/** The engine needs the addon whatever backend hashes and parses (wasm has no filesystem). */
function addon(): NativeAddon {
  if (addonRef) return addonRef;
  const loaded = loadNativeAddon();
  if ('error' in loaded) {
    throw new StevedoreError(
      'ERR_NATIVE_REQUIRED',
      `applying and creating layers on disk needs the native addon: ${loaded.error}`,
    );
  }
  addonRef = loaded.addon;
  return addonRef;
}

async function withProgress<T>(
  a: NativeAddon,
  onProgress: ((p: LayerProgress) => void) | undefined,
  intervalMs: number | undefined,
  run: (progress: unknown) => Promise<T>,
): Promise<T> {
  if (!onProgress) return run(null);
  const cell = a.progressCreate();
  const timer = setInterval(() => onProgress(a.progressRead(cell)), intervalMs ?? 100);
  try {
    return await run(cell);
  } finally {
    clearInterval(timer);
    onProgress(a.progressRead(cell));
  }
}

/** Applies the layer blob in file `source` (gzip, zstd or tar, by magic bytes) to `target`. */
export async function applyLayer(
  source: string,
  target: string,
  options: ApplyLayerOptions = {},
): Promise<ApplyLayerReport> {
  const a = addon();
  const { onProgress, progressIntervalMs, growing, ...rest } = options;
  const opts = {
    ...rest,
    expectedDigest: rest.expectedDigest?.toString(),
    expectedDiffId: rest.expectedDiffId?.toString(),
  };
  const g = (growing?.handle ?? null) as Parameters<NativeAddon['growingEnd']>[0] | null;
  // An apply of a growing file waits for data on a libuv pool thread, and the writer needs pool
  // threads too (appendToFile): never let such applies take more than all but two of them.
  const release = growing ? await followSlots.acquire() : undefined;
  try {
    const r = await withProgress(a, onProgress, progressIntervalMs, (p) => a.layerApply(source, target, opts, p, g));
    // the tree crosses as one JSON string (far faster than thousands of Node-API objects)
    const tree = (r as { tree?: unknown }).tree;
    return typeof tree === 'string' ? { ...r, tree: JSON.parse(tree) as ApplyLayerReport['tree'] } : r;
  } catch (e) {
    throw asStevedoreError(e);
  } finally {
    release?.();
  }
}

/**
 * Reads the layer blob in file `source` to its end off the JS thread (decompression pipelined
 * with hashing) and checks `expectedDigest` and `expectedDiffId`; writes nothing. The report
 * has both digests, the sizes and the entry count. Errors as {@link applyLayer}'s.
 */
export async function verifyLayerFile(
  source: string,
  expected: { expectedDigest?: Digest | string; expectedDiffId?: Digest | string; maxUncompressedBytes?: number },
): Promise<ApplyLayerReport> {
  const a = addon();
  try {
    return await a.layerVerify(source, {
      mode: 'oci',
      expectedDigest: expected.expectedDigest?.toString(),
      expectedDiffId: expected.expectedDiffId?.toString(),
      maxUncompressedBytes: expected.maxUncompressedBytes,
    });
  } catch (e) {
    throw asStevedoreError(e);
  }
}

/** One layer of a {@link flattenLayers} call. */
export interface FlattenLayer {
  /** The layer blob file (gzip, zstd or tar). */
  source: string;
  expectedDigest?: Digest | string;
  expectedDiffId?: Digest | string;
}

export interface FlattenOptions
  extends Omit<ApplyLayerOptions, 'mode' | 'expectedDigest' | 'expectedDiffId' | 'xattrNamespace'> {
  /** Layers staged at once (default: the number of CPUs). */
  parallel?: number;
}

/**
 * Flattens `layers` (bottom first) onto the existing directory `target`, like applying each
 * in `apply` mode in turn — the same tree, entry for entry — but faster: every layer is
 * decompressed, verified and written to a staging directory inside `target` on its own thread
 * (up to `parallel` at once), then the layers are replayed in order, moving the files into
 * place. Nothing in `target` changes until every layer has been read and its digests checked;
 * an I/O error while replaying layer N undoes layer N (layers before it stay). Errors name the
 * layer (`layer N: ...`). Progress is summed over all layers.
 */
export async function flattenLayers(
  layers: FlattenLayer[],
  target: string,
  options: FlattenOptions = {},
): Promise<ApplyLayerReport[]> {
  const a = addon();
  const { onProgress, progressIntervalMs, parallel, ...rest } = options;
  const perLayer = layers.map((l) => ({
    ...rest,
    expectedDigest: l.expectedDigest?.toString(),
    expectedDiffId: l.expectedDiffId?.toString(),
  }));
  try {
    return await withProgress(a, onProgress, progressIntervalMs, (p) =>
      a.layerFlatten(
        layers.map((l) => l.source),
        target,
        perLayer,
        parallel ?? null,
        p,
      ),
    );
  } catch (e) {
    throw asStevedoreError(e);
  }
}

/**
 * Writes a stream to the open file descriptor `fd` with {@link appendToFile}: chunks are
 * gathered (not copied) into batches of about 1 MiB, each written — and fed to `hasher` — on a
 * native pool thread while the next batch arrives; one batch in flight keeps the order. Returns
 * the bytes written. A failing source or write fails it, after the running write settled.
 *
 * `direct`: `fd` was opened with `O_DIRECT` ({@link openForDirectWrite}): batches are cut at
 * multiples of {@link DIRECT_IO_ALIGN} bytes (the rest of a chunk starts the next batch), so
 * all but the last are written past the page cache.
 */
export async function appendStream(
  fd: number,
  source: AsyncIterable<Uint8Array>,
  options: { hasher?: Hasher; growing?: GrowingFile; writeback?: boolean; direct?: boolean } = {},
): Promise<number> {
  const { hasher, growing, writeback, direct } = options;
  let inflight: Promise<number> | undefined;
  let size = 0;
  try {
    let batch: Uint8Array[] = [];
    let pending = 0;
    for await (const c of source) {
      batch.push(c);
      pending += c.length;
      size += c.length;
      if (pending >= 1 << 20) {
        // direct I/O: send whole blocks, keep the rest (views, not copies) for the next batch
        const keep = direct ? pending % DIRECT_IO_ALIGN : 0;
        const rest = keep ? splitTail(batch, keep) : [];
        await inflight;
        inflight = appendToFile(fd, batch, hasher, growing, { writeback, direct });
        batch = rest;
        pending = keep;
      }
    }
    await inflight;
    inflight = undefined;
    if (batch.length) await appendToFile(fd, batch, hasher, growing, { writeback, direct });
    return size;
  } finally {
    // Never let the caller close the descriptor under a running write.
    await inflight?.catch(() => {});
  }
}

/** Removes the last `n` bytes of `chunks` (in place) and returns them as views, in order. */
function splitTail(chunks: Uint8Array[], n: number): Uint8Array[] {
  const tail: Uint8Array[] = [];
  while (n > 0) {
    const last = chunks.pop()!;
    if (last.length <= n) {
      tail.unshift(last);
      n -= last.length;
    } else {
      tail.unshift(last.subarray(last.length - n));
      chunks.push(last.subarray(0, last.length - n));
      n = 0;
    }
  }
  return tail;
}

/** Alignment of direct-I/O writes (buffer, length and offset): 4 KiB suits every common device. */
export const DIRECT_IO_ALIGN = 4096;

/**
 * Creates `file` exclusively for writing with `O_DIRECT` where the filesystem supports it (a
 * blob that is written once and fsynced: no page-cache copy, which costs more CPU than the
 * download itself on some machines), else normally. Pass `direct` on to {@link appendStream}.
 */
export async function openForDirectWrite(file: string, mode = 0o644): Promise<{ fh: FileHandle; direct: boolean }> {
  const { O_DIRECT, O_WRONLY, O_CREAT, O_EXCL } = fsConstants;
  if (O_DIRECT) {
    try {
      return { fh: await openFile(file, O_WRONLY | O_CREAT | O_EXCL | O_DIRECT, mode), direct: true };
    } catch (e) {
      // EINVAL: this filesystem has no direct I/O (tmpfs, some FUSE); anything else is real
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
    }
  }
  return { fh: await openFile(file, 'wx', mode), direct: false };
}

/** A counting semaphore (FIFO). */
class Slots {
  private waiting: (() => void)[] = [];
  constructor(private free: number) {}
  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
  }
}

/** libuv's thread pool size (UV_THREADPOOL_SIZE, default 4). */
const poolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4;
/** Applies of growing files at once: the pool size − 2. */
const followSlots = new Slots(Math.max(1, poolSize - 2));

/**
 * Whether a layer can be applied while its file is written (`growing`): the apply waits on a
 * pool thread and the writer needs others, so it takes a libuv pool of at least 3 threads.
 */
export function canApplyWhileWriting(): boolean {
  return poolSize >= 3 && hasNativeEngine();
}

/**
 * Writes directory `source` as a deterministic layer blob to `out` (staged next to it and
 * renamed into place only when complete).
 */
export async function createLayer(
  source: string,
  out: string,
  options: CreateLayerOptions = {},
): Promise<CreateLayerReport> {
  const a = addon();
  const { onProgress, progressIntervalMs, ...opts } = options;
  const staging = `${out}.staging-${Buffer.from(globalThis.crypto.getRandomValues(new Uint8Array(6))).toString('hex')}`;
  try {
    const report = await withProgress(a, onProgress, progressIntervalMs, (p) =>
      a.layerCreate(source, staging, opts, p),
    );
    await rename(staging, out);
    return report;
  } catch (e) {
    await rm(staging, { force: true });
    throw asStevedoreError(e);
  }
}

/** One entry of a scanned tree (see {@link scanTree}). */
export interface TreeEntry {
  /** Relative to the root, `/`-separated (non-UTF-8 bytes replaced). */
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  /** Permission bits (`0o7777`). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of a regular file (0 otherwise). */
  size: number;
  /** `seconds.nanoseconds` of the modification time (not for directories). */
  mtime?: string;
  /** `sha256:…` of a regular file's content (first path of a hard-link group only). */
  sha256?: string;
  /** Symlink target. */
  link?: string;
  /** For later paths of one inode: the first path in walk order. */
  hardlink?: string;
  /** `major:minor` of a device. */
  rdev?: string;
  /** xattr name → hex value. */
  xattrs?: Record<string, string>;
}

/**
 * Every entry below `dir` — never following a symlink, names in byte order, depth first — with
 * its metadata, xattrs and the sha256 of each regular file (hashed on native threads). `size`
 * is Docker's size of a layer dir (non-directories, each inode once). The record an image
 * store keeps of a diff dir to prove it unchanged later. With `hash: false`, metadata only (no
 * `sha256`): for a tree whose content is proven another way.
 */
export async function scanTree(
  dir: string,
  options: { hash?: boolean } = {},
): Promise<{ entries: TreeEntry[]; size: number }> {
  const a = addon();
  try {
    return JSON.parse(await a.treeScan(dir, options.hash ?? true)) as { entries: TreeEntry[]; size: number };
  } catch (e) {
    throw asStevedoreError(e);
  }
}

/** Whether the native engine is available (`appendToFile`, `applyLayer`, ...). */
export function hasNativeEngine(): boolean {
  try {
    addon();
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes `chunks` to the open file descriptor `fd` (at its offset) and feeds them to `hasher`,
 * both on a native pool thread: a download's hashing and writing leave the JS thread in one
 * trip. Keep one call in flight per file (order matters) and do not touch the chunks until it
 * settles. A wasm-backed hasher is fed here on the JS thread instead. `writeback` starts the
 * kernel writing the bytes to disk right away, for files that are fsynced when complete (the
 * final fsync then waits only for the tail). Returns bytes written.
 */
export async function appendToFile(
  fd: number,
  chunks: Uint8Array[],
  hasher?: Hasher,
  growing?: GrowingFile,
  options: { writeback?: boolean; direct?: boolean } = {},
): Promise<number> {
  const a = addon();
  const handle = hasher?.nativeHandle;
  if (hasher && handle === undefined) for (const c of chunks) hasher.update(c);
  try {
    const n = await a.fileAppend(
      fd,
      chunks,
      (handle ?? null) as Parameters<NativeAddon['fileAppend']>[2],
      (growing?.handle ?? null) as Parameters<NativeAddon['fileAppend']>[3],
      options.writeback ?? false,
      options.direct ?? false,
    );
    if (hasher && handle !== undefined) hasher.fedElsewhere(n);
    return n;
  } catch (e) {
    throw asStevedoreError(e);
  }
}

/**
 * The bytes of a zstd stream (one or more frames), decoded by the native core in pieces of at
 * most 1 MiB, so memory stays flat whatever the ratio. Frames whose window exceeds
 * `2^windowLogMax` bytes are refused (default 27, zstd's own limit); a corrupt or truncated
 * stream fails with `ERR_DECOMPRESS`. Node 20's zlib has no zstd; this needs no `zstd` command.
 */
export async function* zstdDecompress(
  source: AsyncIterable<Uint8Array>,
  windowLogMax = 27,
): AsyncGenerator<Uint8Array> {
  const a = addon();
  const d = guardNative(() => a.zstdDecoderCreate(windowLogMax));
  for await (const chunk of source) {
    let rest = chunk;
    for (;;) {
      const [out, used] = guardNative(() => a.zstdDecoderPush(d, rest));
      if (!out.length && used === 0 && rest.length) {
        throw new StevedoreError('ERR_DECOMPRESS', 'zstd: the decoder made no progress');
      }
      rest = rest.subarray(used);
      if (out.length) yield out;
      else if (rest.length === 0) break;
    }
  }
  for (;;) {
    const [out] = guardNative(() => a.zstdDecoderPush(d, new Uint8Array(0)));
    if (!out.length) break;
    yield out;
  }
  guardNative(() => a.zstdDecoderFinish(d));
}

function guardNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw asStevedoreError(e);
  }
}
