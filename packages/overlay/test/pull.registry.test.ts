// Pulls from the real distribution registry on loopback, as separate processes: `kill -9` of a
// pull at seeded random points, 20 times on one store (each time: open + fsck clean, nothing
// half-visible), then a pull that completes and verifies; and 8 processes pulling the same
// image into one store at once (one copy stored).
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type LayerEntryInput, sha256, writeTar } from '@stevedore/core';
import { parseReference } from '@stevedore/image';
import { pushImage, RegistryClient } from '@stevedore/registry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { type Registry, startRegistry } from '../../../test/harness/index.js';
import { startProxy } from '../../registry/test/fixtures.js';
import { fsck, prune, rmi, Store, storedImage, verifyLayers } from '../src/index.js';
import { memImage } from './fixtures.js';

const { canRun } = useRealComponents({ registry: true, dockerd: false });

/** mulberry32: a small seeded PRNG, so a failing kill sequence can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 4 layers, ~1.6 MB each of incompressible files (so the transfer takes a while), one whiteout. */
function layers(): Uint8Array[] {
  const file = (p: string, data: Uint8Array): { entry: LayerEntryInput; data: Uint8Array } => ({
    entry: { path: p, type: 'file', mode: 0o644, mtime: 1_700_000_000 } as LayerEntryInput,
    data,
  });
  const dir = (p: string) => ({
    entry: { path: p, type: 'directory', mode: 0o755, mtime: 1_700_000_000 } as LayerEntryInput,
  });
  return [0, 1, 2, 3].map((l) =>
    writeTar([
      dir(`l${l}/`),
      ...Array.from({ length: 16 }, (_, i) => file(`l${l}/f${i}`, new Uint8Array(randomBytes(100_000)))),
      ...(l === 2 ? [file('l0/.wh.f0', new Uint8Array())] : []),
    ]),
  );
}

