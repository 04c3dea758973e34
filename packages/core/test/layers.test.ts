// Tar reading and the layer-stack resolver through the TS API, on both backends, against
// archives made by GNU tar; and parser agreement between the backends on hostile input.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LayerIndex,
  LayerStack,
  listTar,
  listTarFile,
  listTarStream,
  loadNativeBackend,
  loadWasmBackend,
  scanLayer,
  type TarEvent,
  TarReader,
  TarWriter,
  useBackend,
  writeTar,
} from '@stevedore/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const work = mkdtempSync(join(tmpdir(), 'stevedore-layers-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const sha256 = (b: Uint8Array | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const longName = `${'d'.repeat(90)}/${'n'.repeat(150)}`;
const files: Record<string, string> = {
  'etc/os-release': 'ID=stevedore\n',
  'usr/bin/tool': 'x'.repeat(70_000),
  [longName]: 'long\n',
};

/** A tree with files, a long name, a non-UTF-8 name, symlinks, a hardlink and a fifo. */
function makeTree(root: string) {
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), c);
  }
  symlinkSync('../usr/bin/tool', join(root, 'etc/tool-link'));
  linkSync(join(root, 'usr/bin/tool'), join(root, 'usr/bin/tool-hard'));
  writeFileSync(Buffer.concat([Buffer.from(join(root, 'etc/latin1-')), Buffer.from([0xe9, 0x2e, 0x74])]), 'é\n');
  execFileSync('mkfifo', [join(root, 'etc/pipe')]);
}

let archives: Record<string, Uint8Array>;
beforeAll(() => {
  const tree = join(work, 'tree');
  mkdirSync(tree);
  makeTree(tree);
  archives = {};
  for (const format of ['gnu', 'pax', 'ustar']) {
    const out = join(work, `${format}.tar`);
    const args = ['-C', tree, '--sort=name', `--format=${format}`, '--owner=0', '--group=0', '--numeric-owner'];
    // ustar cannot hold the 240-byte name: leave it out there.
    if (format === 'ustar') args.push(`--exclude=${longName.split('/')[1]}`);
    execFileSync('tar', ['-cf', out, ...args, '.']);
    archives[format] = new Uint8Array(readFileSync(out));
  }
});

