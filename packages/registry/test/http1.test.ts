// The plain-HTTP/1.1 reader (src/http1.ts) against loopback servers that write exact bytes:
// every framing (Content-Length, chunked split anywhere, until close, none), keep-alive reuse
// and the retry of a pooled connection the server closed, interim responses, timeouts, aborts,
// malformed responses, backpressure, and the same answers as node's http for real servers.
import { createHash, randomBytes } from 'node:crypto';
import { getEventListeners } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { HttpRequest, HttpResponse } from '../src/http.js';
import { Http1Pool } from '../src/http1.js';

const servers: net.Server[] = [];
let pool = new Http1Pool(10_000);
afterEach(() => {
  pool.close();
  pool = new Http1Pool(10_000);
});
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

/** A raw server: `onRequest(socket, head, n)` for each request head (n counts them per connection). */
async function rawServer(
  onRequest: (socket: net.Socket, head: string, n: number) => void,
): Promise<{ url: (p?: string) => URL; connections: () => number; heads: string[] }> {
  let connections = 0;
  const heads: string[] = [];
  const server = net.createServer((socket) => {
    connections++;
    let buf = '';
    let n = 0;
    socket.on('error', () => {});
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        heads.push(head);
        onRequest(socket, head, n++);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { url: (p = '/') => new URL(`http://127.0.0.1:${port}${p}`), connections: () => connections, heads };
}

const req = (o: Partial<HttpRequest> = {}): HttpRequest => ({
  method: 'GET',
  headers: {},
  headersTimeout: 5_000,
  bodyTimeout: 5_000,
  ...o,
});

async function text(r: HttpResponse): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of r.body) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('latin1');
}

/** Writes `data` in pieces of the given sizes, a tick apart (so they arrive as separate reads). */
async function writeSplit(socket: net.Socket, data: Buffer, sizes: number[]): Promise<void> {
  let at = 0;
  for (const n of sizes) {
    if (at >= data.length) break;
    socket.write(data.subarray(at, at + n));
    at += n;
    await new Promise((r) => setTimeout(r, 2));
  }
  if (at < data.length) socket.write(data.subarray(at));
}

