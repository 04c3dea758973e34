// Bounded loopback load: 200 blob pushes + 800 blob pulls (1–64 KiB random blobs) at concurrency
// 16, against our server (a child process running dist/bin.js, so the load generator does not
// share its event loop) and the reference registry, same workload. No errors allowed, every pull
// verified, every blob on disk re-hashed afterwards. Prints throughput and p50/p99 per operation
// and writes build/bench/server.json. Our server runs with its default fsync (the reference
// registry does not fsync) and once without, for comparison.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, getFreePort, installExitHooks, waitForHttp } from '../../../test/harness/index.js';
import { hasReference, requireDocker, startTarget, tempDir } from './helpers.js';

installExitHooks();
afterAll(async () => {
  await cleanupAll();
});

it.runIf(requireDocker && !hasReference)('STEVEDORE_REQUIRE_DOCKER=1 but the registry binary is missing', () => {
  expect.fail('need docker-registry');
});

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
const PUSHES = 200;
const PULLS = 800;
const CONCURRENCY = 16;

interface Endpoint {
  url: string;
  root: string;
  stop(): Promise<void>;
}

async function startOurs(fsync: boolean): Promise<Endpoint> {
  const root = tempDir('load');
  const port = await getFreePort();
  const args = [path.join(here, '../dist/bin.js'), root, '--addr', `127.0.0.1:${port}`, '--quiet'];
  if (!fsync) args.push('--no-fsync');
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c) => {
    err += c;
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/v2/`, { what: `stevedore server (${err})`, timeoutMs: 15_000 });
  return {
    url,
    root,
    stop: () =>
      new Promise((r) => {
        if (child.exitCode !== null) return r();
        child.once('exit', () => r());
        child.kill('SIGTERM');
      }),
  };
}

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

async function push(url: string, repo: string, data: Uint8Array): Promise<void> {
  const d = sha(data);
  const start = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.arrayBuffer();
  if (start.status !== 202) throw new Error(`POST ${start.status}`);
  const loc = new URL(start.headers.get('location')!, url);
  loc.searchParams.set('digest', d);
  const put = await fetch(loc, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream' },
    body: data,
  });
  await put.arrayBuffer();
  if (put.status !== 201) throw new Error(`PUT ${put.status}`);
}

async function pull(url: string, repo: string, digest: string): Promise<void> {
  const r = await fetch(`${url}/v2/${repo}/blobs/${digest}`);
  const body = new Uint8Array(await r.arrayBuffer());
  if (r.status !== 200) throw new Error(`GET ${r.status}`);
  if (sha(body) !== digest) throw new Error(`GET ${digest}: digest mismatch`);
}

interface Result {
  target: string;
  ops: number;
  seconds: number;
  opsPerSecond: number;
  push: { p50: number; p99: number };
  pull: { p50: number; p99: number };
  errors: number;
}

async function load(target: string, ep: Endpoint): Promise<Result> {
  const repo = 'load/blobs';
  const blobs = Array.from(
    { length: PUSHES + CONCURRENCY },
    () => new Uint8Array(randomBytes(1024 + Math.floor(Math.random() * 63 * 1024))),
  );
  const pushed: string[] = [];
  // seed so the first pulls have something to read (not timed)
  for (const b of blobs.slice(0, CONCURRENCY)) {
    await push(ep.url, repo, b);
    pushed.push(sha(b));
  }
  const ops: ('push' | 'pull')[] = [...Array(PUSHES).fill('push'), ...Array(PULLS).fill('pull')];
  for (let i = ops.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [ops[i], ops[j]] = [ops[j]!, ops[i]!];
  }
  let next = 0;
  let nextBlob = CONCURRENCY;
  const lat = { push: [] as number[], pull: [] as number[] };
  let errors = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < ops.length) {
        const op = ops[next++]!;
        const s = performance.now();
        try {
          if (op === 'push') {
            const b = blobs[nextBlob++]!;
            await push(ep.url, repo, b);
            pushed.push(sha(b));
          } else {
            await pull(ep.url, repo, pushed[Math.floor(Math.random() * pushed.length)]!);
          }
        } catch {
          errors++;
        }
        lat[op].push(performance.now() - s);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  // every blob re-hashed from disk
  for (const b of blobs) {
    const hex = sha(b).slice(7);
    const data = readFileSync(path.join(ep.root, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data'));
    expect(sha(data)).toBe(sha(b));
  }
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    target,
    ops: ops.length,
    seconds: r2(seconds),
    opsPerSecond: r2(ops.length / seconds),
    push: { p50: r2(pct(lat.push, 50)), p99: r2(pct(lat.push, 99)) },
    pull: { p50: r2(pct(lat.pull, 50)), p99: r2(pct(lat.pull, 99)) },
    errors,
  };
}

describe('bounded loopback load', () => {
  it('200 pushes + 800 pulls at concurrency 16: no errors, all blobs verify; ours vs the reference', async () => {
    const results: Result[] = [];
    const targets: [string, () => Promise<Endpoint>][] = [
      ['stevedore (fsync)', () => startOurs(true)],
      ['stevedore (no fsync)', () => startOurs(false)],
    ];
    if (hasReference) {
      targets.push([
        'reference registry 2.8',
        async () => {
          const t = await startTarget('reference');
          return { url: t.url, root: t.storageDir, stop: t.stop };
        },
      ]);
    }
    for (const [name, start] of targets) {
      const ep = await start();
      try {
        results.push(await load(name, ep));
      } finally {
        await ep.stop();
      }
    }
    const table = results
      .map(
        (r) =>
          `${r.target.padEnd(24)} ${String(r.opsPerSecond).padStart(8)} ops/s  push p50 ${r.push.p50} ms p99 ${r.push.p99} ms  pull p50 ${r.pull.p50} ms p99 ${r.pull.p99} ms  errors ${r.errors}`,
      )
      .join('\n');
    console.log(`\n${PUSHES} pushes + ${PULLS} pulls, concurrency ${CONCURRENCY}, 1-64 KiB blobs\n${table}`);
    const out = path.join(repoRoot, 'build', 'bench');
    mkdirSync(out, { recursive: true });
    writeFileSync(
      path.join(out, 'server.json'),
      `${JSON.stringify({ pushes: PUSHES, pulls: PULLS, concurrency: CONCURRENCY, blobBytes: '1-64 KiB', results }, null, 2)}\n`,
    );
    for (const r of results) expect(r.errors).toBe(0);
  }, 300_000);
});
