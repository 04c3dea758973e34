// The store with root and the real dockerd: pull → mount (kernel overlay) → umount → save →
// docker load → docker run; docker save → stevedore load → images; push from the store →
// docker pull → docker run; mount --writable → change files → diff (A/C/D) → commit → the
// committed image's mount shows the change.
// Skips when not root or dockerd is missing, unless STEVEDORE_REQUIRE_DOCKER=1 (then it fails).
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import {
  buildScratchImage,
  type Dockerd,
  type Registry,
  startDockerd,
  startRegistry,
} from '../../../test/harness/index.js';
import { busyboxBytes, layeredImage, stevedore, writeLayout } from './fixtures.js';

const { canRun } = useRealComponents({ registry: true });

describe.skipIf(!canRun)('stevedore store with root and dockerd', () => {
  let d: Dockerd;
  let reg: Registry;
  const work = mkdtempSync(join(tmpdir(), 'sd-cli-store-docker-'));
  const root = join(work, 'root');
  const sd = (args: string[]) => stevedore(['--root', root, ...args]);
  const image = layeredImage(
    [
      {
        'bin/busybox': busyboxBytes(),
        'etc/motd': 'old motd\n',
        'etc/gone.txt': 'bye\n',
        'msg.txt': 'from the store\n',
      },
      { 'etc/motd': 'new motd\n', 'tmp/x': 'x' },
    ],
    { cat: '/msg.txt' },
  );
  let ref: string;
  const mounts: string[] = [];

  beforeAll(async () => {
    [d, reg] = await Promise.all([startDockerd(), startRegistry()]);
    await writeLayout(join(work, 'layout'), image, 'v1');
    ref = `${reg.host}/sd/mnt:1`;
    const r = await stevedore(['-q', 'copy', `oci:${join(work, 'layout')}:v1`, `docker://${ref}`]);
    expect(r.code, r.stderr).toBe(0);
    const p = await sd(['-q', 'pull', ref]);
    expect(p.code, p.stderr).toBe(0);
  }, 240_000);
  afterAll(async () => {
    for (const m of mounts) await stevedore(['--root', root, 'umount', m]);
    await d?.stop();
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('mount (kernel overlay) and list the merged root, umount; save → docker load → docker run', async () => {
    const mnt = join(work, 'mnt');
    const m = await sd(['--json', 'mount', ref, mnt]);
    expect(m.code, m.stderr).toBe(0);
    mounts.push(mnt);
    expect(JSON.parse(m.stdout)).toMatchObject({ backend: 'overlay', target: mnt });
    expect(readdirSync(mnt).sort()).toEqual(['bin', 'etc', 'msg.txt', 'tmp']);
    expect(readFileSync(join(mnt, 'etc/motd'), 'utf8')).toBe('new motd\n');
    expect((await sd(['fsck'])).code).toBe(0);
    const u = await sd(['umount', mnt]);
    expect(u.code, u.stderr).toBe(0);
    mounts.pop();
    expect(readdirSync(mnt)).toEqual([]);

    const tar = join(work, 'save.tar');
    expect((await sd(['save', '-o', tar, ref])).code).toBe(0);
    const { stdout: loaded } = await d.docker(['load', '-i', tar]);
    expect(loaded).toContain(`Loaded image: ${ref}`);
    const { stdout } = await d.docker(['run', '--rm', '--network', 'none', ref]);
    expect(stdout).toBe('from the store\n');
  });

  it('docker save → stevedore load → images shows it', async () => {
    const built = await buildScratchImage(d, 'sd-cli-store-saved:1', { 'app/msg': 'saved by docker\n' }, 'ENV A=1', {
      busybox: true,
      cmd: ['/bin/busybox', 'cat', '/app/msg'],
    });
    const tar = join(work, 'docker.tar');
    await d.docker(['save', '-o', tar, built.tag]);
    const l = await sd(['load', '-i', tar]);
    expect(l.code, l.stderr).toBe(0);
    expect(l.stderr).toContain('Loaded image: sd-cli-store-saved:1');
    const imgs = JSON.parse((await sd(['--json', 'images', 'sd-cli-store-saved'])).stdout);
    expect(imgs).toEqual([expect.objectContaining({ Repository: 'sd-cli-store-saved', Tag: '1', Id: built.id })]);
  });

  it('push from the store → docker pull → docker run', async () => {
    const target = `${reg.host}/sd/from-store:2`;
    expect((await sd(['tag', 'sd-cli-store-saved:1', target])).code).toBe(0);
    const p = await sd(['push', target]);
    expect(p.code, p.stderr).toBe(0);
    await d.docker(['pull', target]);
    const { stdout } = await d.docker(['run', '--rm', '--network', 'none', target]);
    expect(stdout).toBe('saved by docker\n');
  });

  it('mount --writable, change files, diff, commit; the committed image has the change', async () => {
    const mnt = join(work, 'rw');
    const m = await sd(['--json', 'mount', '--writable', ref, mnt]);
    expect(m.code, m.stderr).toBe(0);
    mounts.push(mnt);
    const layerId = JSON.parse(m.stdout).layerId as string;
    writeFileSync(join(mnt, 'added.txt'), 'added\n');
    writeFileSync(join(mnt, 'etc/motd'), 'changed motd\n');
    unlinkSync(join(mnt, 'etc/gone.txt'));
    const diff = await sd(['diff', mnt]);
    expect(diff.code, diff.stderr).toBe(0);
    expect(diff.stdout.trim().split('\n')).toEqual(['A /added.txt', 'C /etc', 'D /etc/gone.txt', 'C /etc/motd']);
    const j = JSON.parse((await sd(['--json', 'diff', layerId.slice(0, 12)])).stdout);
    expect(j).toContainEqual({ Kind: 'D', Path: '/etc/gone.txt' });

    const c = await sd(['commit', mnt, 'sd-committed:1']);
    expect(c.code, c.stderr).toBe(0);
    expect((await sd(['umount', mnt])).code).toBe(0);
    mounts.pop();

    const mnt2 = join(work, 'committed');
    expect((await sd(['mount', 'sd-committed:1', mnt2])).code).toBe(0);
    mounts.push(mnt2);
    expect(readFileSync(join(mnt2, 'added.txt'), 'utf8')).toBe('added\n');
    expect(readFileSync(join(mnt2, 'etc/motd'), 'utf8')).toBe('changed motd\n');
    expect(existsSync(join(mnt2, 'etc/gone.txt'))).toBe(false);
    expect((await sd(['umount', mnt2])).code).toBe(0);
    mounts.pop();
    const h = JSON.parse((await sd(['--json', 'history', 'store:sd-committed:1'])).stdout);
    expect(h[0].createdBy).toMatch(/^stevedore commit /);
    const l = JSON.parse((await sd(['--json', 'layers', 'sd-committed:1'])).stdout);
    expect(l.layers[2]).toMatchObject({ added: 1, changed: 1, deleted: 1 });
  });
});
