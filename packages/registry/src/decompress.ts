/**
 * Layer decompression for `uncompressed()`: gzip with node:zlib; zstd with the native core's
 * streaming decoder, or — without the native addon — node:zlib where it has zstd (Node ≥ 22.15),
 * else the `zstd` command (as containerd uses `unpigz` when it is there).
 * Both zstd paths cap the window at 2^27 (128 MiB, zstd's own default limit) against memory
 * bombs; frame checksums and trailing data are checked by the decoders.
 */
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { hasNativeEngine, zstdDecompress } from '@stevedore/core';
import { RegistryError, type RegistryErrorInit } from './errors.js';

const ZSTD_WINDOW_LOG_MAX = 27;
/** The zstd command; `STEVEDORE_ZSTD` overrides the PATH lookup. */
const zstdCommandName = () => process.env.STEVEDORE_ZSTD || 'zstd';

type Ctx = Omit<RegistryErrorInit, 'cause'>;

/** The bytes of `source` decompressed; errors of `source` itself pass through unchanged. */
export function decompress(
  compression: 'gzip' | 'zstd',
  source: AsyncIterable<Uint8Array>,
  ctx: Ctx,
): AsyncIterable<Uint8Array> {
  if (compression === 'gzip') return through(source, zlib.createGunzip(), 'gzip', ctx);
  if (hasNativeEngine()) return nativeZstd(source, ctx);
  const zstd = (zlib as { createZstdDecompress?: (o: object) => Transform }).createZstdDecompress;
  const windowLogMax = (zlib.constants as Record<string, number>).ZSTD_d_windowLogMax;
  if (zstd && windowLogMax !== undefined) {
    return through(source, zstd({ params: { [windowLogMax]: ZSTD_WINDOW_LOG_MAX } }), 'zstd', ctx);
  }
  return zstdCommand(source, ctx);
}

/** zstd by the native core (no `zstd` command, any Node version). */
async function* nativeZstd(source: AsyncIterable<Uint8Array>, ctx: Ctx): AsyncGenerator<Uint8Array> {
  let sourceError: unknown;
  try {
    yield* zstdDecompress(
      watch(source, (e) => (sourceError = e)),
      ZSTD_WINDOW_LOG_MAX,
    );
  } catch (e) {
    throw sourceError ?? new RegistryError('ERR_DECOMPRESS', `zstd: ${(e as Error).message}`, { ...ctx, cause: e });
  }
}

/** `source` piped through `transform`; unlike `.pipe`, a failing source fails the output. */
async function* through(
  source: AsyncIterable<Uint8Array>,
  transform: Transform,
  what: string,
  ctx: Ctx,
): AsyncGenerator<Uint8Array> {
  let sourceError: unknown;
  const done = pipeline(Readable.from(watch(source, (e) => (sourceError = e))), transform).catch(() => {});
  try {
    for await (const c of transform) yield c as Uint8Array;
  } catch (e) {
    throw sourceError ?? new RegistryError('ERR_DECOMPRESS', `${what}: ${(e as Error).message}`, { ...ctx, cause: e });
  } finally {
    transform.destroy();
    await done;
  }
  if (sourceError) throw sourceError;
}

async function* zstdCommand(source: AsyncIterable<Uint8Array>, ctx: Ctx): AsyncGenerator<Uint8Array> {
  const command = zstdCommandName();
  const { spawn } = await import('node:child_process');
  const child = spawn(command, ['-d', '-c', '-q', `--memory=${2 ** (ZSTD_WINDOW_LOG_MAX - 20)}MB`], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 4096) stderr += s;
  });
  const exited = new Promise<{ code: number | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, error }));
    child.once('close', (code) => resolve({ code }));
  });
  let sourceError: unknown;
  const feeding = pipeline(Readable.from(watch(source, (e) => (sourceError = e))), child.stdin).then(
    () => undefined,
    (e: unknown) => e,
  );
  let finished = false;
  try {
    for await (const c of child.stdout) yield c as Uint8Array;
    const [exit, feedError] = await Promise.all([exited, feeding]);
    if (exit.error) {
      throw new RegistryError(
        'ERR_UNSUPPORTED',
        `zstd layer: this Node (${process.version}) has no zstd in zlib and the \`${command}\` command cannot run (${exit.error.message})`,
        { ...ctx, hint: 'install zstd (apt-get install zstd) or use Node 22.15 or newer', cause: exit.error },
      );
    }
    if (sourceError) throw sourceError;
    if (exit.code !== 0) {
      throw new RegistryError('ERR_DECOMPRESS', `zstd: ${stderr.trim() || `exit status ${exit.code}`}`, ctx);
    }
    if (feedError) throw feedError;
    finished = true;
  } finally {
    if (!finished) child.kill();
    await exited;
  }
}

/** Passes `source` through, reporting its own error (to tell it from the decoder's). */
async function* watch(source: AsyncIterable<Uint8Array>, onError: (e: unknown) => void): AsyncGenerator<Uint8Array> {
  try {
    yield* source;
  } catch (e) {
    onError(e);
    throw e;
  }
}
