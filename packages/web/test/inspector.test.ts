// The web inspector in Chromium: archives built here (legacy docker save, Docker 25+ save,
// oci-archive, gzip'd, tampered, 10,000 files) are opened through the file input; what the
// page shows is compared with digests computed in Node.
import { readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BINARY,
  bigArchive,
  dockerSave,
  type Fixture,
  launch,
  ociArchive,
  openArchive,
  results,
  searchTree,
  serveDist,
  sha,
  workDir,
} from './support.js';

let server: Server;
let base: string;
let browser: Browser;
let work: string;
const fx: Record<string, Fixture> = {};

beforeAll(async () => {
  ({ server, base } = await serveDist());
  browser = await launch();
  work = workDir();
  fx.legacy = dockerSave(work, 'legacy.tar');
  fx.legacyGz = dockerSave(work, 'legacy.tar.gz', undefined, { gzip: true });
  fx.oci = ociArchive(work, 'oci.tar');
  fx.docker25 = ociArchive(work, 'docker25.tar', { docker25: true });
  fx.tampered = ociArchive(work, 'tampered.tar', { tamper: true });
});

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => server?.close(r));
  if (work) rmSync(work, { recursive: true, force: true });
});

async function newPage(): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return { page, errors };
}

const shot = (page: Page, name: string) => page.screenshot({ path: join(results, `web-${name}.png`), fullPage: false });

