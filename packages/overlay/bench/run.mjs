#!/usr/bin/env node
// overlay:bench (issue 7) — pull of a big image into the store, side by side with the real
// tools, and the mount time of a 100-layer image; root and dockerd needed. One run:
//
//   pull:  ours `Store.pull` (API, in its own process) and `stevedore pull --root` (CLI)
//          vs `docker pull` by a private dockerd (test harness, its own data root, cold:
//          `rmi` + prune before each pull) and `skopeo copy docker://… oci:DIR` (no unpacking),
//          all from one loopback distribution registry (test harness). Each tool best of ROUNDS,
//          fresh state each time. Goal ours ≤ 0.35× docker pull; stretch ≤ 1.0× skopeo.
//   mount: a 100-layer image loaded into a store; `mount` + `umount` (read-only kernel overlay)
//          averaged over MOUNT_RUNS, against mount(8)/umount(8) run by hand with the same
//          lowerdir string (the floor).
//   profile: where our pull's time goes — phase timestamps of the timed pulls (manifest,
//          download, verify, apply + content manifest, commit), the same work done layer by
//          layer in isolation (hashFile, applyLayer with tar-split and scan, metadata walk), fsync calls (strace -c)
//          and the JS thread's CPU profile (node --cpu-prof).
//
// Results: printed, and build/bench/overlay.json (tools/bench-report.mjs makes the README table).
//
// Usage: node bench/run.mjs          (the benchmark; STEVEDORE_BENCH_PROFILE=0 skips strace/cpu-prof)
//        node bench/run.mjs serve    (seed the registry, print the image ref and wait: for profiling)
//        node bench/step.mjs …     (one of our steps, run by the benchmark in its own process)
import { execFileSync, spawnSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { freshFilesystem, stepTable, writeGzipLayout } from '../../../tools/bench-lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');
const SKOPEO = process.env.STEVEDORE_SKOPEO || '/usr/bin/skopeo';
const STRACE = process.env.STEVEDORE_STRACE || '/usr/bin/strace';
const TIME = '/usr/bin/time';
const CLI = join(root, 'packages/cli/dist/bin.js');
const now = () => Number(process.hrtime.bigint()) / 1e9;

// The big image: LAYERS gzip layers of FILES_PER_LAYER incompressible files (many small, some big).
// STEVEDORE_BENCH_SCALE < 1 shrinks it for a quick try (no size check, results in overlay-small.json).
const SCALE = Number(process.env.STEVEDORE_BENCH_SCALE || 1);
const LAYERS = 4;
const FILES_PER_LAYER = Math.max(40, Math.round(1400 * SCALE));
const MIN_BYTES = 400e6;
const MIN_FILES = 5000;
const REPO = 'bench/big';
const TAG = 'latest';
// The mount image: MOUNT_LAYERS small layers.
const MOUNT_LAYERS = 100;
const MOUNT_RUNS = 10;
const CLI_MOUNT_RUNS = 3;
const MOUNT_REF = 'bench/hundred:latest';
const GOAL_VS_DOCKER = 0.35;
// Pull rounds (each tool once per round; the best counts): this is a shared 2-vCPU VM, where one
// run of any tool can be 30 % slower than the next.
const ROUNDS = Number(process.env.STEVEDORE_BENCH_ROUNDS || 3);
const STRETCH_VS_SKOPEO = 1.0;

// ---- the benchmark ---------------------------------------------------------------------------

if (process.getuid?.() !== 0) {
  console.error('overlay:bench needs root (it starts a private dockerd and mounts overlays)');
  process.exit(1);
}

