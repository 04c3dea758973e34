// Our overlay-diff layer from a real container's upper dir against what dockerd itself makes of
// the same container: `docker diff` (A/C/D), `docker commit` (the committed top layer, entry for
// entry: path, type, link target, content sha256) and `docker export` (the base image flattened
// with applyLayer 'apply' plus our layer must give the container's filesystem). Skips when not
// root or dockerd is missing, unless STEVEDORE_REQUIRE_DOCKER=1, which turns the skip into a
// failure.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import path from 'node:path';
import { applyLayer, createLayer, listTar, type TarListing } from '@stevedore/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from './harness/guard.js';
import { buildScratchImage, type Dockerd, startDockerd, tmpBase } from './harness/index.js';

const { canRun } = useRealComponents({ registry: false });

const IMAGE = 'sd-commit-base:1';
const COMMITTED = 'sd-commit-img2:1';
const C = 'sd-commit-c';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
/** `./a/b/` → `a/b`; the root itself is ''. */
const norm = (p: string) =>
  p
    .replace(/^\.?\/+/, '')
    .replace(/^\.$/, '')
    .replace(/\/+$/, '');

/** Files of the base image; each is its own COPY layer (busybox is the first). */
const BASE: Record<string, string> = {
  'data/modify.txt': 'original\n',
  'data/keep.txt': 'untouched\n',
  'data/delete.txt': 'to be deleted\n',
  'deldir/a': 'a\n',
  'deldir/sub/b': 'b\n',
  f2d: 'file that becomes a dir\n',
  'd2f/x': 'dir that becomes a file\n',
  'd2l/y': 'dir that becomes a symlink\n',
  'opq/old1': 'replaced wholesale\n',
  'opq/sub/old2': 'replaced wholesale\n',
  'meta/chmod.sh': '#!/bin/sh\n',
};

/** What the container does (busybox applets called explicitly: the image has no /bin/sh). */
const SCRIPT = [
  'set -e',
  'B=/bin/busybox',
  'echo changed >> /data/modify.txt',
  '$B rm /data/delete.txt',
  '$B rm -rf /deldir',
  '$B rm /f2d && $B mkdir /f2d && echo inside > /f2d/inner',
  '$B rm -rf /d2f && echo now-a-file > /d2f',
  '$B rm -rf /d2l && $B ln -s /data/keep.txt /d2l',
  '$B rm -rf /opq && $B mkdir /opq && $B touch /opq/new',
  '$B mkdir -p /new/deep/er && echo linked > /new/deep/h1 && $B ln /new/deep/h1 /new/deep/er/h2',
  '$B ln /new/deep/h1 /data/h3',
  '$B chmod 755 /meta/chmod.sh',
  '$B mkfifo /new/fifo',
  'echo empty-dir-kept > /new/z && $B mkdir /new/emptydir',
].join('\n');

interface Node {
  type: string;
  link?: string;
  sha?: string;
}

/** path → type / link target / sha256 of a tar listing (hardlinks keep their target). */
function fromListing(entries: TarListing[], data?: (e: TarListing) => string | undefined): Map<string, Node> {
  const out = new Map<string, Node>();
  for (const e of entries) {
    const p = norm(e.path);
    if (p === '') continue;
    const n: Node = { type: e.type };
    if (e.type === 'symlink') n.link = e.linkName;
    if (e.type === 'hardlink') n.link = norm(e.linkName);
    if (e.type === 'file') n.sha = data ? data(e) : e.digest?.replace(/^sha256:/, '');
    expect(out.has(p), `duplicate entry ${p}`).toBe(false);
    out.set(p, n);
  }
  return out;
}

/** A directory tree: path → type / link target / sha256, plus inode groups for hardlinks. */
function walk(root: string): { nodes: Map<string, Node>; inodes: Map<string, string[]> } {
  const nodes = new Map<string, Node>();
  const byIno = new Map<number, string[]>();
  const visit = (rel: string) => {
    for (const name of readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const full = path.join(root, r);
      const st = lstatSync(full);
      if (st.isDirectory()) {
        nodes.set(r, { type: 'directory' });
        visit(r);
      } else if (st.isSymbolicLink()) nodes.set(r, { type: 'symlink', link: readlinkSync(full) });
      else if (st.isFile()) {
        nodes.set(r, { type: 'file', sha: sha256(readFileSync(full)) });
        if (st.nlink > 1) byIno.set(st.ino, [...(byIno.get(st.ino) ?? []), r]);
      } else if (st.isFIFO()) nodes.set(r, { type: 'fifo' });
      else if (st.isCharacterDevice()) nodes.set(r, { type: 'char' });
      else nodes.set(r, { type: 'other' });
    }
  };
  visit('');
  const inodes = new Map<string, string[]>();
  for (const group of byIno.values()) for (const p of group) inodes.set(p, group);
  return { nodes, inodes };
}

