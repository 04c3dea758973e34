/**
 * Plain-HTTP/1.1 requests without a request body (GET, HEAD, DELETE) read straight into large
 * buffers: what a blob download from a plain-HTTP registry (a local mirror, a CI registry,
 * loopback) spends its CPU on.
 *
 * node's `http` allocates a fresh 64 KiB buffer for every socket read, its parser copies each
 * body piece into another new Buffer, and every piece travels through a stream and an event on
 * the JS thread: about 1.6 ms of CPU per MB received (450 MB: 0.75 s). Here the socket reads
 * with `onread` into 512 KiB slabs, one read per region, and the body is handed on as views of the
 * slab (no copy): 0.15 ms per MB. The framing is HTTP/1.1's (RFC 9112): Content-Length,
 * chunked, or until close; keep-alive connections are pooled per origin, idle ones unref'd and
 * closed after a while, a reused connection that turns out closed is retried once on a new one.
 * Everything else (TLS, request bodies, proxies) stays with node's `http`/`https` and undici.
 */
import net from 'node:net';
import { Readable } from 'node:stream';
import type { HttpHeaders, HttpRequest, HttpResponse } from './http.js';

/**
 * Reads land in slabs of this size; a new slab when less than MIN_READ is left. (1 MiB slabs
 * were no faster and, garbage until the next GC, raised a 450 MB pull's peak RSS by 50 MiB.)
 */
const SLAB = 512 << 10;
const MIN_READ = 64 << 10;
/** The longest response head accepted. */
const MAX_HEAD = 64 << 10;
/**
 * How many reads may wait unread before the socket stops reading. The body stream is in object
 * mode: each read is handed on as it is (a byte-mode stream would concatenate, copying, whatever
 * has piled up when it is read).
 */
const BODY_HIGH_WATER = 4;

const HEAD_END = Buffer.from('\r\n\r\n');

function httpError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('The operation was aborted', { cause: signal.reason }), {
    name: 'AbortError',
    code: 'ABORT_ERR',
  });
}

/** A parsed response head. */
interface Head {
  status: number;
  minor: number;
  headers: HttpHeaders;
}

function parseHead(text: string): Head {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0] ?? '');
  if (!m) throw httpError('ERR_HTTP_PARSE', `bad status line ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`);
  const headers: HttpHeaders = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    // obsolete line folding and names with spaces are refused (RFC 9112 §5.1, §5.2)
    if (colon <= 0 || /[\s]/.test(line[0]!) || /[\s]/.test(line[colon - 1]!)) {
      throw httpError('ERR_HTTP_PARSE', `bad header line ${JSON.stringify(line.slice(0, 80))}`);
    }
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    const had = headers[name];
    headers[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
  }
  return { status: Number(m[2]), minor: Number(m[1]), headers };
}

