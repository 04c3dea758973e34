/**
 * The registry server: OCI distribution-spec v1.1 and Docker registry v2 behaviour on node:http,
 * over `Storage` (the reference registry's on-disk layout).
 *
 * Contracts:
 * - a blob becomes visible (under its digest, linked into the repository) only after its size
 *   and digest were verified; blobs are streamed, never buffered (flat memory);
 * - manifests are capped (4 MiB by default), validated with `@stevedore/image`'s `parseManifest`
 *   (which checks the Content-Type against the document), and every blob they reference (config,
 *   layers without `urls`; an index's child manifests) must exist in the repository;
 * - the stored media type of a manifest is the one in the document (the reference registry
 *   derives it the same way), so directories written by either server read the same;
 * - errors are `{"errors":[{"code","message","detail"}]}` with the spec's codes and statuses.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import {
  isImageIndex,
  isValidPathComponent,
  isValidTag,
  NAME_TOTAL_LENGTH_MAX,
  OCI_INDEX,
  parseManifest,
} from '@stevedore/image';
import { type Htpasswd, loadHtpasswd } from './htpasswd.js';
import { DEFAULT_UPLOAD_MAX_AGE_MS, purgeUploads } from './purge.js';
import { type StaticSite, staticSite } from './static.js';
import { type DigestParts, digestString, isUploadId, parseDigest, Storage, StorageError } from './storage.js';
import { type Access, TokenAuth, type TokenAuthOptions } from './token.js';

export interface ServerOptions {
  /** Storage root: the directory holding `docker/registry/v2` (the reference registry's `rootdirectory`). */
  root: string;
  /** `host:port` to listen on. Default `127.0.0.1:0` (a free port). */
  addr?: string;
  /** Serve HTTPS with these PEM files (or PEM contents). */
  tls?: { cert: string; key: string };
  /** Require HTTP basic auth against an htpasswd file (bcrypt `$2y$`/`$2b$`/`$2a$` hashes, as `htpasswd -B` writes). */
  htpasswd?: string;
  /** Realm in the `WWW-Authenticate` challenge. Default `stevedore`. */
  realm?: string;
  /** Require bearer tokens (the distribution token spec), like the reference registry's `auth.token`. Not with `htpasswd`. */
  token?: TokenAuthOptions;
  /**
   * Remove upload sessions older than `maxAgeMs` (default one week) at start and every
   * `intervalMs` (default 24 h), as distribution's `uploadpurging`; `false` turns it off. Off in read-only mode.
   */
  uploadPurging?: false | { maxAgeMs?: number; intervalMs?: number; dryRun?: boolean };
  /** Most referrers in one response; more pages are linked with `Link: <…>; rel="next"`. Default 1000. */
  referrersPageSize?: number;
  /** Serve this directory's files (e.g. the web inspector's `dist`) for every path outside `/v2/`. */
  staticDir?: string;
  /** Refuse every write (405 UNSUPPORTED). */
  readOnly?: boolean;
  /** Allow manifest/blob deletes (the reference registry's `storage.delete.enabled`). Default true. */
  deleteEnabled?: boolean;
  /** CORS: the `Access-Control-Allow-Origin` value (e.g. `*` or `https://ui.example`); off when unset. */
  corsOrigin?: string;
  /** One line per request. `true` logs to stderr. */
  log?: boolean | ((line: string) => void);
  /** Manifest size cap in bytes. Default 4 MiB. */
  maxManifestBytes?: number;
  /** fsync blob data before it becomes visible. Default true. */
  fsync?: boolean;
  /** How long close() waits for in-flight requests before dropping connections. Default 10 s. */
  closeTimeoutMs?: number;
}

