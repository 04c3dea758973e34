// docker-archive, OCI layout and oci-archive readers/writers on fixtures built by code,
// including hostile inputs: nothing is written outside the destination, errors are clear.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { listTar, sha256 } from '@stevedore/core';
import {
  ArchiveError,
  copyImage,
  DockerArchive,
  dockerArchiveSink,
  OCI_LAYER,
  OCI_LAYER_GZIP,
  OciLayout,
  OciLayoutReader,
  ociArchiveSink,
  ociLayoutSink,
  writeDockerArchive,
} from '@stevedore/image';
import { afterAll, describe, expect, it } from 'vitest';
import { writeGzipLayout } from '../../../tools/bench-lib.mjs';
import { collect, configFor, layerTar, legacyArchive } from './archive-fixtures.js';

const root = mkdtempSync(path.join(tmpdir(), 'sd-archive-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const tmp = (name: string) => path.join(root, `${n++}-${name}`);
function put(name: string, bytes: Uint8Array): string {
  const p = tmp(name);
  writeFileSync(p, bytes);
  return p;
}

const base = layerTar({ 'etc/base': 'base\n' });
const app = layerTar({ 'app/one': 'one\n' });
const other = layerTar({ 'app/two': 'two\n' });

async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, 'expected an error').toBeInstanceOf(Error);
  expect((e as ArchiveError).code).toBe(code);
  if (message) expect((e as Error).message).toMatch(message);
}

