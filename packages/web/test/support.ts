// Shared by the browser tests: a loopback static server for dist/, Chromium through
// playwright-core, fixture archives built by code, and helpers that drive the page.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { type LayerEntryInput, writeTar } from '@stevedore/core';
import { type Browser, chromium, type Page } from 'playwright-core';

export const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
export const results = join(pkg, '..', '..', 'build', 'test-results');
export const webDist = join(pkg, 'dist');
const dist = webDist;
const CHROMIUM = process.env.STEVEDORE_CHROMIUM ?? '/usr/bin/chromium';
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.wasm': 'application/wasm',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
};

export const sha = (b: Uint8Array | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
export const hex = (d: string) => d.slice('sha256:'.length);
const enc = (s: string) => new TextEncoder().encode(s);

/** Serves packages/web/dist on 127.0.0.1 with the right content types (application/wasm). */
export async function serveDist(): Promise<{ server: Server; base: string }> {
  if (!existsSync(join(dist, 'index.html'))) throw new Error(`build the page first: ${dist}/index.html is missing`);
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const file = normalize(join(dist, url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname)));
    if (!file.startsWith(dist)) {
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
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

export function launch(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      ...extraArgs,
    ],
  });
}

// ---------------------------------------------------------------------------------------------
// Fixtures

type Member = { entry: LayerEntryInput; data?: Uint8Array };
const file = (path: string, data: string | Uint8Array, mode = 0o644): Member => ({
  entry: { path, type: 'file', mode, mtime: 1_700_000_000 },
  data: typeof data === 'string' ? enc(data) : data,
});
const dir = (path: string): Member => ({ entry: { path, type: 'directory', mode: 0o755, mtime: 1_700_000_000 } });

export const BINARY = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7 + (i >> 3)) & 0xff);

/** Three layers: a base, one with a whiteout and an opaque dir, and one that overwrites. */
export function layerTars(): Uint8Array[] {
  const base = writeTar([
    dir('etc/'),
    file('etc/hostname', 'base\n'),
    file('etc/motd', 'welcome to the base layer\n'),
    dir('usr/'),
    dir('usr/lib/'),
    file('usr/lib/libdemo.so', BINARY, 0o755),
    dir('var/'),
    dir('var/cache/'),
    file('var/cache/old.bin', new Uint8Array(2048).fill(0x41)),
    dir('bin/'),
    file('bin/busybox', 'not really busybox\n', 0o755),
    { entry: { path: 'bin/sh', type: 'symlink', linkName: 'busybox', mtime: 1_700_000_000 } },
  ]);
  const top = writeTar([
    dir('etc/'),
    file('etc/.wh.motd', ''),
    file('etc/hostname', 'stevedore\n'),
    dir('var/cache/'),
    file('var/cache/.wh..wh..opq', ''),
    file('var/cache/new.txt', 'fresh\n'),
    dir('app/'),
    file('app/msg', 'hello from layer 1\n'),
  ]);
  const last = writeTar([dir('app/'), file('app/msg', 'hello from layer 2, overwritten\n')]);
  return [base, top, last];
}

export interface Fixture {
  path: string;
  configDigest: string;
  manifestDigest?: string;
  diffIds: string[];
  /** Digests of the layer blobs as stored (compressed in the OCI archive). */
  layerDigests: string[];
  tag: string;
}

function config(diffIds: string[], architecture = 'amd64'): Uint8Array {
  return enc(
    JSON.stringify({
      architecture,
      os: 'linux',
      created: '2026-01-02T03:04:05Z',
      config: {
        Env: ['PATH=/usr/bin:/bin', 'GREETING=hi'],
        Entrypoint: ['/bin/sh', '-c'],
        Cmd: ['cat /app/msg'],
        WorkingDir: '/app',
        Labels: { 'org.example.team': 'dock' },
      },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: [
        { created: '2026-01-02T03:04:01Z', created_by: 'ADD base.tar /' },
        {
          created: '2026-01-02T03:04:02Z',
          created_by: 'RUN rm /etc/motd /var/cache/* && echo stevedore > /etc/hostname',
        },
        { created: '2026-01-02T03:04:03Z', created_by: 'ENV GREETING=hi', empty_layer: true },
        { created: '2026-01-02T03:04:04Z', created_by: 'COPY msg /app/msg' },
      ],
    }),
  );
}

export function workDir(): string {
  mkdirSync(results, { recursive: true });
  return mkdtempSync(join(tmpdir(), 'stevedore-web-'));
}

