// Proof against the real thing: the same image pulled by a private dockerd (overlay2) from a
// harness registry after `docker push`, and pulled / loaded by us. Our layerdb (chain IDs,
// diff, parent, size), imagedb config bytes, image ID and repositories.json entry equal
// dockerd's; our diff dirs equal dockerd's (paths, types, modes, owners, sizes, content,
// char 0/0 whiteouts, opaque xattrs); our kernel mount equals our userspace view and
// `docker export` of a container. Skips when not root or dockerd/registry is missing, unless
// STEVEDORE_REQUIRE_DOCKER=1 (then it fails).
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { listTarFile } from '@stevedore/core';
import { chainIds, parseReference } from '@stevedore/image';
import { pushImage, RegistryClient } from '@stevedore/registry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import {
  buildScratchImage,
  type Dockerd,
  type Registry,
  startDockerd,
  startRegistry,
} from '../../../test/harness/index.js';
import {
  MergedView,
  mount,
  overlayXattrs,
  readTarSplit,
  Store,
  storedImage,
  TAR_SPLIT_FILE,
  umount,
  verifyTarSplit,
} from '../src/index.js';
import { asObject, walkTree, walkView } from './fixtures.js';

const { canRun } = useRealComponents({ registry: true });

const read = (p: string) => readFileSync(p, 'utf8');
const readOpt = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8') : '');

