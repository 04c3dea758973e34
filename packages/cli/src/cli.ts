import { backendKind, type DigestAlgorithm, StevedoreError } from '@stevedore/core';
import { Command, CommanderError, Option } from 'commander';
import type { RegistryOpts } from './commands/common.js';
import { registerDockerCommand } from './commands/docker.js';
import { registerStoreCommands } from './commands/register-store.js';
import type { ServeOptions } from './commands/serve.js';
import type { StoreOpts } from './commands/store.js';
import { lazy } from './lazy.js';
import { makeOutput, style } from './output.js';

// Command implementations, loaded when their command runs (see lazy.ts).
const auth = () => import('./commands/auth.js');
const remote = () => import('./commands/remote.js');
const inspect = () => import('./commands/inspect.js');
const serve = () => import('./commands/serve.js');
const loginCommand = lazy(auth, 'loginCommand');
const logoutCommand = lazy(auth, 'logoutCommand');
const copyCommand = lazy(() => import('./commands/copy.js'), 'copyCommand');
const demoCommand = lazy(() => import('./commands/demo.js'), 'demoCommand');
const digestCommand = lazy(() => import('./commands/digest.js'), 'digestCommand');
const historyCommand = lazy(inspect, 'historyCommand');
const inspectCommand = lazy(inspect, 'inspectCommand');
const blobCommand = lazy(remote, 'blobCommand');
const catalogCommand = lazy(remote, 'catalogCommand');
const manifestCommand = lazy(remote, 'manifestCommand');
const tagsCommand = lazy(remote, 'tagsCommand');
const garbageCollectCommand = lazy(serve, 'garbageCollectCommand');
const serveCommand = lazy(serve, 'serveCommand');

/** Commander collector for repeatable options. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** Exit codes: 0 ok, 1 the operation failed, 2 the command line was wrong. */
export const EXIT = { ok: 0, error: 1, usage: 2 } as const;

