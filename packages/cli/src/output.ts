/** Where output goes: data on stdout (JSON with --json), progress and logs on stderr only. */
export interface Output {
  json: boolean;
  quiet: boolean;
  /** Machine-readable or human data, on stdout. */
  data(value: unknown, human: () => string): void;
  /** Progress and notes, on stderr; silenced by -q. */
  log(line: string): void;
}

export function makeOutput(opts: { json?: boolean; quiet?: boolean }): Output {
  const json = Boolean(opts.json);
  const quiet = Boolean(opts.quiet);
  return {
    json,
    quiet,
    data(value, human) {
      process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
    },
    log(line) {
      if (!quiet) process.stderr.write(`${line}\n`);
    },
  };
}

const useColor = !process.env.NO_COLOR && process.stderr.isTTY;
export const style = {
  bold: (s: string) => (useColor ? `\x1b[1m${s}\x1b[22m` : s),
  dim: (s: string) => (useColor ? `\x1b[2m${s}\x1b[22m` : s),
  green: (s: string) => (useColor ? `\x1b[32m${s}\x1b[39m` : s),
  red: (s: string) => (useColor ? `\x1b[31m${s}\x1b[39m` : s),
};
