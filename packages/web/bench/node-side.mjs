#!/usr/bin/env node
// The Node half of web:bench: the work the page does on an archive, done with @stevedore/core's
// native backend: one pass over the archive hashing every member (listTarFile), blob names,
// config and manifest checked, each layer scanned (digest, diff_id, per-file sha256) from its
// byte range, then the layer indexes, the merged view and per-layer changes / wasted space.
// Prints one JSON line: { seconds, maxRssMiB, checks, failed, paths, backend }.
import { closeSync, createReadStream, openSync, readSync } from 'node:fs';
import { backendKind, LayerIndex, LayerStack, listTarFile, scanLayer } from '@stevedore/core';

const archive = process.argv[2];
if (!archive) throw new Error('usage: node-side.mjs ARCHIVE');
const t0 = process.hrtime.bigint();

const listing = await listTarFile(archive, { hash: 'sha256' });
const norm = (p) => p.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');
// Data starts after the entry's header blocks: the next entry's offset minus the padded size.
const members = new Map();
listing.forEach((e, i) => {
  const next = listing[i + 1]?.offset;
  const padded = Math.ceil(e.size / 512) * 512;
  const start = next !== undefined ? next - padded : e.offset + 512;
  members.set(norm(e.path), { ...e, start });
});
const fd = openSync(archive, 'r');
const readJson = (name) => {
  const m = members.get(name);
  if (!m) throw new Error(`${name} is missing from the archive`);
  const b = Buffer.alloc(m.size);
  readSync(fd, b, 0, m.size, m.start);
  return JSON.parse(b.toString('utf8'));
};
const checks = [];
const check = (what, expected, actual) => checks.push({ what, ok: expected === actual });
for (const [name, m] of members) {
  const b = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(name);
  if (b && m.type === 'file') check(`blob ${name}`, `sha256:${b[1]}`, m.digest);
}
const [entry] = readJson('manifest.json');
const configMember = members.get(entry.Config);
const config = readJson(entry.Config);
const index = readJson('index.json');
const manifest = readJson(`blobs/sha256/${index.manifests[0].digest.slice(7)}`);
check('config digest', manifest.config.digest, configMember.digest);
closeSync(fd);

const scans = [];
for (const [i, name] of entry.Layers.entries()) {
  const m = members.get(name);
  const scan = await scanLayer(createReadStream(archive, { start: m.start, end: m.start + m.size - 1 }));
  check(`layer ${i} size`, manifest.layers[i].size, scan.compressedSize);
  check(`layer ${i} digest`, manifest.layers[i].digest, scan.digest);
  check(`layer ${i} diff_id`, config.rootfs.diff_ids[i], scan.diffId);
  scans.push(scan);
}

// As the page's analyse(): indexes, the stack, changes and wasted space, the merged walk.
const indexes = scans.map((s) =>
  LayerIndex.fromEntries(
    s.entries.map((e) => ({
      path: e.pathBytes,
      type: e.type,
      linkName: e.linkNameBytes,
      mode: e.mode & 0o7777,
      uid: e.uid,
      gid: e.gid,
      size: e.size,
      mtime: e.mtime,
      content: e.digest ?? '',
      xattrs: e.xattrs,
    })),
  ),
);
const stack = new LayerStack(indexes);
let changes = 0;
let wasted = 0;
scans.forEach((s, i) => {
  const lower = i > 0 ? new LayerStack(indexes.slice(0, i)) : undefined;
  for (const e of s.entries) {
    const path = norm(e.path);
    if (!path) continue;
    changes++;
    const base = path.slice(path.lastIndexOf('/') + 1);
    if (base.startsWith('.wh.')) continue;
    lower?.resolve(path);
    if (e.type !== 'file') continue;
    const top = stack.resolve(path);
    if (!(top.kind === 'found' && top.layer === i)) wasted += e.size;
  }
});
const paths = stack.walk().filter((s) => s.path).length;
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(
  JSON.stringify({
    seconds,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
    checks: checks.length,
    failed: checks.filter((c) => !c.ok).map((c) => c.what),
    paths,
    changes,
    wasted,
    backend: backendKind(),
  }),
);
