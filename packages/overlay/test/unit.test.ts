// Pieces that need neither root nor a daemon, plus the not-root mount errors and the
// fuse-overlayfs backend (checked from root: a child drops to nobody; fuse runs as root).
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultRoot, MergedView, mount, Store, shortLinkId, umount } from '../src/index.js';
import { asObject, memImage, TARS, walkTree, walkView } from './fixtures.js';

const work = mkdtempSync(path.join(tmpdir(), 'sd-overlay-unit-'));
afterAll(() => {
  spawnSync('umount', [path.join(work, 'fuse')]);
  rmSync(work, { recursive: true, force: true });
});

describe('store basics', () => {
  it('short link ids are 26 base32 characters, random', () => {
    const ids = new Set(Array.from({ length: 200 }, shortLinkId));
    expect(ids.size).toBe(200);
    for (const id of ids) expect(id).toMatch(/^[A-Z2-7]{26}$/);
  });

  it('the data root: STEVEDORE_ROOT, else /var/lib/stevedore as root, else ~/.local/share/stevedore', () => {
    const saved = process.env.STEVEDORE_ROOT;
    try {
      process.env.STEVEDORE_ROOT = '/x/y';
      expect(defaultRoot()).toBe('/x/y');
      delete process.env.STEVEDORE_ROOT;
      expect(defaultRoot()).toMatch(
        process.getuid?.() === 0 ? /^\/var\/lib\/stevedore$/ : /\.local\/share\/stevedore$/,
      );
    } finally {
      if (saved === undefined) delete process.env.STEVEDORE_ROOT;
      else process.env.STEVEDORE_ROOT = saved;
    }
  });
});

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('mount backends and errors', () => {
  it('not root and no fuse-overlayfs: ERR_MOUNT_PERMISSION (a child process as nobody)', async () => {
    const dir = path.join(work, 'nobody');
    const store = await Store.open({ root: path.join(dir, 'root') });
    await store.loadImage(memImage(TARS.slice(0, 1), { label: 'nobody' }), { tags: ['plain:1'] });
    chmodSync(work, 0o755);
    spawnSync('chown', ['-R', '65534:65534', dir]);
    const script = path.join(dir, 'm.mjs');
    writeFileSync(
      script,
      `import { Store, mount } from '${path.resolve('dist/index.js')}';
const s = await Store.open({ root: '${dir}/root' });
try { await mount(s, 'plain:1', '${dir}/mnt'); console.log('mounted?'); } catch (e) { console.log(e.code); console.log(e.message); }`,
    );
    const r = spawnSync(process.execPath, [script], {
      uid: 65534,
      gid: 65534,
      env: { ...process.env, STEVEDORE_FUSE_OVERLAYFS: '/nonexistent', HOME: dir },
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    const [code, message] = r.stdout.split('\n');
    expect(code).toBe('ERR_MOUNT_PERMISSION');
    expect(message).toMatch(/need root/);
  });

  it.runIf(existsSync('/usr/bin/fuse-overlayfs') && existsSync('/dev/fuse'))(
    'fuse-overlayfs backend: the same merged view as the userspace view',
    async () => {
      const store = await Store.open({ root: path.join(work, 'root') });
      await store.loadImage(memImage(TARS, { gzip: true, label: 'fuse' }), { tags: ['fuse:1'] });
      const target = path.join(work, 'fuse');
      const info = await mount(store, 'fuse:1', target, { backend: 'fuse-overlayfs' });
      try {
        expect(info.backend).toBe('fuse-overlayfs');
        const view = await walkView(await MergedView.open(store, 'fuse:1'));
        expect(asObject(walkTree(target))).toEqual(asObject(view));
      } finally {
        await umount(target);
      }
    },
  );
});
