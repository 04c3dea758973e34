// Docker's data root, read offline: a private dockerd (overlay2) builds images (legacy builder,
// multi-layer with deletions, an opaque dir, a hardlink, owners, setuid; a rebuilt tag leaves a
// dangling image), tags them and pulls one from a loopback registry; then dockerd is STOPPED and
// everything below reads its data root with no daemon: the listing equals `docker images` /
// `docker image inspect`; kernel mount, unpack and the userspace view of every image equal
// `docker export` of a container made from it; an import into our store keeps Docker's image ID
// and chain IDs and can be saved; and a snapshot of every file under the data root (type, mode,
// owner, size, mtime, ctime) is unchanged at the end.
// Skips when not root or dockerd/registry is missing, unless STEVEDORE_REQUIRE_DOCKER=1.
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { listTarFile } from '@stevedore/core';
import { chainIds, copyImage, dockerArchiveSink, parseReference } from '@stevedore/image';
import { pushImage, RegistryClient } from '@stevedore/registry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import {
  buildScratchImage,
  type Dockerd,
  isAlive,
  type Registry,
  startDockerd,
  startRegistry,
  waitFor,
} from '../../../test/harness/index.js';
import {
  DockerRoot,
  importDockerImage,
  mountDockerImage,
  Store,
  storedImage,
  umount,
  unpack,
  unpackDockerImage,
} from '../src/index.js';
import { asObject, memImage, type Node, TARS, walkTree, walkView } from './fixtures.js';

const { canRun } = useRealComponents({ registry: true });

interface Inspect {
  Id: string;
  RepoTags: string[];
  RepoDigests: string[];
  Created: string;
  Size: number;
  RootFS: { Layers?: string[] };
}
type Entry = Node & { uid?: number; gid?: number };

// What `docker create` adds in the container's init layer (/etc itself then takes its attributes).
const INIT = /^(\.dockerenv|etc|etc\/(hostname|hosts|resolv\.conf|mtab)|(dev|proc|sys)(\/.*)?)$/;
const initFree = (m: Map<string, Entry>) => new Map([...m].filter(([p]) => !INIT.test(p)));

/** `docker export` tar → the same path → node map as walkTree (hardlinks take their target's node). */
async function exportEntries(tar: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const norm = (p: string) => p.replace(/^\.?\//, '').replace(/\/$/, '');
  for (const e of await listTarFile(tar, { hash: 'sha256' })) {
    const p = norm(e.path);
    if (!p) continue;
    if (e.type === 'hardlink') {
      out.set(p, { ...out.get(norm(e.linkName))! });
      continue;
    }
    out.set(p, {
      type: e.type,
      mode: e.mode & 0o7777,
      size: e.type === 'file' ? e.size : 0,
      link: e.type === 'symlink' ? e.linkName : '',
      sha: e.type === 'file' ? (e.digest ?? '').replace(/^sha256:/, '') : '',
      uid: e.uid,
      gid: e.gid,
    });
  }
  return out;
}

/** Every path under `root` with what a write would change (lstat, no following). */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (rel: string) => {
    const abs = path.join(root, rel);
    const st = lstatSync(abs, { bigint: true });
    out.set(rel, `${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.mtimeNs} ${st.ctimeNs} ${st.ino}`);
    if (st.isDirectory()) for (const n of readdirSync(abs)) visit(rel ? `${rel}/${n}` : n);
  };
  visit('');
  return out;
}

