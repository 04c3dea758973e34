/**
 * Containers: a writable layer (`overlay2/<id>/{diff,work,link,lower}` over an image's layers)
 * plus a record `<root>/containers/<id>.json` saying which image it sits on. The layer dir and
 * the record are created and removed under the store lock, the record last on create and first
 * on remove, so a kill at any point leaves either a whole container or an orphan dir that the
 * next `Store.open` removes.
 */
import { readFileSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { StevedoreError } from '@stevedore/core';
import { randomId, writeFileAtomic } from './fsutil.js';
import { withLock } from './lock.js';
import { listMounts, umount } from './mount.js';
import type { Store } from './store.js';

export interface ContainerRecord {
  /** 64 hex: also the name of its `overlay2/<id>` dir. */
  id: string;
  /** The image as the user named it. */
  image: string;
  imageId: string;
  /** ISO 8601. */
  created: string;
  /** Where it was last mounted (it may have been unmounted since). */
  mountTarget?: string;
}

export interface ContainerInfo extends ContainerRecord {
  /** `overlay2/<id>/diff`, the upper dir. */
  upperDir: string;
  /** Active mount points using it as upper dir. */
  mounts: string[];
}

const ID = /^[a-f0-9]{64}$/;
const recordPath = (store: Store, id: string) => path.join(store.containersDir, `${id}.json`);

/** Creates a container (writable layer) over `image`. */
export async function createContainer(store: Store, image: string): Promise<ContainerInfo> {
  const img = await store.image(image);
  const top = img.layers.at(-1);
  if (!top) throw new StevedoreError('ERR_IMAGE_FORMAT', `${image}: image has no layers`);
  const rec: ContainerRecord = { id: randomId(), image, imageId: img.id.toString(), created: new Date().toISOString() };
  await withLock(store.lockFile, async () => {
    // The base layer must still be there (an rmi may have run since `store.image`).
    if (!(await store.layer(top.chainId))) {
      throw new StevedoreError('ERR_IMAGE_NOT_FOUND', `${image}: removed while creating a container`);
    }
    await store.createLayerDir(undefined, top.dir, rec.id);
    await writeFileAtomic(recordPath(store, rec.id), JSON.stringify(rec), 0o600);
  });
  return info(store, rec);
}

/** Every container of the store, oldest first. */
export async function listContainers(store: Store): Promise<ContainerInfo[]> {
  const out: ContainerInfo[] = [];
  for (const f of await readdir(store.containersDir)) {
    const id = f.replace(/\.json$/, '');
    if (!ID.test(id) || !f.endsWith('.json')) continue;
    const rec = await readRecord(store, id);
    if (rec) out.push(info(store, rec));
  }
  return out.sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
}

/** A container by id or unique id prefix (at least 6 characters). */
export async function findContainer(store: Store, idOrPrefix: string): Promise<ContainerInfo> {
  if (!/^[a-f0-9]{6,64}$/.test(idOrPrefix)) {
    throw new StevedoreError('ERR_CONTAINER_NOT_FOUND', `no such container: ${idOrPrefix} (ids are hex)`);
  }
  const hits = (await listContainers(store)).filter((c) => c.id.startsWith(idOrPrefix));
  if (hits.length > 1) {
    throw new StevedoreError('ERR_AMBIGUOUS', `container id prefix ${idOrPrefix} matches ${hits.length} containers`);
  }
  if (!hits[0]) throw new StevedoreError('ERR_CONTAINER_NOT_FOUND', `no such container: ${idOrPrefix}`);
  return hits[0];
}

/**
 * Removes a container: its record, then its layer dir. A mounted container is refused
 * (ERR_CONTAINER_MOUNTED) unless `force`, which unmounts it first.
 */
export async function removeContainer(
  store: Store,
  idOrPrefix: string,
  options: { force?: boolean } = {},
): Promise<ContainerInfo> {
  const c = await findContainer(store, idOrPrefix);
  if (c.mounts.length && !options.force) {
    throw new StevedoreError(
      'ERR_CONTAINER_MOUNTED',
      `container ${c.id.slice(0, 12)} is mounted at ${c.mounts.join(', ')}: umount it first, or remove with --force`,
    );
  }
  for (const m of c.mounts) await umount(m);
  await withLock(store.lockFile, async () => {
    await rm(recordPath(store, c.id), { force: true });
    await store.removeLayerDir(c.id);
  });
  return c;
}

/** Notes where a container got mounted (for `ps`, and to find fuse mounts, which hide their upper dir). */
export async function recordMount(store: Store, id: string, target: string): Promise<void> {
  await withLock(store.lockFile, async () => {
    const rec = await readRecord(store, id);
    if (rec) await writeFileAtomic(recordPath(store, id), JSON.stringify({ ...rec, mountTarget: target }), 0o600);
  });
}

async function readRecord(store: Store, id: string): Promise<ContainerRecord | undefined> {
  try {
    const rec = JSON.parse(await readFile(recordPath(store, id), 'utf8')) as ContainerRecord;
    if (rec.id !== id) throw new Error(`names container ${rec.id}`);
    return rec;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StevedoreError('ERR_STORE_CORRUPT', `container record ${id}: ${(e as Error).message}`);
  }
}

function mountPoints(): Set<string> {
  const out = new Set<string>();
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const target = line.split(' ')[4];
      if (target)
        out.add(target.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))));
    }
  } catch {
    // not Linux: nothing is mounted
  }
  return out;
}

function info(store: Store, rec: ContainerRecord): ContainerInfo {
  const upperDir = path.join(store.overlayDir, rec.id, 'diff');
  // Kernel overlay shows its upperdir (relative `<id>/diff` as we mount, or absolute);
  // fuse-overlayfs does not, so the recorded target counts while it is a mount point.
  const mounts = listMounts()
    .filter((m) => m.upperdir === `${rec.id}/diff` || m.upperdir === upperDir)
    .map((m) => m.target);
  if (rec.mountTarget && !mounts.includes(rec.mountTarget) && mountPoints().has(rec.mountTarget)) {
    mounts.push(rec.mountTarget);
  }
  return { ...rec, upperDir, mounts };
}
