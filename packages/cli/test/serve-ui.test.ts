// `stevedore serve --ui`: the web inspector's built page and the registry on one origin, run as a
// user runs it (a subprocess), plus where the page is found and the errors when it is not.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { locateWebDist } from '../src/commands/serve.js';
import { bin, stevedore } from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'sd-cli-serve-ui-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const webDist = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web', 'dist');

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

/** Starts `stevedore --json serve ROOT ARGS…` and waits for its one JSON line. */
async function serve(
  args: string[],
): Promise<{ url: string; info: Record<string, unknown>; p: ChildProcess; exited: Promise<number | null> }> {
  const port = await freePort();
  const p = spawn(
    process.execPath,
    [bin, '--json', 'serve', join(work, 'registry'), '--addr', `127.0.0.1:${port}`, ...args],
    {
      env: { ...process.env, NO_COLOR: '1' },
    },
  );
  let stdout = '';
  let stderr = '';
  p.stdout!.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  p.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<number | null>((r) => p.on('close', r));
  for (let i = 0; i < 200 && !stdout.includes('\n') && p.exitCode === null; i++)
    await new Promise((r) => setTimeout(r, 50));
  if (!stdout.includes('\n')) {
    p.kill('SIGTERM');
    throw new Error(`serve did not start: ${stderr}`);
  }
  return { url: `http://127.0.0.1:${port}`, info: JSON.parse(stdout), p, exited };
}

describe('stevedore serve --ui', () => {
  it('--ui-dir: the page at /, its script and wasm with their types, client routes; /v2/ is the registry', async () => {
    const dist = join(work, 'dist');
    mkdirSync(join(dist, 'assets'), { recursive: true });
    writeFileSync(
      join(dist, 'index.html'),
      '<!doctype html><script type="module" src="./assets/index-x1.js"></script>',
    );
    writeFileSync(join(dist, 'assets', 'index-x1.js'), 'await fetch("/v2/")');
    writeFileSync(join(dist, 'assets', 'core-x2.wasm'), new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));
    const s = await serve(['--ui-dir', dist]);
    try {
      expect(s.info.ui).toBe(dist);
      const page = await fetch(`${s.url}/`);
      expect([page.status, page.headers.get('content-type')]).toEqual([200, 'text/html; charset=utf-8']);
      expect(await page.text()).toContain('./assets/index-x1.js');
      const js = await fetch(`${s.url}/assets/index-x1.js`);
      expect([js.status, js.headers.get('content-type'), await js.text()]).toEqual([
        200,
        'text/javascript; charset=utf-8',
        'await fetch("/v2/")',
      ]);
      expect((await fetch(`${s.url}/assets/core-x2.wasm`)).headers.get('content-type')).toBe('application/wasm');
      expect((await fetch(`${s.url}/layers`)).headers.get('content-type')).toBe('text/html; charset=utf-8');
      const api = await fetch(`${s.url}/v2/`);
      expect([api.status, api.headers.get('docker-distribution-api-version'), await api.text()]).toEqual([
        200,
        'registry/2.0',
        '{}',
      ]);
      expect((await fetch(`${s.url}/v2/_catalog`)).status).toBe(200);
    } finally {
      s.p.kill('SIGTERM');
    }
    expect(await s.exited).toBe(0);
  });

  it.runIf(existsSync(join(webDist, 'index.html')))(
    '--ui finds the built @stevedore/web and serves its page and script',
    async () => {
      const s = await serve(['--ui']);
      try {
        const html = await (await fetch(`${s.url}/`)).text();
        expect(html).toBe(readFileSync(join(webDist, 'index.html'), 'utf8'));
        const script = /<script[^>]+src="\.?\/?(assets\/[^"]+\.js)"/.exec(html)?.[1];
        expect(script).toBeDefined();
        const js = await fetch(`${s.url}/${script}`);
        expect([js.status, js.headers.get('content-type')]).toEqual([200, 'text/javascript; charset=utf-8']);
        expect((await fetch(`${s.url}/v2/`)).status).toBe(200);
      } finally {
        s.p.kill('SIGTERM');
      }
      expect(await s.exited).toBe(0);
    },
  );

  it('locates the page from @stevedore/web, says when it is not installed or not built', () => {
    const app = join(work, 'app');
    const from = pathToFileURL(join(app, 'main.js')).href;
    expect(() => locateWebDist(from)).toThrow(/not installed here: pass --ui-dir/);
    const pkg = join(app, 'node_modules', '@stevedore', 'web');
    mkdirSync(pkg, { recursive: true });
    writeFileSync(join(pkg, 'package.json'), '{"name":"@stevedore/web","version":"0.1.0"}');
    expect(() => locateWebDist(from)).toThrow(/not built .*npm run -w packages\/web build/);
    mkdirSync(join(pkg, 'dist'));
    writeFileSync(join(pkg, 'dist', 'index.html'), '<!doctype html>');
    expect(locateWebDist(from)).toBe(join(pkg, 'dist'));
  });

  it('--token-*: /v2/ asks for a bearer token from the realm', async () => {
    const cert = join(work, 'signer.crt');
    // biome-ignore format: flag/value pairs
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-subj', '/CN=signer', '-keyout', join(work, 'signer.key'), '-out', cert], { stdio: 'pipe' });
    const realm = 'https://auth.example/token';
    // biome-ignore format: flag/value pairs
    const s = await serve(['--token-realm', realm, '--token-service', 'reg', '--token-issuer', 'auth', '--token-root-cert', cert]);
    try {
      const r = await fetch(`${s.url}/v2/demo/app/tags/list`);
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe(
        `Bearer realm="${realm}",service="reg",scope="repository:demo/app:pull"`,
      );
    } finally {
      s.p.kill('SIGTERM');
    }
    expect(await s.exited).toBe(0);
  });

  it('bad options: a --ui-dir without index.html, half the token options, a bad duration', async () => {
    const root = join(work, 'x');
    const noPage = await stevedore(['serve', root, '--ui-dir', join(work, 'nowhere')]);
    expect(noPage.code).toBe(1);
    expect(noPage.stderr).toMatch(/--ui-dir .*nowhere has no index\.html/);
    const half = await stevedore(['serve', root, '--token-realm', 'https://auth.example/token']);
    expect(half.code).toBe(2);
    expect(half.stderr).toMatch(/missing --token-service, --token-issuer, --token-root-cert/);
    const dur = await stevedore(['serve', root, '--upload-purge-age', 'a week']);
    expect(dur.code).toBe(2);
    expect(dur.stderr).toMatch(/--upload-purge-age: bad duration "a week"/);
    const gc = await stevedore(['garbage-collect', root, '--purge-uploads', '5y']);
    expect(gc.code).toBe(2);
    expect(gc.stderr).toMatch(/--purge-uploads: bad duration "5y"/);
  });
});
