// Layouts and archives as other producers write them, built by hand (by code) where no tool here
// writes them: sha512 blobs, index.json without annotations, nested indexes, plain and zstd layers,
// the tar ending umoci ≤ 0.4.7 `insert` writes, Docker 25+ docker-archives (and Docker 25.0.0's
// empty OCI manifests), symlinks in a layout directory. The same inputs made by the real tools
// are in producers.docker.test.ts.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { createLayer, sha256, sha512, writeTar } from '@stevedore/core';
import {
  copyImage,
  DockerArchive,
  dockerArchiveSink,
  OCI_INDEX,
  OCI_LAYER,
  OCI_LAYER_GZIP,
  OCI_LAYER_ZSTD,
  OciLayoutReader,
  ociArchiveSink,
  ociLayoutSink,
} from '@stevedore/image';
import { afterAll, describe, expect, it } from 'vitest';
import {
  collect,
  configFor,
  docker25Archive,
  handImage,
  layerTar,
  putBlob,
  writeLayoutIndex,
} from './archive-fixtures.js';

const root = mkdtempSync(path.join(tmpdir(), 'sd-producers-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const tmp = (name: string) => path.join(root, `${n++}-${name}`);
const enc = new TextEncoder();

const base = layerTar({ 'etc/base': 'base\n' });
const app = layerTar({ 'app/one': 'one\n' });

async function errorOf(p: Promise<unknown>): Promise<Error & { code?: string }> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, 'expected an error').toBeInstanceOf(Error);
  return e as Error & { code?: string };
}

async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  const e = await errorOf(p);
  expect(e.code, e.message).toBe(code);
  if (message) expect(e.message).toMatch(message);
}

/** Every way out of the package: OCI layout, oci-archive, docker-archive (both layouts); each read back. */
async function convertEverywhere(image: Parameters<typeof copyImage>[0]): Promise<void> {
  const diffIds = image.config.rootfs.diff_ids.map(String);
  const dir = tmp('conv-layout');
  await copyImage(image, ociLayoutSink(dir), { tags: ['c'] });
  const r = await OciLayoutReader.openDir(dir);
  expect((await r.image('c')).config.rootfs.diff_ids.map(String)).toEqual(diffIds);
  const oa = tmp('conv.oci.tar');
  const s1 = ociArchiveSink(oa);
  await copyImage(image, s1, { tags: ['c'] });
  await s1.close();
  const ra = await OciLayoutReader.openArchive(oa);
  expect((await ra.image('c')).layers.map((l) => l.digest.toString())).toEqual(
    image.layers.map((l) => l.digest.toString()),
  );
  await ra.close();
  for (const layout of ['legacy', 'oci'] as const) {
    const da = tmp(`conv-${layout}.tar`);
    const s2 = dockerArchiveSink(da, { layout });
    await copyImage(image, s2, { tags: ['conv:1'] });
    await s2.close();
    const back = await DockerArchive.open(da);
    try {
      expect(back.format).toBe(layout);
      const img = back.image('conv:1');
      expect(img.configDigest.toString()).toBe(sha256(image.rawConfig).toString());
      expect(img.layers.map((l) => l.diffId.toString())).toEqual(diffIds);
      // docker's own form: plain layers whose digest is the diff_id
      expect(img.layers.every((l) => l.digest.equals(l.diffId) && l.mediaType === OCI_LAYER)).toBe(true);
    } finally {
      await back.close();
    }
  }
}

