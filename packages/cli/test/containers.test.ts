// `fsck --verify`, `ps` and `rm` as a user runs them (subprocesses, a real store under a temp
// --root, kernel overlay mounts as root): a changed byte in a diff dir is reported with its layer
// and path (exit 1); containers made by `mount --writable` are listed and removed, a mounted one
// only with --force.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layeredImage, stevedore, writeLayout } from './fixtures.js';

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('fsck --verify, ps, rm', () => {
  const work = mkdtempSync(join(tmpdir(), 'sd-cli-containers-'));
  const root = join(work, 'root');
  const mnt = join(work, 'mnt');
  const sd = (args: string[]) => stevedore(['--root', root, ...args]);

  beforeAll(async () => {
    const layout = join(work, 'layout');
    await writeLayout(layout, layeredImage([{ 'etc/motd': 'hi\n', 'msg.txt': 'hello\n' }, { 'etc/new': 'n\n' }]), 'v1');
    const r = await stevedore(['-q', '--root', root, 'copy', `oci:${layout}:v1`, 'store:ctr:1']);
    expect(r.code, r.stderr).toBe(0);
  }, 60_000);
  afterAll(() => {
    spawnSync('umount', [mnt]);
    rmSync(work, { recursive: true, force: true });
  });

  it('fsck --verify: clean, then one changed byte → that layer and path, exit 1', async () => {
    const ok = await sd(['--json', 'fsck', '--verify']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ problems: [], verifiedLayers: 2 });
    // the base layer: the layerdb entry without a parent
    const layerdb = join(root, 'image/overlay2/layerdb/sha256');
    const base = readdirSync(layerdb).find((c) => !readdirSync(join(layerdb, c)).includes('parent'))!;
    const cacheId = readFileSync(join(layerdb, base, 'cache-id'), 'utf8');
    const fd = openSync(join(root, 'overlay2', cacheId, 'diff/msg.txt'), 'r+');
    writeSync(fd, Buffer.from('J'));
    closeSync(fd);
    const bad = await sd(['fsck', '--verify']);
    expect(bad.code).toBe(1);
    const lines = bad.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^layer sha256:${base} \\(diff_id sha256:[0-9a-f]{64}\\): msg\\.txt: mtime .*, content changed \\(CRC-64 differs\\)$`,
      ),
    );
    expect(bad.stderr).toMatch(/fsck found problems/);
    expect((await sd(['fsck'])).code).toBe(0); // without --verify the layout is fine
    const fd2 = openSync(join(root, 'overlay2', cacheId, 'diff/msg.txt'), 'r+');
    writeSync(fd2, Buffer.from('h'));
    closeSync(fd2);
  });

  it('ps lists the container of a writable mount; rm refuses it while mounted, --force unmounts and removes', async () => {
    const m = await sd(['--json', 'mount', '--writable', 'ctr:1', mnt]);
    expect(m.code, m.stderr).toBe(0);
    const { layerId } = JSON.parse(m.stdout);
    const ps = JSON.parse((await sd(['--json', 'ps'])).stdout);
    expect(ps).toEqual([expect.objectContaining({ id: layerId, image: expect.any(String), mounts: [mnt] })]);
    expect((await sd(['ps'])).stdout).toContain(`${layerId.slice(0, 12)}  `);
    const refused = await sd(['rm', layerId.slice(0, 12)]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/is mounted at .*: umount it first, or remove with --force/);
    const rm = await sd(['rm', '--force', layerId.slice(0, 12)]);
    expect(rm.code, rm.stderr).toBe(0);
    expect(rm.stdout.trim()).toBe(layerId);
    expect(spawnSync('mountpoint', ['-q', mnt]).status).not.toBe(0);
    expect(JSON.parse((await sd(['--json', 'ps'])).stdout)).toEqual([]);
    expect(readdirSync(join(root, 'overlay2'))).toHaveLength(3); // 2 layers + l/
    const bogus = await sd(['rm', 'abcdef123456']);
    expect(bogus.code).toBe(1);
    expect(bogus.stderr).toMatch(/no such container: abcdef123456/);
    expect((await sd(['fsck'])).code).toBe(0);
  });
});
