/**
 * Stale upload purging, as the reference registry's `storage.maintenance.uploadpurging`: an
 * upload session (`repositories/<name>/_uploads/<id>/`) whose `startedat` is older than the age
 * is removed. A session without a readable `startedat` is kept (distribution does the same).
 * Each removal takes the session's lock, so a request in flight on it finishes first.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { isUploadId, Storage } from './storage.js';

export interface PurgeUploadsOptions {
  /** Sessions started longer ago than this are removed. Default one week (distribution's 168h). */
  maxAgeMs?: number;
  /** Report, remove nothing. */
  dryRun?: boolean;
  /** "Now", in ms since the epoch. Default `Date.now()`. */
  now?: number;
  log?: (line: string) => void;
}

export const DEFAULT_UPLOAD_MAX_AGE_MS = 168 * 3600_000;

/** Removes stale upload sessions under `root`; returns them as `name/_uploads/id`. */
export async function purgeUploads(root: string | Storage, o: PurgeUploadsOptions = {}): Promise<string[]> {
  const s = typeof root === 'string' ? new Storage(root) : root;
  const cutoff = (o.now ?? Date.now()) - (o.maxAgeMs ?? DEFAULT_UPLOAD_MAX_AGE_MS);
  const purged: string[] = [];
  for (const { name, id } of await uploadSessions(path.join(s.v2, 'repositories'), [])) {
    const started = await startedAt(path.join(s.uploadPath(name, id), 'startedat'));
    if (started === undefined || started >= cutoff) continue;
    purged.push(`${name}/_uploads/${id}`);
    o.log?.(
      `${o.dryRun ? 'would purge' : 'purging'} upload ${name}/_uploads/${id} (started ${new Date(started).toISOString()})`,
    );
    if (!o.dryRun) await s.withUpload(name, id, () => s.cancelUpload(name, id));
  }
  return purged;
}

/** Every `<name>/_uploads/<id>` below `dir` (other `_` directories are not descended into). */
async function uploadSessions(dir: string, prefix: string[]): Promise<{ name: string; id: string }[]> {
  const out: { name: string; id: string }[] = [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    if (e.name === '_uploads' && prefix.length > 0) {
      for (const u of await readdir(path.join(dir, e.name), { withFileTypes: true }).catch(() => [])) {
        if (u.isDirectory() && isUploadId(u.name)) out.push({ name: prefix.join('/'), id: u.name });
      }
    } else if (!e.name.startsWith('_') && !e.name.startsWith('.')) {
      out.push(...(await uploadSessions(path.join(dir, e.name), [...prefix, e.name])));
    }
  }
  return out;
}

async function startedAt(file: string): Promise<number | undefined> {
  try {
    const t = Date.parse((await readFile(file, 'utf8')).trim());
    return Number.isNaN(t) ? undefined : t;
  } catch {
    return undefined;
  }
}

/** `90s`, `30m`, `168h`, `7d`, `1h30m` → milliseconds (Go's durations plus days); throws on anything else. */
export function parseDuration(text: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * unit[m[2]!]!;
    consumed = re.lastIndex;
  }
  if (text.length === 0 || consumed !== text.length) {
    throw new Error(`bad duration ${JSON.stringify(text)}: want e.g. 90s, 30m, 168h or 7d`);
  }
  return total;
}
