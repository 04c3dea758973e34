// The real clients against our server: dockerd pushes, pulls and runs; skopeo copies to and from
// it; docker login / skopeo --creds against htpasswd (bcrypt, written by `htpasswd -B`) over TLS.
// Skips when not root or dockerd is missing, unless STEVEDORE_REQUIRE_DOCKER=1.
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bins,
  buildScratchImage,
  cleanupAll,
  createTlsMaterials,
  type Dockerd,
  installExitHooks,
  run,
  startDockerd,
} from '../../../test/harness/index.js';
import { garbageCollect, type RunningServer, startServer } from '../src/index.js';
import { req, sha, tempDir } from './helpers.js';
import { ISSUER, makePki, SERVICE, startTokenServer, USERS } from './tokens.js';

const SKOPEO = process.env.STEVEDORE_SKOPEO ?? '/usr/bin/skopeo';
const canRun = process.getuid?.() === 0 && existsSync(bins.dockerd) && existsSync(bins.docker) && existsSync(SKOPEO);
const required = process.env.STEVEDORE_REQUIRE_DOCKER === '1';

installExitHooks();
afterAll(async () => {
  await cleanupAll();
});

it.runIf(required && !canRun)('STEVEDORE_REQUIRE_DOCKER=1 but root, dockerd or skopeo is missing', () => {
  expect.fail(`need root and ${bins.dockerd}, ${bins.docker}, ${SKOPEO}`);
});

// async: the server under test runs in this process, a sync child would block it
const skopeo = async (args: string[]) => (await run(SKOPEO, args, { timeoutMs: 120_000 })).stdout;