describe('docker-archive reader', () => {
  it('reads a legacy archive with two images sharing a layer', async () => {
    const file = put(
      'two.tar',
      legacyArchive([
        { tags: ['one:1', 'one:latest'], layers: [base, app] },
        { tags: ['two:1'], layers: [base, other] },
      ]),
    );
    const a = await DockerArchive.open(file);
    try {
      expect(a.format).toBe('legacy');
      expect(a.images.map((i) => i.repoTags)).toEqual([['one:1', 'one:latest'], ['two:1']]);
      const one = a.image('one:1');
      expect(one.layers.map((l) => l.diffId.toString())).toEqual([sha256(base).toString(), sha256(app).toString()]);
      for (const l of one.layers) {
        expect(l.digest.equals(l.diffId)).toBe(true);
        expect(l.mediaType).toBe(OCI_LAYER);
      }
      expect(await collect(one.layers[1]!.uncompressed())).toEqual(app);
      expect(one.manifest.config.digest.equals(sha256(one.rawConfig))).toBe(true);
      expect(one.digest.equals(sha256(one.rawManifest))).toBe(true);
      expect(a.image('two:1').layers[0]!.digest.equals(one.layers[0]!.digest)).toBe(true);
    } finally {
      await a.close();
    }
  });

  it('reads gzip layers and a gzip-compressed archive', async () => {
    const file = put(
      'gz.tar.gz',
      new Uint8Array(gzipSync(legacyArchive([{ tags: ['gz:1'], layers: [base, app], gzipLayers: true }]))),
    );
    const a = await DockerArchive.open(file);
    try {
      const img = a.image();
      expect(img.layers[0]!.mediaType).toBe(OCI_LAYER_GZIP);
      expect(img.layers[0]!.digest.equals(img.layers[0]!.diffId)).toBe(false);
      expect(await collect(img.layers[0]!.uncompressed())).toEqual(base);
    } finally {
      await a.close();
    }
  });

  it('refuses manifest.json paths outside the archive', async () => {
    for (const bad of ['../etc/passwd', '/etc/passwd', 'a/../../x', 'a\\..\\b']) {
      const file = put(
        'escape.tar',
        legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
          (m.manifest[0] as { Layers: string[] }).Layers[0] = bad;
        }),
      );
      await expectCode(DockerArchive.open(file), 'ERR_ARCHIVE_MEMBER_PATH');
    }
    const file = put(
      'escape-config.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
        (m.manifest[0] as { Config: string }).Config = '../../etc/shadow';
      }),
    );
    await expectCode(DockerArchive.open(file), 'ERR_ARCHIVE_MEMBER_PATH', /leaves the archive/);
  });

  it('refuses a symlink member leading out of the archive', async () => {
    const file = put(
      'symlink.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
        m.members.push({ entry: { path: 'evil/layer.tar', type: 'symlink', linkName: '../../../etc/passwd' } });
        (m.manifest[0] as { Layers: string[] }).Layers[0] = 'evil/layer.tar';
      }),
    );
    await expectCode(DockerArchive.open(file), 'ERR_ARCHIVE_BAD_LINK');
  });

  it('follows a layer.tar symlink inside the archive (docker save does this for repeated layers)', async () => {
    const file = put(
      'inlink.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
        const real = (m.manifest[0] as { Layers: string[] }).Layers[0]!;
        m.members.push({ entry: { path: 'other/', type: 'directory' } });
        m.members.push({ entry: { path: 'other/layer.tar', type: 'symlink', linkName: `../${real}` } });
        (m.manifest[0] as { Layers: string[] }).Layers[0] = './other//layer.tar';
      }),
    );
    const a = await DockerArchive.open(file);
    expect(await collect(a.image('x:1').layers[0]!.uncompressed())).toEqual(base);
    await a.close();
  });

  it('detects a config whose bytes do not match its name', async () => {
    const file = put(
      'badcfg.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
        const cfg = m.members[0]!;
        cfg.data = configFor([base], { author: 'tampered' });
      }),
    );
    await expectCode(DockerArchive.open(file), 'ERR_DIGEST_MISMATCH', /config .*digest mismatch/);
  });

  it('detects a layer that does not match its diff_id (plain and gzip)', async () => {
    const plain = put('badlayer.tar', legacyArchive([{ tags: ['x:1'], layers: [base], config: configFor([app]) }]));
    await expectCode(DockerArchive.open(plain), 'ERR_DIGEST_MISMATCH', /diff_id mismatch/);
    const gz = put(
      'badgz.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base], gzipLayers: true, config: configFor([app]) }]),
    );
    await expectCode(DockerArchive.open(gz), 'ERR_DIGEST_MISMATCH', /diff_id/);
  });

  it('refuses missing members, duplicate members and count mismatches', async () => {
    const missing = put(
      'missing.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
        m.members = m.members.filter((e) => !String(e.entry.path).endsWith('layer.tar'));
      }),
    );
    await expectCode(DockerArchive.open(missing), 'ERR_ARCHIVE_MEMBER_MISSING');
    const dup = put(
      'dup.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
        const l = m.members.find((e) => String(e.entry.path).endsWith('layer.tar'))!;
        m.members.push({ entry: { ...l.entry }, data: app });
      }),
    );
    await expectCode(DockerArchive.open(dup), 'ERR_ARCHIVE_DUPLICATE_MEMBER', /appears twice/);
    const count = put('count.tar', legacyArchive([{ tags: ['x:1'], layers: [base], config: configFor([base, app]) }]));
    await expectCode(DockerArchive.open(count), 'ERR_LAYER_COUNT_MISMATCH');
    const none = put('none.tar', listTarFixture());
    await expectCode(DockerArchive.open(none), 'ERR_ARCHIVE_FORMAT', /no manifest.json/);
  });

  it('refuses a huge or deeply nested manifest.json, and 10,000 layers', async () => {
    const deep = put(
      'deep.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
        (m.manifest[0] as Record<string, unknown>).Extra = JSON.parse('['.repeat(200) + ']'.repeat(200));
      }),
    );
    await expectCode(DockerArchive.open(deep), 'ERR_JSON_TOO_DEEP');
    const huge = put(
      'huge.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
        (m.manifest[0] as Record<string, unknown>).Extra = 'x'.repeat(5 * 1024 * 1024);
      }),
    );
    await expectCode(DockerArchive.open(huge), 'ERR_ARCHIVE_FORMAT', /limit/);
    const many = put(
      'many.tar',
      legacyArchive([{ tags: ['x:1'], layers: [base] }], (m) => {
        (m.manifest[0] as { Layers: string[] }).Layers = Array.from({ length: 10_000 }, (_, i) => `${i}/layer.tar`);
      }),
    );
    await expectCode(DockerArchive.open(many), 'ERR_TOO_MANY_LAYERS', /10000 layers/);
  });

  it('refuses a truncated archive', async () => {
    const full = legacyArchive([{ tags: ['x:1'], layers: [base] }]);
    await expectCode(DockerArchive.open(put('trunc.tar', full.subarray(0, 1500))), 'ERR_ARCHIVE_FORMAT');
  });
});

