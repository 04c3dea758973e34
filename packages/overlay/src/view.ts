/**
 * The userspace merged view of a stored image: each layer's diff dir is walked (lstat, no
 * following), indexed in `overlay` form (char 0/0 = whiteout, `trusted.overlay.opaque=y` =
 * opaque dir) and stacked with core's `LayerStack`, which answers as kernel overlayfs would.
 * File bytes are read from the providing layer's diff dir. Also `unpack` (flatten) and
 * `exportImage` (a tar of the flattened rootfs).
 */
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  createLayer,
  type EntryType,
  flattenLayers,
  Hasher,
  type LayerEntryInput,
  LayerIndex,
  LayerStack,
  type Resolution,
  type StackStat,
  StevedoreError,
} from '@stevedore/core';
import type { Store, StoredImage } from './store.js';

const run = promisify(execFile);

export interface WalkedEntry {
  /** Relative path, no leading `./` or `/`. */
  path: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  linkName: string;
  devMajor: number;
  devMinor: number;
  mtime: number;
  mtimeNanos: number;
  /** sha256 of regular files (only when hashing was asked for). */
  content: string;
  /** `trusted.overlay.*` / `user.overlay.*` xattrs found (e.g. opaque). */
  xattrs: [string, Uint8Array][];
}

const major = (rdev: bigint) => Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
const minor = (rdev: bigint) => Number((rdev & 0xffn) | ((rdev >> 12n) & 0xfff00n));

/**
 * Overlay xattrs of every entry under `dir` (`getfattr -R`), keyed by relative path. Empty when
 * getfattr is not installed.
 */
export async function overlayXattrs(dir: string): Promise<Map<string, [string, Uint8Array][]>> {
  const out = new Map<string, [string, Uint8Array][]>();
  let stdout: string;
  try {
    ({ stdout } = await run('getfattr', ['-R', '-P', '-d', '-m', '^(trusted|user)\\.overlay\\.', '-e', 'hex', '.'], {
      cwd: dir,
      maxBuffer: 256 << 20,
    }));
  } catch (e) {
    const err = e as { code?: unknown; stdout?: string };
    if (err.code === 'ENOENT') return out;
    stdout = err.stdout ?? '';
  }
  let current: string | undefined;
  for (const line of stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      const raw = line.slice(8).replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
      current = raw === '.' ? '' : raw.replace(/^\.\//, '');
      continue;
    }
    const m = /^([^=]+)=0x([0-9a-f]*)$/.exec(line);
    if (m && current !== undefined) {
      const list = out.get(current) ?? [];
      list.push([m[1]!, new Uint8Array(Buffer.from(m[2]!, 'hex'))]);
      out.set(current, list);
    }
  }
  return out;
}

async function hashPath(p: string): Promise<string> {
  const h = new Hasher('sha256');
  for await (const c of createReadStream(p)) h.update(c as Buffer);
  return h.digest().toString();
}

/** Walks a diff dir (lstat, depth first, sorted), as entries for `LayerIndex.fromEntries`. */
export async function walkDiffDir(dir: string, options: { hash?: boolean } = {}): Promise<WalkedEntry[]> {
  const xattrs = await overlayXattrs(dir);
  const out: WalkedEntry[] = [];
  const visit = async (rel: string): Promise<void> => {
    const names = (await readdir(rel ? path.join(dir, rel) : dir)).sort();
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(dir, r);
      const st = await lstat(abs, { bigint: true });
      const type: EntryType = st.isDirectory()
        ? 'directory'
        : st.isSymbolicLink()
          ? 'symlink'
          : st.isCharacterDevice()
            ? 'char'
            : st.isBlockDevice()
              ? 'block'
              : st.isFIFO()
                ? 'fifo'
                : 'file';
      out.push({
        path: r,
        type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: type === 'file' ? Number(st.size) : 0,
        linkName: type === 'symlink' ? await readlink(abs) : '',
        devMajor: type === 'char' || type === 'block' ? major(st.rdev) : 0,
        devMinor: type === 'char' || type === 'block' ? minor(st.rdev) : 0,
        mtime: Number(st.mtimeMs / 1000n),
        mtimeNanos: Number(st.mtimeNs % 1_000_000_000n),
        content: options.hash && type === 'file' ? await hashPath(abs) : '',
        xattrs: xattrs.get(r) ?? [],
      });
      if (type === 'directory') await visit(r);
    }
  };
  await visit('');
  return out;
}

