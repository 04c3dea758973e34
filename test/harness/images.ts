// Build small FROM scratch images with the real dockerd (legacy builder, no network needed).
import { copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { bins } from './bins.js';
import { makeTempDir, removeTempDir } from './cleanup.js';
import type { Dockerd } from './dockerd.js';

export interface ScratchImageOptions {
  /** Add a static busybox as /bin/busybox (its own first layer) so the image can run commands. */
  busybox?: boolean;
  /** Image config CMD, e.g. ['/bin/busybox', 'echo', 'hi'] (exec form). */
  cmd?: string[];
}

export interface ScratchImage {
  tag: string;
  /** Local image id (sha256:… of the config). */
  id: string;
  /** The Dockerfile used, for debugging. */
  dockerfile: string;
}

/**
 * Build `tag` FROM scratch: one COPY (= one layer) per entry of `files`, in insertion order.
 * Keys are absolute-or-relative paths inside the image ("etc/motd" and "/etc/motd" are the same);
 * values are the contents. `dockerfileExtra` is appended verbatim (ENV, LABEL, RUN [...] with
 * busybox, …). Built with DOCKER_BUILDKIT=0 and --network none (the harness daemon has no bridge).
 */
export async function buildScratchImage(
  d: Dockerd,
  tag: string,
  files: Record<string, string | Buffer>,
  dockerfileExtra = '',
  opts: ScratchImageOptions = {},
): Promise<ScratchImage> {
  const ctx = makeTempDir('build');
  try {
    const lines = ['FROM scratch'];
    if (opts.busybox) {
      copyFileSync(bins.busybox, path.join(ctx, 'busybox'));
      lines.push('COPY busybox /bin/busybox');
    }
    let i = 0;
    for (const [name, content] of Object.entries(files)) {
      const inImage = path.posix.normalize(`/${name}`);
      if (inImage === '/' || name.split('/').includes('..')) throw new Error(`bad image path: ${name}`);
      // Context files get neutral names so image paths need no Dockerfile quoting/escaping.
      const src = `f${i++}`;
      writeFileSync(path.join(ctx, src), content, { mode: 0o644 });
      lines.push(`COPY ${JSON.stringify([src, inImage])}`); // JSON form: paths with spaces are fine
    }
    if (opts.cmd) lines.push(`CMD ${JSON.stringify(opts.cmd)}`);
    if (dockerfileExtra) lines.push(dockerfileExtra);
    const dockerfile = lines.join('\n') + '\n';
    writeFileSync(path.join(ctx, 'Dockerfile'), dockerfile);
    await d.docker(['build', '--network', 'none', '--quiet', '-t', tag, ctx], { env: { DOCKER_BUILDKIT: '0' } });
    const { stdout } = await d.docker(['image', 'inspect', '--format', '{{.Id}}', tag]);
    return { tag, id: stdout.trim(), dockerfile };
  } finally {
    removeTempDir(ctx);
  }
}
