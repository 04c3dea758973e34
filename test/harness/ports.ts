// Loopback ports and readiness polling.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export const LOOPBACK = '127.0.0.1';

/**
 * A TCP port that was free on 127.0.0.1 a moment ago (the kernel picks it; we close it again).
 * Another process can still take it before the caller binds, so servers started on it should
 * retry on "address already in use" (startRegistry does).
 */
export function getFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, LOOPBACK, () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr && typeof addr === 'object') resolve(addr.port);
        else reject(new Error('could not allocate a port'));
      });
    });
  });
}

export interface WaitOptions {
  /** Give up after this long. Default 15 s. */
  timeoutMs?: number;
  /** Delay between attempts. Default 50 ms. */
  intervalMs?: number;
  /**
   * Called before every attempt; throw from it to stop waiting early, e.g. when the server
   * process already exited (no point waiting for the full timeout then).
   */
  check?: () => void;
  /** Describes what we wait for, for the timeout error. */
  what?: string;
}

/** Poll `attempt` until it returns a value other than undefined. */
export async function waitFor<T>(attempt: () => Promise<T | undefined>, opts: WaitOptions = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  let last: unknown;
  for (;;) {
    opts.check?.();
    try {
      const v = await attempt();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? `: ${last.message}` : '';
      throw new Error(`timed out waiting for ${opts.what ?? 'condition'}${why}`);
    }
    await sleep(opts.intervalMs ?? 50);
  }
}

/** Resolves true if a TCP connect to host:port succeeds, false otherwise. */
export function canConnect(port: number, host = LOOPBACK, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

export async function waitForPort(port: number, opts: WaitOptions & { host?: string } = {}): Promise<void> {
  const host = opts.host ?? LOOPBACK;
  await waitFor(async () => ((await canConnect(port, host)) ? true : undefined), {
    what: `${host}:${port} to accept connections`,
    ...opts,
  });
}

export interface HttpProbeOptions {
  /** PEM CA(s) to trust for https URLs (node:https takes a CA directly; global fetch cannot). */
  ca?: string | Buffer;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

/** GET a URL and return its status code (the body is discarded). Rejects on transport errors. */
export function httpStatus(url: string, opts: HttpProbeOptions = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.get(u, { ca: opts.ca, headers: opts.headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 2000, () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

/**
 * Wait until GET `url` answers with one of `statuses` (default: any status below 500).
 * Resolves with the status seen.
 */
export async function waitForHttp(
  url: string,
  opts: WaitOptions & HttpProbeOptions & { statuses?: readonly number[] } = {},
): Promise<number> {
  const ok = (s: number) => (opts.statuses ? opts.statuses.includes(s) : s > 0 && s < 500);
  return waitFor(
    async () => {
      const s = await httpStatus(url, opts);
      if (ok(s)) return s;
      throw new Error(`status ${s}`);
    },
    { what: `GET ${url}`, ...opts },
  );
}
