// Robustness and verification on a real store: `fsck --verify` against the content manifests
// recorded at extraction (and by re-extraction when a layer has none), recovery of what a
// killed writer leaves behind, and container records (create, list, rm, mounted → refused).
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { type LayerEntryInput, writeTar } from '@stevedore/core';
import { chainIds } from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createContainer,
  DIFF_MANIFEST_FILE,
  fsck,
  listContainers,
  mount,
  removeContainer,
  Store,
  shortLinkId,
  TAR_SPLIT_FILE,
  umount,
  verifyLayers,
} from '../src/index.js';
import { memImage, TARS } from './fixtures.js';

const isRoot = process.getuid?.() === 0;
const work = mkdtempSync(path.join(tmpdir(), 'sd-overlay-integrity-'));
const mounted: string[] = [];
afterAll(() => {
  for (const m of mounted.reverse()) spawnSync('umount', [m]);
  rmSync(work, { recursive: true, force: true });
});

/** A pid that belonged to a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

/** A string as a literal inside a RegExp. */
const reEscape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function flipByte(file: string, offset: number): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, Buffer.from('!'), 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(!isRoot)('fsck --verify: diff dirs against their recorded content', () => {
  const img = memImage(TARS, { gzip: true, label: 'verify' });
  const chains = chainIds(img.config.rootfs.diff_ids);
  let store: Store;
  beforeAll(async () => {
    store = await Store.open({ root: path.join(work, 'verify') });
    await store.loadImage(img, { tags: ['verify:1'] });
  });
  const layerOf = async (i: number) => (await store.image('verify:1')).layers[i]!;
  const what = (i: number) => `layer ${chains[i]} (diff_id ${img.config.rootfs.diff_ids[i]})`;

  it('an untouched store verifies clean, every layer checked', async () => {
    // each layer has Docker's tar-split; so its manifest records metadata only (the pull hashed
    // no file: the rebuilt tar proves the content)
    for (const c of chains) {
      const dir = path.join(store.layerdb, 'sha256', c.hex);
      expect(existsSync(path.join(dir, TAR_SPLIT_FILE))).toBe(true);
      const m = JSON.parse(gunzipSync(readFileSync(path.join(dir, DIFF_MANIFEST_FILE))).toString());
      expect(m.entries.filter((e: { type: string }) => e.type === 'file').length).toBeGreaterThan(0);
      expect(m.entries.filter((e: { sha256?: string }) => e.sha256 !== undefined)).toEqual([]);
    }
    expect(await verifyLayers(store)).toEqual({ checked: 3, problems: [] });
    expect(await fsck(store, { verify: true })).toEqual([]);
  });

  it('one changed byte is reported with exactly its layer and path; restoring it makes it clean', async () => {
    const file = path.join((await layerOf(2)).diffDir, 'data/bin');
    const before = statSync(file);
    flipByte(file, 1000);
    // the manifest sees the mtime; the tar rebuilt from the tar-split sees the content
    const v = await verifyLayers(store);
    expect(v.problems).toEqual([
      expect.stringMatching(
        new RegExp(
          `^${reEscape(what(2))}: data/bin: mtime \\d+\\.\\d+ → \\d+\\.\\d+, content changed \\(CRC-64 differs\\)$`,
        ),
      ),
    ]);
    expect(await fsck(store)).toEqual([]); // the layout alone cannot see it
    expect(await fsck(store, { verify: true })).toEqual(v.problems);
    // same size, mtime put back: only the content proves it
    utimesSync(file, before.atime, before.mtime);
    expect((await verifyLayers(store)).problems).toEqual([`${what(2)}: data/bin: content changed (CRC-64 differs)`]);
    writeFileSync(file, 'x'.repeat(70_000));
    // same bytes again, but the mtime is not the one the layer gave it
    expect((await verifyLayers(store)).problems).toEqual([
      expect.stringMatching(/data\/bin: mtime \d+\.\d+ → \d+\.\d+$/),
    ]);
    utimesSync(file, before.atime, before.mtime);
    expect(await verifyLayers(store)).toEqual({ checked: 3, problems: [] });
  });

  it('a layer its dir cannot rebuild (a path given twice) keeps content hashes instead', async () => {
    const file = (data: string) => ({
      entry: { path: 'f', type: 'file', mode: 0o644, mtime: 1_700_000_000 } as LayerEntryInput,
      data: new TextEncoder().encode(data),
    });
    const dup = memImage([writeTar([file('one'), file('two!')])], { gzip: true, label: 'dup' });
    const s = await Store.open({ root: path.join(work, 'dup') });
    await s.loadImage(dup, { tags: ['dup:1'] });
    const chain = chainIds(dup.config.rootfs.diff_ids)[0]!;
    expect(existsSync(path.join(s.layerdb, 'sha256', chain.hex, TAR_SPLIT_FILE))).toBe(false);
    expect(await verifyLayers(s)).toEqual({ checked: 1, problems: [] });
    const f = path.join((await s.image('dup:1')).layers[0]!.diffDir, 'f');
    const before = statSync(f);
    flipByte(f, 1);
    utimesSync(f, before.atime, before.mtime);
    expect((await verifyLayers(s)).problems).toEqual([
      expect.stringMatching(/\): f: sha256 sha256:[0-9a-f]{64} → sha256:[0-9a-f]{64}$/),
    ]);
  });

  it('a layer whose tar-split is gone is verified against its blob extracted again, or reported', async () => {
    const s = await Store.open({ root: path.join(work, 'verify4') });
    await s.loadImage(img, { tags: ['verify:1'] });
    const l2 = (await s.image('verify:1')).layers[2]!;
    rmSync(path.join(s.layerdb, 'sha256', chains[2]!.hex, TAR_SPLIT_FILE));
    expect(await verifyLayers(s)).toEqual({ checked: 3, problems: [] });
    const file = path.join(l2.diffDir, 'data/bin');
    const before = statSync(file);
    flipByte(file, 5);
    utimesSync(file, before.atime, before.mtime);
    expect((await verifyLayers(s)).problems).toEqual([
      expect.stringMatching(
        new RegExp(`^${reEscape(what(2))}: data/bin: sha256 sha256:[0-9a-f]{64} → sha256:[0-9a-f]{64}$`),
      ),
    ]);
    rmSync(s.blobPath(img.layers[2]!.digest));
    expect((await verifyLayers(s)).problems).toEqual([
      `${what(2)}: ${TAR_SPLIT_FILE} is missing and no blob is stored: file contents cannot be verified`,
    ]);
  });

  it('an added file, a removed file and a changed mode are each reported by path', async () => {
    const fresh = await Store.open({ root: path.join(work, 'verify2') });
    await fresh.loadImage(img, { tags: ['verify:1'] });
    const l0 = (await fresh.image('verify:1')).layers[0]!.diffDir;
    writeFileSync(path.join(l0, 'etc/planted'), 'x');
    rmSync(path.join(l0, 'tree/x/y'));
    spawnSync('chmod', ['0600', path.join(l0, 'app/msg')]);
    expect((await verifyLayers(fresh)).problems).toEqual([
      `${what(0)}: app/msg: mode 644 → 600`,
      `${what(0)}: etc/planted: added`,
      `${what(0)}: tree/x/y: missing`,
    ]);
  });

  it('a layer stored without a manifest is verified by extracting its blob again', async () => {
    const s = await Store.open({ root: path.join(work, 'verify3') });
    await s.loadImage(img, { tags: ['verify:1'] });
    const l1 = (await s.image('verify:1')).layers[1]!;
    rmSync(path.join(s.layerdb, 'sha256', chains[1]!.hex, DIFF_MANIFEST_FILE));
    expect(await verifyLayers(s)).toEqual({ checked: 3, problems: [] });
    writeFileSync(path.join(l1.diffDir, 'opq/new'), 'NEW\n');
    expect((await verifyLayers(s)).problems).toEqual([
      expect.stringMatching(new RegExp(`^${reEscape(what(1))}: opq/new: sha256 `)),
    ]);
    // without the blob, the tar-split alone still proves the content
    rmSync(s.blobPath(img.layers[1]!.digest));
    expect((await verifyLayers(s)).problems).toEqual([`${what(1)}: opq/new: content changed (CRC-64 differs)`]);
    // without it either, it says it cannot verify
    rmSync(path.join(s.layerdb, 'sha256', chains[1]!.hex, TAR_SPLIT_FILE));
    expect((await verifyLayers(s)).problems).toEqual([
      `${what(1)}: no content manifest, tar-split or blob to verify against`,
    ]);
  });
});

