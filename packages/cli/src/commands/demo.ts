import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { backendKind, type LayerEntryInput, loadWasmBackend, sha256, writeTar } from '@stevedore/core';
import {
  copyImage,
  type Image,
  type Layer,
  OCI_CONFIG,
  OCI_LAYER_GZIP,
  OCI_MANIFEST,
  ociLayoutSink,
  parseConfig,
  parseImageManifest,
} from '@stevedore/image';
import { MergedView, overlaySupported, Store, umount } from '@stevedore/overlay';
import { registrySink } from '@stevedore/registry';
import { startServer } from '@stevedore/server';
import { type Output, style } from '../output.js';
import { humanSize, registryClient } from './common.js';
import type { LayersResult } from './layers.js';
import { layersCommand } from './layers.js';
import { imagesCommand, loadCommand, mountCommand, pullCommand, saveCommand, umountCommand } from './store.js';

/**
 * `stevedore demo`: the whole image life cycle on an embedded default, with no network: build a
 * small real image (busybox when the machine has a static one) as an OCI layout, push it to the
 * registry (`stevedore serve`, in process) on loopback, pull it into a fresh store with progress, list it, show its
 * layers' waste, mount it (or walk the userspace merged view when not root), save it as a
 * docker-archive and load that into a second store. Every step says where its result lives;
 * everything (registry, mounts, temp dirs) is cleaned up at the end, even on failure, unless
 * --keep (then the dirs stay; the registry and mounts still go).
 */
export async function demoCommand(opts: { keep?: boolean }, out: Output): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'stevedore-demo-'));
  const started = performance.now();
  const step = (n: number, title: string) => out.log(`\n${style.bold(`[${n}] ${title}`)}`);
  const where = (label: string, p: string) => out.log(`    ${style.dim(`${label}:`)} ${p}`);
  let registry: Awaited<ReturnType<typeof startServer>> | undefined;
  let mounted: string | undefined;
  const cleanup = async () => {
    if (mounted) {
      await umount(mounted).catch(() => {});
      mounted = undefined;
    }
    await registry?.close().catch(() => {});
    registry = undefined;
    if (!opts.keep) rmSync(work, { recursive: true, force: true });
  };
  const onSignal = () => {
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // The commands' data goes to stderr here: stdout carries the demo's own result.
  let last: unknown;
  const sub: Output = {
    json: false,
    quiet: out.quiet,
    data(value, human) {
      last = value;
      const text = human();
      if (text) out.log(text.replace(/^/gm, '    '));
    },
    log: (line) => out.log(`    ${line}`),
  };
  try {
    step(1, 'Build a small image from files on this machine (2 layers, the second deletes a file)');
    const image = demoImage();
    const layout = join(work, 'layout');
    await copyImage(image, ociLayoutSink(layout), { tags: ['demo'] });
    for (const [i, l] of image.layers.entries()) {
      out.log(`    layer ${i}: ${l.digest.toString().slice(0, 19)}…  ${humanSize(l.size)}`);
    }
    // The core's two backends agree on every blob (the web page runs the wasm one).
    const wasm = loadWasmBackend();
    const blobs = [image.rawConfig, ...image.layers.map((l) => (l as Layer & { bytes: Uint8Array }).bytes)];
    for (const b of blobs) {
      if (wasm.hash('sha256', b) !== sha256(b).toString()) throw new Error('demo: wasm and native digests disagree');
    }
    out.log(`    ${style.green('ok')}  ${backendKind()} and wasm cores agree on ${blobs.length} blob digests`);
    where('OCI layout', `${layout} (tag demo)`);

    step(2, 'Serve it with our registry (`stevedore serve`) on loopback');
    const regDir = join(work, 'registry');
    registry = await startServer({ root: regDir, addr: '127.0.0.1:0', log: false });
    const host = `127.0.0.1:${registry.port}`;
    const ref = `${host}/demo/busybox:1`;
    const client = registryClient({ insecureRegistry: [host] });
    try {
      await copyImage(image, registrySink(client, ref), {});
    } finally {
      await client.close();
    }
    out.log(`    pushed ${ref} (${registry.url})`);
    where('registry storage (the reference registry layout)', join(regDir, 'docker/registry/v2'));

    step(3, 'Pull it into a fresh store, with progress');
    const root = join(work, 'store');
    await pullCommand(ref, { root, insecureRegistry: [host] }, sub);
    where('store', root);

    step(4, 'List the store');
    await imagesCommand(undefined, { root }, sub);

    step(5, 'Layers: what each adds, changes and deletes, and the space it wastes');
    await layersCommand(ref, { root }, sub);
    const layers = last as LayersResult;

    step(6, process.getuid?.() === 0 && overlaySupported() ? 'Mount it (kernel overlayfs)' : 'The merged view');
    const mnt = join(work, 'mnt');
    let listing: string[];
    let mode: string;
    if (process.getuid?.() === 0 && overlaySupported()) {
      await mountCommand(ref, mnt, { root }, sub);
      mounted = mnt;
      listing = readdirSync(mnt).sort();
      out.log(`    ls ${mnt}: ${listing.join('  ')}`);
      out.log(`    cat etc/motd: ${readFileSync(join(mnt, 'etc/motd'), 'utf8').trim()}`);
      await umountCommand(mnt, { root }, sub);
      mounted = undefined;
      mode = 'overlay';
    } else {
      const store = await Store.open({ root });
      const view = await MergedView.open(store, ref);
      listing = view.readdir('').sort();
      out.log(`    not root: the userspace merged view (\`stevedore mount\` needs root or fuse-overlayfs)`);
      out.log(`    /: ${listing.join('  ')}`);
      out.log(`    etc/motd: ${(await view.readFile('etc/motd')).toString().trim()}`);
      mode = 'userspace';
    }

    step(7, 'Save a docker-archive and load it into a second store');
    const archive = join(work, 'busybox.tar');
    await saveCommand([ref], { root, output: archive }, sub);
    where('docker-archive', `${archive} (docker load -i reads it)`);
    const root2 = join(work, 'store2');
    await loadCommand({ root: root2, input: archive }, sub);
    await imagesCommand(undefined, { root: root2 }, sub);
    const images2 = last as { Repository: string; Tag: string; Id: string }[];
    where('second store', root2);

    const seconds = (performance.now() - started) / 1000;
    out.data(
      {
        image: ref,
        digest: image.digest.toString(),
        layout,
        store: root,
        archive,
        store2: root2,
        layers: {
          count: layers.layers.length,
          totalBytes: layers.totalBytes,
          wastedBytes: layers.wastedBytes,
          efficiency: layers.efficiency,
        },
        mount: { mode, root: listing },
        loaded: images2.map((i) => `${i.Repository}:${i.Tag}`),
        seconds,
        kept: Boolean(opts.keep),
        work,
      },
      () => `demo finished in ${seconds.toFixed(1)} s` + (opts.keep ? `; results in ${work}` : ''),
    );
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await cleanup();
    out.log(style.dim(opts.keep ? `kept ${work}` : `removed ${work} (use --keep to keep it)`));
  }
}

