// Pieces that need neither root nor a daemon, plus the not-root mount errors and the
// fuse-overlayfs backend (checked from root: children drop to nobody, one with a store of its own).
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLayer, listTarFile } from '@stevedore/core';
import { copyImage, ociLayoutSink } from '@stevedore/image';
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

  // fuse-overlayfs needs /dev/fuse usable by an unprivileged user and fusermount setuid.
  const fuseForUsers =
    existsSync('/usr/bin/fuse-overlayfs') &&
    existsSync('/dev/fuse') &&
    spawnSync(
      'sh',
      ['-c', 'test -r /dev/fuse && test -w /dev/fuse && test -u "$(command -v fusermount3 || command -v fusermount)"'],
      {
        uid: 65534,
        gid: 65534,
      },
    ).status === 0;
  it.runIf(fuseForUsers)(
    'as user nobody with its own store: unprivileged load, fuse-overlayfs read-only merged view, writable mount records changes',
    async () => {
      const dir = path.join(work, 'fuse-nobody');
      mkdirSync(dir, { recursive: true });
      chmodSync(work, 0o755);
      const layout = path.join(dir, 'layout');
      await copyImage(memImage(TARS, { gzip: true, label: 'fuse-nobody' }), ociLayoutSink(layout), { tags: ['v'] });
      const script = path.join(dir, 'f.mjs');
      writeFileSync(
        script,
        `import { createHash } from 'node:crypto';
import { appendFileSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Store, mount, umount, walkDiff } from '${path.resolve('dist/index.js')}';
const walk = (root) => {
  const out = {};
  const visit = (rel) => {
    for (const name of readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? rel + '/' + name : name;
      const abs = path.join(root, r);
      const st = lstatSync(abs);
      const type = st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isFile() ? 'file' : 'other';
      out[r] = { type, mode: st.mode & 0o7777, size: type === 'file' ? st.size : 0, link: type === 'symlink' ? readlinkSync(abs) : '',
        sha: type === 'file' ? createHash('sha256').update(readFileSync(abs)).digest('hex') : '' };
      if (type === 'directory') visit(r);
    }
  };
  visit('');
  return out;
};
const s = await Store.open({ root: '${dir}/root' });
await s.loadOciLayout('${layout}', 'v', { tags: ['fz:1'] });
const ro = await mount(s, 'fz:1', '${dir}/ro');
const roTree = walk('${dir}/ro');
await umount('${dir}/ro');
const rw = await mount(s, 'fz:1', '${dir}/rw', { writable: true });
writeFileSync('${dir}/rw/new.txt', 'new\\n');
appendFileSync('${dir}/rw/etc/b.txt', 'more\\n');
unlinkSync('${dir}/rw/etc/c.txt');
const upper = (await walkDiff(rw.upperDir)).entries.map((e) => [e.path, e.type, e.rdev ?? '', e.sha256 ? readFileSync(path.join(rw.upperDir, e.path), 'utf8') : '']);
// rm -rf + recreate: fuse-overlayfs makes the directory opaque its own way
rmSync('${dir}/rw/etc', { recursive: true });
mkdirSync('${dir}/rw/etc');
writeFileSync('${dir}/rw/etc/fresh', 'f\\n');
await umount('${dir}/rw');
process.stdout.write(JSON.stringify({ uid: process.getuid(), backends: [ro.backend, rw.backend], roTree, upper, upperDir: rw.upperDir }));`,
      );
      spawnSync('chown', ['-R', '65534:65534', dir]);
      const r = spawnSync(process.execPath, [script], {
        uid: 65534,
        gid: 65534,
        env: { ...process.env, HOME: dir },
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
      const got = JSON.parse(r.stdout);
      expect(got.uid).toBe(65534);
      expect(got.backends).toEqual(['fuse-overlayfs', 'fuse-overlayfs']);
      // the unprivileged store marks opaque dirs with user.overlay.opaque, which fuse-overlayfs honours
      const store = await Store.open({ root: path.join(dir, 'root') });
      expect(got.roTree).toEqual(asObject(await walkView(await MergedView.open(store, 'fz:1'))));
      expect(got.roTree['opq/new']).toBeDefined();
      expect(got.roTree['opq/old']).toBeUndefined();
      expect(got.upper).toEqual([
        ['etc', 'directory', '', ''],
        ['etc/b.txt', 'file', '', 'b2\nmore\n'],
        ['etc/c.txt', 'char', '0:0', ''],
        ['new.txt', 'file', '', 'new\n'],
      ]);
      // The upper dir after `rm -rf etc; mkdir etc` through fuse-overlayfs (its own opaque xattr
      // and `.wh..opq`/`.wh..wh..opq` files) becomes a layer with one OCI opaque marker.
      const layerFile = path.join(dir, 'upper.tar');
      await createLayer(got.upperDir, layerFile, { mode: 'overlay-diff', xattrNamespace: 'user', compression: 'none' });
      const paths = (await listTarFile(layerFile)).map((e) => e.path);
      expect(paths.filter((p) => p.startsWith('etc'))).toEqual(['etc/', 'etc/.wh..wh..opq', 'etc/fresh']);
    },
  );
});
