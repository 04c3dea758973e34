#!/usr/bin/env node
// image:bench (issue 5) — save and load of a big image, ours side by side with docker's, from one
// run on this machine, against a private dockerd started here (root needed).
//
//   save: `docker save -o a.tar IMAGE`     vs ours: OCI layout → `writeDockerArchive` (a file)
//   load: `docker load -i a.tar`           vs ours: `DockerArchive.open` (full verification)
//                                                   + `copyImage` into a fresh OCI layout
//         `skopeo copy docker-archive:a.tar oci:DIR:TAG` as a second reference for load.
//
// Ratios are ours ÷ reference in seconds (lower is better; the goal is ≤ 0.5×). Every step runs
// as its own process under /usr/bin/time, so "peak RSS" is that process's own peak (for docker
// that is the client: the work happens in dockerd). Our steps also report the time of the
// operation alone (without node start-up and module loading); the ratios use the whole process.
// Results: printed as a table and written to build/bench/image.json.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stepTable } from '../../../tools/bench-lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');
const DOCKERD = process.env.STEVEDORE_DOCKERD || '/usr/sbin/dockerd';
const DOCKER = process.env.STEVEDORE_DOCKER || '/usr/bin/docker';
const SKOPEO = process.env.STEVEDORE_SKOPEO || '/usr/bin/skopeo';
const TIME = '/usr/bin/time';
const IMAGE = 'stevedore-bench/big:latest';
const OCI_TAG = 'bench';

// The image: LAYERS COPY layers of FILES_PER_LAYER files each, incompressible contents.
const LAYERS = 4;
const FILES_PER_LAYER = 1300;
const MIN_BYTES = 400e6;
const MIN_FILES = 5000;

if (process.getuid?.() !== 0) {
  console.error('image:bench needs root (it starts a private dockerd)');
  process.exit(1);
}

// Short base dir: containerd's ttrpc socket lives under the exec root and sun_path is 108 bytes.
const dir = mkdtempSync(join(process.env.STEVEDORE_BENCH_TMPDIR || '/tmp', 'sd-bench-'));
const p = (...f) => join(dir, ...f);
let daemon; // { child, pid, exited: Promise }
let cleaned = false;

// ---- cleanup ---------------------------------------------------------------------------------