export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:5000` (no trailing slash). */
  url: string;
  /** `host:port`, as used in image references. */
  host: string;
  port: number;
  storage: Storage;
  /** Stops accepting connections, lets in-flight requests finish (up to closeTimeoutMs), closes. Idempotent. */
  close(): Promise<void>;
}

const API_VERSION = 'registry/2.0';
const EXPOSED =
  'Docker-Content-Digest, Docker-Upload-UUID, Docker-Distribution-API-Version, Link, Location, Range, Content-Range, OCI-Subject, OCI-Filters-Applied, WWW-Authenticate';

type Code =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'TAG_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'RANGE_INVALID';

const MESSAGES: Record<Code, string> = {
  BLOB_UNKNOWN: 'blob unknown to registry',
  BLOB_UPLOAD_INVALID: 'blob upload invalid',
  BLOB_UPLOAD_UNKNOWN: 'blob upload unknown to registry',
  DIGEST_INVALID: 'provided digest did not match uploaded content',
  MANIFEST_BLOB_UNKNOWN: 'blob unknown to registry',
  MANIFEST_INVALID: 'manifest invalid',
  MANIFEST_UNKNOWN: 'manifest unknown',
  NAME_INVALID: 'invalid repository name',
  NAME_UNKNOWN: 'repository name not known to registry',
  SIZE_INVALID: 'provided length did not match content length',
  TAG_INVALID: 'manifest tag did not match URI',
  UNAUTHORIZED: 'authentication required',
  DENIED: 'requested access to the resource is denied',
  UNSUPPORTED: 'The operation is unsupported.',
  RANGE_INVALID: 'invalid content range',
};

/** A spec error: status + code (+ detail). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: Code,
    readonly detail?: unknown,
    message?: string,
  ) {
    super(message ?? MESSAGES[code]);
  }
}

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  method: string;
  user: string;
}

/** Starts a registry server; resolves once it listens. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  if (options.htpasswd && options.token) throw new Error('htpasswd and token auth exclude each other: choose one');
  const storage = new Storage(options.root, { fsync: options.fsync });
  const app = new App(storage, options, {
    basic: options.htpasswd ? loadHtpasswd(options.htpasswd) : undefined,
    token: options.token ? new TokenAuth(options.token) : undefined,
    site: options.staticDir ? staticSite(options.staticDir) : undefined,
  });
  const stopPurging = await startUploadPurging(storage, options);
  const handler = (req: IncomingMessage, res: ServerResponse) => void app.handle(req, res);
  const server = options.tls
    ? https.createServer({ cert: pem(options.tls.cert), key: pem(options.tls.key) }, handler)
    : http.createServer(handler);
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0; // big blob uploads
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const [host, portText] = splitAddr(options.addr ?? '127.0.0.1:0');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(portText), host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const hostPort = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  let closing: Promise<void> | undefined;
  return {
    url: `${options.tls ? 'https' : 'http'}://${hostPort}`,
    host: hostPort,
    port,
    storage,
    close() {
      closing ??= (async () => {
        const done = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        const timeout = options.closeTimeoutMs ?? 10_000;
        const t = setTimeout(() => server.closeAllConnections(), timeout);
        // idle keep-alive sockets that become idle after their last response
        const tick = setInterval(() => server.closeIdleConnections(), 50);
        await done;
        stopPurging();
        clearTimeout(t);
        clearInterval(tick);
        for (const s of sockets) s.destroy();
      })();
      return closing;
    },
  };
}

/** The first purge runs before the server listens; later ones on a timer. Returns the stopper. */
async function startUploadPurging(storage: Storage, o: ServerOptions): Promise<() => void> {
  if (o.uploadPurging === false || o.readOnly) return () => {};
  const c = o.uploadPurging ?? {};
  const log = o.log === true ? (l: string) => process.stderr.write(`${l}\n`) : o.log || undefined;
  const purge = () =>
    purgeUploads(storage, { maxAgeMs: c.maxAgeMs ?? DEFAULT_UPLOAD_MAX_AGE_MS, dryRun: c.dryRun, log }).catch((e) =>
      log?.(`upload purge failed: ${(e as Error).message}`),
    );
  await purge();
  const timer = setInterval(purge, Math.min(c.intervalMs ?? 24 * 3600_000, 2 ** 31 - 1));
  timer.unref();
  return () => clearInterval(timer);
}

function pem(v: string): string {
  return v.includes('-----BEGIN') ? v : readFileSync(v, 'utf8');
}

function splitAddr(addr: string): [string, string] {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(addr);
  if (!m) throw new Error(`bad addr ${addr}: want host:port`);
  return [m[1] || '127.0.0.1', m[2]!];
}

/** True for a valid repository name (path components joined by `/`, at most 255 characters). */
export function isValidRepositoryName(name: string): boolean {
  return name.length > 0 && name.length <= NAME_TOTAL_LENGTH_MAX && name.split('/').every(isValidPathComponent);
}

