/**
 * The HTTP layer: endpoint resolution (HTTPS, plain HTTP only for insecure and loopback
 * registries, as docker), TLS with per-registry CAs from a certs.d directory, authentication
 * (Basic and Bearer tokens cached per scope), redirects that never carry credentials to another
 * host, retries with backoff and jitter, per-registry concurrency limits (one for downloads, one for
 * uploads), proxies from HTTPS_PROXY/HTTP_PROXY/NO_PROXY as docker reads them.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootCertificates } from 'node:tls';
import { type Credentials, DockerConfig } from './credentials.js';
import { httpError, parseErrorBody, RegistryError } from './errors.js';
import {
  discardBody,
  type HttpDispatcher,
  type HttpResponse,
  NodeDispatcher,
  type TlsSettings,
  UndiciProxyDispatcher,
} from './http.js';
import { type ProxyResolver, parseProxyUrl, proxyFromEnvironment } from './proxy.js';
import { type Challenge, parseWwwAuthenticate, splitScopes } from './www-authenticate.js';

export interface RetryOptions {
  /** Attempts after the first. Default 4. */
  retries?: number;
  /** First backoff delay. Default 200 ms; doubled per attempt, with full jitter. */
  baseDelayMs?: number;
  /** Longest wait (also caps `Retry-After`). Default 30 s. */
  maxDelayMs?: number;
}

export interface TransportOptions {
  /** Registries (host[:port]) reachable over plain HTTP and without TLS verification, as docker's `insecure-registries`. */
  insecureRegistries?: string[];
  /** docker's certs.d: `<dir>/<host:port>/ca.crt` (and `*.crt`) are trusted for that registry. Default /etc/docker/certs.d. */
  certsDir?: string;
  /** Where credentials come from; default docker's config.json. `false`: anonymous only. */
  credentials?: ((registry: string) => Promise<Credentials | undefined>) | false;
  /**
   * Concurrent requests per registry, counted separately for reads (GET, HEAD) and writes (POST,
   * PUT, PATCH, DELETE), as docker limits downloads and uploads separately: a copy between two
   * repositories of one registry streams each download into an upload, and one shared pool
   * would let the downloads wait on uploads that wait on downloads. Default 6 each.
   */
  maxConcurrency?: number;
  /**
   * Proxy: default, from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (and lower case) with docker's
   * (Go's) rules, which never proxy localhost and loopback IPs; a URL string: every request
   * through that proxy (https by a CONNECT tunnel; TLS to the registry is still verified with its
   * CAs); a function: your own choice per URL (`proxyFromEnvironment(env)`); `false`: none.
   */
  proxy?: string | ProxyResolver | false;
  retry?: RetryOptions;
  userAgent?: string;
  /** Extra CA certificates (PEM) trusted for every registry. */
  ca?: string[];
}

/**
 * A request body: bytes (replayable), or a one-shot stream (never retried; `content-length`
 * must be given in the headers; a redirect cannot be followed with it).
 */
export type Body = Uint8Array | AsyncIterable<Uint8Array> | undefined;

export interface RequestSpec {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  /** A path under the registry (`/v2/...`) or an absolute URL (upload locations). */
  path: string;
  headers?: Record<string, string>;
  body?: Body;
  /** Token scopes the request needs, e.g. `repository:foo:pull`. */
  scopes?: string[];
  repository?: string | undefined;
  operation: string;
  signal?: AbortSignal | undefined;
  /** Retry on network errors, 5xx and 429. Default true (bodies are buffers, so replayable). */
  retry?: boolean;
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The final URL (after redirects). */
  url: URL;
  /** True when a redirect led off the registry's origin (cloud storage): `url` is not the registry. */
  crossOrigin?: boolean;
  body: Readable;
  /** Frees the concurrency slot; call once the body is consumed (done by `text`/`bytes`/`dump`). */
  release(): void;
}

