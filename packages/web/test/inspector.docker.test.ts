// The web inspector on a real `docker save` from a private dockerd. Skips when not root or
// dockerd is missing, unless STEVEDORE_REQUIRE_DOCKER=1, which turns the skip into a failure.
import { rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { buildScratchImage, type Dockerd, startDockerd } from '../../../test/harness/index.js';
import { launch, openArchive, results, searchTree, serveDist, workDir } from './support.js';

const { canRun } = useRealComponents({ registry: false });

const TAG = 'sd-web-docker:1';

describe.skipIf(!canRun)('a real docker save in the inspector', () => {
  let d: Dockerd;
  let server: Server;
  let base: string;
  let browser: Browser;
  let work: string;
  let saved: string;
  let id: string;
  let diffIds: string[];

  beforeAll(async () => {
    work = workDir();
    saved = join(work, 'saved.tar');
    d = await startDockerd();
    const img = await buildScratchImage(
      d,
      TAG,
      { 'etc/a.txt': 'a\n', 'app/msg': 'hello from docker\n' },
      'ENV GREETING=hi\nLABEL org.example.team=dock',
      { busybox: true, cmd: ['/bin/busybox', 'cat', '/app/msg'] },
    );
    id = img.id;
    const { stdout } = await d.docker(['image', 'inspect', '--format', '{{json .RootFS.Layers}}', TAG]);
    diffIds = JSON.parse(stdout.trim()) as string[];
    await d.docker(['save', '-o', saved, TAG]);
    ({ server, base } = await serveDist());
    browser = await launch();
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await new Promise((r) => server?.close(r));
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('verifies it, shows the image id as config digest and the daemon’s diff_ids', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const shown = await openArchive(page, base, saved);
    expect(errors).toEqual([]);
    expect(shown.status).toMatch(/^verified: /);
    expect(shown.configDigest).toBe(id);
    expect(shown.layers.map((l) => l.diffId)).toEqual(diffIds);
    expect(shown.summary).toContain(TAG);
    expect(shown.summary).toContain('GREETING=hi');
    const rows = await searchTree(page, 'a.txt');
    expect(Object.keys(rows)).toEqual(['etc/a.txt']);
    // Layers: busybox, etc/a.txt, app/msg.
    expect(rows['etc/a.txt']).toBe(1);
    await page.click('[data-tab=summary]');
    await page.screenshot({ path: join(results, 'web-docker-save.png') });
    await page.close();
  });
});
