/**
 * A cross-process lock: a lock file created atomically (link(2)) holding the owner's pid. A lock whose
 * pid is dead (or that cannot be read after a grace period) is stale and is broken.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { StevedoreError } from '@stevedore/core';

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// In-process queue: the lock file alone serializes processes, this avoids busy-waiting inside one.
const local = new Map<string, Promise<void>>();

/** Runs `fn` holding the lock file `file`. Waits up to `timeoutMs` (default 60 s). */
export async function withLock<T>(file: string, fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const prev = local.get(file) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => {
    release = r;
  });
  const chained = prev.then(() => mine);
  local.set(file, chained);
  await prev;
  try {
    await acquire(file, timeoutMs);
    try {
      return await fn();
    } finally {
      await unlink(file).catch(() => {});
    }
  } finally {
    release();
    if (local.get(file) === chained) local.delete(file);
  }
}

async function acquire(file: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  for (;;) {
    if (await tryLink(file)) return;
    await breakIfStale(file);
    if (Date.now() > deadline) {
      throw new StevedoreError('ERR_LOCK_TIMEOUT', `lock ${file}: still held after ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 100);
  }
}

/**
 * Creates the lock file already holding our pid: write `<file>.<pid>.<rand>`, then link(2) it to
 * `file` (fails with EEXIST if held). A writer killed at any point leaves either no lock or a
 * complete one, never an empty file; the `<file>.<pid>.*` temp of a dead pid is swept on open.
 */
async function tryLink(file: string): Promise<boolean> {
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}`;
  const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
  try {
    await fh.writeFile(`${process.pid}\n`);
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return false;
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

async function breakIfStale(file: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return; // gone already
  }
  const pid = Number.parseInt(text.trim(), 10);
  // An empty file (written by an older version between open and write): break it after 10 s.
  if (text.trim() === '') {
    const age = Date.now() - ((await stat(file).catch(() => undefined))?.mtimeMs ?? Date.now());
    if (age < 10_000) return;
  } else if (pidAlive(pid)) return;
  // Move it aside atomically so two breakers cannot both remove a fresh lock.
  const aside = `${file}.stale-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    await rename(file, aside);
  } catch {
    return;
  }
  const again = Number.parseInt((await readFile(aside, 'utf8').catch(() => '')).trim(), 10);
  if (text.trim() !== '' && again !== pid) {
    // Someone else's fresh lock got moved: put it back if the slot is still free.
    await link(aside, file).catch(() => {});
    await unlink(aside).catch(() => {});
    return;
  }
  await unlink(aside).catch(() => {});
}
