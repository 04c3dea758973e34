/**
 * Random access to the members of a tar file: one streaming pass through the core's `TarReader`
 * records each member's data offset and size (and its sha256, hashed by the core on the way),
 * then members are read back with ranged file reads. Memory stays flat whatever the archive's
 * size. A gzip-compressed archive is first decompressed into a private temp file.
 *
 * Members are looked up by name inside the archive and never joined to host paths. A name is
 * normalized (`./a//b` is `a/b`); a reference that is absolute or has a `..` component is
 * refused. Symlinks and hardlinks between members are followed inside the archive only.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Digest, type EntryType, TarReader } from '@stevedore/core';
import {
  ArchiveError,
  fileRange,
  gunzip,
  isGzip,
  peek,
  readAll,
  removeQuietly,
  verified,
  writeStreamToFile,
} from './io.js';

export interface TarMember {
  name: string;
  type: EntryType;
  linkName: string;
  /** Offset of the member's data in the (uncompressed) archive file. */
  dataOffset: number;
  size: number;
  /** sha256 of the data (regular files). */
  digest: Digest | undefined;
}

export interface TarFileOptions {
  /** Where a decompressed copy of a gzip archive goes (default: the OS temp dir). */
  tempDir?: string;
  /** Most members accepted (default 1,000,000). */
  maxMembers?: number;
}

/**
 * Normalizes a member reference. Refuses absolute paths, `..` components, backslashes and NUL
 * (ERR_ARCHIVE_MEMBER_PATH); `what` names the reference in the message.
 */
export function memberName(ref: string, what: string): string {
  if (typeof ref !== 'string' || ref === '') {
    throw new ArchiveError('ERR_ARCHIVE_MEMBER_PATH', `${what}: empty member reference`);
  }
  if (ref.startsWith('/')) {
    throw new ArchiveError('ERR_ARCHIVE_MEMBER_PATH', `${what}: ${JSON.stringify(ref)} is absolute`);
  }
  if (ref.includes('\\') || ref.includes('\0')) {
    throw new ArchiveError('ERR_ARCHIVE_MEMBER_PATH', `${what}: ${JSON.stringify(ref)} has a backslash or NUL`);
  }
  const parts = ref.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) {
    throw new ArchiveError('ERR_ARCHIVE_MEMBER_PATH', `${what}: ${JSON.stringify(ref)} leaves the archive (..)`);
  }
  if (parts.length === 0)
    throw new ArchiveError('ERR_ARCHIVE_MEMBER_PATH', `${what}: ${JSON.stringify(ref)} is no file`);
  return parts.join('/');
}

/** The archive-relative name of a member as stored (lenient: `..` is kept so it never matches). */
function storedName(raw: string): string {
  return raw
    .split('/')
    .filter((p) => p !== '' && p !== '.')
    .join('/');
}

export class TarFile {
  private constructor(
    /** The uncompressed archive on disk (a temp copy when the input was gzip). */
    readonly file: string,
    readonly members: ReadonlyMap<string, TarMember>,
    readonly compressed: boolean,
    private readonly tempDir: string | undefined,
  ) {}

  /** Indexes `file` (plain or gzip tar). Throws on duplicate member names. */
  static async open(file: string, options: TarFileOptions = {}): Promise<TarFile> {
    const head = await peek(() => createReadStream(file, { start: 0, end: 3 }) as AsyncIterable<Buffer>, 2);
    let plain = file;
    let tempDir: string | undefined;
    if (isGzip(head)) {
      tempDir = await mkdtemp(path.join(options.tempDir ?? tmpdir(), 'stevedore-archive-'));
      plain = path.join(tempDir, 'archive.tar');
      try {
        await writeStreamToFile(gunzip(createReadStream(file, { highWaterMark: 1 << 20 }), file), plain, null);
      } catch (e) {
        await removeQuietly(tempDir);
        throw e;
      }
    }
    try {
      const members = await indexTar(plain, file, options.maxMembers ?? 1_000_000);
      return new TarFile(plain, members, tempDir !== undefined, tempDir);
    } catch (e) {
      if (tempDir) await removeQuietly(tempDir);
      throw e;
    }
  }

  /** Removes the decompressed temp copy, if any. */
  async close(): Promise<void> {
    if (this.tempDir) await removeQuietly(this.tempDir);
  }