/** A loopback TCP proxy to `port` that sends the responses at about `bytesPerSecond`. */
async function throttlingProxy(port: number, bytesPerSecond: number): Promise<{ port: number; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      client.write(chunk);
      upstream.pause();
      setTimeout(() => upstream.resume(), (chunk.length / bytesPerSecond) * 1000);
    });
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe.skipIf(!canRun)('pulls as processes against the distribution registry', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'sd-overlay-pull-'));
  const script = path.join(work, 'pull.mjs');
  const img = memImage(layers(), { gzip: true, label: 'crash' });
  const imageId = sha256(img.rawConfig).toString();
  let reg: Registry;
  let proxy: { port: number; close: () => void };
  let direct: string;
  let throttled: string;

  beforeAll(async () => {
    reg = await startRegistry();
    direct = `${reg.host}/crash/img:1`;
    const client = new RegistryClient();
    await pushImage(client, parseReference(direct), img);
    await client.close();
    proxy = await throttlingProxy(reg.port, 8 << 20);
    throttled = `127.0.0.1:${proxy.port}/crash/img:1`;
    // The child: Store.pull, then the number of layers it committed (not console.log: nx sets FORCE_COLOR).
    writeFileSync(
      script,
      `import { Store } from '${path.resolve('dist/index.js')}';
const s = await Store.open({ root: process.argv[2] });
const r = await s.pull(process.argv[3]);
process.stdout.write(String(r.applied));`,
    );
  }, 120_000);
  afterAll(async () => {
    proxy?.close();
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const pullProcess = (root: string, ref: string) => {
    const child = spawn(process.execPath, [script, root, ref], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => {
      out += d;
    });
    child.stderr!.on('data', (d) => {
      err += d;
    });
    const done = new Promise<{ code: number | null; signal: string | null; out: string; err: string }>((r) =>
      child.on('close', (code, signal) => r({ code, signal, out, err })),
    );
    return { child: child as ChildProcess, done };
  };

  /** What must hold after any crash, once the store is opened again. */
  async function consistent(root: string): Promise<void> {
    const store = await Store.open({ root });
    expect(await fsck(store)).toEqual([]);
    const layerdb = readdirSync(path.join(store.layerdb, 'sha256'));
    expect(readdirSync(store.overlayDir).sort()).toHaveLength(layerdb.length + 1);
    expect(readdirSync(store.linkDir)).toHaveLength(layerdb.length);
    expect(readdirSync(store.tmpDir)).toEqual([]);
    expect(readdirSync(path.join(store.layerdb, 'tmp'))).toEqual([]);
    expect(readdirSync(path.join(store.root, 'content', 'ingest'))).toEqual([]);
    // an image that is visible is whole: config, all its layers, its manifest and blobs
    for (const id of await store.imageIds()) {
      expect(id.toString()).toBe(imageId);
      const stored = await storedImage(store, id.toString());
      expect(stored.digest.toString()).toBe(img.digest.toString());
      expect(layerdb.length).toBeGreaterThanOrEqual(4);
    }
  }

  it('kill -9 at 20 random points: fsck clean after each, then the next pull succeeds and verifies', async () => {
    const seed = Number(process.env.STEVEDORE_CRASH_SEED ?? 20_251_128);
    const random = prng(seed);
    // How long a whole pull takes here (a fresh store), to spread the kill points over.
    const t0 = Date.now();
    const base = await pullProcess(path.join(work, 'baseline'), throttled).done;
    const full = Date.now() - t0;
    expect(base.code, base.err).toBe(0);
    const root = path.join(work, 'crash');
    const outcomes: string[] = [];
    for (let i = 0; i < 20; i++) {
      const delay = Math.floor(random() * full);
      const p = pullProcess(root, throttled);
      const timer = setTimeout(() => p.child.kill('SIGKILL'), delay);
      const r = await p.done;
      clearTimeout(timer);
      if (r.signal === 'SIGKILL') {
        const s = await Store.open({ root });
        outcomes.push(`${delay}ms:killed(${readdirSync(path.join(s.layerdb, 'sha256')).length}/4 layers)`);
      } else {
        expect(r.code, r.err).toBe(0);
        outcomes.push(`${delay}ms:done`);
      }
      await consistent(root);
      if (r.signal !== 'SIGKILL') {
        // It got through: start over so the next kills hit a pull with work to do.
        const s = await Store.open({ root });
        await rmi(s, imageId);
        await prune(s);
      }
    }
    console.log(`crash test (seed ${seed}, full pull ${full} ms): ${outcomes.join(' ')}`);
    expect(outcomes.filter((o) => o.includes('killed')).length).toBeGreaterThanOrEqual(10);
    const last = await pullProcess(root, throttled).done;
    expect(last.code, last.err).toBe(0);
    const store = await Store.open({ root });
    expect((await store.image(throttled)).id.toString()).toBe(imageId);
    expect(await verifyLayers(store)).toEqual({ checked: 4, problems: [] });
    expect(await fsck(store, { verify: true })).toEqual([]);
    for (const l of (await storedImage(store, imageId)).layers) {
      for await (const _ of l.uncompressed()) {
        // verifies the stored blob against its diff_id at the end
      }
    }
  }, 120_000);

  it('a blob the registry serves altered is refused by the digest check during extraction; nothing is kept', async () => {
    // Flip a bit of the gzip header's mtime in one layer blob on the registry's disk: it still
    // decompresses to the same tar (diff_id fine), so only the blob digest can catch it — the
    // check the engine makes while it extracts the download (the download itself is not hashed).
    const layer = img.layers[1]!;
    const blob = path.join(
      reg.storageDir,
      'docker/registry/v2/blobs/sha256',
      layer.digest.hex.slice(0, 2),
      layer.digest.hex,
      'data',
    );
    const original = readFileSync(blob);
    const altered = Buffer.from(original);
    altered[4] = (altered[4] ?? 0) ^ 0x01;
    writeFileSync(blob, altered);
    const root = path.join(work, 'altered');
    try {
      const store = await Store.open({ root });
      const err = await store.pull(direct).catch((e) => e);
      expect(err.code).toBe('ERR_DIGEST_MISMATCH');
      expect(err.message).toContain(layer.digest.toString());
      expect(await store.hasBlob(layer.digest)).toBe(false);
      expect(await store.imageIds()).toEqual([]);
      expect(readdirSync(path.join(root, 'content', 'ingest'))).toEqual([]);
      expect(readdirSync(store.tmpDir)).toEqual([]);
      expect(await fsck(store)).toEqual([]);
    } finally {
      writeFileSync(blob, original);
    }
    // With the blob as it was, the same store pulls it.
    const store = await Store.open({ root });
    expect((await store.pull(direct)).imageId.toString()).toBe(imageId);
  });

  it('a connection dropped mid-blob while the layer is being extracted is resumed (Range) and the pull verifies', async () => {
    const http = await startProxy(reg.url);
    const layer = img.layers[2]!;
    let drops = 0;
    http.fault = (req, _res, forward) => {
      if (req.method === 'GET' && req.url?.includes(`/blobs/${layer.digest}`) && drops === 0) {
        drops++;
        forward(undefined, { dropAfter: Math.floor(layer.size / 3) });
        return true;
      }
      return false;
    };
    const root = path.join(work, 'resumed');
    const client = new RegistryClient();
    try {
      const store = await Store.open({ root });
      const r = await store.pull(`${http.host}/crash/img:1`, { client });
      expect(r.imageId.toString()).toBe(imageId);
      expect(drops).toBe(1);
      const ranged = http.seen.filter((s) => s.url.includes(`/blobs/${layer.digest}`) && s.headers.range);
      expect(ranged.length).toBeGreaterThanOrEqual(1);
      expect(await fsck(store, { verify: true })).toEqual([]);
    } finally {
      await client.close();
      await http.close();
    }
  });

  it('8 processes pull the same image into one store at once: all succeed, one copy', async () => {
    const root = path.join(work, 'parallel');
    const rs = await Promise.all(Array.from({ length: 8 }, () => pullProcess(root, direct).done));
    for (const r of rs) expect(r.code, r.err).toBe(0);
    // each prints the layers it committed: together exactly the image's 4
    expect(rs.map((r) => Number(r.out)).reduce((a, b) => a + b, 0)).toBe(4);
    const store = await Store.open({ root });
    expect(readdirSync(path.join(store.layerdb, 'sha256'))).toHaveLength(4);
    expect(readdirSync(store.overlayDir)).toHaveLength(4 + 1);
    expect(readdirSync(store.linkDir)).toHaveLength(4);
    expect((await store.imageIds()).map(String)).toEqual([imageId]);
    expect((await store.image(direct)).id.toString()).toBe(imageId);
    expect(await fsck(store, { verify: true })).toEqual([]);
  }, 120_000);
});