const sorted = <T>(m: Map<string, T>) => Object.fromEntries([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

describe.skipIf(!canRun)('overlay-diff layer from a container upper dir vs docker diff/commit/export', () => {
  let d: Dockerd;
  const work = mkdtempSync(path.join(tmpBase, 'sd-commit-it-'));
  const ourLayer = path.join(work, 'ours.tar');
  let ours: TarListing[] = [];
  let oursBytes: Uint8Array;
  let diff: { kind: string; path: string }[] = [];

  beforeAll(async () => {
    d = await startDockerd();
    try {
      await buildScratchImage(d, IMAGE, BASE, '', { busybox: true });
      await d.docker(['rm', '-f', C], { allowFailure: true });
      await d.docker(['run', '--network', 'none', '--name', C, IMAGE, '/bin/busybox', 'sh', '-c', SCRIPT]);
      const { stdout: upper } = await d.docker(['inspect', '-f', '{{.GraphDriver.Data.UpperDir}}', C]);
      expect(upper.trim().startsWith(d.dataRoot)).toBe(true);
      await createLayer(upper.trim(), ourLayer, { mode: 'overlay-diff', compression: 'none' });
      oursBytes = new Uint8Array(readFileSync(ourLayer));
      ours = listTar(oursBytes, { hash: 'sha256' });
      const { stdout: diffOut } = await d.docker(['diff', C]);
      diff = diffOut
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => ({ kind: l.slice(0, 1), path: norm(l.slice(2)) }));
    } catch (e) {
      await d?.docker(['rm', '-f', C], { allowFailure: true });
      throw e;
    }
  }, 120_000);

  afterAll(async () => {
    try {
      await d?.docker(['rm', '-f', C], { allowFailure: true });
    } finally {
      await d?.stop();
      rmSync(work, { recursive: true, force: true });
    }
  }, 60_000);

  it('has the whiteouts and opaque markers overlay left, and covers every path `docker diff` reports', () => {
    const paths = new Set(ours.map((e) => norm(e.path)));
    // The overlay rules, spelled out for this script.
    for (const p of [
      'data/.wh.delete.txt',
      'deldir',
      'opq/.wh..wh..opq',
      'opq/new',
      'f2d/inner',
      'd2f',
      'd2l',
      'new/deep/er/h2',
      'data/modify.txt',
      'meta/chmod.sh',
      'new/fifo',
      'new/emptydir',
    ]) {
      expect(paths, p).toContain(p === 'deldir' ? '.wh.deldir' : p);
    }
    // A dir deleted in the container is one whiteout, nothing below it.
    expect([...paths].filter((p) => p.startsWith('deldir'))).toEqual([]);
    // A file replaced by a dir: overlay marks the new dir opaque; a dir replaced by a file or
    // symlink needs no marker (the upper entry hides the lower dir).
    expect(paths).toContain('f2d/.wh..wh..opq');
    expect(ours.find((e) => norm(e.path) === 'd2l')).toMatchObject({ type: 'symlink', linkName: '/data/keep.txt' });
    expect(ours.find((e) => norm(e.path) === 'd2f')?.type).toBe('file');
    // Hardlinks: the first path is the file, the others link to it.
    const h = ours.filter((e) => ['new/deep/h1', 'new/deep/er/h2', 'data/h3'].includes(norm(e.path)));
    expect(h.map((e) => e.type).sort()).toEqual(['file', 'hardlink', 'hardlink']);

    const opaque = [...paths]
      .filter((p) => p.endsWith('/.wh..wh..opq'))
      .map((p) => p.slice(0, -'/.wh..wh..opq'.length));
    const whiteouts = [...paths].filter(
      (p) => path.posix.basename(p).startsWith('.wh.') && !p.endsWith('.wh..wh..opq'),
    );
    const deleted = whiteouts.map((p) => path.posix.join(path.posix.dirname(p), path.posix.basename(p).slice(4)));
    const under = (p: string, dirs: string[]) => dirs.some((dir) => p.startsWith(`${dir}/`));

    expect(diff.length).toBeGreaterThan(10);
    for (const { kind, path: p } of diff) {
      if (kind === 'A' || kind === 'C') {
        const hit = paths.has(p) || [...paths].some((q) => q.startsWith(`${p}/`));
        expect(hit, `${kind} ${p} has no entry at or below it`).toBe(true);
      } else {
        expect(kind).toBe('D');
        const hit = deleted.includes(p) || under(p, opaque) || under(p, deleted);
        expect(hit, `D ${p} has no whiteout, opaque dir or deleted parent`).toBe(true);
      }
    }
    // And the other way round: every entry is something docker diff reports (or a parent of it).
    const reported = new Set(diff.map((x) => x.path));
    for (const p of paths) {
      if (p.endsWith('/.wh..wh..opq')) {
        expect(reported, p).toContain(p.slice(0, -'/.wh..wh..opq'.length));
        continue;
      }
      const base = path.posix.basename(p);
      const real = base.startsWith('.wh.') ? path.posix.join(path.posix.dirname(p), base.slice(4)) : p;
      expect(reported, `entry ${p} not in docker diff`).toContain(real);
    }
  });

  it('equals the top layer of `docker commit`: paths, types, link targets, modes, owners, content', async () => {
    await d.docker(['commit', C, COMMITTED]);
    const saveDir = path.join(work, 'save-commit');
    mkdirSync(saveDir);
    const archive = path.join(work, 'commit.tar');
    await d.docker(['save', '-o', archive, COMMITTED]);
    execFileSync('tar', ['-xf', archive, '-C', saveDir]);
    const manifest = JSON.parse(readFileSync(path.join(saveDir, 'manifest.json'), 'utf8')) as { Layers: string[] }[];
    const top = manifest[0]!.Layers.at(-1)!;
    const theirs = listTar(new Uint8Array(readFileSync(path.join(saveDir, top))), { hash: 'sha256' });

    const a = fromListing(ours);
    const b = fromListing(theirs);
    expect(sorted(a)).toEqual(sorted(b));
    // Beyond the shape: the metadata must agree too, markers included (`.wh.x`: mode 0600 with
    // the 0/0 device's owner and mtime; `.wh..wh..opq`: the dir's owner and permission bits,
    // mtime 0 — what moby's overlay whiteout converter writes). One documented difference:
    // docker's tar (Go archive/tar via FileInfoHeader) puts the file-type bits into the mode
    // field (0o100644, 0o40755, 0o10644 for a fifo) and listTar passes the header value through
    // as is, so compare permission bits only; ours writes permission bits only.
    for (const e of ours) expect(e.mode & ~0o7777, e.path).toBe(0);
    const isMarker = (p: string) => path.posix.basename(p).startsWith('.wh.');
    const meta = (l: TarListing[], markers: boolean) =>
      Object.fromEntries(
        l
          .filter((e) => isMarker(norm(e.path)) === markers)
          .map((e) => [norm(e.path), { mode: e.mode & 0o7777, uid: e.uid, gid: e.gid, size: e.size, mtime: e.mtime }]),
      );
    expect(meta(ours, false)).toEqual(meta(theirs, false));
    expect(Object.keys(meta(ours, true)).length).toBeGreaterThan(2);
    expect(meta(ours, true)).toEqual(meta(theirs, true));
    // The diff_ids still differ: docker's tar framing (type bits in the mode field, USTAR vs
    // PAX choices of Go's archive/tar) is not ours; the entries are the same.
  });

  it('applied onto the flattened base image, gives the filesystem `docker export` shows', async () => {
    const saveDir = path.join(work, 'save-base');
    mkdirSync(saveDir);
    const archive = path.join(work, 'base.tar');
    await d.docker(['save', '-o', archive, IMAGE]);
    execFileSync('tar', ['-xf', archive, '-C', saveDir]);
    const manifest = JSON.parse(readFileSync(path.join(saveDir, 'manifest.json'), 'utf8')) as { Layers: string[] }[];
    const rootfs = path.join(work, 'rootfs');
    mkdirSync(rootfs);
    const layers = manifest[0]!.Layers;
    expect(layers).toHaveLength(Object.keys(BASE).length + 1);
    for (const l of layers) await applyLayer(path.join(saveDir, l), rootfs, { mode: 'apply' });
    await applyLayer(ourLayer, rootfs, { mode: 'apply' });

    const exported = path.join(work, 'export');
    mkdirSync(exported);
    const exportTar = path.join(work, 'export.tar');
    await d.docker(['export', '-o', exportTar, C]);
    execFileSync('tar', ['-xpf', exportTar, '-C', exported]);

    const got = walk(rootfs);
    const want = walk(exported);
    // The container's init layer (mount points and files dockerd bind-mounts over) is in the
    // export but in no image layer.
    const initOnly = ['.dockerenv', 'dev', 'proc', 'sys', 'etc'];
    const isInit = (p: string) => initOnly.some((i) => p === i || p.startsWith(`${i}/`));
    const extra = [...want.nodes.keys()].filter((p) => !got.nodes.has(p));
    expect(extra.every(isInit), `export has more than init-layer paths: ${extra}`).toBe(true);
    for (const p of extra) want.nodes.delete(p);
    expect(sorted(got.nodes)).toEqual(sorted(want.nodes));
    // The hardlink triple is one inode in both.
    for (const t of [got, want])
      expect(t.inodes.get('new/deep/h1')?.sort()).toEqual(['data/h3', 'new/deep/er/h2', 'new/deep/h1']);
    expect(got.nodes.get('data/modify.txt')?.sha).toBe(sha256(Buffer.from('original\nchanged\n')));
    expect(got.nodes.has('deldir')).toBe(false);
    expect([...got.nodes.keys()].filter((p) => p.startsWith('opq/'))).toEqual(['opq/new']);
    expect(lstatSync(path.join(rootfs, 'meta/chmod.sh')).mode & 0o777).toBe(0o755);
  });
});