const ROUTES: [RegExp, string][] = [
  [/^\/v2\/?$/, 'base'],
  [/^\/v2\/_catalog$/, 'catalog'],
  [/^\/v2\/(.+)\/tags\/list$/, 'tags'],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, 'manifest'],
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, 'uploads'],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, 'upload'],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, 'blob'],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, 'referrers'],
];

interface Route {
  kind: string;
  /** The repository name (decoded), for every route but `base` and `catalog`. */
  name?: string;
  /** The second path parameter (reference, digest or upload id), decoded. */
  arg?: string;
}

function matchRoute(pathname: string): Route | undefined {
  for (const [re, kind] of ROUTES) {
    const m = re.exec(pathname);
    if (!m) continue;
    try {
      return {
        kind,
        name: m[1] === undefined ? undefined : decodeURIComponent(m[1]),
        arg: m[2] === undefined ? undefined : decodeURIComponent(m[2]),
      };
    } catch {
      throw new ApiError(400, 'NAME_INVALID', { path: pathname });
    }
  }
  return undefined;
}

/** What a request needs under token auth (distribution's `appendAccessRecords`). */
function accessFor(route: Route, method: string, url: URL): Access[] {
  if (route.kind === 'catalog') return [{ type: 'registry', name: 'catalog', action: '*' }];
  if (route.name === undefined) return [];
  const repo = (name: string, m: string): Access[] => {
    const a = (action: string) => ({ type: 'repository', name, action });
    if (m === 'GET' || m === 'HEAD') return [a('pull')];
    if (m === 'POST' || m === 'PUT' || m === 'PATCH') return [a('pull'), a('push')];
    if (m === 'DELETE') return [a('delete')];
    return [];
  };
  const out = repo(route.name, method);
  const from = url.searchParams.get('from');
  if (from) out.push(...repo(from, 'GET')); // a cross-repository mount reads the source
  return out;
}

const WRITES = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

interface Guards {
  basic?: Htpasswd;
  token?: TokenAuth;
  site?: StaticSite;
}

class App {
  private readonly maxManifest: number;
  private readonly log: ((line: string) => void) | undefined;

  constructor(
    private readonly s: Storage,
    private readonly o: ServerOptions,
    private readonly g: Guards,
  ) {
    this.maxManifest = o.maxManifestBytes ?? 4 * 1024 * 1024;
    this.log = o.log === true ? (l) => process.stderr.write(`${l}\n`) : o.log || undefined;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const method = req.method ?? 'GET';
    let user = '-';
    res.setHeader('Docker-Distribution-API-Version', API_VERSION);
    if (this.o.corsOrigin) {
      res.setHeader('Access-Control-Allow-Origin', this.o.corsOrigin);
      res.setHeader('Access-Control-Expose-Headers', EXPOSED);
      if (this.o.corsOrigin !== '*') res.setHeader('Vary', 'Origin');
    }
    res.on('finish', () => {
      if (!this.log) return;
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const len = res.getHeader('content-length') ?? '-';
      this.log(
        `${req.socket.remoteAddress ?? '-'} ${user} "${method} ${req.url} HTTP/${req.httpVersion}" ${res.statusCode} ${len} ${ms.toFixed(1)}ms`,
      );
    });
    try {
      const url = new URL(req.url ?? '/', 'http://registry');
      if (method === 'OPTIONS' && this.o.corsOrigin) return this.preflight(req, res);
      // the UI is public: it holds no registry data and asks for credentials itself
      if (this.g.site && url.pathname !== '/v2' && !url.pathname.startsWith('/v2/')) {
        return await this.g.site.serve(req, res, url.pathname);
      }
      const route = matchRoute(url.pathname);
      if (this.g.basic) {
        const u = await this.authenticate(req);
        if (!u) {
          res.setHeader('WWW-Authenticate', `Basic realm="${this.o.realm ?? 'stevedore'}"`);
          throw new ApiError(401, 'UNAUTHORIZED');
        }
        user = u;
      }
      if (this.g.token && route) {
        const wanted = accessFor(route, method, url);
        const d = this.g.token.authorize(req.headers.authorization, wanted);
        if (!d.ok) {
          res.setHeader('WWW-Authenticate', d.challenge);
          if (d.error) this.log?.(`token refused: ${d.reason}`);
          // the detail as distribution sends it: the access records the request needed
          const detail = wanted.length
            ? wanted.map((a) => ({ Type: a.type, Class: '', Name: a.name, Action: a.action }))
            : null;
          throw new ApiError(401, 'UNAUTHORIZED', detail);
        }
        user = d.subject || '-';
      }
      await this.route({ req, res, url, method, user }, route);
    } catch (e) {
      this.fail(req, res, e);
    }
  }

