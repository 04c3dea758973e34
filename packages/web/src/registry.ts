/**
 * A small distribution-API client for the browser, on `fetch`: the `/v2/` ping, auth
 * (anonymous, Basic, and the Bearer token flow through the `WWW-Authenticate` realm, with or
 * without credentials), manifests and blobs. Blobs are returned as streams, never buffered;
 * small documents are read under a size cap. Cross-origin requests the registry does not allow
 * (no CORS headers) surface as `RegistryAccessError`s that say so.
 */
import { isValidPathComponent, isValidTag } from './image-model.js';

/** Manifests and configs above this size are refused (as the rest of stevedore does). */
export const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;
/** Token responses above this size are refused. */
export const MAX_TOKEN_BYTES = 64 * 1024;

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

export interface Credentials {
  username: string;
  password: string;
}

/** What to open: a registry base URL and a repository with a tag or a digest. */
export interface RegistryTarget {
  /** Origin of the registry (`http://127.0.0.1:5000`), no trailing slash. */
  base: string;
  repository: string;
  tag?: string;
  digest?: string;
}

/** A failure to talk to the registry, phrased for the page's status line. */
export class RegistryAccessError extends Error {
  override name = 'RegistryAccessError';
}

const DIGEST = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

/**
 * Parses the page's fields. `registry` is a base URL (`http://host:port`; a bare `host:port`
 * means http for loopback hosts, https otherwise); `reference` is `repo[:tag][@digest]`, or a
 * full reference whose host is the registry's.
 */
export function parseTarget(registry: string, reference: string): RegistryTarget {
  const base = parseBase(registry);
  let ref = reference.trim();
  if (!ref) throw new RegistryAccessError('type an image reference: repository:tag or repository@sha256:…');
  const host = new URL(base).host;
  if (ref.startsWith(`${host}/`)) ref = ref.slice(host.length + 1);
  let digest: string | undefined;
  const at = ref.indexOf('@');
  if (at >= 0) {
    digest = ref.slice(at + 1);
    ref = ref.slice(0, at);
    if (!DIGEST.test(digest)) throw new RegistryAccessError(`invalid digest in ${reference}: ${digest}`);
  }
  let tag: string | undefined;
  const colon = ref.lastIndexOf(':');
  if (colon > ref.lastIndexOf('/')) {
    tag = ref.slice(colon + 1);
    ref = ref.slice(0, colon);
    if (!isValidTag(tag)) throw new RegistryAccessError(`invalid tag in ${reference}: ${tag}`);
  }
  if (!ref?.split('/').every(isValidPathComponent)) {
    throw new RegistryAccessError(
      `invalid repository name in ${reference}: ${ref || '(empty)'} (lower-case components separated by /)`,
    );
  }
  if (!tag && !digest) tag = 'latest';
  return { base, repository: ref, tag, digest };
}

const LOOPBACK = /^(localhost|127(\.\d+){3}|\[::1\])(:\d+)?$/;

function parseBase(registry: string): string {
  const text = registry.trim().replace(/\/+$/, '');
  if (!text) throw new RegistryAccessError('type a registry URL, e.g. http://127.0.0.1:5000');
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text)
    ? text
    : `${LOOPBACK.test(text) ? 'http' : 'https'}://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new RegistryAccessError(`invalid registry URL: ${registry}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new RegistryAccessError(`invalid registry URL ${registry}: only http and https are supported`);
  }
  if (url.username || url.password) {
    throw new RegistryAccessError(
      `invalid registry URL ${registry}: put credentials in the username and password fields`,
    );
  }
  return url.origin;
}

export const corsMessage = (base: string) =>
  `the registry at ${base} does not allow cross-origin requests (CORS); ` +
  "start it with `stevedore serve --cors '*'` or open a saved archive instead";

/**
 * Tells "no CORS headers" from "nothing answers": an opaque `no-cors` request succeeds whenever
 * the server answers at all.
 */
