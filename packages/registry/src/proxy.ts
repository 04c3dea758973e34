/**
 * Which proxy a request goes through, read from the environment as docker reads it (Go's
 * `net/http` `ProxyFromEnvironment`, i.e. `golang.org/x/net/http/httpproxy`):
 *
 * - `HTTPS_PROXY` for https URLs, `HTTP_PROXY` for http URLs; the upper-case name wins over the
 *   lower-case one; `HTTP_PROXY` is ignored under CGI (`REQUEST_METHOD` set);
 * - a proxy without a scheme is `http://` (`proxy.corp:3128`);
 * - `NO_PROXY` is a comma-separated list of `*` (nothing is proxied), IPs, CIDRs
 *   (`10.0.0.0/8`), hosts (`example.com` matches it and its subdomains), `.example.com` /
 *   `*.example.com` (subdomains only), each optionally with `:port`;
 * - `localhost` and loopback IPs are never proxied.
 */
import { BlockList, isIP } from 'node:net';
import { domainToASCII } from 'node:url';

/** Picks the proxy for a request URL; undefined: connect directly. */
export type ProxyResolver = (target: URL) => URL | undefined;

/** Proxy settings, as the environment variables hold them (unparsed). */
export interface ProxyEnv {
  httpProxy?: string | undefined;
  httpsProxy?: string | undefined;
  noProxy?: string | undefined;
}

type Env = Record<string, string | undefined>;

/** Reads the proxy variables: upper case first, then lower case, as Go does. */
export function proxyEnvFrom(env: Env = process.env): ProxyEnv {
  const any = (...names: string[]) => names.map((n) => env[n]).find((v) => v !== undefined && v !== '');
  return {
    // CGI: a request's `Proxy:` header arrives as HTTP_PROXY (httpoxy); Go ignores it there
    httpProxy: env.REQUEST_METHOD ? undefined : any('HTTP_PROXY', 'http_proxy'),
    httpsProxy: any('HTTPS_PROXY', 'https_proxy'),
    noProxy: any('NO_PROXY', 'no_proxy'),
  };
}

/** The resolver for the process environment (or `env`), with Go's rules. */
export function proxyFromEnvironment(env: Env = process.env): ProxyResolver {
  return proxyResolver(proxyEnvFrom(env));
}

/** Parses a proxy address; a bare `host:port` is `http://host:port`. Throws on anything else. */
export function parseProxyUrl(value: string, what = 'proxy'): URL {
  const supported = new Set(['http:', 'https:', 'socks5:']);
  let u: URL | undefined;
  try {
    u = new URL(value);
  } catch {}
  if (!u || !supported.has(u.protocol)) {
    try {
      u = new URL(`http://${value}`);
    } catch {
      u = undefined;
    }
  }
  if (!u || !supported.has(u.protocol) || !u.hostname || (u.pathname !== '/' && u.pathname !== '') || u.search) {
    throw new TypeError(
      `${what}: invalid proxy address ${JSON.stringify(value)} (want http://host:port, https://… or socks5://…)`,
    );
  }
  return u;
}

type Matcher = (host: string, port: string, ip: string | undefined) => boolean;

/** Builds a resolver from settings; invalid proxy addresses throw here, naming the variable. */
export function proxyResolver(cfg: ProxyEnv): ProxyResolver {
  const httpProxy = cfg.httpProxy ? parseProxyUrl(cfg.httpProxy, 'HTTP_PROXY') : undefined;
  const httpsProxy = cfg.httpsProxy ? parseProxyUrl(cfg.httpsProxy, 'HTTPS_PROXY') : undefined;
  const bypass = parseNoProxy(cfg.noProxy ?? '');
  return (target) => {
    const proxy = target.protocol === 'https:' ? httpsProxy : target.protocol === 'http:' ? httpProxy : undefined;
    if (!proxy) return undefined;
    const host = target.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    const port = target.port || (target.protocol === 'https:' ? '443' : '80');
    return usesProxy(host, port, bypass) ? proxy : undefined;
  };
}

/** Go's `useProxy`: loopback never; then the NO_PROXY matchers. */
function usesProxy(host: string, port: string, bypass: Matcher[]): boolean {
  if (host === 'localhost') return false;
  const ip = isIP(host) ? canonicalIp(host) : undefined;
  if (ip && isLoopbackIp(ip)) return false;
  return !bypass.some((m) => m(host, port, ip));
}

function parseNoProxy(value: string): Matcher[] {
  const out: Matcher[] = [];
  for (const raw of value.split(',')) {
    const p = raw.trim().toLowerCase();
    if (!p) continue;
    if (p === '*') return [() => true];
    const cidr = parseCidr(p);
    if (cidr) {
      out.push((_h, _p, ip) => ip !== undefined && cidr.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4'));
      continue;
    }
    let [host, port] = splitHostPort(p);
    if (isIP(host)) {
      const want = canonicalIp(host);
      out.push((_h, reqPort, ip) => ip === want && (!port || port === reqPort));
      continue;
    }
    if (!host) continue;
    // `*.example.com` and `.example.com`: subdomains only; `example.com`: it and its subdomains
    if (host.startsWith('*.')) host = host.slice(1);
    const matchHost = !host.startsWith('.');
    const suffix = domainToASCII(matchHost ? `.${host}` : host.slice(1)) || host;
    const dotted = matchHost ? suffix : `.${suffix}`;
    out.push((reqHost, reqPort) => {
      const h = reqHost.replace(/\.$/, '');
      const hit = h.endsWith(dotted) || (matchHost && h === dotted.slice(1));
      return hit && (!port || port === reqPort);
    });
  }
  return out;
}

/** `host:port`, `[v6]:port`, or a bare host (port ''). */
function splitHostPort(p: string): [string, string] {
  const v6 = /^\[([^\]]*)\](?::(\d*))?$/.exec(p);
  if (v6) return [v6[1] ?? '', v6[2] ?? ''];
  const m = /^([^:]*):(\d+)$/.exec(p);
  return m ? [m[1] ?? '', m[2] ?? ''] : [p, ''];
}

function parseCidr(p: string): BlockList | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(p);
  if (!m) return undefined;
  const [addr, bits] = [m[1]!, Number(m[2])];
  const family = isIP(addr);
  if (!family || bits > (family === 4 ? 32 : 128)) return undefined;
  const list = new BlockList();
  list.addSubnet(addr, bits, family === 6 ? 'ipv6' : 'ipv4');
  return list;
}

/** One spelling per address (`::0001` → `::1`; `::ffff:127.0.0.1` → `127.0.0.1`), as Go compares them. */
function canonicalIp(ip: string): string {
  const c = isIP(ip) === 6 ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : new URL(`http://${ip}/`).hostname;
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(c);
  if (!mapped) return c;
  const hi = Number.parseInt(mapped[1]!, 16);
  const lo = Number.parseInt(mapped[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

function isLoopbackIp(ip: string): boolean {
  return ip === '::1' || (isIP(ip) === 4 && ip.startsWith('127.'));
}
