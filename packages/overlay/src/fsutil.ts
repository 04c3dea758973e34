/** Small filesystem helpers: atomic writes, ids, directory sizes as Docker computes them. */
import { randomBytes } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';

/** A random 64-hex id (Docker's cache-id / container layer id). */
export function randomId(): string {
  return randomBytes(32).toString('hex');
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** A 26-character base32 id, as Docker's overlay2 `l/` short links (128 random bits). */
export function shortLinkId(): string {
  const b = randomBytes(16);
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of b) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out.slice(0, 26);
}

/** Writes `data` to `file` through a temp file in the same directory, fsynced, then renamed. */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await syncDir(path.dirname(file));
}

/**
 * Writes new files into a directory nobody sees yet (a staging or write-set dir that is renamed
 * into place afterwards): all at once, each fsynced (the journal commits them together), then
 * the directory synced once. No temp file and rename per file: renaming the directory is what
 * publishes them. Fails if a file exists.
 */
export async function writeFilesSynced(
  dir: string,
  files: ReadonlyArray<readonly [name: string, data: string | Uint8Array, mode?: number]>,
): Promise<void> {
  await Promise.all(
    files.map(async ([name, data, mode = 0o600]) => {
      const fh = await open(path.join(dir, name), 'wx', mode);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
    }),
  );
  await syncDir(dir);
}

export async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // best effort (some filesystems refuse fsync on directories)
  }
}

/** Creates or replaces a symlink atomically. */
export async function symlinkAtomic(target: string, linkPath: string): Promise<void> {
  const tmp = `${linkPath}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await symlink(target, tmp);
  await rename(tmp, linkPath);
}

export async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

export async function mkdirp(p: string, mode = 0o700): Promise<void> {
  await mkdir(p, { recursive: true, mode });
}

/**
 * Size of a directory as Docker's `directory.Size`: the sum of `st_size` of every non-directory
 * entry (symlinks count their own size), each inode once.
 */
export async function directorySize(dir: string): Promise<number> {
  const seen = new Set<string>();
  let size = 0;
  const walk = async (d: string): Promise<void> => {
    let ents: Dirent[];
    try {
      ents = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        await walk(p);
        continue;
      }
      const st = await lstat(p, { bigint: true });
      if (st.size === 0n) continue;
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key)) continue;
      seen.add(key);
      size += Number(st.size);
    }
  };
  await walk(dir);
  return size;
}