describe('Http1Pool', () => {
  it('reads Content-Length bodies and reuses the connection', async () => {
    const s = await rawServer((sock, head) => {
      const body = head.startsWith('GET /a') ? 'alpha' : 'beta!!';
      sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nX-Two: 1\r\nx-two: 2\r\n\r\n${body}`);
    });
    const a = await pool.request(s.url('/a?q=1'), req({ headers: { accept: 'x/y', authorization: 'Bearer t' } }));
    expect(a.statusCode).toBe(200);
    expect(a.headers['x-two']).toEqual(['1', '2']);
    expect(a.headers['content-length']).toBe('5');
    expect(await text(a)).toBe('alpha');
    const b = await pool.request(s.url('/b'), req());
    expect(await text(b)).toBe('beta!!');
    expect(s.connections()).toBe(1);
    expect(s.heads[0]).toMatch(
      /^GET \/a\?q=1 HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\naccept: x\/y\r\nauthorization: Bearer t$/,
    );
  });

  it('decodes chunked bodies split at every byte, with extensions and trailers', async () => {
    const payload = randomBytes(3000);
    const wire = Buffer.concat([
      Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'),
      Buffer.from('a;name=value\r\n'),
      payload.subarray(0, 10),
      Buffer.from(`\r\n${(2990).toString(16).toUpperCase()} \r\n`),
      payload.subarray(10),
      Buffer.from('\r\n0\r\nX-Trailer: t\r\n\r\n'),
    ]);
    for (const sizes of [[wire.length], Array(wire.length).fill(1), [7, 40, 3, 1, 13, 2000, 5]]) {
      const s = await rawServer((sock) => void writeSplit(sock, wire, sizes));
      const r = await pool.request(s.url(), req());
      const parts: Buffer[] = [];
      for await (const c of r.body) parts.push(c as Buffer);
      expect(Buffer.concat(parts).equals(payload)).toBe(true);
      // the connection is reusable after the trailers
      const again = await pool.request(s.url(), req());
      expect((await text(again)).length).toBe(3000);
      expect(s.connections()).toBe(1);
    }
  }, 30_000);

  it('reads a body without length until the server closes, and does not reuse that connection', async () => {
    const s = await rawServer((sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\nuntil ');
      setTimeout(() => sock.end('close'), 20);
    });
    expect(await text(await pool.request(s.url(), req()))).toBe('until close');
    expect(await text(await pool.request(s.url(), req()))).toBe('until close');
    expect(s.connections()).toBe(2);
  });

  it('knows bodiless responses: HEAD, 204, 304, Content-Length 0', async () => {
    const s = await rawServer((sock, head) => {
      if (head.startsWith('HEAD')) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n');
      else if (head.includes('/204')) sock.write('HTTP/1.1 204 No Content\r\n\r\n');
      else if (head.includes('/304')) sock.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n');
      else sock.write('HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n');
    });
    const head = await pool.request(s.url('/blob'), req({ method: 'HEAD' }));
    expect([head.statusCode, head.headers['content-length'], await text(head)]).toEqual([200, '1234', '']);
    for (const [p, code] of [
      ['/204', 204],
      ['/304', 304],
      ['/x', 202],
    ] as const) {
      const r = await pool.request(s.url(p), req({ method: 'DELETE' }));
      expect([r.statusCode, await text(r)]).toEqual([code, '']);
    }
    expect(s.connections()).toBe(1);
  });

  it('skips interim responses', async () => {
    const s = await rawServer((sock) => {
      sock.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n');
      setTimeout(() => sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), 5);
    });
    const r = await pool.request(s.url(), req());
    expect([r.statusCode, await text(r)]).toEqual([200, 'ok']);
  });

  it('honours Connection: close and HTTP/1.0', async () => {
    const s = await rawServer((sock, head) => {
      if (head.includes('/close')) sock.write('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na');
      else sock.write('HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb');
    });
    expect(await text(await pool.request(s.url('/close'), req()))).toBe('a');
    expect(await text(await pool.request(s.url('/old'), req()))).toBe('b');
    expect(await text(await pool.request(s.url('/old'), req()))).toBe('b');
    expect(s.connections()).toBe(3);
  });

  it('retries once on a new connection when a pooled one was closed by the server', async () => {
    const s = await rawServer((sock, _head, n) => {
      if (n === 0) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi');
      // the second request on a connection: the server has given up on it
      else sock.destroy();
    });
    expect(await text(await pool.request(s.url(), req()))).toBe('hi');
    expect(await text(await pool.request(s.url(), req()))).toBe('hi');
    expect(s.connections()).toBe(2);
  });

  it('fails a body cut short, and a fresh connection refused, with network errors', async () => {
    const s = await rawServer((sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this');
      setTimeout(() => sock.destroy(), 10);
    });
    const r = await pool.request(s.url(), req());
    await expect(text(r)).rejects.toMatchObject({ code: 'ECONNRESET' });
    const closed = net.createServer();
    await new Promise<void>((ok) => closed.listen(0, '127.0.0.1', ok));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((ok) => closed.close(ok));
    await expect(pool.request(new URL(`http://127.0.0.1:${port}/`), req())).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    });
  });

  it('refuses malformed responses by name', async () => {
    const cases: [string, RegExp][] = [
      ['HTTP/2 200 OK\r\n\r\n', /bad status line/],
      ['HTTP/1.1 200 OK\r\n folded: x\r\n\r\n', /bad header line/],
      ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', /bad content-length/],
      ['HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', /bad content-length/],
      ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /bad chunk size/],
      ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n', /not followed by CRLF/],
      ['HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabcd', /more bytes than the content-length/],
      [`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(70_000)}`, /response head larger/],
    ];
    for (const [wire, message] of cases) {
      const s = await rawServer((sock) => sock.write(wire));
      await expect(pool.request(s.url(), req()).then(text), JSON.stringify(wire.slice(0, 40))).rejects.toThrow(message);
    }
  });

  it('times out a silent server, and aborts before the head and in the body', async () => {
    const s = await rawServer((sock, head) => {
      if (head.includes('/slow-body')) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
      // '/silent': nothing
    });
    await expect(
      pool.request(s.url('/silent'), req({ headersTimeout: 150, bodyTimeout: 10_000 })),
    ).rejects.toMatchObject({
      code: 'ERR_HEADERS_TIMEOUT',
    });
    const slow = await pool.request(s.url('/slow-body'), req({ bodyTimeout: 150 }));
    await expect(text(slow)).rejects.toMatchObject({ code: 'ERR_BODY_TIMEOUT' });

    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    await expect(pool.request(s.url('/silent'), req({ signal: ac.signal }))).rejects.toMatchObject({
      name: 'AbortError',
    });
    const ac2 = new AbortController();
    const r = await pool.request(s.url('/slow-body'), req({ signal: ac2.signal }));
    setTimeout(() => ac2.abort(), 50);
    await expect(text(r)).rejects.toMatchObject({ name: 'AbortError' });
    // a request that ended (read to its end, or dropped by its reader) leaves no listener behind
    const ac4 = new AbortController();
    const s2 = await rawServer((sock) => sock.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfull'));
    expect(await text(await pool.request(s2.url(), req({ signal: ac4.signal })))).toBe('full');
    const dropped = await pool.request(s.url('/slow-body'), req({ signal: ac4.signal }));
    dropped.body.destroy();
    expect(getEventListeners(ac4.signal, 'abort')).toHaveLength(0);
    const ac3 = new AbortController();
    ac3.abort();
    await expect(pool.request(s.url('/silent'), req({ signal: ac3.signal }))).rejects.toMatchObject({
      name: 'AbortError',
    });
  });

  it('refuses header names and values that would split the request', async () => {
    const s = await rawServer((sock) => sock.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    await expect(pool.request(s.url(), req({ headers: { 'x-a': 'b\r\nInjected: 1' } }))).rejects.toMatchObject({
      code: 'ERR_INVALID_HTTP_TOKEN',
    });
    await expect(pool.request(s.url(), req({ headers: { 'bad name': 'v' } }))).rejects.toMatchObject({
      code: 'ERR_INVALID_HTTP_TOKEN',
    });
    expect(s.heads).toEqual([]);
  });

  it('a slow reader holds the socket back (bounded memory) and gets every byte, in order', async () => {
    const size = 48 << 20;
    const payload = randomBytes(1 << 20);
    const server = http.createServer((_q, res) => {
      res.writeHead(200, { 'content-length': size });
      let sent = 0;
      const pump = () => {
        while (sent < size) {
          sent += payload.length;
          if (!res.write(payload)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    servers.push(server as unknown as net.Server);
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/big`);
    const r = await pool.request(url, req());
    const want = createHash('sha256');
    for (let i = 0; i < size / payload.length; i++) want.update(payload);
    const got = createHash('sha256');
    let n = 0;
    let maxBuffered = 0;
    for await (const c of r.body) {
      got.update(c as Buffer);
      n += (c as Buffer).length;
      maxBuffered = Math.max(maxBuffered, r.body.readableLength);
      if (n < 8 << 20) await new Promise((ok) => setTimeout(ok, 1)); // slow at first
    }
    expect(n).toBe(size);
    expect(got.digest('hex')).toBe(want.digest('hex'));
    expect(maxBuffered).toBeLessThanOrEqual(4);
  }, 30_000);

  it('connects to an IPv6 literal and sends its Host with brackets', async () => {
    const server = http.createServer((q, res) => res.end(`host=${q.headers.host}`));
    const listening = await new Promise<boolean>((ok) => {
      server.once('error', () => ok(false));
      server.listen(0, '::1', () => ok(true));
    });
    if (!listening) return; // no IPv6 loopback on this machine
    servers.push(server as unknown as net.Server);
    const port = (server.address() as AddressInfo).port;
    const r = await pool.request(new URL(`http://[::1]:${port}/v2/`), req());
    expect([r.statusCode, await text(r)]).toEqual([200, `host=[::1]:${port}`]);
  });

  it('answers as node http does for a real server: status, headers, body', async () => {
    const server = http.createServer((q, res) => {
      if (q.url === '/chunked') {
        res.setHeader('set-cookie', ['a=1', 'b=2']);
        res.write('part one, ');
        setTimeout(() => res.end('part two'), 5);
      } else {
        res.writeHead(404, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
        res.end('{"errors":[{"code":"BLOB_UNKNOWN"}]}');
      }
    });
    servers.push(server as unknown as net.Server);
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    for (const p of ['/chunked', '/missing']) {
      const ours = await pool.request(new URL(base + p), req());
      const theirs = await new Promise<http.IncomingMessage>((ok) => http.get(base + p, ok));
      const body = await text(ours);
      const parts: Buffer[] = [];
      for await (const c of theirs) parts.push(c as Buffer);
      expect(body).toBe(Buffer.concat(parts).toString('latin1'));
      expect(ours.statusCode).toBe(theirs.statusCode);
      for (const [k, v] of Object.entries(theirs.headersDistinct)) {
        if (k === 'date') continue;
        expect(ours.headers[k], k).toEqual(v!.length === 1 ? v![0] : v);
      }
    }
  });
});