  private preflight(req: IncomingMessage, res: ServerResponse): void {
    res.statusCode = 204;
    res.setHeader('Access-Control-Allow-Methods', 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
    res.setHeader(
      'Access-Control-Allow-Headers',
      req.headers['access-control-request-headers'] ??
        'Authorization, Accept, Content-Type, Content-Length, Content-Range, Range, Docker-Content-Digest',
    );
    res.setHeader('Access-Control-Max-Age', '600');
    res.setHeader('Content-Length', '0');
    res.end();
  }

  private async authenticate(req: IncomingMessage): Promise<string | undefined> {
    const h = req.headers.authorization;
    const m = h ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h) : null;
    if (!m) return undefined;
    const text = Buffer.from(m[1]!, 'base64').toString('utf8');
    const i = text.indexOf(':');
    if (i < 0) return undefined;
    const user = text.slice(0, i);
    return (await this.g.basic!.verify(user, text.slice(i + 1))) ? user : undefined;
  }

  private fail(req: IncomingMessage, res: ServerResponse, e: unknown): void {
    // drain whatever the client still sends so the connection stays usable
    if (!req.complete) req.resume();
    let err: ApiError;
    if (e instanceof ApiError) err = e;
    else if (e instanceof StorageError) err = new ApiError(400, e.code, undefined, e.message);
    else {
      this.log?.(`error: ${(e as Error)?.stack ?? e}`);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const body = JSON.stringify({ errors: [{ code: 'UNKNOWN', message: 'unknown error', detail: null }] });
      res.statusCode = 500;
      res.setHeader('Content-Type', 'application/json; charset=utf-8');
      res.setHeader('Content-Length', Buffer.byteLength(body));
      res.end(body);
      return;
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = JSON.stringify({ errors: [{ code: err.code, message: err.message, detail: err.detail ?? null }] });
    res.statusCode = err.status;
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private async route(c: Ctx, r: Route | undefined): Promise<void> {
    if (r) {
      const { kind, arg } = r;
      if (kind === 'base') return this.base(c);
      if (kind === 'catalog') return this.only(c, ['GET', 'HEAD'], () => this.catalog(c));
      const name = r.name!;
      if (!isValidRepositoryName(name)) throw new ApiError(400, 'NAME_INVALID', { name });
      if (WRITES.has(c.method) && this.o.readOnly) throw new ApiError(405, 'UNSUPPORTED', { reason: 'read-only' });
      if (c.method === 'DELETE' && this.o.deleteEnabled === false) throw new ApiError(405, 'UNSUPPORTED');
      switch (kind) {
        case 'tags':
          return this.only(c, ['GET', 'HEAD'], () => this.tags(c, name));
        case 'manifest':
          return this.manifest(c, name, arg!);
        case 'uploads':
          return this.only(c, ['POST'], () => this.startUpload(c, name));
        case 'upload':
          return this.upload(c, name, arg!);
        case 'blob':
          return this.blob(c, name, arg!);
        case 'referrers':
          return this.only(c, ['GET', 'HEAD'], () => this.referrers(c, name, arg!));
      }
    }
    c.req.resume();
    const body = '404 page not found\n';
    c.res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': body.length });
    c.res.end(body);
  }

  private only(c: Ctx, methods: string[], fn: () => Promise<void> | void): Promise<void> | void {
    if (!methods.includes(c.method)) {
      c.res.setHeader('Allow', methods.join(', '));
      throw new ApiError(405, 'UNSUPPORTED');
    }
    return fn();
  }

  private send(c: Ctx, status: number, headers: Record<string, string | number>, body?: string | Uint8Array): void {
    c.req.resume();
    c.res.statusCode = status;
    for (const [k, v] of Object.entries(headers)) c.res.setHeader(k, v);
    if (body === undefined) {
      if (!('Content-Length' in headers)) c.res.setHeader('Content-Length', 0);
      c.res.end();
      return;
    }
    c.res.setHeader('Content-Length', typeof body === 'string' ? Buffer.byteLength(body) : body.length);
    c.res.end(c.method === 'HEAD' ? undefined : body);
  }

  private json(c: Ctx, status: number, value: unknown, headers: Record<string, string> = {}): void {
    this.send(c, status, { 'Content-Type': 'application/json; charset=utf-8', ...headers }, JSON.stringify(value));
  }

  private digest(text: string, code: Code = 'DIGEST_INVALID', status = 400): DigestParts {
    const d = parseDigest(text);
    if (!d) throw new ApiError(status, code, { digest: text });
    return d;
  }

  // --- /v2/ and catalog ----------------------------------------------------------------------

  private base(c: Ctx): void {
    this.send(c, 200, { 'Content-Type': 'application/json; charset=utf-8' }, '{}');
  }

  /** `n` and `last` pagination with a `Link: <…>; rel="next"` header when more may follow. */
  private page(c: Ctx, all: string[], path: string): { items: string[]; link?: string } {
    const nText = c.url.searchParams.get('n');
    const last = c.url.searchParams.get('last') ?? undefined;
    let items = last !== undefined ? all.filter((x) => x > last) : all;
    if (nText === null || nText === '') return { items };
    const n = Number(nText);
    if (!Number.isInteger(n) || n < 0) throw new ApiError(400, 'UNSUPPORTED', { n: nText }, 'invalid n');
    const more = items.length > n;
    items = items.slice(0, n);
    if (!more || items.length === 0) return { items };
    const q = new URLSearchParams({ last: items[items.length - 1]!, n: String(n) });
    return { items, link: `<${path}?${q}>; rel="next"` };
  }

  private async catalog(c: Ctx): Promise<void> {
    const all = await this.s.repositories();
    const { items, link } = this.page(c, all, '/v2/_catalog');
    this.json(c, 200, { repositories: items }, link ? { Link: link } : {});
  }

  private async tags(c: Ctx, name: string): Promise<void> {
    const all = await this.s.tags(name);
    if (!all) throw new ApiError(404, 'NAME_UNKNOWN', { name });
    const { items, link } = this.page(c, all, `/v2/${name}/tags/list`);
    this.json(c, 200, { name, tags: items }, link ? { Link: link } : {});
  }

  // --- manifests -----------------------------------------------------------------------------

  private async resolve(name: string, reference: string): Promise<{ d: DigestParts; tag?: string }> {
    if (reference.includes(':')) return { d: this.digest(reference, 'DIGEST_INVALID') };
    if (!isValidTag(reference)) throw new ApiError(400, 'TAG_INVALID', { tag: reference });
    const d = await this.s.resolveTag(name, reference);
    if (!d) throw new ApiError(404, 'MANIFEST_UNKNOWN', { tag: reference });
    return { d, tag: reference };
  }

  private async manifest(c: Ctx, name: string, reference: string): Promise<void> {
    switch (c.method) {
      case 'GET':
      case 'HEAD': {
        const { d } = await this.resolve(name, reference);
        const raw = await this.s.getManifest(name, d);
        if (!raw) throw new ApiError(404, 'MANIFEST_UNKNOWN', { digest: digestString(d) });
        return this.send(
          c,
          200,
          { 'Content-Type': mediaTypeOf(raw), 'Docker-Content-Digest': digestString(d), ETag: `"${digestString(d)}"` },
          raw,
        );
      }
      case 'PUT':
        return this.putManifest(c, name, reference);
      case 'DELETE': {
        if (!reference.includes(':')) {
          if (!isValidTag(reference)) throw new ApiError(400, 'TAG_INVALID', { tag: reference });
          if (!(await this.s.untag(name, reference))) throw new ApiError(404, 'MANIFEST_UNKNOWN', { tag: reference });
          return this.send(c, 202, {});
        }
        const d = this.digest(reference);
        if (!(await this.s.deleteManifest(name, d))) {
          throw new ApiError(404, 'MANIFEST_UNKNOWN', { digest: reference });
        }
        return this.send(c, 202, {});
      }
      default:
        c.res.setHeader('Allow', 'GET, HEAD, PUT, DELETE');
        throw new ApiError(405, 'UNSUPPORTED');
    }
  }

  private async putManifest(c: Ctx, name: string, reference: string): Promise<void> {
    let tag: string | undefined;
    let want: DigestParts | undefined;
    if (reference.includes(':')) want = this.digest(reference);
    else if (isValidTag(reference)) tag = reference;
    else throw new ApiError(400, 'TAG_INVALID', { tag: reference });

    const declared = Number(c.req.headers['content-length'] ?? Number.NaN);
    if (declared > this.maxManifest) throw new ApiError(413, 'SIZE_INVALID', { limit: this.maxManifest });
    const raw = await readCapped(c.req, this.maxManifest);
    if (!raw) throw new ApiError(413, 'SIZE_INVALID', { limit: this.maxManifest });
    const contentType = c.req.headers['content-type'];
    let manifest: ReturnType<typeof parseManifest>;
    try {
      manifest = parseManifest(raw, contentType, { maxBytes: this.maxManifest });
    } catch (e) {
      throw new ApiError(400, 'MANIFEST_INVALID', { reason: (e as Error).message });
    }
    const alg = want?.algorithm ?? 'sha256';
    const d: DigestParts = { algorithm: alg, hex: createHash(alg).update(raw).digest('hex') };
    if (want && want.hex !== d.hex)
      throw new ApiError(400, 'DIGEST_INVALID', { expected: reference, got: digestString(d) });

    const missing: string[] = [];
    if (isImageIndex(manifest)) {
      for (const m of manifest.manifests) {
        const md = parseDigest(m.digest.toString());
        if (!md || !(await this.s.hasManifest(name, md))) missing.push(m.digest.toString());
      }
    } else {
      for (const b of [manifest.config, ...manifest.layers]) {
        if (b.urls && b.urls.length > 0) continue; // foreign layers are not in the registry
        const bd = parseDigest(b.digest.toString());
        if (!bd) throw new ApiError(400, 'DIGEST_INVALID', { digest: b.digest.toString() });
        const size = await this.s.repoBlobSize(name, bd);
        if (size === undefined) missing.push(b.digest.toString());
      }
    }
    if (missing.length > 0) throw new ApiError(400, 'MANIFEST_BLOB_UNKNOWN', { digests: missing });

    await this.s.putManifest(name, d, raw, tag);
    const headers: Record<string, string> = {
      Location: `/v2/${name}/manifests/${digestString(d)}`,
      'Docker-Content-Digest': digestString(d),
    };
    if (manifest.subject) headers['OCI-Subject'] = manifest.subject.digest.toString();
    this.send(c, 201, headers);
  }

  private async referrers(c: Ctx, name: string, ref: string): Promise<void> {
    const subject = this.digest(ref, 'DIGEST_INVALID');
    const filter = c.url.searchParams.get('artifactType') ?? undefined;
    const manifests: Record<string, unknown>[] = [];
    for (const d of await this.s.revisions(name)) {
      const raw = await this.s.getManifest(name, d);
      if (!raw) continue;
      let doc: Record<string, unknown>;
      try {
        doc = JSON.parse(Buffer.from(raw).toString('utf8'));
      } catch {
        continue;
      }
      const sub = doc.subject as { digest?: unknown } | undefined;
      if (!sub || sub.digest !== digestString(subject)) continue;
      const config = doc.config as { mediaType?: unknown } | undefined;
      const artifactType =
        typeof doc.artifactType === 'string'
          ? doc.artifactType
          : typeof config?.mediaType === 'string'
            ? config.mediaType
            : undefined;
      if (filter !== undefined && artifactType !== filter) continue;
      const desc: Record<string, unknown> = { mediaType: mediaTypeOf(raw), digest: digestString(d), size: raw.length };
      if (artifactType !== undefined) desc.artifactType = artifactType;
      if (doc.annotations && typeof doc.annotations === 'object') desc.annotations = doc.annotations;
      manifests.push(desc);
    }
    manifests.sort((a, b) => (String(a.digest) < String(b.digest) ? -1 : 1)); // code-point order, as `last` compares
    const headers: Record<string, string> = { 'Content-Type': OCI_INDEX };
    if (filter !== undefined) headers['OCI-Filters-Applied'] = 'artifactType';
    // Pages in digest order; the spec leaves the cursor to the registry, clients follow `Link`.
    const max = this.o.referrersPageSize ?? 1000;
    const nText = c.url.searchParams.get('n');
    const n = nText === null || nText === '' ? max : Number(nText);
    if (!Number.isInteger(n) || n < 1) throw new ApiError(400, 'UNSUPPORTED', { n: nText }, 'invalid n');
    const size = Math.min(n, max);
    const last = c.url.searchParams.get('last');
    const rest = last === null ? manifests : manifests.filter((m) => String(m.digest) > last);
    const page = rest.slice(0, size);
    if (rest.length > size) {
      const q = new URLSearchParams({ last: String(page[page.length - 1]!.digest), n: String(size) });
      if (filter !== undefined) q.set('artifactType', filter);
      headers.Link = `</v2/${name}/referrers/${digestString(subject)}?${q}>; rel="next"`;
    }
    this.send(c, 200, headers, JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: page }));
  }

