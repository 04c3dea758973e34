/**
 * The two HTTP stacks under the transport, behind one small interface.
 *
 * Direct connections use node's own `http`/`https` (native llhttp): a blob download then costs
 * the JS thread about half the CPU it costs through undici, whose parser runs in WebAssembly and
 * copies every socket chunk into its memory (registry:bench, 450 MB over loopback: 0.30 s vs
 * 0.67 s of user CPU, 0.50 s vs 0.72 s wall). Requests through a proxy use undici's ProxyAgent
 * (CONNECT tunnels for https, absolute-URI requests for http), which node's http does not do; undici
 * is only loaded then.
 */
import http from 'node:http';
import https from 'node:https';
import { pipeline, type Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { Http1Pool } from './http1.js';

export type HttpHeaders = Record<string, string | string[] | undefined>;

export interface HttpRequest {
  method: string;
  headers: Record<string, string>;
  /** Bytes, or a stream whose length the caller put in `content-length` (else chunked). */
  body?: Uint8Array | string | Readable | undefined;
  signal?: AbortSignal | undefined;
  /** From sending until the response head arrives. */
  headersTimeout: number;
  /** Longest silence while the body streams (either way). */
  bodyTimeout: number;
}

export interface HttpResponse {
  statusCode: number;
  /** Lower-case names; a header sent more than once is an array, as undici gives it. */
  headers: HttpHeaders;
  /** Async-iterable bytes; `destroy()` drops the connection. */
  body: Readable;
}

/** Connections to one set of servers with one TLS configuration. */
export interface HttpDispatcher {
  request(url: URL, req: HttpRequest): Promise<HttpResponse>;
  close(): Promise<void>;
}

export interface TlsSettings {
  /** Trusted CAs (PEM); undefined: node's bundled roots. */
  ca?: string[];
  rejectUnauthorized: boolean;
}

/** Idle keep-alive connections are closed after this long (servers drop theirs too). */
const KEEP_ALIVE_MS = 10_000;

function httpError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * Direct connections: node's http/https with keep-alive agents, except plain-HTTP requests
 * without a body (blob and manifest GETs, HEADs, DELETEs), which read into large buffers
 * (`Http1Pool`; `STEVEDORE_NODE_HTTP=1` sends them through node's http too).
 */
export class NodeDispatcher implements HttpDispatcher {
  private readonly http: http.Agent;
  private readonly https: https.Agent;
  private readonly plain: Http1Pool | undefined;

  constructor(tls: TlsSettings) {
    this.plain = process.env.STEVEDORE_NODE_HTTP === '1' ? undefined : new Http1Pool(KEEP_ALIVE_MS);
    // `timeout` here is what an idle pooled socket gets; a request sets its own while it runs.
    this.http = new http.Agent({ keepAlive: true, timeout: KEEP_ALIVE_MS, scheduling: 'lifo' });
    this.https = new https.Agent({
      keepAlive: true,
      timeout: KEEP_ALIVE_MS,
      scheduling: 'lifo',
      rejectUnauthorized: tls.rejectUnauthorized,
      ...(tls.ca ? { ca: tls.ca } : {}),
    });
  }

  request(url: URL, o: HttpRequest): Promise<HttpResponse> {
    if (this.plain && url.protocol === 'http:' && o.body === undefined) return this.plain.request(url, o);
    const secure = url.protocol === 'https:';
    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      const fail = (e: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(headersTimer);
        reject(e);
      };
      const req = (secure ? https : http).request(url, {
        method: o.method,
        headers: o.headers,
        agent: secure ? this.https : this.http,
        ...(o.signal ? { signal: o.signal } : {}),
      });
      const headersTimer = setTimeout(
        () => req.destroy(httpError('ERR_HEADERS_TIMEOUT', `no response from ${url.origin} in ${o.headersTimeout} ms`)),
        o.headersTimeout,
      );
      req.setTimeout(o.bodyTimeout, () =>
        req.destroy(httpError('ERR_BODY_TIMEOUT', `${url.origin} sent nothing for ${o.bodyTimeout} ms`)),
      );
      req.on('error', fail);
      req.on('response', (res) => {
        if (settled) {
          res.destroy();
          return;
        }
        settled = true;
        clearTimeout(headersTimer);
        const headers: HttpHeaders = {};
        for (const [k, v] of Object.entries(res.headersDistinct)) {
          if (v) headers[k] = v.length === 1 ? v[0] : v;
        }
        // a request error after the head (reset, timeout, abort) ends the body with that error
        req.on('error', (e) => res.destroy(e));
        resolve({ statusCode: res.statusCode ?? 0, headers, body: res });
      });
      const body = o.body;
      if (body === undefined || typeof body === 'string' || body instanceof Uint8Array) {
        req.end(body);
      } else {
        // A server may answer before it read the body (a 401, a 4xx): the response still counts.
        // pipeline: a failure on either side destroys the other (the source's files are closed).
        pipeline(body, req, () => {});
      }
    });
  }

  async close(): Promise<void> {
    this.http.destroy();
    this.https.destroy();
    this.plain?.close();
  }
}

/** undici's ProxyAgent: every request through `proxy`. */
export class UndiciProxyDispatcher implements HttpDispatcher {
  private agent: Promise<Dispatcher> | undefined;

  constructor(
    private readonly proxy: URL,
    private readonly tls: TlsSettings,
    private readonly proxyCa: string[] | undefined,
  ) {}

  private dispatcher(): Promise<Dispatcher> {
    this.agent ??= import('undici').then(
      ({ ProxyAgent }) =>
        new ProxyAgent({
          uri: this.proxy.href,
          requestTls: { ...(this.tls.ca ? { ca: this.tls.ca } : {}), rejectUnauthorized: this.tls.rejectUnauthorized },
          ...(this.proxyCa ? { proxyTls: { ca: this.proxyCa } } : {}),
          // plain-HTTP registries get absolute-URI requests, as Go sends them; https is a CONNECT tunnel
          proxyTunnel: false,
          keepAliveTimeout: KEEP_ALIVE_MS,
        }),
    );
    return this.agent;
  }

  async request(url: URL, o: HttpRequest): Promise<HttpResponse> {
    const { request } = await import('undici');
    const body =
      o.body instanceof Uint8Array ? Buffer.from(o.body.buffer, o.body.byteOffset, o.body.byteLength) : o.body;
    const r = await request(url, {
      method: o.method as Dispatcher.HttpMethod,
      headers: o.headers,
      body,
      dispatcher: await this.dispatcher(),
      signal: o.signal,
      headersTimeout: o.headersTimeout,
      bodyTimeout: o.bodyTimeout,
    });
    return { statusCode: r.statusCode, headers: r.headers, body: r.body };
  }

  async close(): Promise<void> {
    if (this.agent) await (await this.agent).close();
  }
}

/**
 * Reads and drops up to `limit` bytes of a body, so that its connection can be reused; a longer
 * body is cut off (its connection closed).
 */
export async function discardBody(body: Readable, limit: number): Promise<void> {
  let n = 0;
  try {
    for await (const c of body) {
      n += (c as Buffer).length;
      if (n > limit) break;
    }
  } finally {
    if (n > limit) body.destroy();
  }
}
