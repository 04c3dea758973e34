// The web inspector pulling from registries in Chromium: our server (`corsOrigin: '*'`),
// anonymous and with htpasswd Basic auth typed in the page; an index with a platform chooser;
// the `?registry=&image=` URL; and the reference distribution registry, which sends no CORS
// headers, for the message that says so. Everything on 127.0.0.1.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RunningServer, startServer } from '@stevedore/server';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { bins, type Registry, startRegistry } from '../../../test/harness/index.js';
import {
  launch,
  openFromRegistry,
  push,
  type RegistryImage,
  registryImage,
  registryIndex,
  results,
  searchTree,
  serveDist,
  sha,
  shown,
  webDist,
  writeTarLayer,
} from './support.js';

const { canRun } = useRealComponents({ registry: true, dockerd: false });

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const USER = 'alice';
const PASSWORD = 's3cret-pw';

describe.skipIf(!canRun)('opening an image from a registry', () => {
  let dist: Server;
  let base: string;
  let browser: Browser;
  let work: string;
  let open: RunningServer;
  let locked: RunningServer;
  let reference: Registry;
  const demo: RegistryImage = registryImage();
  const arm: RegistryImage = registryImage([writeTarLayer({ 'etc/arch': 'arm64\n' })], 'arm64');
  const index = registryIndex([
    { image: arm, platform: 'linux/arm64' },
    { image: demo, platform: 'linux/amd64' },
  ]);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'stevedore-web-registry-'));
    const htpasswd = join(work, 'htpasswd');
    writeFileSync(htpasswd, execFileSync(bins.htpasswd, ['-Bbn', USER, PASSWORD], { encoding: 'utf8' }));
    [{ server: dist, base }, browser, open, locked, reference] = await Promise.all([
      serveDist(),
      launch(),
      startServer({ root: join(work, 'open'), corsOrigin: '*', fsync: false }),
      startServer({ root: join(work, 'locked'), corsOrigin: '*', fsync: false, htpasswd }),
      startRegistry(),
    ]);
    await push(open.url, 'web/demo', '1', demo.blobs, demo.manifest, OCI_MANIFEST);
    await push(open.url, 'web/multi', 'arm64', arm.blobs, arm.manifest, OCI_MANIFEST);
    await push(open.url, 'web/multi', 'amd64', demo.blobs, demo.manifest, OCI_MANIFEST);
    await push(open.url, 'web/multi', '1', [], index, OCI_INDEX);
    const auth = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
    await push(locked.url, 'team/app', 'v1', demo.blobs, demo.manifest, OCI_MANIFEST, auth);
    await push(reference.url, 'web/demo', '1', demo.blobs, demo.manifest, OCI_MANIFEST);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await Promise.all([new Promise((r) => dist?.close(r)), open?.close(), locked?.close(), reference?.stop()]);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  async function newPage(): Promise<{ page: Page; errors: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    return { page, errors };
  }
  const shot = (page: Page, name: string) => page.screenshot({ path: join(results, `web-${name}.png`) });

  it('pulls from our server over CORS: digests, layers, merged tree and a whiteout', async () => {
    const { page, errors } = await newPage();
    const s = await openFromRegistry(page, base, { registry: open.url, image: 'web/demo:1' });
    expect(errors).toEqual([]);
    expect(s.status).toMatch(/^verified: \d+ checks passed/);
    expect(s.checks.filter((c) => c.status !== 'ok')).toEqual([]);
    expect(s.manifestDigest).toBe(demo.manifestDigest);
    expect(s.configDigest).toBe(demo.configDigest);
    expect(s.layers).toEqual(demo.layerDigests.map((digest, i) => ({ digest, diffId: demo.diffIds[i] })));
    const byWhat = Object.fromEntries(s.checks.map((c) => [c.what, c.actual]));
    expect(byWhat['manifest digest (Docker-Content-Digest)']).toBe(demo.manifestDigest);
    expect(byWhat['config digest']).toBe(demo.configDigest);
    expect(demo.diffIds.map((_, i) => byWhat[`layer ${i} diff_id`])).toEqual(demo.diffIds);
    expect(s.summary).toContain(`${open.host}/web/demo:1`);
    expect(s.summary).toContain('linux/amd64');
    await shot(page, 'registry-summary');
    expect(await searchTree(page, 'etc')).toEqual({ etc: 1, 'etc/hostname': 1 });
    expect(await searchTree(page, 'motd')).toEqual({});
    expect(await searchTree(page, 'app/msg')).toEqual({ 'app/msg': 2 });
    await page.click('[data-tab=layers]');
    await page.click('#layers tbody tr[data-layer="1"]');
    const changes = await page.$$eval('#changes li', (lis) =>
      lis.map((li) => `${(li as HTMLElement).dataset.kind} ${(li as HTMLElement).dataset.path}`),
    );
    expect(changes).toEqual(expect.arrayContaining(['deleted etc/motd', 'opaque var/cache']));
    await shot(page, 'registry-layers');
    // A file preview streams the layer blob from the registry again.
    await searchTree(page, 'etc/hostname');
    await page.click('#tree .row[data-path="etc/hostname"]');
    await page.waitForFunction(() => document.getElementById('preview-text')?.textContent === 'stevedore\n');
    await page.close();
  });

  it('opens by digest from the page URL (?registry=…&image=…)', async () => {
    const { page, errors } = await newPage();
    const q = new URLSearchParams({ registry: open.url, image: `web/demo@${demo.manifestDigest}` });
    await page.goto(`${base}/?${q}`);
    const s = await shown(page);
    expect(errors).toEqual([]);
    expect(s.status).toMatch(/^verified: /);
    expect(await page.inputValue('#registry-url')).toBe(open.url);
    const check = s.checks.find((c) => c.what === 'manifest digest');
    expect([check?.status, check?.actual]).toEqual(['ok', demo.manifestDigest]);
    expect(s.layers.map((l) => l.diffId)).toEqual(demo.diffIds);
    await page.close();
  });

  it('served by the registry itself (serve --ui): same origin, no CORS, the registry field defaults to it', async () => {
    // What `stevedore serve --ui` runs: our server with the built page at / and no CORS headers.
    const ui = await startServer({ root: join(work, 'ui'), fsync: false, staticDir: webDist });
    try {
      await push(ui.url, 'web/demo', '1', demo.blobs, demo.manifest, OCI_MANIFEST);
      const { page, errors } = await newPage();
      await page.goto(`${ui.url}/?${new URLSearchParams({ image: 'web/demo:1' })}`);
      const s = await shown(page);
      expect(errors).toEqual([]);
      expect(await page.inputValue('#registry-url')).toBe(ui.url);
      expect(s.status).toMatch(/^verified: /);
      expect(s.manifestDigest).toBe(demo.manifestDigest);
      expect(s.layers.map((l) => l.diffId)).toEqual(demo.diffIds);
      await shot(page, 'registry-served-ui');
      await page.close();
    } finally {
      await ui.close();
    }
  });

  it('an index: linux/amd64 first, and a platform chooser that switches images', async () => {
    const { page, errors } = await newPage();
    const s = await openFromRegistry(page, base, { registry: open.url, image: 'web/multi:1' });
    expect(errors).toEqual([]);
    expect(s.status).toMatch(/^verified: /);
    const options = await page.$$eval('#platform-select option', (os) => os.map((o) => o.textContent));
    expect(options).toEqual(['linux/arm64', 'linux/amd64']);
    expect(await page.isVisible('#platform-select')).toBe(true);
    expect(await page.inputValue('#platform-select')).toBe('1');
    expect(s.manifestDigest).toBe(demo.manifestDigest);
    expect(s.checks.find((c) => c.what === 'manifest digest (linux/amd64)')?.status).toBe('ok');
    await page.selectOption('#platform-select', '0');
    await page.waitForFunction(
      (d) => document.querySelector('[data-testid=manifest-digest]')?.textContent === d,
      arm.manifestDigest,
    );
    const a = await shown(page);
    expect(a.status).toMatch(/^verified: /);
    expect(a.summary).toContain('linux/arm64');
    expect(a.layers).toEqual([{ digest: arm.layerDigests[0], diffId: arm.diffIds[0] }]);
    expect(await searchTree(page, 'arch')).toEqual({ 'etc/arch': 0 });
    await shot(page, 'registry-platforms');
    await page.close();
  });

  it('Basic auth: credentials typed in the page; none or wrong ones are refused clearly', async () => {
    const { page } = await newPage();
    let s = await openFromRegistry(page, base, { registry: locked.url, image: 'team/app:v1' });
    expect(s.status).toBe(
      `cannot open team/app:v1: the registry at ${locked.url} requires a username and password (Basic auth)`,
    );
    s = await openFromRegistry(page, base, {
      registry: locked.url,
      image: 'team/app:v1',
      username: USER,
      password: 'wrong',
    });
    expect(s.status).toContain(`the registry at ${locked.url} refused the credentials of ${USER} (401)`);
    s = await openFromRegistry(page, base, {
      registry: locked.url,
      image: 'team/app:v1',
      username: USER,
      password: PASSWORD,
    });
    expect(s.status).toMatch(/^verified: /);
    expect(s.manifestDigest).toBe(demo.manifestDigest);
    expect(s.layers.map((l) => l.digest)).toEqual(demo.layerDigests);
    await page.close();
  });

  it('a registry without CORS headers (the reference registry): says so', async () => {
    // The image is there (Node can read it); the browser may not.
    const res = await fetch(`${reference.url}/v2/web/demo/manifests/${demo.manifestDigest}`, {
      headers: { accept: OCI_MANIFEST },
    });
    expect(sha(new Uint8Array(await res.arrayBuffer()))).toBe(demo.manifestDigest);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    const { page, errors } = await newPage();
    const s = await openFromRegistry(page, base, { registry: reference.url, image: 'web/demo:1' });
    expect(errors).toEqual([]);
    expect(s.status).toBe(
      `cannot open web/demo:1: the registry at ${reference.url} does not allow cross-origin requests (CORS); ` +
        "start it with `stevedore serve --cors '*'` or open a saved archive instead",
    );
    await shot(page, 'registry-cors');
    await page.close();
  });

  it('bad input in the fields is named', async () => {
    const { page } = await newPage();
    let s = await openFromRegistry(page, base, { registry: open.url, image: 'Web/Demo:1' });
    expect(s.status).toContain('invalid repository name in Web/Demo:1');
    s = await openFromRegistry(page, base, { registry: 'ftp://127.0.0.1:1', image: 'web/demo:1' });
    expect(s.status).toContain('only http and https are supported');
    s = await openFromRegistry(page, base, { registry: open.url, image: 'web/nothere:1' });
    expect(s.status).toMatch(/manifest web\/nothere:1: 404 (NAME|MANIFEST)_UNKNOWN/);
    await page.close();
  });
});
