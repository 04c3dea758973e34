#!/usr/bin/env node
// Turns the benchmark results under build/bench/*.json (written by the `bench` targets) into
// the README's benchmark tables: `node tools/bench-report.mjs` prints them, `--write` replaces
// the section between <!-- bench:start --> and <!-- bench:end --> in README.md.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const load = (name) => {
  const f = join(root, 'build', 'bench', `${name}.json`);
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')) : undefined;
};
const x = (v) => `${v.toFixed(2)}×`;
const cell = (s) => String(s).replaceAll('|', '\\|');
const out = [];

const core = load('core');
if (core) {
  out.push(
    `**Core** (\`nx run core:bench\`, ${core.machine}, ${core.date.slice(0, 10)}): throughput, ours ÷ reference (higher is better).`,
    '',
  );
  out.push('| benchmark | reference | ours | ratio |', '| --- | --- | --- | --- |');
  const by = (g, n) => core.results.find((r) => r.group === g && r.name === n);
  const pairs = [];
  for (const g of new Set(core.results.map((r) => r.group))) {
    if (g.startsWith('sha256')) {
      pairs.push([g, 'node:crypto', 'stevedore native (sync)'], [g, 'hash-wasm', 'stevedore wasm']);
    } else if (g.startsWith('tar parse')) {
      pairs.push([g, 'tar-stream', 'stevedore native'], [g, 'tar-stream', 'stevedore wasm']);
    } else if (g.startsWith('overlay')) {
      pairs.push(
        [g, 'kernel overlay statSync', 'stevedore native stat'],
        [g, 'kernel overlay statSync', 'stevedore wasm stat'],
      );
    }
  }
  for (const [g, refName, oursName] of pairs) {
    const ref = by(g, refName);
    const ours = by(g, oursName);
    if (!ref || !ours) continue;
    const unit = (r) => (r.mbps ? `${r.mbps.toFixed(0)} MB/s` : `${(r.lookupsPerSec / 1e3).toFixed(0)} k/s`);
    const ratio = ours.mbps ? ours.mbps / ref.mbps : ours.lookupsPerSec / ref.lookupsPerSec;
    out.push(`| ${g}: ${oursName} | ${refName} ${unit(ref)} | ${unit(ours)} | ${x(ratio)} |`);
  }
  out.push('');
}

const layers = load('layers');
if (layers) {
  const flat = layers.results.filter((r) => r.group !== 'memory');
  const ours = flat.find((r) => r.name === 'stevedore (flatten, verified)' || r.name === 'stevedore (apply, verified)');
  out.push(
    `**Layer engine** (\`core:bench\`, ${layers.machine}): ${flat[0]?.group}; time, ours ÷ tool (lower is better). Rootfs equal to umoci's: ${layers.rootfsEqualToUmoci}.`,
    '',
  );
  out.push('| tool | seconds | stevedore flatten ÷ tool | note |', '| --- | --- | --- | --- |');
  for (const r of flat)
    out.push(
      `| ${cell(r.name)} | ${r.seconds.toFixed(2)} | ${r.name.startsWith('stevedore') ? '' : x(ours.seconds / r.seconds)} | ${r.note ?? ''} |`,
    );
  const mem = layers.results.find((r) => r.group === 'memory');
  if (mem) out.push('', `Flattening a 2 GiB layer: peak RSS ${mem.peakRssMiB.toFixed(0)} MiB.`);
  out.push('');
}

const image = load('image');
if (image) {
  out.push(
    `**Image save/load** (\`image:bench\`, ${image.machine}, docker ${image.docker}): ${(image.image.contentBytes / 1e6).toFixed(0)} MB, ${image.image.files} files, ${image.image.layers} layers; time ÷ docker (lower is better).`,
    '',
  );
  out.push('| step | seconds | ratio | peak RSS |', '| --- | --- | --- | --- |');
  for (const r of image.results)
    out.push(
      `| ${r.group}: ${r.name} | ${r.seconds.toFixed(2)} | ${r.ratio ? x(r.ratio) : ''} | ${r.maxRssMiB ? `${r.maxRssMiB.toFixed(0)} MiB` : ''} |`,
    );
  out.push('');
}

