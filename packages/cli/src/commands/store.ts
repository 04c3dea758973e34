/**
 * The local image store (`@stevedore/overlay`, laid out as Docker's overlay2): pull, push,
 * images, tag, rmi, prune, save, load, unpack, export, mount, umount, diff, commit, fsck.
 */
import { createReadStream, createWriteStream, existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { StevedoreError } from '@stevedore/core';
import {
  ArchiveError,
  CONTAINERD_IMAGE_NAME_ANNOTATION,
  copyImage,
  dockerArchiveSink,
  type Image,
  OciLayoutReader,
  parseReference,
} from '@stevedore/image';
import {
  commit,
  exportImage,
  findContainer,
  fsck,
  type LoadResult,
  listContainers,
  MergedView,
  mount,
  prune,
  removeContainer,
  rmi,
  Store,
  type StoredImage,
  storedImage,
  storeMounts,
  umount,
  unpack,
  verifyLayers,
  walkDiffDir,
} from '@stevedore/overlay';
import { pullImage, registrySink } from '@stevedore/registry';
import type { Output } from '../output.js';
import { Progress, shortId } from '../progress.js';
import { humanSize, type RegistryOpts, reference, registryClient, usage } from './common.js';

export interface StoreOpts extends RegistryOpts {
  root?: string;
}

export function openStore(o: StoreOpts): Promise<Store> {
  return Store.open(o.root ? { root: o.root } : {});
}

const notFound = (name: string) =>
  new StevedoreError('ERR_IMAGE_NOT_FOUND', `no such image ${name}: run \`stevedore images\` to list the store`);

/** Runs `f`, turning the store's "no such image" into the one line with what to do. */
async function named<T>(name: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof StevedoreError && e.code === 'ERR_IMAGE_NOT_FOUND') throw notFound(name);
    if (e instanceof StevedoreError && /^ERR_(INVALID_REFERENCE|REFERENCE)/.test(e.code)) throw notFound(name);
    throw e;
  }
}

export async function findImage(store: Store, name: string): Promise<StoredImage> {
  return named(name, () => store.image(name));
}

export async function findStoredImage(store: Store, name: string): Promise<Image> {
  return named(name, () => storedImage(store, name));
}

/** The repositories.json tags of an image id. */
export async function tagsOf(store: Store, id: string): Promise<{ tags: string[]; digests: string[] }> {
  const repos = await store.readRepositories();
  const tags: string[] = [];
  const digests: string[] = [];
  for (const entries of Object.values(repos.Repositories)) {
    for (const [k, v] of Object.entries(entries)) {
      if (v !== id) continue;
      if (k.includes('@')) digests.push(k);
      else tags.push(k);
    }
  }
  return { tags: tags.sort(), digests: digests.sort() };
}

// ---- pull / push ---------------------------------------------------------------------------------

export async function pullCommand(text: string, o: StoreOpts, out: Output): Promise<void> {
  const ref = reference(text);
  const store = await openStore(o);
  const progress = new Progress(out);
  const client = registryClient(o, (ev) => {
    const id = shortId(ev.digest);
    progress.set(id, 'Downloading');
    progress.bytes(id, ev.bytes, ev.total);
    if (ev.bytes >= ev.total) progress.set(id, 'Download complete', { done: true, note: humanSize(ev.total) });
  });
  const started = Date.now();
  try {
    out.log(`${ref.tag ?? ref.digest}: Pulling from ${ref.registry}/${ref.repository}`);
    const image = await pullImage(client, ref, o.platform ? { platform: o.platform } : {});
    const byDiff = new Map(image.layers.map((l) => [l.diffId.toString(), l]));
    for (const l of image.layers) progress.add(shortId(l.digest), 'Waiting', l.size);
    let result: LoadResult;
    try {
      result = await store.loadImage(image, {
        tags: [ref],
        digestRefs: true,
        sourceRepository: ref.name,
        onLayer: (ev) => {
          const l = byDiff.get(ev.diffId.toString());
          if (!l) return;
          const id = shortId(l.digest);
          if (ev.state === 'exists') progress.set(id, 'Already exists', { done: true });
          else if (ev.state === 'applied') progress.set(id, 'Pull complete', { done: true });
          else progress.set(id, 'Downloading');
        },
        onExtract: (ev) => {
          const l = byDiff.get(ev.diffId.toString());
          if (!l) return;
          const id = shortId(l.digest);
          progress.set(id, 'Extracting', { resetBytes: true });
          progress.bytes(id, ev.bytes, l.size);
        },
      });
    } finally {
      progress.finish();
    }
    const secs = (Date.now() - started) / 1000;
    out.log(`Digest: ${image.digest}`);
    out.log(
      result.applied > 0
        ? `Status: Downloaded newer image for ${ref.familiar()} (${result.applied} layers in ${secs.toFixed(1)}s)`
        : `Status: Image is up to date for ${ref.familiar()}`,
    );
    out.data(
      {
        reference: ref.toString(),
        digest: image.digest.toString(),
        id: result.imageId.toString(),
        refs: result.refs,
        layers: image.layers.map((l) => ({ digest: l.digest.toString(), size: l.size })),
        applied: result.applied,
        root: store.root,
        seconds: secs,
      },
      () => ref.toString(),
    );
  } finally {
    progress.finish();
    await client.close();
  }
}

