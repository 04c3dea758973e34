#!/usr/bin/env node
// web:bench (issue 10) — verify and index a ≥ 400 MB `docker save` archive (Docker 25+ shape:
// OCI layout + manifest.json, 3 gzip layers, thousands of files), generated deterministically
// here, in two ways on this machine:
//   - Chromium (headless, Debian's): the page's own code path (file input → indexArchive →
//     every layer scanned → analyse → views), timed inside the page (`stevedore:open` measure);
//   - Node with the native backend: the same work through @stevedore/core (bench/node-side.mjs,
//     its own process, so its peak RSS is its own).
// Ratio: Chromium seconds ÷ Node seconds. Memory: the peak RSS (VmHWM) of every Chromium
// process and the peak JS heap the page reported over CDP, sampled, to show the archive is
// streamed rather than held. Results: printed, and written to build/bench/web.json.
import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import {
  closeSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGzip } from 'node:zlib';
import { TarWriter } from '@stevedore/core';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const root = resolve(pkg, '../..');
const dist = join(pkg, 'dist');
const CHROMIUM = process.env.STEVEDORE_CHROMIUM ?? '/usr/bin/chromium';
const MIN_BYTES = 400e6;
// More files per layer (e.g. 2 for a ~860 MB archive), to see that memory does not follow size.
const SCALE = Number(process.env.STEVEDORE_WEB_BENCH_SCALE ?? 1);
const MTIME = 1_700_000_000;

if (!existsSync(join(dist, 'index.html'))) throw new Error('build the page first (nx run web:build)');
const work = mkdtempSync(join(process.env.STEVEDORE_BENCH_DIR ?? tmpdir(), 'stevedore-bench-web-'));

// ---- the archive -------------------------------------------------------------------------------

// Deterministic contents: AES-CTR keystream; even files as hex text (gzip gets ~2×), odd ones raw.
const keystream = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 9));
const content = (i, size) =>
  i % 2
    ? keystream.update(Buffer.alloc(size))
    : Buffer.from(
        keystream
          .update(Buffer.alloc(Math.ceil(size / 2)))
          .toString('hex')
          .slice(0, size),
        'latin1',
      );

/** The files of each layer: [path, size] or [path, 'whiteout']; the top layer overwrites and deletes. */
function plan() {
  const l0 = [];
  for (let i = 0; i < 2000 * SCALE; i++) l0.push([`usr/lib/pkg${i % 50}/f${i}.so`, 60_000 + ((i * 7919) % 200_000)]);
  const l1 = [];
  for (let i = 0; i < 1500 * SCALE; i++) l1.push([`opt/app/m${i % 40}/f${i}.bin`, 40_000 + ((i * 104_729) % 120_000)]);
  const l2 = [];
  for (let i = 0; i < 800 * SCALE; i++)
    l2.push([`srv/data/d${i % 20}/f${i}.dat`, 30_000 + ((i * 15_485_863) % 140_000)]);
  for (let i = 0; i < 100; i++) l2.push([`usr/lib/pkg${i % 50}/f${i}.so`, 10_000]); // overwrites
  for (let i = 100; i < 300; i++) l2.push([`usr/lib/pkg${i % 50}/.wh.f${i}.so`, 'whiteout']);
  return [l0, l1, l2];
}

const write = (stream, chunk) =>
  new Promise((ok, fail) => {
    if (stream.write(chunk)) return ok();
    const done = (e) => {
      stream.off('drain', done).off('error', done);
      e ? fail(e) : ok();
    };
    stream.on('drain', done).on('error', done);
  });

/** One gzip layer blob: returns its digest, diff_id, sizes and file count. */
async function writeLayer(files, path) {
  const tar = new TarWriter('pax');
  const gz = createGzip({ level: 1 });
  const out = createWriteStream(path);
  const blob = createHash('sha256');
  const diff = createHash('sha256');
  let size = 0;
  let compressedSize = 0;
  gz.on('data', (c) => {
    blob.update(c);
    compressedSize += c.length;
  });
  gz.pipe(out);
  const put = async (b) => {
    diff.update(b);
    size += b.length;
    await write(gz, b);
  };
  const dirs = new Set();
  let n = 0;
  for (const [p, s] of files) {
    const parts = p.split('/');
    for (let d = 1; d < parts.length; d++) {
      const dir = `${parts.slice(0, d).join('/')}/`;
      if (dirs.has(dir)) continue;
      dirs.add(dir);
      await put(tar.header({ path: dir, type: 'directory', mode: 0o755, mtime: MTIME }));
      await put(tar.endEntry());
    }
    const data = s === 'whiteout' ? Buffer.alloc(0) : content(n++, s);
    await put(tar.header({ path: p, type: 'file', mode: 0o644, size: data.length, mtime: MTIME }));
    if (data.length) await put(tar.data(data));
    await put(tar.endEntry());
  }
  await put(tar.finish());
  gz.end();
  await new Promise((ok, fail) => out.on('close', ok).on('error', fail));
  return { digest: `sha256:${blob.digest('hex')}`, diffId: `sha256:${diff.digest('hex')}`, size, compressedSize };
}

