/**
 * Byte plumbing shared by the archive and layout sources and sinks: verifying streams, gzip
 * detection, bounded reads, staging files and an index.json lock. Node only.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import {
  appendStream,
  type Digest,
  type DigestAlgorithm,
  Hasher,
  HashFeed,
  hasNativeEngine,
  openForDirectWrite,
  StevedoreError,
  zstdDecompress,
} from '@stevedore/core';

/** Stable codes of the errors raised by the archive and layout readers and writers. */
export type ArchiveErrorCode =
  /** A member reference in a manifest is absolute, contains `..`, or is otherwise unusable. */
  | 'ERR_ARCHIVE_MEMBER_PATH'
  /** A referenced member or blob is not there. */
  | 'ERR_ARCHIVE_MEMBER_MISSING'
  /** The same member name twice in one archive. */
  | 'ERR_ARCHIVE_DUPLICATE_MEMBER'
  /** A link member that loops, leaves the archive or is not a file. */
  | 'ERR_ARCHIVE_BAD_LINK'
  /** The archive's structure is not what the format says (no manifest.json, bad oci-layout, …). */
  | 'ERR_ARCHIVE_FORMAT'
  /** More layers than the configured maximum. */
  | 'ERR_TOO_MANY_LAYERS'
  /** Layer count differs from `rootfs.diff_ids`. */
  | 'ERR_LAYER_COUNT_MISMATCH'
  /** The bytes do not hash to the digest that names them. */
  | 'ERR_DIGEST_MISMATCH'
  /** The bytes are not as long as promised. */
  | 'ERR_SIZE_MISMATCH'
  /** No image matches the requested tag. */
  | 'ERR_IMAGE_NOT_FOUND'
  /** A layer with more uncompressed bytes than the budget. */
  | 'ERR_LAYER_TOO_LARGE'
  /** The lock on an index could not be taken in time. */
  | 'ERR_LOCK_TIMEOUT';

export class ArchiveError extends StevedoreError {
  declare readonly code: ArchiveErrorCode;
  constructor(code: ArchiveErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'ArchiveError';
  }
}

/** Largest layer count accepted by the readers (configurable; docker's overlay2 stops at 128). */
export const DEFAULT_MAX_LAYERS = 1000;

/** A producer of a byte stream that can be opened any number of times. */
export type Opener = () => AsyncIterable<Uint8Array>;

