// Images built by code for the CLI tests (no checked-in binaries), and the CLI as a subprocess.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { type LayerEntryInput, sha256, writeTar } from '@stevedore/core';
import {
  copyImage,
  type Image,
  type Layer,
  OCI_CONFIG,
  OCI_LAYER_GZIP,
  OCI_MANIFEST,
  ociLayoutSink,
  parseConfig,
  parseManifest,
} from '@stevedore/image';

export const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'bin.js');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `stevedore ARGS` (async: the tests' registry lives in this process's event loop). */
export function stevedore(
  args: string[],
  opts: { input?: string | Buffer; env?: Record<string, string>; binary?: boolean } = {},
): Promise<Run & { raw: Buffer }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [bin, ...args], { env: { ...process.env, NO_COLOR: '1', ...opts.env } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => err.push(c));
    p.on('error', reject);
    p.on('close', (code) => {
      const raw = Buffer.concat(out);
      resolve({ code, raw, stdout: raw.toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    p.stdin.end(opts.input ?? '');
  });
}

export function stevedoreSync(args: string[]): Run {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, NO_COLOR: '1' }, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const enc = new TextEncoder();

function layerTar(files: Record<string, Uint8Array | string>, mode = 0o644): Uint8Array {
  return writeTar(
    Object.entries(files).map(([p, c]) => ({
      entry: { path: p, type: 'file', mode } as LayerEntryInput,
      data: typeof c === 'string' ? enc.encode(c) : c,
    })),
  );
}

/** A runnable gzip-layered OCI image: busybox, then a message file; with history and labels. */
export function busyboxImage(message: string): Image {
  const tars = [
    layerTar({ 'bin/busybox': new Uint8Array(readFileSync('/bin/busybox')) }, 0o755),
    layerTar({ 'msg.txt': message }),
  ];
  const blobs = tars.map((t) => new Uint8Array(gzipSync(t)));
  const rawConfig = enc.encode(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '2026-01-02T03:04:05Z',
      config: { Cmd: ['/bin/busybox', 'cat', '/msg.txt'], Env: ['PATH=/bin'], Labels: { 'org.example': 'cli' } },
      rootfs: { type: 'layers', diff_ids: tars.map((t) => sha256(t).toString()) },
      history: [
        { created: '2026-01-02T03:04:00Z', created_by: 'COPY busybox /bin/busybox' },
        { created: '2026-01-02T03:04:01Z', created_by: 'ENV PATH=/bin', empty_layer: true },
        { created: '2026-01-02T03:04:05Z', created_by: 'COPY msg.txt /msg.txt' },
      ],
    }),
  );
  const rawManifest = enc.encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(rawConfig).toString(), size: rawConfig.length },
      layers: blobs.map((b) => ({ mediaType: OCI_LAYER_GZIP, digest: sha256(b).toString(), size: b.length })),
    }),
  );
  const layers: Layer[] = blobs.map((b, i) => ({
    digest: sha256(b),
    diffId: sha256(tars[i]!),
    size: b.length,
    mediaType: OCI_LAYER_GZIP,
    async *compressed() {
      yield b;
    },
    async *uncompressed() {
      yield tars[i]!;
    },
  }));
  return {
    digest: sha256(rawManifest),
    manifest: parseManifest(rawManifest) as Image['manifest'],
    rawManifest,
    config: parseConfig(rawConfig),
    rawConfig,
    layers,
  };
}

/** Writes `image` into an OCI layout directory under `tag`. */
export async function writeLayout(dir: string, image: Image, tag: string): Promise<void> {
  await copyImage(image, ociLayoutSink(dir), { tags: [tag] });
}

