// Pieces the `bench` scripts share: an OCI layout written by hand around gzip layer blobs (so
// the core's bench needs no higher package), and the table rows for timed child-process steps.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Writes an OCI image layout at `dir` tagged `tag` whose layers are `{ file, digest, diffId,
 * compressedSize }` gzip blobs (as `createLayer` reports them); blob files are copied in.
 * Returns the manifest's digest and size.
 */
export function writeGzipLayout(dir, layers, tag) {
  mkdirSync(join(dir, 'blobs/sha256'), { recursive: true });
  const blob = (data) => {
    const d = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(dir, 'blobs/sha256', d), data);
    return { digest: `sha256:${d}`, size: Buffer.byteLength(data) };
  };
  for (const l of layers) {
    if (l.file) execFileSync('cp', ['--reflink=auto', l.file, join(dir, 'blobs/sha256', l.digest.slice(7))]);
  }
  const config = blob(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const manifest = blob(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((l) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: l.digest,
        size: l.compressedSize,
      })),
    }),
  );
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  return manifest;
}

/**
 * Rows for steps measured as `{ seconds, maxRssKiB, opSeconds? }`; `ref` names the row of the
 * same group a ratio is taken against (ours ÷ reference time). Printed as they come.
 */
export function stepTable({ groupWidth = 6, nameWidth = 46 } = {}) {
  const results = [];
  const row = (group, name, bytes, m, ref) => {
    const r = {
      group,
      name,
      seconds: m.seconds,
      mbps: bytes / 1e6 / m.seconds,
      maxRssMiB: m.maxRssKiB / 1024,
      ...(m.opSeconds !== undefined ? { opSeconds: m.opSeconds } : {}),
    };
    const refRow = ref && results.find((x) => x.group === group && x.name === ref);
    if (refRow) r.ratio = m.seconds / refRow.seconds;
    results.push(r);
    console.log(
      `${group.padEnd(groupWidth)} ${name.padEnd(nameWidth)} ${m.seconds.toFixed(2).padStart(7)} s ${r.mbps.toFixed(0).padStart(6)} MB/s` +
        `  rss ${r.maxRssMiB.toFixed(0).padStart(5)} MiB` +
        (r.opSeconds !== undefined ? `  (op ${r.opSeconds.toFixed(2)} s)` : '') +
        (r.ratio !== undefined ? `  ${r.ratio.toFixed(2)}× ${ref}` : ''),
    );
    return r;
  };
  return { results, row };
}

/**
 * A fresh ext4 filesystem (a sparse image of `size`, loop-mounted at `<base>/mnt`) for a bench's
 * outputs: on a long-used root filesystem ext4's inode allocator spends much of its time
 * skipping recently deleted inodes (`recently_deleted`), so file-creation timings depend on what
 * ran before. Falls back to `base` itself when it cannot mount (not root). `unmount()` also
 * removes the image.
 */
export function freshFilesystem(base, size = '16G') {
  const img = join(base, 'fs.img');
  const mnt = join(base, 'mnt');
  try {
    execFileSync('truncate', ['-s', size, img]);
    execFileSync('mkfs.ext4', ['-q', '-F', img], { stdio: 'ignore' });
    mkdirSync(mnt);
    execFileSync('mount', ['-o', 'loop', img, mnt], { stdio: 'ignore' });
    return {
      dir: mnt,
      name: 'fresh ext4 (loop)',
      unmount() {
        execFileSync('umount', [mnt]);
        rmSync(img, { force: true });
      },
    };
  } catch {
    rmSync(img, { force: true });
    return { dir: base, name: 'temp dir', unmount() {} };
  }
}