describe.each([
  ['legacy docker save', 'legacy'],
  ['gzip’d legacy docker save', 'legacyGz'],
  ['oci-archive with gzip layers', 'oci'],
  ['Docker 25+ docker save (OCI layout inside)', 'docker25'],
])('%s', (_title, key) => {
  it('verifies every blob and shows the digests computed in Node', async () => {
    const f = fx[key] as Fixture;
    const { page, errors } = await newPage();
    const shown = await openArchive(page, base, f.path);
    expect(errors).toEqual([]);
    expect(shown.status).toMatch(/^verified: \d+ checks passed/);
    expect(shown.checks.length).toBeGreaterThan(0);
    expect(shown.checks.filter((c) => c.status === 'mismatch' || c.status === 'missing')).toEqual([]);
    expect(shown.configDigest).toBe(f.configDigest);
    if (f.manifestDigest) expect(shown.manifestDigest).toBe(f.manifestDigest);
    expect(shown.layers).toEqual(f.layerDigests.map((d, i) => ({ digest: d, diffId: f.diffIds[i] })));
    // One diff_id check per layer, each ok with the Node digest.
    const diff = shown.checks.filter((c) => c.what.endsWith('diff_id'));
    expect(diff.map((c) => [c.status, c.actual])).toEqual(f.diffIds.map((d) => ['ok', d]));
    if (key === 'oci' || key === 'docker25') {
      const blobs = shown.checks.filter((c) => c.what === 'blob');
      expect(blobs.length).toBe(2 + f.layerDigests.length);
      expect(blobs.every((c) => c.status === 'ok' && `sha256:${c.member.split('/')[2]}` === c.actual)).toBe(true);
      expect(shown.checks.filter((c) => /^layer \d digest$/.test(c.what)).map((c) => c.actual)).toEqual(f.layerDigests);
    }
    expect(shown.summary).toContain(f.tag);
    expect(shown.summary).toContain('linux/amd64');
    expect(shown.summary).toContain('GREETING=hi');
    expect(shown.summary).toContain('["/bin/sh","-c"]');
    expect(shown.summary).toContain('org.example.team=dock');
    expect(shown.summary).toContain('COPY msg /app/msg');
    if (key === 'legacy') await shot(page, 'summary');
    await page.close();
  });

  it('shows the merged tree with the providing layer, and whiteouts as deleted', async () => {
    const f = fx[key] as Fixture;
    const { page, errors } = await newPage();
    await openArchive(page, base, f.path);
    expect(await searchTree(page, 'etc')).toEqual({ etc: 1, 'etc/hostname': 1 });
    expect(await searchTree(page, 'motd')).toEqual({});
    expect(await searchTree(page, 'var/cache')).toEqual({ 'var/cache': 1, 'var/cache/new.txt': 1 });
    expect(await searchTree(page, 'app/msg')).toEqual({ 'app/msg': 2 });
    expect(await searchTree(page, 'lib')).toEqual({ 'usr/lib': 0, 'usr/lib/libdemo.so': 0 });
    expect(await searchTree(page, 'bin/')).toEqual({ 'bin/busybox': 0, 'bin/sh': 0 });
    // Layer 1's changes: the whiteout is a deletion, the opaque dir is shown as such.
    await page.click('[data-tab=layers]');
    await page.click('#layers tbody tr[data-layer="1"]');
    const changes = await page.$$eval('#changes li', (lis) =>
      lis.map((li) => `${(li as HTMLElement).dataset.kind} ${(li as HTMLElement).dataset.path}`),
    );
    expect(changes).toEqual(
      expect.arrayContaining([
        'deleted etc/motd',
        'changed etc/hostname',
        'opaque var/cache',
        'added var/cache/new.txt',
        'added app/msg',
      ]),
    );
    // Wasted space of the base layer: the overwritten hostname, deleted motd and hidden cache file.
    await page.click('#layers tbody tr[data-layer="0"]');
    const wasted = await page.$$eval('#wasted li', (lis) => lis.map((li) => (li as HTMLElement).dataset.path));
    expect(wasted.sort()).toEqual(['etc/hostname', 'etc/motd', 'var/cache/old.bin']);
    if (key === 'oci') {
      await page.click('#layers tbody tr[data-layer="1"]');
      await shot(page, 'layers');
    }
    expect(errors).toEqual([]);
    await page.close();
  });

  it('previews (text and hex) and downloads a single file', async () => {
    const f = fx[key] as Fixture;
    const { page, errors } = await newPage();
    await openArchive(page, base, f.path);
    await searchTree(page, 'etc/hostname');
    // Keyboard: Enter in the search box moves to the first row, Enter opens it.
    await page.focus('#search');
    await page.keyboard.press('Enter');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.getElementById('preview-text')?.textContent === 'stevedore\n');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    expect(readFileSync(await download.path()).toString()).toBe('stevedore\n');

    await searchTree(page, 'libdemo');
    await page.click('#tree .row[data-path="usr/lib/libdemo.so"]');
    await page.waitForSelector('#preview-hex:not([hidden])');
    const hexText = await page.textContent('#preview-hex');
    const firstRow = [...BINARY.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    expect(hexText?.startsWith(`00000000  ${firstRow}`)).toBe(true);
    const [bin] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    expect(sha(readFileSync(await bin.path()))).toBe(sha(BINARY));
    if (key === 'legacyGz') await shot(page, 'files-hex');
    if (key === 'legacy') {
      await searchTree(page, '');
      await page.focus('#tree');
      // app/ → bin/ → etc/ → expand → hostname → open.
      for (const k of ['Home', 'ArrowDown', 'ArrowDown', 'ArrowRight', 'ArrowDown', 'Enter']) {
        await page.keyboard.press(k);
      }
      await page.waitForFunction(() => document.getElementById('preview-path')?.textContent === 'etc/hostname');
      expect(await page.textContent('#preview-text')).toBe('stevedore\n');
      await shot(page, 'files');
    }
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('a tampered archive', () => {
  it('shows the mismatches with expected and actual digests', async () => {
    const f = fx.tampered as Fixture;
    const { page } = await newPage();
    const shown = await openArchive(page, base, f.path);
    expect(shown.status).toMatch(/checks? failed/);
    const bad = shown.checks.filter((c) => c.status === 'mismatch');
    const blob = bad.find((c) => c.what === 'blob');
    expect(blob?.expected).toBe(f.layerDigests[0]);
    expect(blob?.actual).not.toBe(f.layerDigests[0]);
    expect(blob?.actual).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(blob?.member).toBe(`blobs/sha256/${(f.layerDigests[0] as string).slice(7)}`);
    // Only layer 0's checks fail (its gzip'd size may differ too); config and manifest are fine.
    const what = bad.map((c) => c.what);
    expect(what).toEqual(expect.arrayContaining(['blob', 'layer 0 diff_id', 'layer 0 digest']));
    expect(what.every((w) => w === 'blob' || w.startsWith('layer 0 '))).toBe(true);
    expect(bad.find((c) => c.what === 'layer 0 diff_id')?.expected).toBe(f.diffIds[0]);
    await page.click('[data-tab=verify]');
    expect(await page.textContent('#verify-summary')).toMatch(new RegExp(`^${bad.length} of \\d+ checks failed$`));
    await shot(page, 'verify-tampered');
    await page.close();
  });

  it('a good archive’s verify view', async () => {
    const { page } = await newPage();
    await openArchive(page, base, (fx.oci as Fixture).path);
    await page.click('[data-tab=verify]');
    expect(await page.textContent('#verify-summary')).toMatch(/^All \d+ checks passed$/);
    await shot(page, 'verify');
    await page.close();
  });
});

describe('10,000 files', () => {
  it('renders only the visible rows, searches and navigates by keyboard', async () => {
    const f = bigArchive(work, 10_000);
    const { page, errors } = await newPage();
    const shown = await openArchive(page, base, f.path);
    expect(shown.checks.every((c) => c.status === 'ok' || c.status === 'unchecked')).toBe(true);
    await page.click('[data-tab=files]');
    expect(await page.textContent('#file-count')).toBe('10101 paths');
    const t0 = Date.now();
    const rows = await searchTree(page, 'f0');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await page.textContent('#file-count')).toBe('10000 of 10101 paths match');
    // Virtualized: a screenful of rows, not ten thousand.
    expect(Object.keys(rows).length).toBeLessThan(80);
    await page.focus('#tree');
    await page.keyboard.press('End');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.getElementById('preview-text')?.textContent === '99/99\n');
    expect(await page.$eval('#tree', (el) => el.scrollTop)).toBeGreaterThan(100_000);
    await shot(page, 'files-10k');
    expect(errors).toEqual([]);
    await page.close();
  });
});