/** pids (other than ours) whose command line or cwd mentions `dir`: dockerd, containerd, shims. */
function processesReferencing(d) {
  const out = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8').replaceAll('\0', ' ');
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${e}/cwd`);
      } catch {}
      if (cmd.includes(d) || cwd.startsWith(d)) out.push(Number(e));
    } catch {}
  }
  return out;
}

function mountsUnder(d) {
  const unoctal = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(Number.parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => unoctal(l.split(' ')[4]))
    .filter((m) => m === d || m.startsWith(`${d}/`))
    .sort((a, b) => b.length - a.length); // deepest first
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Synchronous last-resort cleanup (signals, crashes): kill what we started, unmount, delete. */
function hardCleanupSync() {
  if (cleaned) return;
  cleaned = true;
  for (const pid of processesReferencing(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  spawnSync('sleep', ['0.5']);
  for (const m of mountsUnder(dir)) spawnSync('umount', ['-l', m]);
  rmSync(dir, { recursive: true, force: true });
}

async function cleanup() {
  if (cleaned) return;
  if (daemon && daemon.child.exitCode === null && daemon.child.signalCode === null) {
    daemon.child.kill('SIGTERM');
    const done = await Promise.race([daemon.exited.then(() => true), sleep(20_000).then(() => false)]);
    if (!done) daemon.child.kill('SIGKILL');
  }
  // containerd (started by dockerd) and shims normally exit with dockerd; give them a moment.
  for (let i = 0; i < 50 && processesReferencing(dir).length > 0; i++) await sleep(100);
  hardCleanupSync();
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    console.error(`\n${sig}: cleaning up`);
    hardCleanupSync();
    process.exit(130);
  });
}
process.on('exit', hardCleanupSync);

// ---- dockerd ---------------------------------------------------------------------------------

const host = `unix://${p('docker.sock')}`;
const clientEnv = {
  ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DOCKER_'))),
  DOCKER_HOST: host,
  DOCKER_CONFIG: p('client'),
  DOCKER_CLI_HINTS: 'false',
};

function docker(args, { env = {}, allowFailure = false } = {}) {
  const r = spawnSync(DOCKER, args, { env: { ...clientEnv, ...env }, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0 && !allowFailure)
    throw new Error(`docker ${args.join(' ')}: exit ${r.status}\n${r.stderr}\n${r.stdout}`);
  return r;
}

async function startDockerd() {
  for (const d of ['data', 'exec', 'client']) mkdirSync(p(d), { mode: 0o700 });
  writeFileSync(p('client', 'config.json'), JSON.stringify({ auths: {} }));
  writeFileSync(p('daemon.json'), JSON.stringify({ 'deprecated-key-path': p('key.json') }));
  // biome-ignore format: flag/value pairs
  const args = [
    '--config-file', p('daemon.json'),
    '--data-root', p('data'),
    '--exec-root', p('exec'),
    '--pidfile', p('docker.pid'),
    '--host', host,
    '--storage-driver', 'overlay2',
    '--bridge=none', '--iptables=false', '--ip6tables=false', '--ip-masq=false',
    '--exec-opt', 'native.cgroupdriver=cgroupfs',
    '--shutdown-timeout', '3',
  ];
  const log = openSync(p('dockerd.log'), 'a');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DOCKER_')));
  const child = spawn(DOCKERD, args, { stdio: ['ignore', log, log], env });
  closeSync(log);
  const exited = new Promise((r) => child.once('exit', r));
  daemon = { child, pid: child.pid, exited };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`dockerd exited\n${readFileSync(p('dockerd.log'), 'utf8')}`);
    if (docker(['version', '--format', '{{.Server.Version}}'], { allowFailure: true }).status === 0) break;
    if (Date.now() > deadline) throw new Error(`dockerd did not come up\n${readFileSync(p('dockerd.log'), 'utf8')}`);
    await sleep(100);
  }
  return docker(['version', '--format', '{{.Server.Version}}']).stdout.trim();
}

// ---- the image ---------------------------------------------------------------------------------

