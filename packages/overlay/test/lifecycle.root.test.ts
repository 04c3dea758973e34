// Save (same digests back), commit of a container layer, rmi, prune and fsck on a real store.
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sha256 } from '@stevedore/core';
import { copyImage, OciLayoutReader, ociLayoutSink } from '@stevedore/image';
import { afterAll, describe, expect, it } from 'vitest';
import {
  commit,
  fsck,
  MergedView,
  mount,
  prune,
  removeContainer,
  rmi,
  Store,
  storedImage,
  umount,
} from '../src/index.js';
import { asObject, memImage, TARS, walkTree, walkView } from './fixtures.js';

const isRoot = process.getuid?.() === 0;
const work = mkdtempSync(path.join(tmpdir(), 'sd-overlay-life-'));
const mounted: string[] = [];
afterAll(() => {
  for (const m of mounted.reverse()) spawnSync('umount', [m]);
  rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!isRoot)('image lifecycle on the store', () => {
  const img = memImage(TARS, { gzip: true, label: 'life' });
  let store: Store;

  it('a stored image copies out with its original manifest, config and blob digests', async () => {
    store = await Store.open({ root: path.join(work, 'root') });
    await store.loadImage(img, { tags: ['life:1'] });
    const out = path.join(work, 'layout');
    await copyImage(await storedImage(store, 'life:1'), ociLayoutSink(out), { tags: ['x'] });
    const back = await (await OciLayoutReader.openDir(out)).image('x');
    expect(back.digest.toString()).toBe(img.digest.toString());
    for (const l of img.layers) {
      expect(sha256(readFileSync(path.join(out, 'blobs/sha256', l.digest.hex))).equals(l.digest)).toBe(true);
    }
    expect(await fsck(store)).toEqual([]);
  });

  it('commit: a writable mount’s container layer becomes a new image with the same merged view', async () => {
    const target = path.join(work, 'rw');
    const info = await mount(store, 'life:1', target, { writable: true });
    mounted.push(target);
    writeFileSync(path.join(target, 'new.txt'), 'new\n');
    appendFileSync(path.join(target, 'etc/b.txt'), 'more\n');
    unlinkSync(path.join(target, 'etc/c.txt'));
    rmSync(path.join(target, 'tree'), { recursive: true });
    const before = walkTree(target);
    await umount(target);
    mounted.pop();
    const r = await commit(store, 'life:1', info.layerId!, { tags: ['life:committed'], comment: 'test' });
    expect(r.applied).toBe(1);
    const committed = await store.image('life:committed');
    expect(committed.layers).toHaveLength(4);
    expect(committed.config.history?.at(-1)?.comment).toBe('test');
    const t2 = path.join(work, 'ro');
    await mount(store, 'life:committed', t2);
    mounted.push(t2);
    expect(asObject(walkTree(t2))).toEqual(asObject(before));
    expect(asObject(await walkView(await MergedView.open(store, 'life:committed')))).toEqual(asObject(before));
    await umount(t2);
    mounted.pop();
    await removeContainer(store, info.layerId!);
    expect(await fsck(store)).toEqual([]);
  });

  it('rmi refuses an image whose layers are under an active mount, and leaves everything as it was', async () => {
    const target = path.join(work, 'held');
    await mount(store, 'life:committed', target);
    mounted.push(target);
    const before = walkTree(target);
    // A second mount on the same mount point would hide the first: refused.
    await expect(mount(store, 'life:1', target)).rejects.toMatchObject({ code: 'ERR_ALREADY_MOUNTED' });
    const id = (await store.image('life:committed')).id.toString();
    // Its top layer is its own (the rest is shared with life:1): deleting it would empty the
    // mounted tree, so the rmi is refused, naming the mount, and nothing changes.
    await expect(rmi(store, 'life:committed')).rejects.toMatchObject({
      code: 'ERR_IMAGE_MOUNTED',
      message: expect.stringContaining(target),
    });
    expect((await store.image('life:committed')).id.toString()).toBe(id);
    expect(asObject(walkTree(target))).toEqual(asObject(before));
    expect(await fsck(store)).toEqual([]);
    await umount(target);
    mounted.pop();
  });

  it('rmi releases only unshared layers; prune drops unreferenced blobs; fsck finds damage', async () => {
    const layersBefore = readdirSync(path.join(store.layerdb, 'sha256')).length;
    const r = await rmi(store, 'life:committed');
    expect(r.untagged).toEqual(['life:committed']);
    expect(r.deleted).toHaveLength(1);
    expect(r.layers).toHaveLength(1);
    expect(readdirSync(path.join(store.layerdb, 'sha256')).length).toBe(layersBefore - 1);
    expect(readdirSync(store.overlayDir).length).toBe(3 + 1);
    const pruned = await prune(store);
    expect(pruned).toHaveLength(3); // the committed layer blob, its config and manifest
    expect(await fsck(store)).toEqual([]);
    expect((await store.image('life:1')).layers).toHaveLength(3);
    // damage: a missing short link is reported
    const l = (await store.image('life:1')).layers[1]!;
    unlinkSync(path.join(store.linkDir, l.link));
    expect((await fsck(store)).join('\n')).toMatch(/short link .* missing/);
  });
});
