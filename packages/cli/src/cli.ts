import { backendKind, type DigestAlgorithm, StevedoreError } from '@stevedore/core';
import { Command, CommanderError, Option } from 'commander';
import { demoCommand } from './commands/demo.js';
import { digestCommand } from './commands/digest.js';
import { makeOutput, style } from './output.js';

/** Exit codes: 0 ok, 1 the operation failed, 2 the command line was wrong. */
export const EXIT = { ok: 0, error: 1, usage: 2 } as const;

function program(): Command {
  const p = new Command('stevedore')
    .description('A daemonless container-image toolkit')
    .version('0.1.0')
    .option('--json', 'machine-readable output on stdout')
    .option('-q, --quiet', 'no progress or notes on stderr')
    .showHelpAfterError()
    .exitOverride();
  const out = () => makeOutput(p.opts());

  p.command('digest')
    .description('print the content digest of files (or stdin with -)')
    .argument('[files...]', 'files to hash; - or nothing reads stdin')
    .addOption(new Option('-a, --algorithm <alg>', 'digest algorithm').choices(['sha256', 'sha512']).default('sha256'))
    .addHelpText('after', '\nExamples:\n  stevedore digest layer.tar.gz\n  cat blob | stevedore digest --json -')
    .action((files: string[], o: { algorithm: DigestAlgorithm }) => digestCommand(files, o.algorithm, out()));

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
    const message = e instanceof Error ? e.message : String(e);
    process.stderr.write(`${style.red('stevedore:')} ${message}\n`);
    return EXIT.error;
  }
}
