// `stevedore serve` as a user runs it: a subprocess registry over a directory, pushed to and
// pulled from with our own copy command, stopped with SIGTERM; then garbage-collect.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bin, busyboxImage, stevedore, writeLayout } from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'sd-cli-serve-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

describe('stevedore serve', () => {
  it('serves a directory: copy pushes, tags lists, copy pulls back, SIGTERM stops it, gc sweeps', async () => {
    const root = join(work, 'registry');
    const port = await freePort();
    const server = spawn(process.execPath, [bin, '--json', 'serve', root, '--addr', `127.0.0.1:${port}`], {
      env: { ...process.env, NO_COLOR: '1' },
    });
    let stdout = '';
    server.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    const exited = new Promise<number | null>((r) => server.on('close', r));
    try {
      for (let i = 0; i < 100 && !stdout.includes('"url"'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(JSON.parse(stdout)).toEqual({ url: `http://127.0.0.1:${port}`, root });

      const layout = join(work, 'layout');
      await writeLayout(layout, busyboxImage('served by stevedore'), 'v1');
      const push = await stevedore(['copy', `oci:${layout}:v1`, `docker://127.0.0.1:${port}/demo/app:v1`]);
      expect(push.code, push.stderr).toBe(0);
      expect(existsSync(join(root, 'docker/registry/v2/repositories/demo/app/_manifests/tags/v1/current/link'))).toBe(
        true,
      );
      const tags = await stevedore(['--json', 'tags', `127.0.0.1:${port}/demo/app`]);
      expect(tags.code, tags.stderr).toBe(0);
      expect(tags.stdout).toContain('v1');
      const back = join(work, 'back');
      const pull = await stevedore(['copy', `docker://127.0.0.1:${port}/demo/app:v1`, `oci:${back}:v1`]);
      expect(pull.code, pull.stderr).toBe(0);
    } finally {
      server.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    const gc = await stevedore(['--json', 'garbage-collect', root, '--dry-run']);
    expect(gc.code, gc.stderr).toBe(0);
    expect(JSON.parse(gc.stdout)).toMatchObject({ dryRun: true, deleted: [] });
    expect(JSON.parse(gc.stdout).marked).toBeGreaterThanOrEqual(2);
  });

  it('rejects half a TLS pair as a usage error', async () => {
    const r = await stevedore(['serve', join(work, 'x'), '--tls-cert', 'c.pem']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--tls-cert and --tls-key go together/);
  });
});