describe('OCI layouts other tools write', () => {
  it('sha512 blobs: manifest, config and layers named by sha512 open, verify and convert', async () => {
    const dir = tmp('sha512');
    const config = configFor([base, app]);
    const m = handImage(dir, {
      config,
      stored: [gzipSync(base), gzipSync(app)],
      mediaType: OCI_LAYER_GZIP,
      algorithm: 'sha512',
    });
    writeLayoutIndex(dir, [{ ...m, annotations: { 'org.opencontainers.image.ref.name': 's' } }]);
    const r = await OciLayoutReader.openDir(dir);
    const img = await r.image('s');
    expect(img.digest.toString()).toBe(m.digest); // the digest it was found by
    expect(img.digest.algorithm).toBe('sha512');
    expect(img.manifest.config.digest.toString()).toBe(sha512(config).toString());
    expect(img.layers.map((l) => l.digest.algorithm)).toEqual(['sha512', 'sha512']);
    expect(sha256(await collect(img.layers[1]!.uncompressed())).toString()).toBe(sha256(app).toString());
    // the CLI finds the tags of an image by comparing index.json digests with image.digest
    expect(
      r
        .entries()
        .filter((e) => e.descriptor.digest.equals(img.digest))
        .map((e) => e.tag),
    ).toEqual(['s']);
    await convertEverywhere(img);

    // a tampered sha512 blob is caught, naming the sha512 digest
    const layer = img.layers[1]!.digest;
    writeFileSync(path.join(dir, 'blobs', 'sha512', layer.hex), gzipSync(layerTar({ 'app/one': 'ONE\n' })));
    await expectCode(
      OciLayoutReader.openDir(dir).then((x) => x.image('s')),
      'ERR_DIGEST_MISMATCH',
      new RegExp(layer.hex),
    );
  });

  it('index.json without annotations: one untagged image opens; several are chosen by platform', async () => {
    const dir = tmp('no-annotations');
    const amd = handImage(dir, { config: configFor([base]), stored: [base], mediaType: OCI_LAYER });
    writeLayoutIndex(dir, [amd]); // no annotations, no platform, no mediaType on the index
    const r = await OciLayoutReader.openDir(dir);
    expect(r.tags()).toEqual([]);
    expect(r.entries()).toHaveLength(1);
    expect((await r.image()).digest.toString()).toBe(amd.digest);
    await expectCode(r.image('latest'), 'ERR_IMAGE_NOT_FOUND', /no image tagged "latest" \(have none\)/);

    const arm = handImage(dir, {
      config: configFor([app], { architecture: 'arm64', variant: 'v8' }),
      stored: [app],
      mediaType: OCI_LAYER,
    });
    writeLayoutIndex(dir, [
      { ...amd, platform: { architecture: 'amd64', os: 'linux' } },
      { ...arm, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
    ]);
    const r2 = await OciLayoutReader.openDir(dir);
    expect((await r2.image(undefined, { platform: 'linux/arm64' })).config.architecture).toBe('arm64');
    expect((await r2.image(undefined, { platform: 'linux/amd64' })).config.architecture).toBe('amd64');
    await expectCode(
      r2.image(undefined, { platform: 'linux/s390x' }),
      'ERR_IMAGE_NOT_FOUND',
      /index\.json: no image for linux\/s390x \(have linux\/amd64, linux\/arm64\/v8\)/,
    );
    // without platforms there is nothing to choose by
    writeLayoutIndex(dir, [amd, arm]);
    await expectCode(
      OciLayoutReader.openDir(dir).then((x) => x.image()),
      'ERR_IMAGE_NOT_FOUND',
      /2 images; name one by tag/,
    );
  });

  it('nested indexes: index.json → index → index → manifest, by platform; depth cap; missing and wrong children', async () => {
    const dir = tmp('nested');
    const amd = handImage(dir, { config: configFor([base]), stored: [gzipSync(base)], mediaType: OCI_LAYER_GZIP });
    const arm = handImage(dir, {
      config: configFor([app], { architecture: 'arm64' }),
      stored: [gzipSync(app)],
      mediaType: OCI_LAYER_GZIP,
    });
    const index = (manifests: unknown[]) => ({
      mediaType: OCI_INDEX,
      ...putBlob(dir, enc.encode(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }))),
    });
    const inner = index([
      { ...amd, platform: { architecture: 'amd64', os: 'linux' } },
      { ...arm, platform: { architecture: 'arm64', os: 'linux' } },
    ]);
    // an attestation-like entry (unknown/unknown) must never be picked
    const outer = index([
      { ...amd, platform: { architecture: 'unknown', os: 'unknown' } },
      { ...inner, platform: { architecture: 'arm64', os: 'linux' } },
      { ...inner, platform: { architecture: 'amd64', os: 'linux' } },
    ]);
    writeLayoutIndex(dir, [{ ...outer, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }]);
    const r = await OciLayoutReader.openDir(dir);
    expect(r.entries()).toEqual([]); // images only
    expect(r.refs().map((e) => e.tag)).toEqual(['multi']);
    expect(r.tags()).toEqual(['multi']);
    const a = await r.image('multi', { platform: 'linux/arm64' });
    expect(a.digest.toString()).toBe(arm.digest);
    expect(a.config.architecture).toBe('arm64');
    expect((await r.image('multi', { platform: 'linux/amd64' })).digest.toString()).toBe(amd.digest);
    expect((await r.image()).config.architecture).toBe(process.arch === 'arm64' ? 'arm64' : 'amd64');
    const idx = await r.indexAt(r.refs()[0]!.descriptor);
    expect(idx.digest.toString()).toBe(outer.digest);
    expect(idx.manifests).toHaveLength(3);
    const child = await idx.childIndex(idx.manifests[1]!);
    expect(child.manifests.map((d) => d.digest.toString())).toEqual([amd.digest, arm.digest]);
    await expectCode(idx.image(idx.manifests[1]!), 'ERR_ARCHIVE_FORMAT', /is a .*index.*not an image manifest/);
    await expectCode(idx.childIndex(idx.manifests[0]!), 'ERR_ARCHIVE_FORMAT', /not an index/);
    await expectCode(
      r.image('multi', { platform: 'windows/amd64' }),
      'ERR_IMAGE_NOT_FOUND',
      new RegExp(
        `index ${outer.digest}: no image for windows/amd64 \\(have unknown/unknown, linux/arm64, linux/amd64\\)`,
      ),
    );
    await convertEverywhere(a);

    // indexes nested deeper than the cap (8) are refused
    let deep = inner;
    for (let i = 0; i < 8; i++) deep = index([{ ...deep, platform: { architecture: 'amd64', os: 'linux' } }]);
    writeLayoutIndex(dir, [{ ...deep, annotations: { 'org.opencontainers.image.ref.name': 'deep' } }]);
    await expectCode(
      OciLayoutReader.openDir(dir).then((x) => x.image('deep', { platform: 'linux/amd64' })),
      'ERR_ARCHIVE_FORMAT',
      /nested more than 8 deep/,
    );
    // a nested index whose blob is gone
    rmSync(path.join(dir, 'blobs', 'sha256', inner.digest.slice(7)));
    writeLayoutIndex(dir, [{ ...outer, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }]);
    await expectCode(
      OciLayoutReader.openDir(dir).then((x) => x.image('multi', { platform: 'linux/amd64' })),
      'ERR_ARCHIVE_MEMBER_MISSING',
      new RegExp(`index ${inner.digest}: blob missing`),
    );
  });

  it('uncompressed (…tar) layers: digest is the diff_id; read, verified, converted', async () => {
    const dir = tmp('plain');
    const m = handImage(dir, { config: configFor([base, app]), stored: [base, app], mediaType: OCI_LAYER });
    writeLayoutIndex(dir, [m]);
    const img = await (await OciLayoutReader.openDir(dir)).image();
    expect(img.layers.map((l) => [l.mediaType, l.digest.toString()])).toEqual([
      [OCI_LAYER, sha256(base).toString()],
      [OCI_LAYER, sha256(app).toString()],
    ]);
    expect(await collect(img.layers[0]!.uncompressed())).toEqual(base);
    await convertEverywhere(img);
    // a plain layer whose bytes are not its diff_id
    writeFileSync(path.join(dir, 'blobs', 'sha256', sha256(app).hex), layerTar({ 'app/one': 'ONE\n' }));
    await expectCode(
      OciLayoutReader.openDir(dir).then((x) => x.image()),
      'ERR_DIGEST_MISMATCH',
      new RegExp(sha256(app).hex),
    );
  });

  it('a layer whose media type says gzip but whose bytes are a plain tar reads by its bytes, as docker does', async () => {
    const dir = tmp('mislabelled');
    const m = handImage(dir, { config: configFor([base, app]), stored: [base, app], mediaType: OCI_LAYER_GZIP });
    writeLayoutIndex(dir, [m]);
    const img = await (await OciLayoutReader.openDir(dir)).image(); // native verification: by bytes
    expect(await collect(img.layers[1]!.uncompressed())).toEqual(app); // the JS path: by bytes too
    await convertEverywhere(img);
  });

  it("verify: 'on-read' opens at once; a layer's stream ends only once its digest and diff_id checked out", async () => {
    const dir = tmp('on-read');
    // The config claims a diff_id the second layer does not have.
    const wrong = configFor([base, layerTar({ 'app/one': 'other\n' })]);
    const m = handImage(dir, { config: wrong, stored: [gzipSync(base), gzipSync(app)], mediaType: OCI_LAYER_GZIP });
    writeLayoutIndex(dir, [m]);
    await expectCode(
      OciLayoutReader.openDir(dir).then((r) => r.image()),
      'ERR_DIGEST_MISMATCH',
    );
    const img = await (await OciLayoutReader.openDir(dir, { verify: 'on-read' })).image();
    expect((await collect(img.layers[0]!.compressed())).length).toBe(img.layers[0]!.size);
    await expectCode(
      collect(img.layers[1]!.compressed()),
      'ERR_DIGEST_MISMATCH',
      new RegExp(img.layers[1]!.digest.hex),
    );
    // The same through the wasm-free fallback (no blob file): an oci-archive of the layout.
    const archive = `${dir}.tar`;
    execFileSync('tar', ['-C', dir, '-cf', archive, '.']);
    const fromTar = await (await OciLayoutReader.openArchive(archive, { verify: 'on-read' })).image();
    await expectCode(collect(fromTar.layers[1]!.compressed()), 'ERR_DIGEST_MISMATCH');
  });

  it('zstd (…tar+zstd) layers: verified, decompressed, converted to a docker-archive; a corrupt frame is named', async () => {
    const dir = tmp('zstd');
    const src = tmp('zstd-src');
    mkdirSync(path.join(src, 'etc'), { recursive: true });
    writeFileSync(path.join(src, 'etc', 'z'), 'zstd\n'.repeat(1000));
    const out = tmp('layer.zst');
    const rep = await createLayer(src, out, { compression: 'zstd', clampMtime: 0 });
    const blob = new Uint8Array(readFileSync(out));
    expect([...blob.subarray(0, 4)]).toEqual([0x28, 0xb5, 0x2f, 0xfd]);
    const config = enc.encode(
      JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [rep.diffId] } }),
    );
    const m = handImage(dir, { config, stored: [blob], mediaType: OCI_LAYER_ZSTD });
    writeLayoutIndex(dir, [m]);
    const img = await (await OciLayoutReader.openDir(dir)).image();
    expect(img.layers[0]!.mediaType).toBe(OCI_LAYER_ZSTD);
    const tar = await collect(img.layers[0]!.uncompressed());
    expect(sha256(tar).toString()).toBe(rep.diffId);
    await convertEverywhere(img);

    // zstd bytes that stop mid-frame (named by their own digest): the layer is named
    const cut = blob.subarray(0, blob.length - 8);
    const bad = tmp('zstd-bad');
    writeLayoutIndex(bad, [handImage(bad, { config, stored: [cut], mediaType: OCI_LAYER_ZSTD })]);
    const e = await errorOf(OciLayoutReader.openDir(bad).then((x) => x.image()));
    expect(e.message).toMatch(new RegExp(`layer ${sha256(cut).toString()}`));
    const lazy = await (await OciLayoutReader.openDir(bad, { verify: false })).image();
    await expectCode(collect(lazy.layers[0]!.uncompressed()), 'ERR_ARCHIVE_FORMAT', /layer sha256:.*: zstd: /);
  });

  it("a layer tar that ends right after its last entry's data (umoci ≤ 0.4.7 insert) verifies; other truncations do not", async () => {
    const full = writeTar([
      { entry: { path: 'etc/', type: 'directory' } },
      { entry: { path: 'etc/hi', type: 'file', mode: 0o644 }, data: enc.encode('hi\n') },
    ]);
    // header blocks of etc/ and etc/hi (PAX headers may precede), then 3 data bytes
    const end = full.length - 1024 - 509; // drop the end-of-archive blocks and the padding
    expect(new TextDecoder().decode(full.subarray(end - 3, end))).toBe('hi\n');
    const open = async (tar: Uint8Array, gzip: boolean) => {
      const dir = tmp('umoci-tail');
      const stored = gzip ? gzipSync(tar) : tar;
      writeLayoutIndex(dir, [
        handImage(dir, { config: configFor([tar]), stored: [stored], mediaType: gzip ? OCI_LAYER_GZIP : OCI_LAYER }),
      ]);
      return (await OciLayoutReader.openDir(dir)).image();
    };
    for (const gzip of [true, false]) {
      const img = await open(full.subarray(0, end), gzip);
      expect(img.layers[0]!.diffId.toString()).toBe(sha256(full.subarray(0, end)).toString());
      // part of the padding there: not what Go accepts either
      await expectCode(open(full.subarray(0, end + 100), gzip), 'ERR_TAR_TRUNCATED', /etc\/hi.*padding/);
      // data cut short
      await expectCode(open(full.subarray(0, end - 1), gzip), 'ERR_TAR_TRUNCATED', /etc\/hi.*entry data is missing/);
    }
    // the benign shape still needs the right diff_id
    const dir = tmp('umoci-tail-bad');
    const tail = full.subarray(0, end);
    writeLayoutIndex(dir, [
      handImage(dir, { config: configFor([base]), stored: [gzipSync(tail)], mediaType: OCI_LAYER_GZIP }),
    ]);
    await expectCode(
      OciLayoutReader.openDir(dir).then((x) => x.image()),
      'ERR_DIGEST_MISMATCH',
      new RegExp(sha256(base).hex),
    );
  });

  it('symlinks: a blob, blobs/ directory or index.json leading out of the layout is refused; links inside are followed', async () => {
    const make = () => {
      const dir = tmp('links');
      const m = handImage(dir, { config: configFor([base]), stored: [gzipSync(base)], mediaType: OCI_LAYER_GZIP });
      writeLayoutIndex(dir, [{ ...m, annotations: { 'org.opencontainers.image.ref.name': 't' } }]);
      const layer = path.join(dir, 'blobs', 'sha256', sha256(gzipSync(base)).hex);
      return { dir, layer, hex: sha256(gzipSync(base)).hex };
    };
    const outside = tmp('outside');
    mkdirSync(outside);

    // the same bytes, outside: still refused (the layout reads nothing from elsewhere)
    let l = make();
    writeFileSync(path.join(outside, 'blob'), readFileSync(l.layer));
    rmSync(l.layer);
    symlinkSync(path.join(outside, 'blob'), l.layer);
    await expectCode(
      OciLayoutReader.openDir(l.dir).then((x) => x.image('t')),
      'ERR_ARCHIVE_BAD_LINK',
      new RegExp(`blobs/sha256/${l.hex} leads through a symlink to .*outside the layout`),
    );
    rmSync(l.layer);
    symlinkSync(`../../../${path.basename(outside)}/blob`, l.layer); // relative, out
    await expectCode(
      OciLayoutReader.openDir(l.dir).then((x) => x.image('t')),
      'ERR_ARCHIVE_BAD_LINK',
    );
    rmSync(l.layer);
    symlinkSync('/nonexistent/blob', l.layer); // dangling
    await expectCode(
      OciLayoutReader.openDir(l.dir).then((x) => x.image('t')),
      'ERR_ARCHIVE_BAD_LINK',
      /dangling symlink/,
    );
    // inside the layout: fine
    rmSync(l.layer);
    writeFileSync(path.join(l.dir, 'kept'), readFileSync(path.join(outside, 'blob')));
    symlinkSync('../../kept', l.layer);
    expect((await (await OciLayoutReader.openDir(l.dir)).image('t')).layers).toHaveLength(1);

    // blobs/sha256 itself a link out of the layout
    l = make();
    const moved = path.join(outside, 'sha256');
    rmSync(moved, { recursive: true, force: true });
    mkdirSync(moved);
    renameSync(path.join(l.dir, 'blobs', 'sha256'), path.join(moved, 'b'));
    symlinkSync(path.join(moved, 'b'), path.join(l.dir, 'blobs', 'sha256'));
    await expectCode(
      OciLayoutReader.openDir(l.dir).then((x) => x.image('t')),
      'ERR_ARCHIVE_BAD_LINK',
      /outside the layout/,
    );

    // index.json a link out of the layout
    l = make();
    writeFileSync(path.join(outside, 'index.json'), readFileSync(path.join(l.dir, 'index.json')));
    rmSync(path.join(l.dir, 'index.json'));
    symlinkSync(path.join(outside, 'index.json'), path.join(l.dir, 'index.json'));
    await expectCode(OciLayoutReader.openDir(l.dir), 'ERR_ARCHIVE_BAD_LINK', /index\.json leads through a symlink/);
  });
});