describe.skipIf(!isRoot)('recovery of what a killed writer leaves', () => {
  it('open removes orphan layer dirs, dangling links and temp files of dead pids; keeps live ones', async () => {
    const root = path.join(work, 'recover');
    let store = await Store.open({ root });
    await store.loadImage(memImage(TARS, { gzip: true, label: 'rec' }), { tags: ['rec:1'] });
    const dead = deadPid();
    // a layer dir renamed into overlay2/ but killed before its layerdb entry, with its link
    const orphan = 'a'.repeat(64);
    mkdirSync(path.join(store.overlayDir, orphan, 'diff'), { recursive: true });
    const link = shortLinkId();
    writeFileSync(path.join(store.overlayDir, orphan, 'link'), link);
    symlinkSync(`../${orphan}/diff`, path.join(store.linkDir, link));
    symlinkSync(`../${'b'.repeat(64)}/diff`, path.join(store.linkDir, shortLinkId())); // dangling
    const temps = [
      path.join(store.imageRoot, `repositories.json.tmp-${dead}-0badc0de`),
      path.join(store.imagedb, 'content', 'sha256', `${'c'.repeat(64)}.tmp-${dead}-12ab`),
      path.join(store.root, `lock.${dead}.abcdef012345`),
      path.join(store.root, `lock.stale-${dead}-abcdef012345`),
    ];
    for (const t of temps) writeFileSync(t, 'x');
    const live = path.join(store.imageRoot, `repositories.json.tmp-${process.pid}-0badc0de`);
    writeFileSync(live, 'x');
    writeFileSync(store.lockFile, `${dead}\n`); // a lock held by a dead process
    mkdirSync(path.join(store.tmpDir, `${dead}-0123456789abcdef`, 'diff'), { recursive: true });
    expect((await fsck(store)).join('\n')).toMatch(/overlay2\/a{64}: no layer or container owns it/);

    store = await Store.open({ root });
    expect(existsSync(path.join(store.overlayDir, orphan))).toBe(false);
    expect(readdirSync(store.linkDir)).toHaveLength(3);
    for (const t of temps) expect(existsSync(t), t).toBe(false);
    expect(existsSync(live)).toBe(true);
    expect(readdirSync(store.tmpDir)).toEqual([]);
    expect(await fsck(store, { verify: true })).toEqual([]);
    rmSync(live);
  });
});

