#!/usr/bin/env node
// Turns the benchmark results under build/bench/*.json (written by the `bench` targets) into
// the README's benchmark tables: `node tools/bench-report.mjs` prints them, `--write` replaces
// the section between <!-- bench:start --> and <!-- bench:end --> in README.md and draws
// docs/bench.svg, a bar chart of every headline ratio.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
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
    `**Layer engine** (\`core:bench\`, ${layers.machine}${layers.filesystem ? `, outputs on a ${layers.filesystem}` : ''}): ${flat[0]?.group}; time, ours ÷ tool (lower is better). Rootfs equal to umoci's: ${layers.rootfsEqualToUmoci}.`,
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
    `**Registry pull/push** (\`registry:bench\`, ${registry.machine ?? ''}): best of three runs per tool; time ÷ skopeo (lower is better).`,
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
    `**Overlay store pull** (\`overlay:bench\`, ${overlay.machine}${overlay.filesystem ? `, everything on a ${overlay.filesystem}` : ''}, docker ${overlay.docker}, ${overlay.skopeo}, load ${overlay.loadAverage.before[0]}→${overlay.loadAverage.after[0]}): ${(i.compressedBytes / 1e6).toFixed(0)} MB gzip, ${i.layers} layers, ${i.files} files, from a loopback registry, best of ${overlay.rounds ?? 2}; time ÷ docker pull (goal ≤ ${overlay.goal.vsDocker}×) and ÷ skopeo (stretch ≤ ${overlay.goal.stretchVsSkopeo}×), lower is better.`,
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

// ---- the chart: every headline ratio (ours ÷ the other tool, lower is better) as a bar ------
const bars = [];
if (layers) {
  const flat = layers.results.filter((r) => r.group !== 'memory');
  const ours = flat.find((r) => r.name === 'stevedore (flatten, verified)' || r.name === 'stevedore (apply, verified)');
  for (const r of flat)
    if (ours && !r.name.startsWith('stevedore')) bars.push([`flatten ÷ ${r.name}`, ours.seconds / r.seconds]);
}
if (image)
  for (const r of image.results)
    if (r.ratio && r.name.startsWith('ours')) bars.push([`${r.group}: ${r.name}`, r.ratio]);
if (registry) for (const r of registry.results) if (r.ratio) bars.push([`${r.group} ÷ skopeo`, r.ratio]);
if (overlay)
  for (const r of overlay.results) {
    if (r.ratio) bars.push([`store ${r.name.replace(/^ours: /, '')} ÷ docker pull`, r.ratio]);
  }
if (web) for (const r of web.results) if (r.ratio) bars.push([`web: ${r.name} ÷ node`, r.ratio]);

/** A horizontal bar chart (SVG, no dependencies): one bar per ratio, a line at 1× (parity). */
function chart(items) {
  const rowH = 22;
  const labelW = 430;
  const barW = 360;
  const top = 34;
  const max = Math.max(2, ...items.map(([, v]) => v));
  const scale = (v) => (v / max) * barW;
  const esc = (t) => t.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
  const h = top + items.length * rowH + 30;
  const rows = items.map(([label, v], i) => {
    const y = top + i * rowH;
    const color = v <= 1 ? '#2e7d32' : '#c62828';
    return [
      `<text x="${labelW - 8}" y="${y + 15}" text-anchor="end">${esc(label.length > 62 ? `${label.slice(0, 60)}…` : label)}</text>`,
      `<rect x="${labelW}" y="${y + 4}" width="${scale(v).toFixed(1)}" height="${rowH - 8}" fill="${color}"/>`,
      `<text x="${(labelW + scale(v) + 6).toFixed(1)}" y="${y + 15}">${v.toFixed(2)}×</text>`,
    ].join('');
  });
  const one = labelW + scale(1);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + barW + 70}" height="${h}" font-family="sans-serif" font-size="12">`,
    '<rect width="100%" height="100%" fill="#fff"/>',
    `<text x="10" y="20" font-size="14" font-weight="bold">stevedore time ÷ other tool's time (lower is better; green: faster)</text>`,
    ...rows,
    `<line x1="${one}" y1="${top - 4}" x2="${one}" y2="${h - 24}" stroke="#555" stroke-dasharray="4 3"/>`,
    `<text x="${one}" y="${h - 10}" text-anchor="middle">1× (same time)</text>`,
    '</svg>',
    '',
  ].join('\n');
}

if (bars.length) out.unshift('![benchmark ratios: stevedore time ÷ other tool](docs/bench.svg)', '');
const text = out.join('\n');
if (process.argv.includes('--write')) {
  if (bars.length) {
    mkdirSync(join(root, 'docs'), { recursive: true });
    writeFileSync(join(root, 'docs', 'bench.svg'), chart(bars));
  }
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