const enc = new TextEncoder();

/** busybox (or a generated tree) plus config files, then a layer that patches, adds and deletes. */
function demoImage(): Image {
  const base: { path: string; data: Uint8Array; mode: number }[] = [];
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (busybox) base.push({ path: 'bin/busybox', data: new Uint8Array(readFileSync(busybox)), mode: 0o755 });
  base.push({ path: 'etc/os-release', data: enc.encode('NAME="stevedore demo"\nID=stevedore\n'), mode: 0o644 });
  base.push({ path: 'etc/passwd', data: enc.encode('root:x:0:0:root:/root:/bin/sh\n'), mode: 0o644 });
  let x = 0x9e3779b9;
  const noise = (n: number) => {
    const buf = new Uint8Array(n);
    for (let j = 0; j < n; j++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf[j] = x & 0xff;
    }
    return buf;
  };
  const files = busybox ? 4 : 40;
  for (let i = 0; i < files; i++) base.push({ path: `usr/share/data/${i}.bin`, data: noise(16384), mode: 0o644 });
  base.push({ path: 'var/cache/build.tmp', data: noise(200_000), mode: 0o644 });
  const entries = (list: typeof base) =>
    list.map((f) => ({ entry: { path: f.path, type: 'file', mode: f.mode } as LayerEntryInput, data: f.data }));
  const tars = [
    writeTar(entries(base)),
    writeTar([
      ...entries([
        { path: 'etc/os-release', data: enc.encode('NAME="stevedore demo, patched"\nID=stevedore\n'), mode: 0o644 },
        { path: 'etc/motd', data: enc.encode('built by stevedore demo\n'), mode: 0o644 },
      ]),
      { entry: { path: 'var/cache/.wh.build.tmp', type: 'file' } as LayerEntryInput },
    ]),
  ];
  const blobs = tars.map((t) => new Uint8Array(gzipSync(t)));
  const rawConfig = enc.encode(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '2026-01-02T03:04:05Z',
      config: { Cmd: busybox ? ['/bin/busybox', 'cat', '/etc/motd'] : ['/bin/sh'], Env: ['PATH=/bin'] },
      rootfs: { type: 'layers', diff_ids: tars.map((t) => sha256(t).toString()) },
      history: [
        { created: '2026-01-02T03:04:00Z', created_by: 'COPY rootfs / (busybox, config, data)' },
        { created: '2026-01-02T03:04:05Z', created_by: 'RUN patch os-release, add motd, rm var/cache/build.tmp' },
      ],
    }),
  );
  const rawManifest = enc.encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(rawConfig).toString(), size: rawConfig.length },
      layers: blobs.map((b) => ({ mediaType: OCI_LAYER_GZIP, digest: sha256(b).toString(), size: b.length })),
    }),
  );
  const layers = blobs.map((b, i) => ({
    digest: sha256(b),
    diffId: sha256(tars[i] as Uint8Array),
    size: b.length,
    mediaType: OCI_LAYER_GZIP,
    bytes: b,
    async *compressed() {
      yield b;
    },
    async *uncompressed() {
      yield tars[i] as Uint8Array;
    },
  }));
  return {
    digest: sha256(rawManifest),
    manifest: parseImageManifest(rawManifest),
    rawManifest,
    config: parseConfig(rawConfig),
    rawConfig,
    layers,
  };
}
