// HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment, through a real proxy (squid on
// loopback) to the real distribution registry. The registry is named registry.stevedore.test,
// which only squid resolves (its own hosts file): loopback names are never proxied, as in docker.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { type Registry, startRegistry } from '../../../test/harness/index.js';
import { SQUID, type Squid, startSquid } from '../../registry/test/squid.js';
import { layeredImage, stevedore, writeLayout } from './fixtures.js';

const { canRun: harnessOk } = useRealComponents({ registry: true, dockerd: false });
const canRun = harnessOk && existsSync(SQUID);

describe.skipIf(!canRun)('proxy environment variables', () => {
  let reg: Registry;
  let squid: Squid;
  const work = mkdtempSync(join(tmpdir(), 'sd-cli-proxy-'));
  const image = layeredImage([{ 'etc/motd': 'proxied\n' }]);

  beforeAll(async () => {
    reg = await startRegistry();
    squid = await startSquid({ 'registry.stevedore.test': '127.0.0.1' });
    await writeLayout(join(work, 'layout'), image, 'v1');
    const r = await stevedore(['-q', 'copy', `oci:${join(work, 'layout')}:v1`, `docker://${reg.host}/sd/p:1`]);
    expect(r.code, r.stderr).toBe(0);
  }, 60_000);
  afterAll(async () => {
    await squid?.stop();
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('requests go through HTTPS_PROXY/HTTP_PROXY; NO_PROXY sends them direct', async () => {
    const named = `registry.stevedore.test:${reg.port}`;
    const args = ['--insecure-registry', named, 'manifest', `${named}/sd/p:1`];
    const env = { HTTPS_PROXY: squid.url, http_proxy: squid.url };
    const r = await stevedore(args, { env });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).config.digest).toBe(image.manifest.config.digest.toString());
    const log = squid.log();
    expect(log.some((l) => l.includes(`GET http://${named}/v2/sd/p/manifests/1`))).toBe(true);

    const direct = await stevedore(args, { env: { ...env, NO_PROXY: '.stevedore.test' } });
    expect(direct.code).toBe(1);
    expect(direct.stderr).toMatch(/ENOTFOUND|EAI_AGAIN/);
    expect(squid.log().length).toBe(log.length);
  });

  it('documents them in --help', async () => {
    const h = await stevedore(['--help']);
    expect(h.stdout).toMatch(/HTTPS_PROXY, HTTP_PROXY/);
    expect(h.stdout).toMatch(/NO_PROXY/);
  });
});