describe.skipIf(!canRun)("Docker's data root, read offline", () => {
  let d: Dockerd;
  let reg: Registry;
  const work = mkdtempSync(path.join(tmpdir(), 'sd-docker-root-'));
  let pulledTag: string;
  let listed: Inspect[] = [];
  let allIds: string[] = [];
  const exported = new Map<string, Map<string, Entry>>();
  let before: Map<string, string>;
  let root: DockerRoot;

  beforeAll(async () => {
    [d, reg] = await Promise.all([startDockerd(), startRegistry()]);
    const bb = '/bin/busybox';
    const script = [
      `${bb} rm /etc/a.txt`,
      `${bb} rm -rf /opq && ${bb} mkdir /opq && echo new > /opq/new`,
      `echo b2 > /etc/b.txt`,
      `${bb} ln -s /app/msg /link && ${bb} mkdir -p /deep/er && ${bb} chmod 0750 /deep/er && echo x > /deep/er/f`,
      `${bb} chown 1000:1001 /deep/er/f && ${bb} chmod 4755 /deep/er/f && ${bb} ln /deep/er/f /deep/hard`,
    ].join(' && ');
    await buildScratchImage(
      d,
      'dr/built:1',
      { 'etc/a.txt': 'a\n', 'etc/b.txt': 'b\n', 'opq/old': 'old\n', 'opq/sub/deep': 'deep\n', 'app/msg': 'hello\n' },
      `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]\nRUN ["/bin/busybox", "rm", "/app/msg"]`,
      { busybox: true },
    );
    await d.docker(['tag', 'dr/built:1', 'dr/built:latest']);
    // Built twice under one tag: the first becomes a dangling <none>:<none> image.
    await buildScratchImage(d, 'dr/small:1', { 'hello.txt': 'first\n', 'etc/x': 'x\n' });
    await buildScratchImage(d, 'dr/small:1', { 'hello.txt': 'second\n', 'etc/x': 'x\n' });
    // One layer: mounted as a read-only bind (overlay needs two lower dirs).
    await buildScratchImage(d, 'dr/one:1', { 'only.txt': 'one\n' });
    // Layers written by us (not by docker), pushed to a loopback registry, pulled by dockerd.
    pulledTag = `${reg.host}/dr/pulled:1`;
    const c = new RegistryClient({ credentials: false });
    await pushImage(c, parseReference(pulledTag), memImage(TARS, { gzip: true }), { tags: ['1'] });
    await c.close();
    await d.docker(['pull', pulledTag]);

    const ids = (await d.docker(['images', '--no-trunc', '--format', '{{.ID}}'])).stdout.split('\n').filter(Boolean);
    allIds = (await d.docker(['images', '-a', '-q', '--no-trunc'])).stdout.split('\n').filter(Boolean);
    listed = JSON.parse((await d.docker(['image', 'inspect', ...new Set(ids)])).stdout) as Inspect[];
    for (const img of listed) {
      const cid = (await d.docker(['create', img.Id, 'x'])).stdout.trim();
      const tar = path.join(work, `export-${img.Id.slice(7, 19)}.tar`);
      await d.docker(['export', '-o', tar, cid]);
      await d.docker(['rm', cid]);
      exported.set(img.Id, initFree(await exportEntries(tar)));
    }
    // Offline for real: dockerd (and its containerd) stopped; the data root stays.
    process.kill(d.pid, 'SIGTERM');
    await waitFor(() => (!isAlive(d.pid) && d.processes().length === 0 ? true : undefined), {
      what: 'dockerd to stop',
      timeoutMs: 30_000,
      intervalMs: 100,
    });
    before = snapshot(d.dataRoot);
    root = await DockerRoot.open(d.dataRoot);
  }, 300_000);

  afterAll(async () => {
    await d?.stop();
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('lists what `docker images` lists: ids, tags, digests, created, size, diff_ids', async () => {
    expect(listed.length).toBeGreaterThanOrEqual(5); // built, small, the dangling small, one, pulled
    const ours = await root.images();
    expect(root.skipped).toEqual([]);
    expect(ours.map((i) => i.id.toString()).sort()).toEqual(listed.map((i) => i.Id).sort());
    expect((await root.images({ all: true })).map((i) => i.id.toString()).sort()).toEqual([...new Set(allIds)].sort());
    expect(allIds.length).toBeGreaterThan(listed.length); // legacy builds leave intermediate images
    expect(ours.some((i) => i.repoTags.length === 0)).toBe(true); // the dangling one
    for (const theirs of listed) {
      const img = await root.image(theirs.Id);
      expect([theirs.Id, img.repoTags]).toEqual([theirs.Id, [...theirs.RepoTags].sort()]);
      expect([theirs.Id, img.repoDigests]).toEqual([theirs.Id, [...theirs.RepoDigests].sort()]);
      expect(img.config.rootfs.diff_ids.map(String)).toEqual(theirs.RootFS.Layers ?? []);
      expect(img.size).toBe(theirs.Size);
      // docker shows Go's zero time for a config without `created`
      expect(img.created ?? '0001-01-01T00:00:00Z').toBe(img.created ? img.created : theirs.Created);
      expect(Date.parse(img.created ?? theirs.Created)).toBe(Date.parse(theirs.Created));
      expect(img.layers.map((l) => l.chainId.toString())).toEqual(chainIds(img.config.rootfs.diff_ids).map(String));
      for (const l of img.layers) {
        expect(l.diffDir).toBe(path.join(d.dataRoot, 'overlay2', l.cacheId, 'diff'));
        expect(l.link).toMatch(/^[A-Z2-7]{26}$/);
        expect(l.tarSplit).toBeDefined();
      }
    }
    expect(listed.find((i) => i.RepoTags.includes(pulledTag))?.RepoDigests).toHaveLength(1);
  });

  it('resolves names as docker does: name[:tag], name@digest, full and short ids', async () => {
    const built = listed.find((i) => i.RepoTags.includes('dr/built:1'))!;
    const pulled = listed.find((i) => i.RepoTags.includes(pulledTag))!;
    for (const name of ['dr/built:1', 'dr/built', 'docker.io/dr/built:latest', built.Id, built.Id.slice(7)]) {
      expect([name, (await root.resolve(name)).toString()]).toEqual([name, built.Id]);
    }
    expect((await root.resolve(built.Id.slice(7, 19))).toString()).toBe(built.Id);
    expect((await root.resolve(`sha256:${built.Id.slice(7, 15)}`)).toString()).toBe(built.Id);
    expect((await root.resolve(pulled.RepoDigests[0]!)).toString()).toBe(pulled.Id);
    await expect(root.resolve('dr/built:nope')).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
    await expect(root.resolve('f'.repeat(64))).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
  });

  it('kernel mount, unpack and userspace view of every image equal docker export of a container', async () => {
    for (const img of listed) {
      const want = exported.get(img.Id)!;
      const mnt = path.join(work, `mnt-${img.Id.slice(7, 19)}`);
      const info = await mountDockerImage(root, img.Id, mnt);
      let kernel: Map<string, Entry>;
      try {
        kernel = walkTree(mnt, { uidGid: true });
        expect(info.lowerdir.split(':')).toHaveLength((img.RootFS.Layers ?? []).length);
        expect(info.backend).toBe(img.RootFS.Layers?.length === 1 ? 'bind' : 'overlay');
        const view = await walkView(await root.view(img.Id));
        expect(asObject(view)).toEqual(asObject(walkTree(mnt)));
      } finally {
        await umount(mnt);
      }
      expect([img.Id, asObject(initFree(kernel))]).toEqual([img.Id, asObject(want)]);
      const dir = path.join(work, `unpacked-${img.Id.slice(7, 19)}`);
      await unpackDockerImage(root, img.Id, dir);
      expect([img.Id, asObject(initFree(walkTree(dir, { uidGid: true })))]).toEqual([img.Id, asObject(want)]);
      expect(readdirSync(work).filter((n) => n.includes('.stevedore-'))).toEqual([]); // no staging left
    }
    const built = exported.get(listed.find((i) => i.RepoTags.includes('dr/built:1'))!.Id)!;
    expect(built.has('etc/a.txt')).toBe(false);
    expect([...built.keys()].filter((k) => k.startsWith('opq/'))).toEqual(['opq/new']);
    expect(built.get('deep/er/f')).toMatchObject({ mode: 0o4755, uid: 1000, gid: 1001 });
  });

  it("import keeps docker's image ID and chain IDs; the stored image saves and loads back", async () => {
    const store = await Store.open({ root: path.join(work, 'store') });
    for (const img of listed) {
      const r = await importDockerImage(root, store, img.Id);
      expect(r.imageId.toString()).toBe(img.Id);
      expect(r.dockerId.toString()).toBe(img.Id);
      expect(r.chainIds.map(String)).toEqual(chainIds(img.RootFS.Layers ?? []).map(String));
      expect(r.refs.sort()).toEqual([...img.RepoTags].sort());
      // our diff dirs equal docker's
      const ours = await store.image(img.Id);
      const theirs = await root.image(img.Id);
      for (const [i, l] of ours.layers.entries()) {
        const t = theirs.layers[i]!;
        expect(asObject(walkTree(l.diffDir, { uidGid: true }))).toEqual(
          asObject(walkTree(t.diffDir, { uidGid: true })),
        );
        expect(l.size).toBe(t.size);
      }
    }
    // The layer blobs are gzip'd by us (docker keeps no compressed bytes); each is in the content store.
    const stored = await storedImage(store, 'dr/built:1');
    for (const l of stored.layers) {
      expect(l.mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar.gzip');
      expect(await store.hasBlob(l.digest)).toBe(true);
    }
    // save → a docker-archive → load into another store: every blob and diff_id verified again.
    const archive = path.join(work, 'saved.tar');
    const sink = dockerArchiveSink(archive);
    await copyImage(await storedImage(store, 'dr/built:1'), sink, { tags: ['dr/built:1'] });
    await sink.close?.();
    const other = await Store.open({ root: path.join(work, 'other') });
    const [loaded] = await other.loadDockerArchive(archive);
    expect(loaded!.imageId.toString()).toBe(listed.find((i) => i.RepoTags.includes('dr/built:1'))!.Id);
  });

  it('rebuild: layers made from the diff dirs give the same rootfs under new diff_ids', async () => {
    const small = listed.find((i) => i.RepoTags.includes('dr/small:1'))!;
    const store = await Store.open({ root: path.join(work, 'rebuilt') });
    const r = await importDockerImage(root, store, 'dr/small:1', { rebuild: true, tags: ['re/small:1'] });
    expect(r.imageId.toString()).not.toBe(small.Id);
    expect(r.refs).toEqual(['re/small:1']);
    const dir = path.join(work, 'rebuilt-rootfs');
    await unpack(store, 're/small:1', dir);
    expect(asObject(initFree(walkTree(dir, { uidGid: true })))).toEqual(asObject(exported.get(small.Id)!));
  });

  it('clear errors on a copy of the root: missing layer dir, changed diff dir, not a root, other driver', async () => {
    const copy = path.join(work, 'copy');
    execFileSync('cp', ['-a', d.dataRoot, copy]);
    const c = await DockerRoot.open(copy);
    const built = await c.image('dr/built:1');
    // a file of the diff dir changed after docker stored the layer
    const top = built.layers.find((l) => existsSync(path.join(l.diffDir, 'etc/b.txt')))!;
    appendFileSync(path.join(top.diffDir, 'etc/b.txt'), 'tampered');
    await expect(c.writeLayerTar(top, path.join(work, 'x.tar'))).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    await expect(unpackDockerImage(c, 'dr/built:1', path.join(work, 'never'))).rejects.toMatchObject({
      code: 'ERR_DIGEST_MISMATCH',
    });
    expect(existsSync(path.join(work, 'never'))).toBe(false);
    rmSync(path.join(copy, 'overlay2', built.layers[0]!.cacheId), { recursive: true });
    await expect(c.image('dr/built:1')).rejects.toThrow(/layer 0 .*diff dir .* missing/);
    await expect(c.image('dr/built:1')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    await expect(DockerRoot.open(path.join(copy, 'overlay2'))).rejects.toMatchObject({ code: 'ERR_NOT_DOCKER_ROOT' });
    execFileSync('mv', [path.join(copy, 'image', 'overlay2'), path.join(copy, 'image', 'vfs')]);
    await expect(DockerRoot.open(copy)).rejects.toThrow(/vfs storage driver: only overlay2/);
    // nothing may be written into docker's root
    await expect(unpackDockerImage(root, 'dr/small:1', path.join(d.dataRoot, 'x'))).rejects.toThrow(/inside docker/);
  });

  it('nothing under docker data root changed (list + mtimes + ctimes before and after)', () => {
    const after = snapshot(d.dataRoot);
    expect(asObject(after)).toEqual(asObject(before));
    expect(before.size).toBeGreaterThan(50);
    expect(readFileSync(path.join(d.dataRoot, 'image', 'overlay2', 'repositories.json'), 'utf8')).toContain('dr/built');
  });
});