describe.skipIf(!canRun)('dockerd and skopeo against stevedore serve', () => {
  let d: Dockerd;
  let s: RunningServer;
  const root = tempDir('docker-root');
  const work = tempDir('docker-work');
  const logs: string[] = [];

  beforeAll(async () => {
    [d, s] = await Promise.all([startDockerd(), startServer({ root, log: (l) => logs.push(l) })]);
    await buildScratchImage(d, 'sd-serve-src:1', { 'msg.txt': 'hello from stevedore serve\n' }, '', {
      busybox: true,
      cmd: ['/bin/busybox', 'cat', '/msg.txt'],
    });
  });
  afterAll(async () => {
    await s?.close();
    await d?.stop();
  });

  it('docker push, rmi, pull, run --network none', async () => {
    const ref = `${s.host}/sd/x:1`;
    await d.docker(['tag', 'sd-serve-src:1', ref]);
    const push = await d.docker(['push', ref]);
    const digest = /digest: (sha256:[a-f0-9]{64})/.exec(push.stdout)![1]!;
    // what docker pushed is what we store, under that digest
    const m = await req(`${s.url}/v2/sd/x/manifests/1`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' },
    });
    expect(m.status).toBe(200);
    expect(sha(m.body)).toBe(digest);
    expect(m.headers.get('content-type')).toBe('application/vnd.docker.distribution.manifest.v2+json');
    // a second push is all "Layer already exists" (HEAD hits)
    expect((await d.docker(['push', ref])).stdout).toContain('already exists');

    await d.docker(['rmi', ref, 'sd-serve-src:1']);
    await d.docker(['pull', ref]);
    const { stdout } = await d.docker(['run', '--rm', '--network', 'none', ref]);
    expect(stdout).toBe('hello from stevedore serve\n');
    const { stdout: rd } = await d.docker(['image', 'inspect', '--format', '{{index .RepoDigests 0}}', ref]);
    expect(rd.trim()).toBe(`${s.host}/sd/x@${digest}`);
    // one log line per request
    expect(logs.some((l) => /"PUT \/v2\/sd\/x\/manifests\/1 HTTP\/1\.1" 201/.test(l))).toBe(true);
  });

  it('skopeo copies from it to an OCI layout and back into another repository; docker runs the copy', async () => {
    const layout = path.join(work, 'layout');
    await skopeo(['copy', '--src-tls-verify=false', `docker://${s.host}/sd/x:1`, `oci:${layout}:copied`]);
    await skopeo(['copy', '--dest-tls-verify=false', `oci:${layout}:copied`, `docker://${s.host}/sd/y:2`]);
    const inspect = JSON.parse(await skopeo(['inspect', '--tls-verify=false', `docker://${s.host}/sd/y:2`]));
    expect(inspect.Name).toBe(`${s.host}/sd/y`);
    const m = await req(`${s.url}/v2/sd/y/manifests/2`);
    expect(m.headers.get('content-type')).toBe('application/vnd.oci.image.manifest.v1+json');
    const { stdout } = await d.docker(['run', '--rm', '--network', 'none', `${s.host}/sd/y:2`]);
    expect(stdout).toBe('hello from stevedore serve\n');
    // the catalog sees both, and garbage collection keeps everything that is referenced
    expect((await req(`${s.url}/v2/_catalog`)).json().repositories).toEqual(['sd/x', 'sd/y']);
    const gc = await garbageCollect(root, { dryRun: true });
    expect(gc.deleted).toEqual([]);
  });

  it('docker login + push and skopeo --creds against htpasswd over TLS; wrong password → 401', async () => {
    const tls = await createTlsMaterials({ dir: path.join(work, 'tls') });
    const htpasswd = path.join(work, 'htpasswd');
    writeFileSync(htpasswd, execFileSync(bins.htpasswd, ['-Bbn', 'alice', 's3cret'], { encoding: 'utf8' }));
    const a = await startServer({
      root: tempDir('docker-auth-root'),
      htpasswd,
      tls: { cert: tls.certPath, key: tls.keyPath },
    });
    try {
      expect(a.url.startsWith('https://')).toBe(true);
      const bad = await d.docker(['login', '-u', 'alice', '--password-stdin', a.host], {
        input: 'wrong\n',
        allowFailure: true,
      });
      expect(bad.code).not.toBe(0);
      await d.docker(['login', '-u', 'alice', '--password-stdin', a.host], { input: 's3cret\n' });
      const ref = `${a.host}/private/x:1`;
      await d.docker(['tag', `${s.host}/sd/x:1`, ref]);
      await d.docker(['push', ref]);
      await d.docker(['rmi', ref]);
      await d.docker(['pull', ref]);
      await skopeo([
        'copy',
        '--src-tls-verify=false',
        '--src-creds',
        'alice:s3cret',
        `docker://${ref}`,
        `oci:${path.join(work, 'l2')}:x`,
      ]);
      await expect(
        skopeo(['inspect', '--tls-verify=false', '--creds', 'alice:nope', `docker://${ref}`]),
      ).rejects.toThrow(/401|nauthorized/);
    } finally {
      await a.close();
    }
  });

  it('token auth: docker login, push, pull and run through the token realm (ES256, x5c chain); refusals', async () => {
    const pki = await makePki(path.join(work, 'pki'));
    const tokens = await startTokenServer(pki.ec);
    const a = await startServer({
      root: tempDir('docker-token-root'),
      token: { realm: tokens.url, service: SERVICE, issuer: ISSUER, rootCertBundle: pki.bundlePath },
    });
    try {
      const bad = await d.docker(['login', '-u', 'alice', '--password-stdin', a.host], {
        input: 'wrong\n',
        allowFailure: true,
      });
      expect(bad.code).not.toBe(0);
      await d.docker(['login', '-u', 'alice', '--password-stdin', a.host], { input: `${USERS.alice}\n` });
      const ref = `${a.host}/alice/app:1`;
      await d.docker(['tag', `${s.host}/sd/x:1`, ref]);
      await d.docker(['push', ref]);
      // dockerd went to the realm itself, as alice, for push on alice/app
      const pushScope = /^repository:alice\/app:(pull,push|push,pull)$/;
      expect(tokens.requests.some((r) => r.user === 'alice' && r.scopes.some((x) => pushScope.test(x)))).toBe(true);
      await d.docker(['rmi', ref]);
      await d.docker(['pull', ref]);
      const { stdout } = await d.docker(['run', '--rm', '--network', 'none', ref]);
      expect(stdout).toBe('hello from stevedore serve\n');
      // alice may not push elsewhere: the token lacks the scope, our server refuses
      const other = `${a.host}/bob/app:1`;
      await d.docker(['tag', ref, other]);
      const denied = await d.docker(['push', other], { allowFailure: true });
      expect(denied.code).not.toBe(0);
      expect(denied.stderr + denied.stdout).toMatch(/denied|unauthorized|authentication required/i);
      // logged out, an anonymous pull of alice/app is refused
      await d.docker(['logout', a.host]);
      await d.docker(['rmi', ref, other]);
      const anon = await d.docker(['pull', ref], { allowFailure: true });
      expect(anon.code).not.toBe(0);
    } finally {
      await a.close();
      await tokens.close();
    }
  });
});
