/**
 * Kernel overlay mounts of stored images, as Docker's overlay2 driver does them: `lowerdir` is
 * built from the short links (`l/ABC…:l/DEF…`, top first) and mount(8) runs with its cwd in
 * `overlay2/`, so the option string stays short (100+ layers fit in one page). A writable mount
 * gets its own `overlay2/<id>` (diff, work, link, lower) as a container layer, recorded as a
 * container (containers.ts).
 * `fuse-overlayfs` is used when not root and it is installed.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, realpath } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { StevedoreError } from '@stevedore/core';
import { createContainer, recordMount, removeContainer } from './containers.js';
import type { Store } from './store.js';

const run = promisify(execFile);

export interface MountOptions {
  /** Add a container layer (upperdir) so the mount is writable. Default false (read-only). */
  writable?: boolean;
  /** Reuse an existing container (its id, from a previous writable mount or `createContainer`). */
  layerId?: string;
  /** Force a backend (default: kernel overlay as root, fuse-overlayfs otherwise). */
  backend?: 'overlay' | 'fuse-overlayfs';
  /**
   * Extra overlay options. Default `index=off,redirect_dir=off,metacopy=off` where the kernel
   * knows them, so the upper dir alone is the diff (renaming a lower dir fails with EXDEV).
   */
  options?: string[];
}

export interface MountInfo {
  target: string;
  imageId: string;
  backend: 'overlay' | 'fuse-overlayfs' | 'bind';
  /** Relative to `overlay2/`, top first. */
  lowerdir: string;
  /** The container layer id (writable mounts). */
  layerId?: string;
  upperDir?: string;
  workDir?: string;
  /** The `-o` string passed to mount. */
  mountOptions: string;
}

const FUSE_OVERLAYFS = process.env.STEVEDORE_FUSE_OVERLAYFS ?? '/usr/bin/fuse-overlayfs';
const PAGE = 4096;

export function overlaySupported(): boolean {
  try {
    return /\toverlay\n/.test(readFileSync('/proc/filesystems', 'utf8'));
  } catch {
    return false;
  }
}

function fail(code: string, message: string, cause?: unknown): never {
  throw new StevedoreError(code, message, cause ? { cause } : undefined);
}

/** Mounts image `image` (reference or id) at `target`. */
export async function mount(
  store: Store,
  image: string,
  target: string,
  options: MountOptions = {},
): Promise<MountInfo> {
  const img = await store.image(image);
  if (img.layers.length === 0) fail('ERR_IMAGE_FORMAT', `${image}: image has no layers`);
  const top = img.layers[img.layers.length - 1]!;
  const lowerdir = await store.lowerChain(top.dir);
  const isRoot = process.getuid?.() === 0;
  const backend = options.backend ?? (isRoot ? 'overlay' : existsSync(FUSE_OVERLAYFS) ? 'fuse-overlayfs' : 'overlay');
  if (backend === 'overlay' && !isRoot) {
    fail(
      'ERR_MOUNT_PERMISSION',
      `mount ${image} at ${target}: kernel overlay mounts need root (and no fuse-overlayfs found at ${FUSE_OVERLAYFS})`,
    );
  }
  if (backend === 'overlay' && !overlaySupported()) {
    fail('ERR_OVERLAY_UNAVAILABLE', `mount ${image}: the kernel has no overlay filesystem (modprobe overlay)`);
  }
  if (backend === 'fuse-overlayfs' && !existsSync(FUSE_OVERLAYFS)) {
    fail('ERR_OVERLAY_UNAVAILABLE', `mount ${image}: ${FUSE_OVERLAYFS} not found`);
  }
  await mkdir(target, { recursive: true });
  // A second overlay stacked on the first hides it until one umount, then shows the first
  // again: almost always a mistake, so refused (as a mount point in use).
  const real = await realpath(target);
  const busy = listMounts().find((m) => m.target === real);
  if (busy) {
    fail('ERR_ALREADY_MOUNTED', `mount ${image}: ${real} is already a ${busy.fstype} mount point (umount it first)`);
  }
  const info: MountInfo = {
    target: path.resolve(target),
    imageId: img.id.toString(),
    backend,
    lowerdir,
    mountOptions: '',
  };
  let parts: string[];
  let created: string | undefined;
  if (options.writable) {
    let id = options.layerId;
    if (id) {
      if (!/^[a-f0-9]{64}$/.test(id) || !existsSync(path.join(store.overlayDir, id, 'diff')))
        fail('ERR_LAYER_NOT_FOUND', `container layer ${id} not found`);
    } else {
      id = (await createContainer(store, img.id.toString())).id;
      created = id;
    }
    info.layerId = id;
    info.lowerdir = (await readFile(path.join(store.overlayDir, id, 'lower'), 'utf8')).trim();
    info.upperDir = path.join(store.overlayDir, id, 'diff');
    info.workDir = path.join(store.overlayDir, id, 'work');
    parts = [`lowerdir=${info.lowerdir}`, `upperdir=${id}/diff`, `workdir=${id}/work`];
  } else if (img.layers.length === 1 && backend === 'overlay') {
    // overlayfs wants two lower dirs without an upper: a single layer is a read-only bind.
    info.backend = 'bind';
    info.mountOptions = 'bind,ro';
    await runMount(['--bind', '-o', 'ro', top.diffDir, info.target], store.overlayDir, image);
    return info;
  } else {
    parts = [`lowerdir=${info.lowerdir}`];
  }
  const extra = options.options ?? (backend === 'overlay' ? ['index=off', 'redirect_dir=off', 'metacopy=off'] : []);
  info.mountOptions = [...extra, ...parts].join(',');
  if (info.mountOptions.length >= PAGE) {
    fail(
      'ERR_MOUNT_OPTIONS_TOO_LONG',
      `mount ${image}: ${img.layers.length} layers do not fit in one page of mount options`,
    );
  }
  try {
    await mountWith(backend, info, parts, store.overlayDir, image, Boolean(options.options));
  } catch (e) {
    // A container made for this mount goes with it.
    if (created) await removeContainer(store, created).catch(() => {});
    throw e;
  }
  if (info.layerId) await recordMount(store, info.layerId, info.target);
  return info;
}