describe.each(['native', 'wasm'] as const)('tar on the %s backend', (kind) => {
  beforeAll(() => {
    useBackend(kind);
  });

  it.each(['gnu', 'pax', 'ustar'])('lists a GNU tar %s archive like tar -t', (format) => {
    const archive = archives[format] as Uint8Array;
    const listing = listTar(archive, { hash: 'sha256' });
    // Compare raw bytes: GNU tar prints names unquoted with --quoting-style=literal.
    const ours = listing.map((e) => Buffer.from(e.pathBytes).toString('latin1').replace(/\/$/, ''));
    const gnu = execFileSync('tar', ['--quoting-style=literal', '-tf', join(work, `${format}.tar`)], {
      encoding: 'latin1',
    })
      .split('\n')
      .filter(Boolean)
      .map((p) => p.replace(/\/$/, ''));
    expect(ours).toEqual(gnu);
    const byPath = new Map(listing.map((e) => [e.path.replace(/^\.\//, ''), e]));
    expect(byPath.get('usr/bin/tool')).toMatchObject({
      type: 'file',
      size: 70_000,
      digest: sha256(files['usr/bin/tool'] as string),
    });
    expect(byPath.get('usr/bin/tool-hard')).toMatchObject({ type: 'hardlink', linkName: './usr/bin/tool' });
    expect(byPath.get('etc/tool-link')).toMatchObject({ type: 'symlink', linkName: '../usr/bin/tool' });
    expect(byPath.get('etc/pipe')?.type).toBe('fifo');
    const latin1 = listing.find((e) => e.pathBytes.includes(0xe9));
    expect(latin1 && Buffer.from(latin1.pathBytes).toString('latin1')).toBe('./etc/latin1-é.t');
    if (format !== 'ustar') expect(byPath.get(longName)?.digest).toBe(sha256('long\n'));
  });

  it('streams data events that reassemble the files, in 1..4099-byte chunks', () => {
    const archive = archives.pax as Uint8Array;
    for (const size of [1, 511, 4099]) {
      const r = new TarReader();
      const got = new Map<string, Buffer[]>();
      let current = '';
      const take = (events: TarEvent[]) => {
        for (const e of events) {
          if (e.type === 'entry') {
            current = e.header.path.replace(/^\.\//, '');
            got.set(current, []);
          } else if (e.type === 'data') got.get(current)?.push(Buffer.from(e.data));
        }
      };
      for (let o = 0; o < archive.length; o += size) take(r.push(archive.subarray(o, o + size)));
      take(r.end());
      for (const [p, c] of Object.entries(files)) expect(Buffer.concat(got.get(p) ?? []).toString(), p).toBe(c);
    }
  });

  it('reports truncation with the entry name and offset', () => {
    const archive = archives.pax as Uint8Array;
    const cut = archive.subarray(0, 3000);
    expect(() => listTar(cut)).toThrow(expect.objectContaining({ code: 'ERR_TAR_TRUNCATED' }));
    try {
      listTar(cut);
    } catch (e) {
      expect((e as Error).message).toMatch(/offset/);
    }
  });

  it('lists from streams and files', async () => {
    const archive = archives.gnu as Uint8Array;
    const chunks = (async function* () {
      for (let o = 0; o < archive.length; o += 1000) yield archive.subarray(o, o + 1000);
    })();
    const fromStream = await listTarStream(chunks, { hash: 'sha256' });
    const fromFile = await listTarFile(join(work, 'gnu.tar'), { hash: 'sha256' });
    expect(fromFile).toEqual(fromStream);
    expect(fromStream).toEqual(listTar(archive, { hash: 'sha256' }));
    await expect(listTarFile(join(work, 'nope.tar'))).rejects.toMatchObject({ code: 'ERR_IO' });
  });

  it("resolves the seed's experiment: good concrete wins, marble whited out", () => {
    const material = LayerIndex.fromEntries([
      { path: 'concrete', type: 'file', content: 'bad concrete' },
      { path: 'rebar', type: 'file', content: 'rebar' },
    ]);
    const material2 = LayerIndex.fromEntries([
      { path: 'concrete', type: 'file', content: 'good concrete' },
      { path: 'marble', type: 'file', content: 'marble' },
    ]);
    const build = LayerIndex.fromEntries(
      [
        { path: 'frame', type: 'file', content: 'main structure' },
        { path: 'marble', type: 'char', devMajor: 0, devMinor: 0, mode: 0 },
      ],
      'overlay',
    );
    const stack = new LayerStack([material, material2, build]);
    expect(stack.readdir('')).toEqual(['concrete', 'frame', 'rebar']);
    expect(stack.stat('concrete')).toMatchObject({ layer: 1, entry: { content: 'good concrete' } });
    expect(stack.resolve('marble')).toEqual({ kind: 'whiteout', layer: 2 });
    expect(() => stack.stat('marble')).toThrow(expect.objectContaining({ code: 'ERR_PATH_NOT_FOUND' }));
    expect(stack.walk().map((s) => s.path)).toEqual(['', 'concrete', 'frame', 'rebar']);
  });

  it('builds a stack from layer tars: OCI whiteouts, opaque dirs, symlinks inside the root', () => {
    const tar = (entries: Record<string, string | null>) => {
      const dir = mkdtempSync(join(work, 'layer-'));
      for (const [p, c] of Object.entries(entries)) {
        mkdirSync(join(dir, p, '..'), { recursive: true });
        if (c === null) mkdirSync(join(dir, p), { recursive: true });
        else if (c.startsWith('->')) symlinkSync(c.slice(2), join(dir, p));
        else writeFileSync(join(dir, p), c);
      }
      return new Uint8Array(execFileSync('tar', ['-C', dir, '--sort=name', '--format=pax', '-cf', '-', '.']));
    };
    const base = LayerIndex.fromTar(
      tar({ 'etc/a': 'a', 'etc/b': 'b', 'opt/x/1': '1', lib64: '->/usr/lib', 'usr/lib/libc': 'c' }),
    );
    const top = LayerIndex.fromTar(
      tar({ 'etc/.wh.a': '', 'opt/x/.wh..wh..opq': '', 'opt/x/2': '2', 'usr/lib/libm': 'm' }),
    );
    const stack = new LayerStack([base, top]);
    expect(stack.readdir('etc')).toEqual(['b']);
    expect(stack.readdir('opt/x')).toEqual(['2']);
    expect(stack.stat('lib64/libm')).toMatchObject({ path: 'usr/lib/libm', layer: 1, entry: { content: sha256('m') } });
    expect(stack.lstat('lib64').entry).toMatchObject({ type: 'symlink', linkName: '/usr/lib' });
    expect(stack.resolve('etc/a')).toEqual({ kind: 'whiteout', layer: 1 });
  });
});

describe('parser agreement: native and wasm on hostile input', () => {
  it('give the same listing or the same error for 3000 mutated archives', () => {
    const native = loadNativeBackend();
    const wasm = loadWasmBackend();
    const outcome = (b: typeof native, bytes: Uint8Array) => {
      try {
        const s = b.createTarScanner({ hash: 'sha256' });
        const events = [...s.push(bytes, true), ...s.finish()];
        return JSON.stringify(events.map((e) => (e.type === 'data' ? { d: e.data.length } : e)));
      } catch (e) {
        return `${(e as { code: string }).code}: ${(e as Error).message}`;
      }
    };
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const sources = [archives.gnu, archives.pax, archives.ustar] as Uint8Array[];
    let errors = 0;
    for (let i = 0; i < 3000; i++) {
      const src = sources[i % 3] as Uint8Array;
      const bytes = src.slice(0, rand(2) ? src.length : rand(src.length));
      for (let k = rand(4) + 1; k > 0; k--) {
        // Mutations concentrated in header blocks, where parsing decisions are made.
        const block = rand(Math.max(1, Math.floor(bytes.length / 512)));
        bytes[block * 512 + rand(512)] = rand(256);
      }
      const a = outcome(native, bytes);
      expect(outcome(wasm, bytes), `case ${i}`).toBe(a);
      if (a.startsWith('ERR_')) errors++;
    }
    // The mutations must actually exercise the error paths.
    expect(errors).toBeGreaterThan(300);
  });
});

describe.each(['native', 'wasm'] as const)('tar writer on the %s backend', (kind) => {
  beforeAll(() => {
    useBackend(kind);
  });

  it('writes archives GNU tar extracts, byte-identical across backends and runs', () => {
    const entries = [
      { entry: { path: 'dir', type: 'directory' as const, mode: 0o750, mtime: 1_700_000_000 } },
      {
        entry: { path: `dir/${'x'.repeat(150)}`, type: 'file' as const, mtime: 1_700_000_000, mtimeNanos: 5 },
        data: new TextEncoder().encode('long name\n'),
      },
      { entry: { path: 'dir/link', type: 'symlink' as const, linkName: '../etc/passwd' } },
      {
        entry: {
          path: 'attrs',
          type: 'file' as const,
          xattrs: [['user.k', new Uint8Array([1, 2])]] as [string, Uint8Array][],
        },
        data: new Uint8Array([7]),
      },
    ];
    const tar = writeTar(entries);
    expect(writeTar(entries)).toEqual(tar);
    const out = mkdtempSync(join(work, 'x-'));
    execFileSync('tar', ['-C', out, '--xattrs', '--xattrs-include=*', '-xf', '-'], { input: tar });
    expect(readFileSync(join(out, 'dir', 'x'.repeat(150)), 'utf8')).toBe('long name\n');
    expect(execFileSync('readlink', [join(out, 'dir/link')], { encoding: 'utf8' }).trim()).toBe('../etc/passwd');
    const listed = listTar(tar);
    expect(listed.map((e) => [e.path, e.type, e.mtimeNanos])).toEqual([
      ['dir', 'directory', 0],
      [`dir/${'x'.repeat(150)}`, 'file', 5],
      ['dir/link', 'symlink', 0],
      ['attrs', 'file', 0],
    ]);
    expect(listed[3]?.xattrs).toEqual([['user.k', new Uint8Array([1, 2])]]);
    // ustar cannot hold the long name: a clear error naming the entry.
    expect(() => writeTar(entries, 'ustar')).toThrow(/x{20}/);
    // Data beyond the declared size is refused.
    const w = new TarWriter('pax');
    w.header({ path: 'f', type: 'file', size: 1 });
    expect(() => w.data(new Uint8Array(2))).toThrow(expect.objectContaining({ code: 'ERR_TAR_WRITE' }));
  });

  it('writes the same bytes on both backends', () => {
    useBackend('native');
    const a = writeTar([
      { entry: { path: 'é/ü', type: 'file', uid: 3_000_000, uname: 'someone' }, data: new Uint8Array(3) },
    ]);
    useBackend('wasm');
    const b = writeTar([
      { entry: { path: 'é/ü', type: 'file', uid: 3_000_000, uname: 'someone' }, data: new Uint8Array(3) },
    ]);
    expect(b).toEqual(a);
    expect(listTar(a)[0]).toMatchObject({ path: 'é/ü', uid: 3_000_000, uname: 'someone', size: 3 });
  });
});

describe.each(['native', 'wasm'] as const)('scanLayer on the %s backend', (kind) => {
  beforeAll(() => {
    useBackend(kind);
  });

  it('lists a gzip layer from a stream and computes digest and diff_id in one pass', async () => {
    const tar = archives.pax as Uint8Array;
    const gz = new Uint8Array(execFileSync('gzip', ['-c'], { input: tar }));
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let o = 0; o < gz.length; o += 777) c.enqueue(gz.slice(o, o + 777));
        c.close();
      },
    });
    const scan = await scanLayer(stream, { digest: sha256(gz), diffId: sha256(tar) });
    expect(scan).toMatchObject({ compression: 'gzip', compressedSize: gz.length, uncompressedSize: tar.length });
    expect(scan.entries).toEqual(listTar(tar, { hash: 'sha256' }));
    const plain = await scanLayer(
      (async function* () {
        yield tar;
      })(),
    );
    expect(plain).toMatchObject({ compression: 'tar', digest: sha256(tar), diffId: sha256(tar) });
  });

  it('names both digests on a mismatch and reports corrupt gzip', async () => {
    const tar = archives.gnu as Uint8Array;
    const gz = new Uint8Array(execFileSync('gzip', ['-c'], { input: tar }));
    const wrong = sha256('x');
    await expect(
      scanLayer(
        (async function* () {
          yield gz;
        })(),
        { diffId: wrong },
      ),
    ).rejects.toThrow(new RegExp(`expected ${wrong}, got ${sha256(tar)}`));
    const corrupt = gz.slice();
    corrupt[corrupt.length - 6] ^= 0xff; // the CRC32 trailer
    await expect(
      scanLayer(
        (async function* () {
          yield corrupt;
        })(),
      ),
    ).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_/) });
  });
});
