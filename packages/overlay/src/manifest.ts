/**
 * Content manifests of diff dirs, for `fsck --verify`.
 *
 * Docker re-proves a diff dir against its diff_id by rebuilding the layer tar from tar-split
 * metadata; we keep no tar-split, and the original tar bytes cannot be rebuilt from a directory
 * (header order, PAX records, padding). Instead, right after a layer was extracted by the engine
 * — which verified the blob digest and the diff_id of the bytes it extracted — and before the
 * staged dir is committed, the staged diff dir is walked and every entry is recorded: path,
 * type, mode, owner, size, mtime, sha256 of the content, symlink target, hardlink group, device
 * numbers and xattrs. The manifest names the diff_id and chain ID it was taken for and is
 * committed with the layerdb entry (`layerdb/sha256/<chain>/stevedore-diff.json.gz`, outside the
 * diff dir, in the same atomic rename). Verifying re-walks the diff dir and compares entry by
 * entry, so any changed byte, added, removed or re-typed entry is reported by path.
 */
import { execFile } from 'node:child_process';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { type Digest, hashFile, StevedoreError } from '@stevedore/core';

const run = promisify(execFile);

/** The layerdb file holding a layer's manifest. */
export const DIFF_MANIFEST_FILE = 'stevedore-diff.json.gz';

export interface DiffEntry {
  /** Relative to the diff dir, `/`-separated. */
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of a regular file (0 otherwise). */
  size: number;
  /** `seconds.nanoseconds` of the modification time (not of directories). */
  mtime?: string;
  /** `sha256:…` of a regular file's content. */
  sha256?: string;
  /** Symlink target. */
  link?: string;
  /** The first path (in walk order) of the same inode, for hardlinked files. */
  hardlink?: string;
  /** `major:minor` of a device. */
  rdev?: string;
  /** xattr name → hex value. */
  xattrs?: Record<string, string>;
}

export interface DiffManifest {
  version: 1;
  chainId: string;
  diffId: string;
  entries: DiffEntry[];
}

/** The result of a walk: the entries and Docker's `size` of the dir (non-directories, each inode once). */
export interface DiffWalk {
  entries: DiffEntry[];
  size: number;
}

const major = (rdev: bigint) => Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
const minor = (rdev: bigint) => Number((rdev & 0xffn) | ((rdev >> 12n) & 0xfff00n));

/** Every xattr under `dir` (`getfattr -R -P -d -m -`), keyed by relative path; empty without getfattr. */
async function allXattrs(dir: string): Promise<Map<string, Record<string, string>>> {
  const out = new Map<string, Record<string, string>>();
  let stdout: string;
  try {
    ({ stdout } = await run('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '.'], {
      cwd: dir,
      maxBuffer: 512 << 20,
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
      const x = out.get(current) ?? {};
      x[m[1]!] = m[2]!;
      out.set(current, x);
    }
  }
  return out;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Walks a diff dir (lstat only, never following links; sorted, depth first) and hashes its files. */
export async function walkDiff(dir: string): Promise<DiffWalk> {
  const xattrs = await allXattrs(dir);
  const entries: DiffEntry[] = [];
  const toHash: { entry: DiffEntry; abs: string }[] = [];
  const inodes = new Map<string, string>();
  let size = 0;
  const visit = async (rel: string): Promise<void> => {
    for (const name of (await readdir(rel ? path.join(dir, rel) : dir)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(dir, r);
      const st = await lstat(abs, { bigint: true });
      const type: DiffEntry['type'] = st.isDirectory()
        ? 'directory'
        : st.isSymbolicLink()
          ? 'symlink'
          : st.isFile()
            ? 'file'
            : st.isCharacterDevice()
              ? 'char'
              : st.isBlockDevice()
                ? 'block'
                : st.isFIFO()
                  ? 'fifo'
                  : 'socket';
      const e: DiffEntry = {
        path: r,
        type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: type === 'file' ? Number(st.size) : 0,
      };
      // Directory mtimes change whenever an entry is added or removed: the entry itself says that.
      if (type !== 'directory')
        e.mtime = `${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`;
      if (type !== 'directory') {
        const key = `${st.dev}:${st.ino}`;
        const first = inodes.get(key);
        if (first !== undefined) e.hardlink = first;
        else {
          inodes.set(key, r);
          if (st.size > 0n) size += Number(st.size);
        }
      }
      if (type === 'file' && e.hardlink === undefined) toHash.push({ entry: e, abs });
      if (type === 'symlink') e.link = await readlink(abs);
      if (type === 'char' || type === 'block') e.rdev = `${major(st.rdev)}:${minor(st.rdev)}`;
      const x = xattrs.get(r);
      if (x) e.xattrs = x;
      entries.push(e);
      if (type === 'directory') await visit(r);
    }
  };
  await visit('');
  // Hashing runs off the JS thread (native core); a few files at a time.
  await eachLimited(toHash, 8, async ({ entry, abs }) => {
    entry.sha256 = (await hashFile(abs)).digest.toString();
  });
  return { entries, size };
}

export function encodeDiffManifest(m: DiffManifest): Uint8Array {
  return gzipSync(JSON.stringify(m));
}

/** Reads a layer's manifest file; undefined when there is none. */
export async function readDiffManifest(file: string): Promise<DiffManifest | undefined> {
  let raw: Buffer;
  try {
    raw = await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const m = JSON.parse(gunzipSync(raw).toString('utf8')) as DiffManifest;
    if (m.version !== 1 || !Array.isArray(m.entries)) throw new Error('unknown format');
    return m;
  } catch (e) {
    throw new StevedoreError('ERR_STORE_CORRUPT', `${file}: unreadable content manifest (${(e as Error).message})`);
  }
}

const FIELDS = ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'link', 'hardlink', 'rdev', 'mtime'] as const;

/**
 * Differences between a recorded manifest and a fresh walk, one line per path:
 * `<path>: missing`, `<path>: added`, `<path>: sha256 sha256:… → sha256:…`, …
 */
export function compareDiff(recorded: DiffEntry[], actual: DiffEntry[]): string[] {
  const want = new Map(recorded.map((e) => [e.path, e]));
  const got = new Map(actual.map((e) => [e.path, e]));
  const out: string[] = [];
  for (const [p, w] of want) {
    const g = got.get(p);
    if (!g) {
      out.push(`${p}: missing`);
      continue;
    }
    const diffs: string[] = [];
    for (const f of FIELDS) {
      const a = w[f] ?? '';
      const b = g[f] ?? '';
      if (a !== b)
        diffs.push(
          `${f} ${f === 'mode' ? Number(a).toString(8) : a || '-'} → ${f === 'mode' ? Number(b).toString(8) : b || '-'}`,
        );
    }
    const xa = JSON.stringify(Object.entries(w.xattrs ?? {}).sort());
    const xb = JSON.stringify(Object.entries(g.xattrs ?? {}).sort());
    if (xa !== xb) diffs.push(`xattrs ${xa} → ${xb}`);
    if (diffs.length) out.push(`${p}: ${diffs.join(', ')}`);
  }
  for (const p of got.keys()) if (!want.has(p)) out.push(`${p}: added`);
  return out.sort();
}

/** A manifest for a staged diff dir, bound to its diff_id and chain ID. */
export async function takeDiffManifest(
  diffDir: string,
  diffId: Digest,
  chainId: Digest,
): Promise<{ manifest: DiffManifest; size: number }> {
  const w = await walkDiff(diffDir);
  return {
    manifest: { version: 1, chainId: chainId.toString(), diffId: diffId.toString(), entries: w.entries },
    size: w.size,
  };
}