async function unreachableOrCors(base: string, url: string): Promise<RegistryAccessError> {
  try {
    await fetch(url, { mode: 'no-cors', credentials: 'omit', cache: 'no-store' });
    return new RegistryAccessError(corsMessage(base));
  } catch {
    return new RegistryAccessError(`cannot reach the registry at ${base} (nothing answered ${url})`);
  }
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** `WWW-Authenticate`: the first challenge, `scheme k="v", k2=v2` (quoted values may hold commas). */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z][\w-]*)\s*(.*)$/.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?\s*/gy;
  const rest = m[2] ?? '';
  re.lastIndex = 0;
  for (let p = re.exec(rest); p; p = re.exec(rest)) {
    params[(p[1] as string).toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
    if (re.lastIndex >= rest.length) break;
  }
  return { scheme: (m[1] as string).toLowerCase(), params };
}

/** Reads a response body up to `cap` bytes; more is an error naming `what`. */
export async function readCapped(res: Response, cap: number, what: string): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (declared > cap) throw new RegistryAccessError(`${what} is ${declared} bytes, over the ${cap}-byte limit`);
  if (!res.body) return new Uint8Array();
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > cap) {
      await reader.cancel().catch(() => {});
      throw new RegistryAccessError(`${what} is over the ${cap}-byte limit`);
    }
    parts.push(value);
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const basic = (c: Credentials) => {
  const bytes = new TextEncoder().encode(`${c.username}:${c.password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
};

async function errorText(res: Response): Promise<string> {
  try {
    const body = JSON.parse(new TextDecoder().decode(await readCapped(res, MAX_TOKEN_BYTES, 'error body')));
    const e = body?.errors?.[0];
    if (e?.code) return `${res.status} ${e.code}${e.message ? `: ${e.message}` : ''}`;
  } catch {
    // not a distribution error body
  }
  return `${res.status} ${res.statusText}`.trim();
}

/** One registry, authenticated as needed; requests carry credentials to this origin only. */
export class RegistrySession {
  private authorization: string | undefined;

  private constructor(
    readonly base: string,
    private readonly credentials: Credentials | undefined,
  ) {}

  /** Pings `/v2/` and authenticates when the registry asks to (for pulls of `repository`). */
  static async connect(base: string, repository: string, credentials?: Credentials): Promise<RegistrySession> {
    const s = new RegistrySession(base, credentials?.username ? credentials : undefined);
    const res = await s.request('/v2/', {}, repository);
    if (!res.ok) throw new RegistryAccessError(`the registry at ${base} answered /v2/ with ${await errorText(res)}`);
    await res.body?.cancel();
    return s;
  }

  /** A GET (or HEAD) on the registry, authenticating once on a 401 challenge. */
  async request(path: string, headers: Record<string, string>, repository: string): Promise<Response> {
    const url = this.base + path;
    let res = await this.send(url, headers);
    if (res.status === 401) {
      const header = res.headers.get('www-authenticate');
      await res.body?.cancel();
      if (!header) {
        throw new RegistryAccessError(
          `the registry at ${this.base} requires authentication but does not expose its WWW-Authenticate header to the page (CORS: Access-Control-Expose-Headers)`,
        );
      }
      await this.authenticate(header, repository);
      res = await this.send(url, headers);
      if (res.status === 401) {
        await res.body?.cancel();
        throw new RegistryAccessError(
          this.credentials
            ? `the registry at ${this.base} refused the credentials of ${this.credentials.username} (401): check the username and password`
            : `the registry at ${this.base} requires a username and password (anonymous access refused)`,
        );
      }
    }
    return res;
  }

  private async send(url: string, headers: Record<string, string>): Promise<Response> {
    const h: Record<string, string> = { ...headers };
    if (this.authorization) h.Authorization = this.authorization;
    try {
      return await fetch(url, { headers: h, credentials: 'omit', cache: 'no-store' });
    } catch (e) {
      if (e instanceof TypeError) throw await unreachableOrCors(this.base, url);
      throw e;
    }
  }

  private async authenticate(header: string, repository: string): Promise<void> {
    const c = parseChallenge(header);
    if (c?.scheme === 'basic') {
      if (!this.credentials) {
        throw new RegistryAccessError(`the registry at ${this.base} requires a username and password (Basic auth)`);
      }
      this.authorization = basic(this.credentials);
      return;
    }
    if (c?.scheme === 'bearer' && c.params.realm) {
      this.authorization = `Bearer ${await this.token(c.params, repository)}`;
      return;
    }
    throw new RegistryAccessError(`the registry at ${this.base} asks for an unsupported authentication: ${header}`);
  }

  /** The distribution token flow: GET realm?service=…&scope=repository:NAME:pull. */
  private async token(params: Record<string, string>, repository: string): Promise<string> {
    let realm: URL;
    try {
      realm = new URL(params.realm as string, this.base);
    } catch {
      throw new RegistryAccessError(`the registry at ${this.base} sent an invalid token realm: ${params.realm}`);
    }
    // Credentials travel to a plain-http realm only when the registry itself is plain http.
    if (realm.protocol !== 'https:' && !(realm.protocol === 'http:' && this.base.startsWith('http:'))) {
      throw new RegistryAccessError(`refusing the token realm ${realm.href}: it must be https`);
    }
    if (params.service) realm.searchParams.set('service', params.service);
    realm.searchParams.set('scope', params.scope ?? `repository:${repository}:pull`);
    const headers: Record<string, string> = {};
    if (this.credentials) headers.Authorization = basic(this.credentials);
    let res: Response;
    try {
      res = await fetch(realm.href, { headers, credentials: 'omit', cache: 'no-store' });
    } catch (e) {
      if (!(e instanceof TypeError)) throw e;
      throw new RegistryAccessError(
        `the token service at ${realm.origin} does not allow cross-origin requests (CORS) or cannot be reached`,
      );
    }
    if (!res.ok) {
      throw new RegistryAccessError(`the token service at ${realm.origin} refused: ${await errorText(res)}`);
    }
    let body: { token?: unknown; access_token?: unknown };
    try {
      body = JSON.parse(new TextDecoder().decode(await readCapped(res, MAX_TOKEN_BYTES, 'token response')));
    } catch (e) {
      if (e instanceof RegistryAccessError) throw e;
      throw new RegistryAccessError(`the token service at ${realm.origin} sent no JSON`);
    }
    const token = body.token ?? body.access_token;
    if (typeof token !== 'string' || !token || /[\r\n]/.test(token)) {
      throw new RegistryAccessError(`the token service at ${realm.origin} sent no token`);
    }
    return token;
  }

  /** A manifest or index: its bytes (capped) and Content-Type, and the registry's claimed digest. */
  async manifest(
    repository: string,
    reference: string,
  ): Promise<{ bytes: Uint8Array; mediaType: string; claimedDigest?: string }> {
    const res = await this.request(
      `/v2/${repository}/manifests/${encodeURIComponent(reference)}`,
      { Accept: MANIFEST_ACCEPT },
      repository,
    );
    if (!res.ok) {
      throw new RegistryAccessError(`manifest ${repository}:${reference}: ${await errorText(res)}`);
    }
    const bytes = await readCapped(res, MAX_DOCUMENT_BYTES, `manifest ${repository}:${reference}`);
    const mediaType = (res.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
    return { bytes, mediaType, claimedDigest: res.headers.get('docker-content-digest') ?? undefined };
  }

  /** A blob as a stream (not verified here: the caller hashes what it reads). */
  async blob(repository: string, digest: string): Promise<ReadableStream<Uint8Array>> {
    if (!DIGEST.test(digest)) throw new RegistryAccessError(`invalid blob digest ${digest}`);
    const res = await this.request(`/v2/${repository}/blobs/${digest}`, {}, repository);
    if (!res.ok || !res.body) throw new RegistryAccessError(`blob ${repository}@${digest}: ${await errorText(res)}`);
    return res.body as ReadableStream<Uint8Array>;
  }

  /** A small blob (a config), read under the document cap. */
  async smallBlob(repository: string, digest: string): Promise<Uint8Array> {
    const stream = await this.blob(repository, digest);
    return readCapped(new Response(stream), MAX_DOCUMENT_BYTES, `blob ${digest}`);
  }
}