  // --- blobs ---------------------------------------------------------------------------------

  private async blob(c: Ctx, name: string, ref: string): Promise<void> {
    const d = this.digest(ref);
    if (c.method === 'DELETE') {
      if (!(await this.s.unlinkBlob(name, d))) throw new ApiError(404, 'BLOB_UNKNOWN', { digest: ref });
      return this.send(c, 202, { 'Docker-Content-Digest': ref });
    }
    if (c.method !== 'GET' && c.method !== 'HEAD') {
      c.res.setHeader('Allow', 'GET, HEAD, DELETE');
      throw new ApiError(405, 'UNSUPPORTED');
    }
    const size = await this.s.repoBlobSize(name, d);
    if (size === undefined) throw new ApiError(404, 'BLOB_UNKNOWN', { digest: ref });
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Docker-Content-Digest': ref,
      'Accept-Ranges': 'bytes',
      ETag: `"${ref}"`,
      'Cache-Control': 'max-age=31536000',
    };
    let range: { start: number; end: number } | undefined;
    const rh = c.req.headers.range;
    if (rh && c.method === 'GET') {
      range = parseRange(rh, size);
      if (!range) {
        c.res.setHeader('Content-Range', `bytes */${size}`);
        throw new ApiError(416, 'RANGE_INVALID', { range: rh });
      }
    }
    c.req.resume();
    if (range) {
      c.res.writeHead(206, {
        ...headers,
        'Content-Range': `bytes ${range.start}-${range.end}/${size}`,
        'Content-Length': range.end - range.start + 1,
      });
    } else {
      c.res.writeHead(200, { ...headers, 'Content-Length': size });
    }
    if (c.method === 'HEAD' || size === 0) {
      c.res.end();
      return;
    }
    await pipeTo(this.s.openBlob(d, range), c.res);
  }

  private uploadHeaders(name: string, id: string, size: number): Record<string, string> {
    return {
      Location: `/v2/${name}/blobs/uploads/${id}`,
      'Docker-Upload-UUID': id,
      Range: `0-${Math.max(size - 1, 0)}`,
    };
  }

  private async startUpload(c: Ctx, name: string): Promise<void> {
    const q = c.url.searchParams;
    const mount = q.get('mount');
    const from = q.get('from');
    if (mount !== null) {
      const d = this.digest(mount);
      if (from !== null && isValidRepositoryName(from) && (await this.s.repoBlobSize(from, d)) !== undefined) {
        await this.s.linkBlob(name, d);
        return this.send(c, 201, { Location: `/v2/${name}/blobs/${mount}`, 'Docker-Content-Digest': mount });
      }
      // not mountable: fall through to a new session (spec: 202)
    }
    const digestText = q.get('digest');
    if (digestText !== null && mount === null) {
      const d = this.digest(digestText);
      const size = contentLength(c.req);
      await this.s.putBlob(name, c.req, d, size);
      return this.send(c, 201, { Location: `/v2/${name}/blobs/${digestText}`, 'Docker-Content-Digest': digestText });
    }
    const id = await this.s.startUpload(name);
    this.send(c, 202, this.uploadHeaders(name, id, 0));
  }

  private async upload(c: Ctx, name: string, id: string): Promise<void> {
    if (!isUploadId(id)) throw new ApiError(404, 'BLOB_UPLOAD_UNKNOWN', { id });
    const known = async () => {
      const size = await this.s.uploadSize(name, id);
      if (size === undefined) throw new ApiError(404, 'BLOB_UPLOAD_UNKNOWN', { id });
      return size;
    };
    switch (c.method) {
      case 'GET':
      case 'HEAD': {
        const size = await known();
        return this.send(c, 204, this.uploadHeaders(name, id, size));
      }
      case 'DELETE':
        return this.s.withUpload(name, id, async () => {
          await known();
          await this.s.cancelUpload(name, id);
          this.send(c, 204, {});
        });
      case 'PATCH':
        return this.s.withUpload(name, id, async () => {
          const size = await known();
          this.checkContentRange(c, size);
          const next = await this.s.appendUpload(name, id, size, c.req);
          this.send(c, 202, this.uploadHeaders(name, id, next));
        });
      case 'PUT':
        return this.s.withUpload(name, id, async () => {
          const size = await known();
          const digestText = c.url.searchParams.get('digest');
          if (digestText === null) throw new ApiError(400, 'DIGEST_INVALID', { reason: 'digest parameter missing' });
          const d = this.digest(digestText);
          const hasBody =
            contentLength(c.req) !== 0 && (c.req.headers['content-length'] || c.req.headers['transfer-encoding']);
          if (hasBody) {
            this.checkContentRange(c, size);
            await this.s.appendUpload(name, id, size, c.req);
          }
          await this.s.finishUpload(name, id, d);
          this.send(c, 201, { Location: `/v2/${name}/blobs/${digestText}`, 'Docker-Content-Digest': digestText });
        });
      default:
        c.res.setHeader('Allow', 'GET, HEAD, PATCH, PUT, DELETE');
        throw new ApiError(405, 'UNSUPPORTED');
    }
  }

  /** A chunk's `Content-Range: <start>-<end>` must start at the current size and match its length: 416 otherwise. */
  private checkContentRange(c: Ctx, size: number): void {
    const cr = c.req.headers['content-range'];
    if (cr === undefined) return;
    const m = /^(?:bytes )?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(cr.trim());
    const len = contentLength(c.req);
    const bad = () => {
      c.res.setHeader('Range', `0-${Math.max(size - 1, 0)}`);
      c.res.setHeader('Location', `/v2/${c.url.pathname.split('/v2/')[1]}`);
      return new ApiError(416, 'BLOB_UPLOAD_INVALID', { contentRange: cr, size });
    };
    if (!m) throw bad();
    const start = Number(m[1]);
    const end = Number(m[2]);
    if (start !== size || end < start) throw bad();
    if (len !== undefined && len !== end - start + 1) throw bad();
  }
}