export async function pushCommand(text: string, o: StoreOpts, out: Output): Promise<void> {
  const ref = reference(text);
  const store = await openStore(o);
  const image = await findStoredImage(store, text);
  const progress = new Progress(out);
  const client = registryClient(o, (ev) => {
    const id = shortId(ev.digest);
    progress.set(id, 'Pushing');
    progress.bytes(id, ev.bytes, ev.total);
    if (ev.bytes >= ev.total) progress.set(id, 'Pushed', { done: true, note: humanSize(ev.total) });
  });
  try {
    out.log(`The push refers to repository [${ref.registry}/${ref.repository}]`);
    for (const l of image.layers) progress.add(shortId(l.digest), 'Preparing', l.size);
    const sink = registrySink(client, ref);
    try {
      await copyImage(image, sink, {});
      progress.settle('Layer already exists'); // the layers that sent no bytes were there already
    } finally {
      progress.finish();
    }
    const digest = sink.lastDigest?.toString() ?? image.digest.toString();
    out.log(`${ref.tag ?? 'latest'}: digest: ${digest} size: ${image.rawManifest.length}`);
    out.data({ reference: ref.toString(), digest, size: image.rawManifest.length }, () => `${ref.name}@${digest}`);
  } finally {
    progress.finish();
    await client.close();
  }
}

// ---- images / tag / rmi / prune ------------------------------------------------------------------

export interface ImageRow {
  Repository: string;
  Tag: string;
  Id: string;
  Digest: string | null;
  Created: string | null;
  Size: number;
}

export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'N/A';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return 'N/A';
  const s = Math.max(0, Math.round((now - t) / 1000));
  const units: [number, string][] = [
    [365 * 86400, 'year'],
    [30 * 86400, 'month'],
    [7 * 86400, 'week'],
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  if (s < 1) return 'Less than a second ago';
  for (const [n, name] of units) {
    const v = Math.floor(s / n);
    if (v >= 1) return `${v === 1 ? (name === 'hour' ? 'About an' : 'a') : v} ${name}${v === 1 ? '' : 's'} ago`;
  }
  return 'N/A';
}

export function table(rows: string[][]): string {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd((widths[i] ?? 0) + 3)))
        .join('')
        .trimEnd(),
    )
    .join('\n');
}

export async function imagesCommand(filter: string | undefined, o: StoreOpts, out: Output): Promise<void> {
  const store = await openStore(o);
  const rows: ImageRow[] = [];
  for (const id of await store.imageIds()) {
    const img = await store.image(id);
    const { tags, digests } = await tagsOf(store, id.toString());
    const size = img.layers.reduce((s, l) => s + l.size, 0);
    const created = img.config.created ?? null;
    const digestFor = (repo: string) => digests.find((d) => d.startsWith(`${repo}@`))?.split('@')[1] ?? null;
    const manifest = img.manifestDigest?.toString() ?? null;
    if (tags.length === 0) {
      const repo = digests[0]?.split('@')[0] ?? '<none>';
      rows.push({ Repository: repo, Tag: '<none>', Id: id.toString(), Digest: manifest, Created: created, Size: size });
    }
    for (const t of tags) {
      const i = t.lastIndexOf(':');
      const repo = t.slice(0, i);
      rows.push({
        Repository: repo,
        Tag: t.slice(i + 1),
        Id: id.toString(),
        Digest: digestFor(repo) ?? manifest,
        Created: created,
        Size: size,
      });
    }
  }
  const shown = rows
    .filter((r) => !filter || r.Repository === filter || `${r.Repository}:${r.Tag}` === filter)
    .sort((a, b) => (b.Created ?? '').localeCompare(a.Created ?? '') || a.Repository.localeCompare(b.Repository));
  out.data(shown, () =>
    table([
      ['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'],
      ...shown.map((r) => [r.Repository, r.Tag, shortId(r.Id), ago(r.Created), humanSize(r.Size)]),
    ]),
  );
}