function program(): Command {
  const p = new Command('stevedore')
    .description('A daemonless container-image toolkit')
    .version('0.1.0')
    .option('--json', 'machine-readable output on stdout')
    .option('-q, --quiet', 'no progress or notes on stderr')
    .option(
      '--root <dir>',
      'the image store (default $STEVEDORE_ROOT, else /var/lib/stevedore as root, else ~/.local/share/stevedore)',
    )
    .option('--platform <os/arch[/variant]>', 'which image of a multi-platform index')
    .addOption(
      new Option('--insecure-registry <host>', 'allow plain HTTP / unverified TLS for HOST[:PORT] (repeatable)')
        .argParser(collect)
        .default(undefined),
    )
    .showHelpAfterError()
    .addHelpText(
      'after',
      '\nEnvironment:' +
        '\n  STEVEDORE_ROOT            the image store (see --root)' +
        '\n  DOCKER_CONFIG             the directory of config.json (registry credentials)' +
        '\n  HTTPS_PROXY, HTTP_PROXY   proxy for https / plain-http registry requests (also lower case)' +
        '\n  NO_PROXY                  hosts, .domains, host:port, IPs, CIDRs or * that go direct;' +
        '\n                            as docker, localhost and loopback registries are never proxied' +
        '\n  NO_COLOR                  no colours' +
        '\n  STEVEDORE_BACKEND         native | wasm (the core backend)',
    )
    .exitOverride();
  const out = () => makeOutput(p.opts());
  /** A command's options with the global ones (commander gives global options to the program). */
  const g = <T extends RegistryOpts>(o: T): T & StoreOpts => {
    const top = p.opts() as StoreOpts;
    const insecure = [...(o.insecureRegistry ?? []), ...(top.insecureRegistry ?? [])];
    return {
      ...o,
      ...(top.root ? { root: top.root } : {}),
      ...((o.platform ?? top.platform) ? { platform: (o.platform ?? top.platform) as string } : {}),
      ...(insecure.length ? { insecureRegistry: insecure } : {}),
    };
  };

  p.command('digest')
    .description('print the content digest of files (or stdin with -)')
    .argument('[files...]', 'files to hash; - or nothing reads stdin')
    .addOption(new Option('-a, --algorithm <alg>', 'digest algorithm').choices(['sha256', 'sha512']).default('sha256'))
    .addHelpText('after', '\nExamples:\n  stevedore digest layer.tar.gz\n  cat blob | stevedore digest --json -')
    .action((files: string[], o: { algorithm: DigestAlgorithm }) => digestCommand(files, o.algorithm, out()));

  const examples = (...lines: string[]) => `\nExamples:\n${lines.map((l) => `  ${l}`).join('\n')}`;
  const insecure = () =>
    new Option('--insecure-registry <host>', 'allow plain HTTP / unverified TLS for HOST[:PORT] (repeatable)')
      .argParser(collect)
      .default(undefined);
  const platform = () => new Option('--platform <os/arch[/variant]>', 'which image of a multi-platform index');
  const transports =
    '\nLocations: docker://REF (or a bare REF), docker-archive:PATH[:REF], oci:PATH[:TAG], oci-archive:PATH[:TAG],' +
    '\n           store:REF (the local store, see --root)' +
    '\nEnvironment: DOCKER_CONFIG (credentials), HTTPS_PROXY/HTTP_PROXY/NO_PROXY, STEVEDORE_BACKEND (native|wasm)';

  p.command('copy')
    .description('copy an image between registries, docker-archives and OCI layouts (like skopeo copy)')
    .argument('<src>', 'where the image is')
    .argument('<dst>', 'where it goes')
    .addOption(platform())
    .addOption(insecure())
    .addHelpText(
      'after',
      transports +
        examples(
          'stevedore copy docker://localhost:5000/app:1 oci:./layout:1',
          'stevedore copy oci:./layout:1 docker://registry.lan/app:1 --insecure-registry registry.lan',
          'docker save app:1 -o app.tar && stevedore copy docker-archive:app.tar oci-archive:app-oci.tar',
          'stevedore copy --platform linux/arm64 docker://ghcr.io/org/app:1 docker-archive:app.tar:app:1',
        ),
    )
    .action((src: string, dst: string, o: RegistryOpts) => copyCommand(src, dst, g(o), out()));

  p.command('inspect')
    .description('show an image: digest, ID, tags, created, platform, config, rootfs and layers')
    .argument('<src>', 'an image location (docker://REF, oci:PATH[:TAG], …)')
    .addOption(platform())
    .addOption(insecure())
    .option('--no-tags', "don't list the repository's tags (docker:// only)")
    .addHelpText(
      'after',
      transports +
        examples(
          'stevedore inspect docker://localhost:5000/app:1',
          'stevedore inspect --json oci:./layout:1 | jq .Config.Cmd',
          'stevedore inspect docker-archive:app.tar',
        ),
    )
    .action((src: string, o: RegistryOpts & { tags?: boolean }) => inspectCommand(src, g(o), out()));

  p.command('history')
    .description("show an image's history: the step that made each layer, and its size")
    .argument('<src>', 'an image location (docker://REF, oci:PATH[:TAG], …)')
    .addOption(platform())
    .addOption(insecure())
    .option('--no-trunc', "don't truncate the output")
    .addHelpText(
      'after',
      transports +
        examples('stevedore history docker://localhost:5000/app:1', 'stevedore history --json oci:./layout:1'),
    )
    .action((src: string, o: RegistryOpts & { trunc?: boolean }) =>
      historyCommand(src, { ...g(o), noTrunc: o.trunc === false }, out()),
    );

  p.command('manifest')
    .description("print an image's manifest (or index) exactly as the registry serves it")
    .argument('<ref>', 'an image reference')
    .addOption(platform())
    .addOption(insecure())
    .addHelpText(
      'after',
      examples(
        'stevedore manifest localhost:5000/app:1',
        'stevedore manifest --platform linux/arm64 ghcr.io/org/app:1 | stevedore digest',
        'stevedore manifest --json localhost:5000/app@sha256:…',
      ),
    )
    .action((ref: string, o: RegistryOpts) => manifestCommand(ref, g(o), out()));

  p.command('blob')
    .description('print a blob (layer or config) from a registry, verified against its digest')
    .argument('<repo>', 'REPO@DIGEST, or REPO with the digest as the second argument')
    .argument('[digest]', 'the blob digest')
    .option('-o, --output <file>', 'write the blob to FILE (only once verified) instead of stdout')
    .addOption(insecure())
    .addHelpText(
      'after',
      examples(
        'stevedore blob localhost:5000/app@sha256:… > config.json',
        'stevedore blob localhost:5000/app sha256:… -o layer.tar.gz',
      ),
    )
    .action((repo: string, digest: string | undefined, o: RegistryOpts & { output?: string }) =>
      blobCommand(repo, digest, g(o), out()),
    );

  p.command('tags')
    .description('list the tags of a repository (every page)')
    .argument('<repo>', 'a repository, e.g. localhost:5000/app')
    .option('--page-size <n>', 'tags per request (every page is fetched)')
    .addOption(insecure())
    .addHelpText('after', examples('stevedore tags localhost:5000/app', 'stevedore tags --json ghcr.io/org/app'))
    .action((repo: string, o: RegistryOpts & { pageSize?: string }) => tagsCommand(repo, g(o), out()));

  p.command('catalog')
    .description('list the repositories of a registry (/v2/_catalog, every page)')
    .argument('<registry>', 'HOST[:PORT]')
    .option('--page-size <n>', 'repositories per request (every page is fetched)')
    .addOption(insecure())
    .addHelpText('after', examples('stevedore catalog localhost:5000', 'stevedore catalog --json registry.lan:5000'))
    .action((registry: string, o: RegistryOpts & { pageSize?: string }) => catalogCommand(registry, g(o), out()));

  p.command('login')
    .description("check credentials against a registry and store them in docker's config.json")
    .argument('<registry>', 'HOST[:PORT] (docker.io for Docker Hub)')
    .option('-u, --username <user>', 'user name')
    .option('-p, --password <password>', 'password (insecure: prefer --password-stdin)')
    .option('--password-stdin', 'read the password from stdin')
    .addOption(insecure())
    .addHelpText(
      'after',
      '\nCredentials go to $DOCKER_CONFIG/config.json (default ~/.docker/config.json), or its credential helper.' +
        examples(
          'echo "$TOKEN" | stevedore login ghcr.io -u me --password-stdin',
          'stevedore login localhost:5000 -u admin --password-stdin < password.txt',
        ),
    )
    .action((registry: string, o) => loginCommand(registry, g(o), out()));

  p.command('logout')
    .description("remove a registry's credentials from docker's config.json")
    .argument('<registry>', 'HOST[:PORT]')
    .addHelpText('after', examples('stevedore logout ghcr.io'))
    .action((registry: string) => logoutCommand(registry, out()));

  registerStoreCommands(p, { out, g, examples, insecure, platform });
  registerDockerCommand(p, { out, g, examples });

  p.command('serve')
    .description('run an OCI distribution registry over a directory (the reference registry layout)')
    .argument('<root>', 'data directory (holds docker/registry/v2, as distribution writes it)')
    .option('--addr <host:port>', 'listen address', '127.0.0.1:5000')
    .option('--htpasswd <file>', 'basic auth from an htpasswd file (bcrypt, as `htpasswd -B` writes)')
    .option('--tls-cert <file>', 'TLS certificate (PEM)')
    .option('--tls-key <file>', 'TLS private key (PEM)')
    .option('--read-only', 'refuse every write')
    .option('--cors <origin>', 'send CORS headers for this origin (e.g. * for the web inspector)')
    .option('--no-fsync', 'do not fsync blobs before they become visible')
    .option('--token-realm <url>', 'token auth: where clients get tokens (with the other --token-* options)')
    .option('--token-service <name>', 'token auth: this registry, the audience tokens must carry')
    .option('--token-issuer <name>', 'token auth: the issuer tokens must name')
    .option('--token-root-cert <file>', 'token auth: PEM bundle of the certificates trusted to sign tokens')
    .option('--upload-purge-age <duration>', 'remove upload sessions older than this (e.g. 168h, 7d)', '168h')
    .option('--upload-purge-interval <duration>', 'how often to look for stale uploads', '24h')
    .option('--no-upload-purge', 'never remove stale upload sessions')
    .option('--ui', 'also serve the web inspector at / (the built @stevedore/web)')
    .option('--ui-dir <dir>', 'serve the web inspector from this built dist directory (implies --ui)')
    .addHelpText(
      'after',
      examples(
        'stevedore serve /srv/registry --addr 127.0.0.1:5000',
        'stevedore serve /srv/registry --ui    # the web inspector at http://127.0.0.1:5000/',
        'stevedore serve /srv/registry --token-realm https://auth.example/token --token-service registry \\\n' +
          '    --token-issuer auth.example --token-root-cert token-signer.pem',
        'stevedore serve /srv/registry --addr 0.0.0.0:443 --tls-cert cert.pem --tls-key key.pem --htpasswd htpasswd',
      ),
    )
    .action((root: string, o: ServeOptions) => serveCommand(root, o, out()));

  p.command('garbage-collect')
    .description("delete blobs no manifest references, like the reference registry's garbage-collect")
    .argument('<root>', 'data directory of `stevedore serve` or the distribution registry')
    .option('--dry-run', 'only report what would be deleted')
    .option('--purge-uploads <age>', 'also remove upload sessions older than AGE (e.g. 168h)')
    .addHelpText(
      'after',
      examples(
        'stevedore garbage-collect /srv/registry --dry-run',
        'stevedore garbage-collect /srv/registry --purge-uploads 7d',
      ),
    )
    .action((root: string, o: { dryRun?: boolean; purgeUploads?: string }) => garbageCollectCommand(root, o, out()));

  p.command('demo')
    .description('a self-contained tour on an embedded default (no network)')
    .option('--keep', 'keep the demo directory')
    .addHelpText('after', '\nExamples:\n  stevedore demo\n  stevedore demo --keep --json')
    .action((o: { keep?: boolean }) => demoCommand(o, out()));

  p.command('version')
    .description('print versions and the active core backend')
    .action(() => {
      const info = { stevedore: '0.1.0', backend: backendKind(), node: process.versions.node };
      out().data(info, () => `stevedore ${info.stevedore} (core: ${info.backend}, node ${info.node})`);
    });
  return p;
}

/** Runs the CLI and returns the exit code; errors are one line on stderr. */
export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are successful exits; everything else is a usage error.
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (e instanceof StevedoreError && e.code === 'ERR_USAGE') {
      process.stderr.write(`stevedore: ${e.message}\n`);
      return EXIT.usage;
    }
    const { errorLine } = await import('./commands/common.js');
    process.stderr.write(`${style.red('stevedore:')} ${errorLine(e)}\n`);
    return EXIT.error;
  }
}
