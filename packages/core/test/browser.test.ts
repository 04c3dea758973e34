// Browser smoke test: the browser entry point and the wasm build, loaded by a page served on
// loopback into Debian's Chromium (playwright-core), computing digests in the page.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LayerIndex, LayerStack, listTar, useBackend } from '@stevedore/core';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = process.env.STEVEDORE_CHROMIUM ?? '/usr/bin/chromium';
const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.wasm': 'application/wasm',
  '.map': 'application/json',
};

const PAGE = `<!doctype html><meta charset="utf-8"><title>core smoke</title>
<script type="module">
  import * as core from '/dist/browser.js';
  window.ready = core.init().then(() => core.backendKind());
  window.core = core;
</script>`;

let server: Server;
let fixture: Buffer;
let base: string;
let browser: Browser;

beforeAll(async () => {
  // A layer with a whiteout, made by GNU tar.
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-browser-'));
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc/hostname'), 'stevedore\n');
  writeFileSync(join(dir, 'etc/.wh.motd'), '');
  symlinkSync('etc/hostname', join(dir, 'name'));
  fixture = execFileSync('tar', ['-C', dir, '--sort=name', '--format=pax', '-cf', '-', '.']);
  rmSync(dir, { recursive: true, force: true });
  server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
      return;
    }
    if (url.pathname === '/fixture.tar.gz') {
      res.writeHead(200, { 'content-type': 'application/gzip' }).end(execFileSync('gzip', ['-c'], { input: fixture }));
      return;
    }
    if (url.pathname === '/fixture.tar') {
      res.writeHead(200, { 'content-type': 'application/x-tar' }).end(fixture);
      return;
    }
    const file = normalize(join(pkg, url.pathname));
    if (!file.startsWith(join(pkg, 'dist')) && !file.startsWith(join(pkg, 'wasm'))) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await chromium.launch({
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
});

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => server?.close(r));
});

describe('wasm core in Chromium', () => {
  it('loads through the browser entry and hashes like node:crypto', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(base + '/');
    expect(await page.evaluate(() => (window as unknown as { ready: Promise<string> }).ready)).toBe('wasm');
    const result = await page.evaluate(() => {
      type Core = {
        sha256(d: Uint8Array): { toString(): string };
        Hasher: new (a: string) => { update(d: Uint8Array): unknown; digest(): { toString(): string } };
        Digest: { parse(s: string): unknown };
      };
      const { sha256, Hasher, Digest } = (window as unknown as { core: Core }).core;
      const data = new Uint8Array(3_000_000).map((_, i) => (i * 31) & 0xff);
      const h = new Hasher('sha512');
      for (let o = 0; o < data.length; o += 65_536) h.update(data.subarray(o, o + 65_536));
      let parseError = '';
      try {
        Digest.parse('sha256:nothex');
      } catch (e) {
        parseError = `${(e as { code: string }).code}: ${(e as Error).message}`;
      }
      return { one: sha256(data).toString(), stream: h.digest().toString(), parseError };
    });
    const data = new Uint8Array(3_000_000).map((_, i) => (i * 31) & 0xff);
    expect(result.one).toBe(`sha256:${createHash('sha256').update(data).digest('hex')}`);
    expect(result.stream).toBe(`sha512:${createHash('sha512').update(data).digest('hex')}`);
    expect(result.parseError).toMatch(/^ERR_INVALID_DIGEST: invalid digest/);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('streams a tar from fetch, lists and hashes it, and resolves the merged view', async () => {
    const page = await browser.newPage();
    await page.goto(base + '/');
    await page.evaluate(() => (window as unknown as { ready: Promise<string> }).ready);
    const inPage = await page.evaluate(async () => {
      // biome-ignore lint/suspicious/noExplicitAny: the page's module namespace
      const core = (window as any).core;
      const res = await fetch('/fixture.tar');
      const listing = await core.listTarStream(res.body, { hash: 'sha256' });
      const lower = core.LayerIndex.fromEntries([{ path: 'etc/motd', type: 'file', content: 'hi' }]);
      const upper = core.LayerIndex.fromTar(new Uint8Array(await (await fetch('/fixture.tar')).arrayBuffer()));
      const stack = new core.LayerStack([lower, upper]);
      const scan = await core.scanLayer((await fetch('/fixture.tar.gz')).body);
      return {
        scan: { digest: scan.digest, diffId: scan.diffId, compression: scan.compression, n: scan.entries.length },
        listing: listing.map((e: { path: string; type: string; digest?: string }) => [e.path, e.type, e.digest ?? '']),
        etc: stack.readdir('etc'),
        motd: stack.resolve('etc/motd').kind,
        name: stack.stat('name').path,
      };
    });
    useBackend('native');
    const native = listTar(new Uint8Array(fixture), { hash: 'sha256' }).map((e) => [e.path, e.type, e.digest ?? '']);
    expect(inPage.listing).toEqual(native);
    expect(inPage.listing).toContainEqual([
      './etc/hostname',
      'file',
      `sha256:${createHash('sha256').update('stevedore\n').digest('hex')}`,
    ]);
    expect(inPage.etc).toEqual(['hostname']);
    // The browser's DecompressionStream feeds the wasm reader: same diff_id as the tar's sha256.
    expect(inPage.scan).toMatchObject({
      compression: 'gzip',
      diffId: `sha256:${createHash('sha256').update(fixture).digest('hex')}`,
      n: native.length,
    });
    expect(inPage.motd).toBe('whiteout');
    expect(inPage.name).toBe('etc/hostname');
    const stack = new LayerStack([
      LayerIndex.fromEntries([{ path: 'etc/motd', type: 'file', content: 'hi' }]),
      LayerIndex.fromTar(new Uint8Array(fixture)),
    ]);
    expect(stack.readdir('etc')).toEqual(inPage.etc);
    await page.screenshot({ path: join(pkg, '..', '..', 'build', 'test-results', 'core-browser-smoke.png') });
    await page.close();
  });
});