function listTarFixture(): Uint8Array {
  return layerTar({ 'hello.txt': 'not an image\n' });
}

describe('writers and copies', () => {
  it('docker-archive round trip, both layouts, deterministic, shared layers once', async () => {
    const src = await DockerArchive.open(
      put(
        'src.tar',
        legacyArchive([
          { tags: ['one:1'], layers: [base, app] },
          { tags: ['two:1'], layers: [base, other] },
        ]),
      ),
    );
    try {
      for (const layout of ['legacy', 'oci'] as const) {
        const a = tmp(`out-${layout}.tar`);
        const b = tmp(`out2-${layout}.tar`);
        const entries = src.images.map((image) => ({ image, tags: [...image.repoTags] }));
        await writeDockerArchive(a, entries, { layout });
        await writeDockerArchive(b, entries, { layout });
        expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
        const names = listTar(new Uint8Array(readFileSync(a))).map((e) => e.path);
        expect(
          names.filter((p) => p.includes(sha256(base).hex) && !p.endsWith('/') && !p.endsWith('VERSION')),
        ).toHaveLength(1);
        const back = await DockerArchive.open(a);
        try {
          expect(back.format).toBe(layout);
          expect(back.images.map((i) => i.configDigest.toString())).toEqual(
            src.images.map((i) => i.configDigest.toString()),
          );
          expect(back.image('two:1').layers.map((l) => l.digest.toString())).toEqual(
            src.image('two:1').layers.map((l) => l.digest.toString()),
          );
        } finally {
          await back.close();
        }
      }
      expect(readdirSync(root).filter((f) => f.includes('.tmp') || f.includes('.stage-'))).toEqual([]);
    } finally {
      await src.close();
    }
  });

  it('legacy docker-archive → OCI layout keeps layers uncompressed (diff_id == digest) and the manifest digest', async () => {
    const src = await DockerArchive.open(put('conv.tar', legacyArchive([{ tags: ['one:1'], layers: [base, app] }])));
    try {
      const dir = tmp('layout');
      const sink = ociLayoutSink(dir);
      await copyImage(src.image(), sink, { tags: ['1'] });
      await copyImage(src.image(), sink, { tags: ['1'] }); // repeated put: no-op
      const r = await OciLayoutReader.openDir(dir);
      expect(r.tags()).toEqual(['1']);
      const img = await r.image('1');
      expect(img.digest.toString()).toBe(src.image().digest.toString());
      for (const l of img.layers) {
        expect(l.mediaType).toBe(OCI_LAYER);
        expect(l.digest.equals(l.diffId)).toBe(true);
      }
      expect(readdirSync(dir).sort()).toEqual(['blobs', 'index.json', 'oci-layout']);
    } finally {
      await src.close();
    }
  });

  it('an OCI layout written with directIo (O_DIRECT where the filesystem has it) holds the same verified image', async () => {
    const src = await DockerArchive.open(put('direct.tar', legacyArchive([{ tags: ['one:1'], layers: [base, app] }])));
    try {
      const plain = tmp('layout-buffered');
      const direct = tmp('layout-direct');
      await copyImage(src.image(), ociLayoutSink(plain), { tags: ['1'] });
      await copyImage(src.image(), ociLayoutSink(direct, { directIo: true }), { tags: ['1'] });
      const a = await OciLayoutReader.openDir(plain);
      const b = await OciLayoutReader.openDir(direct, { verify: true });
      const [ia, ib] = [await a.image('1'), await b.image('1')];
      expect(ib.digest.toString()).toBe(ia.digest.toString());
      for (const [i, l] of ib.layers.entries()) {
        const blob = (d: string, x: typeof l) => readFileSync(path.join(d, 'blobs', 'sha256', x.digest.hex));
        expect(blob(direct, l).equals(blob(plain, ia.layers[i]!))).toBe(true);
      }
    } finally {
      await src.close();
    }
  });

  it('adding to an existing layout keeps the other images; a tag moves', async () => {
    const src = await DockerArchive.open(
      put(
        'multi.tar',
        legacyArchive([
          { tags: ['one:1'], layers: [base, app] },
          { tags: ['two:1'], layers: [base, other] },
        ]),
      ),
    );
    try {
      const dir = tmp('layout-multi');
      const l = await OciLayout.open(dir);
      await l.putImage(src.image('one:1'), { tags: ['one'] });
      const l2 = await OciLayout.open(dir);
      await Promise.all([
        l2.putImage(src.image('two:1'), { tags: ['two'] }),
        l.putImage(src.image('one:1'), { tags: ['latest'] }),
      ]);
      expect((await OciLayoutReader.openDir(dir)).tags().sort()).toEqual(['latest', 'one', 'two']);
      await l.putImage(src.image('two:1'), { tags: ['latest'] });
      const r = await OciLayoutReader.openDir(dir);
      expect(r.tags().sort()).toEqual(['latest', 'one', 'two']);
      expect((await r.image('latest')).config.rootfs.diff_ids[1]!.toString()).toBe(sha256(other).toString());
    } finally {
      await src.close();
    }
  });

  it('oci-archive round trip and docker-archive from an OCI layout', async () => {
    const src = await DockerArchive.open(
      put('oa.tar', legacyArchive([{ tags: ['one:1'], layers: [base, app], gzipLayers: true }])),
    );
    try {
      const file = tmp('image.oci.tar');
      const sink = ociArchiveSink(file);
      await copyImage(src.image(), sink, { tags: ['v1'] });
      await sink.close();
      const r = await OciLayoutReader.openArchive(file);
      const img = await r.image('v1');
      expect(img.digest.toString()).toBe(src.image().digest.toString());
      expect(img.layers[0]!.mediaType).toBe(OCI_LAYER_GZIP);
      const dfile = tmp('from-oci.tar');
      const dsink = dockerArchiveSink(dfile);
      await copyImage(img, dsink, { tags: ['back:1'] });
      await dsink.close();
      await r.close();
      const back = await DockerArchive.open(dfile);
      // docker-archive stores layers uncompressed: the digest becomes the diff_id
      expect(back.image('back:1').layers.map((l) => l.digest.toString())).toEqual(
        img.layers.map((l) => l.diffId.toString()),
      );
      await back.close();
    } finally {
      await src.close();
    }
  });
});

