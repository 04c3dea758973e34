/** The store commands' command-line surface (help, examples, options). */
import { StevedoreError } from '@stevedore/core';
import type { Command, Option } from 'commander';
import { lazy } from '../lazy.js';
import type { Output } from '../output.js';
import type { RegistryOpts } from './common.js';
import type { StoreOpts } from './store.js';

// Implementations, loaded when their command runs (see lazy.ts).
const store = () => import('./store.js');
const layersCommand = lazy(() => import('./layers.js'), 'layersCommand');
const commitCommand = lazy(store, 'commitCommand');
const diffCommand = lazy(store, 'diffCommand');
const exportCommand = lazy(store, 'exportCommand');
const fsckCommand = lazy(store, 'fsckCommand');
const imagesCommand = lazy(store, 'imagesCommand');
const loadCommand = lazy(store, 'loadCommand');
const mountCommand = lazy(store, 'mountCommand');
const pruneCommand = lazy(store, 'pruneCommand');
const psCommand = lazy(store, 'psCommand');
const pullCommand = lazy(store, 'pullCommand');
const pushCommand = lazy(store, 'pushCommand');
const rmCommand = lazy(store, 'rmCommand');
const rmiCommand = lazy(store, 'rmiCommand');
const saveCommand = lazy(store, 'saveCommand');
const tagCommand = lazy(store, 'tagCommand');
const umountCommand = lazy(store, 'umountCommand');
const unpackCommand = lazy(store, 'unpackCommand');

interface Helpers {
  out: () => Output;
  g: <T extends RegistryOpts>(o: T) => T & StoreOpts;
  examples: (...lines: string[]) => string;
  insecure: () => Option;
  platform: () => Option;
}

const STORE = '\nStore: --root DIR, else $STEVEDORE_ROOT, else /var/lib/stevedore (root) or ~/.local/share/stevedore';

