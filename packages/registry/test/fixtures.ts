// Images built by code (no checked-in binaries) and a fault-injecting loopback proxy.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { type LayerEntryInput, sha256, writeTar } from '@stevedore/core';
import {
  DOCKER_CONFIG,
  DOCKER_LAYER_GZIP,
  DOCKER_MANIFEST,
  type Image,
  type Layer,
  OCI_CONFIG,
  OCI_LAYER,
  OCI_LAYER_GZIP,
  OCI_MANIFEST,
  parseConfig,
  parseManifest,
} from '@stevedore/image';

const enc = new TextEncoder();

export function layerTar(files: Record<string, Uint8Array | string>, mode = 0o644): Uint8Array {
  return writeTar(
    Object.entries(files).map(([p, c]) => ({
      entry: { path: p, type: 'file', mode } as LayerEntryInput,
      data: typeof c === 'string' ? enc.encode(c) : c,
    })),
  );
}

/**
 * An in-memory OCI image: `tars` are uncompressed layer tars (base first). `docker`: Docker
 * schema 2 media types (gzip layers); `platform`: the config's `os/architecture` (default linux/amd64).
 */
export function memImage(
  tars: Uint8Array[],
  o: { gzip?: boolean; cmd?: string[]; docker?: boolean; platform?: string } = {},
): Image {
  const gzip = o.gzip || o.docker;
  const blobs = tars.map((t) => (gzip ? new Uint8Array(gzipSync(t)) : t));
  const [os, architecture] = (o.platform ?? 'linux/amd64').split('/');
  const layerType = o.docker ? DOCKER_LAYER_GZIP : gzip ? OCI_LAYER_GZIP : OCI_LAYER;
  const rawConfig = enc.encode(
    JSON.stringify({
      architecture,
      os,
      config: { Cmd: o.cmd ?? ['/bin/busybox', 'true'] },
      rootfs: { type: 'layers', diff_ids: tars.map((t) => sha256(t).toString()) },
      // docker's history (one entry per layer): what a registry needs to convert to schema 1
      ...(o.docker ? { history: tars.map((_, i) => ({ created_by: `layer ${i}` })) } : {}),
    }),
  );
  const rawManifest = enc.encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: o.docker ? DOCKER_MANIFEST : OCI_MANIFEST,
      config: {
        mediaType: o.docker ? DOCKER_CONFIG : OCI_CONFIG,
        digest: sha256(rawConfig).toString(),
        size: rawConfig.length,
      },
      layers: blobs.map((b) => ({ mediaType: layerType, digest: sha256(b).toString(), size: b.length })),
    }),
  );
  const manifest = parseManifest(rawManifest) as Image['manifest'];
  const layers: Layer[] = blobs.map((b, i) => ({
    digest: sha256(b),
    diffId: sha256(tars[i]!),
    size: b.length,
    mediaType: layerType,
    async *compressed() {
      yield b;
    },
    async *uncompressed() {
      yield tars[i]!;
    },
  }));
  return { digest: sha256(rawManifest), manifest, rawManifest, config: parseConfig(rawConfig), rawConfig, layers };
}

/** A runnable image: busybox plus a message file; `big` adds a layer of random bytes. */
export function busyboxImage(message: string, big = 0): Image {
  const tars = [
    layerTar({ 'bin/busybox': new Uint8Array(readFileSync('/bin/busybox')) }, 0o755),
    layerTar({ 'msg.txt': message }),
  ];
  if (big) tars.push(layerTar({ 'big.bin': new Uint8Array(randomBytes(big)) }));
  return memImage(tars, { gzip: true, cmd: ['/bin/busybox', 'cat', '/msg.txt'] });
}

export async function collect(s: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of s) parts.push(c);
  return new Uint8Array(Buffer.concat(parts));
}

export interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

export interface ForwardOptions {
  /** Close the connection after this many body bytes (a connection reset mid-body). */
  dropAfter?: number;
  /** Rewrites the upstream's response headers (delete `content-length` for a chunked response). */
  headers?: (h: http.IncomingHttpHeaders) => http.IncomingHttpHeaders;
}

/** A request handler override: return true when it answered the request itself. */
export type Fault = (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  forward: (mutate?: (c: Buffer, pos: number) => Buffer, opts?: ForwardOptions) => void,
) => boolean;

export interface FaultProxy {
  url: string;
  host: string;
  seen: Seen[];
  fault: Fault | undefined;
  close(): Promise<void>;
}