/** The test harness (TypeScript) compiled with the workspace's tsc into build/, then imported. */
async function loadHarness() {
  const outDir = join(root, 'build', 'bench', 'overlay-harness');
  rmSync(outDir, { recursive: true, force: true });
  // biome-ignore format: flag/value pairs
  execFileSync(join(root, 'node_modules/.bin/tsc'), [
    '--outDir', outDir, '--rootDir', join(root, 'test/harness'),
    '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022',
    '--ignoreConfig', '--skipLibCheck', '--types', 'node', '--declaration', 'false', '--sourceMap', 'false',
    join(root, 'test/harness/index.ts'),
  ], { stdio: 'inherit' });
  writeFileSync(join(outDir, 'package.json'), '{"type":"module"}\n');
  return import(pathToFileURL(join(outDir, 'index.js')).href);
}

// Everything (dockerd's data root, our store, the registry's storage, skopeo's output) lives on
// a fresh ext4 filesystem (tools/bench-lib.mjs freshFilesystem); the harness puts its temp dirs there.
const fsysBase = mkdtempSync(join(tmpdir(), 'sd-overlay-bench-fs-'));
const fsys = freshFilesystem(fsysBase, '24G');
if (fsys.dir !== fsysBase) process.env.STEVEDORE_IT_TMPDIR = fsys.dir;

const H = await loadHarness();
const dir = H.makeTempDir('overlay-bench'); // hard-cleaned (kill, unmount, delete) by the harness
const p = (...f) => join(dir, ...f);
const mb = (b) => b / 1e6;
const load = () => loadavg().map((x) => Number(x.toFixed(2)));