export function registerStoreCommands(p: Command, h: Helpers): void {
  const { out, g, examples } = h;
  p.command('pull')
    .description('pull an image from a registry into the store, with per-layer progress (like docker pull)')
    .argument('<ref>', 'an image reference, e.g. localhost:5000/app:1')
    .addOption(h.platform())
    .addOption(h.insecure())
    .addHelpText(
      'after',
      STORE +
        examples(
          'stevedore pull localhost:5000/app:1 --insecure-registry localhost:5000',
          'stevedore --root /tmp/store pull --platform linux/arm64 ghcr.io/org/app:1',
          'stevedore -q --json pull registry.lan/app:1 | jq .id',
        ),
    )
    .action((ref: string, o: RegistryOpts) => pullCommand(ref, g(o), out()));

  p.command('push')
    .description('push an image of the store to a registry (like docker push)')
    .argument('<ref>', 'a stored image tagged with the registry, e.g. localhost:5000/app:1 (see `stevedore tag`)')
    .addOption(h.insecure())
    .addHelpText(
      'after',
      STORE +
        examples(
          'stevedore tag app:1 localhost:5000/app:1 && stevedore push localhost:5000/app:1',
          'stevedore --json push registry.lan/app:1 --insecure-registry registry.lan',
        ),
    )
    .action((ref: string, o: RegistryOpts) => pushCommand(ref, g(o), out()));

  p.command('images')
    .alias('ls')
    .description('list the images of the store (REPOSITORY TAG IMAGE ID CREATED SIZE)')
    .argument('[repository]', 'only this repository (or REPO:TAG)')
    .addHelpText('after', STORE + examples('stevedore images', 'stevedore ls alpine', 'stevedore --json images'))
    .action((repo: string | undefined, o: RegistryOpts) => imagesCommand(repo, g(o), out()));

  p.command('tag')
    .description('give a stored image another name')
    .argument('<source>', 'a stored image (name or id)')
    .argument('<target>', 'the new name, e.g. localhost:5000/app:1')
    .addHelpText('after', examples('stevedore tag app:1 localhost:5000/app:1', 'stevedore tag 3f2a1b9c0d4e app:latest'))
    .action((src: string, dst: string, o: RegistryOpts) => tagCommand(src, dst, g(o), out()));

  p.command('rmi')
    .description('remove tags; an image with no tag left is deleted with the layers no other image uses')
    .argument('<images...>', 'names or ids')
    .addHelpText('after', examples('stevedore rmi app:1', 'stevedore rmi 3f2a1b9c0d4e', 'stevedore --json rmi a:1 b:2'))
    .action((names: string[], o: RegistryOpts) => rmiCommand(names, g(o), out()));

  p.command('prune')
    .description('delete untagged images and the content blobs no image references')
    .addHelpText('after', examples('stevedore prune', 'stevedore --json prune'))
    .action((o: RegistryOpts) => pruneCommand(g(o), out()));

  p.command('save')
    .description('write stored images to a docker-archive (docker load reads it)')
    .argument('<images...>', 'names or ids')
    .option('-o, --output <file>', 'the archive to write')
    .addHelpText(
      'after',
      examples('stevedore save -o app.tar app:1', 'stevedore save -o all.tar app:1 base:2 && docker load -i all.tar'),
    )
    .action((names: string[], o: RegistryOpts & { output?: string }) => saveCommand(names, g(o), out()));

  p.command('load')
    .description('load a docker-archive (docker save), an oci-archive or an OCI layout directory into the store')
    .option('-i, --input <path>', 'the archive or layout directory, told apart by content (default: stdin)')
    .addHelpText(
      'after',
      '\nOCI images are tagged with their io.containerd.image.name annotation, or a ref.name that is a full' +
        '\nreference (app:1); others load untagged (by ID).' +
        examples(
          'docker save app:1 -o app.tar && stevedore load -i app.tar',
          'stevedore load < app.tar',
          'skopeo copy docker://alpine oci-archive:alpine.tar:alpine:3 && stevedore load -i alpine.tar',
          'stevedore load -i ./oci-layout-dir',
        ),
    )
    .action((o: RegistryOpts & { input?: string }) => loadCommand(g(o), out()));

  p.command('unpack')
    .description("flatten a stored image's layers into a directory (no root needed)")
    .argument('<image>', 'a stored image')
    .argument('<dir>', 'an absent or empty directory')
    .addHelpText('after', examples('stevedore unpack app:1 ./rootfs', 'stevedore --json unpack 3f2a1b9c0d4e /tmp/r'))
    .action((name: string, dir: string, o: RegistryOpts) => unpackCommand(name, dir, g(o), out()));

  p.command('export')
    .description("write a stored image's flattened rootfs as a tar (like docker export)")
    .argument('<image>', 'a stored image')
    .option('-o, --output <file>', 'the tar to write; - for stdout')
    .addHelpText(
      'after',
      examples(
        'stevedore export app:1 -o rootfs.tar',
        'stevedore export app:1 -o - | tar -t',
        'stevedore --root /tmp/store export 3f2a1b9c0d4e -o r.tar',
      ),
    )
    .action((name: string, o: RegistryOpts & { output?: string }) => exportCommand(name, g(o), out()));

  p.command('mount')
    .description('mount a stored image with kernel overlayfs (fuse-overlayfs when not root)')
    .argument('<image>', 'a stored image')
    .argument('<dir>', 'the mount point (created)')
    .option('--writable', 'add a container layer so the mount can be changed (see diff, commit)')
    .addHelpText(
      'after',
      examples(
        'stevedore mount app:1 /mnt/app && ls /mnt/app && stevedore umount /mnt/app',
        'stevedore mount --writable app:1 /mnt/c && echo hi > /mnt/c/hi && stevedore diff /mnt/c',
      ),
    )
    .action((name: string, dir: string, o: RegistryOpts & { writable?: boolean }) =>
      mountCommand(name, dir, g(o), out()),
    );

  p.command('umount')
    .description('unmount an image (a writable mount keeps its container layer for diff and commit)')
    .argument('<dir>', 'the mount point')
    .addHelpText('after', examples('stevedore umount /mnt/app'))
    .action((dir: string, o: RegistryOpts) => umountCommand(dir, g(o), out()));

  p.command('diff')
    .description("list a writable mount's changes: A added, C changed, D deleted (like docker diff)")
    .argument('<mount>', 'a writable mount point, or a container layer id (prefix)')
    .addHelpText('after', examples('stevedore diff /mnt/c', 'stevedore --json diff 9c1e2f3a4b5d'))
    .action((what: string, o: RegistryOpts) => diffCommand(what, g(o), out()));

  p.command('commit')
    .description("save a writable mount's changes as a new image (one more layer)")
    .argument('<mount>', 'a writable mount point, or a container layer id (prefix)')
    .argument('<ref>', 'the new image name')
    .option('-m, --message <text>', 'the history comment')
    .addHelpText('after', examples('stevedore commit /mnt/c app:2', 'stevedore commit -m "add hi" 9c1e2f3a4b5d app:2'))
    .action((what: string, ref: string, o: RegistryOpts & { message?: string }) =>
      commitCommand(what, ref, g(o), out()),
    );

  p.command('ps')
    .description('list containers (writable layers made by `mount --writable`) and where they are mounted')
    .addHelpText('after', examples('stevedore ps', 'stevedore --json ps'))
    .action((o: RegistryOpts) => psCommand(g(o), out()));

  p.command('rm')
    .description('remove containers: their writable layer and record (a mounted one only with --force)')
    .argument('<containers...>', 'container ids (or unique prefixes, see `stevedore ps`)')
    .option('-f, --force', 'unmount a mounted container first')
    .addHelpText('after', examples('stevedore rm 9c1e2f3a4b5d', 'stevedore rm --force 9c1e2f3a4b5d'))
    .action((ids: string[], o: RegistryOpts & { force?: boolean }) => rmCommand(ids, g(o), out()));

  p.command('layers')
    .description(
      'per layer: added/changed/deleted files with sizes, wasted space (bytes later layers overwrite or delete) and an efficiency score',
    )
    .argument('<image>', 'a stored image')
    .option('--all', 'list every file of every layer')
    .addHelpText('after', examples('stevedore layers app:1', 'stevedore --json layers app:1 | jq .efficiency'))
    .action((name: string, o: RegistryOpts & { all?: boolean }) => layersCommand(name, g(o), out()));

  p.command('fsck')
    .description('check the store: layer dirs, short links, lower chains, configs and blob digests')
    .option(
      '--verify',
      "also re-hash every layer's diff dir against the content recorded (bound to its diff_id) when it was extracted",
    )
    .addHelpText('after', examples('stevedore fsck', 'stevedore --json fsck --verify'))
    .action(async (o: RegistryOpts & { verify?: boolean }) => {
      if (!(await fsckCommand(g(o), out()))) {
        throw new StevedoreError(
          'ERR_STORE_CORRUPT',
          'fsck found problems (listed on stdout): remove the broken images with `stevedore rmi` and pull or load them again',
        );
      }
    });
}
