// Documents made by the real docker, read by our parsers: dockerd builds and pushes images to a
// private distribution registry; we fetch the manifests, configs and a manifest list over HTTP
// and check them against what dockerd itself reports (image ID, layer store chain IDs).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { sha256 } from '@stevedore/core';
import {
  chainIds,
  DOCKER_CONFIG,
  DOCKER_LAYER_GZIP,
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  imageId,
  isImageIndex,
  parseConfig,
  parseImageManifest,
  parseManifest,
  parseReference,
  selectPlatform,
} from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import {
  buildScratchImage,
  type Dockerd,
  type Registry,
  startDockerd,
  startRegistry,
} from '../../../test/harness/index.js';

const { canRun } = useRealComponents({ registry: true });

async function get(url: string, accept: string): Promise<{ bytes: Uint8Array; contentType: string; digest: string }> {
  const res = await fetch(url, { headers: { Accept: accept } });
  expect(res.status, url).toBe(200);
  return {
    bytes: new Uint8Array(await res.arrayBuffer()),
    contentType: res.headers.get('content-type') ?? '',
    digest: res.headers.get('docker-content-digest') ?? '',
  };
}

describe.skipIf(!canRun)('documents from the real docker and registry', () => {
  let d: Dockerd;
  let reg: Registry;

  beforeAll(async () => {
    [d, reg] = await Promise.all([startDockerd(), startRegistry()]);
  }, 180_000);
  afterAll(async () => {
    await Promise.all([d?.stop(), reg?.stop()]);
  }, 60_000);

  it('parses a pushed schema 2 manifest and config; image ID and chain IDs agree with dockerd', async () => {
    const ref = parseReference(`${reg.host}/it/three-layers:v1`);
    const built = await buildScratchImage(
      d,
      'three-layers:v1',
      { 'a.txt': 'first\n', 'dir/b.txt': 'second\n', 'c.txt': 'third\n' },
      'ENV GREETING=hello\nLABEL org.example.test=1',
    );
    await d.docker(['tag', 'three-layers:v1', ref.toString()]);
    await d.docker(['push', ref.toString()]);

    const m = await get(`${reg.url}/v2/${ref.repository}/manifests/${ref.identifier}`, DOCKER_MANIFEST);
    expect(sha256(m.bytes).toString()).toBe(m.digest);
    const manifest = parseImageManifest(m.bytes, m.contentType);
    expect(manifest.mediaType).toBe(DOCKER_MANIFEST);
    expect(manifest.config.mediaType).toBe(DOCKER_CONFIG);
    expect(manifest.layers).toHaveLength(3);
    expect(manifest.layers.every((l) => l.mediaType === DOCKER_LAYER_GZIP)).toBe(true);

    const c = await get(`${reg.url}/v2/${ref.repository}/blobs/${manifest.config.digest}`, DOCKER_CONFIG);
    expect(c.bytes.length).toBe(manifest.config.size);
    const config = parseConfig(c.bytes, manifest.config.mediaType);
    expect(config.rootfs.diff_ids).toHaveLength(3);
    expect(config.config?.Env).toContain('GREETING=hello');
    expect(config.config?.Labels).toEqual({ 'org.example.test': '1' });

    // the image ID docker shows is the digest of the config bytes
    expect(imageId(c.bytes).toString()).toBe(built.id);
    expect(manifest.config.digest.toString()).toBe(built.id);

    // every chain ID is a directory of dockerd's layer store, holding the diff ID
    const layerdb = path.join(d.dataRoot, 'image', 'overlay2', 'layerdb', 'sha256');
    const ids = chainIds(config.rootfs.diff_ids);
    ids.forEach((id, i) => {
      const dir = path.join(layerdb, id.hex);
      expect(existsSync(dir), `layerdb lacks chain ID ${id}`).toBe(true);
      expect(readFileSync(path.join(dir, 'diff'), 'utf8')).toBe(config.rootfs.diff_ids[i]!.toString());
    });
    // the transport's media type must match the document's
    expect(() => parseManifest(m.bytes, 'application/vnd.oci.image.manifest.v1+json')).toThrow(/media type mismatch/);
  });

  it('parses a manifest list made by `docker manifest` and selects platforms from it', async () => {
    const repo = `${reg.host}/it/multi`;
    await buildScratchImage(d, `${repo}:amd64`, { 'arch.txt': 'amd64\n' });
    await buildScratchImage(d, `${repo}:arm64`, { 'arch.txt': 'arm64\n' });
    await d.docker(['push', `${repo}:amd64`]);
    await d.docker(['push', `${repo}:arm64`]);
    await d.docker(['manifest', 'create', '--insecure', `${repo}:list`, `${repo}:amd64`, `${repo}:arm64`]);
    await d.docker(['manifest', 'annotate', `${repo}:list`, `${repo}:arm64`, '--arch', 'arm64', '--variant', 'v8']);
    await d.docker(['manifest', 'push', '--insecure', `${repo}:list`]);

    const list = await get(`${reg.url}/v2/it/multi/manifests/list`, DOCKER_MANIFEST_LIST);
    const index = parseManifest(list.bytes, list.contentType);
    if (!isImageIndex(index)) throw new Error(`expected a manifest list, got ${index.mediaType}`);
    expect(index.mediaType).toBe(DOCKER_MANIFEST_LIST);
    expect(index.manifests).toHaveLength(2);

    const amd64 = await get(`${reg.url}/v2/it/multi/manifests/amd64`, DOCKER_MANIFEST);
    const arm64 = await get(`${reg.url}/v2/it/multi/manifests/arm64`, DOCKER_MANIFEST);
    expect(selectPlatform(index, 'linux/amd64')?.digest.toString()).toBe(amd64.digest);
    expect(selectPlatform(index, 'linux/arm64')?.digest.toString()).toBe(arm64.digest);
    expect(selectPlatform(index, 'linux/aarch64/v8')?.digest.toString()).toBe(arm64.digest);
    expect(selectPlatform(index, 'linux/386')).toBeUndefined();
    expect(selectPlatform(index, 'linux/arm/v7')).toBeUndefined();
  });
});