export function header(res: { headers: Response['headers'] }, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

const LIMIT_64K = 64 * 1024;

/** Reads a body up to `max` bytes; throws ERR_REGISTRY_TOO_LARGE beyond. */
export async function readBody(res: Response, max: number, what: string, ctx: ErrCtx): Promise<Uint8Array> {
  const declared = Number(header(res, 'content-length'));
  try {
    if (Number.isFinite(declared) && declared > max) {
      throw new RegistryError(
        'ERR_REGISTRY_TOO_LARGE',
        `${what}: ${declared} bytes is more than the limit of ${max}`,
        ctx,
      );
    }
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of res.body) {
      n += (c as Buffer).length;
      if (n > max)
        throw new RegistryError('ERR_REGISTRY_TOO_LARGE', `${what}: more than the limit of ${max} bytes`, ctx);
      chunks.push(c as Buffer);
    }
    return new Uint8Array(Buffer.concat(chunks));
  } finally {
    res.body.destroy();
    res.release();
  }
}

/** Reads and drops a response body (up to 64 KiB, so the connection can be reused) and frees its slot. */
export async function dump(res: Response): Promise<void> {
  try {
    await discardBody(res.body, LIMIT_64K);
  } catch {
    res.body.destroy();
  } finally {
    res.release();
  }
}

interface ErrCtx {
  registry: string;
  repository?: string | undefined;
  operation: string;
}

/**
 * Throws the registry's error for an unexpected status (reads ≤ 64 KiB of the error body). A
 * response from a redirect target (cloud storage) is named by its origin and path (never its
 * query: a presigned URL's query is a credential); a 401/403 whose challenge says
 * `insufficient_scope` names the scope the registry asked for.
 */
export async function failFor(res: Response, ctx: ErrCtx, hint?: string): Promise<never> {
  let text = '';
  try {
    text = Buffer.from(await readBody(res, LIMIT_64K, 'error body', ctx)).toString('utf8');
  } catch {}
  let detail: string | undefined;
  if (res.crossOrigin) {
    detail = ` from ${redacted(res.url)}, where the registry redirected`;
    hint ??=
      res.status === 401 || res.status === 403
        ? 'the redirect target refused the request (an expired or invalid presigned URL?); credentials are never sent there'
        : undefined;
  } else if (res.status === 401 || res.status === 403) {
    const challenge = parseWwwAuthenticate(res.headers['www-authenticate'] as string | string[] | undefined).find(
      (c) => c.params.error === 'insufficient_scope',
    );
    if (challenge) {
      const scope = challenge.params.scope;
      detail = scope
        ? `insufficient_scope: the token does not grant ${splitScopes(scope).join(' ')}`
        : 'insufficient_scope: the token does not grant the access this request needs';
    }
  }
  throw httpError(res.status, parseErrorBody(text), { ...ctx, hint, detail });
}

/**
 * The host serving the API of a registry as references name it: Docker Hub (`docker.io`) is
 * served at `registry-1.docker.io`, as docker's DefaultV2Registry (credentials stay keyed by
 * `docker.io`, see `serverAddress`); every other registry at its own name.
 */
export function apiHost(registry: string): string {
  return registry === 'docker.io' ? 'registry-1.docker.io' : registry;
}

export function isLoopbackHost(host: string): boolean {
  const h = hostOnly(host);
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1';
  return false;
}

function isPrivateIp(h: string): boolean {
  if (isIP(h) === 4) {
    const [a, b] = h.split('.').map(Number) as [number, number];
    return (
      a === 10 ||
      a === 127 ||
      (a === 172 && b >= 16 && b < 32) ||
      (a === 192 && b === 168) ||
      (a === 169 && b === 254) ||
      a === 0
    );
  }
  if (isIP(h) === 6) return h === '::1' || h.startsWith('fc') || h.startsWith('fd') || h.startsWith('fe80');
  return h === 'localhost';
}

/** `host:port` → `host`; `[::1]:5000` → `::1`. */
export function hostOnly(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']'));
  const i = host.lastIndexOf(':');
  return i >= 0 && host.indexOf(':') === i ? host.slice(0, i) : host;
}

class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async acquire(signal?: AbortSignal): Promise<() => void> {
    // an already-aborted signal never fires its abort event: refuse to queue
    if (signal?.aborted) throw signal.reason;
    if (this.active >= this.max) {
      await new Promise<void>((resolve, reject) => {
        const w = () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(signal?.reason);
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        this.waiters.push(w);
      });
    }
    this.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active--;
      this.waiters.shift()?.();
    };
  }
}

interface CachedToken {
  token: string;
  expires: number;
}