async function mountWith(
  backend: 'overlay' | 'fuse-overlayfs',
  info: MountInfo,
  parts: string[],
  cwd: string,
  image: string,
  explicitOptions: boolean,
): Promise<void> {
  if (backend === 'fuse-overlayfs') {
    await runCmd(FUSE_OVERLAYFS, ['-o', info.mountOptions, info.target], cwd, image);
    return;
  }
  try {
    await runMount(['-t', 'overlay', 'overlay', '-o', info.mountOptions, info.target], cwd, image);
  } catch (e) {
    if (explicitOptions) throw e;
    // Older kernels lack some of the options: retry with the ones every kernel knows.
    info.mountOptions = parts.join(',');
    await runMount(['-t', 'overlay', 'overlay', '-o', info.mountOptions, info.target], cwd, image);
  }
}

/** Runs mount(8) with its cwd in `cwd` (so relative lower dirs stay short). */
export async function runMount(args: string[], cwd: string, what: string): Promise<void> {
  await runCmd('mount', args, cwd, what);
}

async function runCmd(cmd: string, args: string[], cwd: string, what: string): Promise<void> {
  try {
    await run(cmd, args, { cwd });
  } catch (e) {
    const stderr = String((e as { stderr?: string }).stderr ?? '').trim();
    const code = /permission|not permitted|only root/i.test(stderr) ? 'ERR_MOUNT_PERMISSION' : 'ERR_MOUNT_FAILED';
    fail(code, `mount ${what}: ${cmd} ${args.join(' ')}: ${stderr || (e as Error).message}`, e);
  }
}

/** Unmounts `target` (fusermount for fuse-overlayfs when not root). */
export async function umount(target: string): Promise<void> {
  const t = path.resolve(target);
  const m = listMounts().find((x) => x.target === t);
  try {
    if (m?.fstype.startsWith('fuse') && process.getuid?.() !== 0) await run('fusermount', ['-u', t]);
    else await run('umount', [t]);
  } catch (e) {
    const stderr = String((e as { stderr?: string }).stderr ?? '').trim();
    fail('ERR_UMOUNT_FAILED', `umount ${t}: ${stderr || (e as Error).message}`, e);
  }
}

export interface ActiveMount {
  target: string;
  fstype: string;
  source: string;
  options: string;
  lowerdir?: string;
  upperdir?: string;
}

function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Overlay and fuse-overlayfs mounts from /proc/self/mountinfo. */
export function listMounts(): ActiveMount[] {
  const out: ActiveMount[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue;
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const fields = pre.split(' ');
    const [fstype = '', source = '', options = ''] = post.split(' ');
    if (fstype !== 'overlay' && !fstype.startsWith('fuse.fuse-overlayfs') && fstype !== 'fuse-overlayfs') continue;
    const m: ActiveMount = { target: unescapeOctal(fields[4] ?? ''), fstype, source: unescapeOctal(source), options };
    for (const o of options.split(',')) {
      if (o.startsWith('lowerdir=')) m.lowerdir = unescapeOctal(o.slice(9));
      if (o.startsWith('upperdir=')) m.upperdir = unescapeOctal(o.slice(9));
    }
    out.push(m);
  }
  return out;
}

/**
 * Mounts of this store's layers: overlay mounts whose lowerdir names short links of this
 * store (relative `l/…` as mounted, or absolute under `overlay2/l/`).
 */
export function storeMounts(store: Store): ActiveMount[] {
  return listMounts().filter((m) => {
    const first = m.lowerdir?.split(':')[0];
    if (!first) return false;
    const name = path.basename(first);
    return /^[A-Z2-7]{26}$/.test(name) && existsSync(path.join(store.linkDir, name));
  });
}
