/**
 * The registry's storage: the SAME on-disk layout as the reference registry's (CNCF distribution)
 * filesystem driver, so a directory written by `docker-registry serve` is served by us and the
 * other way round.
 *
 * ```
 * <root>/docker/registry/v2/
 *   blobs/<alg>/<2 hex>/<hex>/data                               content, by digest (blobs and manifests)
 *   repositories/<name>/
 *     _layers/<alg>/<hex>/link                                  "the repo may serve this blob"
 *     _manifests/revisions/<alg>/<hex>/link                     "the repo has this manifest"
 *     _manifests/tags/<tag>/current/link                        the tag's manifest
 *     _manifests/tags/<tag>/index/<alg>/<hex>/link              every manifest the tag pointed at
 *     _uploads/<uuid>/{data,startedat}                          upload sessions
 * ```
 * Link files hold `<alg>:<hex>` (no newline). `startedat` holds an RFC 3339 time.
 *
 * Differences from the reference registry (documented, both directions still work):
 * - `_uploads/<uuid>/hashstates/<alg>/<offset>`: distribution stores Go's serialized hash state
 *   there; Node cannot produce or read that format, so we keep the running hash in memory and
 *   never write hashstates. An upload whose in-memory state is missing or stale (server restart,
 *   or a session started by the reference registry) is re-hashed from its `data` file at commit.
 *   Distribution does the same for an upload without hashstates.
 * - Temporary files live in `<root>/docker/registry/v2/.stevedore-tmp/` (same filesystem, so the
 *   final rename is atomic); the reference registry ignores that directory.
 *
 * Contracts:
 * - nothing is visible under a digest before its size and digest were verified: blob data is
 *   written to the upload's file (or a temp file), hashed while streaming, fsynced, then renamed
 *   onto `blobs/…/data`; a concurrent commit of the same blob renames identical bytes (idempotent);
 * - every write of a link or a manifest is temp + rename;
 * - digests, names, tags and upload ids are validated by the caller (server.ts) before any path is
 *   built from them; this module re-checks the shapes it joins.
 */
