#!/usr/bin/env node
// core:bench — throughput of the core's hot paths side by side with the references, from one
// run on this machine. Ratios are ours ÷ reference (higher is better for throughput).
// Results: printed as a table and written to build/bench/core.json for the README generator.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { LayerIndex, LayerStack, listTarFile, loadNativeBackend, loadWasmBackend, useBackend } from '@stevedore/core';
import { createSHA256 } from 'hash-wasm';
import tarStream from 'tar-stream';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const native = loadNativeBackend();
const wasm = loadWasmBackend();

/** Median seconds of `reps` runs of `fn` (after one warm-up). */
async function time(fn, reps) {
  await fn();
  const t = [];
  for (let i = 0; i < reps; i++) {
    const s = process.hrtime.bigint();
    await fn();
    t.push(Number(process.hrtime.bigint() - s) / 1e9);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(t.length / 2)];
}

const results = [];
function report(group, name, bytes, seconds, ref) {
  const mbps = bytes / 1e6 / seconds;
  results.push({ group, name, mbps, seconds });
  const refRow = ref && results.find((r) => r.group === group && r.name === ref);
  const ratio = refRow ? (mbps / refRow.mbps).toFixed(2) + '×' : '';
  console.log(`${group.padEnd(22)} ${name.padEnd(28)} ${mbps.toFixed(0).padStart(7)} MB/s  ${ratio}`);
}

const hashWasm = await createSHA256();
for (const size of [1 << 20, 256 << 20]) {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) data[i] = i & 0xff;
  const reps = size > 1 << 20 ? 3 : 200;
  const group = `sha256 ${size >> 20} MiB`;
  const chunk = 1 << 20;
  report(group, 'node:crypto', size, await time(() => createHash('sha256').update(data).digest('hex'), reps));
  report(group, 'stevedore native (sync)', size, await time(() => native.hash('sha256', data), reps), 'node:crypto');
  report(
    group,
    'stevedore native (pool)',
    size,
    await time(() => native.hashAsync('sha256', data), reps),
    'node:crypto',
  );
  report(
    group,
    'hash-wasm',
    size,
    await time(() => {
      hashWasm.init();
      for (let o = 0; o < size; o += chunk) hashWasm.update(data.subarray(o, o + chunk));
      return hashWasm.digest('hex');
    }, reps),
  );
  report(group, 'stevedore wasm', size, await time(() => wasm.hash('sha256', data), reps), 'hash-wasm');
}

// ---- tar parse throughput: ~500 MB archive of many small files -------------------------
function makeArchive(files) {
  // ustar headers written by hand so generating the fixture costs little.
  const blocks = [];
  const header = (name, size) => {
    const h = Buffer.alloc(512);
    h.write(name, 0, 100, 'ascii');
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(size.toString(8).padStart(11, '0') + '\0', 124);
    h.write('14700000000\0', 136);
    h.write('        ', 148);
    h.write('0', 156);
    h.write('ustar\0' + '00', 257);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    return h;
  };
  let total = 0;
  for (let i = 0; i < files; i++) {
    const size = 512 + ((i * 2654435761) % 9000);
    blocks.push(header(`usr/share/f${i}`, size));
    const data = Buffer.alloc(Math.ceil(size / 512) * 512, i & 0xff);
    blocks.push(data);
    total += 512 + data.length;
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks, total + 1024);
}

