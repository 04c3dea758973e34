#!/usr/bin/env node
// core:bench — throughput of the core's hot paths side by side with the references, from one
// run on this machine. Ratios are ours ÷ reference (higher is better for throughput).
// Results: printed as a table and written to build/bench/core.json for the README generator.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNativeBackend, loadWasmBackend } from '@stevedore/core';
import { createSHA256 } from 'hash-wasm';

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

const machine = `${cpus()[0]?.model ?? 'unknown cpu'} ×${cpus().length}, node ${process.versions.node}`;
mkdirSync(join(root, 'build', 'bench'), { recursive: true });
writeFileSync(
  join(root, 'build', 'bench', 'core.json'),
  JSON.stringify({ machine, date: new Date().toISOString(), results }, null, 2),
);
console.log(`\nmachine: ${machine}`);
