// Building images from layers (docker import / crane append): offline checks of the config,
// manifest and history, then the real thing — a base from `docker save`, our appended layer,
// `docker load` and `docker run` print what the layer added; `umoci unpack` reads the OCI form.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeTar } from '@stevedore/core';
import {
  appendLayers,
  copyImage,
  DOCKER_MANIFEST,
  DockerArchive,
  layerFromFile,
  OCI_LAYER_GZIP,
  OciLayoutReader,
  ociLayoutSink,
  writeDockerArchive,
} from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { buildScratchImage, type Dockerd, startDockerd } from '../../../test/harness/index.js';

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const work = mkdtempSync(path.join(tmpdir(), 'sd-builder-'));
const { canRun } = useRealComponents();
afterAll(() => rmSync(work, { recursive: true, force: true }));

function layerFile(name: string, files: Record<string, string>, gzip: boolean) {
  const tar = writeTar(
    Object.entries(files).map(([p, c]) => ({
      entry: { path: p, type: 'file' as const, mode: 0o644 },
      data: new TextEncoder().encode(c),
    })),
  );
  const file = path.join(work, name);
  writeFileSync(file, gzip ? gzipSync(tar) : tar);
  return { file, diffId: sha(tar) };
}

describe('appendLayers (offline)', () => {
  it('builds an image from layers alone, like docker import, and an OCI layout reads it back verified', async () => {
    const a = layerFile('a.tar.gz', { 'etc/a': 'a\n' }, true);
    const b = layerFile('b.tar', { 'etc/b': 'b\n' }, false);
    const la = await layerFromFile(a.file);
    const lb = await layerFromFile(b.file);
    expect(la.diffId.toString()).toBe(a.diffId);
    expect(la.mediaType).toBe(OCI_LAYER_GZIP);
    expect(lb.digest.toString()).toBe(b.diffId);
    const img = appendLayers(undefined, [la, lb], {
      created: 0,
      createdBy: ['ADD a', 'ADD b'],
      config: { Cmd: ['/bin/sh'] },
    });
    expect(img.config.rootfs.diff_ids.map(String)).toEqual([a.diffId, b.diffId]);
    expect(img.config.history?.map((h) => h.created_by)).toEqual(['ADD a', 'ADD b']);
    expect(img.config.config?.Cmd).toEqual(['/bin/sh']);
    expect(img.digest.toString()).toBe(sha(img.rawManifest));
    // Deterministic with a fixed time.
    expect(
      appendLayers(undefined, [la, lb], {
        created: 0,
        createdBy: ['ADD a', 'ADD b'],
        config: { Cmd: ['/bin/sh'] },
      }).digest.toString(),
    ).toBe(img.digest.toString());
    const dir = path.join(work, 'layout');
    await copyImage(img, ociLayoutSink(dir), { tags: ['built'] });
    const back = await (await OciLayoutReader.openDir(dir)).image('built');
    expect(back.digest.toString()).toBe(img.digest.toString());
    // Appending onto it keeps the base's layers, diff_ids and history.
    const c = layerFile('c.tar.gz', { 'etc/c': 'c\n' }, true);
    const more = appendLayers(back, [await layerFromFile(c.file)], { createdBy: 'ADD c' });
    expect(more.layers.map((l) => l.digest.toString())).toEqual([
      ...img.layers.map((l) => l.digest.toString()),
      sha(readFileSync(c.file)),
    ]);
    expect(more.config.history).toHaveLength(3);
    // A Docker-typed layer does not fit an OCI manifest: refused with the reason.
    const dockerLayer = await layerFromFile(c.file, { mediaTypes: 'docker' });
    expect(() => appendLayers(back, [dockerLayer])).toThrow(/does not fit an OCI manifest/);
  });
});

describe.skipIf(!canRun)('appendLayers against dockerd and umoci', () => {
  let d: Dockerd;
  beforeAll(async () => {
    d = await startDockerd();
    await buildScratchImage(d, 'sd-builder-base:1', { 'etc/base.txt': 'base\n' }, '', { busybox: true });
  });

  it('base from docker save + our layer → docker load → docker run prints the new file', async () => {
    const saved = path.join(work, 'base.tar');
    await d.docker(['save', '-o', saved, 'sd-builder-base:1']);
    const archive = await DockerArchive.open(saved);
    const base = archive.image('sd-builder-base:1');
    const add = layerFile('add.tar.gz', { 'app/msg': 'appended by stevedore\n' }, true);
    const img = appendLayers(
      base,
      [await layerFromFile(add.file, { mediaTypes: base.manifest.mediaType === DOCKER_MANIFEST ? 'docker' : 'oci' })],
      {
        createdBy: 'stevedore append app/msg',
        config: { Cmd: ['/bin/busybox', 'cat', '/app/msg'] },
      },
    );
    const out = path.join(work, 'appended.tar');
    await writeDockerArchive(out, [{ image: img, tags: ['sd-builder-appended:1'] }]);
    await archive.close();
    await d.docker(['load', '-i', out]);
    const run = await d.docker(['run', '--rm', '--network', 'none', 'sd-builder-appended:1']);
    expect(run.stdout).toBe('appended by stevedore\n');
    const { stdout } = await d.docker(['image', 'inspect', '--format', '{{.Id}}', 'sd-builder-appended:1']);
    expect(stdout.trim()).toBe(sha(img.rawConfig));

    // The OCI form unpacks with umoci and has base + appended files.
    const layout = path.join(work, 'appended-oci');
    await copyImage(img, ociLayoutSink(layout), { tags: ['x'] });
    const bundle = path.join(work, 'bundle');
    mkdirSync(path.dirname(bundle), { recursive: true });
    execFileSync('umoci', ['unpack', '--image', `${layout}:x`, bundle]);
    expect(readFileSync(path.join(bundle, 'rootfs/app/msg'), 'utf8')).toBe('appended by stevedore\n');
    expect(readFileSync(path.join(bundle, 'rootfs/etc/base.txt'), 'utf8')).toBe('base\n');
  });
});
