// The layer engine through the TS API: layers made by GNU tar + gzip/zstd applied in each
// whiteout mode, digests verified (mismatch → both digests, nothing left), progress, create
// round trips, and hostile entries refused with the entry named. The deeper proofs (dockerd's
// own diff dirs, umoci, the kernel overlay mount, 40 breakout archives) are cargo tests in
// crates/fs; these check the binding carries all of it through.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  appendToFile,
  applyLayer,
  createLayer,
  flattenLayers,
  GrowingFile,
  type LayerProgress,
  listTar,
  scanTree,
  writeTar,
} from '@stevedore/core';
import { afterAll, describe, expect, it } from 'vitest';

const work = mkdtempSync(join(tmpdir(), 'stevedore-engine-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const sha256 = (b: Uint8Array | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const isRoot = process.getuid?.() === 0;

/** A layer dir → tar (GNU tar) → compressed file; returns the path and the digests. */
function layer(name: string, files: Record<string, string>, compress: 'gzip' | 'zstd' | 'none' = 'gzip') {
  const dir = join(work, `${name}-src`);
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), c);
  }
  const tar = execFileSync(
    'tar',
    ['-C', dir, '--sort=name', '--format=pax', '--owner=0', '--group=0', '-cf', '-', '.'],
    { maxBuffer: 1 << 30 },
  );
  const blob =
    compress === 'gzip'
      ? execFileSync('gzip', ['-c'], { input: tar, maxBuffer: 1 << 30 })
      : compress === 'zstd'
        ? execFileSync('zstd', ['-c', '-q'], { input: tar, maxBuffer: 1 << 30 })
        : tar;
  const file = join(work, `${name}.blob`);
  writeFileSync(file, blob);
  return { file, digest: sha256(blob), diffId: sha256(tar) };
}

describe('applyLayer', () => {
  it('overlay mode writes what Docker overlay2 writes: char 0/0 whiteouts, verified digests', async () => {
    const l = layer('ovl', {
      'etc/hosts': '127.0.0.1 localhost\n',
      'etc/.wh.motd': '',
      'usr/bin/tool': 'x'.repeat(3_000_000),
    });
    const target = join(work, 'ovl-diff');
    const seen: LayerProgress[] = [];
    const r = await applyLayer(l.file, target, {
      expectedDigest: l.digest,
      expectedDiffId: l.diffId,
      onProgress: (p) => seen.push(p),
      progressIntervalMs: 5,
    });
    expect(r).toMatchObject({ digest: l.digest, diffId: l.diffId, compression: 'gzip' });
    expect(readFileSync(join(target, 'etc/hosts'), 'utf8')).toBe('127.0.0.1 localhost\n');
    if (isRoot) {
      const wh = lstatSync(join(target, 'etc/motd'));
      expect(wh.isCharacterDevice() && wh.rdev === 0).toBe(true);
    } else {
      expect(r.skipped.some((w) => w.path.includes('motd'))).toBe(true);
    }
    expect(existsSync(join(target, 'etc/.wh.motd'))).toBe(false);
    expect(seen.at(-1)).toMatchObject({ compressed: r.compressedSize, uncompressed: r.uncompressedSize });
  });

  it('fails on a digest mismatch naming both digests, and leaves nothing behind', async () => {
    const l = layer('bad', { a: 'a' }, 'zstd');
    const target = join(work, 'bad-diff');
    const wrong = sha256('something else');
    const err = await applyLayer(l.file, target, { expectedDigest: wrong }).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect(err.message).toContain(wrong);
    expect(err.message).toContain(l.digest);
    expect(existsSync(target)).toBe(false);
    expect(readdirSync(work).filter((n) => n.startsWith('bad-diff'))).toEqual([]);
  });

  it('apply mode flattens layers onto a rootfs: whiteouts delete, opaque dirs clear', async () => {
    const base = layer('base', { 'etc/a': 'a', 'etc/b': 'b', 'opt/x/1': '1' }, 'none');
    const top = layer('top', { 'etc/.wh.a': '', 'opt/x/.wh..wh..opq': '', 'opt/x/2': '2' });
    const rootfs = join(work, 'rootfs');
    mkdirSync(rootfs);
    await applyLayer(base.file, rootfs, { mode: 'apply' });
    await applyLayer(top.file, rootfs, { mode: 'apply', expectedDiffId: top.diffId });
    expect(readdirSync(join(rootfs, 'etc'))).toEqual(['b']);
    expect(readdirSync(join(rootfs, 'opt/x'))).toEqual(['2']);
  });

  it('refuses entries that climb out of the target, naming them', async () => {
    const tar = writeTar([
      { entry: { path: 'ok', type: 'file' }, data: new TextEncoder().encode('fine') },
      { entry: { path: '../escape', type: 'file' }, data: new TextEncoder().encode('no') },
    ]);
    const file = join(work, 'evil.tar');
    writeFileSync(file, tar);
    const target = join(work, 'evil-diff');
    const err = await applyLayer(file, target, { mode: 'oci' }).catch((e) => e);
    expect(err.code).toMatch(/^ERR_/);
    expect(err.message).toContain('../escape');
    expect(existsSync(join(work, 'escape'))).toBe(false);
    expect(existsSync(target)).toBe(false);
  });

  it('reports a missing source file with ERR_IO', async () => {
    await expect(applyLayer(join(work, 'none.blob'), join(work, 'x'))).rejects.toMatchObject({ code: 'ERR_IO' });
  });
});

