// The web inspector in Chromium, opening folders through the directory input
// (`<input type="file" webkitdirectory>`): an OCI layout written by @stevedore/image's OciLayout
// from the fixture image, the same with a nested index, a tampered blob, a missing blob, an
// extracted `docker save`, and folders that are not layouts.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { basename, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { OciLayout, OciLayoutReader } from '@stevedore/image';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  dockerSave,
  type Fixture,
  launch,
  layerTars,
  ociArchive,
  results,
  type Shown,
  searchTree,
  serveDist,
  sha,
  shown,
  workDir,
} from './support.js';

let server: Server;
let base: string;
let browser: Browser;
let work: string;
let oci: Fixture;
/** The layout written by OciLayout, and its manifest digest (from its index.json). */
let layout: string;
let manifestDigest: string;

const hexOf = (d: string) => d.slice(d.indexOf(':') + 1);
const blobPath = (dir: string, d: string) => join(dir, 'blobs', 'sha256', hexOf(d));

beforeAll(async () => {
  ({ server, base } = await serveDist());
  browser = await launch();
  work = workDir();
  oci = ociArchive(work, 'oci.tar');
  const reader = await OciLayoutReader.openArchive(oci.path);
  try {
    layout = join(work, 'sd-layout');
    const writer = await OciLayout.open(layout);
    manifestDigest = (await writer.putImage(await reader.image('oci'), { tags: ['oci'] })).toString();
  } finally {
    await reader.close();
  }
});

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => server?.close(r));
  if (work) rmSync(work, { recursive: true, force: true });
});

async function newPage(): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return { page, errors };
}

const shot = (page: Page, name: string) => page.screenshot({ path: join(results, `web-${name}.png`), fullPage: false });

/** Opens `dir` through the folder input and waits until the page is done (ready or error). */
async function openFolder(page: Page, dir: string): Promise<Shown> {
  await page.goto(`${base}/`);
  await page.waitForSelector('body[data-state="idle"]');
  await page.setInputFiles('#folder', dir);
  return shown(page);
}

/** A copy of the good layout to break. */
function copyLayout(name: string): string {
  const dir = join(work, name);
  cpSync(layout, dir, { recursive: true });
  return dir;
}

const failed = (s: Shown) => s.checks.filter((c) => c.status === 'mismatch' || c.status === 'missing');
const errorsShown = (page: Page) => page.$$eval('#errors li', (lis) => lis.map((li) => li.textContent ?? ''));

describe('an OCI layout folder', () => {
  it('is verified blob by blob and shows the digests computed in Node', async () => {
    const { page, errors } = await newPage();
    const s = await openFolder(page, layout);
    expect(errors).toEqual([]);
    expect(s.status).toMatch(/^verified: \d+ checks passed/);
    expect(failed(s)).toEqual([]);
    expect(s.configDigest).toBe(oci.configDigest);
    expect(s.manifestDigest).toBe(manifestDigest);
    expect(s.layers).toEqual(oci.layerDigests.map((d, i) => ({ digest: d, diffId: oci.diffIds[i] })));
    // Every blob of the folder (config, manifest, three layers), hashed in the page, named by its digest.
    const blobs = s.checks.filter((c) => c.what === 'blob');
    expect(blobs.map((c) => c.member).sort()).toEqual(
      [oci.configDigest, manifestDigest, ...oci.layerDigests].map((d) => `blobs/sha256/${hexOf(d)}`).sort(),
    );
    expect(blobs.every((c) => c.status === 'ok' && c.actual === `sha256:${c.member.split('/')[2]}`)).toBe(true);
    expect(s.checks.filter((c) => /^layer \d digest$/.test(c.what)).map((c) => c.actual)).toEqual(oci.layerDigests);
    expect(s.checks.filter((c) => c.what.endsWith('diff_id')).map((c) => [c.status, c.actual])).toEqual(
      oci.diffIds.map((d) => ['ok', d]),
    );
    expect(s.summary).toContain('oci-layout');
    expect(s.summary).toContain('linux/amd64');
    expect(s.summary).toContain('COPY msg /app/msg');
    expect(await page.textContent('#filename')).toContain(`${basename(layout)}/`);
    await shot(page, 'folder-summary');
    await page.close();
  });

  it('shows the merged tree with the providing layer, and the whiteout as deleted', async () => {
    const { page, errors } = await newPage();
    await openFolder(page, layout);
    expect(await searchTree(page, 'etc')).toEqual({ etc: 1, 'etc/hostname': 1 });
    expect(await searchTree(page, 'motd')).toEqual({});
    expect(await searchTree(page, 'var/cache')).toEqual({ 'var/cache': 1, 'var/cache/new.txt': 1 });
    expect(await searchTree(page, 'app/msg')).toEqual({ 'app/msg': 2 });
    await page.click('#tree .row[data-path="app/msg"]');
    await page.waitForFunction(
      () => document.getElementById('preview-text')?.textContent === 'hello from layer 2, overwritten\n',
    );
    await page.click('[data-tab=layers]');
    await page.click('#layers tbody tr[data-layer="1"]');
    const changes = await page.$$eval('#changes li', (lis) =>
      lis.map((li) => `${(li as HTMLElement).dataset.kind} ${(li as HTMLElement).dataset.path}`),
    );
    expect(changes).toEqual(
      expect.arrayContaining(['deleted etc/motd', 'changed etc/hostname', 'opaque var/cache', 'added app/msg']),
    );
    await shot(page, 'folder-layers');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('follows a nested index (index.json → index blob → manifest)', async () => {
    const dir = copyLayout('nested');
    const inner = readFileSync(join(dir, 'index.json'));
    const innerDigest = sha(inner);
    writeFileSync(blobPath(dir, innerDigest), inner);
    writeFileSync(
      join(dir, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: innerDigest, size: inner.length }],
      }),
    );
    const { page, errors } = await newPage();
    const s = await openFolder(page, dir);
    expect(errors).toEqual([]);
    expect(s.status).toMatch(/^verified: \d+ checks passed/);
    expect(s.manifestDigest).toBe(manifestDigest);
    expect(s.layers.map((l) => l.digest)).toEqual(oci.layerDigests);
    const nested = s.checks.find((c) => c.member === `blobs/sha256/${hexOf(innerDigest)}`);
    expect(nested?.status).toBe('ok');
    await page.close();
  });
});