describe.skipIf(!isRoot)('containers', () => {
  it('create → list → mount → rm refused while mounted, --force unmounts; rm removes layer and record', async () => {
    const store = await Store.open({ root: path.join(work, 'containers') });
    await store.loadImage(memImage(TARS, { gzip: true, label: 'ctr' }), { tags: ['ctr:1'] });
    const dirsBefore = readdirSync(store.overlayDir).length;
    const a = await createContainer(store, 'ctr:1');
    expect(readdirSync(path.join(store.overlayDir, a.id)).sort()).toEqual(['diff', 'link', 'lower', 'work']);
    const target = path.join(work, 'ctr-mnt');
    const m = await mount(store, 'ctr:1', target, { writable: true }); // a second one, made by mount
    mounted.push(target);
    writeFileSync(path.join(target, 'hello'), 'hi\n');
    const list = await listContainers(store);
    expect(list.map((c) => c.id).sort()).toEqual([a.id, m.layerId].sort());
    expect(list.find((c) => c.id === m.layerId)).toMatchObject({
      mounts: [target],
      mountTarget: target,
      image: expect.any(String),
    });
    expect(list.find((c) => c.id === a.id)?.mounts).toEqual([]);
    // the container layer keeps the image's layers from rmi and is not an orphan for open/fsck
    await Store.open({ root: store.root });
    expect(await fsck(store)).toEqual([]);

    await expect(removeContainer(store, m.layerId!.slice(0, 12))).rejects.toMatchObject({
      code: 'ERR_CONTAINER_MOUNTED',
      message: expect.stringContaining(`mounted at ${target}`),
    });
    expect(existsSync(path.join(m.upperDir!, 'hello'))).toBe(true);
    await removeContainer(store, m.layerId!, { force: true });
    mounted.pop();
    expect(spawnSync('mountpoint', ['-q', target]).status).not.toBe(0);
    await removeContainer(store, a.id);
    expect(await listContainers(store)).toEqual([]);
    expect(readdirSync(store.overlayDir)).toHaveLength(dirsBefore);
    expect(readdirSync(store.containersDir)).toEqual([]);
    await expect(removeContainer(store, a.id)).rejects.toMatchObject({ code: 'ERR_CONTAINER_NOT_FOUND' });
    expect(await fsck(store)).toEqual([]);
    await umount(target).catch(() => {});
  });
});
