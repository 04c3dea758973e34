/**
 * `stevedore docker …`: Docker's own data root (overlay2) read without the daemon and without
 * writing to it: ls, inspect, mount/umount, unpack, import into our store.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { StevedoreError } from '@stevedore/core';
import type { DockerImage, DockerRoot } from '@stevedore/overlay';
import type { Command } from 'commander';
import type { Output } from '../output.js';
import type { RegistryOpts } from './common.js';
import type { StoreOpts } from './store.js';

/**
 * `@stevedore/overlay`'s DEFAULT_DOCKER_ROOT (a test keeps them equal), not imported: these
 * commands load the store only when one of them runs.
 */
export const DEFAULT_DOCKER_ROOT = '/var/lib/docker';

/** What the actions use, loaded when one runs. */
async function deps() {
  const [overlay, progress, common, store] = await Promise.all([
    import('@stevedore/overlay'),
    import('../progress.js'),
    import('./common.js'),
    import('./store.js'),
  ]);
  return {
    DockerRoot: overlay.DockerRoot,
    importDockerImage: overlay.importDockerImage,
    mountDockerImage: overlay.mountDockerImage,
    umount: overlay.umount,
    unpackDockerImage: overlay.unpackDockerImage,
    shortId: progress.shortId,
    humanSize: common.humanSize,
    reference: common.reference,
    ago: store.ago,
    openStore: store.openStore,
    table: store.table,
  };
}

interface Helpers {
  out: () => Output;
  g: <T extends RegistryOpts>(o: T) => T & StoreOpts;
  examples: (...lines: string[]) => string;
}

/** Opens the data root and turns "no such image" into the line that says how to list them. */
async function withRoot<T>(dataRoot: string, f: (root: DockerRoot) => Promise<T>): Promise<T> {
  const root = await (await deps()).DockerRoot.open(dataRoot);
  try {
    return await f(root);
  } catch (e) {
    if (e instanceof StevedoreError && e.code === 'ERR_IMAGE_NOT_FOUND') {
      throw new StevedoreError(
        'ERR_IMAGE_NOT_FOUND',
        `${e.message}: run \`stevedore docker --data-root ${root.root} ls\` to list its images`,
        { cause: e },
      );
    }
    throw e;
  }
}

/** `docker image inspect`'s field names, plus where each layer lives. */
function inspectJson(img: DockerImage) {
  return {
    Id: img.id.toString(),
    RepoTags: img.repoTags,
    RepoDigests: img.repoDigests,
    Parent: img.parent?.toString() ?? '',
    Created: img.created ?? null,
    Size: img.size,
    Architecture: img.config.architecture,
    Os: img.config.os,
    Config: img.config.config ?? null,
    RootFS: { Type: 'layers', Layers: img.config.rootfs.diff_ids.map(String) },
    Layers: img.layers.map((l) => ({
      DiffId: l.diffId.toString(),
      ChainId: l.chainId.toString(),
      CacheId: l.cacheId,
      DiffDir: l.diffDir,
      Size: l.size,
      TarSplit: l.tarSplit !== undefined,
    })),
  };
}

function isMountPoint(target: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4]?.replace(/\\040/g, ' ') === target);
}

