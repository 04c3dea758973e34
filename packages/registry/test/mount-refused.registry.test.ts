// Copying an image with more layers than the per-registry concurrency limit between two
// repositories of ONE registry that refuses cross-repository mounts. Each layer's upload streams
// its download: with one shared pool of slots, uploads holding every slot waited for downloads
// that waited for a slot (a deadlock). The proxy in front of the real distribution registry
// answers `?mount=` POSTs the way a registry that declines a mount does: it drops the mount
// parameters, so the registry opens a plain upload session (202).
import { randomBytes } from 'node:crypto';
import { parseReference } from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { type Registry, startRegistry } from '../../../test/harness/index.js';
import { pullImage, RegistryClient, registrySink } from '../src/index.js';
import { type FaultProxy, layerTar, memImage, startProxy } from './fixtures.js';

const { canRun } = useRealComponents({ registry: true, dockerd: false });

const LAYERS = 10;
// above chunkSize, so each upload streams (or PATCHes in chunks) straight from its download
const image = memImage(
  Array.from({ length: LAYERS }, (_, i) => layerTar({ [`f${i}.bin`]: new Uint8Array(randomBytes(96 * 1024)) })),
);

describe.skipIf(!canRun)(`copy of a ${LAYERS}-layer image between repositories when mounts are refused`, () => {
  let reg: Registry;
  let proxy: FaultProxy;
  let mountsRefused = 0;

  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startProxy(reg.url);
    proxy.fault = (req, _res, forward) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (req.method === 'POST' && u.searchParams.has('mount')) {
        mountsRefused++;
        req.url = u.pathname;
        forward();
        return true;
      }
      return false;
    };
    const seed = new RegistryClient({ credentials: false });
    await registrySink(seed, `${proxy.host}/sd/src:1`).putImage(image);
    await seed.close();
  }, 60_000);
  afterAll(async () => {
    await proxy?.close();
    await reg?.stop();
  });

  for (const chunkedUpload of [false, true]) {
    it(`completes with the default concurrency limit (${chunkedUpload ? 'chunked PATCHes' : 'one streamed PATCH'} per layer)`, async () => {
      // a deadlock shows up as this abort instead of a hung test
      const signal = AbortSignal.timeout(30_000);
      const c = new RegistryClient({ credentials: false, chunkSize: 64 * 1024, chunkedUpload });
      const refusedBefore = mountsRefused;
      const target = parseReference(`${proxy.host}/sd/dst-${chunkedUpload ? 'chunked' : 'streamed'}:1`);
      const src = await pullImage(c, `${proxy.host}/sd/src:1`, { signal });
      const sink = registrySink(c, target, { signal });
      await sink.putImage(src);
      expect(sink.lastDigest?.equals(image.digest)).toBe(true);
      // every layer asked for a mount, was refused, and was uploaded from the download
      expect(mountsRefused - refusedBefore).toBe(LAYERS);
      const head = await c.headManifest(target);
      expect(head?.digest?.equals(image.digest)).toBe(true);
      for (const l of image.layers) expect(await c.blobExists(target, l.digest)).toBe(true);
      await c.close();
    });
  }
});
