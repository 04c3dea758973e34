/**
 * tar-split (vbatts/tar-split, as Docker keeps it in `layerdb/sha256/<chain>/tar-split.json.gz`):
 * gzip'd JSON lines that, with a diff dir, give a layer's exact tar back. Type 2 entries are raw
 * tar bytes (headers, padding, the end blocks) in base64; type 1 entries name an entry of the
 * archive, and when their `size` is above 0 that many content bytes are the file of that name in
 * the diff dir (`payload`: their CRC-64/ISO, big-endian). Docker writes these for its layers; our
 * store writes them too (the core records one while it applies a layer), so a diff dir is
 * re-proved against its diff_id by hashing the rebuilt tar, as `docker save` does.
 */
import { createReadStream, constants as fsConstants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import { type Digest, Hasher, StevedoreError } from '@stevedore/core';

/** The layerdb file name. */
export const TAR_SPLIT_FILE = 'tar-split.json.gz';

/** No JSON line may be longer (a segment of 1 MiB is about 1.4 MB of base64). */
const MAX_LINE = 4 << 20;

interface RawEntry {
  type: number;
  name?: string;
  name_raw?: string;
  size?: number;
  payload?: string | null;
}

/** One entry: raw bytes, or a file of the diff dir. */
export type TarSplitEntry =
  | { type: 'segment'; bytes: Buffer }
  | { type: 'file'; name: Buffer; size: number; crc64: Buffer | undefined };

function fail(code: string, message: string, cause?: unknown): never {
  throw new StevedoreError(code, message, cause ? { cause } : undefined);
}

/** The entries of a tar-split file; format errors are `corruptCode` errors naming the file. */
export async function* readTarSplit(file: string, corruptCode: string): AsyncGenerator<TarSplitEntry> {
  const lines = createInterface({
    input: createReadStream(file).pipe(createGunzip()),
    crlfDelay: Number.POSITIVE_INFINITY,
  });
  let n = 0;
  try {
    for await (const line of lines) {
      n++;
      if (!line) continue;
      if (line.length > MAX_LINE) fail(corruptCode, `${file}: line ${n} is over ${MAX_LINE} bytes`);
      let e: RawEntry;
      try {
        e = JSON.parse(line) as RawEntry;
      } catch (err) {
        fail(corruptCode, `${file}: line ${n}: ${(err as Error).message}`, err);
      }
      if (e.type === 2) {
        if (e.payload) yield { type: 'segment', bytes: Buffer.from(e.payload, 'base64') };
      } else if (e.type === 1) {
        const size = e.size ?? 0;
        if (!Number.isSafeInteger(size) || size < 0) fail(corruptCode, `${file}: line ${n}: bad size ${e.size}`);
        const name = e.name_raw !== undefined ? Buffer.from(e.name_raw, 'base64') : Buffer.from(e.name ?? '', 'utf8');
        yield { type: 'file', name, size, crc64: e.payload ? Buffer.from(e.payload, 'base64') : undefined };
      } else {
        fail(corruptCode, `${file}: line ${n}: unknown entry type ${e.type}`);
      }
    }
  } catch (e) {
    if (e instanceof StevedoreError) throw e;
    fail(corruptCode, `${file}: ${(e as Error).message}`, e);
  }
}

/** The path of `name` under `dir` (bytes: names need not be UTF-8); `..` and empty names refused. */
function under(dir: string, name: Buffer, corruptCode: string): { file: Buffer; parents: Buffer[] } {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= name.length; i++) {
    if (i === name.length || name[i] === 0x2f) {
      const p = name.subarray(start, i);
      start = i + 1;
      if (p.length === 0 || (p.length === 1 && p[0] === 0x2e)) continue;
      if (p.length === 2 && p[0] === 0x2e && p[1] === 0x2e)
        fail(corruptCode, `tar-split names ${JSON.stringify(name.toString('latin1'))}`);
      if (p.includes(0)) fail(corruptCode, 'tar-split names a path with a NUL byte');
      parts.push(p);
    }
  }
  if (parts.length === 0) fail(corruptCode, `tar-split names ${JSON.stringify(name.toString('latin1'))}`);
  const slash = Buffer.from('/');
  const parents: Buffer[] = [];
  let acc = Buffer.from(dir);
  for (const [i, p] of parts.entries()) {
    acc = Buffer.concat([acc, slash, p]);
    if (i < parts.length - 1) parents.push(acc);
  }
  return { file: acc, parents };
}

/**
 * The `size` bytes of `name` under `dir`, read without following symlinks anywhere (each parent
 * is lstat'ed as a real directory, the file opened O_NOFOLLOW); it must be a regular file of that
 * size. Mismatches are ERR_DIGEST_MISMATCH errors naming the file.
 */