  /** Whether `ref` names a member (after normalization and link resolution). */
  has(ref: string): boolean {
    try {
      this.resolve(ref, 'lookup');
      return true;
    } catch {
      return false;
    }
  }

  /** The regular-file member `ref` names, following links inside the archive. */
  resolve(ref: string, what: string): TarMember {
    let name = memberName(ref, what);
    for (let hops = 0; hops < 16; hops++) {
      const m = this.members.get(name);
      if (!m)
        throw new ArchiveError(
          'ERR_ARCHIVE_MEMBER_MISSING',
          `${what}: no member ${JSON.stringify(name)} in the archive`,
        );
      if (m.type === 'file') return m;
      if (m.type === 'symlink') {
        const target = m.linkName.startsWith('/') ? m.linkName : path.posix.join(path.posix.dirname(name), m.linkName);
        const norm = path.posix.normalize(target);
        if (norm.startsWith('/') || norm === '..' || norm.startsWith('../')) {
          throw new ArchiveError(
            'ERR_ARCHIVE_BAD_LINK',
            `${what}: symlink ${name} -> ${m.linkName} leaves the archive`,
          );
        }
        name = memberName(norm, what);
      } else if (m.type === 'hardlink') {
        name = memberName(m.linkName, what);
      } else {
        throw new ArchiveError('ERR_ARCHIVE_BAD_LINK', `${what}: member ${name} is a ${m.type}, not a file`);
      }
    }
    throw new ArchiveError('ERR_ARCHIVE_BAD_LINK', `${what}: too many links from ${ref}`);
  }

  /** The member's bytes, verified against the sha256 computed when indexing. */
  stream(ref: string, what: string): AsyncIterable<Uint8Array> {
    const m = this.resolve(ref, what);
    const raw = fileRange(this.file, m.dataOffset, m.size);
    return m.digest ? verified(raw, { digest: m.digest, size: m.size }, what) : raw;
  }

  async read(ref: string, max: number, what: string): Promise<Uint8Array> {
    const m = this.resolve(ref, what);
    if (m.size > max)
      throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${what}: ${m.size} bytes is more than the limit of ${max}`);
    return readAll(this.stream(ref, what), max, what);
  }
}

async function indexTar(file: string, label: string, maxMembers: number): Promise<Map<string, TarMember>> {
  const reader = new TarReader({ hash: 'sha256', withData: true });
  const members = new Map<string, TarMember>();
  let pos = 0; // offset in the file of the current chunk
  let current: TarMember | undefined;
  const take = (events: ReturnType<TarReader['push']>, chunk: Uint8Array | undefined) => {
    for (const e of events) {
      if (e.type === 'entry') {
        const h = e.header;
        const name = storedName(h.path);
        if (name === '') {
          current = undefined;
          continue;
        }
        if (members.has(name)) {
          const prev = members.get(name) as TarMember;
          // A directory listed twice is harmless; anything else changes meaning.
          if (!(prev.type === 'directory' && h.type === 'directory')) {
            throw new ArchiveError(
              'ERR_ARCHIVE_DUPLICATE_MEMBER',
              `${label}: member ${JSON.stringify(name)} appears twice`,
            );
          }
        }
        if (members.size >= maxMembers) {
          throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${label}: more than ${maxMembers} members`);
        }
        current = { name, type: h.type, linkName: h.linkName, dataOffset: -1, size: h.size, digest: undefined };
        members.set(name, current);
      } else if (e.type === 'data') {
        if (current && current.dataOffset < 0 && chunk) {
          current.dataOffset = pos + (e.data.byteOffset - chunk.byteOffset);
        }
      } else if (e.type === 'entry-end') {
        if (current) {
          if (current.dataOffset < 0) current.dataOffset = 0; // empty
          if (e.digest && current.type === 'file') current.digest = Digest.fromCore(e.digest);
        }
        current = undefined;
      }
    }
  };
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      take(reader.push(chunk), chunk);
      pos += chunk.length;
    }
    take(reader.end(), undefined);
  } catch (e) {
    if (e instanceof ArchiveError) throw e;
    const msg = (e as Error).message;
    throw new ArchiveError('ERR_ARCHIVE_FORMAT', `${label}: not a readable tar archive: ${msg}`, { cause: e });
  }
  return members;
}
