// Images built by code (no checked-in binaries) and a fault-injecting loopback proxy.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { type LayerEntryInput, sha256, writeTar } from '@stevedore/core';
import {
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

/** An in-memory OCI image: `tars` are uncompressed layer tars (base first). */
export function memImage(tars: Uint8Array[], o: { gzip?: boolean; cmd?: string[] } = {}): Image {
  const blobs = tars.map((t) => (o.gzip ? new Uint8Array(gzipSync(t)) : t));
  const rawConfig = enc.encode(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: o.cmd ?? ['/bin/busybox', 'true'] },
      rootfs: { type: 'layers', diff_ids: tars.map((t) => sha256(t).toString()) },
    }),
  );
  const rawManifest = enc.encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(rawConfig).toString(), size: rawConfig.length },
      layers: blobs.map((b) => ({
        mediaType: o.gzip ? OCI_LAYER_GZIP : OCI_LAYER,
        digest: sha256(b).toString(),
        size: b.length,
      })),
    }),
  );
  const manifest = parseManifest(rawManifest) as Image['manifest'];
  const layers: Layer[] = blobs.map((b, i) => ({
    digest: sha256(b),
    diffId: sha256(tars[i]!),
    size: b.length,
    mediaType: o.gzip ? OCI_LAYER_GZIP : OCI_LAYER,
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

/** A request handler override: return true when it answered the request itself. */
export type Fault = (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  forward: (mutate?: (c: Buffer, pos: number) => Buffer, opts?: { dropAfter?: number }) => void,
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
    const forward = (mutate?: (c: Buffer, pos: number) => Buffer, opts: { dropAfter?: number } = {}) => {
      const headers = { ...req.headers, ...extraHeaders, host: up.host };
      const preq = http.request(
        { host: up.hostname, port: up.port, method: req.method, path: req.url, headers },
        (pres) => {
          const h = { ...pres.headers };
          // rewrite absolute Locations of the registry to the proxy
          if (typeof h.location === 'string' && h.location.startsWith(up.origin))
            h.location = p.url + h.location.slice(up.origin.length);
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
