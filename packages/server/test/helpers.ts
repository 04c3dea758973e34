// Shared test helpers: start either implementation behind one handle, small HTTP helpers.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { bins, startRegistry } from '../../../test/harness/index.js';
import { type ServerOptions, startServer } from '../src/index.js';

export const hasReference = existsSync(bins.registry);
export const requireDocker = process.env.STEVEDORE_REQUIRE_DOCKER === '1';

export type Kind = 'stevedore' | 'reference';

export interface Target {
  kind: Kind;
  url: string;
  host: string;
  storageDir: string;
  stop(): Promise<void>;
}

const made: string[] = [];
// Registered when a test file first imports this module, so it runs after the file's own
// after-hooks (servers stopped first), then every dir tempDir made is removed.
afterAll(() => {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh temp dir, removed after the test file. */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(path.join(tmpdir(), `sd-server-${prefix}-`));
  made.push(d);
  return d;
}

/** Starts our server or the reference registry (storage delete enabled) on `storageDir`. */
export async function startTarget(
  kind: Kind,
  storageDir = tempDir('store'),
  extra: Partial<ServerOptions> = {},
): Promise<Target> {
  if (kind === 'stevedore') {
    const s = await startServer({ root: storageDir, ...extra });
    return { kind, url: s.url, host: s.host, storageDir, stop: () => s.close() };
  }
  const r = await startRegistry({ storageDir });
  return { kind, url: r.url, host: r.host, storageDir, stop: () => r.stop() };
}

export const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
export const rand = (n: number) => new Uint8Array(randomBytes(n));
export const enc = (v: unknown) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));

// biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted on, shape unknown
export type Json = any;

export async function req(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: Uint8Array | string } = {},
): Promise<{ status: number; headers: Headers; body: Uint8Array; json: () => Json }> {
  const res = await fetch(url, { method: init.method ?? 'GET', headers: init.headers, body: init.body as BodyInit });
  const body = new Uint8Array(await res.arrayBuffer());
  return {
    status: res.status,
    headers: res.headers,
    body,
    json: () => JSON.parse(Buffer.from(body).toString('utf8')),
  };
}

/** Monolithic upload of `data` to `name`; returns its digest. */
export async function pushBlobMono(base: string, name: string, data: Uint8Array): Promise<string> {
  const d = sha(data);
  const r = await req(`${base}/v2/${name}/blobs/uploads/?digest=${d}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: data,
  });
  if (r.status !== 201) throw new Error(`push blob: ${r.status} ${Buffer.from(r.body)}`);
  return d;
}

/** POST + PUT upload (the two-step flow every registry supports). */
export async function pushBlob(base: string, name: string, data: Uint8Array): Promise<string> {
  const d = sha(data);
  const start = await req(`${base}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`start upload: ${start.status}`);
  const loc = new URL(start.headers.get('location')!, base);
  loc.searchParams.set('digest', d);
  const r = await req(loc.toString(), {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream' },
    body: data,
  });
  if (r.status !== 201) throw new Error(`put blob: ${r.status} ${Buffer.from(r.body)}`);
  return d;
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar.gzip';

/** A config blob for a tiny image (valid for parseManifest's checks). */
export function configBlob(tag = 'x'): Uint8Array {
  return enc({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [] },
    config: { Labels: { t: tag } },
  });
}

export function ociManifest(config: Uint8Array, layers: Uint8Array[], extra: Record<string, unknown> = {}): Uint8Array {
  return enc({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: sha(config), size: config.length },
    layers: layers.map((l) => ({ mediaType: OCI_LAYER, digest: sha(l), size: l.length })),
    ...extra,
  });
}
