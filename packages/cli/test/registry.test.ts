// The registry commands as a user runs them (subprocesses) against the real distribution
// registry on loopback: copy across transports, manifest, blob, tags, catalog, inspect, history,
// login/logout, and the one-line errors for the common mistakes.
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bins, cleanupAll, installExitHooks, type Registry, startRegistry } from '../../../test/harness/index.js';
import { busyboxImage, inspectSchema, stevedore, writeLayout } from './fixtures.js';

const canRun = existsSync(bins.registry) && existsSync(bins.htpasswd);
const required = process.env.STEVEDORE_REQUIRE_DOCKER === '1';

installExitHooks();
afterAll(async () => {
  await cleanupAll();
});

it.runIf(required && !canRun)('STEVEDORE_REQUIRE_DOCKER=1 but the registry or htpasswd is missing', () => {
  expect.fail(`need ${bins.registry} and ${bins.htpasswd}`);
});

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe.skipIf(!canRun)('stevedore against the distribution registry', () => {
  let reg: Registry;
  let locked: Registry;
  const work = mkdtempSync(join(tmpdir(), 'sd-cli-registry-'));
  const image = busyboxImage('hello from the cli\n');
  const layout = join(work, 'layout');
  const auth = { username: 'alice', password: 's3cret-pw' };

  beforeAll(async () => {
    [reg, locked] = await Promise.all([startRegistry(), startRegistry({ auth })]);
    await writeLayout(layout, image, 'v1');
  }, 240_000);
  afterAll(async () => {
    await reg?.stop();
    await locked?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('copy oci: → docker:// pushes, with one progress line per blob on stderr; -q is silent', async () => {
    const r = await stevedore(['copy', `oci:${layout}:v1`, `docker://${reg.host}/sd/app:v1`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    for (const l of image.layers) expect(r.stderr).toContain(`Copying blob sha256:${l.digest.hex.slice(0, 12)}`);
    expect(r.stderr).toMatch(/Copying config/);
    // again: the blobs are there; with --json the result is on stdout
    const again = await stevedore(['--json', 'copy', `oci:${layout}:v1`, `${reg.host}/sd/app:v2`]);
    expect(again.code, again.stderr).toBe(0);
    const result = JSON.parse(again.stdout);
    expect(result.digest).toBe(image.digest.toString());
    expect(result.destinationDigest).toBe(image.digest.toString());
    expect(result.layers.every((l: { copied: boolean }) => !l.copied)).toBe(true);
    expect(again.stderr).toMatch(/skipped: already exists/);
    const quiet = await stevedore(['-q', 'copy', `oci:${layout}:v1`, `${reg.host}/sd/app:v3`]);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stderr).toBe('');
  });

  it('copy of a layout with a damaged layer fails on that layer and pushes no manifest', async () => {
    const bad = join(work, 'bad-layout');
    cpSync(layout, bad, { recursive: true });
    const l = image.layers[image.layers.length - 1]!;
    const blob = join(bad, 'blobs', 'sha256', l.digest.hex);
    const bytes = readFileSync(blob);
    bytes[bytes.length >> 1]! ^= 0xff; // same size, other bytes
    writeFileSync(blob, bytes);
    const r = await stevedore(['copy', `oci:${bad}:v1`, `docker://${reg.host}/sd/bad:v1`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(l.digest.hex);
    const res = await fetch(`http://${reg.host}/v2/sd/bad/manifests/v1`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    expect(res.status).toBe(404);
  });

  it('tags (all pages) and catalog', async () => {
    const t = await stevedore(['tags', `${reg.host}/sd/app`]);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout.trim().split('\n').sort()).toEqual(['v1', 'v2', 'v3']);
    const tj = await stevedore(['--json', 'tags', '--page-size', '1', `${reg.host}/sd/app`]);
    expect(JSON.parse(tj.stdout)).toEqual({ repository: `${reg.host}/sd/app`, tags: ['v1', 'v2', 'v3'] });
    expect((await stevedore(['tags', '--page-size', '0', `${reg.host}/sd/app`])).code).toBe(2);
    const c = await stevedore(['--json', 'catalog', '--page-size', '1', reg.host]);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout).repositories).toContain('sd/app');
  });

  it('manifest prints the exact bytes; --json wraps them with digest and media type', async () => {
    const m = await stevedore(['manifest', `${reg.host}/sd/app:v1`]);
    expect(m.code, m.stderr).toBe(0);
    expect(sha256(m.raw)).toBe(image.digest.toString());
    const j = await stevedore(['--json', 'manifest', `docker://${reg.host}/sd/app:v1`]);
    const v = JSON.parse(j.stdout);
    expect(v.digest).toBe(image.digest.toString());
    expect(v.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(v.manifest.layers).toHaveLength(2);
  });

  it('blob REPO@DIGEST to stdout and blob REPO DIGEST -o FILE, verified', async () => {
    const cfg = image.manifest.config.digest.toString();
    const b = await stevedore(['blob', `${reg.host}/sd/app@${cfg}`]);
    expect(b.code, b.stderr).toBe(0);
    expect(Buffer.compare(b.raw, Buffer.from(image.rawConfig))).toBe(0);
    const layer = image.layers[0]!;
    const file = join(work, 'layer.tar.gz');
    const o = await stevedore(['blob', `${reg.host}/sd/app`, layer.digest.toString(), '-o', file]);
    expect(o.code, o.stderr).toBe(0);
    expect(sha256(readFileSync(file))).toBe(layer.digest.toString());
    const missing = await stevedore(['blob', `${reg.host}/sd/app@sha256:${'0'.repeat(64)}`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^stevedore: .*blob sha256:0+ not found/);
    expect((await stevedore(['blob', `${reg.host}/sd/app@sha256:nothex`])).code).toBe(2);
  });

  it('inspect --json follows the schema, for docker://, oci:, oci-archive: and docker-archive:', async () => {
    const validate = new Ajv({ allErrors: true, strict: false }).compile(inspectSchema);
    const ociArchive = join(work, 'app-oci.tar');
    const dockerArchive = join(work, 'app-docker.tar');
    expect(
      (await stevedore(['-q', 'copy', `docker://${reg.host}/sd/app:v1`, `oci-archive:${ociArchive}:v1`])).code,
    ).toBe(0);
    expect(
      (await stevedore(['-q', 'copy', `oci:${layout}:v1`, `docker-archive:${dockerArchive}:sd/app:v1`])).code,
    ).toBe(0);
    const results: Record<string, Record<string, unknown>> = {};
    for (const src of [
      `docker://${reg.host}/sd/app:v1`,
      `oci:${layout}:v1`,
      `oci-archive:${ociArchive}`,
      `docker-archive:${dockerArchive}`,
    ]) {
      const r = await stevedore(['--json', 'inspect', src]);
      expect(r.code, r.stderr).toBe(0);
      const v = JSON.parse(r.stdout);
      expect(validate(v), `${src}: ${JSON.stringify(validate.errors)}`).toBe(true);
      expect(v.Id).toBe(image.manifest.config.digest.toString());
      expect(v.Created).toBe('2026-01-02T03:04:05Z');
      expect(v.Config.Cmd).toEqual(['/bin/busybox', 'cat', '/msg.txt']);
      expect(v.RootFS.Layers).toEqual(image.config.rootfs.diff_ids.map(String));
      results[src.split(':')[0]!] = v;
    }
    const remote = results.docker!;
    expect(remote.Digest).toBe(image.digest.toString());
    expect(remote.RepoTags).toEqual(['v1', 'v2', 'v3']);
    expect(remote.RepoDigests).toEqual([`${reg.host}/sd/app@${image.digest}`]);
    expect(results.oci!.Digest).toBe(image.digest.toString());
    expect(results['oci-archive']!.RepoTags).toEqual(['v1']);
    expect(results['docker-archive']!.RepoTags).toEqual(['sd/app:v1']);
  });

  it('history lists each step with its layer and size, newest first', async () => {
    const r = await stevedore(['--json', 'history', `${reg.host}/sd/app:v1`]);
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout);
    expect(rows.map((x: { createdBy: string }) => x.createdBy)).toEqual([
      'COPY msg.txt /msg.txt',
      'ENV PATH=/bin',
      'COPY busybox /bin/busybox',
    ]);
    expect(rows[0].layer).toBe(image.layers[1]!.digest.toString());
    expect(rows[0].size).toBe(image.layers[1]!.size);
    expect(rows[1]).toMatchObject({ emptyLayer: true, size: 0, layer: null });
    const human = await stevedore(['history', `oci:${layout}:v1`]);
    expect(human.stdout.split('\n')[0]).toMatch(/^LAYER\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT$/);
    expect(human.stdout).toMatch(/<missing>.*ENV PATH=\/bin/);
  });

  it('--platform picks from an index: manifest, copy and inspect; an absent platform fails naming what there is', async () => {
    const other = busyboxImage('the arm64 one\n');
    const otherLayout = join(work, 'other');
    await writeLayout(otherLayout, other, 'v1');
    expect((await stevedore(['-q', 'copy', `oci:${otherLayout}:v1`, `${reg.host}/sd/multi:arm64`])).code).toBe(0);
    expect((await stevedore(['-q', 'copy', `oci:${layout}:v1`, `${reg.host}/sd/multi:amd64`])).code).toBe(0);
    const entry = (img: typeof image, architecture: string) => ({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: img.digest.toString(),
      size: img.rawManifest.length,
      platform: { os: 'linux', architecture },
    });
    const index = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [entry(image, 'amd64'), entry(other, 'arm64')],
    });
    const put = await fetch(`${reg.url}/v2/sd/multi/manifests/latest`, {
      method: 'PUT',
      headers: { 'content-type': 'application/vnd.oci.image.index.v1+json' },
      body: index,
    });
    expect(put.status).toBe(201);
    const raw = await stevedore(['manifest', `${reg.host}/sd/multi`]);
    expect(raw.stdout).toBe(index);
    const arm = await stevedore(['manifest', '--platform', 'linux/arm64', `${reg.host}/sd/multi`]);
    expect(arm.code, arm.stderr).toBe(0);
    expect(sha256(arm.raw)).toBe(other.digest.toString());
    const copied = await stevedore([
      '--json',
      'copy',
      '--platform',
      'linux/arm64',
      `${reg.host}/sd/multi`,
      `oci:${join(work, 'arm')}:1`,
    ]);
    expect(copied.code, copied.stderr).toBe(0);
    expect(JSON.parse(copied.stdout).digest).toBe(other.digest.toString());
    const amd = await stevedore([
      '--json',
      'inspect',
      '--no-tags',
      '--platform',
      'linux/amd64',
      `${reg.host}/sd/multi`,
    ]);
    expect(JSON.parse(amd.stdout)).toMatchObject({ Digest: image.digest.toString(), RepoTags: [] });
    const none = await stevedore(['manifest', '--platform', 'linux/s390x', `${reg.host}/sd/multi`]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no manifest for linux\/s390x.*linux\/amd64, linux\/arm64/);
  });

  it('common mistakes: bad reference (2), unknown tag (1), registry down (1), store: unknown image (1) and --platform (2)', async () => {
    const bad = await stevedore(['manifest', `${reg.host}/Bad/Name:1`]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^stevedore: invalid reference .*must be lowercase\n$/);
    const unknown = await stevedore(['inspect', `docker://${reg.host}/sd/app:nope`]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
    expect(unknown.stderr).toMatch(/MANIFEST_UNKNOWN/);
    expect(unknown.stderr).toMatch(new RegExp(`stevedore tags ${reg.host}/sd/app`));
    const down = await stevedore(['copy', `oci:${layout}:v1`, 'docker://127.0.0.1:9/x/y:1']);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot connect to 127\.0\.0\.1:9/);
    const store = await stevedore(['--root', join(work, 'empty-store'), 'copy', 'store:app:1', `oci:${layout}:v9`]);
    expect(store.code).toBe(1);
    expect(store.stderr).toMatch(/^stevedore: no such image app:1: run `stevedore images`/);
    const plat = await stevedore(['copy', '--platform', 'nonsense', `${reg.host}/sd/app:v1`, `oci:${layout}:v9`]);
    expect(plat.code).toBe(2);
    const transport = await stevedore(['inspect', 'containers-storage:x']);
    expect(transport.code).toBe(2);
    expect(transport.stderr).toMatch(/unknown or unsupported transport/);
    const missingLayout = await stevedore(['inspect', `oci:${join(work, 'nope')}`]);
    expect(missingLayout.code).toBe(1);
    expect(missingLayout.stderr).toMatch(/not an OCI image layout/);
  });

  it('unauthorized says to log in; login --password-stdin writes DOCKER_CONFIG/config.json; logout removes it', async () => {
    const config = join(work, 'docker-config');
    const env = { DOCKER_CONFIG: config };
    const dst = `docker://${locked.host}/private/app:1`;
    const denied = await stevedore(['copy', `oci:${layout}:v1`, dst], { env });
    expect(denied.code).toBe(1);
    expect(denied.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`run \`stevedore login ${locked.host}\``));

    const wrong = await stevedore(['login', locked.host, '-u', auth.username, '--password-stdin'], {
      input: 'nope\n',
      env,
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/unauthorized/);
    expect(existsSync(join(config, 'config.json'))).toBe(false);

    const noUser = await stevedore(['login', locked.host, '--password-stdin'], { input: 'x\n', env });
    expect(noUser.code).toBe(2);

    const ok = await stevedore(['login', locked.host, '-u', auth.username, '--password-stdin'], {
      input: `${auth.password}\n`,
      env,
    });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toBe('Login Succeeded\n');
    const saved = JSON.parse(readFileSync(join(config, 'config.json'), 'utf8'));
    expect(Buffer.from(saved.auths[locked.host].auth, 'base64').toString()).toBe(`${auth.username}:${auth.password}`);

    const push = await stevedore(['-q', 'copy', `oci:${layout}:v1`, dst], { env });
    expect(push.code, push.stderr).toBe(0);
    const tags = await stevedore(['tags', `${locked.host}/private/app`], { env });
    expect(tags.stdout).toBe('1\n');

    const out = await stevedore(['--json', 'logout', locked.host], { env });
    expect(out.code, out.stderr).toBe(0);
    expect(JSON.parse(out.stdout)).toMatchObject({ registry: locked.host, removed: true });
    expect(JSON.parse(readFileSync(join(config, 'config.json'), 'utf8')).auths?.[locked.host]).toBeUndefined();
    const after = await stevedore(['tags', `${locked.host}/private/app`], { env });
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(/stevedore login/);
  });
});