function one(h: HttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** How the body ends. */
type Framing = { kind: 'none' } | { kind: 'length'; left: number } | { kind: 'chunked' } | { kind: 'close' };

function framingOf(method: string, head: Head): Framing {
  if (method === 'HEAD' || head.status === 204 || head.status === 304) return { kind: 'none' };
  const te = one(head.headers, 'transfer-encoding');
  if (te !== undefined) {
    const codings = te
      .toLowerCase()
      .split(',')
      .map((s) => s.trim());
    return codings.at(-1) === 'chunked' ? { kind: 'chunked' } : { kind: 'close' };
  }
  const cl = head.headers['content-length'];
  if (cl !== undefined) {
    const values = new Set((Array.isArray(cl) ? cl : [cl]).flatMap((v) => v.split(',').map((s) => s.trim())));
    const [v] = values;
    if (values.size !== 1 || !/^\d{1,15}$/.test(v!)) {
      throw httpError('ERR_HTTP_PARSE', `bad content-length ${JSON.stringify(one(head.headers, 'content-length'))}`);
    }
    return Number(v) === 0 ? { kind: 'none' } : { kind: 'length', left: Number(v) };
  }
  return { kind: 'close' };
}

function keepsAlive(head: Head): boolean {
  const conn = (one(head.headers, 'connection') ?? '').toLowerCase();
  if (/\bclose\b/.test(conn)) return false;
  return head.minor === 1 || /\bkeep-alive\b/.test(conn);
}

/** The request being answered on a connection. */
interface Exchange {
  method: string;
  /** Settles the request's promise (head parsed, or failed before). */
  resolve: (r: HttpResponse) => void;
  reject: (e: Error) => void;
  settled: boolean;
  /** Bytes of the response seen (a reused connection closed before any is retried). */
  received: number;
  head?: Head;
  framing?: Framing;
  body?: Readable;
  reusable: boolean;
  done: boolean;
  /** Drops the abort listener and the timer; called once the exchange ended, however. */
  cleanup: () => void;
}

/** One keep-alive connection, reading into slabs. */
class Conn {
  readonly socket: net.Socket;
  private slab = Buffer.allocUnsafeSlow(SLAB);
  private used = 0;
  /** Response head bytes gathered so far. */
  private headBuf: Buffer | undefined;
  /** Chunked framing: the line being read, and the state. */
  private line = '';
  private chunkLeft = 0;
  private chunkState: 'size' | 'data' | 'data-crlf' | 'trailers' = 'size';
  ex: Exchange | undefined;
  /** Requests sent on it so far. */
  uses = 0;
  closed = false;
  /** Reading stopped because the body's reader is behind. */
  private paused = false;
  onClose: (() => void) | undefined;
  onTimeout: (() => void) | undefined;

  constructor(host: string, port: number) {
    this.socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: {
        buffer: () => {
          if (SLAB - this.used < MIN_READ) {
            this.slab = Buffer.allocUnsafeSlow(SLAB);
            this.used = 0;
          }
          return this.slab.subarray(this.used);
        },
        callback: (n: number, buf: Uint8Array) => {
          const chunk = buf.subarray(0, n);
          this.used += n;
          return this.data(chunk as Buffer);
        },
      },
    });
    // connecting, or idle in the pool: an error fails the exchange if there is one
    this.socket.on('error', (e) => this.fail(e));
    this.socket.on('timeout', () => this.onTimeout?.());
    this.socket.on('end', () => this.eof());
    this.socket.on('close', () => {
      this.closed = true;
      if (this.ex && !this.ex.done) this.fail(httpError('ECONNRESET', 'the server closed the connection'));
      this.onClose?.();
    });
  }

  /** Bytes from the socket; false pauses reading (the body's reader is behind). */
  private data(chunk: Buffer): boolean {
    const ex = this.ex;
    if (!ex || ex.done) {
      // nothing was asked: a server talking out of turn is not to be trusted with the next request
      this.socket.destroy();
      return false;
    }
    ex.received += chunk.length;
    let more: boolean;
    try {
      more = this.feed(ex, chunk);
    } catch (e) {
      this.fail(e as Error);
      return false;
    }
    // once complete, keep reading: an idle connection must notice when the server closes it
    if (more || ex.done) return true;
    this.paused = true;
    return false;
  }

  /** Reads again (the body's reader wants more). */
  wake(): void {
    if (!this.paused || this.closed) return;
    this.paused = false;
    this.socket.resume();
  }

  private feed(ex: Exchange, chunk: Buffer): boolean {
    while (!ex.head) {
      const buf: Buffer = this.headBuf ? Buffer.concat([this.headBuf, chunk]) : chunk;
      const end = buf.indexOf(HEAD_END);
      if (end < 0) {
        if (buf.length > MAX_HEAD) throw httpError('ERR_HTTP_PARSE', `response head larger than ${MAX_HEAD} bytes`);
        // copied: the slab region is reused once the head is parsed
        this.headBuf = Buffer.from(buf);
        return true;
      }
      this.headBuf = undefined;
      if (end > MAX_HEAD) throw httpError('ERR_HTTP_PARSE', `response head larger than ${MAX_HEAD} bytes`);
      const head = parseHead(buf.toString('latin1', 0, end));
      chunk = buf.subarray(end + 4);
      if (head.status >= 100 && head.status < 200) {
        if (head.status === 101) throw httpError('ERR_HTTP_PARSE', 'unexpected 101 Switching Protocols');
        if (chunk.length === 0) return true;
        continue; // an interim response (100, 103): the final one follows
      }
      this.start(ex, head);
    }
    if (chunk.length === 0) return true;
    return this.body(ex, chunk);
  }

  /** The head of the final response: resolve the request with a body stream. */
  private start(ex: Exchange, head: Head): void {
    ex.head = head;
    ex.framing = framingOf(ex.method, head);
    ex.reusable = keepsAlive(head) && ex.framing.kind !== 'close';
    this.chunkState = 'size';
    this.line = '';
    const body = new Readable({
      objectMode: true,
      highWaterMark: BODY_HIGH_WATER,
      read: () => this.wake(),
      destroy: (err, cb) => {
        // dropped before its end: the connection cannot carry another request
        if (!ex.done) {
          ex.done = true;
          ex.reusable = false;
          if (this.ex === ex) this.ex = undefined;
          this.socket.destroy();
          ex.cleanup();
        }
        cb(err);
      },
    });
    // An error may end the body before the caller has its promise's value (bytes past the
    // length in the very read that held the head); the error stays on the stream for its reader.
    body.on('error', () => {});
    ex.body = body;
    ex.settled = true;
    ex.resolve({ statusCode: head.status, headers: head.headers, body });
    if (ex.framing.kind === 'none') this.finish(ex);
  }

  /** Body bytes by the framing; false when the reader is behind. */
  private body(ex: Exchange, chunk: Buffer): boolean {
    const f = ex.framing!;
    if (ex.done) throw httpError('ERR_HTTP_PARSE', 'bytes after the end of the response');
    if (f.kind === 'close') return ex.body!.push(chunk);
    if (f.kind === 'length') {
      if (chunk.length > f.left) throw httpError('ERR_HTTP_PARSE', 'more bytes than the content-length');
      f.left -= chunk.length;
      const more = ex.body!.push(chunk);
      if (f.left === 0) this.finish(ex);
      return more;
    }
    if (f.kind === 'none') throw httpError('ERR_HTTP_PARSE', 'bytes after the end of the response');
    return this.chunked(ex, chunk);
  }

  /** Transfer-Encoding: chunked (RFC 9112 §7.1), piece by piece; data as views. */
  private chunked(ex: Exchange, chunk: Buffer): boolean {
    let more = true;
    let i = 0;
    while (i < chunk.length) {
      if (ex.done) throw httpError('ERR_HTTP_PARSE', 'bytes after the end of the response');
      if (this.chunkState === 'data') {
        const take = Math.min(this.chunkLeft, chunk.length - i);
        more = ex.body!.push(chunk.subarray(i, i + take)) && more;
        this.chunkLeft -= take;
        i += take;
        if (this.chunkLeft === 0) this.chunkState = 'data-crlf';
        continue;
      }
      // a line: the size line, the CRLF after data, or a trailer line
      const nl = chunk.indexOf(0x0a, i);
      const piece = chunk.toString('latin1', i, nl < 0 ? chunk.length : nl + 1);
      i = nl < 0 ? chunk.length : nl + 1;
      this.line += piece;
      if (this.line.length > 8192) throw httpError('ERR_HTTP_PARSE', 'chunk line too long');
      if (nl < 0) break;
      const line = this.line.replace(/\r?\n$/, '');
      this.line = '';
      if (this.chunkState === 'data-crlf') {
        if (line !== '') throw httpError('ERR_HTTP_PARSE', 'chunk data not followed by CRLF');
        this.chunkState = 'size';
      } else if (this.chunkState === 'size') {
        const m = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(line);
        if (!m) throw httpError('ERR_HTTP_PARSE', `bad chunk size line ${JSON.stringify(line.slice(0, 40))}`);
        this.chunkLeft = Number.parseInt(m[1]!, 16);
        this.chunkState = this.chunkLeft === 0 ? 'trailers' : 'data';
      } else if (line === '') {
        this.finish(ex); // trailers end with an empty line; they are not used
      }
    }
    return more;
  }

  /** The response is complete. */
  private finish(ex: Exchange): void {
    ex.done = true;
    ex.body!.push(null);
    this.ex = undefined;
    this.release(ex.reusable);
  }

  private eof(): void {
    const ex = this.ex;
    if (ex && !ex.done && ex.framing?.kind === 'close') {
      this.finish(ex);
      return;
    }
    if (ex && !ex.done)
      this.fail(httpError('ECONNRESET', 'the server closed the connection before the response ended'));
    this.socket.destroy();
  }

  /** The exchange failed: its promise or its body gets the error, the connection is closed. */
  fail(e: Error): void {
    const ex = this.ex;
    this.socket.destroy();
    if (!ex || ex.done) return;
    ex.done = true;
    this.ex = undefined;
    ex.cleanup();
    if (!ex.settled) {
      ex.settled = true;
      ex.reject(e);
    } else ex.body?.destroy(e);
  }

  /** Set by the pool: what to do once a response is complete. */
  release: (reusable: boolean) => void = () => {};
}