export async function tagCommand(src: string, dst: string, o: StoreOpts, out: Output): Promise<void> {
  const target = reference(dst);
  const store = await openStore(o);
  const image = await findStoredImage(store, src);
  const r = await store.loadImage(image, { tags: [target] });
  if (out.json) out.data({ source: src, target: target.familiar(), id: r.imageId.toString() }, () => '');
  if (!out.json) out.log(`Tagged ${shortId(r.imageId)} as ${target.familiar()}`);
}

export async function rmiCommand(names: string[], o: StoreOpts, out: Output): Promise<void> {
  const store = await openStore(o);
  const results = [];
  for (const n of names) {
    const r = await named(n, () => rmi(store, n));
    for (const u of r.untagged) out.log(`Untagged: ${u}`);
    for (const d of r.deleted) out.log(`Deleted: ${d}`);
    results.push({ name: n, ...r });
  }
  if (out.json) out.data(results, () => '');
}

export async function pruneCommand(o: StoreOpts, out: Output): Promise<void> {
  const store = await openStore(o);
  const deleted: string[] = [];
  // Dangling images: no tag left (digest references alone do not keep an image).
  const repos = await store.readRepositories();
  const tagged = new Set<string>();
  for (const e of Object.values(repos.Repositories)) {
    for (const [k, v] of Object.entries(e)) if (!k.includes('@')) tagged.add(v);
  }
  for (const id of await store.imageIds()) {
    if (tagged.has(id.toString())) continue;
    const r = await rmi(store, id.toString());
    deleted.push(...r.deleted);
    for (const d of r.deleted) out.log(`Deleted Images: ${d}`);
  }
  const blobs = await prune(store);
  for (const b of blobs) out.log(`Deleted blob: ${b}`);
  out.data({ images: deleted, blobs }, () => `Deleted ${deleted.length} images and ${blobs.length} blobs`);
}

// ---- save / load ---------------------------------------------------------------------------------

export async function saveCommand(names: string[], o: StoreOpts & { output?: string }, out: Output): Promise<void> {
  if (!o.output) throw usage('save needs -o FILE (docker-archive), e.g. stevedore save -o app.tar app:1');
  const store = await openStore(o);
  const sink = dockerArchiveSink(o.output);
  const saved = [];
  for (const n of names) {
    const image = await findStoredImage(store, n);
    const byId = /^(sha256:)?[a-f0-9]{12,64}$/.test(n);
    const tags = byId ? [] : [reference(n).familiar()];
    await copyImage(image, sink, { tags });
    saved.push({ name: n, digest: image.digest.toString(), tags });
    out.log(`Saved ${n} (${image.layers.length} layers)`);
  }
  await sink.close();
  if (out.json) out.data({ file: path.resolve(o.output), images: saved }, () => '');
}

