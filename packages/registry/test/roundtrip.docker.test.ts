// Round trips with the real dockerd and the distribution registry: an image built and pushed by
// docker is pulled by us into an OCI layout (blob bytes equal, digests verified); an image we
// build into an OCI layout and push is pulled and run by docker, and skopeo agrees on its digest.
// Skips when not root or dockerd is missing, unless STEVEDORE_REQUIRE_DOCKER=1 (then it fails).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sha256 } from '@stevedore/core';
import { copyImage, OciLayoutReader, ociLayoutSink, parseReference } from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import {
  buildScratchImage,
  type Dockerd,
  type Registry,
  startDockerd,
  startRegistry,
} from '../../../test/harness/index.js';
import { pullImage, RegistryClient, registrySink } from '../src/index.js';
import { busyboxImage } from './fixtures.js';

const SKOPEO = process.env.STEVEDORE_SKOPEO ?? '/usr/bin/skopeo';
const { canRun } = useRealComponents({ registry: true });

describe.skipIf(!canRun)('registry round trips with dockerd', () => {
  let d: Dockerd;
  let reg: Registry;
  const work = mkdtempSync(path.join(tmpdir(), 'sd-registry-docker-'));

  beforeAll(async () => {
    [d, reg] = await Promise.all([startDockerd(), startRegistry()]);
  }, 240_000);
  afterAll(async () => {
    await d?.stop();
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('docker build + push → our pull into an OCI layout: digests verified, blob bytes equal', async () => {
    const tag = `${reg.host}/dk/built:1`;
    await buildScratchImage(d, tag, { 'etc/hello.txt': 'hello from docker\n', 'app/data': 'x'.repeat(100_000) }, '', {
      busybox: true,
      cmd: ['/bin/busybox', 'cat', '/etc/hello.txt'],
    });
    await d.docker(['push', tag]);
    const { stdout } = await d.docker(['image', 'inspect', '--format', '{{index .RepoDigests 0}}', tag]);
    const pushedDigest = stdout.trim().split('@')[1];

    const c = new RegistryClient({ credentials: false });
    const img = await pullImage(c, parseReference(tag));
    expect(img.digest.toString()).toBe(pushedDigest);
    const dir = path.join(work, 'layout');
    // keep docker's manifest bytes (no OCI rewrite) so the layout holds exactly what was pushed
    await copyImage(img, ociLayoutSink(dir, { ociMediaTypes: false }), { tags: ['1'] });
    const layout = await OciLayoutReader.openDir(dir);
    const stored = await layout.image('1');
    expect(stored.digest.toString()).toBe(pushedDigest);
    for (const l of img.layers) {
      const ours = readFileSync(path.join(dir, 'blobs', 'sha256', l.digest.hex));
      expect(sha256(ours).equals(l.digest)).toBe(true);
      const theirs = Buffer.from(await (await fetch(`${reg.url}/v2/dk/built/blobs/${l.digest}`)).arrayBuffer());
      expect(Buffer.compare(ours, theirs)).toBe(0);
    }
    const { stdout: id } = await d.docker(['image', 'inspect', '--format', '{{.Id}}', tag]);
    expect(sha256(img.rawConfig).toString()).toBe(id.trim());
    await c.close();
  });

  it('our OCI layout → our push → docker pull + docker run; skopeo agrees on the digest', async () => {
    const img = busyboxImage('hello from stevedore\n');
    const dir = path.join(work, 'ours');
    await copyImage(img, ociLayoutSink(dir), { tags: ['v1'] });
    const fromLayout = await (await OciLayoutReader.openDir(dir)).image('v1');
    const c = new RegistryClient({ credentials: false });
    const ref = `${reg.host}/sd/ours:v1`;
    const sink = registrySink(c, ref);
    await copyImage(fromLayout, sink);
    expect(sink.lastDigest!.equals(img.digest)).toBe(true);
    await c.close();

    await d.docker(['pull', ref]);
    const { stdout } = await d.docker(['run', '--rm', '--network', 'none', ref]);
    expect(stdout).toBe('hello from stevedore\n');
    const { stdout: rd } = await d.docker(['image', 'inspect', '--format', '{{index .RepoDigests 0}}', ref]);
    expect(rd.trim()).toBe(`${reg.host}/sd/ours@${img.digest}`);
    if (existsSync(SKOPEO)) {
      const out = execFileSync(SKOPEO, ['inspect', '--tls-verify=false', `docker://${ref}`], { encoding: 'utf8' });
      expect(JSON.parse(out).Digest).toBe(img.digest.toString());
    }
  });
});