/** Pooled keep-alive connections to plain-HTTP origins. */
export class Http1Pool {
  private readonly idle = new Map<string, Conn[]>();
  private readonly all = new Set<Conn>();

  constructor(private readonly keepAliveMs: number) {}

  async request(url: URL, o: HttpRequest): Promise<HttpResponse> {
    const reused = this.take(url);
    try {
      return await this.send(reused ?? this.connect(url), url, o);
    } catch (e) {
      // a pooled connection the server had already closed: once more on a new one
      if (reused && (e as { retryable?: boolean }).retryable && !o.signal?.aborted) {
        return this.send(this.connect(url), url, o);
      }
      throw e;
    }
  }

  close(): void {
    for (const c of this.all) c.socket.destroy();
    this.all.clear();
    this.idle.clear();
  }

  private key(url: URL): string {
    return `${url.hostname}:${url.port || 80}`;
  }

  private take(url: URL): Conn | undefined {
    const list = this.idle.get(this.key(url));
    for (let c = list?.pop(); c; c = list?.pop()) {
      if (!c.closed && !c.socket.destroyed) return c;
    }
    return undefined;
  }

  private connect(url: URL): Conn {
    const c = new Conn(url.hostname.replace(/^\[(.*)\]$/, '$1'), Number(url.port || 80));
    this.all.add(c);
    c.onClose = () => {
      this.all.delete(c);
      const list = this.idle.get(this.key(url));
      const i = list?.indexOf(c) ?? -1;
      if (i >= 0) list!.splice(i, 1);
    };
    return c;
  }