/** Build context: LAYERS dirs of incompressible files (AES-CTR keystream of a fixed key: seeded). */
function makeContext(ctx) {
  mkdirSync(ctx);
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
  let seed = 0x9e3779b9;
  const rnd = () => {
    // xorshift32 for the sizes
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  let bytes = 0;
  let files = 0;
  const lines = ['FROM scratch'];
  for (let l = 0; l < LAYERS; l++) {
    for (let i = 0; i < FILES_PER_LAYER; i++) {
      const sub = join(ctx, `d${l}`, `s${i % 40}`);
      if (i < 40) mkdirSync(sub, { recursive: true });
      const r = rnd();
      const size = 1024 + Math.floor(r * r * r * 330_000); // many small, some big; mean ≈ 83 KB
      writeFileSync(join(sub, `f${i}.bin`), cipher.update(Buffer.alloc(size)));
      bytes += size;
      files++;
    }
    lines.push(`COPY d${l} /data/d${l}`);
  }
  lines.push('LABEL org.opencontainers.image.title="stevedore image:bench"');
  writeFileSync(join(ctx, 'Dockerfile'), `${lines.join('\n')}\n`);
  return { bytes, files };
}

// ---- measuring -------------------------------------------------------------------------------

/** Runs `cmd args` under /usr/bin/time after a `sync`; wall seconds, peak RSS (KiB), stdout. */
function measure(cmd, args, env = process.env) {
  spawnSync('sync');
  const tf = p('time.out');
  const s = process.hrtime.bigint();
  const r = spawnSync(TIME, ['-f', '%e %M', '-o', tf, cmd, ...args], { env, encoding: 'utf8', maxBuffer: 64 << 20 });
  const wall = Number(process.hrtime.bigint() - s) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}\n${r.stderr}\n${r.stdout}`);
  const [, rss] = readFileSync(tf, 'utf8').trim().split('\n').pop().split(' ').map(Number);
  return { seconds: wall, maxRssKiB: rss, stdout: r.stdout };
}

function ours(step, ...args) {
  const m = measure(process.execPath, [join(here, 'step.mjs'), step, ...args]);
  const inner = JSON.parse(m.stdout.trim().split('\n').pop());
  return { ...m, opSeconds: inner.seconds, inner };
}

const dirBytes = (d) => {
  let n = 0;
  for (const e of readdirSync(d, { withFileTypes: true, recursive: true }))
    if (e.isFile()) n += statSync(join(e.parentPath ?? e.path, e.name)).size;
  return n;
};

// ---- run -------------------------------------------------------------------------------------

const mb = (b) => b / 1e6;
const { results, row } = stepTable({ groupWidth: 6, nameWidth: 46 });

let exitCode = 0;
let out;
try {
  const dockerVersion = await startDockerd();
  const skopeoVersion = execFileSync(SKOPEO, ['--version'], { encoding: 'utf8' }).trim();
  console.log(`dockerd ${dockerVersion} at ${host}; ${skopeoVersion}`);

  // Build (untimed).
  let t = Date.now();
  const ctx = p('ctx');
  const gen = makeContext(ctx);
  if (gen.bytes < MIN_BYTES || gen.files < MIN_FILES) throw new Error(`context too small: ${JSON.stringify(gen)}`);
  console.log(`context: ${gen.files} files, ${mb(gen.bytes).toFixed(0)} MB in ${LAYERS} layers (${Date.now() - t} ms)`);
  t = Date.now();
  docker(['build', '--network', 'none', '--quiet', '-t', IMAGE, ctx], { env: { DOCKER_BUILDKIT: '0' } });
  rmSync(ctx, { recursive: true, force: true });
  const inspect = JSON.parse(docker(['image', 'inspect', IMAGE]).stdout)[0];
  const imageId = inspect.Id;
  console.log(
    `built ${IMAGE} ${imageId} (${mb(inspect.Size).toFixed(0)} MB, ${inspect.RootFS.Layers.length} layers, ${Date.now() - t} ms)\n`,
  );

  // save: docker's storage → docker-archive.
  const aTar = p('a.tar');
  const dSave = measure(DOCKER, ['save', '-o', aTar, IMAGE], clientEnv);
  const archiveBytes = statSync(aTar).size;
  row('save', 'docker save -o', archiveBytes, dSave);

  // Our storage: an OCI layout made from docker's archive (untimed).
  const layout = p('layout');
  const prep = ours('prepare', aTar, layout, OCI_TAG);
  console.log(
    `(prepared OCI layout: ${prep.inner.format} archive, ${prep.inner.layers} layers, ${prep.opSeconds.toFixed(2)} s)`,
  );
  const oursTar = p('ours.tar');
  const oSave = ours('save', layout, OCI_TAG, oursTar, IMAGE);
  row('save', 'ours: OCI layout → writeDockerArchive', statSync(oursTar).size, oSave, 'docker save -o');
  rmSync(oursTar, { force: true });
  const oSaveNv = ours('save-noverify', layout, OCI_TAG, oursTar, IMAGE);
  row('save', 'ours: same, open with verify:false', statSync(oursTar).size, oSaveNv, 'docker save -o');
  // Sanity: our archive has docker's config, and its layers are named by that config's diff_ids
  // (docker 20.10 names layer dirs by v1 ids instead, so the names themselves differ).
  const ourManifest = JSON.parse(execFileSync('tar', ['-xOf', oursTar, 'manifest.json'], { encoding: 'utf8' }))[0];
  const dockerManifest = JSON.parse(execFileSync('tar', ['-xOf', aTar, 'manifest.json'], { encoding: 'utf8' }))[0];
  const diffIds = inspect.RootFS.Layers.map((d) => `${d.slice('sha256:'.length)}/layer.tar`);
  if (ourManifest.Config !== dockerManifest.Config || ourManifest.Layers.join() !== diffIds.join())
    throw new Error(`our archive differs: ${JSON.stringify(ourManifest)} vs ${JSON.stringify(dockerManifest)}`);
  rmSync(oursTar, { force: true });
  rmSync(layout, { recursive: true, force: true });

  // load: docker-archive → storage.
  docker(['rmi', IMAGE]);
  docker(['image', 'prune', '-a', '-f']);
  docker(['builder', 'prune', '-a', '-f'], { allowFailure: true });
  const left = docker(['images', '-aq']).stdout.trim();
  if (left) throw new Error(`images left before load: ${left}`);
  const dLoad = measure(DOCKER, ['load', '-i', aTar], clientEnv);
  row('load', 'docker load -i', archiveBytes, dLoad);
  const loadedId = JSON.parse(docker(['image', 'inspect', IMAGE]).stdout)[0].Id;
  if (loadedId !== imageId) throw new Error(`docker load gave ${loadedId}, built ${imageId}`);

  const layout2 = p('layout2');
  const oLoad = ours('load', aTar, layout2, OCI_TAG);
  row('load', 'ours: DockerArchive.open(verify) + copyImage', archiveBytes, oLoad, 'docker load -i');
  const layoutBytes = dirBytes(layout2);
  rmSync(layout2, { recursive: true, force: true });

  const skopeoEnv = { ...process.env, TMPDIR: dir };
  const sk1 = p('skopeo1');
  const sLoad = measure(
    SKOPEO,
    [
      '--insecure-policy',
      'copy',
      '-q',
      '--dest-oci-accept-uncompressed-layers',
      `docker-archive:${aTar}`,
      `oci:${sk1}:${OCI_TAG}`,
    ],
    skopeoEnv,
  );
  row('load', 'skopeo copy → oci (uncompressed layers)', archiveBytes, sLoad, 'docker load -i');
  rmSync(sk1, { recursive: true, force: true });
  const sk2 = p('skopeo2');
  const sLoadGz = measure(
    SKOPEO,
    ['--insecure-policy', 'copy', '-q', `docker-archive:${aTar}`, `oci:${sk2}:${OCI_TAG}`],
    skopeoEnv,
  );
  row('load', 'skopeo copy → oci (default: gzip layers)', archiveBytes, sLoadGz, 'docker load -i');
  rmSync(sk2, { recursive: true, force: true });
  // Ours relative to skopeo (like for like: both write an OCI layout with uncompressed layers).
  const vsSkopeo = oLoad.seconds / sLoad.seconds;
  console.log(`\nours load ÷ skopeo (uncompressed): ${vsSkopeo.toFixed(2)}×`);

  const goal = 0.5;
  const saveRatio = results.find((r) => r.name.startsWith('ours: OCI layout')).ratio;
  const loadRatio = results.find((r) => r.name.startsWith('ours: DockerArchive')).ratio;
  console.log(
    `goal ≤ ${goal}× docker: save ${saveRatio.toFixed(2)}× (${saveRatio <= goal ? 'met' : 'not met'}), ` +
      `load ${loadRatio.toFixed(2)}× (${loadRatio <= goal ? 'met' : 'not met'})`,
  );

  const machine = `${cpus()[0]?.model ?? 'unknown cpu'} ×${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.versions.node}`;
  out = {
    machine,
    date: new Date().toISOString(),
    docker: dockerVersion,
    skopeo: skopeoVersion,
    image: {
      files: gen.files,
      contentBytes: gen.bytes,
      layers: inspect.RootFS.Layers.length,
      archiveBytes,
      layoutBytes,
      id: imageId,
    },
    notes: [
      'seconds: whole process (node start-up and module loading included for ours); opSeconds: the operation alone',
      'ratio: seconds ÷ the reference row (lower is better); goal ≤ 0.5',
      'maxRssMiB: peak RSS of the step process (for docker, the client; the work runs in dockerd)',
      'page cache warm for every step; `sync` before each; our archive writer fsyncs before its rename; docker save -o (CLI CopyToFile) is not known to fsync',
      'docker load also unpacks the layers into overlay2; ours stores the verified layer blobs in an OCI layout',
    ],
    goal: { ratio: goal, save: saveRatio, load: loadRatio, met: saveRatio <= goal && loadRatio <= goal },
    oursLoadVsSkopeo: vsSkopeo,
    results,
  };
  mkdirSync(join(root, 'build', 'bench'), { recursive: true });
  writeFileSync(join(root, 'build', 'bench', 'image.json'), `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nmachine: ${machine}\nwrote build/bench/image.json`);
} catch (e) {
  console.error(e);
  exitCode = 1;
} finally {
  await cleanup();
  if (existsSync(dir)) {
    console.error(`cleanup left ${dir}`);
    exitCode = 1;
  }
}
process.exitCode = exitCode;
