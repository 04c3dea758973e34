// The client through a real forward proxy (squid on loopback) in front of the real distribution
// registry. Docker's (Go's) environment rules never proxy loopback addresses, so the
// environment-rule cases name the registry `registry.stevedore.test`, a name that only the proxy
// can resolve (squid's own hosts file): a request that reaches the registry went through the
// proxy, and one that bypasses it fails to resolve. The explicit `proxy:` option proxies
// everything, loopback included, which covers the TLS registry on 127.0.0.1 (CONNECT tunnel,
// certificate still verified against the registry's certs.d CA).
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseReference } from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { makeTempDir, type Registry, startRegistry } from '../../../test/harness/index.js';
import { proxyFromEnvironment, pullImage, RegistryClient, RegistryError, registrySink } from '../src/index.js';
import { collect, layerTar, memImage } from './fixtures.js';
import { SQUID, type Squid, startSquid } from './squid.js';

const { canRun: harnessOk } = useRealComponents({ registry: true, dockerd: false });
const canRun = harnessOk && existsSync(SQUID);
it.runIf(process.env.STEVEDORE_REQUIRE_DOCKER === '1' && !existsSync(SQUID))('squid is installed', () => {
  expect.fail(`need ${SQUID} (apt-get install squid)`);
});

const NAME = 'registry.stevedore.test';
const image = memImage([layerTar({ 'a.txt': 'through the proxy\n' }), layerTar({ 'b.txt': 'second layer\n' })], {
  gzip: true,
});
const base = { credentials: false as const, retry: { retries: 1, baseDelayMs: 10 } };

describe.skipIf(!canRun)('through a real proxy (squid)', () => {
  let squid: Squid;
  let plain: Registry;
  let tls: Registry;
  let named: string;

  beforeAll(async () => {
    [plain, tls] = await Promise.all([startRegistry(), startRegistry({ tls: true })]);
    named = `${NAME}:${plain.port}`;
    squid = await startSquid({ [NAME]: '127.0.0.1' });
    // seed the plain registry directly
    const direct = new RegistryClient({ ...base, proxy: false });
    await registrySink(direct, `${plain.host}/sd/proxied:1`).putImage(image);
    await direct.close();
  }, 60_000);
  afterAll(async () => {
    await squid?.stop();
    await Promise.all([plain?.stop(), tls?.stop()]);
  });

  const linesFor = (needle: string) => squid.log().filter((l) => l.includes(needle));

  it('explicit proxy: the TLS registry through a CONNECT tunnel, verified with its certs.d CA', async () => {
    const certsDir = makeTempDir('certs.d');
    mkdirSync(path.join(certsDir, tls.host));
    writeFileSync(path.join(certsDir, tls.host, 'ca.crt'), tls.caPem!);
    const c = new RegistryClient({ ...base, certsDir, proxy: squid.url });
    const ref = parseReference(`${tls.host}/sd/tls:1`);
    const sink = registrySink(c, ref);
    await sink.putImage(image);
    const pulled = await pullImage(c, ref);
    expect(pulled.digest.equals(image.digest)).toBe(true);
    expect((await collect(pulled.layers[0]!.compressed())).length).toBe(image.layers[0]!.size);
    await c.close();
    // squid logs a tunnel once it closes; the client's connections are closed now
    const connects = linesFor(`CONNECT ${tls.host}`);
    expect(connects.length).toBeGreaterThan(0);
    expect(connects.every((l) => /TCP_TUNNEL\/200/.test(l))).toBe(true);

    // without the CA the certificate is refused: TLS is end to end, not terminated by the proxy
    const untrusted = new RegistryClient({ ...base, certsDir: makeTempDir('empty-certs.d'), proxy: squid.url });
    const err = await pullImage(untrusted, ref).catch((e) => e);
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.code).toBe('ERR_REGISTRY_TLS');
    await untrusted.close();
  });

  it('environment rules: HTTPS_PROXY for the https probe, HTTP_PROXY for plain HTTP, NO_PROXY bypasses', async () => {
    const env = { HTTPS_PROXY: squid.url, HTTP_PROXY: squid.url };
    const before = squid.log().length;
    const c = new RegistryClient({ ...base, insecureRegistries: [named], proxy: proxyFromEnvironment(env) });
    const pulled = await pullImage(c, `${named}/sd/proxied:1`);
    expect(pulled.digest.equals(image.digest)).toBe(true);
    expect((await collect(pulled.layers[1]!.uncompressed())).length).toBeGreaterThan(0);
    await c.close();
    const lines = squid.log().slice(before);
    // the https probe tunnelled (and failed: the registry speaks plain HTTP), then absolute-URI requests
    expect(lines.some((l) => l.includes(`CONNECT ${named}`))).toBe(true);
    expect(lines.some((l) => l.includes(`GET http://${named}/v2/sd/proxied/manifests/1`))).toBe(true);
    expect(lines.some((l) => l.includes(`GET http://${named}/v2/sd/proxied/blobs/${image.layers[1]!.digest}`))).toBe(
      true,
    );

    // a NO_PROXY entry for another port does not apply
    const otherPort = new RegistryClient({
      ...base,
      insecureRegistries: [named],
      proxy: proxyFromEnvironment({ ...env, NO_PROXY: `${NAME}:1` }),
    });
    expect((await pullImage(otherPort, `${named}/sd/proxied:1`)).digest.equals(image.digest)).toBe(true);
    await otherPort.close();

    // NO_PROXY=.stevedore.test: the client goes direct, and only the proxy knew the name
    for (const noProxy of ['.stevedore.test', named, '*']) {
      const n = squid.log().length;
      const bypass = new RegistryClient({
        ...base,
        insecureRegistries: [named],
        proxy: proxyFromEnvironment({ ...env, NO_PROXY: noProxy }),
      });
      const err = await pullImage(bypass, `${named}/sd/proxied:1`).catch((e) => e);
      await bypass.close();
      expect(err, noProxy).toBeInstanceOf(RegistryError);
      expect(err.code).toBe('ERR_REGISTRY_NETWORK');
      expect(err.message).toMatch(/ENOTFOUND|EAI_AGAIN/);
      expect(squid.log().length, noProxy).toBe(n);
    }
  });

  it('environment rules never proxy a loopback registry', async () => {
    const before = squid.log().length;
    const c = new RegistryClient({
      ...base,
      proxy: proxyFromEnvironment({ HTTPS_PROXY: squid.url, HTTP_PROXY: squid.url }),
    });
    expect((await pullImage(c, `${plain.host}/sd/proxied:1`)).digest.equals(image.digest)).toBe(true);
    await c.close();
    expect(squid.log().length).toBe(before);
  });

  it('an invalid proxy setting is a clear error', async () => {
    const c = new RegistryClient({ ...base, proxy: 'ftp://proxy.example/' });
    const err = await pullImage(c, `${named}/sd/proxied:1`).catch((e) => e);
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.code).toBe('ERR_REGISTRY_PROXY');
    expect(err.message).toMatch(/invalid proxy address "ftp:\/\/proxy\.example\/"/);
  });
});