describe('a broken OCI layout folder', () => {
  it('a tampered layer blob fails its blob, digest and diff_id checks', async () => {
    const dir = copyLayout('tampered');
    const t = new Uint8Array(layerTars()[0] as Uint8Array);
    t[Buffer.from(t).indexOf('base\n')] = 'B'.charCodeAt(0);
    writeFileSync(blobPath(dir, oci.layerDigests[0] as string), gzipSync(t, { level: 6 }));
    const { page } = await newPage();
    const s = await openFolder(page, dir);
    expect(s.status).toMatch(/checks? failed/);
    const bad = failed(s);
    const blob = bad.find((c) => c.what === 'blob');
    expect(blob?.member).toBe(`blobs/sha256/${hexOf(oci.layerDigests[0] as string)}`);
    expect(blob?.expected).toBe(oci.layerDigests[0]);
    expect(blob?.actual).toBe(sha(gzipSync(t, { level: 6 })));
    const what = bad.map((c) => c.what);
    expect(what).toEqual(expect.arrayContaining(['blob', 'layer 0 digest', 'layer 0 diff_id']));
    expect(what.every((w) => w === 'blob' || w.startsWith('layer 0 '))).toBe(true);
    expect(bad.find((c) => c.what === 'layer 0 diff_id')?.actual).toBe(sha(t));
    await page.click('[data-tab=verify]');
    expect(await page.textContent('#verify-summary')).toMatch(new RegExp(`^${bad.length} of \\d+ checks failed$`));
    await shot(page, 'folder-tampered');
    await page.close();
  });

  it('a missing layer blob is a missing check and an error naming it', async () => {
    const dir = copyLayout('missing');
    const gone = oci.layerDigests[2] as string;
    rmSync(blobPath(dir, gone));
    const { page, errors } = await newPage();
    const s = await openFolder(page, dir);
    expect(errors).toEqual([]);
    expect(s.status).toMatch(/^1 check failed/);
    expect(failed(s)).toEqual([
      { status: 'missing', what: 'blob', member: `blobs/sha256/${hexOf(gone)}`, expected: gone, actual: '(none)' },
    ]);
    expect(await errorsShown(page)).toEqual([`layer 2 ${gone} is missing from the folder`]);
    // The other layers are still verified and shown.
    expect(s.layers.map((l) => l.digest)).toEqual(oci.layerDigests.slice(0, 2));
    await page.close();
  });

  it('a missing manifest blob leaves nothing to open, and says which', async () => {
    const dir = copyLayout('no-manifest');
    rmSync(blobPath(dir, manifestDigest));
    const { page } = await newPage();
    const s = await openFolder(page, dir);
    expect(await page.getAttribute('body', 'data-state')).toBe('error');
    expect(s.status).toBe(`cannot open no-manifest/: manifest ${manifestDigest} is missing from the folder`);
    await page.close();
  });
});

describe('folders that are not OCI layouts', () => {
  it('an arbitrary folder: the message names what is missing', async () => {
    const dir = join(work, 'photos');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    writeFileSync(join(dir, 'readme.txt'), 'hello\n');
    writeFileSync(join(dir, 'sub', 'a.json'), '{}');
    const { page, errors } = await newPage();
    const s = await openFolder(page, dir);
    expect(errors).toEqual([]);
    expect(await page.getAttribute('body', 'data-state')).toBe('error');
    expect(s.status).toBe(
      'cannot open photos/: the folder photos is not an OCI image layout: no oci-layout file, no index.json, ' +
        'no blobs/<alg>/<hex> files (only OCI layout folders and extracted docker save folders open; archives open as files)',
    );
    await shot(page, 'folder-not-layout');
    await page.close();
  });

  it('an oci-layout file without imageLayoutVersion', async () => {
    const dir = copyLayout('bad-version');
    writeFileSync(join(dir, 'oci-layout'), '{"version":"1.0.0"}');
    const { page } = await newPage();
    const s = await openFolder(page, dir);
    expect(s.status).toMatch(
      /^cannot open bad-version\/: the folder bad-version is not an OCI image layout: oci-layout has no imageLayoutVersion \(/,
    );
    await page.close();
  });

  it('an extracted docker save folder opens like the archive', async () => {
    const tar = dockerSave(work, 'legacy.tar');
    const dir = join(work, 'legacy-extracted');
    mkdirSync(dir);
    execFileSync('tar', ['-xf', tar.path, '-C', dir]);
    const { page, errors } = await newPage();
    const s = await openFolder(page, dir);
    expect(errors).toEqual([]);
    expect(s.status).toMatch(/^verified: \d+ checks passed/);
    expect(s.configDigest).toBe(tar.configDigest);
    expect(s.layers).toEqual(tar.diffIds.map((d) => ({ digest: d, diffId: d })));
    expect(s.checks.find((c) => c.what === 'config')?.status).toBe('ok');
    expect(s.summary).toContain(tar.tag);
    expect(await searchTree(page, 'motd')).toEqual({});
    await page.close();
  });
});
