// Our docker-archive / OCI layout readers and writers against the real things: a private dockerd
// (`docker save`, `docker load`, `docker run`), skopeo (oci: and docker-archive: transports) and
// umoci (unpack). Skips when not root or dockerd is missing, unless STEVEDORE_REQUIRE_DOCKER=1,
// which turns the skip into a failure.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import {
  copyImage,
  DockerArchive,
  OCI_LAYER,
  OciLayoutReader,
  ociArchiveSink,
  ociLayoutSink,
  writeDockerArchive,
} from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { buildScratchImage, type Dockerd, startDockerd } from '../../../test/harness/index.js';
import { collect } from './archive-fixtures.js';

const SKOPEO = process.env.STEVEDORE_SKOPEO ?? '/usr/bin/skopeo';
const UMOCI = process.env.STEVEDORE_UMOCI ?? '/usr/bin/umoci';
const { canRun } = useRealComponents({ registry: false });

const A = 'sd-arc-a:1';
const A2 = 'sd-arc-a:extra';
const B = 'sd-arc-b:1';

describe.skipIf(!canRun)('docker-archive and OCI layout against dockerd, skopeo and umoci', () => {
  let d: Dockerd;
  const work = mkdtempSync(path.join(tmpdir(), 'sd-archive-it-'));
  const saved = path.join(work, 'saved.tar');
  const savedA = path.join(work, 'saved-a.tar');
  const diffIds: Record<string, string[]> = {};
  let ids: Record<string, string> = {};

  beforeAll(async () => {
    d = await startDockerd();
    const a = await buildScratchImage(d, A, { 'etc/a.txt': 'a\n', 'app/msg': 'hello from a\n' }, '', {
      busybox: true,
      cmd: ['/bin/busybox', 'cat', '/app/msg'],
    });
    await d.docker(['tag', A, A2]);
    // B is built FROM A: it shares A's three layers and adds one.
    const ctx = path.join(work, 'ctx-b');
    execFileSync('mkdir', ['-p', ctx]);
    writeFileSync(path.join(ctx, 'msg'), 'hello from b\n');
    writeFileSync(path.join(ctx, 'Dockerfile'), `FROM ${A}\nCOPY msg /app/msg\n`);
    await d.docker(['build', '--network', 'none', '--quiet', '-t', B, ctx], { env: { DOCKER_BUILDKIT: '0' } });
    ids = { [A]: a.id };
    for (const t of [A, B]) {
      const { stdout } = await d.docker(['image', 'inspect', '--format', '{{json .RootFS.Layers}}|{{.Id}}', t]);
      const [layers, id] = stdout.trim().split('|') as [string, string];
      diffIds[t] = JSON.parse(layers) as string[];
      ids[t] = id;
    }
    await d.docker(['save', '-o', saved, A, A2, B]);
    await d.docker(['save', '-o', savedA, A]);
  }, 240_000);

  afterAll(async () => {
    await d?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('reads and verifies `docker save` of two images sharing layers (plain and gzip)', async () => {
    expect(diffIds[A]).toHaveLength(3);
    expect(diffIds[B]).toHaveLength(4);
    expect(diffIds[B]!.slice(0, 3)).toEqual(diffIds[A]);
    const gz = path.join(work, 'saved.tar.gz');
    writeFileSync(gz, gzipSync(readFileSync(saved)));
    for (const file of [saved, gz]) {
      const a = await DockerArchive.open(file);
      try {
        expect(a.format).toBe('legacy');
        expect(a.images).toHaveLength(2);
        const ia = a.image(A);
        expect([...ia.repoTags].sort()).toEqual([A, A2].sort());
        expect(a.image(A2)).toBe(ia);
        for (const t of [A, B]) {
          const img = a.image(t);
          expect(img.configDigest.toString()).toBe(ids[t]);
          expect(img.layers.map((l) => l.diffId.toString())).toEqual(diffIds[t]);
          for (const l of img.layers) expect(l.digest.equals(l.diffId)).toBe(true);
        }
        expect(a.image(B).layers[1]!.digest.equals(ia.layers[1]!.digest)).toBe(true);
      } finally {
        await a.close();
      }
    }
  });

  for (const layout of ['legacy', 'oci'] as const) {
    it(`our ${layout} docker-archive → docker load → docker run prints the expected output`, async () => {
      const src = await DockerArchive.open(saved);
      const ours = path.join(work, `ours-${layout}.tar`);
      try {
        await writeDockerArchive(
          ours,
          [
            { image: src.image(A), tags: [`sd-ours-${layout}-a:1`] },
            { image: src.image(B), tags: [`sd-ours-${layout}-b:1`] },
          ],
          { layout },
        );
      } finally {
        await src.close();
      }
      // Remove everything first, so the load really brings the layers.
      await d.docker(['rmi', '-f', A, A2, B], { allowFailure: true });
      await d.docker(['image', 'prune', '-af'], { allowFailure: true });
      const load = await d.docker(['load', '-i', ours]);
      expect(load.stdout).toContain(`sd-ours-${layout}-b:1`);
      for (const [t, want] of [
        [`sd-ours-${layout}-a:1`, 'hello from a\n'],
        [`sd-ours-${layout}-b:1`, 'hello from b\n'],
      ] as const) {
        const run = await d.docker(['run', '--rm', '--network', 'none', t]);
        expect(run.stdout).toBe(want);
      }
      const { stdout } = await d.docker(['image', 'inspect', '--format', '{{.Id}}', `sd-ours-${layout}-b:1`]);
      expect(stdout.trim()).toBe(ids[B]);
      // Our own reader agrees with what we wrote.
      const back = await DockerArchive.open(ours);
      expect(back.format).toBe(layout);
      await back.close();
    });
  }

  it('skopeo copy oci:<our layout> → docker-archive, and docker-archive:<docker save> → oci: are read and verified', async () => {
    const src = await DockerArchive.open(saved);
    const layout = path.join(work, 'layout');
    try {
      const sink = ociLayoutSink(layout);
      await copyImage(src.image(B), sink, { tags: ['b'] });
      await copyImage(src.image(A), sink, { tags: ['a'] });
    } finally {
      await src.close();
    }
    const fromOurs = path.join(work, 'skopeo-from-ours.tar');
    execFileSync(SKOPEO, [
      '--insecure-policy',
      'copy',
      '--quiet',
      `oci:${layout}:b`,
      `docker-archive:${fromOurs}:sd-skopeo-b:1`,
    ]);
    const s1 = await DockerArchive.open(fromOurs);
    try {
      const img = s1.image('sd-skopeo-b:1');
      expect(img.configDigest.toString()).toBe(ids[B]);
      expect(img.layers.map((l) => l.diffId.toString())).toEqual(diffIds[B]);
    } finally {
      await s1.close();
    }

    // skopeo reads our oci-archive and our docker-archive too.
    const ociArchive = path.join(work, 'ours.oci.tar');
    const sink = ociArchiveSink(ociArchive);
    const srcAgain = await DockerArchive.open(saved);
    await copyImage(srcAgain.image(A), sink, { tags: ['a'] });
    await sink.close();
    const ourDocker = path.join(work, 'ours-for-skopeo.tar');
    await writeDockerArchive(ourDocker, [{ image: srcAgain.image(A), tags: ['sd-skopeo-a:1'] }]);
    await srcAgain.close();
    for (const ref of [`oci-archive:${ociArchive}:a`, `docker-archive:${ourDocker}:sd-skopeo-a:1`]) {
      const out = JSON.parse(execFileSync(SKOPEO, ['inspect', '--config', ref], { encoding: 'utf8' })) as {
        rootfs: { diff_ids: string[] };
      };
      expect(out.rootfs.diff_ids).toEqual(diffIds[A]);
      const dest = path.join(work, `skopeo-roundtrip-${ref.split(':')[0]}`);
      execFileSync(SKOPEO, ['--insecure-policy', 'copy', '--quiet', ref, `oci:${dest}:x`]);
      const rr = await OciLayoutReader.openDir(dest);
      expect((await rr.image('x')).config.rootfs.diff_ids.map(String)).toEqual(diffIds[A]);
    }

    const skopeoLayout = path.join(work, 'skopeo-layout');
    execFileSync(SKOPEO, ['--insecure-policy', 'copy', '--quiet', `docker-archive:${savedA}`, `oci:${skopeoLayout}:a`]);
    const r = await OciLayoutReader.openDir(skopeoLayout);
    const img = await r.image('a');
    expect(img.config.rootfs.diff_ids.map(String)).toEqual(diffIds[A]);
    // skopeo rewrites the config when converting Docker → OCI, so the image ID changes; our
    // reader checked the new config against its digest and every layer against its diff_id.
    expect(img.config.config?.Cmd).toEqual(['/bin/busybox', 'cat', '/app/msg']);
    // skopeo may compress: the diff_ids are checked through the uncompressed streams.
    const tar = await collect(img.layers[2]!.uncompressed());
    expect(tar.length).toBeGreaterThan(0);
  });

  it('umoci unpacks our OCI layout (uncompressed layers) and the rootfs has the files', async () => {
    const src = await DockerArchive.open(saved);
    const layout = path.join(work, 'umoci-layout');
    try {
      const sink = ociLayoutSink(layout);
      await copyImage(src.image(B), sink, { tags: ['b'] });
      const r = await OciLayoutReader.openDir(layout);
      const img = await r.image('b');
      expect(img.layers.every((l) => l.mediaType === OCI_LAYER && l.digest.equals(l.diffId))).toBe(true);
    } finally {
      await src.close();
    }
    const bundle = path.join(work, 'bundle');
    execFileSync(UMOCI, ['unpack', '--image', `${layout}:b`, bundle], { stdio: 'pipe' });
    expect(readFileSync(path.join(bundle, 'rootfs', 'app', 'msg'), 'utf8')).toBe('hello from b\n');
    expect(readFileSync(path.join(bundle, 'rootfs', 'etc', 'a.txt'), 'utf8')).toBe('a\n');
    expect(existsSync(path.join(bundle, 'rootfs', 'bin', 'busybox'))).toBe(true);
  });
});
