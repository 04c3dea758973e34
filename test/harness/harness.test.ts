// Proves the harness against the real components: a private dockerd builds, runs and pushes
// images to private registries (plain, htpasswd, TLS), and stop() leaves nothing behind.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildScratchImage,
  canConnect,
  type Dockerd,
  dockerCertsDir,
  isAlive,
  mountsUnder,
  processesInCgroup,
  type Registry,
  startDockerd,
  startRegistry,
  trustRegistryCA,
} from './index.js';

const DOCKER_V2 = 'application/vnd.docker.distribution.manifest.v2+json';
const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Descriptor {
  mediaType: string;
  size: number;
  digest: string;
}
interface Manifest {
  schemaVersion: number;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

let d: Dockerd;
let reg: Registry;

beforeAll(async () => {
  [d, reg] = await Promise.all([startDockerd(), startRegistry()]);
});
afterAll(async () => {
  await Promise.all([d?.stop(), reg?.stop()]);
});

describe('dockerd + registry', () => {
  it('(a) builds a 2-layer scratch image, pushes it, and the registry serves a verifiable manifest', async () => {
    const ref = `${reg.host}/it/two-layers:v1`;
    await buildScratchImage(d, 'two-layers:v1', { 'a.txt': 'first layer\n', 'dir/b.txt': 'second layer\n' });
    await d.docker(['tag', 'two-layers:v1', ref]);
    await d.docker(['push', ref]);

    const res = await fetch(`${reg.url}/v2/it/two-layers/manifests/v1`, { headers: { Accept: DOCKER_V2 } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(DOCKER_V2);
    const bytes = new Uint8Array(await res.arrayBuffer());
    expect(sha256(bytes)).toBe(res.headers.get('docker-content-digest'));
    const manifest = JSON.parse(Buffer.from(bytes).toString('utf8')) as Manifest;
    expect(manifest.schemaVersion).toBe(2);
    expect(manifest.mediaType).toBe(DOCKER_V2);
    expect(manifest.layers).toHaveLength(2);

    const cfgRes = await fetch(`${reg.url}/v2/it/two-layers/blobs/${manifest.config.digest}`);
    expect(cfgRes.status).toBe(200);
    const cfg = new Uint8Array(await cfgRes.arrayBuffer());
    expect(cfg.length).toBe(manifest.config.size);
    expect(sha256(cfg)).toBe(manifest.config.digest);
    const config = JSON.parse(Buffer.from(cfg).toString('utf8')) as { rootfs: { diff_ids: string[] } };
    expect(config.rootfs.diff_ids).toHaveLength(2);

    // The local image id is the config digest, too.
    const { stdout } = await d.docker(['image', 'inspect', '--format', '{{.Id}}', ref]);
    expect(stdout.trim()).toBe(manifest.config.digest);
  });

  it('(b) runs a scratch image containing busybox', async () => {
    await buildScratchImage(d, 'bb:1', { 'etc/greeting': 'hello from scratch\n' }, 'ENV GREETING=hi', {
      busybox: true,
    });
    const run = await d.docker(['run', '--rm', '--network', 'none', 'bb:1', '/bin/busybox', 'cat', '/etc/greeting']);
    expect(run.stdout).toBe('hello from scratch\n');
    const env = await d.docker([
      'run',
      '--rm',
      '--network',
      'none',
      'bb:1',
      '/bin/busybox',
      'sh',
      '-c',
      'echo $GREETING',
    ]);
    expect(env.stdout.trim()).toBe('hi');
    const fail = await d.docker(['run', '--rm', '--network', 'none', 'bb:1', '/bin/busybox', 'false'], {
      allowFailure: true,
    });
    expect(fail.code).toBe(1);
  });

  it('(c) htpasswd registry: 401 + Basic challenge without credentials, 200 with; docker login + push', async () => {
    const auth = { username: 'tester', password: 's3cret-pass' };
    const areg = await startRegistry({ auth });
    try {
      const anon = await fetch(`${areg.url}/v2/`);
      expect(anon.status).toBe(401);
      expect(anon.headers.get('www-authenticate')).toMatch(/^Basic realm="stevedore-test"/);
      const authed = await fetch(`${areg.url}/v2/`, { headers: { Authorization: areg.authHeader! } });
      expect(authed.status).toBe(200);

      const bad = await d.docker(['login', '-u', auth.username, '--password-stdin', areg.host], {
        input: 'wrong',
        allowFailure: true,
      });
      expect(bad.code).not.toBe(0);
      await d.docker(['login', '-u', auth.username, '--password-stdin', areg.host], { input: auth.password });
      const saved = JSON.parse(readFileSync(path.join(d.clientConfigDir, 'config.json'), 'utf8'));
      expect(Object.keys(saved.auths)).toContain(areg.host);

      const ref = `${areg.host}/it/private:1`;
      await d.docker(['tag', 'two-layers:v1', ref]);
      await d.docker(['push', ref]);
      const m = await fetch(`${areg.url}/v2/it/private/manifests/1`, {
        headers: { Accept: DOCKER_V2, Authorization: areg.authHeader! },
      });
      expect(m.status).toBe(200);
      await d.docker(['logout', areg.host]);
    } finally {
      await areg.stop();
    }
  });

  it('(d) TLS registry: trusted with its CA, rejected without; dockerd pushes over TLS', async () => {
    const treg = await startRegistry({ tls: true });
    expect(treg.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const agent = new Agent({ connect: { ca: readFileSync(treg.caCertPath!) } });
    try {
      const ok = await undiciFetch(`${treg.url}/v2/`, { dispatcher: agent });
      expect(ok.status).toBe(200);
      await ok.arrayBuffer();

      const certError = async (p: Promise<unknown>) => {
        const e = await p.then(
          () => undefined,
          (err: Error & { cause?: { code?: string } }) => err,
        );
        expect(e, 'fetch without the CA must fail').toBeDefined();
        return e?.cause?.code ?? '';
      };
      // Both undici and Node's built-in fetch refuse the unknown issuer.
      expect(await certError(undiciFetch(`${treg.url}/v2/`))).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT/);
      expect(await certError(fetch(`${treg.url}/v2/`))).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT/);

      const undo = trustRegistryCA(treg.host, treg.caCertPath!);
      const installed = path.join(dockerCertsDir, treg.host, 'ca.crt');
      try {
        expect(readFileSync(installed, 'utf8')).toBe(treg.caPem);
        const ref = `${treg.host}/it/tls:1`;
        await d.docker(['tag', 'two-layers:v1', ref]);
        await d.docker(['push', ref]);
        const m = await undiciFetch(`${treg.url}/v2/it/tls/manifests/1`, {
          dispatcher: agent,
          headers: { Accept: DOCKER_V2 },
        });
        expect(m.status).toBe(200);
        await m.arrayBuffer();
      } finally {
        undo();
      }
      expect(existsSync(installed)).toBe(false);
      expect(existsSync(path.dirname(installed))).toBe(false);
    } finally {
      await agent.close();
      await treg.stop();
    }
  });
});

describe('teardown', () => {
  it('(e) two dockerds coexist; stop() leaves no processes, mounts, cgroups or files, even after a crash', async () => {
    const [d1, d2] = await Promise.all([startDockerd(), startDockerd()]);
    const running = async (x: Dockerd) => {
      await buildScratchImage(x, 'sleeper:1', {}, '', { busybox: true });
      const { stdout } = await x.docker([
        'run',
        '-d',
        '--network',
        'none',
        'sleeper:1',
        '/bin/busybox',
        'sleep',
        '600',
      ]);
      const id = stdout.trim();
      const pid = Number((await x.docker(['inspect', '--format', '{{.State.Pid}}', id])).stdout.trim());
      expect(isAlive(pid)).toBe(true);
      return pid;
    };
    const [c1, c2] = await Promise.all([running(d1), running(d2)]);

    // Each instance has dockerd + containerd + a shim of its own, and mounts under its own dir.
    for (const x of [d1, d2]) {
      expect(x.processes().length).toBeGreaterThanOrEqual(3);
      expect(mountsUnder(x.dir).some((m) => m.fsType === 'overlay')).toBe(true);
      expect(processesInCgroup(x.cgroupParent).length).toBeGreaterThan(0);
    }

    // Graceful: d1.stop() with a running container.
    const before1 = [d1.pid, ...d1.processes(), c1];
    await d1.stop();
    expectGone(d1, before1);

    // d2 is unaffected by d1's teardown.
    const ps = await d2.docker(['ps', '-q']);
    expect(ps.stdout.trim()).not.toBe('');

    // Crash: SIGKILL dockerd. containerd dies with it (pdeathsig); the shim, the container and
    // the overlay mounts survive, and stop() has to clean them up.
    const before2 = [d2.pid, ...d2.processes(), c2];
    process.kill(d2.pid, 'SIGKILL');
    await waitUntil(() => !isAlive(d2.pid));
    expect(isAlive(c2)).toBe(true);
    expect(mountsUnder(d2.dir).length).toBeGreaterThan(0);
    await d2.stop();
    expectGone(d2, before2);
  });

  it('(e) several registries at once; stop() frees port, process and dir', async () => {
    const regs = await Promise.all([startRegistry(), startRegistry(), startRegistry({ tls: true })]);
    expect(new Set(regs.map((r) => r.port)).size).toBe(3);
    for (const r of regs) expect(await canConnect(r.port)).toBe(true);
    await Promise.all(regs.map((r) => r.stop()));
    for (const r of regs) {
      expect(isAlive(r.pid)).toBe(false);
      expect(await canConnect(r.port)).toBe(false);
      expect(existsSync(r.dir)).toBe(false);
    }
  });
});

function expectGone(x: Dockerd, pids: number[]): void {
  expect(pids.filter(isAlive)).toEqual([]);
  expect(mountsUnder(x.dir)).toEqual([]);
  expect(readFileSync('/proc/mounts', 'utf8')).not.toContain(x.dir);
  expect(processesInCgroup(x.cgroupParent)).toEqual([]);
  expect(existsSync(x.dir)).toBe(false);
}

async function waitUntil(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
