// `load -i` of oci-archives and OCI layout directories (made by the real skopeo), told apart from
// docker-archives by content, and `export -o -` streaming the flattened rootfs to stdout.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bin, layeredImage, stevedore, writeLayout } from './fixtures.js';

const SKOPEO = process.env.STEVEDORE_SKOPEO ?? '/usr/bin/skopeo';
const canRun = existsSync(SKOPEO);
it.runIf(process.env.STEVEDORE_REQUIRE_DOCKER === '1' && !canRun)('skopeo is installed', () => {
  expect.fail(`need ${SKOPEO}`);
});

const skopeo = (...args: string[]) => {
  const r = spawnSync(SKOPEO, ['--insecure-policy', 'copy', '-q', ...args], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
};

describe.skipIf(!canRun)('load -i OCI archives and layouts; export -o -', () => {
  const work = mkdtempSync(join(tmpdir(), 'sd-cli-archives-'));
  const image = layeredImage([
    { 'etc/motd': 'first\n', 'data/old.txt': 'replaced later' },
    { 'data/old.txt': null, 'etc/new.txt': 'second\n' },
  ]);
  // skopeo rewrites the config per format (docker's, OCI's): the image ID is the digest of the config loaded
  let configId: string;
  const f = (n: string) => join(work, n);
  const images = async (root: string) => {
    const r = await stevedore(['--root', root, '--json', 'images']);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { Id: string; Repository: string; Tag: string }[]).map((x) => ({
      id: x.Id,
      name: `${x.Repository}:${x.Tag}`,
    }));
  };

  beforeAll(async () => {
    await writeLayout(f('layout'), image, 'v1');
    skopeo(`oci:${f('layout')}:v1`, `docker-archive:${f('docker.tar')}:app:1`);
    skopeo(`docker-archive:${f('docker.tar')}`, `oci-archive:${f('oci.tar')}:app:1`);
    skopeo(`docker-archive:${f('docker.tar')}`, `oci:${f('oci-dir')}:latest`);
    const blob = (d: string) => JSON.parse(readFileSync(join(f('oci-dir'), 'blobs', 'sha256', d.slice(7)), 'utf8'));
    const index = JSON.parse(readFileSync(join(f('oci-dir'), 'index.json'), 'utf8'));
    configId = blob(index.manifests[0].digest).config.digest;
  }, 120_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('skopeo oci-archive → load -i: the image, named by its ref.name', async () => {
    const root = f('root-oci-archive');
    const r = await stevedore(['--root', root, 'load', '-i', f('oci.tar')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('Loaded image: app:1');
    expect(r.stdout.trim()).toBe('app:1');
    const list = await images(root);
    expect(list).toEqual([{ id: configId, name: 'app:1' }]);
  });

  it('an OCI layout directory, and an oci-archive on stdin; a bare-tag ref.name loads by ID', async () => {
    const root = f('root-oci-dir');
    const r = await stevedore(['--root', root, '--json', 'load', '-i', f('oci-dir')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`Loaded image ID: ${configId}`);
    expect(JSON.parse(r.stdout)).toEqual([{ id: configId, tags: [], applied: 2 }]);
    const s = await stevedore(['--root', root, 'load'], { input: readFileSync(f('oci.tar')) });
    expect(s.code, s.stderr).toBe(0);
    expect(await images(root)).toEqual([{ id: configId, name: 'app:1' }]);
  });

  it('a docker-archive still loads as one (RepoTags)', async () => {
    const root = f('root-docker');
    const r = await stevedore(['--root', root, 'load', '-i', f('docker.tar')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('Loaded image: app:1');
  });

  it('--platform picks the image of a multi-platform layout (index.json → index → manifests)', async () => {
    const dir = f('multi');
    const other = layeredImage([{ 'etc/motd': 'arm64\n' }]);
    await writeLayout(dir, image, 'amd');
    await writeLayout(dir, other, 'arm');
    const entries = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')).manifests as Record<string, unknown>[];
    const byTag = (t: string) => {
      const { annotations: _, ...d } = entries.find(
        (e) => (e.annotations as Record<string, string>)['org.opencontainers.image.ref.name'] === t,
      )!;
      return d;
    };
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { ...byTag('amd'), platform: { os: 'linux', architecture: 'amd64' } },
          { ...byTag('arm'), platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        ],
      }),
    );
    const hex = createHash('sha256').update(index).digest('hex');
    writeFileSync(join(dir, 'blobs', 'sha256', hex), index);
    writeFileSync(
      join(dir, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.index.v1+json',
            digest: `sha256:${hex}`,
            size: index.length,
            annotations: { 'org.opencontainers.image.ref.name': 'multi' },
          },
        ],
      }),
    );
    const digestOf = async (...args: string[]) => {
      const r = await stevedore(['--json', 'inspect', ...args, `oci:${dir}:multi`]);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { Digest: string }).Digest;
    };
    expect(await digestOf('--platform', 'linux/arm64')).toBe(other.digest.toString());
    expect(await digestOf('--platform', 'linux/amd64')).toBe(image.digest.toString());
    const none = await stevedore(['inspect', '--platform', 'linux/s390x', `oci:${dir}:multi`]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('linux/arm64');
  });

  it('what is neither: one line saying so', async () => {
    mkdirSync(f('not-a-layout'));
    const d = await stevedore(['--root', f('root-bad'), 'load', '-i', f('not-a-layout')]);
    expect(d.code).toBe(2);
    expect(d.stderr).toMatch(/not-a-layout: a directory that is not an OCI layout \(no oci-layout and index\.json\)/);
    writeFileSync(f('junk.tar'), spawnSync('tar', ['-c', '-C', work, 'layout/oci-layout']).stdout);
    const j = await stevedore(['--root', f('root-bad'), 'load', '-i', f('junk.tar')]);
    expect(j.code).toBe(1);
    expect(j.stderr).toMatch(/junk\.tar: neither a docker-archive \(no manifest\.json\) nor an oci-archive/);
    const m = await stevedore(['--root', f('root-bad'), 'load', '-i', f('missing.tar')]);
    expect(m.code).toBe(2);
    expect(m.stderr).toMatch(/missing\.tar: no such file or directory/);
  });

  it('export IMG -o - | tar -t: the flattened rootfs on stdout, the same tar as -o FILE', async () => {
    const root = f('root-oci-archive');
    const piped = spawnSync(
      'bash',
      ['-c', 'set -o pipefail; "$0" "$1" --root "$2" export app:1 -o - | tar -t', process.execPath, bin, root],
      { encoding: 'utf8' },
    );
    expect(piped.status, piped.stderr).toBe(0);
    const names = piped.stdout.split('\n').filter(Boolean);
    expect(names).toEqual(expect.arrayContaining(['etc/motd', 'etc/new.txt']));
    expect(names.some((n) => n.includes('old.txt'))).toBe(false);

    // stdout carries the tar only: it lists the same as the tar `-o FILE` writes
    const raw = (await stevedore(['--root', root, 'export', 'app:1', '-o', '-'])).raw;
    const e = await stevedore(['--root', root, 'export', 'app:1', '-o', f('flat.tar')]);
    expect(e.code, e.stderr).toBe(0);
    const fromStdout = spawnSync('tar', ['-t'], { input: raw, encoding: 'utf8' });
    expect(fromStdout.status, fromStdout.stderr).toBe(0);
    expect(fromStdout.stdout).toBe(spawnSync('tar', ['-tf', f('flat.tar')], { encoding: 'utf8' }).stdout);
    expect(raw.length).toBe(readFileSync(f('flat.tar')).length);
  });
});