export async function* diffFileBytes(
  dir: string,
  name: Buffer,
  size: number,
  checked: Set<string>,
  corruptCode: string,
): AsyncGenerator<Buffer> {
  const { file, parents } = under(dir, name, corruptCode);
  const shown = file.toString('utf8');
  for (const p of parents) {
    const key = p.toString('latin1');
    if (checked.has(key)) continue;
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isDirectory()) {
      fail('ERR_DIGEST_MISMATCH', `${shown}: ${p.toString('utf8')} is not a directory in the diff dir`);
    }
    checked.add(key);
  }
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (e) {
    fail('ERR_DIGEST_MISMATCH', `${shown}: ${(e as Error).message} (the diff dir no longer matches its layer)`, e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== size) {
      fail('ERR_DIGEST_MISMATCH', `${shown}: expected a ${size}-byte regular file (the diff dir no longer matches)`);
    }
    let left = size;
    while (left > 0) {
      const buf = Buffer.allocUnsafe(Math.min(left, 1 << 20));
      const { bytesRead } = await fh.read(buf, 0, buf.length, size - left);
      if (bytesRead === 0) fail('ERR_DIGEST_MISMATCH', `${shown}: shorter than ${size} bytes`);
      left -= bytesRead;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

/** tar-split's `asm.WriteOutputTarStream`: the layer tar rebuilt from the tar-split and the diff dir. */
export async function* reassembleTarSplit(
  tarSplit: string,
  diffDir: string,
  corruptCode: string,
): AsyncGenerator<Uint8Array> {
  const checked = new Set<string>();
  for await (const e of readTarSplit(tarSplit, corruptCode)) {
    if (e.type === 'segment') yield e.bytes;
    else if (e.size > 0) yield* diffFileBytes(diffDir, e.name, e.size, checked, corruptCode);
  }
}

// CRC-64/ISO, reflected (Go's hash/crc64 with crc64.ISO), as two 32-bit halves: only used to name
// the changed files once a rebuilt tar failed its diff_id, so speed does not matter here.
const CRC_LO = new Uint32Array(256);
const CRC_HI = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  let lo = i;
  let hi = 0;
  for (let k = 0; k < 8; k++) {
    const odd = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi >>>= 1;
    if (odd) hi = (hi ^ 0xd8000000) >>> 0;
  }
  CRC_LO[i] = lo;
  CRC_HI[i] = hi;
}

/** CRC-64/ISO of some chunks, big-endian (tar-split's payload of a file entry). */
export async function crc64Iso(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  let lo = 0xffffffff;
  let hi = 0xffffffff;
  for await (const c of chunks) {
    for (let i = 0; i < c.length; i++) {
      const t = (lo ^ c[i]!) & 0xff;
      lo = (((lo >>> 8) | (hi << 24)) ^ CRC_LO[t]!) >>> 0;
      hi = ((hi >>> 8) ^ CRC_HI[t]!) >>> 0;
    }
  }
  const out = Buffer.alloc(8);
  out.writeUInt32BE(~hi >>> 0, 0);
  out.writeUInt32BE(~lo >>> 0, 4);
  return out;
}

/** A problem found by {@link verifyTarSplit}: the entry's path as the tar-split names it, or none. */
export interface TarSplitProblem {
  path: string | undefined;
  /** `content`: the file is there, its bytes differ; `file`: it is missing or not that file. */
  kind: 'content' | 'file' | 'other';
  message: string;
}

/**
 * Re-proves a diff dir against its diff_id: rebuilds the tar, hashes it, compares. Returns the
 * problems found (none when it matches). On a mismatch, each file is checked against its
 * recorded CRC-64 so that the changed (or missing) ones are named.
 */
export async function verifyTarSplit(
  tarSplit: string,
  diffDir: string,
  diffId: Digest,
  corruptCode: string,
): Promise<TarSplitProblem[]> {
  const h = new Hasher(diffId.algorithm);
  let failure: string;
  try {
    for await (const c of reassembleTarSplit(tarSplit, diffDir, corruptCode)) h.update(c);
    const got = h.digest();
    if (got.equals(diffId)) return [];
    failure = `the tar rebuilt from the diff dir and ${TAR_SPLIT_FILE} hashes to ${got}, not ${diffId}`;
  } catch (e) {
    if ((e as StevedoreError).code === corruptCode)
      return [{ path: undefined, kind: 'other', message: (e as Error).message }];
    failure = `the tar cannot be rebuilt from the diff dir: ${(e as Error).message}`;
  }
  const problems: TarSplitProblem[] = [];
  const checked = new Set<string>();
  for await (const e of readTarSplit(tarSplit, corruptCode)) {
    if (e.type !== 'file' || e.size === 0) continue;
    const shown = e.name.toString('utf8').replace(/^(?:\.?\/)+/, '');
    try {
      const crc = await crc64Iso(diffFileBytes(diffDir, e.name, e.size, checked, corruptCode));
      if (e.crc64 && !crc.equals(e.crc64))
        problems.push({ path: shown, kind: 'content', message: 'content changed (CRC-64 differs)' });
    } catch (err) {
      problems.push({
        path: shown,
        kind: 'file',
        message: `not the ${e.size}-byte file the layer had (${(err as Error).message})`,
      });
    }
  }
  if (problems.length === 0) problems.push({ path: undefined, kind: 'other', message: failure });
  return problems;
}