  private send(c: Conn, url: URL, o: HttpRequest): Promise<HttpResponse> {
    return new Promise<HttpResponse>((resolve, reject) => {
      const signal = o.signal;
      const fresh = c.uses === 0;
      c.uses++;
      let headersTimer: NodeJS.Timeout | undefined;
      const cleanup = () => {
        clearTimeout(headersTimer);
        signal?.removeEventListener('abort', onAbort);
      };
      const ex: Exchange = {
        method: o.method,
        resolve: (r) => {
          clearTimeout(headersTimer);
          resolve(r);
        },
        reject: (e) => {
          // a kept-alive connection the server closed meanwhile: nothing of this exchange was seen
          const code = (e as { code?: string }).code ?? '';
          if (!fresh && ex.received === 0 && ['ECONNRESET', 'EPIPE', 'ECONNABORTED'].includes(code)) {
            Object.assign(e, { retryable: true });
          }
          reject(e);
        },
        settled: false,
        received: 0,
        reusable: false,
        done: false,
        cleanup,
      };
      const onAbort = () => c.fail(abortError(signal!));
      if (signal?.aborted) {
        reject(abortError(signal));
        this.put(c, url, !fresh);
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      c.ex = ex;
      c.release = (reusable) => {
        cleanup();
        this.put(c, url, reusable);
      };
      c.socket.ref();
      // silence while the head or the body is awaited
      c.onTimeout = () =>
        c.fail(
          ex.head
            ? httpError('ERR_BODY_TIMEOUT', `${url.origin} sent nothing for ${o.bodyTimeout} ms`)
            : httpError('ERR_HEADERS_TIMEOUT', `no response from ${url.origin} in ${o.headersTimeout} ms`),
        );
      c.socket.setTimeout(o.bodyTimeout);
      headersTimer = setTimeout(
        () => c.fail(httpError('ERR_HEADERS_TIMEOUT', `no response from ${url.origin} in ${o.headersTimeout} ms`)),
        o.headersTimeout,
      );
      let head = `${o.method} ${url.pathname}${url.search} HTTP/1.1\r\n`;
      const headers: Record<string, string> = { host: url.host, ...o.headers };
      for (const [name, value] of Object.entries(headers)) {
        if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\r\n\0]/.test(value)) {
          c.fail(httpError('ERR_INVALID_HTTP_TOKEN', `invalid header ${JSON.stringify(name)}`));
          return;
        }
        head += `${name}: ${value}\r\n`;
      }
      c.socket.write(`${head}\r\n`, 'latin1');
    });
  }

  /** Back to the idle list (unref'd, closed after keepAliveMs), or closed. */
  private put(c: Conn, url: URL, reusable: boolean): void {
    if (!reusable || c.closed || c.socket.destroyed) {
      c.socket.destroy();
      return;
    }
    c.socket.unref();
    c.onTimeout = () => c.socket.destroy();
    c.socket.setTimeout(this.keepAliveMs);
    const key = this.key(url);
    const list = this.idle.get(key) ?? [];
    list.push(c);
    this.idle.set(key, list);
  }
}