describe('applyLayer with scan: the tree of the result, hashed as written', () => {
  it('equals a scanTree walk of the result: a path written twice, hard links, symlinks, whiteouts, opaque dirs, empty and sparse files', async () => {
    const dir = join(work, 'scan-src');
    mkdirSync(join(dir, 'etc/opaque'), { recursive: true });
    mkdirSync(join(dir, 'bin'), { recursive: true });
    writeFileSync(join(dir, 'etc/conf'), 'version one, A\n');
    writeFileSync(join(dir, 'etc/empty'), '');
    writeFileSync(join(dir, 'etc/opaque/.wh..wh..opq'), '');
    writeFileSync(join(dir, 'etc/.wh.gone'), '');
    writeFileSync(join(dir, 'bin/tool'), randomBytes(2_500_000));
    execFileSync('ln', [join(dir, 'bin/tool'), join(dir, 'bin/tool-link')]);
    execFileSync('ln', ['-s', '../etc/conf', join(dir, 'bin/conf-link')]);
    writeFileSync(join(dir, 'holey'), '');
    execFileSync('truncate', ['-s', String(3 << 20), join(dir, 'holey')]);
    execFileSync('dd', [`of=${join(dir, 'holey')}`, 'bs=1', `seek=${2 << 20}`, 'conv=notrunc', 'status=none'], {
      input: 'data',
    });
    const tarFile = join(work, 'scan.tar');
    execFileSync('tar', ['-C', dir, '--sort=name', '--format=pax', '--sparse', '-cf', tarFile, '.']);
    // the same path again, appended: the second entry (same length, other bytes) is what must be recorded
    writeFileSync(join(dir, 'etc/conf'), 'version two, B\n');
    execFileSync('tar', ['-C', dir, '--format=pax', '-rf', tarFile, './etc/conf']);
    const tar = readFileSync(tarFile);
    const target = join(work, 'scan-diff');
    const r = await applyLayer(tarFile, target, { expectedDiffId: sha256(tar), scan: true, maxSparseEntries: 64 });
    expect(readFileSync(join(target, 'etc/conf'), 'utf8')).toBe('version two, B\n');
    const walked = await scanTree(target);
    expect(r.tree).toEqual(walked);
    const byPath = new Map(r.tree!.entries.map((e) => [e.path, e]));
    expect(byPath.get('etc/conf')?.sha256).toBe(sha256('version two, B\n'));
    expect(byPath.get('bin/tool-link')?.hardlink).toBe('bin/tool');
    expect(byPath.get('holey')?.sha256).toBe(sha256(readFileSync(join(dir, 'holey'))));
    expect(byPath.get('etc/empty')?.sha256).toBe(sha256(''));
  });
});