export async function loadCommand(o: StoreOpts & { input?: string }, out: Output): Promise<void> {
  const store = await openStore(o);
  let file = o.input;
  let tmp: string | undefined;
  if (!file) {
    if (process.stdin.isTTY) throw usage('load needs -i FILE (or an archive on stdin), e.g. stevedore load -i app.tar');
    tmp = await mkdtemp(path.join(store.tmpDir, `${process.pid}-load-`));
    file = path.join(tmp, 'stdin.tar');
    await pipeline(process.stdin, createWriteStream(file));
  }
  try {
    const results = await loadAny(store, file);
    const loaded: { id: string; tags: string[]; applied: number }[] = [];
    for (const r of results) {
      const { tags } = await tagsOf(store, r.imageId.toString());
      const names = r.refs.length ? r.refs.filter((x) => !x.includes('@')) : [];
      if (names.length) for (const n of names) out.log(`Loaded image: ${n}`);
      else out.log(`Loaded image ID: ${r.imageId}`);
      loaded.push({ id: r.imageId.toString(), tags, applied: r.applied });
    }
    out.data(loaded, () => loaded.map((l) => l.tags[0] ?? l.id).join('\n'));
  } finally {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Loads what `input` holds, told apart by content: a directory with `oci-layout` and
 * `index.json` is an OCI layout; a tar with `manifest.json` is a docker-archive (Docker 25+
 * ones hold a layout too, but their RepoTags are in manifest.json); else a tar with `oci-layout`
 * and `index.json` is an oci-archive.
 */
async function loadAny(store: Store, input: string): Promise<LoadResult[]> {
  const st = await stat(input).catch(() => undefined);
  if (!st) throw usage(`${input}: no such file or directory`);
  if (st.isDirectory()) {
    if (!existsSync(path.join(input, 'oci-layout')) || !existsSync(path.join(input, 'index.json')))
      throw usage(`${input}: a directory that is not an OCI layout (no oci-layout and index.json)`);
    const layout = await OciLayoutReader.openDir(input);
    return loadOciImages(store, layout);
  }
  try {
    return await store.loadDockerArchive(input);
  } catch (e) {
    if (!(e instanceof ArchiveError && e.code === 'ERR_ARCHIVE_FORMAT' && /no manifest\.json/.test(e.message))) throw e;
  }
  let layout: OciLayoutReader;
  try {
    layout = await OciLayoutReader.openArchive(input);
  } catch (e) {
    throw new StevedoreError(
      'ERR_ARCHIVE_FORMAT',
      `${input}: neither a docker-archive (no manifest.json) nor an oci-archive (${(e as Error).message})`,
      { cause: e },
    );
  }
  try {
    return await loadOciImages(store, layout);
  } finally {
    await layout.close();
  }
}

/** Every image of index.json, named as docker load names OCI images (see `ociName`). */
async function loadOciImages(store: Store, layout: OciLayoutReader): Promise<LoadResult[]> {
  const out: LoadResult[] = [];
  for (const e of layout.entries()) {
    const name = ociName(e.descriptor.annotations ?? {}, e.tag);
    out.push(await store.loadImage(await layout.imageAt(e.descriptor), name ? { tags: [name] } : {}));
  }
  if (out.length === 0) throw new StevedoreError('ERR_IMAGE_NOT_FOUND', `${layout.label}: index.json lists no image`);
  return out;
}

/**
 * The name of an OCI image: containerd's `io.containerd.image.name`, else a `ref.name` that is
 * a whole reference (`app:1`, `registry/app:1`); a bare tag (`latest`) names nothing.
 */
function ociName(annotations: Record<string, string>, refName: string | undefined): string | undefined {
  const full = annotations[CONTAINERD_IMAGE_NAME_ANNOTATION];
  const candidate = full ?? (refName && /[:/@]/.test(refName) ? refName : undefined);
  if (!candidate) return undefined;
  try {
    return parseReference(candidate).familiar();
  } catch {
    return undefined;
  }
}

// ---- unpack / export -----------------------------------------------------------------------------

export async function unpackCommand(name: string, dir: string, o: StoreOpts, out: Output): Promise<void> {
  if (existsSync(dir) && readdirSync(dir).length > 0) throw usage(`${dir} is not empty: unpack into a new directory`);
  const store = await openStore(o);
  await findImage(store, name);
  await unpack(store, name, dir);
  out.data({ image: name, directory: path.resolve(dir) }, () => path.resolve(dir));
}

export async function exportCommand(name: string, o: StoreOpts & { output?: string }, out: Output): Promise<void> {
  if (!o.output)
    throw usage('export needs -o FILE.tar (or -o - for stdout), e.g. stevedore export app:1 -o rootfs.tar');
  const toStdout = o.output === '-';
  if (toStdout && process.stdout.isTTY) throw usage('export -o -: stdout is a terminal; redirect it or pipe it');
  const store = await openStore(o);
  await findImage(store, name);
  if (!toStdout) {
    const r = await exportImage(store, name, o.output);
    out.data({ image: name, file: path.resolve(o.output), diffId: r.diffId }, () => path.resolve(o.output as string));
    return;
  }
  // the tar is built in the store's temp dir, then streamed: stdout carries the tar and nothing else
  const tmp = await mkdtemp(path.join(store.tmpDir, `${process.pid}-export-`));
  try {
    const file = path.join(tmp, 'rootfs.tar');
    const r = await exportImage(store, name, file);
    await pipeline(createReadStream(file), process.stdout, { end: false });
    out.log(`Exported ${name} (diff_id ${r.diffId})`);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

// ---- mount / umount / diff / commit --------------------------------------------------------------

/** What the CLI remembers about mounts and container layers, under `<root>/cli/`. */
interface MountRecord {
  target: string;
  image: string;
  imageId: string;
  layerId?: string;
  backend: string;
}

const mountsFile = (store: Store) => path.join(store.root, 'cli', 'mounts.json');

async function readMounts(store: Store): Promise<MountRecord[]> {
  try {
    return JSON.parse(await readFile(mountsFile(store), 'utf8')) as MountRecord[];
  } catch {
    return [];
  }
}

async function writeMounts(store: Store, list: MountRecord[]): Promise<void> {
  await mkdir(path.dirname(mountsFile(store)), { recursive: true });
  await writeFile(mountsFile(store), JSON.stringify(list, null, 2));
}

export async function mountCommand(
  name: string,
  dir: string,
  o: StoreOpts & { writable?: boolean },
  out: Output,
): Promise<void> {
  const store = await openStore(o);
  const img = await findImage(store, name);
  let info: Awaited<ReturnType<typeof mount>>;
  try {
    info = await mount(store, img.id.toString(), dir, { writable: Boolean(o.writable) });
  } catch (e) {
    if (e instanceof StevedoreError && e.code === 'ERR_MOUNT_PERMISSION') {
      throw new StevedoreError(
        'ERR_MOUNT_PERMISSION',
        'mount needs root (or fuse-overlayfs): run as root or use `stevedore unpack`',
        { cause: e },
      );
    }
    throw e;
  }
  const rec: MountRecord = {
    target: info.target,
    image: name,
    imageId: info.imageId,
    backend: info.backend,
    ...(info.layerId ? { layerId: info.layerId } : {}),
  };
  await writeMounts(store, [...(await readMounts(store)).filter((m) => m.target !== info.target), rec]);
  out.data({ ...info, image: name }, () => info.target);
  if (!out.json) {
    out.log(
      `mounted ${name} at ${info.target} (${info.backend}, ${
        info.layerId ? `writable, container layer ${info.layerId.slice(0, 12)}` : 'read-only'
      })`,
    );
  }
}

export async function umountCommand(dir: string, o: StoreOpts, out: Output): Promise<void> {
  const store = await openStore(o);
  const target = path.resolve(dir);
  const recs = await readMounts(store);
  const rec = recs.find((m) => m.target === target);
  const active = storeMounts(store).some((m) => m.target === target) || isMountPoint(target);
  if (!active && !rec) throw new StevedoreError('ERR_NOT_MOUNTED', `${target} is not mounted: run \`stevedore mount\``);
  if (active) await umount(target);
  await writeMounts(
    store,
    recs.filter((m) => m.target !== target),
  );
  out.data({ target, layerId: rec?.layerId ?? null }, () => target);
  if (rec?.layerId && !out.json) {
    out.log(
      `container layer ${rec.layerId.slice(0, 12)} kept: \`stevedore diff ${rec.layerId.slice(0, 12)}\`, commit it`,
    );
  }
}

function isMountPoint(target: string): boolean {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[4] === target);
  } catch {
    return false;
  }
}

/** A mount target or a container layer id (prefix) → the container layer and its image. */
async function container(store: Store, what: string): Promise<{ layerId: string; imageId: string; image: string }> {
  const target = path.resolve(what);
  const rec = (await readMounts(store)).find((m) => m.target === target);
  if (rec) {
    if (!rec.layerId) throw usage(`${what} is a read-only mount: mount with --writable to make changes`);
    return { layerId: rec.layerId, imageId: rec.imageId, image: rec.image };
  }
  if (/^[a-f0-9]{6,64}$/.test(what)) {
    const c = await findContainer(store, what).catch(() => undefined);
    if (c) return { layerId: c.id, imageId: c.imageId, image: c.image };
  }
  throw new StevedoreError(
    'ERR_CONTAINER_NOT_FOUND',
    `no writable mount or container layer ${what}: mount one with \`stevedore mount --writable IMAGE DIR\``,
  );
}

const isWhiteout = (e: { type: string; devMajor: number; devMinor: number; xattrs: [string, Uint8Array][] }) =>
  (e.type === 'char' && e.devMajor === 0 && e.devMinor === 0) || e.xattrs.some(([k]) => k.endsWith('overlay.whiteout'));
const isOpaque = (e: { xattrs: [string, Uint8Array][] }) =>
  e.xattrs.some(([k, v]) => k.endsWith('overlay.opaque') && new TextDecoder().decode(v) === 'y');

export interface Change {
  Kind: 'A' | 'C' | 'D';
  Path: string;
}

export async function diffCommand(what: string, o: StoreOpts, out: Output): Promise<void> {
  const store = await openStore(o);
  const c = await container(store, what);
  const upper = path.join(store.overlayDir, c.layerId, 'diff');
  const lower = await MergedView.open(store, c.imageId);
  const exists = (p: string) => {
    try {
      lower.lstat(p);
      return true;
    } catch {
      return false;
    }
  };
  const changes: Change[] = [];
  for (const e of await walkDiffDir(upper)) {
    if (isWhiteout(e)) {
      changes.push({ Kind: 'D', Path: `/${e.path}` });
      continue;
    }
    changes.push({ Kind: exists(e.path) ? 'C' : 'A', Path: `/${e.path}` });
    if (e.type === 'directory' && isOpaque(e) && exists(e.path)) {
      const inUpper = new Set((await walkDiffDir(path.join(upper, e.path))).map((x) => x.path.split('/')[0] as string));
      for (const child of lower.readdir(e.path)) {
        if (!inUpper.has(child)) changes.push({ Kind: 'D', Path: `/${e.path}/${child}` });
      }
    }
  }
  changes.sort((a, b) => a.Path.localeCompare(b.Path));
  out.data(changes, () => changes.map((x) => `${x.Kind} ${x.Path}`).join('\n'));
}

export async function commitCommand(
  what: string,
  target: string,
  o: StoreOpts & { message?: string },
  out: Output,
): Promise<void> {
  const ref = reference(target);
  const store = await openStore(o);
  const c = await container(store, what);
  const r = await commit(store, c.imageId, c.layerId, {
    tags: [ref.familiar()],
    createdBy: `stevedore commit ${path.resolve(what)}`,
    ...(o.message ? { comment: o.message } : {}),
  });
  out.data({ id: r.imageId.toString(), reference: ref.familiar(), from: c.image }, () => r.imageId.toString());
}

// ---- ps / rm ----------------------------------------------------------------------------------------

export async function psCommand(o: StoreOpts, out: Output): Promise<void> {
  const store = await openStore(o);
  const list = await listContainers(store);
  out.data(list, () =>
    [
      'CONTAINER ID  IMAGE  CREATED  MOUNTED AT',
      ...list.map((c) => `${c.id.slice(0, 12)}  ${c.image}  ${c.created}  ${c.mounts.join(',') || '-'}`),
    ].join('\n'),
  );
}

export async function rmCommand(ids: string[], o: StoreOpts & { force?: boolean }, out: Output): Promise<void> {
  const store = await openStore(o);
  const removed: string[] = [];
  for (const id of ids) {
    const c = await removeContainer(store, id, { force: Boolean(o.force) });
    // The CLI's own mount records of it go too.
    await writeMounts(
      store,
      (await readMounts(store)).filter((m) => m.layerId !== c.id),
    );
    removed.push(c.id);
  }
  out.data(removed, () => removed.join('\n'));
}

// ---- fsck -----------------------------------------------------------------------------------------

export async function fsckCommand(o: StoreOpts & { verify?: boolean }, out: Output): Promise<boolean> {
  const store = await openStore(o);
  const problems = await fsck(store);
  let checked = 0;
  if (o.verify) {
    // Every diff dir against the content manifest recorded when it was extracted (or a fresh,
    // verified extraction of its blob): one problem per changed, added or missing path.
    const v = await verifyLayers(store);
    problems.push(...v.problems);
    checked = v.checked;
  }
  const mounts = storeMounts(store).map((m) => m.target);
  out.data({ root: store.root, problems, verifiedLayers: checked, mounts }, () =>
    problems.length
      ? problems.join('\n')
      : `${store.root}: ok${o.verify ? ` (${checked} layers verified against their diff_ids)` : ''}`,
  );
  return problems.length === 0;
}