/** `length` bytes of a file from `start`, read lazily (memory stays flat). */
export function fileRange(file: string, start: number, length: number): AsyncIterable<Uint8Array> {
  if (length === 0) return (async function* () {})();
  return createReadStream(file, { start, end: start + length - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
}

/** What a self-verifying stream checks before it completes. */
export interface VerifiedAs {
  readonly digest: Digest;
  readonly size: number | undefined;
}

const verifiedStreams = new WeakMap<object, VerifiedAs>();

/**
 * @internal Brands a stream that verifies itself: iterated to its end without an error, it has
 * yielded exactly the bytes of `expected` (digest, and size when given); any mismatch makes its
 * last step throw. A sink may then skip hashing the same bytes a second time (its write only
 * counts as stored once the stream completed). Only for streams that really do verify
 * (`verified`, the registry client's `fetchBlob`).
 */
export function markVerified<T extends AsyncIterable<Uint8Array>>(
  stream: T,
  expected: { digest: Digest; size?: number | undefined },
): T {
  verifiedStreams.set(stream, { digest: expected.digest, size: expected.size });
  return stream;
}

/** @internal What a branded stream verifies (see `markVerified`), or undefined. */
export function verifiedAs(stream: AsyncIterable<Uint8Array>): VerifiedAs | undefined {
  return verifiedStreams.get(stream);
}

/**
 * Passes `source` through, hashing it; at the end throws when the byte count or digest differs
 * from `expected` (`size` is optional). Nothing after a detected size overrun is yielded.
 */
export function verified(
  source: AsyncIterable<Uint8Array>,
  expected: { digest: Digest; size?: number | undefined },
  what: string,
): AsyncIterable<Uint8Array> {
  return markVerified(verifying(source, expected, what), expected);
}

async function* verifying(
  source: AsyncIterable<Uint8Array>,
  expected: { digest: Digest; size?: number | undefined },
  what: string,
): AsyncIterable<Uint8Array> {
  // Hashed in batches on the native pool where there is one (the JS thread only passes
  // buffers on); the source must not reuse a chunk's memory once it was yielded.
  const feed = new HashFeed(new Hasher(expected.digest.algorithm));
  let size = 0;
  try {
    for await (const chunk of source) {
      size += chunk.length;
      if (expected.size !== undefined && size > expected.size) {
        throw new ArchiveError('ERR_SIZE_MISMATCH', `${what}: more than the expected ${expected.size} bytes`);
      }
      const wait = feed.push(chunk);
      if (wait) await wait;
      yield chunk;
    }
    await feed.flush();
  } finally {
    await feed.settle();
  }
  if (expected.size !== undefined && size !== expected.size) {
    throw new ArchiveError('ERR_SIZE_MISMATCH', `${what}: size mismatch (expected ${expected.size}, got ${size})`);
  }
  const got = feed.hasher.digest();
  if (!got.equals(expected.digest)) {
    throw new ArchiveError(
      'ERR_DIGEST_MISMATCH',
      `${what}: digest mismatch (expected ${expected.digest.toString()}, got ${got.toString()})`,
    );
  }
}

/** Whether bytes start with the gzip magic (1f 8b). */
export function isGzip(head: Uint8Array): boolean {
  return head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
}

/** Whether bytes start with the zstd magic (28 b5 2f fd). */
export function isZstd(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd;
}

/** Reads the first `n` bytes of a stream opener (for magic detection). */
export async function peek(open: Opener, n = 4): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  const it = open()[Symbol.asyncIterator]();
  try {
    while (got < n) {
      const r = await it.next();
      if (r.done) break;
      const take = Math.min(n - got, r.value.length);
      out.set(r.value.subarray(0, take), got);
      got += take;
    }
  } finally {
    await it.return?.();
  }
  return out.subarray(0, got);
}

/**
 * Decompresses a gzip stream, with a byte budget on the output. Node's gunzip reads to the end
 * of the input and checks CRC and length; trailing garbage after the last member is an error.
 */
export async function* gunzip(
  source: AsyncIterable<Uint8Array>,
  what: string,
  maxBytes = Number.MAX_SAFE_INTEGER,
): AsyncIterable<Uint8Array> {
  // 1 MiB output chunks: the default 16 KiB means one thread-pool round trip per 16 KiB
  const z = createGunzip({ chunkSize: 1 << 20 });
  const feeding = pipeline(source, z).catch((e: unknown) => {
    z.destroy(e as Error);
  });
  let total = 0;
  try {
    for await (const chunk of z as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) {
        throw new ArchiveError('ERR_LAYER_TOO_LARGE', `${what}: more than ${maxBytes} uncompressed bytes`);
      }
      yield chunk;
    }
  } catch (e) {
    if (e instanceof StevedoreError) throw e;
    throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${what}: gzip: ${(e as Error).message}`, { cause: e });
  } finally {
    z.destroy();
    await feeding;
  }
}

/**
 * Decompresses a zstd stream (one or more frames) with the native core's decoder, with a byte
 * budget on the output. A corrupt or truncated stream, or a frame window over 2^27 bytes, fails
 * with ERR_ARCHIVE_FORMAT naming `what`. Needs the native engine (Node 20's zlib has no zstd).
 */
export async function* unzstd(
  source: AsyncIterable<Uint8Array>,
  what: string,
  maxBytes = Number.MAX_SAFE_INTEGER,
): AsyncIterable<Uint8Array> {
  if (!hasNativeEngine()) {
    throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${what}: zstd layers need the native engine, which is not loaded`);
  }
  let total = 0;
  try {
    for await (const chunk of zstdDecompress(source)) {
      total += chunk.length;
      if (total > maxBytes) {
        throw new ArchiveError('ERR_LAYER_TOO_LARGE', `${what}: more than ${maxBytes} uncompressed bytes`);
      }
      yield chunk;
    }
  } catch (e) {
    // Errors of the source (a verifying stream) already say what failed; the decoder's do not.
    if (e instanceof StevedoreError && e.code !== 'ERR_DECOMPRESS') throw e;
    throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${what}: zstd: ${(e as Error).message}`, { cause: e });
  }
}

/** The uncompressed stream of a blob compressed with gzip, zstd or not at all (detected by its magic). */
export async function* maybeDecompress(open: Opener, what: string, maxBytes?: number): AsyncIterable<Uint8Array> {
  const head = await peek(open, 4);
  if (isZstd(head)) yield* unzstd(open(), what, maxBytes);
  else if (isGzip(head)) yield* gunzip(open(), what, maxBytes);
  else yield* open();
}

/** Collects a stream into memory, refusing more than `max` bytes (for documents only). */
export async function readAll(source: AsyncIterable<Uint8Array>, max: number, what: string): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const c of source) {
    n += c.length;
    if (n > max) throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${what}: more than the limit of ${max} bytes`);
    parts.push(c);
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Drains a stream (runs its verification) without keeping the bytes. */
export async function drain(source: AsyncIterable<Uint8Array>): Promise<void> {
  for await (const _ of source) {
    // nothing: the consumer's checks run at the end
  }
}

