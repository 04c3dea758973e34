// Unit tests against in-process loopback servers: WWW-Authenticate parsing, docker config.json
// credentials and helpers, the token flows (anonymous, basic GET, OAuth2 refresh POST), scope
// escalation and caching, errors with registry codes and hints, and credential stripping.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseReference } from '@stevedore/image';
import { afterAll, describe, expect, it } from 'vitest';
import { DockerConfig, login, logout, parseWwwAuthenticate, RegistryClient, RegistryError } from '../src/index.js';

const work = mkdtempSync(path.join(tmpdir(), 'sd-registry-unit-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('WWW-Authenticate', () => {
  it('parses Bearer with realm/service/scope, quoted commas, escapes, and several challenges', () => {
    const c = parseWwwAuthenticate(
      'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push repository:c:pull", Basic realm="x\\"y, z"',
    );
    expect(c).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.example.com/token',
          service: 'registry.example.com',
          scope: 'repository:a/b:pull,push repository:c:pull',
        },
      },
      { scheme: 'basic', params: { realm: 'x"y, z' } },
    ]);
    expect(parseWwwAuthenticate(['Basic realm=plain', 'BEARER realm="r"'])).toEqual([
      { scheme: 'basic', params: { realm: 'plain' } },
      { scheme: 'bearer', params: { realm: 'r' } },
    ]);
    expect(parseWwwAuthenticate(undefined)).toEqual([]);
  });
});

describe('docker config.json', () => {
  it('reads base64 auth and identitytoken, writes 0600 atomically, logout removes', async () => {
    const dir = path.join(work, 'cfg1');
    const cfg = new DockerConfig({ dir });
    expect(await cfg.get('reg.example:5000')).toBeUndefined();
    await cfg.store('reg.example:5000', { username: 'u', password: 'p:w' });
    const file = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(file.auths['reg.example:5000'].auth).toBe(Buffer.from('u:p:w').toString('base64'));
    expect(statSync(path.join(dir, 'config.json')).mode & 0o777).toBe(0o600);
    expect(await cfg.get('reg.example:5000')).toEqual({ username: 'u', password: 'p:w' });
    // docker hub's legacy key and an https:// key are found by host
    writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({
        auths: {
          'https://index.docker.io/v1/': { identitytoken: 'rt' },
          'https://other.example/v2/': { auth: Buffer.from('a:b').toString('base64') },
        },
        keep: 1,
      }),
    );
    expect(await cfg.get('docker.io')).toEqual({ identityToken: 'rt' });
    expect(await cfg.get('other.example')).toEqual({ username: 'a', password: 'b' });
    expect(await cfg.erase('other.example')).toBe(true);
    const after = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(after.keep).toBe(1);
    expect(after.auths['https://other.example/v2/']).toBeUndefined();
  });

  it('runs docker-credential-<helper> get with the server URL on stdin (credHelpers over credsStore)', async () => {
    const dir = path.join(work, 'cfg2');
    const bin = path.join(work, 'bin');
    for (const [name, user] of [
      ['per', 'helper-user'],
      ['store', '<token>'],
    ] as const) {
      const script = path.join(bin, `docker-credential-${name}`);
      rmSync(script, { force: true });
      require_mkdir(bin);
      writeFileSync(
        script,
        `#!/bin/sh\nread -r server\necho "$1 $server" >> ${path.join(work, `calls-${name}`)}\n` +
          `if [ "$server" = "missing.example" ]; then echo "credentials not found in native keychain"; exit 1; fi\n` +
          `printf '{"ServerURL":"%s","Username":"${user}","Secret":"s3cret"}' "$server"\n`,
      );
      chmodSync(script, 0o755);
    }
    writeFileSync(path.join(work, 'cfg2.json'), '');
    require_mkdir(dir);
    writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({ credsStore: 'store', credHelpers: { 'reg.example:5000': 'per' } }),
    );
    const cfg = new DockerConfig({ dir, helperDir: bin });
    expect(await cfg.get('reg.example:5000')).toEqual({ username: 'helper-user', password: 's3cret' });
    expect(await cfg.get('docker.io')).toEqual({ identityToken: 's3cret' });
    expect(await cfg.get('missing.example')).toBeUndefined();
    expect(readFileSync(path.join(work, 'calls-per'), 'utf8')).toBe('get reg.example:5000\n');
    expect(readFileSync(path.join(work, 'calls-store'), 'utf8')).toBe(
      'get https://index.docker.io/v1/\nget missing.example\n',
    );
  });
});

function require_mkdir(d: string) {
  mkdirSync(d, { recursive: true });
}

