// Our readers on archives and layouts made by the real producers: `docker save` (several images
// in one archive, one saved by ID, a registry-with-port tag), skopeo (docker-archive with
// --additional-tag, oci-archive, oci: with two tags, `copy --all` of a two-platform index, zstd),
// umoci (init/new/insert/config/repack/tag), and GNU tar for hostile edits of their output. Each
// is opened, listed, read with every digest verified, converted, and where it can be, handed back
// to dockerd (`docker load`, `docker run`). Skips when not root or dockerd is missing, unless
// STEVEDORE_REQUIRE_DOCKER=1.
import { execFileSync } from 'node:child_process';
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hash, sha256 } from '@stevedore/core';
import {
  copyImage,
  DockerArchive,
  dockerArchiveSink,
  type Image,
  OCI_INDEX,
  OCI_LAYER_GZIP,
  OCI_LAYER_ZSTD,
  OciLayoutReader,
  ociLayoutSink,
  REF_NAME_ANNOTATION,
} from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { bins, buildScratchImage, type Dockerd, startDockerd } from '../../../test/harness/index.js';
import { collect } from './archive-fixtures.js';

const SKOPEO = process.env.STEVEDORE_SKOPEO ?? '/usr/bin/skopeo';
const UMOCI = process.env.STEVEDORE_UMOCI ?? '/usr/bin/umoci';
const { canRun } = useRealComponents({ registry: false });

const A = 'sd-prod-a:1';
const B = 'localhost:5000/a/b:1'; // FROM A, a registry with a port
const C = 'sd-prod-c:1'; // FROM A, saved by ID only
const ARM = 'sd-prod-arm:1'; // FROM scratch, --platform linux/arm64

const skopeo = (...args: string[]) => execFileSync(SKOPEO, ['--insecure-policy', ...args], { stdio: 'pipe' });
const umoci = (...args: string[]) => execFileSync(UMOCI, args, { stdio: 'pipe' });
const tar = (...args: string[]) => execFileSync('tar', args, { stdio: 'pipe' });

async function errorOf(p: Promise<unknown>): Promise<Error & { code?: string }> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, 'expected an error').toBeInstanceOf(Error);
  return e as Error & { code?: string };
}

async function expectCode(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const e = await errorOf(p);
  expect(e.code, e.message).toBe(code);
  expect(e.message).toMatch(message);
}

/** Every layer's stored bytes hash to its digest, and its tar to its diff_id (independently of the reader). */
async function expectLayersVerify(img: Image): Promise<void> {
  for (const l of img.layers) {
    expect(hash(l.digest.algorithm, await collect(l.compressed())).toString()).toBe(l.digest.toString());
    expect(sha256(await collect(l.uncompressed())).toString()).toBe(l.diffId.toString());
  }
}

