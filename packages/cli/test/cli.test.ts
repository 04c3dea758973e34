// The CLI as a user runs it: a subprocess, checking exit codes, stdout and stderr.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'bin.js');
const work = mkdtempSync(join(tmpdir(), 'stevedore-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function stevedore(args: string[], opts: { input?: string | Buffer; env?: Record<string, string> } = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], {
    input: opts.input,
    env: { ...process.env, NO_COLOR: '1', ...opts.env },
    encoding: 'utf8',
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const sha256 = (b: string | Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('stevedore digest', () => {
  it('prints digests of files, like sha256sum', () => {
    writeFileSync(join(work, 'a'), 'hello\n');
    const r = stevedore(['digest', join(work, 'a')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${sha256('hello\n')}  ${join(work, 'a')}\n`);
  });

  it('reads stdin and prints JSON with --json, on both backends', () => {
    for (const backend of ['native', 'wasm']) {
      const r = stevedore(['--json', 'digest', '-a', 'sha512', '-'], {
        input: 'abc',
        env: { STEVEDORE_BACKEND: backend },
      });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([
        { path: '-', size: 3, digest: `sha512:${createHash('sha512').update('abc').digest('hex')}` },
      ]);
    }
  });

  it('fails in one line naming the file', () => {
    const r = stevedore(['digest', join(work, 'missing')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^stevedore: hash .*missing: No such file or directory/);
  });

  it('usage errors exit 2', () => {
    expect(stevedore(['digest', '-a', 'md5', 'x']).code).toBe(2);
    expect(stevedore(['no-such-command']).code).toBe(2);
    const help = stevedore(['digest', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Examples:/);
  });
});

describe('stevedore version and demo', () => {
  it('reports the active backend', () => {
    expect(JSON.parse(stevedore(['--json', 'version']).stdout).backend).toBe('native');
    expect(JSON.parse(stevedore(['--json', 'version'], { env: { STEVEDORE_BACKEND: 'wasm' } }).stdout).backend).toBe(
      'wasm',
    );
  });

  it('runs the demo to the end: registry → pull → layers → mount → save/load, data on stdout, and cleans up', () => {
    const t = Date.now();
    const r = stevedore(['--json', 'demo']);
    expect(r.code, r.stderr).toBe(0);
    expect(Date.now() - t).toBeLessThan(60_000);
    const result = JSON.parse(r.stdout);
    expect(result.kept).toBe(false);
    expect(result.image).toMatch(/^127\.0\.0\.1:\d+\/demo\/busybox:1$/);
    expect(r.stderr).toMatch(/native and wasm cores agree/);
    expect(r.stderr).toMatch(/Pull complete/);
    expect(r.stderr).toMatch(/REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE/);
    expect(result.layers).toMatchObject({ count: 2, wastedBytes: 200_000 + 35 });
    expect(result.mount.root).toEqual(expect.arrayContaining(['etc', 'usr', 'var']));
    expect(result.loaded).toEqual([result.image]);
    for (const p of [result.work, result.store, result.archive]) expect(spawnSync('test', ['-e', p]).status).toBe(1);
    // the registry is gone: nothing listens on its port any more
    const port = result.image.split(':')[1].split('/')[0];
    expect(spawnSync('sh', ['-c', `ss -ltn | grep -q ':${port} '`]).status).toBe(1);
  });
});