/** Per-registry state: endpoint, TLS agents (direct and per proxy), auth, tokens, concurrency. */
class Host {
  base: Promise<URL> | undefined;
  readonly agents = new Map<string, HttpDispatcher>();
  /** The auth scheme the registry asked for (set by the first challenge). */
  challenge: Challenge | undefined;
  credentials: Promise<Credentials | undefined> | undefined;
  readonly tokens = new Map<string, CachedToken>();
  /** Reads and writes wait in separate queues (see `maxConcurrency`). */
  readonly reads: Semaphore;
  readonly writes: Semaphore;
  constructor(
    readonly name: string,
    max: number,
  ) {
    this.reads = new Semaphore(max);
    this.writes = new Semaphore(max);
  }
  slots(method: RequestSpec['method']): Semaphore {
    return method === 'GET' || method === 'HEAD' ? this.reads : this.writes;
  }
}

const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);
/** docker's `minimumTokenLifetimeSeconds`. */
const MIN_TOKEN_SECONDS = 60;
/** Redirects followed per request (Go's http client stops after 10 too). */
const MAX_REDIRECTS = 10;

/** A URL for messages: origin and path, without the query (a presigned URL's query is a credential). */
function redacted(u: URL): string {
  return `${u.origin}${u.pathname}`;
}

/** The transport every registry operation goes through. */
export class Transport {
  private readonly hosts = new Map<string, Host>();
  private readonly insecure: Set<string>;
  private readonly certsDir: string;
  private readonly docker = new DockerConfig();
  private proxies: ProxyResolver | undefined;
  readonly retry: Required<RetryOptions>;

  constructor(readonly options: TransportOptions = {}) {
    this.insecure = new Set(options.insecureRegistries ?? []);
    this.certsDir = options.certsDir ?? '/etc/docker/certs.d';
    this.retry = {
      retries: options.retry?.retries ?? 4,
      baseDelayMs: options.retry?.baseDelayMs ?? 200,
      maxDelayMs: options.retry?.maxDelayMs ?? 30_000,
    };
  }

  /** Explicitly insecure (plain HTTP, no TLS verification). */
  isInsecure(registry: string): boolean {
    return this.insecure.has(registry) || this.insecure.has(hostOnly(registry));
  }

  /** Plain HTTP is allowed: insecure or loopback (docker treats 127.0.0.0/8 so). */
  allowsHttp(registry: string): boolean {
    return this.isInsecure(registry) || isLoopbackHost(registry);
  }

  private host(registry: string): Host {
    let h = this.hosts.get(registry);
    if (!h) {
      h = new Host(registry, this.options.maxConcurrency ?? 6);
      this.hosts.set(registry, h);
    }
    return h;
  }

  /** The proxy for a URL (undefined: direct); an invalid proxy setting is an error that names it. */
  proxyFor(url: URL, ctx: ErrCtx): URL | undefined {
    try {
      if (!this.proxies) {
        const p = this.options.proxy;
        if (p === false) this.proxies = () => undefined;
        else if (typeof p === 'function') this.proxies = p;
        else if (typeof p === 'string') {
          const all = parseProxyUrl(p, 'proxy option');
          this.proxies = () => all;
        } else this.proxies = proxyFromEnvironment();
      }
      return this.proxies(url);
    } catch (e) {
      throw new RegistryError('ERR_REGISTRY_PROXY', (e as Error).message, { ...ctx, cause: e });
    }
  }

  /**
   * The connections for requests to `url` on behalf of registry `h`: system CAs + the
   * registry's certs.d CAs, no verification only for insecure registries; through a proxy when
   * `proxyFor` says so (https tunnelled with CONNECT, the registry's TLS options kept end to end).
   */
  private dispatcherFor(h: Host, url: URL, operation = 'connect'): HttpDispatcher {
    const proxy = this.proxyFor(url, { registry: h.name, operation });
    const key = proxy?.href ?? 'direct';
    let d = h.agents.get(key);
    if (!d) {
      const cas: string[] = [...(this.options.ca ?? [])];
      const dir = path.join(this.certsDir, h.name);
      try {
        for (const f of readdirSync(dir)) if (f.endsWith('.crt')) cas.push(readFileSync(path.join(dir, f), 'utf8'));
      } catch {}
      const tls: TlsSettings = {
        ...(cas.length ? { ca: [...tlsRootCertificates(), ...cas] } : {}),
        rejectUnauthorized: !this.isInsecure(h.name),
      };
      d = proxy
        ? new UndiciProxyDispatcher(
            proxy,
            tls,
            this.options.ca?.length ? [...tlsRootCertificates(), ...this.options.ca] : undefined,
          )
        : new NodeDispatcher(tls);
      h.agents.set(key, d);
    }
    return d;
  }