/** Runs `cmd args` under /usr/bin/time after a `sync`; wall seconds, user+sys CPU, peak RSS (KiB), stdout. */
function measure(cmd, args, { env = process.env, cwd } = {}) {
  // Twice: the loop-mounted filesystem's sync dirties its backing file on the root filesystem,
  // whose write-back would otherwise run during the next step.
  spawnSync('sync');
  spawnSync('sync');
  const tf = p('time.out');
  const s = now();
  const r = spawnSync(TIME, ['-f', '%e %M %U %S', '-o', tf, cmd, ...args], {
    env,
    cwd,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const wall = now() - s;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}\n${r.stderr}\n${r.stdout}`);
  const [, rss, user, sys] = readFileSync(tf, 'utf8').trim().split('\n').pop().split(' ').map(Number);
  return { seconds: wall, maxRssKiB: rss, cpuSeconds: user + sys, stdout: r.stdout };
}

function ourStep(step, args, { prefix = [], nodeFlags = [] } = {}) {
  const m = measure(prefix[0] ?? process.execPath, [
    ...prefix.slice(1),
    ...(prefix.length ? [process.execPath] : []),
    ...nodeFlags,
    join(here, 'step.mjs'),
    step,
    ...args,
  ]);
  const inner = JSON.parse(m.stdout.trim().split('\n').pop());
  return { ...m, opSeconds: inner.seconds || undefined, inner };
}

const best = (runs) => runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));

/** dockerd's CPU seconds so far (its own and its waited-for children's: unpigz). */
function dockerdCpu(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  // fields[11..14] are utime, stime, cutime, cstime (the 14th–17th fields of stat) in clock ticks.
  return fields.slice(11, 15).reduce((n, v) => n + Number(v), 0) / 100;
}

/** Incompressible, seeded contents (AES-CTR keystream of a fixed key) and xorshift32 sizes. */
function seeded() {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
  let seed = 0x9e3779b9;
  return {
    bytes: (n) => cipher.update(Buffer.alloc(n)),
    rnd: () => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 2 ** 32;
    },
  };
}

/** The big image as an OCI layout: gzip (level 1) layers made by our createLayer. */
async function makeBigImage(layout) {
  const { createLayer } = await import('@stevedore/core');
  const g = seeded();
  const layers = [];
  let files = 0;
  let bytes = 0;
  for (let l = 0; l < LAYERS; l++) {
    const src = p(`src${l}`);
    for (let i = 0; i < FILES_PER_LAYER; i++) {
      const sub = join(src, 'data', `d${l}`, `s${i % 40}`);
      if (i < 40) mkdirSync(sub, { recursive: true });
      const r = g.rnd();
      const size = 1024 + Math.floor(r * r * r * 330_000); // many small, some big; mean ≈ 83 KB
      writeFileSync(join(sub, `f${i}.bin`), g.bytes(size));
      bytes += size;
      files++;
    }
    symlinkSync(`d${l}/s0/f0.bin`, join(src, 'data', `link${l}`));
    const file = p(`layer${l}.tar.gz`);
    const r = await createLayer(src, file, { compression: 'gzip', level: 1, clampMtime: 0 });
    rmSync(src, { recursive: true, force: true });
    layers.push({ ...r, file });
  }
  const manifest = writeGzipLayout(layout, layers, TAG);
  for (const l of layers) rmSync(l.file, { force: true });
  return {
    files,
    contentBytes: bytes,
    layers: layers.length,
    uncompressedBytes: layers.reduce((n, l) => n + l.uncompressedSize, 0),
    compressedBytes: layers.reduce((n, l) => n + l.compressedSize, 0),
    manifestDigest: manifest.digest,
  };
}

/** MOUNT_LAYERS small layers: files of its own in each, and /etc/version rewritten by every one. */
async function makeHundredLayers(layout) {
  const { createLayer } = await import('@stevedore/core');
  const g = seeded();
  const layers = [];
  for (let l = 0; l < MOUNT_LAYERS; l++) {
    const src = p('hsrc');
    mkdirSync(join(src, 'etc'), { recursive: true });
    mkdirSync(join(src, 'layers', `l${l}`), { recursive: true });
    writeFileSync(join(src, 'etc', 'version'), `${l}\n`);
    for (let i = 0; i < 5; i++) writeFileSync(join(src, 'layers', `l${l}`, `f${i}`), g.bytes(1024 + (i << 10)));
    const file = p(`h${l}.tar.gz`);
    const r = await createLayer(src, file, { compression: 'gzip', clampMtime: 0 });
    rmSync(src, { recursive: true, force: true });
    layers.push({ ...r, file });
  }
  writeGzipLayout(layout, layers, TAG);
  for (const l of layers) rmSync(l.file, { force: true });
}

const dirBytes = (d) => {
  let n = 0;
  for (const e of readdirSync(d, { withFileTypes: true, recursive: true }))
    if (e.isFile()) n += statSync(join(e.parentPath ?? e.path, e.name)).size;
  return n;
};

/** Summary of a .cpuprofile: JS-thread busy seconds and the top self-time functions. */
function summarizeCpuProfile(file) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const self = new Map(prof.nodes.map((n) => [n.id, 0]));
  const dt = prof.timeDeltas;
  for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], self.get(prof.samples[i]) + (dt[i] ?? 0));
  const byName = new Map();
  let idle = 0;
  let total = 0;
  for (const n of prof.nodes) {
    const us = self.get(n.id);
    total += us;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === '(idle)') {
      idle += us;
      continue;
    }
    const where = url ? `${url.replace(/^.*\/(node_modules|packages)\//, '')}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'} ${where}`.trim();
    byName.set(key, (byName.get(key) ?? 0) + us);
  }
  const top = [...byName.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 8)
    .map(([fn, us]) => ({ fn, seconds: us / 1e6 }));
  return { profiledSeconds: total / 1e6, jsBusySeconds: (total - idle) / 1e6, top };
}

/** fsync-family calls of a process tree, from `strace -f -c` output. */
function parseStraceSummary(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const m = line.trim().match(/^([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?(\w+)$/);
    if (m) out[m[6]] = { seconds: Number(m[2]), calls: Number(m[4]) };
  }
  return out;
}

// ---- run -------------------------------------------------------------------------------------

const { results, row } = stepTable({ groupWidth: 6, nameWidth: 44 });
const loadBefore = load();
let exitCode = 0;
try {
  console.log(`load average before: ${loadBefore.join(' ')}`);
  const dockerd = await H.startDockerd();
  const registry = await H.startRegistry({ config: { log: { level: 'warn' } } });
  const dockerVersion = (await dockerd.docker(['version', '--format', '{{.Server.Version}}'])).stdout.trim();
  const skopeoVersion = execFileSync(SKOPEO, ['--version'], { encoding: 'utf8' }).trim();
  console.log(`dockerd ${dockerVersion}; ${skopeoVersion}; registry ${registry.host}`);
  const dockerEnv = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DOCKER_'))),
    DOCKER_CONFIG: dockerd.clientConfigDir,
    DOCKER_CLI_HINTS: 'false',
  };
  const skopeoEnv = { ...process.env, TMPDIR: dir };

  // The image (untimed), pushed once with skopeo.
  let t = now();
  const layout = p('layout');
  const img = await makeBigImage(layout);
  if (SCALE >= 1 && (img.compressedBytes < MIN_BYTES || img.files < MIN_FILES))
    throw new Error(`image too small: ${JSON.stringify(img)}`);
  console.log(
    `image: ${img.layers} gzip layers, ${img.files} files, ${mb(img.compressedBytes).toFixed(0)} MB compressed ` +
      `(${mb(img.uncompressedBytes).toFixed(0)} MB tar) in ${(now() - t).toFixed(1)} s`,
  );
  const ref = `${registry.host}/${REPO}:${TAG}`;
  t = now();
  measure(
    SKOPEO,
    ['--insecure-policy', 'copy', '-q', '--dest-tls-verify=false', `oci:${layout}:${TAG}`, `docker://${ref}`],
    { env: skopeoEnv },
  );
  rmSync(layout, { recursive: true, force: true });
  console.log(`pushed ${ref} with skopeo (${(now() - t).toFixed(1)} s)\n`);
  if (process.argv[2] === 'serve') {
    console.log(`serving ${ref}; pull with: node ${join(here, 'step.mjs')} pull STORE_ROOT ${ref}`);
    // Until a signal: the harness's own hook stops the daemons first, then this one unmounts
    // the fresh filesystem (the `finally` below does not run on a signal).
    for (const sig of ['SIGINT', 'SIGTERM']) {
      process.once(sig, () => {
        try {
          fsys.unmount();
          rmSync(fsysBase, { recursive: true, force: true });
        } catch (e) {
          console.error(e);
        }
        process.exit(0);
      });
    }
    await new Promise(() => setInterval(() => {}, 1 << 30));
  }

  // ---- 1. pull, each tool ROUNDS times, interleaved, fresh state each time ----
  const runs = { docker: [], skopeo: [], api: [], cli: [] };
  let dockerImageId;
  let oursImageId;
  const dockerCold = async () => {
    await dockerd.docker(['rmi', '-f', ref], { allowFailure: true });
    await dockerd.docker(['image', 'prune', '-a', '-f']);
    const left = (await dockerd.docker(['images', '-aq'])).stdout.trim();
    const overlay2 = join(dockerd.dataRoot, 'overlay2');
    const dirs = existsSync(overlay2) ? readdirSync(overlay2).filter((n) => n !== 'l') : [];
    if (left || dirs.length) throw new Error(`docker not cold: images ${left}, overlay2 ${dirs.join(' ')}`);
  };
  for (let round = 1; round <= ROUNDS; round++) {
    const dockerRun = async () => {
      await dockerCold();
      const cpu0 = dockerdCpu(dockerd.pid);
      const d = measure(H.bins.docker, ['--host', dockerd.host, 'pull', '-q', ref], { env: dockerEnv });
      d.cpuSeconds += dockerdCpu(dockerd.pid) - cpu0; // the work happens in dockerd
      runs.docker.push(d);
      dockerImageId = (await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', ref])).stdout.trim();
    };
    const skopeoRun = () => {
      const sk = p(`skopeo-${round}`);
      runs.skopeo.push(
        measure(
          SKOPEO,
          ['--insecure-policy', 'copy', '-q', '--src-tls-verify=false', `docker://${ref}`, `oci:${sk}:${TAG}`],
          { env: skopeoEnv },
        ),
      );
      rmSync(sk, { recursive: true, force: true });
    };
    let api;
    const apiRun = () => {
      const apiRoot = p(`store-api-${round}`);
      api = ourStep('pull', [apiRoot, ref]);
      runs.api.push(api);
      oursImageId = api.inner.imageId;
      rmSync(apiRoot, { recursive: true, force: true });
    };
    const cliRun = () => {
      const cliRoot = p(`store-cli-${round}`);
      runs.cli.push(measure(process.execPath, [CLI, '-q', '--root', cliRoot, 'pull', ref]));
      rmSync(cliRoot, { recursive: true, force: true });
    };
    // The order changes from round to round. On this VM the step right after skopeo's output is
    // deleted often pays a second of extra system time copying into the page cache (perf:
    // copy_folio_from_iter_atomic; a step after our own store's deletion does not): each round
    // hands that place to another tool (API, then CLI, then docker).
    const orders = [
      [dockerRun, skopeoRun, apiRun, cliRun],
      [apiRun, dockerRun, skopeoRun, cliRun],
      [cliRun, apiRun, skopeoRun, dockerRun],
    ];
    for (const run of orders[(round - 1) % orders.length]) await run();
    console.log(
      `round ${round}: docker ${runs.docker.at(-1).seconds.toFixed(2)} s, skopeo ${runs.skopeo.at(-1).seconds.toFixed(2)} s, ` +
        `ours API ${api.seconds.toFixed(2)} s, CLI ${runs.cli.at(-1).seconds.toFixed(2)} s`,
    );
  }
  await dockerCold();
  if (oursImageId !== dockerImageId) throw new Error(`image ids differ: ours ${oursImageId}, docker ${dockerImageId}`);
  console.log('');
  const label = `pull ${mb(img.compressedBytes).toFixed(0)} MB`;
  const dRow = row('pull', 'docker pull (dockerd 20.10, overlay2)', img.compressedBytes, best(runs.docker));
  const sRow = row('pull', 'skopeo copy docker:// → oci: (no unpack)', img.compressedBytes, best(runs.skopeo));
  const apiBest = best(runs.api);
  const aRow = row('pull', 'ours: Store.pull (API process)', img.compressedBytes, apiBest, dRow.name);
  const cRow = row('pull', 'ours: stevedore pull --root (CLI)', img.compressedBytes, best(runs.cli), dRow.name);
  for (const [r, runList] of [
    [dRow, runs.docker],
    [sRow, runs.skopeo],
    [aRow, runs.api],
    [cRow, runs.cli],
  ]) {
    r.cpuSeconds = best(runList).cpuSeconds;
    r.runs = runList.map((m) => Number(m.seconds.toFixed(3)));
    if (r !== dRow && r !== sRow) r.vsSkopeo = r.seconds / sRow.seconds;
  }
  console.log(
    `\nours (API) ÷ docker pull ${aRow.ratio.toFixed(2)}× (goal ≤ ${GOAL_VS_DOCKER}: ${aRow.ratio <= GOAL_VS_DOCKER ? 'met' : 'not met'}); ` +
      `÷ skopeo ${aRow.vsSkopeo.toFixed(2)}× (stretch ≤ ${STRETCH_VS_SKOPEO}: ${aRow.vsSkopeo <= STRETCH_VS_SKOPEO ? 'met' : 'not met'}); ` +
      `CLI ${cRow.ratio.toFixed(2)}× docker, ${cRow.vsSkopeo.toFixed(2)}× skopeo`,
  );

  // ---- 3. profile of our pull ----
  const tl = apiBest.inner.timeline;
  const lastStored = Math.max(...tl.layers.map((l) => l.stored ?? 0));
  const lastApplied = Math.max(...tl.layers.map((l) => l.applied ?? 0));
  const profile = {
    timeline: tl,
    phases: {
      nodeStartAndImports: tl.imported,
      storeOpen: tl.opened - tl.imported,
      manifestAndConfig: tl.manifestDone - tl.opened,
      firstDownloadToLastBlobStored: lastStored - Math.min(...tl.layers.map((l) => l.downloadStart)),
      commit: tl.done - lastApplied,
      // download and apply overlap: each layer's apply follows its download as it arrives
      perLayer: tl.layers.map((l) => ({
        download: l.downloaded - l.downloadStart,
        apply: l.applied - l.applying,
        applyEndAfterDownload: l.applied - l.downloaded,
      })),
    },
  };
  console.log('\nprofile of our pull (best API run; seconds from process start):');
  // A layer is applied while its blob downloads (the apply starts when a slot is free).
  const f = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(2) : '-');
  for (const [i, l] of tl.layers.entries())
    console.log(
      `  layer ${i}: ${mb(l.bytes ?? 0).toFixed(0)} MB download ${f(l.downloadStart)}→${f(l.downloaded)}, ` +
        `apply ${f(l.applying)}→${f(l.applied)} (scanned), stored ${f(l.stored)}`,
    );
  console.log(
    `  node+imports ${f(tl.imported)}, open ${f(profile.phases.storeOpen)}, manifest ${f(profile.phases.manifestAndConfig)}, ` +
      `commit ${f(profile.phases.commit)}, total ${f(tl.done)}`,
  );

  // The same work one piece at a time, on a kept store.
  const keepRoot = p('store-profile');
  ourStep('pull', [keepRoot, ref]);
  const scratch = p('phases');
  mkdirSync(scratch);
  const phases = ourStep('phases', [keepRoot, ref, scratch]).inner.layers;
  profile.isolated = phases;
  const sum = (k) => phases.reduce((n, r) => n + r[k], 0);
  profile.isolatedTotals = Object.fromEntries(
    ['hashFile', 'applyLayer', 'scanTreeWalk', 'manifestEncode', 'syncAfter'].map((k) => [k, sum(k)]),
  );
  const cpuSum = (k) => phases.reduce((n, r) => n + r.cpu[k], 0);
  profile.isolatedCpuTotals = Object.fromEntries(
    ['hashFile', 'applyLayer', 'scanTreeWalk', 'manifestEncode'].map((k) => [k, cpuSum(k)]),
  );
  console.log(
    `  isolated CPU: hashFile ${cpuSum('hashFile').toFixed(2)} s, applyLayer ${cpuSum('applyLayer').toFixed(2)} s, ` +
      `metadata walk ${cpuSum('scanTreeWalk').toFixed(2)} s, manifest encode ${cpuSum('manifestEncode').toFixed(2)} s`,
  );
  console.log(
    `  isolated, all layers one by one: hashFile ${sum('hashFile').toFixed(2)} s, applyLayer ${sum('applyLayer').toFixed(2)} s, ` +
      `metadata walk ${sum('scanTreeWalk').toFixed(2)} s, manifest encode ${sum('manifestEncode').toFixed(2)} s, ` +
      `sync after ${sum('syncAfter').toFixed(2)} s`,
  );
  const storedBytes = dirBytes(keepRoot);
  rmSync(keepRoot, { recursive: true, force: true });

  if (process.env.STEVEDORE_BENCH_PROFILE !== '0') {
    // fsync & co. across the process tree (strace slows the run: counts, not the timed figures).
    const stRoot = p('store-strace');
    const stOut = p('strace.txt');
    ourStep('pull', [stRoot, ref], {
      prefix: [STRACE, '-f', '-c', '-o', stOut, '-e', 'trace=fsync,fdatasync,sync_file_range,syncfs,rename,renameat2'],
    });
    profile.syscalls = parseStraceSummary(readFileSync(stOut, 'utf8'));
    rmSync(stRoot, { recursive: true, force: true });
    console.log(`  syscalls (strace -f -c): ${JSON.stringify(profile.syscalls)}`);
    // The JS thread (the engine, hashing and the walk run on native threads, not seen here).
    const profDir = p('cpuprof');
    const cpRoot = p('store-cpuprof');
    const cp = ourStep('pull', [cpRoot, ref], { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profDir}`] });
    rmSync(cpRoot, { recursive: true, force: true });
    const profFile = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    profile.cpuProfile = { ...summarizeCpuProfile(join(profDir, profFile)), processCpuSeconds: cp.cpuSeconds };
    console.log(
      `  JS thread busy ${profile.cpuProfile.jsBusySeconds.toFixed(2)} s of ${profile.cpuProfile.profiledSeconds.toFixed(2)} s; ` +
        `process CPU ${cp.cpuSeconds.toFixed(2)} s; top: ${profile.cpuProfile.top
          .slice(0, 4)
          .map((x) => `${x.fn} ${x.seconds.toFixed(2)}`)
          .join('; ')}`,
    );
  }

  // ---- 2. mount time of a 100-layer image ----
  const { Store, mount, umount } = await import('@stevedore/overlay');
  const hLayout = p('hundred');
  t = now();
  await makeHundredLayers(hLayout);
  const store = await Store.open({ root: p('store-mount') });
  const tl0 = now();
  await store.loadOciLayout(hLayout, TAG, { tags: [MOUNT_REF] });
  const loadSeconds = now() - tl0;
  console.log(
    `\n${MOUNT_LAYERS}-layer image built (${(tl0 - t).toFixed(1)} s) and loaded (${loadSeconds.toFixed(2)} s)`,
  );
  const target = p('mnt');
  const mountRuns = [];
  let info;
  for (let i = 0; i < MOUNT_RUNS; i++) {
    const a = now();
    info = await mount(store, MOUNT_REF, target);
    const b = now();
    const version = readFileSync(join(target, 'etc/version'), 'utf8').trim();
    const dirs = readdirSync(join(target, 'layers')).length;
    if (version !== String(MOUNT_LAYERS - 1) || dirs !== MOUNT_LAYERS)
      throw new Error(`mount shows version ${version}, ${dirs} layer dirs`);
    const c = now();
    await umount(target);
    mountRuns.push({ mount: b - a, umount: now() - c });
  }
  if (info.backend !== 'overlay') throw new Error(`mounted with ${info.backend}`);
  // What our mount does besides mount(8): resolving the image and its 100 layerdb entries.
  const lookupRuns = [];
  for (let i = 0; i < MOUNT_RUNS; i++) {
    const a = now();
    await store.image(MOUNT_REF);
    lookupRuns.push({ lookup: now() - a });
  }
  const handRuns = [];
  for (let i = 0; i < MOUNT_RUNS; i++) {
    const a = now();
    const r = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', info.mountOptions, target], {
      cwd: store.overlayDir,
    });
    const b = now();
    if (r.status !== 0) throw new Error(`mount by hand: ${r.stderr}`);
    spawnSync('umount', [target]);
    handRuns.push({ mount: b - a, umount: now() - b });
  }
  const cliRuns = [];
  for (let i = 0; i < CLI_MOUNT_RUNS; i++) {
    const a = now();
    measure(process.execPath, [CLI, '-q', '--root', store.root, 'mount', MOUNT_REF, target]);
    const b = now();
    measure(process.execPath, [CLI, '-q', '--root', store.root, 'umount', target]);
    cliRuns.push({ mount: b - a, umount: now() - b });
  }
  const avg = (xs, k) => xs.reduce((n, x) => n + x[k], 0) / xs.length;
  const mountResult = {
    layers: MOUNT_LAYERS,
    runs: MOUNT_RUNS,
    optionBytes: info.mountOptions.length,
    loadSeconds,
    ours: { mount: avg(mountRuns, 'mount'), umount: avg(mountRuns, 'umount') },
    imageLookup: avg(lookupRuns, 'lookup'),
    byHand: { mount: avg(handRuns, 'mount'), umount: avg(handRuns, 'umount') },
    cli: { runs: CLI_MOUNT_RUNS, mount: avg(cliRuns, 'mount'), umount: avg(cliRuns, 'umount') },
  };
  mountResult.ratio =
    (mountResult.ours.mount + mountResult.ours.umount) / (mountResult.byHand.mount + mountResult.byHand.umount);
  const ms = (s) => `${(s * 1000).toFixed(1)} ms`;
  console.log(
    `mount+umount, ${MOUNT_LAYERS} layers, avg of ${MOUNT_RUNS}: ours (API) ${ms(mountResult.ours.mount)} + ${ms(mountResult.ours.umount)}; ` +
      `mount(8) by hand ${ms(mountResult.byHand.mount)} + ${ms(mountResult.byHand.umount)} (${mountResult.ratio.toFixed(2)}×); ` +
      `CLI processes ${ms(mountResult.cli.mount)} + ${ms(mountResult.cli.umount)}; store.image() alone ${ms(mountResult.imageLookup)}`,
  );

  const loadAfter = load();
  console.log(`\nload average after: ${loadAfter.join(' ')}`);
  const machine = `${cpus()[0]?.model ?? 'unknown cpu'} ×${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.versions.node}`;
  const out = {
    machine,
    filesystem: fsys.name,
    rounds: ROUNDS,
    date: new Date().toISOString(),
    docker: dockerVersion,
    skopeo: skopeoVersion,
    loadAverage: { before: loadBefore, after: loadAfter },
    image: { ...img, label, storedBytes },
    notes: [
      `one run; each pull best of ${ROUNDS} (interleaved, the order changing from round to round, fresh state each: a new store / OCI dir, docker rmi + image prune -a before its pull); \`sync\` before each step`,
      'seconds: whole process under /usr/bin/time (node start-up included for ours); opSeconds: open + pull alone',
      'ratio: ours ÷ docker pull; vsSkopeo: ours ÷ skopeo copy to an OCI layout (lower is better)',
      'cpuSeconds: user+sys of the process; for docker, of dockerd (and its waited-for children) during the pull',
      'registry: the distribution registry (test harness) over plain HTTP on 127.0.0.1; page cache warm',
      'mount: read-only kernel overlay of the 100-layer image through the API (mount + umount, each running mount(8)/umount(8)); byHand: the same option string by spawnSync',
    ],
    goal: {
      vsDocker: GOAL_VS_DOCKER,
      stretchVsSkopeo: STRETCH_VS_SKOPEO,
      ratio: aRow.ratio,
      vsSkopeo: aRow.vsSkopeo,
      met: aRow.ratio <= GOAL_VS_DOCKER,
      stretchMet: aRow.vsSkopeo <= STRETCH_VS_SKOPEO,
    },
    results,
    mount: mountResult,
    profile,
  };
  mkdirSync(join(root, 'build', 'bench'), { recursive: true });
  const name = SCALE >= 1 ? 'overlay' : 'overlay-small';
  writeFileSync(join(root, 'build', 'bench', `${name}.json`), `${JSON.stringify(out, null, 2)}\n`);
  console.log(`machine: ${machine}; on a ${fsys.name}\nwrote build/bench/${name}.json`);
} catch (e) {
  console.error(e);
  exitCode = 1;
} finally {
  try {
    await H.cleanupAll();
  } catch (e) {
    console.error(e);
    exitCode = 1;
  }
  if (existsSync(dir)) {
    console.error(`cleanup left ${dir}`);
    exitCode = 1;
  }
  try {
    fsys.unmount();
    rmSync(fsysBase, { recursive: true, force: true });
  } catch (e) {
    console.error(e);
    exitCode = 1;
  }
}
process.exitCode = exitCode;
