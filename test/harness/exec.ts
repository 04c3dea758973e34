// Run a command to completion, capturing output. Used for the CLIs (docker, openssl, htpasswd).
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, closeSync, openSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';

export interface RunOptions {
  /** Written to stdin, then stdin is closed. */
  input?: string | Buffer;
  /** Merged over process.env (a value of undefined removes the variable). */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Kill the command (SIGKILL) after this long. Default 120 s. */
  timeoutMs?: number;
  /** Return a non-zero exit instead of throwing. */
  allowFailure?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** Exit code, or 128 + signal number if killed by a signal. */
  code: number;
}

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly result: RunResult,
  ) {
    super(`${command} exited with ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
    this.name = 'CommandError';
  }
}

export function mergeEnv(extra?: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(extra ?? {})) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const pretty = [cmd, ...args].join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: mergeEnv(opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${pretty}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = {
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code: code ?? 128 + signalNumber(signal),
      };
      if (result.code !== 0 && !opts.allowFailure) reject(new CommandError(pretty, result));
      else resolve(result);
    });
    // A command that does not read stdin may close it early; that is not an error for us.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? (constants.signals[signal] ?? 0) : 0;
}

/** A long-running child process whose stdout+stderr go to a log file. */
export interface Daemon {
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  hasExited(): boolean;
  /** The end (last `maxLogBytes`) of the log; after the file is gone, the last copy read. */
  logs(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
  terminate(graceMs?: number): Promise<void>;
}

/**
 * Output goes straight to a file, not through a pipe to us: if the test process dies, the
 * daemon must not get EPIPE/SIGPIPE on its next log line while it is shutting down.
 */
export function spawnDaemon(
  cmd: string,
  args: readonly string[],
  opts: { logFile: string; env?: Record<string, string | undefined>; cwd?: string; maxLogBytes?: number },
): Daemon {
  const fd = openSync(opts.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, { cwd: opts.cwd, env: mergeEnv(opts.env), stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  const max = opts.maxLogBytes ?? 1 << 20;
  let lastLogs = '';
  const logs = () => {
    try {
      const buf = readFileSync(opts.logFile);
      lastLogs = buf.subarray(Math.max(0, buf.length - max)).toString('utf8');
    } catch {}
    return lastLogs;
  };
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (e) => {
      appendFileSync(opts.logFile, `\n[harness] spawn error: ${e.message}\n`);
      done = true;
      resolve({ code: -1, signal: null });
    });
    child.on('exit', (code, signal) => {
      done = true;
      logs(); // snapshot before the dir (and the file) can be removed
      resolve({ code, signal });
    });
  });
  return {
    pid: child.pid ?? -1,
    exited,
    hasExited: () => done,
    logs,
    async terminate(graceMs = 10_000) {
      if (done) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