  /** The registry's base URL: HTTPS, else (insecure or loopback only) HTTP when HTTPS cannot talk to it. */
  baseUrl(registry: string, signal?: AbortSignal): Promise<URL> {
    const h = this.host(registry);
    h.base ??= this.probe(h, signal).catch((e) => {
      h.base = undefined;
      throw e;
    });
    return h.base;
  }

  private async probe(h: Host, signal?: AbortSignal): Promise<URL> {
    const host = apiHost(h.name);
    const https = new URL(`https://${host}/`);
    try {
      const r = await this.dispatcherFor(h, https, 'ping').request(new URL('/v2/', https), {
        method: 'GET',
        headers: { 'user-agent': this.userAgent() },
        signal,
        headersTimeout: 15_000,
        bodyTimeout: 15_000,
      });
      await discardBody(r.body, LIMIT_64K).catch(() => {});
      return https;
    } catch (e) {
      if (signal?.aborted) throw abortError(h.name, 'ping', signal);
      if (e instanceof RegistryError) throw e;
      if (!this.allowsHttp(h.name) || isTlsVerifyError(e)) {
        throw new RegistryError(
          isTlsVerifyError(e) ? 'ERR_REGISTRY_TLS' : 'ERR_REGISTRY_NETWORK',
          `cannot reach https://${host}: ${(e as Error).message}`,
          {
            registry: h.name,
            operation: 'ping',
            cause: e,
            hint: isTlsVerifyError(e)
              ? `put the registry's CA in ${path.join(this.certsDir, h.name, 'ca.crt')}`
              : undefined,
          },
        );
      }
      return new URL(`http://${host}/`);
    }
  }

  private async credentialsFor(h: Host): Promise<Credentials | undefined> {
    const src = this.options.credentials;
    if (src === false) return undefined;
    h.credentials ??= (src ? src(h.name) : this.docker.get(h.name)).catch(() => undefined);
    return h.credentials;
  }

  /** Forget cached tokens and credentials (after login/logout). */
  reset(registry?: string): void {
    if (registry) this.hosts.delete(registry);
    else this.hosts.clear();
  }

  private scopeKey(scopes: string[]): string {
    return mergeScopes(scopes).join(' ');
  }

  /** The Authorization header for a request, from what we know of the registry's challenge. */
  private async authorization(
    h: Host,
    scopes: string[],
    ctx: ErrCtx,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const c = h.challenge;
    if (!c) return undefined;
    if (c.scheme === 'basic') {
      const creds = await this.credentialsFor(h);
      if (!creds?.username) return undefined;
      return `Basic ${Buffer.from(`${creds.username}:${creds.password ?? ''}`).toString('base64')}`;
    }
    if (c.scheme === 'bearer') {
      const all = mergeScopes(scopes);
      const key = this.scopeKey(all);
      const cached = h.tokens.get(key);
      if (cached && cached.expires > Date.now()) return `Bearer ${cached.token}`;
      const token = await this.fetchToken(h, c, all, ctx, signal);
      h.tokens.set(key, token);
      return `Bearer ${token.token}`;
    }
    return undefined;
  }