/** The Docker 25+ `docker save` shape around the layer blobs. */
function writeArchive(path, layers, layerFiles) {
  const tar = new TarWriter('pax');
  const fd = openSync(path, 'w');
  const put = (b) => writeSync(fd, b);
  const member = (name, data) => {
    put(tar.header({ path: name, type: 'file', mode: 0o644, size: data.length, mtime: MTIME }));
    put(tar.data(data));
    put(tar.endEntry());
  };
  const blob = (data) => {
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    member(`blobs/sha256/${digest.slice(7)}`, data);
    return { digest, size: data.length };
  };
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, i) => ({ created: '2026-01-01T00:00:00Z', created_by: `COPY layer${i} /` })),
    }),
  );
  put(tar.header({ path: 'blobs/', type: 'directory', mode: 0o755, mtime: MTIME }));
  put(tar.endEntry());
  put(tar.header({ path: 'blobs/sha256/', type: 'directory', mode: 0o755, mtime: MTIME }));
  put(tar.endEntry());
  const cfg = blob(config);
  layers.forEach((l, i) => {
    put(
      tar.header({
        path: `blobs/sha256/${l.digest.slice(7)}`,
        type: 'file',
        mode: 0o644,
        size: l.compressedSize,
        mtime: MTIME,
      }),
    );
    const src = openSync(layerFiles[i], 'r');
    const buf = Buffer.alloc(4 << 20);
    for (;;) {
      const n = readSync(src, buf, 0, buf.length, null);
      if (n === 0) break;
      put(tar.data(buf.subarray(0, n)));
    }
    closeSync(src);
    put(tar.endEntry());
  });
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
        layers: layers.map((l) => ({
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: l.digest,
          size: l.compressedSize,
        })),
      }),
    ),
  );
  const ref = 'stevedore-bench/web:latest';
  member(
    'index.json',
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...manifest,
            annotations: {
              'io.containerd.image.name': `docker.io/${ref}`,
              'org.opencontainers.image.ref.name': 'latest',
            },
          },
        ],
      }),
    ),
  );
  member(
    'manifest.json',
    Buffer.from(
      JSON.stringify([
        {
          Config: `blobs/sha256/${cfg.digest.slice(7)}`,
          RepoTags: [ref],
          Layers: layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`),
        },
      ]),
    ),
  );
  member('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
  put(tar.finish());
  closeSync(fd);
}

// ---- Chromium ----------------------------------------------------------------------------------

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.wasm': 'application/wasm',
};

async function serveDist() {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const file = normalize(join(dist, url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname)));
    if (!file.startsWith(dist)) return res.writeHead(404).end();
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, base: `http://127.0.0.1:${server.address().port}` };
}

/** Chromium's processes (descendants of this one) with their peak RSS (VmHWM), MiB. */
function chromiumPeaks(rootPid = process.pid) {
  const parent = new Map();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {}
  }
  const out = [];
  for (const pid of parent.keys()) {
    let p = pid;
    while (p && p !== rootPid) p = parent.get(p);
    if (p !== rootPid) continue;
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.includes('chrom')) continue;
      const type = /--type=([\w-]+)/.exec(cmd)?.[1] ?? 'browser';
      out.push({ pid, type, peakRssMiB: hwm });
    } catch {}
  }
  return out;
}

async function inChromium(archive) {
  const { server, base } = await serveDist();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/`);
    await page.waitForSelector('body[data-state="idle"]');
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Performance.enable');
    let peakHeapMiB = 0;
    let sampling = true;
    // The renderer's resident memory over the run: flat when the archive is streamed.
    const renderers = chromiumPeaks().filter((p) => p.type === 'renderer');
    const rssSeries = [];
    const sampler = (async () => {
      while (sampling) {
        const { metrics } = await cdp.send('Performance.getMetrics').catch(() => ({ metrics: [] }));
        const total = metrics.find((m) => m.name === 'JSHeapTotalSize')?.value ?? 0;
        peakHeapMiB = Math.max(peakHeapMiB, total / 2 ** 20);
        rssSeries.push(Math.round(Math.max(0, ...renderers.map((p) => vmRssMiB(p.pid)))));
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    await page.setInputFiles('#file', archive);
    await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 15 * 60_000 });
    sampling = false;
    await sampler;
    const r = await page.evaluate(() => ({
      ms: performance.getEntriesByName('stevedore:open')[0]?.duration ?? Number.NaN,
      status: document.getElementById('status')?.textContent ?? '',
      paths: document.getElementById('file-count')?.textContent ?? '',
      failed: [...document.querySelectorAll('#checks tbody tr')]
        .filter((tr) => tr.dataset.status === 'mismatch' || tr.dataset.status === 'missing')
        .map((tr) => tr.dataset.what),
      checks: document.querySelectorAll('#checks tbody tr').length,
    }));
    const procs = chromiumPeaks();
    if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
    return { ...r, seconds: r.ms / 1000, peakHeapMiB, procs, rssSeries };
  } finally {
    await browser.close();
    server.close();
  }
}

function vmRssMiB(pid) {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

// ---- run ---------------------------------------------------------------------------------------

try {
  console.log(`generating the archive in ${work} …`);
  const t = Date.now();
  const layerFiles = [];
  const layers = [];
  const plans = plan();
  for (const [i, files] of plans.entries()) {
    layerFiles.push(join(work, `layer${i}.tar.gz`));
    layers.push(await writeLayer(files, layerFiles[i]));
  }
  const archive = join(work, 'saved.tar');
  writeArchive(archive, layers, layerFiles);
  for (const f of layerFiles) rmSync(f);
  const bytes = statSync(archive).size;
  const files = plans.reduce((n, p) => n + p.length, 0);
  const uncompressed = layers.reduce((n, l) => n + l.size, 0);
  console.log(
    `archive: ${(bytes / 1e6).toFixed(0)} MB, ${layers.length} gzip layers (${(uncompressed / 1e6).toFixed(0)} MB of tar), ${files} files; ${((Date.now() - t) / 1000).toFixed(1)} s`,
  );
  if (bytes < MIN_BYTES) throw new Error(`the archive is ${bytes} bytes, under ${MIN_BYTES}: adjust plan()`);

  const node = JSON.parse(
    execFileSync(process.execPath, [join(here, 'node-side.mjs'), archive], {
      encoding: 'utf8',
      env: { ...process.env, STEVEDORE_BACKEND: 'native' },
    }),
  );
  if (node.failed.length) throw new Error(`node: checks failed: ${node.failed.join(', ')}`);
  console.log(
    `node (native)      ${node.seconds.toFixed(2)} s  ${(bytes / 1e6 / node.seconds).toFixed(0)} MB/s  peak RSS ${node.maxRssMiB.toFixed(0)} MiB  (${node.checks} checks, ${node.paths} paths)`,
  );

  const web = await inChromium(archive);
  if (web.failed.length || !web.status.startsWith('verified')) throw new Error(`chromium: ${web.status}`);
  // Peak RSS per process type (largest process of each type): the page runs in the renderer.
  const peaks = {};
  for (const p of web.procs) peaks[p.type] = Math.max(peaks[p.type] ?? 0, Math.round(p.peakRssMiB));
  const renderer = peaks.renderer ?? 0;
  const ratio = web.seconds / node.seconds;
  const q = (f) => web.rssSeries[Math.min(web.rssSeries.length - 1, Math.floor(f * web.rssSeries.length))];
  console.log(
    `chromium (wasm)    ${web.seconds.toFixed(2)} s  ${(bytes / 1e6 / web.seconds).toFixed(0)} MB/s  renderer peak RSS ${renderer} MiB, JS heap peak ${web.peakHeapMiB.toFixed(0)} MiB  (${web.checks} checks, ${web.paths})`,
  );
  console.log(
    `  renderer RSS at 25/50/75/100 % of the run: ${[0.25, 0.5, 0.75, 1].map(q).join(' / ')} MiB; peaks by process type ${JSON.stringify(peaks)}`,
  );
  console.log(`ratio chromium ÷ node: ${ratio.toFixed(2)}×`);

  const machine = `${cpus()[0]?.model ?? 'unknown cpu'} ×${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.versions.node}`;
  const chromiumVersion = execFileSync(CHROMIUM, ['--version'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  }).trim();
  const out = {
    machine,
    date: new Date().toISOString(),
    chromium: chromiumVersion,
    archive: {
      bytes,
      layers: layers.length,
      files,
      tarBytes: uncompressed,
      shape: 'docker save (Docker 25+: OCI layout + manifest.json), gzip layers',
    },
    notes: [
      'work: hash every archive member, check blob names, config and manifest; scan each layer (digest, diff_id, per-file sha256); layer indexes, merged view, changes and wasted space',
      'chromium: the page code path (file input → views rendered), timed inside the page (performance measure stevedore:open); wasm backend',
      'node: the same work with @stevedore/core native backend in its own process',
      'ratio: chromium seconds ÷ node seconds (lower is better); page cache warm for both',
      'memory: VmHWM of each Chromium process (renderer = the page); renderer VmRSS and JS heap total (CDP) sampled every 500 ms',
    ],
    results: [
      {
        group: 'verify + index',
        name: 'node (native)',
        seconds: node.seconds,
        mbps: bytes / 1e6 / node.seconds,
        maxRssMiB: node.maxRssMiB,
      },
      {
        group: 'verify + index',
        name: 'chromium (wasm, the page)',
        seconds: web.seconds,
        mbps: bytes / 1e6 / web.seconds,
        ratio,
        rendererPeakRssMiB: renderer,
        peakRssMiBByProcessType: peaks,
        rendererRssMiBEveryHalfSecond: web.rssSeries,
        jsHeapPeakMiB: web.peakHeapMiB,
      },
    ],
  };
  const target = join(root, 'build', 'bench', SCALE === 1 ? 'web.json' : `web-scale${SCALE}.json`);
  mkdirSync(dirname(target), { recursive: true });
  writeFileSync(target, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nmachine: ${machine}\nwrote ${target.slice(root.length + 1)}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