/** A legacy `docker save` archive: manifest.json, <id>/layer.tar, <config>.json, repositories. */
export function dockerSave(dirPath: string, name: string, tars = layerTars(), opts: { gzip?: boolean } = {}): Fixture {
  const diffIds = tars.map(sha);
  const cfg = config(diffIds);
  const configDigest = sha(cfg);
  const tag = 'sd-web:legacy';
  const ids = diffIds.map((d, i) => hex(sha(`${d}${i}`)));
  const members: Member[] = [];
  tars.forEach((t, i) => {
    members.push(dir(`${ids[i]}/`), file(`${ids[i]}/VERSION`, '1.0'), file(`${ids[i]}/json`, `{"id":"${ids[i]}"}`));
    members.push(file(`${ids[i]}/layer.tar`, t));
  });
  members.push(file(`${hex(configDigest)}.json`, cfg));
  members.push(
    file(
      'manifest.json',
      JSON.stringify([
        { Config: `${hex(configDigest)}.json`, RepoTags: [tag], Layers: ids.map((id) => `${id}/layer.tar`) },
      ]),
    ),
  );
  members.push(file('repositories', JSON.stringify({ 'sd-web': { legacy: ids[ids.length - 1] } })));
  let archive = writeTar(members);
  if (opts.gzip) archive = gzipSync(archive);
  const path = join(dirPath, name);
  writeFileSync(path, archive);
  return { path, configDigest, diffIds, layerDigests: diffIds, tag };
}

/**
 * An oci-archive (gzip'd layers) or, with `docker25`, the Docker 25+ `docker save` shape: the
 * same OCI layout plus manifest.json, uncompressed layers. `tamper` stores a changed layer 0
 * under the original digest.
 */
export function ociArchive(
  dirPath: string,
  name: string,
  opts: { docker25?: boolean; tamper?: boolean } = {},
): Fixture {
  const tars = layerTars();
  const diffIds = tars.map(sha);
  const blobs = opts.docker25 ? tars : tars.map((t) => gzipSync(t, { level: 6 }));
  const layerDigests = blobs.map(sha);
  const cfg = config(diffIds);
  const configDigest = sha(cfg);
  const manifest = enc(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: cfg.length },
      layers: blobs.map((b, i) => ({
        mediaType: opts.docker25
          ? 'application/vnd.oci.image.layer.v1.tar'
          : 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: layerDigests[i],
        size: b.length,
      })),
    }),
  );
  const manifestDigest = sha(manifest);
  const tag = opts.docker25 ? 'sd-web:docker25' : 'sd-web:oci';
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: manifestDigest,
        size: manifest.length,
        annotations: {
          'io.containerd.image.name': `docker.io/library/${tag}`,
          'org.opencontainers.image.ref.name': tag.split(':')[1],
        },
      },
    ],
  };
  const stored = [...blobs];
  if (opts.tamper) {
    const t = new Uint8Array(tars[0] as Uint8Array);
    const at = Buffer.from(t).indexOf('base\n');
    t[at] = 'B'.charCodeAt(0);
    stored[0] = opts.docker25 ? t : gzipSync(t, { level: 6 });
  }
  const members: Member[] = [
    file('oci-layout', '{"imageLayoutVersion":"1.0.0"}'),
    file('index.json', JSON.stringify(index)),
    dir('blobs/'),
    dir('blobs/sha256/'),
    file(`blobs/sha256/${hex(configDigest)}`, cfg),
    file(`blobs/sha256/${hex(manifestDigest)}`, manifest),
    ...stored.map((b, i) => file(`blobs/sha256/${hex(layerDigests[i] as string)}`, b)),
  ];
  if (opts.docker25) {
    members.push(
      file(
        'manifest.json',
        JSON.stringify([
          {
            Config: `blobs/sha256/${hex(configDigest)}`,
            RepoTags: [tag],
            Layers: layerDigests.map((d) => `blobs/sha256/${hex(d)}`),
          },
        ]),
      ),
    );
  }
  const path = join(dirPath, name);
  writeFileSync(path, writeTar(members));
  return { path, configDigest, manifestDigest, diffIds, layerDigests, tag };
}

/** A layer tar of regular files (directories implied). */
export function writeTarLayer(files: Record<string, string>): Uint8Array {
  return writeTar(Object.entries(files).map(([path, data]) => file(path, data)));
}

/** An image as a registry holds it: gzip'd layer blobs, config, OCI manifest. */
export interface RegistryImage {
  blobs: Uint8Array[];
  manifest: Uint8Array;
  manifestDigest: string;
  configDigest: string;
  diffIds: string[];
  layerDigests: string[];
}

export function registryImage(tars = layerTars(), architecture = 'amd64'): RegistryImage {
  const diffIds = tars.map(sha);
  const layers = tars.map((t) => gzipSync(t, { level: 6 }));
  const layerDigests = layers.map(sha);
  const cfg = config(diffIds, architecture);
  const configDigest = sha(cfg);
  const manifest = enc(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: cfg.length },
      layers: layers.map((b, i) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: layerDigests[i],
        size: b.length,
      })),
    }),
  );
  return { blobs: [cfg, ...layers], manifest, manifestDigest: sha(manifest), configDigest, diffIds, layerDigests };
}