  /** Gets a token from the challenge's realm: GET (anonymous or basic), or the OAuth2 POST with a refresh token. */
  private async fetchToken(
    h: Host,
    c: Challenge,
    scopes: string[],
    ctx: ErrCtx,
    signal?: AbortSignal,
  ): Promise<CachedToken> {
    const realmText = c.params.realm;
    if (!realmText) throw new RegistryError('ERR_REGISTRY_AUTH', 'bearer challenge without a realm', ctx);
    let realm: URL;
    try {
      realm = new URL(realmText);
    } catch {
      throw new RegistryError('ERR_REGISTRY_AUTH', `invalid token realm ${JSON.stringify(realmText)}`, ctx);
    }
    if (realm.username || realm.password)
      throw new RegistryError('ERR_REGISTRY_AUTH', 'token realm carries credentials', ctx);
    if (realm.protocol !== 'https:' && !(realm.protocol === 'http:' && this.allowsHttp(h.name))) {
      throw new RegistryError(
        'ERR_REGISTRY_AUTH',
        `token realm ${realm.origin} is not HTTPS (only insecure or loopback registries may use HTTP)`,
        ctx,
      );
    }
    const realmHost = realm.hostname.replace(/^\[|\]$/g, '');
    const creds = await this.credentialsFor(h);
    // Credentials go to the registry's token service; never to a private address that is not the registry's own network.
    const sendCreds =
      !!creds && !(isPrivateIp(realmHost) && !isPrivateIp(hostOnly(h.name)) && realmHost !== hostOnly(h.name));
    const service = c.params.service;
    const agent = this.dispatcherFor(h, realm, ctx.operation);
    let res: HttpResponse;
    try {
      if (sendCreds && creds?.identityToken) {
        const form = new URLSearchParams();
        form.set('grant_type', 'refresh_token');
        form.set('refresh_token', creds.identityToken);
        form.set('client_id', 'stevedore');
        if (service) form.set('service', service);
        if (scopes.length) form.set('scope', scopes.join(' '));
        res = await agent.request(realm, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': this.userAgent() },
          body: form.toString(),
          signal,
          headersTimeout: 60_000,
          bodyTimeout: 60_000,
        });
      } else {
        const u = new URL(realm);
        if (service) u.searchParams.set('service', service);
        for (const s of new Set(scopes)) u.searchParams.append('scope', s);
        const headers: Record<string, string> = { 'user-agent': this.userAgent() };
        if (sendCreds && creds?.username) {
          u.searchParams.set('account', creds.username);
          headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password ?? ''}`).toString('base64')}`;
        }
        res = await agent.request(u, { method: 'GET', headers, signal, headersTimeout: 60_000, bodyTimeout: 60_000 });
      }
    } catch (e) {
      if (signal?.aborted) throw abortError(h.name, ctx.operation, signal);
      throw new RegistryError('ERR_REGISTRY_AUTH', `token request to ${realm.origin} failed: ${(e as Error).message}`, {
        ...ctx,
        cause: e,
      });
    }
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const chunk of res.body) {
      n += (chunk as Buffer).length;
      if (n > LIMIT_64K) {
        res.body.destroy();
        throw new RegistryError('ERR_REGISTRY_AUTH', 'token response larger than 64 KiB', ctx);
      }
      chunks.push(chunk as Buffer);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    if (res.statusCode !== 200) {
      const errs = parseErrorBody(text);
      throw httpError(res.statusCode, errs, {
        ...ctx,
        hint: res.statusCode === 401 ? `run \`stevedore login ${h.name}\`` : undefined,
      });
    }
    let v: { token?: unknown; access_token?: unknown; expires_in?: unknown; refresh_token?: unknown };
    try {
      v = JSON.parse(text) as typeof v;
    } catch {
      throw new RegistryError('ERR_REGISTRY_AUTH', 'token response is not JSON', ctx);
    }
    // docker: `access_token` (OAuth2) when set, else `token`; either may be missing or empty
    const str = (x: unknown) => (typeof x === 'string' ? x : '');
    const token = str(v.access_token) || str(v.token);
    if (!token)
      throw new RegistryError(
        'ERR_REGISTRY_AUTH',
        `token response from ${redacted(realm)} has neither "token" nor "access_token"`,
        ctx,
      );
    if (creds && typeof v.refresh_token === 'string' && v.refresh_token) creds.identityToken = v.refresh_token;
    // docker's minimum token lifetime: a missing, zero or shorter expires_in counts as 60 s
    const ttl = typeof v.expires_in === 'number' && v.expires_in > MIN_TOKEN_SECONDS ? v.expires_in : MIN_TOKEN_SECONDS;
    // refresh a little early
    return { token, expires: Date.now() + Math.max(1, ttl - Math.min(10, ttl / 4)) * 1000 };
  }

  private userAgent(): string {
    return this.options.userAgent ?? 'stevedore/0.1';
  }

  /** Backoff for attempt n (0-based): full jitter over base·2ⁿ, or the registry's Retry-After. */
  delayFor(attempt: number, retryAfter?: string): number {
    // Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3); anything else is ignored
    const secs = retryAfter && /^\s*\d+\s*$/.test(retryAfter) ? Number(retryAfter) : undefined;
    const date = retryAfter && secs === undefined ? Date.parse(retryAfter) : Number.NaN;
    if (secs !== undefined || Number.isFinite(date)) {
      const ms = secs !== undefined ? secs * 1000 : Math.max(0, date - Date.now());
      return Math.min(ms, this.retry.maxDelayMs);
    }
    const cap = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** attempt);
    return cap / 2 + Math.random() * (cap / 2);
  }

  /**
   * Sends a request: authenticated for `scopes` (one retry after a 401 challenge), redirects
   * followed (credentials only to the registry's own origin), retried on network errors, 5xx and
   * 429. Resolves with any final status; the caller checks it.
   */
  async send(registry: string, spec: RequestSpec): Promise<Response> {
    const h = this.host(registry);
    const ctx: ErrCtx = { registry, repository: spec.repository, operation: spec.operation };
    const signal = spec.signal;
    const base = await this.baseUrl(registry, signal);
    let scopes = spec.scopes ?? [];
    // a streamed body can be sent once only: no retries, no second try after a 401
    const streamed = spec.body !== undefined && !(spec.body instanceof Uint8Array);
    const retries = spec.retry === false || streamed ? 0 : this.retry.retries;
    let authRetried = streamed;
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw abortError(registry, spec.operation, signal);
      const release = await h.slots(spec.method).acquire(signal);
      let res: Response;
      try {
        const auth = await this.authorization(h, scopes, ctx, signal);
        res = await this.sendFollowing(h, base, spec, auth, release);
      } catch (e) {
        release();
        if (e instanceof RegistryError) throw e;
        if (signal?.aborted) throw abortError(registry, spec.operation, signal);
        if (isTlsVerifyError(e) || attempt >= retries) {
          throw new RegistryError(
            isTlsVerifyError(e) ? 'ERR_REGISTRY_TLS' : 'ERR_REGISTRY_NETWORK',
            (e as Error).message,
            { ...ctx, cause: e },
          );
        }
        await sleep(this.delayFor(attempt), undefined, { signal }).catch(() => {
          throw abortError(registry, spec.operation, signal);
        });
        continue;
      }
      // a challenge counts only from the registry itself: a redirect target (cloud storage, a
      // CDN) answering 401 with `Bearer realm=<its own>` must not get a token fetched with our credentials
      if (res.status === 401 && !authRetried && !res.crossOrigin) {
        const challenges = parseWwwAuthenticate(res.headers['www-authenticate'] as string | string[] | undefined);
        const c = challenges.find((x) => x.scheme === 'bearer') ?? challenges.find((x) => x.scheme === 'basic');
        if (c) {
          const known = h.challenge;
          // remember the scheme and realm; the scope a challenge names belongs to this request only
          const { scope: challengeScope, ...params } = c.params;
          h.challenge = { scheme: c.scheme, params };
          scopes = mergeScopes([...scopes, ...splitScopes(challengeScope)]);
          const creds = await this.credentialsFor(h);
          // Retry when there is something new to try: a token for these scopes, or basic credentials we had not sent.
          const worth =
            c.scheme === 'bearer' || (c.scheme === 'basic' && !!creds?.username && known?.scheme !== 'basic');
          if (c.scheme === 'bearer') {
            // an invalid/expired token: drop the cached one for this scope set
            h.tokens.delete(this.scopeKey(scopes));
          }
          if (worth) {
            authRetried = true;
            await dump(res);
            attempt--;
            continue;
          }
        }
      }
      if (RETRY_STATUS.has(res.status) && attempt < retries) {
        const retryAfter = header(res, 'retry-after');
        await dump(res);
        await sleep(this.delayFor(attempt, retryAfter), undefined, { signal }).catch(() => {
          throw abortError(registry, spec.operation, signal);
        });
        continue;
      }
      return res;
    }
  }

  private async sendFollowing(
    h: Host,
    base: URL,
    spec: RequestSpec,
    auth: string | undefined,
    release: () => void,
  ): Promise<Response> {
    let url = new URL(spec.path, base);
    if (url.origin !== base.origin) {
      // absolute upload locations must stay on the registry (docker follows them; we refuse to carry credentials elsewhere)
      auth = undefined;
    }
    let method = spec.method;
    let body = spec.body;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent(), ...(spec.headers ?? {}) };
      if (auth && url.origin === base.origin) headers.authorization = auth;
      const bytes = body instanceof Uint8Array ? body : undefined;
      if (bytes && !headers['content-length']) headers['content-length'] = String(bytes.length);
      if (hop > 0 && body !== undefined && !bytes) {
        throw new RegistryError('ERR_REGISTRY_PROTOCOL', 'redirected while streaming a request body', {
          registry: h.name,
          operation: spec.operation,
        });
      }
      const sameHost = url.host === base.host;
      const dispatcher = this.dispatcherFor(sameHost ? h : this.host(url.host), url, spec.operation);
      const r = await dispatcher.request(url, {
        method,
        headers,
        body: bytes ?? (body && Readable.from(body, { objectMode: false, highWaterMark: 1 << 20 })),
        signal: spec.signal,
        headersTimeout: 60_000,
        bodyTimeout: 60_000,
      });
      const loc = r.headers.location;
      if ([301, 302, 303, 307, 308].includes(r.statusCode) && typeof loc === 'string') {
        if (hop === MAX_REDIRECTS) {
          await discardBody(r.body, LIMIT_64K).catch(() => {});
          throw new RegistryError(
            'ERR_REGISTRY_PROTOCOL',
            `too many redirects (more than ${MAX_REDIRECTS}; the last from ${redacted(url)} to ${redacted(new URL(loc, url))})`,
            { registry: h.name, repository: spec.repository, operation: spec.operation },
          );
        }
        await discardBody(r.body, LIMIT_64K).catch(() => {});
        const next = new URL(loc, url);
        if (next.protocol !== 'https:' && next.protocol !== 'http:')
          throw new RegistryError('ERR_REGISTRY_PROTOCOL', `redirect to ${next.protocol}`, {
            registry: h.name,
            operation: spec.operation,
          });
        if (next.protocol === 'http:' && url.protocol === 'https:' && !this.allowsHttp(next.host)) {
          throw new RegistryError('ERR_REGISTRY_PROTOCOL', `refusing redirect from HTTPS to ${next.origin}`, {
            registry: h.name,
            operation: spec.operation,
          });
        }
        if (r.statusCode === 303 || ((r.statusCode === 301 || r.statusCode === 302) && method === 'POST')) {
          method = 'GET';
          body = undefined;
        }
        url = next;
        continue;
      }
      return {
        status: r.statusCode,
        headers: r.headers,
        url,
        body: r.body,
        release,
        crossOrigin: url.origin !== base.origin,
      };
    }
    throw new RegistryError('ERR_REGISTRY_PROTOCOL', 'too many redirects', {
      registry: h.name,
      operation: spec.operation,
    });
  }

  async close(): Promise<void> {
    await Promise.all([...this.hosts.values()].flatMap((h) => [...h.agents.values()].map((a) => a.close())));
  }
}