export function toLayerEntry(e: WalkedEntry): LayerEntryInput {
  return {
    path: e.path,
    type: e.type,
    linkName: e.linkName,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    size: e.size,
    mtime: e.mtime,
    mtimeNanos: e.mtimeNanos,
    devMajor: e.devMajor,
    devMinor: e.devMinor,
    content: e.content,
    xattrs: e.xattrs,
  };
}

/** The merged view of a stored image, in userspace. Layer numbers are base first. */
export class MergedView {
  private constructor(
    readonly stack: LayerStack,
    /** Diff dir of each layer, base first (the upper dir last when one was given). */
    readonly diffDirs: string[],
  ) {}

  /**
   * Builds the view of `image` (optionally with a container layer's diff on top).
   * `hash: true` sets each file's content id to its sha256 (else content is not compared).
   */
  static async open(
    store: Store,
    image: string | StoredImage,
    options: { hash?: boolean; upperDir?: string } = {},
  ): Promise<MergedView> {
    const img = typeof image === 'string' ? await store.image(image) : image;
    const dirs = img.layers.map((l) => l.diffDir);
    if (options.upperDir) dirs.push(options.upperDir);
    return MergedView.fromDirs(dirs, options);
  }

  static async fromDirs(dirs: string[], options: { hash?: boolean } = {}): Promise<MergedView> {
    const indexes = await Promise.all(
      dirs.map(async (d) => {
        const entries = await walkDiffDir(d, options);
        // An unprivileged store marks opaque dirs in the `user.` namespace (store.ts).
        const user = entries.some((e) => e.xattrs.some(([k]) => k.startsWith('user.overlay.')));
        return LayerIndex.fromEntries(entries.map(toLayerEntry), user ? 'overlay-user' : 'overlay');
      }),
    );
    return new MergedView(new LayerStack(indexes), dirs);
  }

  resolve(p: string): Resolution {
    return this.stack.resolve(p);
  }
  stat(p: string): StackStat {
    return this.stack.stat(p);
  }
  lstat(p: string): StackStat {
    return this.stack.lstat(p);
  }
  readdir(p: string): string[] {
    return this.stack.readdir(p);
  }
  walk(): StackStat[] {
    return this.stack.walk();
  }

  /** Host path of the bytes behind `p` (symlinks followed inside the view). */
  hostPath(p: string): string {
    const st = this.stack.stat(p);
    if (st.entry.type !== 'file') {
      throw new StevedoreError('ERR_NOT_A_FILE', `${p}: is a ${st.entry.type}, not a regular file`);
    }
    const dir = this.diffDirs[st.layer];
    if (!dir) throw new StevedoreError('ERR_INTERNAL', `${p}: layer ${st.layer} out of range`);
    return path.join(dir, st.path);
  }

  async readFile(p: string): Promise<Buffer> {
    return readFile(this.hostPath(p));
  }
}

/**
 * Flattens a stored image into `target` (absent or empty): the layer blobs from the content
 * store are applied in `apply` mode, base first (whiteouts delete) — staged in parallel and
 * replayed in order by the core's `flattenLayers`, every digest checked before `target` changes.
 */
export async function unpack(store: Store, image: string, target: string): Promise<void> {
  const img = await store.image(image);
  const blobs = await store.layerBlobs(img);
  const diffIds = img.config.rootfs.diff_ids;
  await mkdir(target, { recursive: true, mode: 0o755 });
  await flattenLayers(
    blobs.map((b, i) => ({ source: store.blobPath(b.digest), expectedDigest: b.digest, expectedDiffId: diffIds[i]! })),
    target,
  );
}

/** Writes the flattened rootfs of a stored image as a tar (`compression` default none). */
export async function exportImage(
  store: Store,
  image: string,
  outFile: string,
  options: { compression?: 'gzip' | 'zstd' | 'none' } = {},
): Promise<{ diffId: string; digest: string }> {
  const tmp = await mkdtemp(path.join(store.tmpDir, `${process.pid}-export-`));
  try {
    const rootfs = path.join(tmp, 'rootfs');
    await unpack(store, image, rootfs);
    const r = await createLayer(rootfs, outFile, { mode: 'full', compression: options.compression ?? 'none' });
    return { diffId: r.diffId, digest: r.digest };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
