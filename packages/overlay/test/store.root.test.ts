// The store on a real filesystem (root: overlay whiteouts are char 0/0 devices and trusted.*
// xattrs): Docker's overlay2 layout, sharing by chain ID, atomic and concurrent loads, staging
// cleanup, the lock, the userspace merged view, kernel mounts compared with it, unpack/export.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { listTarFile, sha256 } from '@stevedore/core';
import { chainIds, copyImage, dockerArchiveSink, ociLayoutSink } from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  exportImage,
  listMounts,
  MergedView,
  mount,
  overlayXattrs,
  Store,
  storeMounts,
  umount,
  unpack,
  withLock,
} from '../src/index.js';
import { asObject, L0, layerTar, memImage, TARS, walkTree, walkView } from './fixtures.js';

const isRoot = process.getuid?.() === 0;
const required = process.env.STEVEDORE_REQUIRE_DOCKER === '1';
it.runIf(required && !isRoot)('STEVEDORE_REQUIRE_DOCKER=1 but not root', () => {
  expect.fail('need root for overlay whiteouts and mounts');
});

const work = mkdtempSync(path.join(tmpdir(), 'sd-overlay-'));
const mounted: string[] = [];
afterAll(() => {
  for (const m of mounted.reverse()) spawnSync('umount', [m]);
  rmSync(work, { recursive: true, force: true });
});

const read = (p: string) => readFileSync(p, 'utf8');
const ls = (p: string) => readdirSync(p).sort();