describe('applyLayer of GNU sparse files (GNU tar --sparse)', () => {
  // A 4 MiB file with 3 data bytes at 1 MiB and 5 at the end: holes everywhere else.
  const dir = join(work, 'sparse-src');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'holey');
  writeFileSync(file, '');
  execFileSync('truncate', ['-s', String(4 << 20), file]);
  execFileSync('dd', ['of=' + file, 'bs=1', `seek=${1 << 20}`, 'conv=notrunc', 'status=none'], { input: 'abc' });
  execFileSync('dd', ['of=' + file, 'bs=1', `seek=${(4 << 20) - 5}`, 'conv=notrunc', 'status=none'], {
    input: 'tail!',
  });
  const want = readFileSync(file);
  const archives = ['gnu', 'pax'].map((format) => {
    const tar = join(work, `sparse-${format}.tar`);
    execFileSync('tar', ['-C', dir, `--format=${format}`, '--sparse', '-cf', tar, 'holey']);
    return { format, tar };
  });

  it.each(archives)(
    '$format: refused by default, naming the entry; extracted with maxSparseEntries',
    async ({ tar }) => {
      expect(readFileSync(tar).length).toBeLessThan(64 << 10); // the holes are not in the archive
      const off = mkdtempSync(join(work, 'sp-off-'));
      await expect(applyLayer(tar, off, { mode: 'apply' })).rejects.toMatchObject({
        code: 'ERR_TAR_UNSUPPORTED',
        message: expect.stringContaining('holey'),
      });
      expect(readdirSync(off)).toEqual([]);
      const out = mkdtempSync(join(work, 'sp-on-'));
      await applyLayer(tar, out, { mode: 'apply', maxSparseEntries: 1024 });
      expect(readFileSync(join(out, 'holey')).equals(want)).toBe(true);
    },
  );
});

describe('applyLayer of a file still being written (GrowingFile)', () => {
  /** Writes `blob` in pieces to an already created file (the reader opens it right away). */
  async function writeSlowly(fh: Awaited<ReturnType<typeof open>>, blob: Uint8Array, g: GrowingFile, failAt?: number) {
    try {
      for (let off = 0; off < blob.length; off += 256 * 1024) {
        if (failAt !== undefined && off >= failAt) throw new Error('connection reset');
        await appendToFile(fh.fd, [blob.subarray(off, off + 256 * 1024)], undefined, g);
        await new Promise((r) => setTimeout(r, 5));
      }
      g.end(true);
    } catch (e) {
      g.end(false);
      throw e;
    } finally {
      await fh.close();
    }
  }

  it('applies the layer as it arrives, same result as from the finished file', async () => {
    const l = layer('grow', { 'a/big': 'q'.repeat(3_000_000), 'a/small': 's', 'b/.wh.gone': '' });
    const blob = readFileSync(l.file);
    const file = join(work, 'grow.partial');
    const g = new GrowingFile();
    const target = join(work, 'grow-diff');
    const fh = await open(file, 'wx');
    const [r] = await Promise.all([
      applyLayer(file, target, { expectedDigest: l.digest, expectedDiffId: l.diffId, growing: g }),
      writeSlowly(fh, blob, g),
    ]);
    expect(r).toMatchObject({ digest: l.digest, diffId: l.diffId, compressedSize: blob.length });
    expect(readFileSync(join(target, 'a/big'), 'utf8')).toHaveLength(3_000_000);
  });

  it('fails, leaving nothing, when the writer fails part way', async () => {
    const l = layer('grow-bad', { 'x/big': randomBytes(1_500_000).toString('base64') });
    const blob = readFileSync(l.file);
    expect(blob.length).toBeGreaterThan(1 << 20);
    const file = join(work, 'grow-bad.partial');
    const g = new GrowingFile();
    const target = join(work, 'grow-bad-diff');
    const fh = await open(file, 'wx');
    const [applied, written] = await Promise.allSettled([
      applyLayer(file, target, { expectedDigest: l.digest, growing: g }),
      writeSlowly(fh, blob, g, 512 * 1024),
    ]);
    expect(written.status).toBe('rejected');
    expect(applied.status).toBe('rejected');
    expect(String((applied as PromiseRejectedResult).reason.message)).toMatch(/download failed/);
    expect(existsSync(target)).toBe(false);
    expect(readdirSync(work).filter((n) => n.startsWith('grow-bad-diff'))).toEqual([]);
  });
});

