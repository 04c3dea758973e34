/**
 * Writes a deterministic tar file with the core's `TarWriter`: members sorted by name, parent
 * directories added, mtime 0, uid/gid 0, modes 0644/0755. Output goes to a staging file next to
 * the target, is synced, then renamed into place; on any error the staging file is removed.
 */
import { open, rm } from 'node:fs/promises';
import path from 'node:path';
import { TarWriter } from '@stevedore/core';
import { commitRename } from './io.js';

export interface OutMember {
  /** Archive-relative name, `/`-separated, no `..`. */
  name: string;
  size: number;
  /** The member's bytes (exactly `size` of them; TarWriter checks). */
  open: () => AsyncIterable<Uint8Array>;
}

export async function writeTarFile(target: string, members: OutMember[]): Promise<void> {
  const byName = new Map<string, OutMember>();
  for (const m of members) if (!byName.has(m.name)) byName.set(m.name, m);
  const dirs = new Set<string>();
  for (const name of byName.keys()) {
    let d = path.posix.dirname(name);
    while (d !== '.' && d !== '') {
      dirs.add(d);
      d = path.posix.dirname(d);
    }
  }
  const all = [
    ...[...dirs].map((d) => ({ dir: true as const, name: d })),
    ...[...byName.values()].map((m) => ({ dir: false as const, name: m.name, m })),
  ];
  all.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const staging = path.join(
    path.dirname(path.resolve(target)),
    `.${path.basename(target)}.${process.pid}.${Date.now()}.tmp`,
  );
  const fh = await open(staging, 'wx', 0o644);
  let ok = false;
  try {
    const w = new TarWriter('pax');
    const put = async (b: Uint8Array) => {
      if (b.length) await fh.write(b);
    };
    for (const e of all) {
      if (e.dir) {
        await put(w.header({ path: `${e.name}/`, type: 'directory', mode: 0o755, mtime: 0 }));
        await put(w.endEntry());
        continue;
      }
      await put(w.header({ path: e.name, type: 'file', mode: 0o644, mtime: 0, size: e.m.size }));
      for await (const chunk of e.m.open()) await put(w.data(chunk));
      await put(w.endEntry());
    }
    await put(w.finish());
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await rm(staging, { force: true });
  }
  try {
    await commitRename(staging, target);
  } catch (e) {
    await rm(staging, { force: true });
    throw e;
  }
}

export function bytesMember(name: string, data: Uint8Array): OutMember {
  return {
    name,
    size: data.length,
    open: async function* () {
      yield data;
    },
  };
}