describe.skipIf(!isRoot)('overlay2 store', () => {
  let store: Store;
  const img = memImage(TARS, { gzip: true, label: 'main' });
  const chains = chainIds(img.config.rootfs.diff_ids);
  const imageId = sha256(img.rawConfig);

  beforeAll(async () => {
    store = await Store.open({ root: path.join(work, 'root') });
  });

  it('lays out overlay2/, layerdb, imagedb and repositories.json as Docker does', async () => {
    const r = await store.loadImage(img, {
      tags: ['docker.io/library/fixture:1', 'localhost:5000/team/app:v2'],
      digestRefs: true,
    });
    expect(r.applied).toBe(3);
    expect(r.imageId.toString()).toBe(imageId.toString());
    expect(statSync(store.root).mode & 0o777).toBe(0o700);
    const ldb = path.join(store.root, 'image/overlay2/layerdb/sha256');
    expect(ls(ldb)).toEqual(chains.map((c) => c.hex).sort());
    const cacheIds: string[] = [];
    for (let i = 0; i < 3; i++) {
      const d = path.join(ldb, chains[i]!.hex);
      // Docker's files (tar-split.json.gz included), plus our manifest of the diff dir's
      // metadata (for fsck --verify).
      expect(ls(d)).toEqual(
        i === 0
          ? ['cache-id', 'diff', 'size', 'stevedore-diff.json.gz', 'tar-split.json.gz']
          : ['cache-id', 'diff', 'parent', 'size', 'stevedore-diff.json.gz', 'tar-split.json.gz'],
      );
      expect(read(path.join(d, 'diff'))).toBe(img.config.rootfs.diff_ids[i]!.toString());
      if (i > 0) expect(read(path.join(d, 'parent'))).toBe(chains[i - 1]!.toString());
      const cacheId = read(path.join(d, 'cache-id'));
      expect(cacheId).toMatch(/^[a-f0-9]{64}$/);
      expect(read(path.join(d, 'size'))).toMatch(/^\d+$/);
      cacheIds.push(cacheId);
      const od = path.join(store.root, 'overlay2', cacheId);
      expect(ls(od)).toEqual(i === 0 ? ['diff', 'link'] : ['diff', 'link', 'lower', 'work']);
      const link = read(path.join(od, 'link'));
      expect(link).toMatch(/^[A-Z2-7]{26}$/);
      expect(readlinkSync(path.join(store.root, 'overlay2/l', link))).toBe(`../${cacheId}/diff`);
    }
    // lower: the parents' short links, nearest first
    const links = cacheIds.map((c) => read(path.join(store.root, 'overlay2', c, 'link')));
    expect(read(path.join(store.root, 'overlay2', cacheIds[2]!, 'lower'))).toBe(`l/${links[1]}:l/${links[0]}`);
    expect(read(path.join(store.root, 'overlay2', cacheIds[1]!, 'lower'))).toBe(`l/${links[0]}`);
    // size = Docker's directory.Size of the diff dir: base has a/b/msg/old/deep/y + the symlink's 7 bytes
    expect(read(path.join(ldb, chains[0]!.hex, 'size'))).toBe(String(2 + 2 + 6 + 4 + 5 + 2 + 7));
    // imagedb
    const cfg = readFileSync(path.join(store.root, 'image/overlay2/imagedb/content/sha256', imageId.hex));
    expect(Buffer.compare(cfg, Buffer.from(img.rawConfig))).toBe(0);
    expect(
      existsSync(path.join(store.root, 'image/overlay2/imagedb/metadata/sha256', imageId.hex, 'lastUpdated')),
    ).toBe(true);
    // repositories.json, familiar names
    expect(JSON.parse(read(path.join(store.root, 'image/overlay2/repositories.json')))).toEqual({
      Repositories: {
        fixture: { 'fixture:1': imageId.toString(), [`fixture@${img.digest}`]: imageId.toString() },
        'localhost:5000/team/app': {
          'localhost:5000/team/app:v2': imageId.toString(),
          [`localhost:5000/team/app@${img.digest}`]: imageId.toString(),
        },
      },
    });
    // content store: the original compressed blobs, the manifest and the config by digest
    for (const l of img.layers) expect(sha256(readFileSync(store.blobPath(l.digest))).equals(l.digest)).toBe(true);
    expect(Buffer.compare(readFileSync(store.blobPath(img.digest)), Buffer.from(img.rawManifest))).toBe(0);
    expect((await store.image('fixture:1')).manifestDigest?.toString()).toBe(img.digest.toString());
    // overlay whiteouts in the diff dirs: char 0/0 and the opaque xattr
    const d1 = path.join(store.root, 'overlay2', cacheIds[1]!, 'diff');
    const wh = lstatSync(path.join(d1, 'etc/a.txt'));
    expect(wh.isCharacterDevice() && wh.rdev === 0).toBe(true);
    expect(existsSync(path.join(d1, 'opq/.wh..wh..opq'))).toBe(false);
    const x = await overlayXattrs(d1);
    expect(x.get('opq')?.map(([k, v]) => [k, Buffer.from(v).toString()])).toEqual([['trusted.overlay.opaque', 'y']]);
  });

  it('shares layers by chain ID and re-tags without re-applying', async () => {
    const other = memImage([TARS[0]!, TARS[1]!, layerTar({ 'other.txt': 'o\n' })], { gzip: true, label: 'other' });
    const r = await store.loadImage(other, { tags: ['other:1'] });
    expect(r.applied).toBe(1);
    expect(r.chainIds.slice(0, 2).map(String)).toEqual(chains.slice(0, 2).map(String));
    // the new top layer's lower: the stored parents' short links, nearest first
    const dirOf = async (chain: (typeof chains)[number]) => (await store.layer(chain))!.dir;
    const linkOf = async (chain: (typeof chains)[number]) => read(path.join(await dirOf(chain), 'link'));
    expect(read(path.join(await dirOf(r.chainIds[2]!), 'lower'))).toBe(
      `l/${await linkOf(chains[1]!)}:l/${await linkOf(chains[0]!)}`,
    );
    const again = await store.loadImage(img, { tags: ['fixture:again'] });
    expect(again.applied).toBe(0);
    expect(readdirSync(path.join(store.root, 'overlay2')).length).toBe(4 + 1); // 4 layers + l
    expect((await store.image('fixture:again')).id.toString()).toBe(imageId.toString());
  });

  it('4 parallel loads of the same image all succeed and store one copy', async () => {
    const s = await Store.open({ root: path.join(work, 'par') });
    const i2 = memImage(TARS, { gzip: true, label: 'par' });
    const rs = await Promise.all([1, 2, 3, 4].map((n) => s.loadImage(i2, { tags: [`par:${n}`] })));
    expect(rs.reduce((a, r) => a + r.applied, 0)).toBe(3);
    expect(new Set(rs.map((r) => r.imageId.toString())).size).toBe(1);
    expect(ls(path.join(s.root, 'overlay2')).length).toBe(4);
    expect(ls(path.join(s.root, 'overlay2/l')).length).toBe(3);
    expect(ls(path.join(s.root, 'image/overlay2/layerdb/sha256')).length).toBe(3);
    expect(ls(s.tmpDir)).toEqual([]);
    expect(Object.keys((await s.readRepositories()).Repositories.par!).sort()).toEqual([
      'par:1',
      'par:2',
      'par:3',
      'par:4',
    ]);
  });

  it('parallel loads from separate processes store one copy too', async () => {
    const root = path.join(work, 'procs');
    const layout = path.join(work, 'procs-layout');
    await copyImage(memImage(TARS, { gzip: true, label: 'procs' }), ociLayoutSink(layout), { tags: ['p'] });
    const script = `import { Store } from '${path.resolve('dist/index.js')}';
const s = await Store.open({ root: ${JSON.stringify(root)} });
const r = await s.loadOciLayout(${JSON.stringify(layout)}, 'p', { tags: ['procs:' + process.argv[2]] });
process.stdout.write(String(r.applied));`; // not console.log: nx sets FORCE_COLOR
    const file = path.join(work, 'load.mjs');
    writeFileSync(file, script);
    const procs = await Promise.all(
      [1, 2, 3, 4].map(
        (n) =>
          new Promise<string>((res, rej) => {
            execFile(process.execPath, [file, String(n)], (e: Error | null, out: string, err: string) =>
              e ? rej(new Error(`${e.message}\n${err}`)) : res(out.trim()),
            );
          }),
      ),
    );
    // Each process prints how many layers it applied; together exactly the 3 layers.
    expect(
      procs.every((o) => /^\d+$/.test(o)),
      JSON.stringify(procs),
    ).toBe(true);
    expect(procs.map(Number).reduce((a, b) => a + b, 0)).toBe(3);
    expect(ls(path.join(root, 'image/overlay2/layerdb/sha256')).length).toBe(3);
    expect(ls(path.join(root, 'overlay2')).length).toBe(4);
  });

  it('an interrupted or failing load leaves nothing visible; staging of dead pids is cleaned', async () => {
    const s = await Store.open({ root: path.join(work, 'atomic') });
    const broken = memImage(TARS, { gzip: true, label: 'broken', fail: 2 });
    await expect(s.loadImage(broken, { tags: ['broken:1'] })).rejects.toThrow(/connection dropped/);
    expect(ls(path.join(s.root, 'image/overlay2/layerdb/sha256'))).toEqual([]);
    expect(ls(path.join(s.root, 'image/overlay2/imagedb/content/sha256'))).toEqual([]);
    expect(ls(path.join(s.root, 'overlay2'))).toEqual(['l']);
    expect(ls(s.tmpDir)).toEqual([]);
    expect(existsSync(path.join(s.root, 'image/overlay2/repositories.json'))).toBe(false);
    // a wrong digest never lands in the content store
    const bad = memImage(TARS, { gzip: true, label: 'bad' });
    const l0 = bad.layers[0]!;
    (bad.layers as unknown[])[0] = {
      ...l0,
      digest: sha256(new Uint8Array([1])),
      compressed: l0.compressed,
      uncompressed: l0.uncompressed,
    };
    await expect(s.loadImage(bad)).rejects.toThrow(/mismatch/i);
    expect(ls(s.blobDir).filter((h) => h === sha256(new Uint8Array([1])).hex)).toEqual([]);
    // a crashed loader: its staging (named by its pid) is removed by the next open
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    mkdirSync(path.join(s.tmpDir, `${dead}-cafe`, 'diff'), { recursive: true });
    writeFileSync(path.join(s.root, 'content/ingest', `${dead}-beef`), 'partial');
    const s2 = await Store.open({ root: s.root });
    expect(ls(s2.tmpDir)).toEqual([]);
    expect(ls(path.join(s.root, 'content/ingest'))).toEqual([]);
    // resumable: the next load completes
    expect(
      (await s2.loadImage(memImage(TARS, { gzip: true, label: 'broken', fail: -1 }), { tags: ['broken:1'] })).applied,
    ).toBe(3);
  });

  it('the lock recovers from a dead owner and waits for a live one', async () => {
    const lock = path.join(work, 'test.lock');
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    writeFileSync(lock, `${dead}\n`);
    expect(await withLock(lock, async () => read(lock).trim())).toBe(String(process.pid));
    expect(existsSync(lock)).toBe(false);
    writeFileSync(lock, '1\n'); // init: alive
    await expect(withLock(lock, async () => 0, 200)).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    unlinkSync(lock);
    let inside = 0;
    let max = 0;
    await Promise.all(
      [1, 2, 3].map(() =>
        withLock(lock, async () => {
          max = Math.max(max, ++inside);
          await new Promise((r) => setTimeout(r, 20));
          inside--;
        }),
      ),
    );
    expect(max).toBe(1);
  });

  it('userspace merged view: whiteouts, opaque dirs, upper wins, bytes from the providing layer', async () => {
    const v = await MergedView.open(store, 'fixture:1', { hash: true });
    expect(v.readdir('')).toEqual(['app', 'data', 'etc', 'link', 'opq', 'tree']);
    expect(v.readdir('etc')).toEqual(['b.txt', 'c.txt']);
    expect(v.resolve('etc/a.txt').kind).toBe('whiteout');
    expect(v.readdir('opq')).toEqual(['new']);
    expect((await v.readFile('app/msg')).toString()).toBe('hello again\n');
    expect((await v.readFile('link')).toString()).toBe('hello again\n');
    expect(v.stat('etc/b.txt').layer).toBe(2);
    expect(v.lstat('link').entry.type).toBe('symlink');
  });

  it('kernel overlay mount (read-only, relative short links from overlay2/) equals the userspace view', async () => {
    const target = path.join(work, 'mnt-ro');
    const info = await mount(store, 'fixture:1', target);
    mounted.push(target);
    expect(info.backend).toBe('overlay');
    expect(info.lowerdir).toMatch(/^l\/[A-Z2-7]{26}:l\/[A-Z2-7]{26}:l\/[A-Z2-7]{26}$/);
    expect(info.mountOptions).not.toContain(store.root);
    const active = storeMounts(store);
    expect(active.map((m) => m.target)).toContain(target);
    const kernel = walkTree(target);
    const view = await walkView(await MergedView.open(store, 'fixture:1'));
    expect(asObject(view)).toEqual(asObject(kernel));
    expect(() => writeFileSync(path.join(target, 'x'), 'x')).toThrow(/EROFS/);
    // unpack (apply mode from the content store) and export give the same tree
    const flat = path.join(work, 'flat');
    await unpack(store, 'fixture:1', flat);
    expect(asObject(walkTree(flat))).toEqual(asObject(kernel));
    const tar = path.join(work, 'export.tar');
    const ex = await exportImage(store, 'fixture:1', tar);
    const names = (await listTarFile(tar))
      .map((e) => e.path.replace(/^\.\//, '').replace(/\/$/, ''))
      .filter(Boolean)
      .sort();
    expect(names).toEqual([...kernel.keys()].sort());
    expect(ex.diffId).toMatch(/^sha256:/);
    await umount(target);
    mounted.pop();
    expect(listMounts().some((m) => m.target === target)).toBe(false);
  });

  it('a writable mount: copy-up, whiteouts and opaque dirs in the container layer; lower dir rename', async () => {
    const target = path.join(work, 'mnt-rw');
    const info = await mount(store, 'fixture:1', target, { writable: true });
    mounted.push(target);
    const upper = info.upperDir!;
    expect(ls(path.dirname(upper))).toEqual(['diff', 'link', 'lower', 'work']);
    expect(info.lowerdir.split(':')).toHaveLength(3);
    // write a lower file: copied up whole
    writeFileSync(path.join(target, 'etc/b.txt'), 'changed\n', { flag: 'a' });
    expect(read(path.join(upper, 'etc/b.txt'))).toBe('b2\nchanged\n');
    // rm a lower file: char 0/0 in the upper dir
    unlinkSync(path.join(target, 'etc/c.txt'));
    const wh = lstatSync(path.join(upper, 'etc/c.txt'));
    expect(wh.isCharacterDevice() && wh.rdev === 0).toBe(true);
    // rm -r a lower dir then mkdir it again: an opaque dir
    rmSync(path.join(target, 'tree'), { recursive: true });
    mkdirSync(path.join(target, 'tree'));
    expect((await overlayXattrs(upper)).get('tree')?.[0]?.[0]).toBe('trusted.overlay.opaque');
    // rename a lower dir: with redirect_dir=off the kernel refuses with EXDEV
    let renameResult = 'ok';
    try {
      renameSync(path.join(target, 'app'), path.join(target, 'app2'));
    } catch (e) {
      renameResult = (e as NodeJS.ErrnoException).code ?? 'error';
    }
    console.log(
      `rename of a lower dir on a writable mount (${info.mountOptions.split(',lowerdir')[0]}): ${renameResult}`,
    );
    expect(renameResult).toBe(info.mountOptions.includes('redirect_dir=off') ? 'EXDEV' : renameResult);
    // the userspace view with the upper on top equals the kernel's merged view
    const view = await walkView(await MergedView.open(store, 'fixture:1', { upperDir: upper }));
    expect(asObject(view)).toEqual(asObject(walkTree(target)));
    await umount(target);
    mounted.pop();
  });

  it('120 layers mount in one page of options (relative short links)', async () => {
    const s = await Store.open({ root: path.join(work, 'many') });
    const tars = Array.from({ length: 120 }, (_, i) => layerTar({ [`f${i}`]: `${i}\n`, top: `${i}\n` }));
    const r = await s.loadImage(memImage(tars, { gzip: true, label: 'many' }), { tags: ['many:1'] });
    expect(r.applied).toBe(120);
    const target = path.join(work, 'mnt-many');
    const info = await mount(s, 'many:1', target, { writable: true });
    mounted.push(target);
    expect(info.lowerdir.split(':')).toHaveLength(120);
    expect(info.mountOptions.length).toBeLessThan(4096);
    expect(readdirSync(target)).toHaveLength(121);
    expect(read(path.join(target, 'top'))).toBe('119\n');
    await umount(target);
    mounted.pop();
  });

  it('loads docker-archives and OCI layouts', async () => {
    const s = await Store.open({ root: path.join(work, 'archives') });
    const i3 = memImage([layerTar(L0)], { label: 'arch' });
    const arc = path.join(work, 'img.tar');
    const sink = dockerArchiveSink(arc);
    await copyImage(i3, sink, { tags: ['arch:1'] });
    await sink.close();
    const [r] = await s.loadDockerArchive(arc);
    expect(r!.imageId.toString()).toBe(sha256(i3.rawConfig).toString());
    expect(r!.refs).toEqual(['arch:1']);
    const dir = path.join(work, 'oci');
    await copyImage(memImage(TARS, { gzip: true, label: 'oci' }), ociLayoutSink(dir), { tags: ['v'] });
    const r2 = await s.loadOciLayout(dir, 'v', { tags: ['oci:v'] });
    expect(r2.applied).toBe(3 - 1 + 0); // base layer shared with the archive image
    // a one-layer image mounts as a read-only bind
    const target = path.join(work, 'mnt-one');
    const info = await mount(s, 'arch:1', target);
    mounted.push(target);
    expect(info.backend).toBe('bind');
    expect(read(path.join(target, 'app/msg'))).toBe('hello\n');
    await umount(target);
    mounted.pop();
    execFileSync('true');
  });
});
