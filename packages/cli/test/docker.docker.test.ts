// `stevedore docker …` as a subprocess against a real dockerd's data root (overlay2): ls,
// inspect, mount/umount, unpack, import (with --json), and the errors: not a data root, another
// storage driver, unknown image, ambiguous id prefix, usage mistakes.
// Skips when not root or dockerd is missing, unless STEVEDORE_REQUIRE_DOCKER=1 (then it fails).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { buildScratchImage, type Dockerd, startDockerd } from '../../../test/harness/index.js';
import { stevedore } from './fixtures.js';

const { canRun } = useRealComponents();

interface Inspect {
  Id: string;
  RepoTags: string[];
  RootFS: { Layers: string[] };
}

/** A data root by code: image configs (no layers) whose ids share a first hex digit. */
function fakeRootWithTwins(dir: string): string {
  const content = join(dir, 'image', 'overlay2', 'imagedb', 'content', 'sha256');
  mkdirSync(content, { recursive: true });
  mkdirSync(join(dir, 'overlay2'));
  const byFirst = new Map<string, string>();
  for (let i = 0; ; i++) {
    const raw = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, n: i });
    const hex = createHash('sha256').update(raw).digest('hex');
    writeFileSync(join(content, hex), raw);
    if (byFirst.has(hex[0]!)) return hex[0]!;
    byFirst.set(hex[0]!, hex);
  }
}

describe.skipIf(!canRun)('stevedore docker (a real data root)', () => {
  let d: Dockerd;
  const work = mkdtempSync(join(tmpdir(), 'sd-cli-docker-'));
  const store = join(work, 'store');
  const sd = (args: string[]) => stevedore(['--root', store, 'docker', '--data-root', d.dataRoot, ...args]);
  let img: Inspect;

  beforeAll(async () => {
    d = await startDockerd();
    await buildScratchImage(d, 'cli/app:1', { 'etc/motd': 'hello\n', 'msg.txt': 'from docker\n', 'etc/motd2': 'x\n' });
    await d.docker(['tag', 'cli/app:1', 'cli/app:extra']);
    img = (JSON.parse((await d.docker(['image', 'inspect', 'cli/app:1'])).stdout) as Inspect[])[0]!;
  }, 240_000);
  afterAll(async () => {
    await d?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('ls: a table, and --json with ids and tags as docker has them', async () => {
    const t = await sd(['ls']);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE/);
    expect(t.stdout).toMatch(new RegExp(`cli/app\\s+1\\s+${img.Id.slice(7, 19)}`));
    expect(t.stdout).toMatch(/cli\/app\s+extra/);
    const j = await stevedore(['--json', 'docker', 'ls', '--data-root', d.dataRoot]);
    expect(j.code, j.stderr).toBe(0);
    const rows = JSON.parse(j.stdout) as { Id: string; RepoTags: string[]; Size: number }[];
    expect(rows).toEqual([expect.objectContaining({ Id: img.Id, RepoTags: ['cli/app:1', 'cli/app:extra'] })]);
  });

  it('inspect --json: the config, diff_ids and where each layer lives', async () => {
    const r = await sd(['inspect', '--json', img.Id.slice(7, 19)]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as { Id: string; RootFS: { Layers: string[] }; Layers: { DiffDir: string }[] };
    expect(info.Id).toBe(img.Id);
    expect(info.RootFS.Layers).toEqual(img.RootFS.Layers);
    expect(info.Layers).toHaveLength(3);
    for (const l of info.Layers) expect(l.DiffDir.startsWith(join(d.dataRoot, 'overlay2'))).toBe(true);
  });

  it('mount shows the files, umount removes it; a second umount says it is not mounted', async () => {
    const mnt = join(work, 'mnt');
    const m = await sd(['--json', 'mount', 'cli/app:1', mnt]);
    expect(m.code, m.stderr).toBe(0);
    try {
      expect(JSON.parse(m.stdout)).toMatchObject({ target: mnt, backend: 'overlay' });
      expect(readFileSync(join(mnt, 'msg.txt'), 'utf8')).toBe('from docker\n');
    } finally {
      const u = await sd(['umount', mnt]);
      expect(u.code, u.stderr).toBe(0);
    }
    expect(existsSync(join(mnt, 'msg.txt'))).toBe(false);
    const again = await sd(['umount', mnt]);
    expect([again.code, again.stderr]).toEqual([1, expect.stringContaining('is not mounted')]);
  });

  it('unpack into a new directory; a non-empty one is refused', async () => {
    const dir = join(work, 'rootfs');
    const r = await sd(['--json', 'unpack', 'cli/app:extra', dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ id: img.Id, directory: dir });
    expect(readFileSync(join(dir, 'etc/motd'), 'utf8')).toBe('hello\n');
    const again = await sd(['unpack', 'cli/app:1', dir]);
    expect([again.code, again.stderr]).toEqual([1, expect.stringContaining('is not empty')]);
  });

  it("import keeps docker's image id; the store lists it under the new name", async () => {
    const r = await sd(['--json', 'import', 'cli/app:1', 'imported/app:2']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { id: string; dockerId: string; tags: string[] };
    expect(out).toMatchObject({ id: img.Id, dockerId: img.Id, tags: ['imported/app:2'] });
    const ls = await stevedore(['--root', store, '--json', 'images']);
    const rows = JSON.parse(ls.stdout) as { Repository: string; Tag: string; Id: string }[];
    expect(rows).toContainEqual(expect.objectContaining({ Repository: 'imported/app', Tag: '2', Id: img.Id }));
    const bad = await sd(['import', 'cli/app:1', 'Not A Name']);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('invalid reference')]);
  });

  it('errors: unknown image, not a data root, another driver, ambiguous prefix, missing arguments', async () => {
    const unknown = await sd(['inspect', 'cli/app:nope']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no such image');
    expect(unknown.stderr).toContain('stevedore docker --data-root');
    const notRoot = await stevedore(['docker', '--data-root', work, 'ls']);
    expect([notRoot.code, notRoot.stderr]).toEqual([1, expect.stringContaining('is not a Docker data root')]);
    const vfs = join(work, 'vfs-root');
    mkdirSync(join(vfs, 'image', 'vfs'), { recursive: true });
    const driver = await stevedore(['docker', '--data-root', vfs, 'ls']);
    expect([driver.code, driver.stderr]).toEqual([1, expect.stringContaining('vfs storage driver: only overlay2')]);
    const fake = join(work, 'fake-root');
    const prefix = fakeRootWithTwins(fake);
    const amb = await stevedore(['docker', '--data-root', fake, 'inspect', prefix]);
    expect([amb.code, amb.stderr]).toEqual([1, expect.stringContaining('is ambiguous')]);
    const missing = await sd(['mount', 'cli/app:1']);
    expect([missing.code, missing.stderr]).toEqual([2, expect.stringContaining("missing required argument 'target'")]);
    const none = await stevedore(['docker']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('stevedore docker [options] [command]');
  });
});
