// DockerRoot on data roots built by code (no daemon, no root): name resolution and the errors a
// damaged or foreign root gives. The real-dockerd proof is docker-root.docker.test.ts.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DockerRoot } from '../src/index.js';

const work = mkdtempSync(path.join(tmpdir(), 'sd-docker-root-unit-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/** A root with image configs (`diff_ids` as given) and repositories.json; returns the ids. */
function fakeRoot(name: string, configs: { diffIds?: string[]; n: number }[], tags: Record<string, number> = {}) {
  const root = path.join(work, name);
  const img = path.join(root, 'image', 'overlay2');
  mkdirSync(path.join(img, 'imagedb', 'content', 'sha256'), { recursive: true });
  mkdirSync(path.join(root, 'overlay2'), { recursive: true });
  const ids = configs.map((c) => {
    const raw = JSON.stringify({
      os: 'linux',
      architecture: 'amd64',
      rootfs: { type: 'layers', diff_ids: c.diffIds ?? [] },
      n: c.n,
    });
    writeFileSync(path.join(img, 'imagedb', 'content', 'sha256', sha(raw)), raw);
    return sha(raw);
  });
  const repos: Record<string, Record<string, string>> = {};
  for (const [tag, i] of Object.entries(tags)) {
    const repo = tag.slice(0, tag.lastIndexOf(':'));
    repos[repo] = { ...repos[repo], [tag]: `sha256:${ids[i]}` };
  }
  writeFileSync(path.join(img, 'repositories.json'), JSON.stringify({ Repositories: repos }));
  return { root, ids };
}

describe('DockerRoot on roots built by code', () => {
  it('resolves tags, ids and unique prefixes; an ambiguous prefix names its candidates', async () => {
    // Enough configs that two ids share their first hex digit (pigeonhole: 17).
    const { root, ids } = fakeRoot(
      'twins',
      Array.from({ length: 17 }, (_, n) => ({ n })),
      { 'app:1': 0 },
    );
    const r = await DockerRoot.open(root);
    expect((await r.resolve('app:1')).hex).toBe(ids[0]);
    expect((await r.resolve('docker.io/library/app:1')).hex).toBe(ids[0]);
    expect((await r.resolve(ids[3]!.slice(0, 12))).hex).toBe(ids[3]);
    const first = ids.find((a, i) => ids.some((b, j) => j !== i && b[0] === a[0]))![0]!;
    await expect(r.resolve(first)).rejects.toMatchObject({ code: 'ERR_AMBIGUOUS_IMAGE_ID' });
    await expect(r.resolve(first)).rejects.toThrow(/ambiguous .*give more characters/);
    await expect(r.resolve('app:2')).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
    await expect(r.resolve('Not A Ref!')).rejects.toMatchObject({ code: 'ERR_INVALID_REFERENCE' });
  });

  it('a config that does not hash to its id is refused, and left out of the listing', async () => {
    const { root, ids } = fakeRoot('tampered', [{ n: 1 }, { n: 2 }], { 'ok:1': 0, 'bad:1': 1 });
    writeFileSync(path.join(root, 'image/overlay2/imagedb/content/sha256', ids[1]!), '{"rootfs":{"type":"layers"}}');
    const r = await DockerRoot.open(root);
    await expect(r.image('bad:1')).rejects.toThrow(/config/);
    expect((await r.images()).map((i) => i.id.hex)).toEqual([ids[0]]);
    expect(r.skipped).toHaveLength(1);
    expect(r.skipped[0]).toContain(ids[1]);
  });

  it('a layer missing from layerdb, or with a bad cache-id, is a clear error', async () => {
    const diffId = `sha256:${sha('layer')}`;
    const { root } = fakeRoot('layers', [{ n: 1, diffIds: [diffId] }], { 'l:1': 0 });
    const r = await DockerRoot.open(root);
    await expect(r.image('l:1')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    await expect(r.image('l:1')).rejects.toThrow(/layer 0 .*not in docker's layerdb/);
    // single layer: chain id = diff_id
    const entry = path.join(root, 'image/overlay2/layerdb/sha256', diffId.slice(7));
    mkdirSync(entry, { recursive: true });
    writeFileSync(path.join(entry, 'diff'), diffId);
    writeFileSync(path.join(entry, 'cache-id'), '../../etc');
    await expect(r.image('l:1')).rejects.toMatchObject({ code: 'ERR_DOCKER_ROOT_CORRUPT' });
    writeFileSync(path.join(entry, 'cache-id'), 'a'.repeat(64));
    await expect(r.image('l:1')).rejects.toThrow(/diff dir .* missing/);
  });

  it('not a data root; another storage driver', async () => {
    await expect(DockerRoot.open(path.join(work, 'nope'))).rejects.toMatchObject({ code: 'ERR_NOT_DOCKER_ROOT' });
    mkdirSync(path.join(work, 'btrfs', 'image', 'btrfs'), { recursive: true });
    await expect(DockerRoot.open(path.join(work, 'btrfs'))).rejects.toMatchObject({
      code: 'ERR_DOCKER_DRIVER_UNSUPPORTED',
    });
  });
});