describe('docker-archives other tools write', () => {
  const a = { config: configFor([base, app]), layers: [base, app] };
  const b = { config: configFor([base, app], { config: { Cmd: ['b'] } }), layers: [base, app] };
  const c = { config: configFor([base], { architecture: 'arm64', variant: 'v8' }), layers: [base] };

  it('Docker 25+ layout by hand: OCI manifests used, a tag with a registry port, an image saved by ID', async () => {
    const file = path.join(root, 'docker25.tar');
    writeFileSync(
      file,
      docker25Archive([
        { ...a, tags: ['sd25-a:1', 'localhost:5000/a/b:1'] },
        { ...b, tags: [] }, // saved by ID: no index.json entry, RepoTags null
        { ...c, tags: ['sd25-c:latest'], platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
      ]),
    );
    const arc = await DockerArchive.open(file);
    try {
      expect(arc.format).toBe('oci');
      expect(arc.images.map((i) => [...i.repoTags])).toEqual([
        ['sd25-a:1', 'localhost:5000/a/b:1'],
        [],
        ['sd25-c:latest'],
      ]);
      const ia = arc.image('localhost:5000/a/b:1');
      expect(arc.image('sd25-a:1')).toBe(ia);
      expect(arc.image('docker.io/library/sd25-a:1')).toBe(ia); // full form of a familiar tag
      expect(ia.configDigest.toString()).toBe(sha256(a.config).toString());
      // the OCI manifest of the layout is the image's manifest (its digest is kept)
      expect(arc.layout!.index.manifests.map((d) => d.annotations?.['io.containerd.image.name'])).toEqual([
        'docker.io/library/sd25-a:1',
        'localhost:5000/a/b:1',
        'docker.io/library/sd25-c:latest',
      ]);
      expect(ia.digest.toString()).toBe(arc.layout!.index.manifests[0]!.digest.toString());
      expect(ia.manifest.config.platform).toEqual({ architecture: 'amd64', os: 'linux' });
      const ib = arc.images[1]!;
      expect(ib.configDigest.toString()).toBe(sha256(b.config).toString());
      expect(ib.layers.map((l) => l.digest.toString())).toEqual(ia.layers.map((l) => l.digest.toString()));
      expect(arc.image('sd25-c:latest').config.architecture).toBe('arm64');
      expect(() => arc.image('sd25-c:2')).toThrow(/no image tagged sd25-c:2/);
      for (const img of arc.images) await convertEverywhere(img);
    } finally {
      await arc.close();
    }
  });

  it("Docker 25.0.0's OCI manifests without layers: read from manifest.json, as docker load does", async () => {
    const file = path.join(root, 'docker2500.tar');
    writeFileSync(file, docker25Archive([{ ...a, tags: ['sd2500:1'] }], { emptyOciLayers: true }));
    const arc = await DockerArchive.open(file);
    try {
      const img = arc.image('sd2500:1');
      expect(img.layers.map((l) => l.diffId.toString())).toEqual([sha256(base).toString(), sha256(app).toString()]);
      expect(img.manifest.layers).toHaveLength(2); // synthesized from manifest.json
    } finally {
      await arc.close();
    }
  });

  it('Docker 25+ layout whose manifest.json and OCI manifest name different layers is refused', async () => {
    // two images with the same layers in other orders: swap manifest.json's layer lists
    const x = { config: configFor([base, app]), layers: [base, app] };
    const tar = docker25Archive([{ ...x, tags: ['sdx:1'] }]);
    const dir = tmp('d25-mismatch');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'in.tar'), tar);
    mkdirSync(path.join(dir, 'x'));
    execFileSync('tar', ['-xf', path.join(dir, 'in.tar'), '-C', path.join(dir, 'x')]);
    const mj = JSON.parse(readFileSync(path.join(dir, 'x', 'manifest.json'), 'utf8'));
    mj[0].Layers.reverse();
    writeFileSync(path.join(dir, 'x', 'manifest.json'), JSON.stringify(mj));
    execFileSync('tar', ['-cf', path.join(dir, 'out.tar'), '-C', path.join(dir, 'x'), '.']);
    await expectCode(
      DockerArchive.open(path.join(dir, 'out.tar')),
      'ERR_ARCHIVE_FORMAT',
      new RegExp(`manifest\\.json\\[0\\]\\.Layers\\[0\\]: blobs/sha256/${sha256(app).hex} is not layer 0`),
    );
  });

  it("manifest.json naming gzip and zstd blobs (containerd's image store behind docker save): detected, verified", async () => {
    const src = tmp('zstd-da-src');
    mkdirSync(path.join(src, 'app'), { recursive: true });
    writeFileSync(path.join(src, 'app', 'z'), 'zstd in a docker-archive\n');
    const zfile = tmp('da-layer.zst');
    const rep = await createLayer(src, zfile, { compression: 'zstd', clampMtime: 0 });
    const zst = new Uint8Array(readFileSync(zfile));
    const gz = gzipSync(base);
    const build = (diffIds: string[]) => {
      const config = enc.encode(
        JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } }),
      );
      const blob = (b: Uint8Array) => ({
        entry: { path: `blobs/sha256/${sha256(b).hex}`, type: 'file' as const },
        data: b,
      });
      const manifest = [
        {
          Config: `blobs/sha256/${sha256(config).hex}`,
          RepoTags: ['ctr:1'],
          Layers: [`blobs/sha256/${sha256(gz).hex}`, `blobs/sha256/${sha256(zst).hex}`],
        },
      ];
      const file = tmp('ctr.tar');
      writeFileSync(
        file,
        writeTar([
          blob(config),
          blob(gz),
          blob(zst),
          { entry: { path: 'manifest.json', type: 'file' }, data: enc.encode(JSON.stringify(manifest)) },
        ]),
      );
      return file;
    };
    const arc = await DockerArchive.open(build([sha256(base).toString(), rep.diffId]));
    try {
      const img = arc.image('ctr:1');
      expect(img.layers.map((l) => l.mediaType)).toEqual([OCI_LAYER_GZIP, OCI_LAYER_ZSTD]);
      expect(img.layers[1]!.digest.toString()).toBe(sha256(zst).toString());
      await convertEverywhere(img);
    } finally {
      await arc.close();
    }
    const wrong = sha256(app).toString();
    await expectCode(
      DockerArchive.open(build([sha256(base).toString(), wrong])),
      'ERR_DIGEST_MISMATCH',
      new RegExp(`layer ${sha256(zst).toString()}: diff_id: digest mismatch \\(expected ${wrong}`),
    );
  });

  it('two manifest.json entries with one config keep their own tags', async () => {
    const file = path.join(root, 'same-config.tar');
    writeFileSync(
      file,
      docker25Archive([
        { ...a, tags: ['one:1'] },
        { ...a, tags: ['two:1'] },
      ]),
    );
    const arc = await DockerArchive.open(file);
    try {
      expect(arc.images.map((i) => [...i.repoTags])).toEqual([['one:1'], ['two:1']]);
      expect(arc.image('two:1').repoTags).toEqual(['two:1']);
    } finally {
      await arc.close();
    }
  });

  it('a sha512-named config in manifest.json is checked against its name', async () => {
    const dir = tmp('d-sha512');
    const x = path.join(dir, 'x');
    mkdirSync(x, { recursive: true });
    writeFileSync(path.join(dir, 'in.tar'), docker25Archive([{ ...a, tags: ['s512:1'] }]));
    execFileSync('tar', ['-xf', path.join(dir, 'in.tar'), '-C', x]);
    rmSync(path.join(x, 'index.json'));
    rmSync(path.join(x, 'oci-layout'));
    const d = sha512(a.config);
    mkdirSync(path.join(x, 'blobs', 'sha512'));
    writeFileSync(path.join(x, 'blobs', 'sha512', d.hex), a.config);
    const mj = JSON.parse(readFileSync(path.join(x, 'manifest.json'), 'utf8'));
    mj[0].Config = `blobs/sha512/${d.hex}`;
    writeFileSync(path.join(x, 'manifest.json'), JSON.stringify(mj));
    execFileSync('tar', ['-cf', path.join(dir, 'ok.tar'), '-C', x, '.']);
    const arc = await DockerArchive.open(path.join(dir, 'ok.tar'));
    expect(arc.image('s512:1').configDigest.toString()).toBe(sha256(a.config).toString());
    await arc.close();
    writeFileSync(path.join(x, 'blobs', 'sha512', d.hex), b.config);
    execFileSync('tar', ['-cf', path.join(dir, 'bad.tar'), '-C', x, '.']);
    await expectCode(
      DockerArchive.open(path.join(dir, 'bad.tar')),
      'ERR_DIGEST_MISMATCH',
      new RegExp(`config blobs/sha512/${d.hex}: digest mismatch \\(expected sha512:`),
    );
  });
});