it('memory stays flat reading a docker-archive with a 256 MiB layer', async () => {
  const { TarWriter } = await import('@stevedore/core');
  const { open } = await import('node:fs/promises');
  const { Hasher } = await import('@stevedore/core');
  // The layer: one 256 MiB file of a repeating pattern, streamed to disk, never held whole.
  const chunk = new Uint8Array(1 << 20).map((_, i) => i % 251);
  const size = 256 * (1 << 20);
  const layerPath = tmp('big-layer.tar');
  const lw = new TarWriter('pax');
  const lf = await open(layerPath, 'w');
  const h = new Hasher();
  const emit = async (b: Uint8Array) => {
    if (b.length) {
      h.update(b);
      await lf.write(b);
    }
  };
  await emit(lw.header({ path: 'big.bin', type: 'file', size }));
  for (let i = 0; i < 256; i++) await emit(lw.data(chunk));
  await emit(lw.endEntry());
  await emit(lw.finish());
  await lf.close();
  const diffId = h.digest();
  const layerSize = h.size;
  const config = new TextEncoder().encode(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId.toString()] } }),
  );
  const cfgName = `${sha256(config).hex}.json`;
  const manifest = new TextEncoder().encode(
    JSON.stringify([{ Config: cfgName, RepoTags: ['big:1'], Layers: ['l/layer.tar'] }]),
  );
  const archive = tmp('big.tar');
  const { createReadStream } = await import('node:fs');
  const { writeTarFileForTest } = await import('./archive-fixtures.js');
  await writeTarFileForTest(archive, [
    { name: cfgName, data: config },
    { name: 'manifest.json', data: manifest },
    { name: 'l/layer.tar', size: layerSize, open: () => createReadStream(layerPath) },
  ]);
  rmSync(layerPath);
  const before = process.memoryUsage();
  const a = await DockerArchive.open(archive); // indexes and verifies: reads 512 MiB in all
  const img = a.image('big:1');
  let n = 0;
  for await (const c of img.layers[0]!.uncompressed()) n += c.length;
  await a.close();
  const after = process.memoryUsage();
  expect(n).toBe(layerSize);
  expect(after.rss - before.rss).toBeLessThan(128 * (1 << 20));
  expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(64 * (1 << 20));
}, 120_000);

