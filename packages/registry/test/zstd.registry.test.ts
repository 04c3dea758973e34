// zstd layers (`application/vnd.oci.image.layer.v1.tar+zstd`, made with the zstd CLI) pushed to
// the real distribution registry and read back through `uncompressed()`: decompressed and
// verified against the diff_id; corrupt frames and oversized windows are refused.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { sha256 } from '@stevedore/core';
import {
  type Image,
  type Layer,
  OCI_CONFIG,
  OCI_LAYER_ZSTD,
  OCI_MANIFEST,
  parseConfig,
  parseManifest,
} from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { type Registry, startRegistry } from '../../../test/harness/index.js';
import { pullImage, RegistryClient, RegistryError, registrySink } from '../src/index.js';
import { collect, layerTar } from './fixtures.js';

const ZSTD = '/usr/bin/zstd';
const { canRun: harnessOk } = useRealComponents({ registry: true, dockerd: false });
const canRun = harnessOk && existsSync(ZSTD);

const zstd = (input: Uint8Array, args: string[] = []) =>
  new Uint8Array(execFileSync(ZSTD, ['-c', '-q', ...args], { input }));

/** An image of zstd layers; `diffIds` default to the tars' digests. */
function zstdImage(tars: Uint8Array[], blobs: Uint8Array[]): Image {
  const enc = new TextEncoder();
  const rawConfig = enc.encode(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: tars.map((t) => sha256(t).toString()) },
    }),
  );
  const rawManifest = enc.encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(rawConfig).toString(), size: rawConfig.length },
      layers: blobs.map((b) => ({ mediaType: OCI_LAYER_ZSTD, digest: sha256(b).toString(), size: b.length })),
    }),
  );
  const layers: Layer[] = blobs.map((b, i) => ({
    digest: sha256(b),
    diffId: sha256(tars[i]!),
    size: b.length,
    mediaType: OCI_LAYER_ZSTD,
    async *compressed() {
      yield b;
    },
    async *uncompressed() {
      yield tars[i]!;
    },
  }));
  return {
    digest: sha256(rawManifest),
    manifest: parseManifest(rawManifest) as Image['manifest'],
    rawManifest,
    config: parseConfig(rawConfig),
    rawConfig,
    layers,
  };
}

describe.skipIf(!canRun)('zstd layers from the real registry', () => {
  let reg: Registry;
  const c = new RegistryClient({ credentials: false });
  // a 2 MiB tar of mixed content: several zstd blocks, and a stream read in many chunks
  const tars = [
    layerTar({ 'etc/motd': 'zstd layer\n' }),
    layerTar({
      'big.bin': new Uint8Array(2 * 1024 * 1024).map((_, i) => (i * 7919) % 251),
      'rand.bin': new Uint8Array(execFileSync('head', ['-c', '65536', '/dev/urandom'])),
    }),
  ];

  beforeAll(async () => {
    reg = await startRegistry();
  }, 60_000);
  afterAll(async () => {
    await c.close();
    await reg?.stop();
  });

  it('decompresses and verifies against the diff_id', async () => {
    const image = zstdImage(tars, [zstd(tars[0]!), zstd(tars[1]!, ['-19'])]);
    await registrySink(c, `${reg.host}/sd/zstd:1`).putImage(image);
    const pulled = await pullImage(c, `${reg.host}/sd/zstd:1`);
    expect(pulled.layers.map((l) => l.mediaType)).toEqual([OCI_LAYER_ZSTD, OCI_LAYER_ZSTD]);
    for (const [i, l] of pulled.layers.entries()) {
      expect(Buffer.compare(await collect(l.uncompressed()), tars[i]!)).toBe(0);
    }
  });

  it('a frame that decodes to other bytes fails the diff_id check', async () => {
    // the manifest promises tars[0] but the blob holds tars[1]
    const image = zstdImage([tars[0]!], [zstd(tars[1]!)]);
    await registrySink(c, `${reg.host}/sd/zstd:wrong`).putImage(image);
    const pulled = await pullImage(c, `${reg.host}/sd/zstd:wrong`);
    await expect(collect(pulled.layers[0]!.uncompressed())).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
  });

  it('refuses a corrupt frame and a window above 128 MiB', async () => {
    const good = zstd(tars[1]!);
    const corrupt = good.slice();
    corrupt[Math.floor(corrupt.length / 2)]! ^= 0xff;
    const truncated = good.slice(0, good.length - 100);
    const wide = zstd(tars[0]!, ['--long=28']);
    const image = zstdImage([tars[1]!, tars[1]!, tars[0]!], [corrupt, truncated, wide]);
    await registrySink(c, `${reg.host}/sd/zstd:bad`).putImage(image);
    const pulled = await pullImage(c, `${reg.host}/sd/zstd:bad`);
    for (const l of pulled.layers) {
      const err = await collect(l.uncompressed()).catch((e) => e);
      expect(err).toBeInstanceOf(RegistryError);
      expect(err.code).toBe('ERR_DECOMPRESS');
      expect(err.operation).toBe(`pull layer ${l.digest}`);
    }
    const wideErr = await collect(pulled.layers[2]!.uncompressed()).catch((e) => e);
    expect(wideErr.message).toMatch(/window|memory/i);
  });

  it('needs neither zlib zstd nor the zstd command: the native core decodes', async () => {
    const image = zstdImage([tars[0]!], [zstd(tars[0]!)]);
    await registrySink(c, `${reg.host}/sd/zstd:2`).putImage(image);
    const pulled = await pullImage(c, `${reg.host}/sd/zstd:2`);
    process.env.STEVEDORE_ZSTD = '/nonexistent/zstd';
    try {
      expect(Buffer.compare(await collect(pulled.layers[0]!.uncompressed()), tars[0]!)).toBe(0);
    } finally {
      delete process.env.STEVEDORE_ZSTD;
    }
  });
});
