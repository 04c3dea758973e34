/**
 * Content manifests of diff dirs, for `fsck --verify`.
 *
 * Docker re-proves a diff dir against its diff_id by rebuilding the layer tar from tar-split
 * metadata; so do we (tar-split.ts), but a rebuilt tar only reads the files it names: it sees
 * neither a changed mode, owner or xattr (the headers come from the tar-split) nor an added
 * file. And some layers cannot be rebuilt from their dir (a path given twice, a sparse file).
 * So, in addition, right after a layer was extracted by the engine
 * — which verified the blob digest and the diff_id of the bytes it extracted — and before the
 * staged dir is committed, the staged diff dir is walked and every entry is recorded: path,
 * type, mode, owner, size, mtime, sha256 of the content, symlink target, hardlink group, device
 * numbers and xattrs. The manifest names the diff_id and chain ID it was taken for and is
 * committed with the layerdb entry (`layerdb/sha256/<chain>/stevedore-diff.json.gz`, outside the
 * diff dir, in the same atomic rename). Verifying re-walks the diff dir and compares entry by
 * entry, so any changed byte, added, removed or re-typed entry is reported by path. Layers with
 * a tar-split record no content hashes here (`sha256` absent): the rebuilt tar proves the
 * content, and the pull hashes no file twice.
 */
import { readFile } from 'node:fs/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import { type Digest, StevedoreError, scanTree, type TreeEntry } from '@stevedore/core';

/** The layerdb file holding a layer's manifest. */
export const DIFF_MANIFEST_FILE = 'stevedore-diff.json.gz';

/** One entry of a diff dir, as the core's `scanTree` reports it. */
export type DiffEntry = TreeEntry;

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

/**
 * Walks a diff dir (never following links; names in byte order, depth first) and hashes its
 * files: the core's native `scanTree` (fd-relative walk, files hashed on native threads).
 */
export async function walkDiff(dir: string, options: { hash?: boolean } = {}): Promise<DiffWalk> {
  return scanTree(dir, options);
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

/** The manifest of a diff dir from a walk already done (the engine's `scan` of what it applied). */
export function diffManifestOf(
  walk: DiffWalk,
  diffId: Digest,
  chainId: Digest,
): { manifest: DiffManifest; size: number } {
  return {
    manifest: { version: 1, chainId: chainId.toString(), diffId: diffId.toString(), entries: walk.entries },
    size: walk.size,
  };
}

/** A manifest for a staged diff dir (walked now), bound to its diff_id and chain ID. */
export async function takeDiffManifest(
  diffDir: string,
  diffId: Digest,
  chainId: Digest,
): Promise<{ manifest: DiffManifest; size: number }> {
  return diffManifestOf(await walkDiff(diffDir), diffId, chainId);
}