describe('OCI layout reader: hostile layouts', () => {
  async function layoutWithImage(): Promise<{ dir: string; digest: string }> {
    const src = await DockerArchive.open(put('h.tar', legacyArchive([{ tags: ['one:1'], layers: [base, app] }])));
    const dir = tmp('hostile');
    const d = await (await OciLayout.open(dir)).putImage(src.image(), { tags: ['t'] });
    await src.close();
    return { dir, digest: d.toString() };
  }

  it('missing blob, tampered blob, bad index', async () => {
    const { dir } = await layoutWithImage();
    const blob = path.join(dir, 'blobs', 'sha256', sha256(app).hex);
    writeFileSync(blob, layerTar({ 'app/one': 'ONE\n' }));
    await expectCode(
      OciLayoutReader.openDir(dir).then((r) => r.image('t')),
      'ERR_DIGEST_MISMATCH',
    );
    rmSync(blob);
    await expectCode(
      OciLayoutReader.openDir(dir).then((r) => r.image('t')),
      'ERR_ARCHIVE_MEMBER_MISSING',
      /blob missing/,
    );
    await expectCode(
      OciLayoutReader.openDir(dir).then((r) => r.image('nope')),
      'ERR_IMAGE_NOT_FOUND',
    );
    writeFileSync(path.join(dir, 'index.json'), '{"schemaVersion":2,"manifests":[],"manifests":[]}');
    await expectCode(OciLayoutReader.openDir(dir), 'ERR_JSON_DUPLICATE_KEY');
    const empty = tmp('empty');
    mkdirSync(empty);
    await expectCode(OciLayoutReader.openDir(empty), 'ERR_ARCHIVE_FORMAT', /not an OCI image layout/);
  });

  it('a layer whose diff_id the config gets wrong is refused, naming the diff_id (native check of the file)', async () => {
    const tar = layerTar({ 'etc/x': 'X\n' });
    const gz = gzipSync(tar);
    const dir = tmp('bad-diffid');
    const wrong = sha256(layerTar({ 'etc/x': 'Y\n' }));
    writeGzipLayout(dir, [{ digest: sha256(gz).toString(), diffId: wrong.toString(), compressedSize: gz.length }], 't');
    writeFileSync(path.join(dir, 'blobs', 'sha256', sha256(gz).hex), gz);
    await expectCode(
      OciLayoutReader.openDir(dir).then((r) => r.image('t')),
      'ERR_DIGEST_MISMATCH',
      new RegExp(`diff_id.*${wrong.hex}`),
    );
    // The same layout with the right diff_id opens.
    const good = tmp('good-diffid');
    writeGzipLayout(
      good,
      [{ digest: sha256(gz).toString(), diffId: sha256(tar).toString(), compressedSize: gz.length }],
      't',
    );
    writeFileSync(path.join(good, 'blobs', 'sha256', sha256(gz).hex), gz);
    const img = await (await OciLayoutReader.openDir(good)).image('t');
    expect(img.layers[0]!.diffId.toString()).toBe(sha256(tar).toString());
  });

  it('an oci-archive whose index points outside blobs is refused by digest grammar', async () => {
    const { dir, digest } = await layoutWithImage();
    const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8'));
    index.manifests[0].digest = '../../../etc:passwd';
    writeFileSync(path.join(dir, 'index.json'), JSON.stringify(index));
    await expect(OciLayoutReader.openDir(dir)).rejects.toThrow(/digest/);
    expect(digest).toMatch(/^sha256:/);
  });

  it('put of a blob whose bytes do not match its digest stores nothing', async () => {
    const dir = tmp('putbad');
    const l = await OciLayout.open(dir);
    await expectCode(
      l.putBlob(sha256(base), base.length, async function* () {
        yield new Uint8Array(10);
      }),
      'ERR_SIZE_MISMATCH',
    );
    const same = layerTar({ 'etc/base': 'BASE\n' });
    await expectCode(
      l.putBlob(sha256(base), same.length, async function* () {
        yield same;
      }),
      'ERR_DIGEST_MISMATCH',
    );
    expect(readdirSync(path.join(dir, 'blobs'))).toEqual(['sha256']);
    expect(readdirSync(path.join(dir, 'blobs', 'sha256'))).toEqual([]);
  });
});

it('ArchiveError is exported', () => {
  expect(new ArchiveError('ERR_ARCHIVE_FORMAT', 'x').code).toBe('ERR_ARCHIVE_FORMAT');
});