/** A loopback HTTP proxy in front of `upstream` (http://127.0.0.1:PORT) that can inject faults. */
export async function startProxy(
  upstream: string,
  bind = '127.0.0.1',
  extraHeaders: Record<string, string> = {},
): Promise<FaultProxy> {
  const up = new URL(upstream);
  const sockets = new Set<import('node:net').Socket>();
  const p: FaultProxy = { url: '', host: '', seen: [], fault: undefined, close: async () => {} };
  const server = http.createServer((req, res) => {
    p.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const forward = (mutate?: (c: Buffer, pos: number) => Buffer, opts: ForwardOptions = {}) => {
      const headers = { ...req.headers, ...extraHeaders, host: up.host };
      const preq = http.request(
        { host: up.hostname, port: up.port, method: req.method, path: req.url, headers },
        (pres) => {
          let h = { ...pres.headers };
          // rewrite absolute Locations of the registry to the proxy
          if (typeof h.location === 'string' && h.location.startsWith(up.origin))
            h.location = p.url + h.location.slice(up.origin.length);
          if (opts.headers) h = opts.headers(h);
          res.writeHead(pres.statusCode ?? 502, h);
          let pos = 0;
          pres.on('data', (c: Buffer) => {
            let out = mutate ? mutate(c, pos) : c;
            if (opts.dropAfter !== undefined && pos + out.length > opts.dropAfter) {
              out = out.subarray(0, Math.max(0, opts.dropAfter - pos));
              if (out.length) res.write(out);
              pos += out.length;
              pres.destroy();
              res.socket?.destroy();
              return;
            }
            pos += out.length;
            res.write(out);
          });
          pres.on('end', () => res.end());
        },
      );
      preq.on('error', () => res.destroy());
      req.pipe(preq);
    };
    if (p.fault?.(req, res, forward)) return;
    forward();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, bind, r));
  const port = (server.address() as AddressInfo).port;
  p.url = `http://${bind}:${port}`;
  p.host = `${bind}:${port}`;
  p.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return p;
}

export interface BlobStore {
  url: string;
  host: string;
  /** Blobs by digest (`sha256:…`), served at `/blobs/<digest>` (any query string, like a signed URL's). */
  blobs: Map<string, Uint8Array>;
  seen: Seen[];
  /** Advertise `Accept-Ranges: bytes` and answer a `Range` with 206 (default true). */
  ranges: boolean;
  fault: Fault | undefined;
  close(): Promise<void>;
}

/**
 * A second loopback origin serving blobs the way cloud storage answers a registry's redirect
 * (S3/GCS presigned URLs): no authentication of its own, `Content-Length`, optional ranges.
 */
export async function startBlobStore(bind = '127.0.0.1'): Promise<BlobStore> {
  const sockets = new Set<import('node:net').Socket>();
  const s: BlobStore = {
    url: '',
    host: '',
    blobs: new Map(),
    seen: [],
    ranges: true,
    fault: undefined,
    close: async () => {},
  };
  const server = http.createServer((req, res) => {
    s.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if (s.fault?.(req, res, () => res.destroy())) return;
    const u = new URL(req.url ?? '/', 'http://x');
    const m = /^\/blobs\/([a-z0-9]+:[a-f0-9]+)$/.exec(u.pathname);
    const blob = m ? s.blobs.get(m[1]!) : undefined;
    if (!blob || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'application/xml' });
      res.end('<Error><Code>NoSuchKey</Code></Error>');
      return;
    }
    const headers: Record<string, string> = { 'content-type': 'binary/octet-stream' };
    if (s.ranges) headers['accept-ranges'] = 'bytes';
    const r = s.ranges ? /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '') : null;
    let body = blob;
    let status = 200;
    if (r) {
      const start = Number(r[1]);
      const end = r[2] ? Math.min(Number(r[2]), blob.length - 1) : blob.length - 1;
      if (start > end) {
        res.writeHead(416, { 'content-range': `bytes */${blob.length}` });
        res.end();
        return;
      }
      body = blob.subarray(start, end + 1);
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${blob.length}`;
    }
    headers['content-length'] = String(body.length);
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  server.on('connection', (c) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
  });
  await new Promise<void>((r) => server.listen(0, bind, r));
  const port = (server.address() as AddressInfo).port;
  s.url = `http://${bind}:${port}`;
  s.host = `${bind}:${port}`;
  s.close = () =>
    new Promise<void>((r) => {
      for (const c of sockets) c.destroy();
      server.close(() => r());
    });
  return s;
}

/** Every blob of `image` (config and layers), by digest: the content a blob store serves. */
export async function blobsOf(image: Image): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>([[image.manifest.config.digest.toString(), image.rawConfig]]);
  for (const l of image.layers) out.set(l.digest.toString(), await collect(l.compressed()));
  return out;
}