export function registerDockerCommand(p: Command, h: Helpers): void {
  const { out, g, examples } = h;
  const docker = p
    .command('docker')
    .description("read Docker's data root (overlay2) without the daemon, read-only: list, inspect, mount, import")
    .option('--data-root <dir>', "docker's data root", DEFAULT_DOCKER_ROOT)
    .addHelpText(
      'after',
      '\nNothing under the data root is ever written; dockerd may be stopped.' +
        examples(
          'stevedore docker ls',
          'stevedore docker --data-root /srv/docker inspect alpine:3.19',
          'stevedore docker mount nginx /mnt/nginx && ls /mnt/nginx && stevedore docker umount /mnt/nginx',
          'stevedore docker unpack 3f2a1b9c0d4e ./rootfs',
          'stevedore docker import app:1 && stevedore push app:1',
        ),
    );
  const dataRoot = () => (docker.opts() as { dataRoot: string }).dataRoot;

  docker
    .command('ls')
    .alias('images')
    .description('list the images dockerd would list (REPOSITORY TAG IMAGE ID CREATED SIZE)')
    .option('-a, --all', 'also the intermediate images of legacy builds')
    .addHelpText(
      'after',
      examples('stevedore docker ls', 'stevedore docker --data-root /srv/docker ls -a', 'stevedore --json docker ls'),
    )
    .action((o: { all?: boolean }) =>
      withRoot(dataRoot(), async (root) => {
        const { shortId, ago, humanSize, table } = await deps();
        const images = await root.images({ all: Boolean(o.all) });
        for (const s of root.skipped) out().log(`warning: skipped ${s}`);
        const rows = images
          .map((i) => ({
            Id: i.id.toString(),
            RepoTags: i.repoTags,
            RepoDigests: i.repoDigests,
            Created: i.created ?? null,
            Size: i.size,
          }))
          .sort((a, b) => (b.Created ?? '').localeCompare(a.Created ?? '') || a.Id.localeCompare(b.Id));
        out().data(rows, () => {
          const lines = [['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE']];
          for (const r of rows) {
            const cells = [shortId(r.Id), ago(r.Created), humanSize(r.Size)];
            if (r.RepoTags.length === 0) lines.push(['<none>', '<none>', ...cells]);
            for (const t of r.RepoTags) {
              const i = t.lastIndexOf(':');
              lines.push([t.slice(0, i), t.slice(i + 1), ...cells]);
            }
          }
          return table(lines);
        });
      }),
    );

  docker
    .command('inspect')
    .description('show an image: config, tags, digests and its layer chain (diff_id, chain id, cache-id, diff dir)')
    .argument('<ref>', 'NAME[:TAG], NAME@DIGEST, or an image id (a unique prefix is enough)')
    .addHelpText(
      'after',
      examples(
        'stevedore docker inspect alpine',
        'stevedore docker inspect 3f2a1b9c | jq ".Layers[].DiffDir"',
        'stevedore docker --data-root /srv/docker inspect --json app@sha256:…',
      ),
    )
    .action((ref: string) =>
      withRoot(dataRoot(), async (root) => {
        const info = inspectJson(await root.image(ref));
        out().data(info, () => JSON.stringify(info, null, 2));
      }),
    );

  docker
    .command('mount')
    .description("mount an image read-only with kernel overlay, straight from docker's diff dirs (root)")
    .argument('<ref>', 'an image name or id')
    .argument('<target>', 'the mount point (created; not under the data root)')
    .addHelpText(
      'after',
      examples(
        'stevedore docker mount alpine /mnt/alpine && ls /mnt/alpine',
        'stevedore --json docker mount 3f2a1b9c0d4e /mnt/x',
      ),
    )
    .action((ref: string, target: string) =>
      withRoot(dataRoot(), async (root) => {
        const info = await (await deps()).mountDockerImage(root, ref, target);
        out().data({ ...info, image: ref }, () => info.target);
        if (!out().json) out().log(`mounted ${ref} at ${info.target} (${info.backend}, read-only)`);
      }),
    );

  docker
    .command('umount')
    .description('unmount what `stevedore docker mount` mounted')
    .argument('<target>', 'the mount point')
    .addHelpText('after', examples('stevedore docker umount /mnt/alpine'))
    .action(async (dir: string) => {
      const target = path.resolve(dir);
      if (!isMountPoint(target)) {
        throw new StevedoreError('ERR_NOT_MOUNTED', `${target} is not mounted: nothing to unmount`);
      }
      await (await deps()).umount(target);
      out().data({ target }, () => target);
    });

  docker
    .command('unpack')
    .description('flatten an image into a directory (each layer checked against its diff_id)')
    .argument('<ref>', 'an image name or id')
    .argument('<dir>', 'an absent or empty directory (not under the data root)')
    .addHelpText(
      'after',
      examples('stevedore docker unpack alpine ./rootfs', 'stevedore --json docker unpack 3f2a ./r'),
    )
    .action((ref: string, dir: string) =>
      withRoot(dataRoot(), async (root) => {
        const img = await (await deps()).unpackDockerImage(root, ref, dir);
        const directory = path.resolve(dir);
        out().data({ image: ref, id: img.id.toString(), directory }, () => directory);
      }),
    );

  docker
    .command('import')
    .description("copy an image into stevedore's store, keeping docker's image ID and chain IDs")
    .argument('<ref>', 'an image name or id')
    .argument('[name]', "the name in the store (default: the image's docker tags)")
    .option('--rebuild', 'make layers from the diff dirs (when docker kept no tar-split): new diff_ids and image ID')
    .addHelpText(
      'after',
      '\nEach layer is rebuilt exactly from the diff dir and its tar-split, then gzip-compressed by stevedore:' +
        "\nthe image ID and diff_ids are docker's; compressed layer digests generally differ from the registry's." +
        examples(
          'stevedore docker import alpine:3.19',
          'stevedore --root /tmp/store docker import 3f2a1b9c0d4e app:1 && stevedore --root /tmp/store save -o app.tar app:1',
        ),
    )
    .action(async (ref: string, name: string | undefined, o: RegistryOpts & { rebuild?: boolean }) => {
      const { reference, openStore, importDockerImage, shortId } = await deps();
      const tags = name ? [reference(name).familiar()] : undefined;
      return withRoot(dataRoot(), async (root) => {
        const store = await openStore(g(o));
        const r = await importDockerImage(root, store, ref, {
          ...(tags ? { tags } : {}),
          rebuild: Boolean(o.rebuild),
          onLayer: (ev) => out().log(`${shortId(ev.diffId)}: ${ev.state === 'exists' ? 'Already exists' : ev.state}`),
        });
        const result = {
          id: r.imageId.toString(),
          dockerId: r.dockerId.toString(),
          tags: r.refs,
          chainIds: r.chainIds.map(String),
          layerDigests: r.layerDigests.map(String),
          applied: r.applied,
          root: store.root,
        };
        out().data(result, () => result.id);
        if (!r.imageId.equals(r.dockerId)) out().log(`rebuilt: the image ID differs from docker's ${r.dockerId}`);
      });
    });
}