describe('flattenLayers', () => {
  it('gives the tree applying layer by layer gives, with digests checked and progress summed', async () => {
    const base = layer('fl-base', { 'etc/a': 'a', 'etc/b': 'b', 'opt/x/1': '1', big: 'z'.repeat(2_000_000) }, 'none');
    const mid = layer('fl-mid', { 'etc/.wh.a': '', 'opt/x/.wh..wh..opq': '', 'opt/x/2': '2' }, 'zstd');
    const top = layer('fl-top', { 'etc/b': 'b2', 'new/file': 'n' });
    const one = join(work, 'fl-one');
    const flat = join(work, 'fl-flat');
    mkdirSync(one);
    mkdirSync(flat);
    for (const l of [base, mid, top]) await applyLayer(l.file, one, { mode: 'apply' });
    const seen: LayerProgress[] = [];
    const reports = await flattenLayers(
      [base, mid, top].map((l) => ({ source: l.file, expectedDigest: l.digest, expectedDiffId: l.diffId })),
      flat,
      { onProgress: (p) => seen.push(p), progressIntervalMs: 5 },
    );
    expect(reports.map((r) => r.diffId)).toEqual([base.diffId, mid.diffId, top.diffId]);
    expect(reports.map((r) => r.compression)).toEqual(['tar', 'zstd', 'gzip']);
    const tree = (root: string) =>
      execFileSync('find', ['.', '-printf', '%p %y %m %s\n'], { cwd: root }).toString().split('\n').sort();
    expect(tree(flat)).toEqual(tree(one));
    expect(readFileSync(join(flat, 'etc/b'), 'utf8')).toBe('b2');
    expect(readdirSync(join(flat, 'opt/x'))).toEqual(['2']);
    const total = reports.reduce((n, r) => n + r.uncompressedSize, 0);
    expect(seen.at(-1)?.uncompressed).toBe(total);
  });

  it('names the failing layer and leaves the target as it was', async () => {
    const base = layer('flb-base', { keep: 'k' }, 'none');
    const top = layer('flb-top', { other: 'o' });
    const target = join(work, 'flb');
    mkdirSync(target);
    writeFileSync(join(target, 'mine'), 'm');
    const wrong = sha256('not it');
    const err = await flattenLayers(
      [
        { source: base.file, expectedDiffId: base.diffId },
        { source: top.file, expectedDigest: wrong },
      ],
      target,
    ).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect(err.message).toMatch(/^layer 1: /);
    expect(err.message).toContain(top.digest);
    expect(readdirSync(target)).toEqual(['mine']);
  });
});

describe('createLayer', () => {
  it('writes a deterministic gzip layer whose digests check out and whose entries are sorted', async () => {
    const src = join(work, 'create-src');
    mkdirSync(join(src, 'b/c'), { recursive: true });
    writeFileSync(join(src, 'b/c/file'), 'content\n');
    writeFileSync(join(src, 'a'), 'first\n');
    const out1 = join(work, 'c1.tar.gz');
    const out2 = join(work, 'c2.tar.gz');
    const r1 = await createLayer(src, out1, { clampMtime: 0 });
    const r2 = await createLayer(src, out2, { clampMtime: 0 });
    const blob = readFileSync(out1);
    expect(r1.digest).toBe(sha256(blob));
    expect(r2.digest).toBe(r1.digest);
    const tar = execFileSync('gzip', ['-dc'], { input: blob });
    expect(r1.diffId).toBe(sha256(tar));
    expect(listTar(new Uint8Array(tar)).map((e) => e.path)).toEqual(['a', 'b/', 'b/c/', 'b/c/file']);
    // Round trip: applied again, the layer gives the same tree.
    const back = join(work, 'create-back');
    const applied = await applyLayer(out1, back, { mode: 'oci', expectedDigest: r1.digest });
    expect(applied.diffId).toBe(r1.diffId);
    expect(readFileSync(join(back, 'b/c/file'), 'utf8')).toBe('content\n');
  });

  it('turns an overlay upper dir into OCI whiteouts', async () => {
    const upper = join(work, 'upper');
    mkdirSync(upper);
    writeFileSync(join(upper, 'new'), 'n');
    if (isRoot) execFileSync('mknod', [join(upper, 'gone'), 'c', '0', '0']);
    const out = join(work, 'upper.tar');
    const r = await createLayer(upper, out, { mode: 'overlay-diff', compression: 'none' });
    const names = listTar(new Uint8Array(readFileSync(out))).map((e) => e.path);
    expect(names).toContain('new');
    if (isRoot) expect(names).toContain('.wh.gone');
    expect(r.digest).toBe(r.diffId);
    await expect(createLayer(join(work, 'missing-dir'), join(work, 'x.tar'))).rejects.toMatchObject({
      code: expect.stringMatching(/^ERR_/),
    });
    expect(existsSync(join(work, 'x.tar'))).toBe(false);
  });
});