describe.skipIf(!canRun)('archives and layouts made by docker save, skopeo and umoci', () => {
  let d: Dockerd;
  const work = mkdtempSync(path.join(tmpdir(), 'sd-producers-it-'));
  const multi = path.join(work, 'multi.tar');
  // skopeo 1.9 cannot read a docker-archive layer.tar that is a symlink ("archive/tar: write too
  // long"), which docker save writes for layers shared between the images it saves: skopeo gets
  // one image per archive.
  const single = (t: string) => path.join(work, `single-${t.replace(/[/:]/g, '_')}.tar`);
  const ids: Record<string, string> = {};
  const diffIds: Record<string, string[]> = {};

  /** `docker load` of `file`, then the ID `name` has there. */
  async function load(file: string, name: string): Promise<string> {
    await d.docker(['load', '-i', file]);
    return (await d.docker(['image', 'inspect', '--format', '{{.Id}}', name])).stdout.trim();
  }

  /** Removes images by name or ID (and what only they used), so a load really brings the layers. */
  async function forget(...names: string[]): Promise<void> {
    await d.docker(['rmi', '-f', ...names], { allowFailure: true });
  }

  beforeAll(async () => {
    d = await startDockerd();
    await buildScratchImage(d, A, { 'etc/a.txt': 'a\n', 'app/msg': 'hello from a\n' }, '', {
      busybox: true,
      cmd: ['/bin/busybox', 'cat', '/app/msg'],
    });
    for (const [tag, file] of [
      [B, 'hello from b\n'],
      [C, 'hello from c\n'],
    ] as const) {
      const ctx = path.join(work, `ctx-${file.slice(11, 12)}`);
      mkdirSync(ctx);
      writeFileSync(path.join(ctx, 'msg'), file);
      writeFileSync(path.join(ctx, 'Dockerfile'), `FROM ${A}\nCOPY msg /app/msg\n`);
      await d.docker(['build', '--network', 'none', '--quiet', '-t', tag, ctx], { env: { DOCKER_BUILDKIT: '0' } });
    }
    const arm = path.join(work, 'ctx-arm');
    mkdirSync(arm);
    writeFileSync(path.join(arm, 'f'), 'arm\n');
    writeFileSync(path.join(arm, 'Dockerfile'), 'FROM scratch\nCOPY f /etc/arch\n');
    await d.docker(['build', '--platform', 'linux/arm64', '--network', 'none', '--quiet', '-t', ARM, arm], {
      env: { DOCKER_BUILDKIT: '0' },
    });
    for (const t of [A, B, C, ARM]) {
      const { stdout } = await d.docker(['image', 'inspect', '--format', '{{json .RootFS.Layers}}|{{.Id}}', t]);
      const [layers, id] = stdout.trim().split('|') as [string, string];
      diffIds[t] = JSON.parse(layers) as string[];
      ids[t] = id;
    }
    await d.docker(['save', '-o', multi, A, B, ids[C] as string]);
    for (const t of [A, B]) await d.docker(['save', '-o', single(t), t]);
  }, 240_000);

  afterAll(async () => {
    await d?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('docker save of three images sharing layers, one by ID (RepoTags null), one tagged localhost:5000/a/b:1', async () => {
    expect(diffIds[B]!.slice(0, 3)).toEqual(diffIds[A]);
    expect(diffIds[C]!.slice(0, 3)).toEqual(diffIds[A]);
    // what docker wrote: the image saved by ID has no tags
    const raw = JSON.parse(execFileSync('tar', ['-xOf', multi, 'manifest.json'], { encoding: 'utf8' })) as {
      Config: string;
      RepoTags: string[] | null;
    }[];
    expect(raw).toHaveLength(3);
    expect(raw.find((e) => e.Config.startsWith(ids[C]!.slice(7)))?.RepoTags).toBeNull();

    const arc = await DockerArchive.open(multi);
    try {
      expect(arc.format).toBe('legacy');
      expect(arc.images).toHaveLength(3);
      const byId = (t: string) => arc.images.find((i) => i.configDigest.toString() === ids[t]);
      expect(byId(C)?.repoTags).toEqual([]);
      expect(arc.image(B)).toBe(byId(B));
      expect(arc.image(A)).toBe(byId(A));
      expect(arc.image(`docker.io/library/${A}`)).toBe(byId(A));
      expect(() => arc.image()).toThrow(/3 images; name one by tag/);
      expect(() => arc.image('localhost:5000/a/b:2')).toThrow(/no image tagged localhost:5000\/a\/b:2/);
      for (const t of [A, B, C]) {
        const img = byId(t)!;
        expect(img.layers.map((l) => l.diffId.toString())).toEqual(diffIds[t]);
        await expectLayersVerify(img);
      }
      // shared layers are the same members
      expect(byId(C)!.layers[2]!.digest.equals(byId(B)!.layers[2]!.digest)).toBe(true);

      // archive → OCI layout → docker-archive (both layouts) → docker load: the same image IDs
      const layout = path.join(work, 'multi-layout');
      const sink = ociLayoutSink(layout);
      await copyImage(byId(A)!, sink, { tags: ['a'] });
      await copyImage(byId(B)!, sink, { tags: ['b'] });
      await copyImage(byId(C)!, sink); // untagged
      const r = await OciLayoutReader.openDir(layout);
      expect(r.tags()).toEqual(['a', 'b']);
      expect(r.entries()).toHaveLength(3);
      const fromLayout = await Promise.all(r.entries().map((e) => r.imageAt(e.descriptor)));
      for (const layoutKind of ['legacy', 'oci'] as const) {
        const out = path.join(work, `multi-back-${layoutKind}.tar`);
        const ds = dockerArchiveSink(out, { layout: layoutKind });
        await copyImage(fromLayout[0]!, ds, { tags: [A] });
        await copyImage(fromLayout[1]!, ds, { tags: [B] });
        await copyImage(fromLayout[2]!, ds);
        await ds.close();
        await forget(A, B, C, ids[C]!);
        const load = await d.docker(['load', '-i', out]);
        expect(load.stdout).toContain(B);
        expect(load.stdout).toContain(ids[C]); // loaded by ID
        expect((await d.docker(['image', 'inspect', '--format', '{{.Id}}', B])).stdout.trim()).toBe(ids[B]);
        expect((await d.docker(['image', 'inspect', '--format', '{{.Id}}', ids[C]!])).stdout.trim()).toBe(ids[C]);
        expect((await d.docker(['run', '--rm', '--network', 'none', B])).stdout).toBe('hello from b\n');
      }
      await d.docker(['tag', ids[C]!, C]);
    } finally {
      await arc.close();
    }
  });

  it('skopeo docker-archive with --additional-tag, oci-archive, and oci: with two tags in one layout', async () => {
    const da = path.join(work, 'skopeo-da.tar');
    skopeo(
      'copy',
      '--quiet',
      '--additional-tag',
      'other:2',
      `docker-archive:${single(B)}`,
      `docker-archive:${da}:${B}`,
    );
    const arc = await DockerArchive.open(da);
    try {
      expect(arc.images).toHaveLength(1);
      const img = arc.image(B);
      // skopeo writes the additional tag in full (docker.io/library/other:2); both forms find it
      expect(arc.image('other:2')).toBe(img);
      expect(arc.image('docker.io/library/other:2')).toBe(img);
      expect(img.repoTags).toContain(B);
      expect(img.configDigest.toString()).toBe(ids[B]);
      expect(img.layers.map((l) => l.diffId.toString())).toEqual(diffIds[B]);
      await expectLayersVerify(img);
    } finally {
      await arc.close();
    }

    const oa = path.join(work, 'skopeo.oci.tar');
    skopeo('copy', '--quiet', `docker-archive:${single(A)}`, `oci-archive:${oa}:a`);
    const ra = await OciLayoutReader.openArchive(oa);
    try {
      expect(ra.tags()).toEqual(['a']);
      const img = await ra.image('a');
      expect(img.layers.every((l) => l.mediaType === OCI_LAYER_GZIP)).toBe(true);
      expect(img.config.rootfs.diff_ids.map(String)).toEqual(diffIds[A]);
      expect(img.config.config?.Cmd).toEqual(['/bin/busybox', 'cat', '/app/msg']);
      await expectLayersVerify(img);
      // oci-archive → docker-archive → docker load → run
      const out = path.join(work, 'from-skopeo-oa.tar');
      const ds = dockerArchiveSink(out);
      await copyImage(img, ds, { tags: ['sd-from-oa:1'] });
      await ds.close();
      expect(await load(out, 'sd-from-oa:1')).toBe(sha256(img.rawConfig).toString());
      expect((await d.docker(['run', '--rm', '--network', 'none', 'sd-from-oa:1'])).stdout).toBe('hello from a\n');
    } finally {
      await ra.close();
    }

    const lay = path.join(work, 'skopeo-two-tags');
    skopeo('copy', '--quiet', `docker-archive:${single(A)}`, `oci:${lay}:one`);
    skopeo('copy', '--quiet', `docker-archive:${single(A)}`, `oci:${lay}:two`);
    skopeo('copy', '--quiet', `docker-archive:${single(B)}`, `oci:${lay}:b`);
    const r = await OciLayoutReader.openDir(lay);
    expect(r.tags()).toEqual(['one', 'two', 'b']);
    const [one, two, b] = await Promise.all(['one', 'two', 'b'].map((t) => r.image(t)));
    expect(one!.digest.equals(two!.digest)).toBe(true);
    expect(b!.config.rootfs.diff_ids.map(String)).toEqual(diffIds[B]);
    expect(b!.layers[0]!.digest.equals(one!.layers[0]!.digest)).toBe(true); // one blob, shared
    await expectCode(r.image(), 'ERR_IMAGE_NOT_FOUND', /3 images; name one by tag \(one, two, b\)/);
    // and skopeo reads what we write from it
    const ours = path.join(work, 'ours-from-two-tags');
    await copyImage(two!, ociLayoutSink(ours), { tags: ['back'] });
    const inspected = JSON.parse(
      execFileSync(SKOPEO, ['inspect', '--config', `oci:${ours}:back`], { encoding: 'utf8' }),
    ) as { rootfs: { diff_ids: string[] } };
    expect(inspected.rootfs.diff_ids).toEqual(diffIds[A]);
  });

  it('skopeo copy --all of a two-platform index into an OCI layout: nested index, platform choice', async () => {
    expect((await d.docker(['image', 'inspect', '--format', '{{.Architecture}}', ARM])).stdout.trim()).toBe('arm64');
    const parts = path.join(work, 'parts');
    const armTar = path.join(work, 'arm.tar');
    await d.docker(['save', '-o', armTar, ARM]);
    skopeo('copy', '--quiet', `docker-archive:${single(A)}`, `oci:${parts}:amd64`);
    skopeo('copy', '--quiet', `docker-archive:${armTar}`, `oci:${parts}:arm64`);
    // the index, written by hand into the layout, and tagged
    const index = JSON.parse(readFileSync(path.join(parts, 'index.json'), 'utf8')) as {
      manifests: { mediaType: string; digest: string; size: number; annotations: Record<string, string> }[];
    };
    const of = (tag: string) => {
      const m = index.manifests.find((x) => x.annotations[REF_NAME_ANNOTATION] === tag)!;
      return { mediaType: m.mediaType, digest: m.digest, size: m.size };
    };
    const doc = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [
          { ...of('amd64'), platform: { architecture: 'amd64', os: 'linux' } },
          { ...of('arm64'), platform: { architecture: 'arm64', os: 'linux' } },
        ],
      }),
    );
    const idx = sha256(doc);
    writeFileSync(path.join(parts, 'blobs', 'sha256', idx.hex), doc);
    index.manifests.push({
      mediaType: OCI_INDEX,
      digest: idx.toString(),
      size: doc.length,
      annotations: { [REF_NAME_ANNOTATION]: 'multi' },
    });
    writeFileSync(path.join(parts, 'index.json'), JSON.stringify(index));

    const all = path.join(work, 'all');
    const allArchive = path.join(work, 'all.oci.tar');
    skopeo('copy', '--quiet', '--all', `oci:${parts}:multi`, `oci:${all}:multi`);
    skopeo('copy', '--quiet', '--all', `oci:${parts}:multi`, `oci-archive:${allArchive}:multi`);
    const top = JSON.parse(readFileSync(path.join(all, 'index.json'), 'utf8')) as {
      manifests: { mediaType: string }[];
    };
    expect(top.manifests.map((m) => m.mediaType)).toEqual([OCI_INDEX]); // index.json → index
    for (const r of [await OciLayoutReader.openDir(all), await OciLayoutReader.openArchive(allArchive)]) {
      try {
        expect(r.tags()).toEqual(['multi']);
        expect(r.entries()).toEqual([]);
        const arm = await r.image('multi', { platform: 'linux/arm64' });
        expect(arm.config.architecture).toBe('arm64');
        expect(arm.config.rootfs.diff_ids.map(String)).toEqual(diffIds[ARM]);
        await expectLayersVerify(arm);
        const amd = await r.image('multi', { platform: 'linux/amd64' });
        expect(amd.config.rootfs.diff_ids.map(String)).toEqual(diffIds[A]);
        expect((await r.image('multi')).digest.equals(process.arch === 'arm64' ? arm.digest : amd.digest)).toBe(true);
        expect((await r.image()).digest.equals(process.arch === 'arm64' ? arm.digest : amd.digest)).toBe(true);
        await expectCode(
          r.image('multi', { platform: 'linux/s390x' }),
          'ERR_IMAGE_NOT_FOUND',
          /no image for linux\/s390x \(have linux\/amd64, linux\/arm64\)/,
        );
        const i = await r.indexAt(r.refs()[0]!.descriptor);
        expect(i.digest.toString()).toBe(idx.toString()); // skopeo kept the index bytes
        expect((await i.imageFor('linux/arm64')).digest.equals(arm.digest)).toBe(true);
        // the platform chosen → docker-archive → docker load
        const out = path.join(work, `from-index-${r.label === all ? 'dir' : 'archive'}.tar`);
        const ds = dockerArchiveSink(out);
        await copyImage(arm, ds, { tags: ['sd-from-index:arm'] });
        await ds.close();
        await forget('sd-from-index:arm');
        // skopeo rewrote docker's config as an OCI config (another image ID); the diff_ids are docker's
        expect(await load(out, 'sd-from-index:arm')).toBe(sha256(arm.rawConfig).toString());
        expect(
          (
            await d.docker(['image', 'inspect', '--format', '{{json .RootFS.Layers}}', 'sd-from-index:arm'])
          ).stdout.trim(),
        ).toBe(JSON.stringify(diffIds[ARM]));
      } finally {
        await r.close();
      }
    }
  });

  it('skopeo zstd layers (--dest-compress-format zstd): verified, and a docker-archive made from them runs', async () => {
    const z = path.join(work, 'zstd');
    skopeo('copy', '--quiet', '--dest-compress-format', 'zstd', `docker-archive:${single(A)}`, `oci:${z}:a`);
    const img = await (await OciLayoutReader.openDir(z)).image('a');
    expect(img.layers.map((l) => l.mediaType)).toEqual(diffIds[A]!.map(() => OCI_LAYER_ZSTD));
    const head = readFileSync(path.join(z, 'blobs', 'sha256', img.layers[0]!.digest.hex)).subarray(0, 4);
    expect([...head]).toEqual([0x28, 0xb5, 0x2f, 0xfd]);
    await expectLayersVerify(img);
    // the layout and oci-archive sinks keep the zstd blobs as they are
    const kept = path.join(work, 'zstd-kept');
    await copyImage(img, ociLayoutSink(kept), { tags: ['k'] });
    const k = await (await OciLayoutReader.openDir(kept)).image('k');
    expect(k.layers.map((l) => l.digest.toString())).toEqual(img.layers.map((l) => l.digest.toString()));
    // docker's form is plain tar: decompressed (and checked against the diff_ids) on the way
    const out = path.join(work, 'from-zstd.tar');
    const ds = dockerArchiveSink(out);
    await copyImage(img, ds, { tags: ['sd-from-zstd:1'] });
    await ds.close();
    expect(await load(out, 'sd-from-zstd:1')).toBe(sha256(img.rawConfig).toString());
    expect((await d.docker(['run', '--rm', '--network', 'none', 'sd-from-zstd:1'])).stdout).toBe('hello from a\n');
  });

  it('umoci: init, new, insert, config (cmd, annotation), repack, tag; read, verified, and docker runs it', async () => {
    const u = path.join(work, 'umoci');
    umoci('init', '--layout', u);
    umoci('new', '--image', `${u}:t`);
    const empty = await (await OciLayoutReader.openDir(u)).image('t');
    expect(empty.layers).toEqual([]);
    const files = path.join(work, 'umoci-files');
    mkdirSync(files);
    writeFileSync(path.join(files, 'hi'), 'hi from umoci\n');
    umoci('insert', '--image', `${u}:t`, bins.busybox, '/bin/busybox');
    umoci('insert', '--image', `${u}:t`, path.join(files, 'hi'), '/etc/hi');
    umoci(
      'config',
      '--image',
      `${u}:t`,
      '--config.cmd',
      '/bin/busybox',
      '--config.cmd',
      'cat',
      '--config.cmd',
      '/etc/more',
      '--manifest.annotation',
      'org.example.made-by=umoci',
    );
    const bundle = path.join(work, 'umoci-bundle');
    umoci('unpack', '--image', `${u}:t`, bundle);
    writeFileSync(path.join(bundle, 'rootfs', 'etc', 'more'), 'more from repack\n');
    umoci('repack', '--image', `${u}:t`, bundle);
    umoci('tag', '--image', `${u}:t`, 't2');

    const r = await OciLayoutReader.openDir(u);
    expect(r.tags()).toEqual(['t', 't2']);
    const img = await r.image('t');
    expect((await r.image('t2')).digest.equals(img.digest)).toBe(true);
    expect(img.manifest.annotations?.['org.example.made-by']).toBe('umoci');
    expect(img.config.config?.Cmd).toEqual(['/bin/busybox', 'cat', '/etc/more']);
    expect(img.layers).toHaveLength(3);
    expect(img.layers.every((l) => l.mediaType === OCI_LAYER_GZIP)).toBe(true);
    expect(img.config.history?.map((h) => h.created_by)).toEqual([
      'umoci insert',
      'umoci insert',
      'umoci config',
      'umoci repack',
    ]);
    await expectLayersVerify(img);
    const inserted = await collect(img.layers[1]!.uncompressed());
    expect(Buffer.from(inserted).includes('hi from umoci\n')).toBe(true);

    const out = path.join(work, 'from-umoci.tar');
    const ds = dockerArchiveSink(out);
    await copyImage(img, ds, { tags: ['sd-from-umoci:1'] });
    await ds.close();
    expect(await load(out, 'sd-from-umoci:1')).toBe(sha256(img.rawConfig).toString());
    expect((await d.docker(['run', '--rm', '--network', 'none', 'sd-from-umoci:1'])).stdout).toBe('more from repack\n');
    const hi = await d.docker([
      'run',
      '--rm',
      '--network',
      'none',
      'sd-from-umoci:1',
      '/bin/busybox',
      'cat',
      '/etc/hi',
    ]);
    expect(hi.stdout).toBe('hi from umoci\n');
  });

  it('a Docker 25+ docker-archive laid out by hand from docker save output is read, and dockerd 20.10 loads it', async () => {
    const x = path.join(work, 'd25-x');
    mkdirSync(x);
    tar('-xf', multi, '-C', x);
    const legacy = JSON.parse(readFileSync(path.join(x, 'manifest.json'), 'utf8')) as {
      Config: string;
      RepoTags: string[] | null;
      Layers: string[];
    }[];
    const y = path.join(work, 'd25-y');
    const blobs = path.join(y, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    const index: unknown[] = [];
    const manifestJson: unknown[] = [];
    for (const e of legacy) {
      const config = readFileSync(path.join(x, e.Config));
      const cfg = sha256(config);
      writeFileSync(path.join(blobs, cfg.hex), config);
      const layers = e.Layers.map((l) => {
        const bytes = readFileSync(path.join(x, l)); // follows docker's layer.tar symlinks
        const dg = sha256(bytes);
        writeFileSync(path.join(blobs, dg.hex), bytes);
        // the legacy v1 JSON docker 25 also writes per layer
        const v1 = readFileSync(path.join(x, path.dirname(l), 'json'));
        writeFileSync(path.join(blobs, sha256(v1).hex), v1);
        return { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: dg.toString(), size: bytes.length };
      });
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: {
            mediaType: 'application/vnd.oci.image.config.v1+json',
            digest: cfg.toString(),
            size: config.length,
            platform: { architecture: 'amd64', os: 'linux' },
          },
          layers,
        }),
      );
      writeFileSync(path.join(blobs, sha256(manifest).hex), manifest);
      for (const tag of e.RepoTags ?? []) {
        index.push({
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: sha256(manifest).toString(),
          size: manifest.length,
          annotations: {
            'io.containerd.image.name': tag.includes('/') ? tag : `docker.io/library/${tag}`,
            [REF_NAME_ANNOTATION]: tag.slice(tag.lastIndexOf(':') + 1),
          },
        });
      }
      manifestJson.push({
        Config: `blobs/sha256/${cfg.hex}`,
        RepoTags: e.RepoTags,
        Layers: layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`),
      });
    }
    writeFileSync(
      path.join(y, 'index.json'),
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: index }),
    );
    writeFileSync(path.join(y, 'manifest.json'), JSON.stringify(manifestJson));
    writeFileSync(path.join(y, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    cpSync(path.join(x, 'repositories'), path.join(y, 'repositories'));
    const out = path.join(work, 'docker25.tar');
    tar('-cf', out, '-C', y, ...readdirSync(y).sort());

    const arc = await DockerArchive.open(out);
    try {
      expect(arc.format).toBe('oci');
      expect(arc.images.map((i) => i.configDigest.toString()).sort()).toEqual([ids[A], ids[B], ids[C]].sort());
      const b = arc.image(B);
      const entry = arc.layout!.entries().find((e) => e.descriptor.annotations?.['io.containerd.image.name'] === B);
      expect(b.digest.toString()).toBe(entry!.descriptor.digest.toString()); // the OCI manifest, kept
      expect(arc.images.find((i) => i.configDigest.toString() === ids[C])!.repoTags).toEqual([]);
      for (const i of arc.images) await expectLayersVerify(i);
    } finally {
      await arc.close();
    }
    await forget(A, B, C, ids[C]!);
    expect(await load(out, B)).toBe(ids[B]);
    expect((await d.docker(['run', '--rm', '--network', 'none', B])).stdout).toBe('hello from b\n');
  });

  describe('invalid inputs fail clearly, naming the file or entry', () => {
    /** docker save's output extracted, edited by `edit`, packed again with GNU tar. */
    function editedSave(name: string, edit: (dir: string, manifest: { Config: string; Layers: string[] }[]) => void) {
      const x = path.join(work, `bad-${name}`);
      mkdirSync(x);
      tar('-xf', multi, '-C', x);
      const mf = path.join(x, 'manifest.json');
      const m = JSON.parse(readFileSync(mf, 'utf8'));
      edit(x, m);
      writeFileSync(mf, JSON.stringify(m));
      const out = `${x}.tar`;
      tar('-cf', out, '-C', x, ...readdirSync(x).sort());
      return out;
    }

    it('docker-archive: manifest.json naming a missing config, paths out of the archive, links out, duplicates', async () => {
      const missing = 'f'.repeat(64);
      await expectCode(
        DockerArchive.open(editedSave('config', (_, m) => (m[0]!.Config = `${missing}.json`))),
        'ERR_ARCHIVE_MEMBER_MISSING',
        new RegExp(`manifest\\.json\\[0\\]\\.Config: no member "${missing}\\.json"`),
      );
      await expectCode(
        DockerArchive.open(editedSave('dotdot', (_, m) => (m[1]!.Layers[1] = '../x'))),
        'ERR_ARCHIVE_MEMBER_PATH',
        /manifest\.json\[1\]\.Layers\[1\]: "\.\.\/x" leaves the archive/,
      );
      await expectCode(
        DockerArchive.open(editedSave('dotdot2', (_, m) => (m[0]!.Config = `a/../../${m[0]!.Config}`))),
        'ERR_ARCHIVE_MEMBER_PATH',
        /manifest\.json\[0\]\.Config: .* leaves the archive/,
      );
      await expectCode(
        DockerArchive.open(editedSave('abs', (_, m) => (m[2]!.Layers[0] = '/etc/passwd'))),
        'ERR_ARCHIVE_MEMBER_PATH',
        /manifest\.json\[2\]\.Layers\[0\]: "\/etc\/passwd" is absolute/,
      );
      // a layer.tar that is a symlink out of the archive (absolute, and relative)
      for (const target of ['/etc/passwd', '../../outside.tar']) {
        let layer = '';
        const file = editedSave(`link-${target.length}`, (x, m) => {
          layer = m[0]!.Layers[0]!;
          rmSync(path.join(x, layer));
          symlinkSync(target, path.join(x, layer));
        });
        await expectCode(
          DockerArchive.open(file),
          'ERR_ARCHIVE_BAD_LINK',
          new RegExp(`Layers\\[0\\]: symlink ${layer} -> ${target.replace(/\./g, '\\.')} leaves the archive`),
        );
      }
      // duplicates: GNU tar --append of a second manifest.json, and of a layer with other bytes
      const dup = path.join(work, 'dup.tar');
      cpSync(multi, dup);
      const other = path.join(work, 'dup-x');
      mkdirSync(other);
      writeFileSync(path.join(other, 'manifest.json'), '[]');
      tar('--append', '-f', dup, '-C', other, 'manifest.json');
      await expectCode(
        DockerArchive.open(dup),
        'ERR_ARCHIVE_DUPLICATE_MEMBER',
        /member "manifest\.json" appears twice/,
      );
      const dup2 = path.join(work, 'dup2.tar');
      cpSync(multi, dup2);
      const layer = (
        JSON.parse(execFileSync('tar', ['-xOf', multi, 'manifest.json'], { encoding: 'utf8' })) as {
          Layers: string[];
        }[]
      )[0]!.Layers[0]!;
      mkdirSync(path.join(other, path.dirname(layer)));
      writeFileSync(path.join(other, layer), 'not the layer');
      tar('--append', '-f', dup2, '-C', other, `./${layer}`); // `./x` and `x` are one member
      await expectCode(
        DockerArchive.open(dup2),
        'ERR_ARCHIVE_DUPLICATE_MEMBER',
        new RegExp(`member "${layer}" appears twice`),
      );
      // a layer.tar whose bytes are not its diff_id (same size)
      const tampered = editedSave('tamper', (x, m) => {
        const p = path.join(x, m[0]!.Layers[1]!);
        const bytes = readFileSync(p);
        bytes[bytes.length - 1] ^= 1;
        rmSync(p); // a symlink in docker's output: write a file instead
        writeFileSync(p, bytes);
      });
      await expectCode(
        DockerArchive.open(tampered),
        'ERR_DIGEST_MISMATCH',
        /manifest\.json\[0\]\.Layers\[1\]: .*diff_id mismatch/,
      );
    });

    it('OCI layout and oci-archive from skopeo: missing blob, wrong digest, symlinks out of the directory', async () => {
      const good = path.join(work, 'bad-base');
      skopeo('copy', '--quiet', `docker-archive:${single(B)}`, `oci:${good}:b`);
      const img = await (await OciLayoutReader.openDir(good)).image('b');
      const copy = (name: string) => {
        const dir = path.join(work, `bad-oci-${name}`);
        cpSync(good, dir, { recursive: true });
        return dir;
      };
      const blob = (dir: string, dg: { hex: string }) => path.join(dir, 'blobs', 'sha256', dg.hex);
      const layer = img.layers[1]!.digest;

      let dir = copy('missing');
      rmSync(blob(dir, layer));
      await expectCode(
        OciLayoutReader.openDir(dir).then((r) => r.image('b')),
        'ERR_ARCHIVE_MEMBER_MISSING',
        new RegExp(`layer ${layer.toString()}: blob missing`),
      );
      dir = copy('config-missing');
      rmSync(blob(dir, img.manifest.config.digest));
      await expectCode(
        OciLayoutReader.openDir(dir).then((r) => r.image('b')),
        'ERR_ARCHIVE_MEMBER_MISSING',
        new RegExp(`config ${img.manifest.config.digest.toString()}: blob missing`),
      );
      dir = copy('wrong');
      const bytes = readFileSync(blob(dir, layer));
      bytes[4] ^= 0xff; // the gzip header's MTIME: still a valid gzip of the same tar, same size
      writeFileSync(blob(dir, layer), bytes);
      await expectCode(
        OciLayoutReader.openDir(dir).then((r) => r.image('b')),
        'ERR_DIGEST_MISMATCH',
        new RegExp(`layer ${layer.toString()}: .*digest mismatch`),
      );
      dir = copy('short');
      writeFileSync(blob(dir, layer), readFileSync(blob(dir, img.layers[0]!.digest)));
      await expectCode(
        OciLayoutReader.openDir(dir).then((r) => r.image('b')),
        'ERR_SIZE_MISMATCH',
        new RegExp(`layer ${layer.toString()}: size mismatch`),
      );
      dir = copy('wrong-manifest');
      writeFileSync(
        blob(dir, img.digest),
        Buffer.concat([readFileSync(blob(dir, img.digest)).subarray(0, -1), Buffer.from(' ')]),
      );
      await expectCode(
        OciLayoutReader.openDir(dir).then((r) => r.image('b')),
        'ERR_DIGEST_MISMATCH',
        new RegExp(`manifest ${img.digest.toString()}: digest mismatch`),
      );
      // symlinks out of the layout: a blob, the blobs directory, index.json
      dir = copy('link-blob');
      renameSync(blob(dir, layer), path.join(work, 'moved-blob'));
      symlinkSync(path.join(work, 'moved-blob'), blob(dir, layer));
      await expectCode(
        OciLayoutReader.openDir(dir).then((r) => r.image('b')),
        'ERR_ARCHIVE_BAD_LINK',
        new RegExp(`blobs/sha256/${layer.hex} leads through a symlink to "${work}/moved-blob", outside the layout`),
      );
      dir = copy('link-dir');
      renameSync(path.join(dir, 'blobs'), path.join(work, 'moved-blobs'));
      symlinkSync(path.join(work, 'moved-blobs'), path.join(dir, 'blobs'));
      await expectCode(
        OciLayoutReader.openDir(dir).then((r) => r.image('b')),
        'ERR_ARCHIVE_BAD_LINK',
        /outside the layout/,
      );
      dir = copy('link-index');
      renameSync(path.join(dir, 'index.json'), path.join(work, 'moved-index.json'));
      symlinkSync('../moved-index.json', path.join(dir, 'index.json'));
      await expectCode(OciLayoutReader.openDir(dir), 'ERR_ARCHIVE_BAD_LINK', /index\.json leads through a symlink/);

      // an oci-archive (GNU tar of the layout) whose blob is a symlink member out of the archive
      dir = copy('tar-link');
      rmSync(blob(dir, layer));
      symlinkSync('../../../etc/passwd', blob(dir, layer));
      const oa = path.join(work, 'bad-link.oci.tar');
      tar('-cf', oa, '-C', dir, 'oci-layout', 'index.json', 'blobs');
      await expectCode(
        OciLayoutReader.openArchive(oa).then((r) => r.image('b')),
        'ERR_ARCHIVE_BAD_LINK',
        new RegExp(`blobs/sha256/${layer.hex} -> \\.\\./\\.\\./\\.\\./etc/passwd leaves the archive`),
      );
      // and a duplicate index.json in it
      const oa2 = path.join(work, 'dup.oci.tar');
      tar('-cf', oa2, '-C', good, 'oci-layout', 'index.json', 'blobs');
      tar('--append', '-f', oa2, '-C', good, 'index.json');
      await expectCode(OciLayoutReader.openArchive(oa2), 'ERR_ARCHIVE_DUPLICATE_MEMBER', /"index\.json" appears twice/);
    });
  });
});