const registry = load('registry');
if (registry) {
  out.push(
    `**Registry pull/push** (\`registry:bench\`, ${registry.machine ?? ''}): time ÷ skopeo (lower is better).`,
    '',
  );
  out.push('| step | seconds | ratio | peak RSS |', '| --- | --- | --- | --- |');
  for (const r of registry.results)
    out.push(
      `| ${r.group}: ${cell(r.name)} | ${r.seconds.toFixed(2)} | ${r.ratio ? x(r.ratio) : ''} | ${r.maxRssMiB ? `${r.maxRssMiB.toFixed(0)} MiB` : ''} |`,
    );
  out.push('');
}

const overlay = load('overlay');
if (overlay) {
  const i = overlay.image;
  out.push(
    `**Overlay store pull** (\`overlay:bench\`, ${overlay.machine}, docker ${overlay.docker}, ${overlay.skopeo}, load ${overlay.loadAverage.before[0]}→${overlay.loadAverage.after[0]}): ${(i.compressedBytes / 1e6).toFixed(0)} MB gzip, ${i.layers} layers, ${i.files} files, from a loopback registry, best of two; time ÷ docker pull (goal ≤ ${overlay.goal.vsDocker}×) and ÷ skopeo (stretch ≤ ${overlay.goal.stretchVsSkopeo}×), lower is better.`,
    '',
  );
  out.push('| step | seconds | ÷ docker | ÷ skopeo | CPU s | peak RSS |', '| --- | --- | --- | --- | --- | --- |');
  for (const r of overlay.results)
    out.push(
      `| ${cell(r.name)} | ${r.seconds.toFixed(2)} | ${r.ratio ? x(r.ratio) : ''} | ${r.vsSkopeo ? x(r.vsSkopeo) : ''} | ${r.cpuSeconds.toFixed(1)} | ${r.maxRssMiB.toFixed(0)} MiB |`,
    );
  const m = overlay.mount;
  const ms = (s) => `${(s * 1000).toFixed(1)} ms`;
  out.push(
    '',
    `Mount of a ${m.layers}-layer image (read-only kernel overlay, average of ${m.runs}): ours ${ms(m.ours.mount)} + umount ${ms(m.ours.umount)}; mount(8) by hand with the same lowerdir ${ms(m.byHand.mount)} + ${ms(m.byHand.umount)} (${x(m.ratio)}).`,
    '',
  );
}

const web = load('web');
if (web) {
  const a = web.archive;
  out.push(
    `**Web inspector** (\`web:bench\`, ${web.machine}, ${web.chromium}): verify and index a ${(a.bytes / 1e6).toFixed(0)} MB docker save (${a.layers} gzip layers, ${a.files} files); Chromium time ÷ Node native time (lower is better).`,
    '',
  );
  out.push('| where | seconds | MB/s | ratio | peak RSS |', '| --- | --- | --- | --- | --- |');
  for (const r of web.results)
    out.push(
      `| ${cell(r.name)} | ${r.seconds.toFixed(2)} | ${r.mbps.toFixed(0)} | ${r.ratio ? x(r.ratio) : ''} | ${(r.maxRssMiB ?? r.rendererPeakRssMiB).toFixed(0)} MiB${r.rendererPeakRssMiB ? ' (renderer)' : ''} |`,
    );
  out.push('');
}

const server = load('server');
if (server) {
  out.push(
    `**Registry server** (\`server:bench\`): ${server.summary ?? ''}`,
    '',
    '```',
    JSON.stringify(server.results ?? server, null, 1).slice(0, 2000),
    '```',
    '',
  );
}

const text = out.join('\n');
if (process.argv.includes('--write')) {
  const readme = join(root, 'README.md');
  const s = readFileSync(readme, 'utf8');
  const start = '<!-- bench:start -->';
  const end = '<!-- bench:end -->';
  const i = s.indexOf(start);
  const j = s.indexOf(end);
  if (i < 0 || j < 0) throw new Error('README.md has no bench markers');
  writeFileSync(readme, `${s.slice(0, i + start.length)}\n${text}\n${s.slice(j)}`);
} else {
  process.stdout.write(`${text}\n`);
}
