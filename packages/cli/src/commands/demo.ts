import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  backendKind,
  hashAsync,
  hashFile,
  LayerIndex,
  LayerStack,
  listTarFile,
  loadWasmBackend,
  sha256,
  useBackend,
  writeTar,
} from '@stevedore/core';
import { type Output, style } from '../output.js';

/**
 * `stevedore demo`: a self-contained tour on an embedded default, needing no network.
 * It exercises what exists today and grows with the product; every step prints where its
 * result lives. Everything is created under one temp dir that is removed at the end (unless
 * --keep).
 */
export async function demoCommand(opts: { keep?: boolean }, out: Output): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'stevedore-demo-'));
  const started = performance.now();
  const step = (n: number, title: string) => out.log(`\n${style.bold(`[${n}] ${title}`)}`);
  try {
    step(1, 'Build an embedded default rootfs');
    const rootfs = join(work, 'rootfs');
    const files = buildDefaultTree(rootfs);
    const total = files.reduce((s, f) => s + statSync(f).size, 0);
    out.log(`    ${files.length} files, ${(total / 1e6).toFixed(1)} MB in ${rootfs}`);

    step(2, `Hash every file with the ${backendKind()} core and check against node:crypto`);
    const native = new Map<string, string>();
    for (const f of files) {
      const { digest } = await hashFile(f);
      const expected = `sha256:${createHash('sha256').update(readFileSync(f)).digest('hex')}`;
      if (digest.toString() !== expected) throw new Error(`demo: ${f}: ${digest} != ${expected}`);
      native.set(f, digest.toString());
    }
    out.log(`    ${style.green('ok')}  ${native.size} digests agree with node:crypto`);

    step(3, 'Hash the same bytes with the WebAssembly core (what the web page runs)');
    const wasm = loadWasmBackend();
    for (const f of files) {
      const d = wasm.hash('sha256', readFileSync(f));
      if (d !== native.get(f)) throw new Error(`demo: wasm and native disagree on ${f}`);
    }
    out.log(`    ${style.green('ok')}  native and wasm agree on all ${files.length} files`);

    step(4, "Pack two layers with the core's tar writer (the second changes, adds and deletes)");
    const layersDir = join(work, 'layers');
    mkdirSync(layersDir);
    const base = writeTar(
      files.map((f) => ({
        entry: { path: f.slice(rootfs.length + 1), type: 'file' as const, mode: 0o644 },
        data: readFileSync(f),
      })),
    );
    const text = (t: string) => new TextEncoder().encode(t);
    const top = writeTar([
      { entry: { path: 'etc/os-release', type: 'file' }, data: text('NAME="stevedore demo, patched"\n') },
      { entry: { path: 'etc/motd', type: 'file' }, data: text('built by stevedore\n') },
      { entry: { path: 'usr/share/data/.wh.000.bin', type: 'file' } },
    ]);
    const layerFiles = [join(layersDir, 'base.tar'), join(layersDir, 'top.tar')];
    writeFileSync(layerFiles[0] as string, base);
    writeFileSync(layerFiles[1] as string, top);
    for (const [i, f] of layerFiles.entries()) {
      const listing = await listTarFile(f);
      out.log(`    layer ${i}: ${listing.length} entries, diff_id ${sha256(i ? top : base)}`);
    }

    step(5, 'Resolve the merged view, as kernel overlayfs would');
    const stack = new LayerStack([LayerIndex.fromTar(base), LayerIndex.fromTar(top)]);
    const etc = stack.readdir('etc');
    const patched = stack.stat('etc/os-release');
    const deleted = stack.resolve('usr/share/data/000.bin');
    out.log(`    /etc            ${etc.join('  ')}`);
    out.log(`    etc/os-release  from layer ${patched.layer} (${patched.entry.size} bytes)`);
    out.log(`    000.bin         ${deleted.kind} in layer ${'layer' in deleted ? deleted.layer : '-'}`);
    if (deleted.kind !== 'whiteout' || patched.layer !== 1 || !etc.includes('motd')) {
      throw new Error('demo: the merged view is not what the layers say');
    }

    step(6, 'Throughput on 64 MiB (off the JS thread for native)');
    const big = new Uint8Array(64 << 20).fill(7);
    const rates: Record<string, number> = {};
    for (const kind of ['native', 'wasm'] as const) {
      useBackend(kind);
      const t = performance.now();
      await hashAsync('sha256', big);
      rates[kind] = big.length / 1e6 / ((performance.now() - t) / 1000);
      out.log(`    ${kind.padEnd(6)} ${rates[kind].toFixed(0)} MB/s`);
    }
    useBackend('native');

    const manifest = join(work, 'SHA256SUMS');
    writeFileSync(
      manifest,
      [...native].map(([f, d]) => `${d.slice(7)}  ${f.slice(rootfs.length + 1)}`).join('\n') + '\n',
    );
    out.data(
      {
        rootfs,
        files: files.length,
        bytes: total,
        sums: manifest,
        layers: layerFiles,
        merged: { etc, osReleaseLayer: patched.layer, deleted: deleted.kind },
        throughputMBps: rates,
        kept: Boolean(opts.keep),
      },
      () =>
        `demo finished in ${((performance.now() - started) / 1000).toFixed(1)} s` +
        (opts.keep ? `; results in ${work}` : ''),
    );
  } finally {
    if (!opts.keep) {
      rmSync(work, { recursive: true, force: true });
      out.log(style.dim(`removed ${work} (use --keep to keep it)`));
    }
  }
}

/** A small rootfs: busybox when the machine has a static one, plus generated config and data files. */
function buildDefaultTree(root: string): string[] {
  const files: string[] = [];
  const put = (rel: string, data: string | Uint8Array) => {
    const p = join(root, rel);
    mkdirSync(join(p, '..'), { recursive: true });
    writeFileSync(p, data);
    files.push(p);
  };
  for (const candidate of ['/bin/busybox', '/usr/bin/busybox']) {
    if (existsSync(candidate)) {
      put('bin/busybox', readFileSync(candidate));
      break;
    }
  }
  put('etc/os-release', 'NAME="stevedore demo"\nID=stevedore\n');
  put('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
  let x = 0x9e3779b9;
  for (let i = 0; i < 200; i++) {
    const buf = new Uint8Array(1024 + ((i * 7919) % 65536));
    for (let j = 0; j < buf.length; j++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf[j] = x & 0xff;
    }
    put(`usr/share/data/${String(i).padStart(3, '0')}.bin`, buf);
  }
  return files;
}
