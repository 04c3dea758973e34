#!/usr/bin/env node
// core:bench (layer engine) — flatten a ≥ 400 MB, ≥ 5,000-file, 3-layer gzip image, side by
// side in one run: umoci unpack, tar -xzf per layer, pigz -dc | tar -x per layer, node-tar,
// and stevedore (apply mode, digests and diff_ids verified, whiteouts applied). Then the peak
// RSS of applying a 2 GiB layer, to show memory stays flat. Needs root (umoci, ownership).
// Results: build/bench/layers.json. Ratios are our time ÷ the tool's time (lower is better:
// 0.25× means a quarter of the other tool's time).
import { execFileSync, spawnSync } from 'node:child_process';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyLayer, createLayer, flattenLayers } from '@stevedore/core';
import * as nodeTar from 'tar';
import { freshFilesystem, writeGzipLayout } from '../../../tools/bench-lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const outer = mkdtempSync(join(process.env.STEVEDORE_BENCH_DIR ?? tmpdir(), 'stevedore-bench-layers-'));
const results = [];

// Every tool writes to a fresh ext4 filesystem (see freshFilesystem in tools/bench-lib.mjs).
const fsys = freshFilesystem(outer);
const work = mkdtempSync(join(fsys.dir, 'w-'));

/**
 * Best of two runs. Before each run `sync` flushes what earlier runs left dirty, so no tool pays
 * for another's writeback; outputs are never deleted between runs (ext4 makes creating inodes
 * right after many deletions slow: `recently_deleted`), only at the end.
 */
async function best(fn) {
  execFileSync('sync');
  const a = await seconds(fn);
  execFileSync('sync');
  const b = await seconds(fn);
  return Math.min(a, b);
}

function seconds(fn) {
  const t = process.hrtime.bigint();
  const r = fn();
  return r instanceof Promise
    ? r.then(() => Number(process.hrtime.bigint() - t) / 1e9)
    : Number(process.hrtime.bigint() - t) / 1e9;
}

/** Pseudo-random file contents: half random bytes, half repetitive, so gzip has real work. */
let x = 0x2545f491;
function content(size) {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(i % 8192 < 4096 ? x >>> 0 : 0x61626364, Math.min(i, size - 4));
  }
  return b;
}