describe.skipIf(!canRun)('overlay2 store against dockerd', () => {
  let d: Dockerd;
  let reg: Registry;
  let tag: string;
  let dockerId: string;
  let pullOutput = '';
  const work = mkdtempSync(path.join(tmpdir(), 'sd-overlay-docker-'));
  let pulled: Store;
  let loaded: Store;

  beforeAll(async () => {
    [d, reg] = await Promise.all([startDockerd(), startRegistry()]);
    tag = `${reg.host}/proof/img:1`;
    const bb = '/bin/busybox';
    const script = [
      `${bb} rm /etc/a.txt`, // whiteout
      `${bb} rm -rf /opq && ${bb} mkdir /opq && echo new > /opq/new`, // opaque dir
      `echo b2 > /etc/b.txt`, // modified file
      `${bb} ln -s /app/msg /link && ${bb} mkdir -p /deep/er && ${bb} chmod 0750 /deep/er && echo x > /deep/er/f`,
      `${bb} chown 1000:1001 /deep/er/f && ${bb} chmod 4755 /deep/er/f && ${bb} ln /deep/er/f /deep/hard`,
    ].join(' && ');
    await buildScratchImage(
      d,
      tag,
      { 'etc/a.txt': 'a\n', 'etc/b.txt': 'b\n', 'opq/old': 'old\n', 'opq/sub/deep': 'deep\n', 'app/msg': 'hello\n' },
      `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]\nRUN ["/bin/busybox", "rm", "/app/msg"]`,
      { busybox: true },
    );
    await d.docker(['push', tag]);
    // Drop docker's built copy, then pull it back: dockerd's layers now come from the registry.
    await d.docker(['rmi', tag]);
    pullOutput = (await d.docker(['pull', tag])).stdout;
    dockerId = (await d.docker(['image', 'inspect', '--format', '{{.Id}}', tag])).stdout.trim();

    pulled = await Store.open({ root: path.join(work, 'pulled') });
    const c = new RegistryClient({ credentials: false });
    await pulled.pull(tag, { client: c });
    await c.close();
    loaded = await Store.open({ root: path.join(work, 'loaded') });
    const saved = path.join(work, 'saved.tar');
    await d.docker(['save', '-o', saved, tag]);
    await loaded.loadDockerArchive(saved);
  }, 300_000);

  afterAll(async () => {
    await d?.stop();
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  const dockerImageRoot = () => path.join(d.dataRoot, 'image', 'overlay2');

  it('dockerd pulled every layer from the registry (none left over from the build)', () => {
    expect(pullOutput).not.toMatch(/Already exists/);
    expect(pullOutput.match(/Pull complete/g)?.length).toBeGreaterThanOrEqual(3);
  });

  it('image ID, chain IDs, layerdb files, imagedb config and repositories.json equal dockerd', async () => {
    for (const store of [pulled, loaded]) {
      const img = await store.image(tag);
      expect(img.id.toString()).toBe(dockerId);
      const cfgOurs = readFileSync(path.join(store.imageRoot, 'imagedb/content/sha256', img.id.hex));
      const cfgDocker = readFileSync(path.join(dockerImageRoot(), 'imagedb/content/sha256', img.id.hex));
      expect(Buffer.compare(cfgOurs, cfgDocker)).toBe(0);
      const chains = chainIds(img.config.rootfs.diff_ids);
      expect(img.layers.map((l) => l.chainId.toString())).toEqual(chains.map(String));
      for (const l of img.layers) {
        const ours = path.join(store.imageRoot, 'layerdb/sha256', l.chainId.hex);
        const theirs = path.join(dockerImageRoot(), 'layerdb/sha256', l.chainId.hex);
        expect(existsSync(theirs)).toBe(true);
        for (const f of ['diff', 'parent', 'size']) {
          expect([f, readOpt(path.join(ours, f))]).toEqual([f, readOpt(path.join(theirs, f))]);
        }
        expect(read(path.join(ours, 'cache-id'))).toMatch(/^[a-f0-9]{64}$/);
      }
    }
    // distribution metadata of a pull, as dockerd writes it
    const img = await pulled.image(tag);
    const manifest = JSON.parse(readFileSync(pulled.blobPath(img.manifestDigest!), 'utf8'));
    for (const [i, l] of (manifest.layers as { digest: string }[]).entries()) {
      const hex = l.digest.slice(7);
      const rel = `distribution/diffid-by-digest/sha256/${hex}`;
      expect(read(path.join(pulled.imageRoot, rel))).toBe(read(path.join(dockerImageRoot(), rel)));
      const diffHex = img.config.rootfs.diff_ids[i]!.hex;
      const rel2 = `distribution/v2metadata-by-diffid/sha256/${diffHex}`;
      const theirs = JSON.parse(read(path.join(dockerImageRoot(), rel2))) as {
        Digest: string;
        SourceRepository: string;
      }[];
      const ours = JSON.parse(read(path.join(pulled.imageRoot, rel2)));
      expect(ours).toEqual(theirs.filter((m) => m.SourceRepository === ours[0].SourceRepository && m.HMAC === ''));
    }
    // docker pull writes name:tag and name@digest; so does our pull
    const name = tag.slice(0, tag.lastIndexOf(':'));
    const theirs = JSON.parse(read(path.join(dockerImageRoot(), 'repositories.json'))).Repositories[name];
    const ours = (await pulled.readRepositories()).Repositories[name];
    expect(ours).toEqual(theirs);
    expect(Object.keys(ours ?? {})).toHaveLength(2);
    // docker load tags RepoTags only
    expect((await loaded.readRepositories()).Repositories[name]).toEqual({ [tag]: dockerId });
  });

  it('our tar-split equals dockerd tar-split: the same entries, names, sizes and CRC-64s; each rebuilds the other', async () => {
    const img = await pulled.image(tag);
    const files = async (f: string) => {
      const out: string[] = [];
      for await (const e of readTarSplit(f, 'ERR_TEST')) {
        if (e.type === 'file') out.push(`${e.name.toString('latin1')} ${e.size} ${e.crc64?.toString('hex') ?? '-'}`);
      }
      return out;
    };
    let withContent = 0;
    for (const l of img.layers) {
      const ours = path.join(pulled.imageRoot, 'layerdb/sha256', l.chainId.hex, TAR_SPLIT_FILE);
      const theirs = path.join(dockerImageRoot(), 'layerdb/sha256', l.chainId.hex, TAR_SPLIT_FILE);
      const list = await files(ours);
      expect(list).toEqual(await files(theirs));
      withContent += list.filter((x) => !x.endsWith(' -')).length;
      const cacheId = read(path.join(dockerImageRoot(), 'layerdb/sha256', l.chainId.hex, 'cache-id'));
      const dockerDiff = path.join(d.dataRoot, 'overlay2', cacheId, 'diff');
      // each tar-split rebuilds the exact layer tar from either diff dir
      for (const [split, dir] of [
        [ours, l.diffDir],
        [theirs, dockerDiff],
        [ours, dockerDiff],
        [theirs, l.diffDir],
      ] as const) {
        expect([split, dir, await verifyTarSplit(split, dir, l.diffId, 'ERR_TEST')]).toEqual([split, dir, []]);
      }
    }
    expect(withContent).toBeGreaterThanOrEqual(5);
  });

  it('dockerd started on a copy of our store runs our image, and docker save rebuilds each layer from our tar-split', async () => {
    const d2 = await startDockerd({ dataRootFrom: pulled.root });
    try {
      expect((await d2.docker(['image', 'inspect', '--format', '{{.Id}}', tag])).stdout.trim()).toBe(dockerId);
      const run = await d2.docker([
        'run',
        '--rm',
        '--network',
        'none',
        tag,
        '/bin/busybox',
        'cat',
        '/etc/b.txt',
        '/opq/new',
      ]);
      expect(run.stdout).toBe('b2\nnew\n');
      // docker save streams each layer through its tar-split assembler (CRC-64 per file) and a
      // reader that fails unless the tar hashes to the layer's diff_id
      const saved = path.join(work, 'saved-from-ours.tar');
      await d2.docker(['save', '-o', saved, tag]);
      const again = await Store.open({ root: path.join(work, 'again') });
      const r = await again.loadDockerArchive(saved);
      expect(r.map((x) => x.imageId.toString())).toEqual([dockerId]);
      // and it does read ours: one file's CRC-64 changed in a tar-split makes docker save fail
      const img = await pulled.image(tag);
      const layer = img.layers.find((l) => existsSync(path.join(l.diffDir, 'etc/b.txt')))!;
      const split = path.join(d2.dataRoot, 'image/overlay2/layerdb/sha256', layer.chainId.hex, TAR_SPLIT_FILE);
      const lines = gunzipSync(readFileSync(split)).toString().split('\n');
      const at = lines.findIndex((l) => l.includes('"name":"etc/b.txt"'));
      expect(at).toBeGreaterThan(0);
      lines[at] = lines[at]!.replace(/"payload":"[^"]+"/, `"payload":"${Buffer.alloc(8, 1).toString('base64')}"`);
      writeFileSync(split, gzipSync(lines.join('\n')));
      const bad = await d2.docker(['save', '-o', `${saved}.2`, tag], { allowFailure: true });
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/checksum/i);
    } finally {
      await d2.stop();
    }
  }, 180_000);

  it('our diff dirs equal dockerd diff dirs: types, modes, owners, sizes, content, whiteouts, opaque xattrs', async () => {
    const img = await pulled.image(tag);
    let whiteouts = 0;
    let opaques = 0;
    for (const l of img.layers) {
      const cacheId = read(path.join(dockerImageRoot(), 'layerdb/sha256', l.chainId.hex, 'cache-id'));
      const dockerDiff = path.join(d.dataRoot, 'overlay2', cacheId, 'diff');
      const ours = walkTree(l.diffDir, { uidGid: true });
      expect(asObject(ours)).toEqual(asObject(walkTree(dockerDiff, { uidGid: true })));
      // Layer content only: the kernel stamps runtime xattrs (uuid, origin, impure) on dirs that
      // served as an upper dir; those are not part of the layer.
      const content = (m: Map<string, [string, Uint8Array][]>) =>
        new Map(
          [...m]
            .map(([k, v]) => [k, v.filter(([n]) => !/\.overlay\.(uuid|origin|impure)$/.test(n))] as const)
            .filter(([, v]) => v.length > 0),
        );
      const xo = content(await overlayXattrs(l.diffDir));
      const xd = content(await overlayXattrs(dockerDiff));
      if ((await overlayXattrs(dockerDiff)).size !== xd.size)
        console.log(`dockerd diff ${cacheId}: kernel runtime xattrs ignored`);
      expect(asObject(xo)).toEqual(asObject(xd));
      whiteouts += [...ours.values()].filter((n) => n.type === 'char' && n.dev === '0/0').length;
      opaques += xo.size;
      // and the same overlay2 dir shape: base has diff+link, the others diff+link+lower+work
      const shape = (dir: string) =>
        readdirSync(dir)
          .filter((n) => n !== 'committed')
          .sort();
      expect(shape(l.dir)).toEqual(shape(path.join(d.dataRoot, 'overlay2', cacheId)));
      const depth = (dir: string) => readOpt(path.join(dir, 'lower')).split(':').filter(Boolean).length;
      expect(depth(l.dir)).toBe(depth(path.join(d.dataRoot, 'overlay2', cacheId)));
    }
    expect(whiteouts).toBeGreaterThanOrEqual(2); // /etc/a.txt and /app/msg
    expect(opaques).toBeGreaterThanOrEqual(1); // /opq
  });

  it('push from our store gives back the digest docker pushed; docker pulls and runs it', async () => {
    const name = tag.slice(0, tag.lastIndexOf(':'));
    const dockerKey = Object.keys((await pulled.readRepositories()).Repositories[name] ?? {}).find((k) =>
      k.includes('@'),
    );
    const pushedByDocker = dockerKey!.split('@')[1];
    const c = new RegistryClient({ credentials: false });
    const ref = parseReference(`${reg.host}/proof/again:1`);
    const digest = await pushImage(c, ref, await storedImage(pulled, tag), { tags: ['1'] });
    await c.close();
    expect(digest.toString()).toBe(pushedByDocker);
    await d.docker(['pull', ref.toString()]);
    const { stdout } = await d.docker([
      'run',
      '--rm',
      '--network',
      'none',
      ref.toString(),
      '/bin/busybox',
      'cat',
      '/opq/new',
    ]);
    expect(stdout).toBe('new\n');
  });

  it('our kernel mount equals our userspace view and docker export of a container', async () => {
    const target = path.join(work, 'mnt');
    await mount(pulled, tag, target);
    try {
      const kernel = walkTree(target);
      const view = await walkView(await MergedView.open(pulled, tag));
      expect(asObject(view)).toEqual(asObject(kernel));
      expect(kernel.has('etc/a.txt')).toBe(false);
      expect(kernel.has('app/msg')).toBe(false);
      expect([...kernel.keys()].filter((k) => k.startsWith('opq/'))).toEqual(['opq/new']);
      // dockerd's own view of the rootfs: docker export of a created container
      const cid = (await d.docker(['create', tag, '/bin/busybox', 'true'])).stdout.trim();
      const tar = path.join(work, 'export.tar');
      await d.docker(['export', '-o', tar, cid]);
      await d.docker(['rm', cid]);
      const docker = new Map(
        (await listTarFile(tar, { hash: 'sha256' }))
          .map((e) => [e.path.replace(/^\.?\//, '').replace(/\/$/, ''), e] as const)
          .filter(([p]) => p && !/^(\.dockerenv|dev|proc|sys|etc\/(hostname|hosts|resolv\.conf|mtab))(\/|$)/.test(p)),
      );
      const mine = new Map(
        [...kernel].filter(([p]) => !/^(dev|proc|sys|etc\/(hostname|hosts|resolv\.conf|mtab))(\/|$)/.test(p)),
      );
      expect([...mine.keys()].sort()).toEqual([...docker.keys()].sort());
      for (const [p, n] of mine) {
        const e = docker.get(p)!;
        if (n.type === 'file' && e.type === 'file') expect([p, e.mode & 0o7777, e.size]).toEqual([p, n.mode, n.size]);
        if (n.type === 'symlink') expect([p, e.linkName]).toEqual([p, n.link]);
      }
    } finally {
      await umount(target);
    }
  });
});
