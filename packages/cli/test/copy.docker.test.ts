// `stevedore copy` with the real dockerd: what we push, docker pulls and runs; what docker saves,
// we turn into an OCI layout and back into a docker-archive that docker loads and runs.
// Skips when not root or dockerd is missing, unless STEVEDORE_REQUIRE_DOCKER=1 (then it fails).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import {
  buildScratchImage,
  type Dockerd,
  type Registry,
  startDockerd,
  startRegistry,
} from '../../../test/harness/index.js';
import { busyboxImage, stevedore, writeLayout } from './fixtures.js';

const { canRun } = useRealComponents({ registry: true });

describe.skipIf(!canRun)('stevedore copy with dockerd', () => {
  let d: Dockerd;
  let reg: Registry;
  const work = mkdtempSync(join(tmpdir(), 'sd-cli-docker-'));

  beforeAll(async () => {
    [d, reg] = await Promise.all([startDockerd(), startRegistry()]);
  }, 240_000);
  afterAll(async () => {
    await d?.stop();
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('copy oci: → docker:// then docker pull + docker run', async () => {
    const image = busyboxImage('pushed by stevedore\n');
    const layout = join(work, 'layout');
    await writeLayout(layout, image, 'v1');
    const ref = `${reg.host}/sd/run:1`;
    const r = await stevedore(['copy', `oci:${layout}:v1`, `docker://${ref}`]);
    expect(r.code, r.stderr).toBe(0);
    await d.docker(['pull', ref]);
    const { stdout } = await d.docker(['run', '--rm', '--network', 'none', ref]);
    expect(stdout).toBe('pushed by stevedore\n');
    const { stdout: rd } = await d.docker(['image', 'inspect', '--format', '{{index .RepoDigests 0}}', ref]);
    expect(rd.trim()).toBe(`${reg.host}/sd/run@${image.digest}`);
  });

  it('docker save → copy docker-archive: → oci: → docker-archive: → docker load + docker run', async () => {
    const built = await buildScratchImage(d, 'sd-cli-saved:1', { 'app/msg': 'saved by docker\n' }, 'ENV A=1', {
      busybox: true,
      cmd: ['/bin/busybox', 'cat', '/app/msg'],
    });
    const saved = join(work, 'saved.tar');
    await d.docker(['save', '-o', saved, built.tag]);

    const inspected = await stevedore(['--json', 'inspect', `docker-archive:${saved}`]);
    expect(inspected.code, inspected.stderr).toBe(0);
    const info = JSON.parse(inspected.stdout);
    expect(info.Id).toBe(built.id);
    expect(info.RepoTags).toEqual(['sd-cli-saved:1']);
    expect(info.Config.Env).toContain('A=1');

    const layout = join(work, 'from-docker');
    const a = await stevedore(['copy', `docker-archive:${saved}:sd-cli-saved:1`, `oci:${layout}:1`]);
    expect(a.code, a.stderr).toBe(0);
    expect(a.stderr).toMatch(/Copying blob/);
    const back = join(work, 'back.tar');
    const b = await stevedore(['copy', `oci:${layout}:1`, `docker-archive:${back}:sd-cli-back:1`]);
    expect(b.code, b.stderr).toBe(0);

    const { stdout: loaded } = await d.docker(['load', '-i', back]);
    expect(loaded).toMatch(/sd-cli-back:1/);
    const { stdout } = await d.docker(['run', '--rm', '--network', 'none', 'sd-cli-back:1']);
    expect(stdout).toBe('saved by docker\n');
    const { stdout: id } = await d.docker(['image', 'inspect', '--format', '{{.Id}}', 'sd-cli-back:1']);
    expect(id.trim()).toBe(built.id);

    const h = await stevedore(['--json', 'history', `oci:${layout}:1`]);
    expect(h.code, h.stderr).toBe(0);
    const rows = JSON.parse(h.stdout);
    expect(rows[0].createdBy).toMatch(/ENV A=1/);
    expect(rows.filter((r: { emptyLayer: boolean }) => !r.emptyLayer)).toHaveLength(2);
  });
});