/** Writes a stream to `file` (created exclusively), returning its digest and size. */
export async function writeStreamToFile(
  source: AsyncIterable<Uint8Array>,
  file: string,
): Promise<{ digest: Digest; size: number }>;
/** Writes a stream to `file` (created exclusively), hashing it with `algorithm` (or not: `null`). */
export async function writeStreamToFile(
  source: AsyncIterable<Uint8Array>,
  file: string,
  algorithm: DigestAlgorithm | null,
  options?: { direct?: boolean },
): Promise<{ digest: Digest | undefined; size: number }>;
export async function writeStreamToFile(
  source: AsyncIterable<Uint8Array>,
  file: string,
  algorithm: DigestAlgorithm | null = 'sha256',
  options: { direct?: boolean } = {},
): Promise<{ digest: Digest | undefined; size: number }> {
  const h = algorithm ? new Hasher(algorithm) : undefined;
  if (hasNativeEngine()) return writeNative(source, file, h, options.direct ?? false);
  let size = 0;
  // Small network chunks are gathered into writes of up to 1 MiB (fewer syscalls and pool trips).
  async function* tap() {
    let parts: Uint8Array[] = [];
    let pending = 0;
    for await (const c of source) {
      h?.update(c);
      size += c.length;
      if (c.length >= WRITE_CHUNK && pending === 0) {
        yield c;
        continue;
      }
      parts.push(c);
      pending += c.length;
      if (pending >= WRITE_CHUNK) {
        yield Buffer.concat(parts, pending);
        parts = [];
        pending = 0;
      }
    }
    if (pending > 0) yield Buffer.concat(parts, pending);
  }
  const out = createWriteStream(file, { flags: 'wx', mode: 0o644, highWaterMark: WRITE_CHUNK });
  try {
    await pipeline(tap(), out);
  } catch (e) {
    // A source that fails early can beat the file's asynchronous open; wait for the stream to
    // close so a caller's cleanup cannot run before the file appears.
    if (!out.closed) await once(out, 'close').catch(() => {});
    throw e;
  }
  return { digest: h?.digest(), size };
}

/** The native path of {@link writeStreamToFile}: written and hashed off the JS thread. */
async function writeNative(
  source: AsyncIterable<Uint8Array>,
  file: string,
  h: Hasher | undefined,
  wantDirect: boolean,
): Promise<{ digest: Digest | undefined; size: number }> {
  // Fsynced before it is committed: written back as it arrives, or, when asked, past the page
  // cache where the filesystem can (direct I/O).
  const { fh, direct } = wantDirect
    ? await openForDirectWrite(file)
    : { fh: await open(file, 'wx', 0o644), direct: false };
  try {
    const size = await appendStream(fh.fd, source, { hasher: h, writeback: !direct, direct });
    return { digest: h?.digest(), size };
  } finally {
    await fh.close();
  }
}

const WRITE_CHUNK = 1 << 20;

/** fsync a file or directory by path (best effort for directories on platforms that refuse). */
export async function fsyncPath(p: string): Promise<void> {
  const fh = await open(p, 'r');
  try {
    await fh.sync();
  } catch {
    // some filesystems refuse fsync on directories
  } finally {
    await fh.close();
  }
}

/** Renames `from` onto `to` and syncs the target's directory. */
export async function commitRename(from: string, to: string): Promise<void> {
  await fsyncPath(from);
  await rename(from, to);
  await fsyncPath(path.dirname(to));
}

/** A private temp dir next to `near` (same filesystem, so renames stay atomic). */
export async function stagingDir(near: string): Promise<string> {
  return mkdtemp(path.join(path.dirname(path.resolve(near)), `.${path.basename(near)}.stage-`));
}

export async function removeQuietly(p: string): Promise<void> {
  await rm(p, { recursive: true, force: true }).catch(() => {});
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `fn` holding `lockFile` (created exclusively; removed afterwards). Waits up to
 * `timeoutMs`. Node has no flock: the lock is advisory between stevedore writers.
 */
export async function withLock<T>(lockFile: string, fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  for (;;) {
    try {
      const fh = await open(lockFile, 'wx', 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      if (Date.now() > deadline) {
        throw new ArchiveError('ERR_LOCK_TIMEOUT', `${lockFile}: still locked after ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 200);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockFile, { force: true });
  }
}