const archive = makeArchive(100_000);
const group = `tar parse ${(archive.length / 1e6).toFixed(0)} MB, 100k files`;
const CHUNK = 1 << 20;
report(
  group,
  'tar-stream',
  archive.length,
  await time(async () => {
    const extract = tarStream.extract();
    let n = 0;
    const done = new Promise((resolve, reject) => {
      extract.on('entry', (_h, stream, next) => {
        n++;
        stream.on('end', next);
        stream.resume();
      });
      extract.on('finish', resolve);
      extract.on('error', reject);
    });
    Readable.from(
      (function* () {
        for (let o = 0; o < archive.length; o += CHUNK) yield archive.subarray(o, o + CHUNK);
      })(),
    ).pipe(extract);
    await done;
    if (n !== 100_000) throw new Error(`tar-stream saw ${n} entries`);
  }, 5),
);
for (const [name, b] of [
  ['stevedore native', native],
  ['stevedore wasm', wasm],
]) {
  report(
    group,
    name,
    archive.length,
    await time(() => {
      const s = b.createTarScanner({});
      let n = 0;
      for (let o = 0; o < archive.length; o += CHUNK) {
        for (const e of s.push(archive.subarray(o, o + CHUNK), true)) if (e.type === 'entry') n++;
      }
      s.finish();
      if (n !== 100_000) throw new Error(`${name} saw ${n} entries`);
    }, 5),
    'tar-stream',
  );
}
const tmp = mkdtempSync(join(tmpdir(), 'stevedore-bench-'));
try {
  const file = join(tmp, 'a.tar');
  writeFileSync(file, archive);
  useBackend('native');
  report(
    group,
    'stevedore native (file read incl.)',
    archive.length,
    await time(async () => {
      const l = await listTarFile(file);
      if (l.length !== 100_000) throw new Error('listTarFile count');
    }, 5),
    'tar-stream',
  );

  // ---- overlay lookups: 50-layer stack, ours vs stat() through a kernel overlay mount -------
  const layers = 50;
  const perLayer = 400;
  const paths = [];
  const indexes = [];
  const lowerDirs = [];
  for (let l = 0; l < layers; l++) {
    const dir = join(tmp, `l${l}`);
    const entries = [];
    for (let i = 0; i < perLayer; i++) {
      const rel = `d${i % 20}/l${l}-f${i}`;
      mkdirSync(join(dir, `d${i % 20}`), { recursive: true });
      writeFileSync(join(dir, rel), '');
      entries.push({ path: rel, type: 'file' });
      paths.push(rel);
    }
    indexes.push(LayerIndex.fromEntries(entries));
    lowerDirs.unshift(dir);
  }
  const stack = new LayerStack(indexes);
  const probes = paths.map((_, i) => paths[(i * 7919) % paths.length]);
  const lookups = 200_000;
  const lk = (fn) => async () => {
    for (let i = 0; i < lookups; i++) fn(probes[i % probes.length]);
  };
  const mnt = join(tmp, 'mnt');
  mkdirSync(mnt);
  let mounted = false;
  try {
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lowerDirs.join(':')}`, mnt]);
    mounted = true;
  } catch (e) {
    console.log(`(kernel overlay mount unavailable: ${e.message.split('\n')[0]})`);
  }
  const lgroup = `overlay stat, ${layers} layers`;
  const perSec = (s) => lookups / s;
  const row = (name, s, ref) => {
    const rate = perSec(s);
    results.push({ group: lgroup, name, lookupsPerSec: rate });
    const r = ref && results.find((x) => x.group === lgroup && x.name === ref);
    console.log(
      `${lgroup.padEnd(22)} ${name.padEnd(28)} ${(rate / 1e3).toFixed(0).padStart(7)} k/s  ${r ? (rate / r.lookupsPerSec).toFixed(2) + '×' : ''}`,
    );
  };
  if (mounted) {
    try {
      row(
        'kernel overlay statSync',
        await time(
          lk((p) => statSync(join(mnt, p))),
          3,
        ),
      );
    } finally {
      execFileSync('umount', [mnt]);
    }
  }
  row(
    'stevedore native stat',
    await time(
      lk((p) => stack.stat(p)),
      3,
    ),
    mounted ? 'kernel overlay statSync' : undefined,
  );
  useBackend('wasm');
  const wstack = new LayerStack(buildIndexes(layers, perLayer));
  row(
    'stevedore wasm stat',
    await time(
      lk((p) => wstack.stat(p)),
      3,
    ),
    mounted ? 'kernel overlay statSync' : undefined,
  );
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

function buildIndexes(layers, perLayer) {
  const out = [];
  for (let l = 0; l < layers; l++) {
    const entries = [];
    for (let i = 0; i < perLayer; i++) entries.push({ path: `d${i % 20}/l${l}-f${i}`, type: 'file' });
    out.push(LayerIndex.fromEntries(entries));
  }
  return out;
}

const machine = `${cpus()[0]?.model ?? 'unknown cpu'} ×${cpus().length}, node ${process.versions.node}`;
mkdirSync(join(root, 'build', 'bench'), { recursive: true });
writeFileSync(
  join(root, 'build', 'bench', 'core.json'),
  JSON.stringify({ machine, date: new Date().toISOString(), results }, null, 2),
);
console.log(`\nmachine: ${machine}`);