/** Whether granted scopes (space-separated) cover `need` (resource:actions). */
function covers(have: string, need: string): boolean {
  const i = need.lastIndexOf(':');
  const res = need.slice(0, i);
  const want = need.slice(i + 1).split(',');
  return have.split(' ').some((g) => {
    const j = g.lastIndexOf(':');
    return (
      g.slice(0, j) === res &&
      want.every((a) =>
        g
          .slice(j + 1)
          .split(',')
          .includes(a),
      )
    );
  });
}

interface Fake {
  url: string;
  host: string;
  log: { path: string; auth: string | undefined; method: string; body?: string }[];
  tokenRequests: { method: string; query: URLSearchParams; auth: string | undefined; body: string }[];
  close(): Promise<void>;
}

/** A fake registry + token server on one loopback port: Bearer auth, user "u"/"p", refresh token "rt". */
async function fakeTokenRegistry(): Promise<Fake> {
  const f: Fake = { url: '', host: '', log: [], tokenRequests: [], close: async () => {} };
  let n = 0;
  const granted = new Map<string, string>(); // token → scope
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      if (u.pathname === '/token') {
        f.tokenRequests.push({
          method: req.method ?? '',
          query: u.searchParams,
          auth: req.headers.authorization,
          body,
        });
        const form = new URLSearchParams(body);
        let scope = u.searchParams.getAll('scope').join(' ');
        let ok = req.headers.authorization === `Basic ${Buffer.from('u:p').toString('base64')}`;
        if (req.method === 'POST') {
          ok = form.get('grant_type') === 'refresh_token' && form.get('refresh_token') === 'rt';
          scope = form.get('scope') ?? '';
        }
        if (!req.headers.authorization && req.method === 'GET') ok = !scope.includes('push'); // anonymous pull
        if (!ok) {
          res.writeHead(401, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
          return;
        }
        const t = `tok${++n}`;
        granted.set(t, scope);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify(req.method === 'POST' ? { access_token: t, expires_in: 300 } : { token: t, expires_in: 300 }),
        );
        return;
      }
      const auth = req.headers.authorization;
      f.log.push({ path: u.pathname, auth, method: req.method ?? '' });
      const m = /^\/v2\/(.+)\/(manifests|blobs)\//.exec(u.pathname);
      const need = m
        ? `repository:${m[1]}:${req.method === 'GET' || req.method === 'HEAD' ? 'pull' : 'pull,push'}`
        : '';
      const tok = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
      const have = tok ? granted.get(tok) : undefined;
      if (have === undefined || (need && !covers(have, need))) {
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="${f.url}/token",service="fake"${need ? `,scope="${need}"` : ''}`,
          'content-type': 'application/json',
        });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        return;
      }
      if (u.pathname === '/v2/') {
        res.writeHead(200);
        res.end('{}');
        return;
      }
      if (req.method === 'HEAD') {
        res.writeHead(404);
        res.end();
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  f.url = `http://127.0.0.1:${port}`;
  f.host = `127.0.0.1:${port}`;
  f.close = () => new Promise((r) => server.close(() => r()));
  return f;
}

describe('token auth against a fake token server', () => {
  it('anonymous pull token; errors carry status, registry codes and a login hint', async () => {
    const f = await fakeTokenRegistry();
    const c = new RegistryClient({ credentials: false });
    try {
      const ref = parseReference(`${f.host}/team/app:1`);
      const e = await c.getManifest(ref).catch((x) => x as RegistryError);
      expect(e).toBeInstanceOf(RegistryError);
      expect((e as RegistryError).code).toBe('ERR_REGISTRY_NOT_FOUND');
      expect((e as RegistryError).has('MANIFEST_UNKNOWN')).toBe(true);
      expect((e as RegistryError).message).toContain(`${f.host}/team/app`);
      expect(f.tokenRequests[0]!.query.getAll('scope')).toEqual(['repository:team/app:pull']);
      expect(f.tokenRequests[0]!.auth).toBeUndefined();
      // push needs credentials: anonymous push is refused with the hint
      const p = await c
        .blobExists(ref, ref.withDigest(`sha256:${'a'.repeat(64)}`).digest!, { push: true })
        .catch((x) => x as RegistryError);
      expect((p as RegistryError).code).toBe('ERR_REGISTRY_UNAUTHORIZED');
      expect((p as RegistryError).message).toContain(`run \`stevedore login ${f.host}\``);
    } finally {
      await c.close();
      await f.close();
    }
  });

  it('basic credentials via GET, token cache per scope, escalation pull → pull,push', async () => {
    const f = await fakeTokenRegistry();
    const c = new RegistryClient({ credentials: async () => ({ username: 'u', password: 'p' }) });
    try {
      const ref = parseReference(`${f.host}/app:1`);
      const d = ref.withDigest(`sha256:${'b'.repeat(64)}`).digest!;
      expect(await c.blobExists(ref, d)).toBe(false);
      expect(await c.blobExists(ref, d)).toBe(false);
      expect(f.tokenRequests).toHaveLength(1); // cached
      expect(f.tokenRequests[0]!.auth).toBe(`Basic ${Buffer.from('u:p').toString('base64')}`);
      expect(f.tokenRequests[0]!.query.get('account')).toBe('u');
      expect(f.tokenRequests[0]!.query.get('service')).toBe('fake');
      expect(await c.blobExists(ref, d, { push: true })).toBe(false);
      expect(f.tokenRequests).toHaveLength(2);
      expect(f.tokenRequests[1]!.query.getAll('scope')).toEqual(['repository:app:pull,push']);
      // after the first challenge, tokens are fetched before the request: no further 401 round trips
      const before = f.log.length;
      await c.blobExists(ref, d, { push: true });
      expect(f.log.length).toBe(before + 1);
    } finally {
      await c.close();
      await f.close();
    }
  });

  it('identity token → OAuth2 POST with grant_type=refresh_token', async () => {
    const f = await fakeTokenRegistry();
    const c = new RegistryClient({ credentials: async () => ({ identityToken: 'rt' }) });
    try {
      await c.ping(f.host);
      const ref = parseReference(`${f.host}/x:1`);
      await c.blobExists(ref, ref.withDigest(`sha256:${'c'.repeat(64)}`).digest!, { push: true });
      const posts = f.tokenRequests.filter((t) => t.method === 'POST');
      expect(posts.length).toBeGreaterThan(0);
      const form = new URLSearchParams(posts.at(-1)!.body);
      expect(form.get('grant_type')).toBe('refresh_token');
      expect(form.get('scope')).toBe('repository:x:pull,push');
      expect(form.get('service')).toBe('fake');
    } finally {
      await c.close();
      await f.close();
    }
  });

  it('login verifies against the registry and writes config.json; logout removes it', async () => {
    const f = await fakeTokenRegistry();
    const dir = path.join(work, 'cfg-login');
    try {
      await expect(login(f.host, { username: 'u', password: 'wrong' }, { config: { dir } })).rejects.toThrow(
        /unauthorized/,
      );
      await login(f.host, { username: 'u', password: 'p' }, { config: { dir } });
      expect(statSync(path.join(dir, 'config.json')).mode & 0o777).toBe(0o600);
      expect(await new DockerConfig({ dir }).get(f.host)).toEqual({ username: 'u', password: 'p' });
      expect(await logout(f.host, { config: { dir } })).toBe(true);
      expect(await new DockerConfig({ dir }).get(f.host)).toBeUndefined();
    } finally {
      await f.close();
    }
  });

  it('Docker Hub (docker.io) is reached at registry-1.docker.io, as docker does', async () => {
    // a forward proxy that records where the CONNECT tunnel should go, then refuses it (no internet here)
    const targets: string[] = [];
    const proxy = http.createServer();
    proxy.on('connect', (req, socket) => {
      targets.push(req.url ?? '');
      socket.end('HTTP/1.1 502 Bad Gateway\r\n\r\n');
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const c = new RegistryClient({
      credentials: false,
      proxy: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
      retry: { retries: 0 },
    });
    try {
      const e = await c.getManifest(parseReference('busybox:latest')).catch((x) => x as RegistryError);
      expect(e).toBeInstanceOf(RegistryError);
      expect((e as RegistryError).message).toContain('https://registry-1.docker.io');
      expect(targets).toEqual(['registry-1.docker.io:443']);
    } finally {
      await c.close();
      await new Promise((r) => proxy.close(r));
    }
  });

  it('refuses a plain-HTTP token realm for a registry that is not insecure or loopback', async () => {
    const { Transport } = await import('../src/transport.js');
    const t = new Transport({ credentials: false });
    expect(t.allowsHttp('registry.example.com')).toBe(false);
    expect(t.allowsHttp('127.0.0.1:5000')).toBe(true);
    expect(t.allowsHttp('localhost:5000')).toBe(true);
    expect(new Transport({ insecureRegistries: ['r.lan:5000'] }).allowsHttp('r.lan:5000')).toBe(true);
    // https-only registries never fall back to HTTP
    const c = new RegistryClient({ credentials: false, retry: { retries: 0 } });
    const e = await c.ping('registry.invalid').catch((x) => x as RegistryError);
    expect((e as RegistryError).code).toBe('ERR_REGISTRY_NETWORK');
    await c.close();
  });
});