/** The JSON schema `inspect --json` promises (checked with ajv). */
export const inspectSchema = {
  type: 'object',
  required: [
    'Name',
    'Digest',
    'Id',
    'RepoTags',
    'RepoDigests',
    'Created',
    'Architecture',
    'Os',
    'Config',
    'RootFS',
    'Layers',
    'LayersData',
    'MediaType',
    'Size',
  ],
  properties: {
    Name: { type: 'string', minLength: 1 },
    Digest: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' },
    Id: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' },
    RepoTags: { type: 'array', items: { type: 'string' } },
    RepoDigests: { type: 'array', items: { type: 'string', pattern: '@sha256:[0-9a-f]{64}$' } },
    Created: { type: ['string', 'null'] },
    Author: { type: ['string', 'null'] },
    Architecture: { type: 'string', minLength: 1 },
    Variant: { type: ['string', 'null'] },
    Os: { type: 'string', minLength: 1 },
    Labels: { type: 'object', additionalProperties: { type: 'string' } },
    Env: { type: 'array', items: { type: 'string' } },
    Config: { type: 'object' },
    RootFS: {
      type: 'object',
      required: ['Type', 'Layers'],
      properties: {
        Type: { const: 'layers' },
        Layers: { type: 'array', items: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' } },
      },
    },
    Layers: { type: 'array', items: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' } },
    LayersData: {
      type: 'array',
      items: {
        type: 'object',
        required: ['MIMEType', 'Digest', 'Size'],
        properties: { MIMEType: { type: 'string' }, Digest: { type: 'string' }, Size: { type: 'integer', minimum: 0 } },
      },
    },
    MediaType: { type: 'string' },
    Size: { type: 'integer', minimum: 0 },
  },
} as const;

/**
 * An OCI image from layers given as path → content maps (base first); `null` content is a
 * whiteout (the path is deleted). gzip layers; Cmd runs busybox cat of `cat` when given.
 */
export function layeredImage(
  specs: Record<string, Uint8Array | string | null>[],
  o: { cat?: string; history?: string[] } = {},
): Image {
  const tars = specs.map((files) =>
    writeTar(
      Object.entries(files).map(([p, c]) => {
        if (c === null) {
          const i = p.lastIndexOf('/');
          const wh = i < 0 ? `.wh.${p}` : `${p.slice(0, i)}/.wh.${p.slice(i + 1)}`;
          return { entry: { path: wh, type: 'file' } as LayerEntryInput };
        }
        return {
          entry: { path: p, type: 'file', mode: p === 'bin/busybox' ? 0o755 : 0o644 } as LayerEntryInput,
          data: typeof c === 'string' ? enc.encode(c) : c,
        };
      }),
    ),
  );
  const blobs = tars.map((t) => new Uint8Array(gzipSync(t)));
  const rawConfig = enc.encode(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '2026-01-02T03:04:05Z',
      config: { Cmd: o.cat ? ['/bin/busybox', 'cat', o.cat] : ['/bin/sh'], Env: ['PATH=/bin'] },
      rootfs: { type: 'layers', diff_ids: tars.map((t) => sha256(t).toString()) },
      history: tars.map((_, i) => ({ created: '2026-01-02T03:04:05Z', created_by: o.history?.[i] ?? `layer ${i}` })),
    }),
  );
  const rawManifest = enc.encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(rawConfig).toString(), size: rawConfig.length },
      layers: blobs.map((b) => ({ mediaType: OCI_LAYER_GZIP, digest: sha256(b).toString(), size: b.length })),
    }),
  );
  return {
    digest: sha256(rawManifest),
    manifest: parseManifest(rawManifest) as Image['manifest'],
    rawManifest,
    config: parseConfig(rawConfig),
    rawConfig,
    layers: blobs.map((b, i) => ({
      digest: sha256(b),
      diffId: sha256(tars[i]!),
      size: b.length,
      mediaType: OCI_LAYER_GZIP,
      async *compressed() {
        yield b;
      },
      async *uncompressed() {
        yield tars[i]!;
      },
    })),
  };
}

export const busyboxBytes = () => new Uint8Array(readFileSync('/bin/busybox'));