/** An OCI index over `images` with their platforms (in this order). */
export function registryIndex(images: { image: RegistryImage; platform: string }[]): Uint8Array {
  return enc(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: images.map(({ image, platform }) => {
        const [os, architecture] = platform.split('/');
        return {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: image.manifestDigest,
          size: image.manifest.length,
          platform: { os, architecture },
        };
      }),
    }),
  );
}

/**
 * Pushes blobs (POST, then PUT with the digest) and a manifest to a distribution API at `base`, as any client
 * does; `authorization` is sent with every request.
 */
export async function push(
  base: string,
  repo: string,
  ref: string,
  blobs: Uint8Array[],
  manifest: Uint8Array,
  mediaType: string,
  authorization?: string,
): Promise<void> {
  const headers: Record<string, string> = authorization ? { authorization } : {};
  for (const b of blobs) {
    const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers });
    await start.arrayBuffer();
    if (start.status !== 202) throw new Error(`start upload at ${base}: ${start.status}`);
    const location = new URL(start.headers.get('location') ?? '', base);
    location.searchParams.set('digest', sha(b));
    const res = await fetch(location, {
      method: 'PUT',
      headers: { ...headers, 'content-type': 'application/octet-stream' },
      body: b as BodyInit,
    });
    if (res.status !== 201) throw new Error(`push blob to ${base}: ${res.status} ${await res.text()}`);
  }
  const res = await fetch(`${base}/v2/${repo}/manifests/${ref}`, {
    method: 'PUT',
    headers: { ...headers, 'content-type': mediaType },
    body: manifest as BodyInit,
  });
  if (res.status !== 201) throw new Error(`push manifest to ${base}: ${res.status} ${await res.text()}`);
}

/** A single-layer image with `n` files spread over directories (virtualization). */
export function bigArchive(dirPath: string, n: number): Fixture {
  const members: Member[] = [dir('data/')];
  for (let d = 0; d < n / 100; d++) {
    members.push(dir(`data/d${String(d).padStart(3, '0')}/`));
    for (let f = 0; f < 100; f++)
      members.push(file(`data/d${String(d).padStart(3, '0')}/f${String(f).padStart(3, '0')}.txt`, `${d}/${f}\n`));
  }
  return dockerSave(dirPath, 'big.tar', [writeTar(members)]);
}

// ---------------------------------------------------------------------------------------------
// Page helpers

export interface Shown {
  checks: { status: string; what: string; member: string; expected: string; actual: string }[];
  layers: { digest: string; diffId: string }[];
  configDigest: string;
  manifestDigest: string;
  status: string;
  summary: string;
}

/** Opens `path` through the file input and waits until the page has scanned everything. */
export async function openArchive(page: Page, base: string, path: string): Promise<Shown> {
  await page.goto(base + '/');
  await page.waitForSelector('body[data-state="idle"]');
  await page.setInputFiles('#file', path);
  return shown(page);
}

/** Types the registry fields, opens, and waits until the page is done (ready or error). */
export async function openFromRegistry(
  page: Page,
  base: string,
  fields: { registry: string; image: string; username?: string; password?: string },
): Promise<Shown> {
  await page.goto(base + '/');
  await page.waitForSelector('body[data-state="idle"]');
  await page.fill('#registry-url', fields.registry);
  await page.fill('#image-ref', fields.image);
  if (fields.username !== undefined) await page.fill('#username', fields.username);
  if (fields.password !== undefined) await page.fill('#password', fields.password);
  await page.click('#registry-open');
  return shown(page);
}

/** Waits until the page has finished opening (ready or error) and reads what it shows. */
export async function shown(page: Page): Promise<Shown> {
  await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 60_000 });
  return page.evaluate(() => {
    const q = (s: string) => [...document.querySelectorAll<HTMLElement>(s)];
    return {
      checks: q('#checks tbody tr').map((tr) => ({
        status: tr.dataset.status ?? '',
        what: tr.dataset.what ?? '',
        member: tr.dataset.member ?? '',
        expected: tr.querySelector('.expected')?.textContent ?? '',
        actual: tr.querySelector('.actual')?.textContent ?? '',
      })),
      layers: q('#layers tbody tr').map((tr) => ({ digest: tr.dataset.digest ?? '', diffId: tr.dataset.diffId ?? '' })),
      configDigest: document.querySelector('[data-testid=config-digest]')?.textContent ?? '',
      manifestDigest: document.querySelector('[data-testid=manifest-digest]')?.textContent ?? '',
      status: document.getElementById('status')?.textContent ?? '',
      summary: document.getElementById('panel-summary')?.textContent ?? '',
    };
  });
}

/** Types into the search box and returns the tree rows shown (path → providing layer). */
export async function searchTree(page: Page, query: string): Promise<Record<string, number>> {
  await page.click('[data-tab=files]');
  await page.fill('#search', query);
  await page.waitForFunction((q) => document.getElementById('tree')?.dataset.query === q, query);
  return page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll<HTMLElement>('#tree .row')].map((r) => [r.dataset.path, Number(r.dataset.layer)]),
    ),
  );
}