/**
 * Merges token scopes: actions of the same resource are united (`repository:a:pull` +
 * `repository:a:push` → `repository:a:pull,push`), sorted, so a cache key names a grant.
 */
export function mergeScopes(scopes: string[]): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const s of scopes) {
    const i = s.lastIndexOf(':');
    if (i <= 0) continue;
    const resource = s.slice(0, i);
    const set = byResource.get(resource) ?? new Set<string>();
    for (const a of s.slice(i + 1).split(',')) if (a) set.add(a);
    byResource.set(resource, set);
  }
  return [...byResource.entries()].map(([r, a]) => `${r}:${[...a].sort().join(',')}`).sort();
}

/** node's bundled roots: a custom `ca` would otherwise replace them. */
function tlsRootCertificates(): readonly string[] {
  return rootCertificates;
}

function isTlsVerifyError(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? (e as { cause?: { code?: string } }).cause?.code;
  return (
    typeof code === 'string' &&
    (code.startsWith('ERR_TLS_CERT') ||
      code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' ||
      code === 'SELF_SIGNED_CERT_IN_CHAIN' ||
      code === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
      code === 'CERT_HAS_EXPIRED' ||
      code === 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY')
  );
}

export function abortError(registry: string, operation: string, signal?: AbortSignal): RegistryError {
  return new RegistryError('ERR_ABORTED', 'aborted', { registry, operation, cause: signal?.reason });
}