try {
  // ---- the image: three gzip layers made by our createLayer --------------------------------
  const src = [join(work, 'src0'), join(work, 'src1'), join(work, 'src2')];
  let files = 0;
  const put = (dir, rel, size) => {
    mkdirSync(dirname(join(dir, rel)), { recursive: true });
    writeFileSync(join(dir, rel), content(size));
    files++;
  };
  for (let i = 0; i < 3500; i++) put(src[0], `usr/lib/pkg${i % 50}/f${i}.so`, 40_000 + ((i * 7919) % 120_000));
  for (let i = 0; i < 2000; i++) put(src[1], `opt/app/m${i % 40}/f${i}.bin`, 20_000 + ((i * 104729) % 100_000));
  // The top layer is an overlay upper dir (as a container leaves it): it deletes a package dir
  // (char 0/0 whiteout), makes another opaque (xattr) and adds files; createLayer converts it.
  mkdirSync(join(src[2], 'usr/lib/pkg7'), { recursive: true });
  execFileSync('mknod', [join(src[2], 'usr/lib/pkg3'), 'c', '0', '0']);
  execFileSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(src[2], 'usr/lib/pkg7')]);
  for (let i = 0; i < 100; i++) put(src[2], `usr/lib/pkg7/new${i}`, 10_000);
  const layers = [];
  for (const [i, dir] of src.entries()) {
    const file = join(work, `layer${i}.tar.gz`);
    const mode = i === 2 ? 'overlay-diff' : 'full';
    const r = await createLayer(dir, file, { mode, compression: 'gzip', level: 6, clampMtime: 0 });
    layers.push({ file, ...r });
  }
  // The sources stay until the end: deleting 5,600 files now would slow the next file creations.
  const total = layers.reduce((n, l) => n + l.uncompressedSize, 0);
  const gz = layers.reduce((n, l) => n + l.compressedSize, 0);
  const group = `flatten ${(total / 1e6).toFixed(0)} MB (${(gz / 1e6).toFixed(0)} MB gzip), ${files} files, 3 layers`;
  console.log(group);

  // An OCI layout of it for umoci.
  const layout = join(work, 'layout');
  writeGzipLayout(layout, layers, 'bench');

  let moved = 0;
  /** Moves an earlier run's output out of the way (deleted at the end). */
  const setAside = (d) => {
    if (existsSync(d)) renameSync(d, join(work, `old-${++moved}`));
  };
  /** A new empty output directory for one run (`name` is the last one, compared at the end). */
  const fresh = (name) => {
    const d = join(work, name);
    setAside(d);
    mkdirSync(d);
    return d;
  };
  const sh = (cmd) => {
    const r = spawnSync('bash', ['-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr}`);
  };
  const row = (name, s, note = '') => {
    results.push({ group, name, seconds: s, note });
  };

  // Every tool: best of two runs, each into a fresh directory.
  // flattenLayers: every layer staged on its own thread, then replayed in order.
  const ours = await best(async () => {
    const d = fresh('ours');
    await flattenLayers(
      layers.map((l) => ({ source: l.file, expectedDigest: l.digest, expectedDiffId: l.diffId })),
      d,
    );
  });
  row('stevedore (flatten, verified)', ours);
  row(
    'stevedore (apply layer by layer, verified)',
    await best(async () => {
      const d = fresh('ours-seq');
      for (const l of layers)
        await applyLayer(l.file, d, { mode: 'apply', expectedDigest: l.digest, expectedDiffId: l.diffId });
    }),
    'one layer at a time',
  );
  row(
    'umoci unpack',
    await best(() => {
      setAside(join(work, 'bundle'));
      sh(`umoci unpack --image ${layout}:bench ${join(work, 'bundle')}`);
    }),
    'verifies digests, applies whiteouts',
  );
  row(
    'tar -xzf per layer',
    await best(() => {
      const d = fresh('gnutar');
      for (const l of layers) sh(`tar -xzf ${l.file} -C ${d}`);
    }),
    'no verification, whiteouts left as files',
  );
  row(
    'pigz -dc | tar -x per layer',
    await best(() => {
      const d = fresh('pigz');
      for (const l of layers) sh(`pigz -dc ${l.file} | tar -x -C ${d}`);
    }),
    'no verification, whiteouts left as files',
  );
  row(
    'node-tar x per layer',
    await best(async () => {
      const d = fresh('nodetar');
      for (const l of layers) await nodeTar.x({ file: l.file, cwd: d });
    }),
    'no verification, whiteouts left as files',
  );
  // What a pull into the overlay store does: each layer into its own diff dir, in parallel.
  row(
    'stevedore (overlay diff dirs, parallel)',
    await best(async () => {
      const d = fresh('ovl');
      await Promise.all(
        layers.map((l, i) =>
          applyLayer(l.file, join(d, String(i)), { expectedDigest: l.digest, expectedDiffId: l.diffId }),
        ),
      );
    }),
    'verified; not a flatten',
  );
  // Same result as umoci?
  const diff = spawnSync('diff', ['-r', '--no-dereference', join(work, 'ours'), join(work, 'bundle', 'rootfs')], {
    encoding: 'utf8',
  });
  const equal = diff.status === 0;

  console.log(`${'tool'.padEnd(44)} ${'seconds'.padStart(8)}  stevedore flatten ÷ tool`);
  for (const r of results) {
    const ratio = r.name.startsWith('stevedore') ? '' : `${(ours / r.seconds).toFixed(2)}×`;
    console.log(`${r.name.padEnd(44)} ${r.seconds.toFixed(2).padStart(8)}  ${ratio.padStart(6)}  ${r.note}`);
  }
  console.log(`rootfs equal to umoci's: ${equal}`);

  // ---- memory: a 2 GiB plain layer, peak RSS of the applying process ------------------------
  const big = join(work, 'big.tar');
  await new Promise((res, rej) => {
    const out = createWriteStream(big);
    out.on('error', rej);
    out.on('finish', res);
    const header = (name, size) => {
      const h = Buffer.alloc(512);
      h.write(name, 0);
      h.write('0000644\0', 100);
      h.write('0000000\0', 108);
      h.write('0000000\0', 116);
      h.write(size.toString(8).padStart(11, '0') + '\0', 124);
      h.write('00000000000\0', 136);
      h.write('        ', 148);
      h.write('0', 156);
      h.write('ustar\0' + '00', 257);
      let sum = 0;
      for (const b of h) sum += b;
      h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
      return h;
    };
    const chunk = content(1 << 20);
    let i = 0;
    const files = 16;
    const per = 128; // MiB per file → 2 GiB
    (function write() {
      while (i < files * per) {
        if (i % per === 0) out.write(header(`big/f${i / per}`, per << 20));
        i++;
        if (!out.write(chunk)) return out.once('drain', write);
      }
      out.end(Buffer.alloc(1024));
    })();
  });
  mkdirSync(join(work, 'bigout'));
  const script = `import('@stevedore/core').then(m => m.flattenLayers([{ source: ${JSON.stringify(big)} }], ${JSON.stringify(join(work, 'bigout'))})).then(r => process.stdout.write(String(r[0].uncompressedSize)))`;
  const t0 = process.hrtime.bigint();
  const child = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, '--input-type=module', '-e', script], {
    cwd: root,
    encoding: 'utf8',
  });
  const bigSecs = Number(process.hrtime.bigint() - t0) / 1e9;
  const peakKiB = Number(child.stderr.trim().split('\n').at(-1));
  const size = statSync(big).size;
  console.log(
    `flatten a 2 GiB plain layer: ${(size / 1e6 / bigSecs).toFixed(0)} MB/s, peak RSS ${(peakKiB / 1024).toFixed(0)} MiB`,
  );
  results.push({ group: 'memory', name: 'flatten a 2 GiB layer', seconds: bigSecs, peakRssMiB: peakKiB / 1024 });

  const machine = `${cpus()[0]?.model ?? 'cpu'} ×${cpus().length}, node ${process.versions.node}`;
  mkdirSync(join(root, 'build', 'bench'), { recursive: true });
  writeFileSync(
    join(root, 'build', 'bench', 'layers.json'),
    JSON.stringify(
      { machine, filesystem: fsys.name, date: new Date().toISOString(), rootfsEqualToUmoci: equal, results },
      null,
      2,
    ),
  );
  console.log(`machine: ${machine}; outputs on a ${fsys.name}`);
} finally {
  try {
    fsys.unmount();
  } finally {
    rmSync(outer, { recursive: true, force: true });
  }
}