import { createHash, type Hash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';

/** A validated digest in its parts. */
export interface DigestParts {
  algorithm: string;
  hex: string;
}

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
const UUID_RE = /^[0-9a-fA-F-]{8,64}$/;

/** Parses `sha256:<64 hex>` / `sha512:<128 hex>` (the algorithms we can verify); undefined otherwise. */
export function parseDigest(text: string): DigestParts | undefined {
  if (!DIGEST_RE.test(text)) return undefined;
  const i = text.indexOf(':');
  return { algorithm: text.slice(0, i), hex: text.slice(i + 1) };
}

export const digestString = (d: DigestParts) => `${d.algorithm}:${d.hex}`;

export function isUploadId(id: string): boolean {
  return UUID_RE.test(id);
}

export class StorageError extends Error {
  constructor(
    readonly code: 'DIGEST_INVALID' | 'SIZE_INVALID' | 'BLOB_UPLOAD_INVALID',
    message: string,
  ) {
    super(message);
  }
}

/** An upload's running hash, kept in memory between requests (see the module comment). */
interface UploadState {
  hash: Hash;
  algorithm: string;
  offset: number;
}

const isMissing = (e: unknown) => (e as NodeJS.ErrnoException)?.code === 'ENOENT';
const isNotDir = (e: unknown) => (e as NodeJS.ErrnoException)?.code === 'ENOTDIR';

export interface StorageOptions {
  /** fsync blob data before it becomes visible under its digest. Default true. */
  fsync?: boolean;
}

export class Storage {
  /** `<root>/docker/registry/v2` */
  readonly v2: string;
  private readonly tmp: string;
  private readonly fsync: boolean;
  private readonly uploads = new Map<string, UploadState>();
  /** Serializes requests on one upload session (PATCH/PUT/DELETE). */
  private readonly uploadLocks = new Map<string, Promise<unknown>>();

  constructor(
    readonly root: string,
    o: StorageOptions = {},
  ) {
    this.v2 = path.join(root, 'docker', 'registry', 'v2');
    this.tmp = path.join(this.v2, '.stevedore-tmp');
    this.fsync = o.fsync ?? true;
  }

  // --- paths (distribution's registry/storage/paths.go) ---------------------------------------

  blobDataPath(d: DigestParts): string {
    return path.join(this.v2, 'blobs', d.algorithm, d.hex.slice(0, 2), d.hex, 'data');
  }
  repoPath(name: string): string {
    return path.join(this.v2, 'repositories', ...name.split('/'));
  }
  layerLinkPath(name: string, d: DigestParts): string {
    return path.join(this.repoPath(name), '_layers', d.algorithm, d.hex, 'link');
  }
  revisionLinkPath(name: string, d: DigestParts): string {
    return path.join(this.repoPath(name), '_manifests', 'revisions', d.algorithm, d.hex, 'link');
  }
  tagsPath(name: string): string {
    return path.join(this.repoPath(name), '_manifests', 'tags');
  }
  tagCurrentLinkPath(name: string, tag: string): string {
    return path.join(this.tagsPath(name), tag, 'current', 'link');
  }
  tagIndexLinkPath(name: string, tag: string, d: DigestParts): string {
    return path.join(this.tagsPath(name), tag, 'index', d.algorithm, d.hex, 'link');
  }
  uploadPath(name: string, id: string): string {
    if (!isUploadId(id)) throw new Error(`bad upload id ${id}`);
    return path.join(this.repoPath(name), '_uploads', id);
  }

  // --- primitives ----------------------------------------------------------------------------

  private async tmpPath(): Promise<string> {
    await mkdir(this.tmp, { recursive: true });
    return path.join(this.tmp, randomUUID());
  }

  /** Writes `content` to `file` atomically (temp + rename). */
  async writeAtomic(file: string, content: string | Uint8Array): Promise<void> {
    const tmp = await this.tmpPath();
    try {
      await writeFile(tmp, content);
      await mkdir(path.dirname(file), { recursive: true });
      await rename(tmp, file);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  async readLink(file: string): Promise<DigestParts | undefined> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if (isMissing(e) || isNotDir(e)) return undefined;
      throw e;
    }
    return parseDigest(text.trim());
  }

  private writeLink(file: string, d: DigestParts): Promise<void> {
    return this.writeAtomic(file, digestString(d));
  }

  async exists(file: string): Promise<boolean> {
    try {
      await stat(file);
      return true;
    } catch (e) {
      if (isMissing(e) || isNotDir(e)) return false;
      throw e;
    }
  }

  // --- blobs ---------------------------------------------------------------------------------

  /** Size of the blob's data, or undefined when the store does not hold it. */
  async blobSize(d: DigestParts): Promise<number | undefined> {
    try {
      const s = await stat(this.blobDataPath(d));
      return s.isFile() ? s.size : undefined;
    } catch (e) {
      if (isMissing(e) || isNotDir(e)) return undefined;
      throw e;
    }
  }

  /** Size of a blob linked into `name` (`_layers`), or undefined. */
  async repoBlobSize(name: string, d: DigestParts): Promise<number | undefined> {
    const link = await this.readLink(this.layerLinkPath(name, d));
    if (!link || link.hex !== d.hex) return undefined;
    return this.blobSize(d);
  }

  openBlob(d: DigestParts, range?: { start: number; end: number }): Readable {
    return createReadStream(this.blobDataPath(d), range ? { start: range.start, end: range.end } : {});
  }

  linkBlob(name: string, d: DigestParts): Promise<void> {
    return this.writeLink(this.layerLinkPath(name, d), d);
  }

  /** Removes the repository's link to a blob (the data stays until garbage collection). */
  async unlinkBlob(name: string, d: DigestParts): Promise<boolean> {
    const file = this.layerLinkPath(name, d);
    if (!(await this.exists(file))) return false;
    await rm(path.dirname(file), { recursive: true, force: true });
    return true;
  }

  /**
   * Moves `file` (fully written, hashed to `d`) onto the blob's data path. Idempotent: when the
   * blob already exists the bytes are identical (same digest) and the rename just replaces them.
   */
  private async commitFile(file: string, d: DigestParts): Promise<void> {
    const dest = this.blobDataPath(d);
    await mkdir(path.dirname(dest), { recursive: true });
    await rename(file, dest);
  }

  /**
   * Streams `body` into a temp file, hashing, and commits it under `expected` when size (if
   * given) and digest match; throws DIGEST_INVALID / SIZE_INVALID otherwise (nothing visible).
   */
  async putBlob(name: string, body: AsyncIterable<Uint8Array>, expected: DigestParts, size?: number): Promise<number> {
    const tmp = await this.tmpPath();
    try {
      const hash = createHash(expected.algorithm);
      const n = await appendStream(tmp, 0, body, hash, this.fsync);
      if (size !== undefined && n !== size) throw new StorageError('SIZE_INVALID', `got ${n} bytes, expected ${size}`);
      const got = hash.digest('hex');
      if (got !== expected.hex) {
        throw new StorageError('DIGEST_INVALID', `digest mismatch: got ${expected.algorithm}:${got}`);
      }
      await this.commitFile(tmp, expected);
      await this.linkBlob(name, expected);
      return n;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** Stores small content (a manifest) under its digest, atomically. */
  async putContent(d: DigestParts, bytes: Uint8Array): Promise<void> {
    const dest = this.blobDataPath(d);
    if ((await this.blobSize(d)) === bytes.length) return;
    await this.writeAtomic(dest, bytes);
  }

  // --- uploads -------------------------------------------------------------------------------

  async startUpload(name: string): Promise<string> {
    const id = randomUUID();
    const dir = this.uploadPath(name, id);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'data'), new Uint8Array(0));
    await writeFile(path.join(dir, 'startedat'), new Date().toISOString().replace(/\.\d+Z$/, 'Z'));
    this.uploads.set(`${name}/${id}`, { hash: createHash('sha256'), algorithm: 'sha256', offset: 0 });
    return id;
  }

  /** Bytes received so far, or undefined when there is no such session. */
  async uploadSize(name: string, id: string): Promise<number | undefined> {
    try {
      return (await stat(path.join(this.uploadPath(name, id), 'data'))).size;
    } catch (e) {
      if (isMissing(e) || isNotDir(e)) return undefined;
      throw e;
    }
  }

  /** Runs `fn` with the session locked against concurrent PATCH/PUT/DELETE. */
  async withUpload<T>(name: string, id: string, fn: () => Promise<T>): Promise<T> {
    const key = `${name}/${id}`;
    const prev = this.uploadLocks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => {});
    this.uploadLocks.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.uploadLocks.get(key) === tail) this.uploadLocks.delete(key);
    }
  }

  /** Appends `body` at `offset` (the current size); returns the new size. */
  async appendUpload(name: string, id: string, offset: number, body: AsyncIterable<Uint8Array>): Promise<number> {
    const key = `${name}/${id}`;
    let state = this.uploads.get(key);
    if (state && state.offset !== offset) state = undefined;
    this.uploads.delete(key); // only re-armed when the append completes
    const hash = state?.hash;
    const file = path.join(this.uploadPath(name, id), 'data');
    const n = await appendStream(file, offset, body, hash, false);
    if (state) this.uploads.set(key, { ...state, offset: offset + n });
    return offset + n;
  }

  /**
   * Verifies the upload against `expected` and commits it; the session is removed afterwards,
   * whether it verified or not (as the reference registry does).
   */
  async finishUpload(name: string, id: string, expected: DigestParts): Promise<number> {
    const key = `${name}/${id}`;
    const dir = this.uploadPath(name, id);
    const file = path.join(dir, 'data');
    try {
      const size = (await stat(file)).size;
      const state = this.uploads.get(key);
      let got: string;
      if (state && state.offset === size && state.algorithm === expected.algorithm) {
        got = state.hash.digest('hex');
      } else {
        got = await hashFile(file, expected.algorithm);
      }
      if (got !== expected.hex) {
        throw new StorageError('DIGEST_INVALID', `digest mismatch: got ${expected.algorithm}:${got}`);
      }
      if (this.fsync) {
        const fh = await open(file, 'r+');
        try {
          await fh.datasync();
        } finally {
          await fh.close();
        }
      }
      await this.commitFile(file, expected);
      await this.linkBlob(name, expected);
      return size;
    } finally {
      this.uploads.delete(key);
      await rm(dir, { recursive: true, force: true });
    }
  }

  async cancelUpload(name: string, id: string): Promise<boolean> {
    this.uploads.delete(`${name}/${id}`);
    const dir = this.uploadPath(name, id);
    if (!(await this.exists(dir))) return false;
    await rm(dir, { recursive: true, force: true });
    return true;
  }

  // --- manifests and tags ----------------------------------------------------------------------

  async hasManifest(name: string, d: DigestParts): Promise<boolean> {
    const link = await this.readLink(this.revisionLinkPath(name, d));
    return link?.hex === d.hex;
  }

  async getManifest(name: string, d: DigestParts): Promise<Uint8Array | undefined> {
    if (!(await this.hasManifest(name, d))) return undefined;
    try {
      return await readFile(this.blobDataPath(d));
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  async putManifest(name: string, d: DigestParts, bytes: Uint8Array, tag?: string): Promise<void> {
    await this.putContent(d, bytes);
    await this.writeLink(this.revisionLinkPath(name, d), d);
    if (tag !== undefined) await this.tag(name, tag, d);
  }

  async tag(name: string, tag: string, d: DigestParts): Promise<void> {
    await this.writeLink(this.tagIndexLinkPath(name, tag, d), d);
    await this.writeLink(this.tagCurrentLinkPath(name, tag), d);
  }

  resolveTag(name: string, tag: string): Promise<DigestParts | undefined> {
    return this.readLink(this.tagCurrentLinkPath(name, tag));
  }

  async untag(name: string, tag: string): Promise<boolean> {
    const dir = path.join(this.tagsPath(name), tag);
    if (!(await this.exists(path.join(dir, 'current', 'link')))) return false;
    await rm(dir, { recursive: true, force: true });
    return true;
  }

  /** Deletes a manifest revision and every tag currently pointing at it. */
  async deleteManifest(name: string, d: DigestParts): Promise<boolean> {
    if (!(await this.hasManifest(name, d))) return false;
    for (const tag of (await this.tags(name)) ?? []) {
      const cur = await this.resolveTag(name, tag);
      if (cur?.hex === d.hex) await this.untag(name, tag);
    }
    await rm(path.dirname(this.revisionLinkPath(name, d)), { recursive: true, force: true });
    return true;
  }

  /** Tags of `name`, sorted; undefined when the repository has no tags directory. */
  async tags(name: string): Promise<string[] | undefined> {
    let entries: string[];
    try {
      entries = await readdir(this.tagsPath(name));
    } catch (e) {
      if (isMissing(e) || isNotDir(e)) return undefined; // as distribution: no tags dir → unknown
      throw e;
    }
    const out: string[] = [];
    for (const t of entries) if (await this.exists(path.join(this.tagsPath(name), t, 'current', 'link'))) out.push(t);
    return out.sort();
  }

  /** Digests of every manifest revision in `name`. */
  async revisions(name: string): Promise<DigestParts[]> {
    const out: DigestParts[] = [];
    const base = path.join(this.repoPath(name), '_manifests', 'revisions');
    for (const alg of await readdirOrEmpty(base)) {
      for (const hex of await readdirOrEmpty(path.join(base, alg))) {
        const d = parseDigest(`${alg}:${hex}`);
        if (d && (await this.hasManifest(name, d))) out.push(d);
      }
    }
    return out;
  }

  /**
   * Every repository name, in the reference registry's order (a depth-first walk of
   * `repositories/` with sorted entries); a directory holding `_layers` (distribution's test) or
   * `_manifests` is a repository.
   */
  async repositories(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dir: string, prefix: string[]) => {
      const entries = (await readdirOrEmpty(dir)).sort();
      if ((entries.includes('_layers') || entries.includes('_manifests')) && prefix.length > 0) {
        out.push(prefix.join('/'));
      }
      for (const e of entries) {
        if (e.startsWith('_') || e.startsWith('.')) continue;
        const p = path.join(dir, e);
        const s = await stat(p).catch(() => undefined);
        if (s?.isDirectory()) await walk(p, [...prefix, e]);
      }
    };
    await walk(path.join(this.v2, 'repositories'), []);
    return out;
  }

  /** Every blob in the store (`blobs/<alg>/<2>/<hex>/data`). */
  async allBlobs(): Promise<DigestParts[]> {
    const out: DigestParts[] = [];
    const base = path.join(this.v2, 'blobs');
    for (const alg of await readdirOrEmpty(base)) {
      for (const two of await readdirOrEmpty(path.join(base, alg))) {
        for (const hex of await readdirOrEmpty(path.join(base, alg, two))) {
          const d = parseDigest(`${alg}:${hex}`);
          if (d?.hex.startsWith(two) && (await this.blobSize(d)) !== undefined) out.push(d);
        }
      }
    }
    return out;
  }

  async deleteBlobData(d: DigestParts): Promise<void> {
    await rm(path.dirname(this.blobDataPath(d)), { recursive: true, force: true });
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if (isMissing(e) || isNotDir(e)) return [];
    throw e;
  }
}

/** Writes `body` into `file` at `offset` (creating it), hashing what is written; returns the byte count. */
async function appendStream(
  file: string,
  offset: number,
  body: AsyncIterable<Uint8Array>,
  hash: Hash | undefined,
  sync: boolean,
): Promise<number> {
  const fh = await open(file, offset === 0 ? 'w' : 'r+');
  let pos = offset;
  try {
    for await (const chunk of body) {
      hash?.update(chunk);
      let done = 0;
      while (done < chunk.length) {
        const { bytesWritten } = await fh.write(chunk, done, chunk.length - done, pos);
        done += bytesWritten;
        pos += bytesWritten;
      }
    }
    if (sync) await fh.datasync();
  } finally {
    await fh.close();
  }
  return pos - offset;
}

export async function hashFile(file: string, algorithm: string): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