function contentLength(req: IncomingMessage): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range) → closed range within `size`; undefined when unsatisfiable. */
function parseRange(h: string, size: number): { start: number; end: number } | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return undefined;
    start = Math.max(size - n, 0);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || end < start) return undefined;
  return { start, end };
}

/** Reads a body of at most `max` bytes; undefined when it is larger. */
async function readCapped(req: IncomingMessage, max: number): Promise<Uint8Array | undefined> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of req) {
    n += (chunk as Buffer).length;
    if (n > max) {
      req.resume();
      return undefined;
    }
    parts.push(chunk as Buffer);
  }
  return new Uint8Array(Buffer.concat(parts));
}

function pipeTo(src: NodeJS.ReadableStream & { destroy(e?: Error): void }, res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    src.on('error', () => {
      res.destroy();
      resolve();
    });
    res.on('close', () => {
      src.destroy();
      resolve();
    });
    src.pipe(res);
  });
}

/** The media type of stored manifest bytes: the document's `mediaType`, else what its shape says (as distribution). */
export function mediaTypeOf(raw: Uint8Array): string {
  try {
    const doc = JSON.parse(Buffer.from(raw).toString('utf8')) as Record<string, unknown>;
    if (typeof doc.mediaType === 'string' && doc.mediaType) return doc.mediaType;
    if (doc.schemaVersion === 1) {
      return 'signatures' in doc
        ? 'application/vnd.docker.distribution.manifest.v1+prettyjws'
        : 'application/vnd.docker.distribution.manifest.v1+json';
    }
    if (Array.isArray(doc.manifests)) return OCI_INDEX;
    return 'application/vnd.oci.image.manifest.v1+json';
  } catch {
    return 'application/octet-stream';
  }
}
