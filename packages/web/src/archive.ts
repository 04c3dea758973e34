/**
 * First pass over an image archive (a `docker save` tar, an oci-archive, either gzip'd): the
 * file is streamed once through the core's `TarReader`, every member is hashed (sha256, in the
 * wasm core) and its data offset recorded; only small JSON members are kept in memory. Layers
 * are read again later by byte range (`Blob.slice`), so the archive is never buffered whole.
 */
import { TarReader } from '@stevedore/core/browser';

/** Members up to this size whose data starts with `{` or `[` are kept (manifests, configs, indexes). */
export const MAX_JSON_MEMBER = 4 * 1024 * 1024;

export interface Member {
  /** Normalized path inside the archive (no leading `./` or `/`). */
  name: string;
  type: string;
  /** Size of the member's data, in bytes (uncompressed archive). */
  size: number;
  /** Offset of the member's data in the (uncompressed) archive; -1 when empty. */
  dataOffset: number;
  /** sha256 of the member's data, computed while streaming (regular files only). */
  digest?: string;
  linkName: string;
  /** The bytes, for small JSON members only. */
  json?: Uint8Array;
  /** A folder's file (see folder.ts): the member's bytes are this file's, not a range of `source`. */
  file?: Blob;
}

export interface ArchiveIndex {
  source: Blob;
  /** The outer archive was gzip'd: ranges are read by decompressing from the start. */
  gzipped: boolean;
  members: Map<string, Member>;
  /** Bytes of tar read (uncompressed size of the archive). */
  tarSize: number;
  /** A folder (members are files): messages say "the folder". */
  folder?: boolean;
}

export type Progress = (done: number, total: number, what: string) => void;

export function normalizePath(p: string): string {
  let s = p;
  while (s.startsWith('./')) s = s.slice(2);
  while (s.startsWith('/')) s = s.slice(1);
  while (s.endsWith('/')) s = s.slice(0, -1);
  return s === '.' ? '' : s;
}

async function peek(blob: Blob, n: number): Promise<Uint8Array> {
  return new Uint8Array(await blob.slice(0, n).arrayBuffer());
}

export const isGzip = (b: Uint8Array) => b[0] === 0x1f && b[1] === 0x8b;

async function* chunks(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value.length) yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * A byte stream read into one reused buffer (a BYOB reader), so a long read leaves no garbage
 * chunk behind for the collector; each chunk is valid until the next one is asked for. Streams
 * that are not byte streams are read as they come.
 */
async function* reusedChunks(stream: ReadableStream<Uint8Array>, size = 1 << 20): AsyncGenerator<Uint8Array> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = stream.getReader({ mode: 'byob' });
  } catch {
    yield* chunks(stream);
    return;
  }
  let buffer = new ArrayBuffer(size);
  try {
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(buffer, 0, size));
      if (done || !value) return;
      buffer = value.buffer as ArrayBuffer; // handed back (transferred) by the read
      if (value.length) yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

/** The archive's tar bytes as a stream, counting compressed bytes read for progress. */
function tarStream(source: Blob, gzipped: boolean, onRead?: (n: number) => void): ReadableStream<Uint8Array> {
  let raw = source.stream() as ReadableStream<Uint8Array>;
  if (onRead) {
    raw = raw.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          onRead(chunk.length);
          ctl.enqueue(chunk);
        },
      }),
    );
  }
  return gzipped
    ? raw.pipeThrough(new DecompressionStream('gzip') as unknown as TransformStream<Uint8Array, Uint8Array>)
    : raw;
}

/** Streams the archive once: member offsets, sizes and sha256 digests, small JSON kept. */
export async function indexArchive(source: Blob, progress?: Progress): Promise<ArchiveIndex> {
  const gzipped = isGzip(await peek(source, 2));
  const members = new Map<string, Member>();
  const reader = new TarReader({ hash: 'sha256', withData: true });
  let read = 0;
  let lastReport = 0;
  const onRead = (n: number) => {
    read += n;
    if (progress && read - lastReport > 4 * 1024 * 1024) {
      lastReport = read;
      progress(read, source.size, 'reading archive');
    }
  };
  // A plain tar is read from the file into one reused buffer; a gzip'd one through the inflater.
  const input = gzipped
    ? chunks(tarStream(source, true, onRead))
    : reusedChunks(source.stream() as ReadableStream<Uint8Array>);
  let pos = 0;
  let current: Member | undefined;
  let parts: Uint8Array[] | undefined;
  const handle = (events: ReturnType<TarReader['push']>, chunk: Uint8Array | undefined, chunkPos: number) => {
    for (const ev of events) {
      if (ev.type === 'entry') {
        const h = ev.header;
        current = {
          name: normalizePath(h.path),
          type: h.type,
          size: h.size,
          dataOffset: -1,
          linkName: h.linkName,
        };
        parts = h.type === 'file' && h.size > 0 && h.size <= MAX_JSON_MEMBER ? [] : undefined;
      } else if (ev.type === 'data' && current) {
        if (current.dataOffset < 0 && chunk) current.dataOffset = chunkPos + (ev.data.byteOffset - chunk.byteOffset);
        if (parts) {
          if (parts.length === 0 && ev.data[0] !== 0x7b && ev.data[0] !== 0x5b) parts = undefined;
          else parts.push(ev.data.slice());
        }
      } else if (ev.type === 'entry-end' && current) {
        if (ev.digest) current.digest = ev.digest;
        if (parts) current.json = concat(parts, current.size);
        if (current.type === 'file' && !current.digest && current.size === 0) {
          current.digest = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
        }
        if (current.name) members.set(current.name, current);
        current = undefined;
        parts = undefined;
      }
    }
  };
  for await (const chunk of input) {
    if (!gzipped) onRead(chunk.length);
    handle(reader.push(chunk), chunk, pos);
    pos += chunk.length;
  }
  handle(reader.end(), undefined, pos);
  progress?.(source.size, source.size, 'archive read');
  return { source, gzipped, members, tarSize: pos };
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  if (parts.length === 1 && parts[0]?.length === size) return parts[0];
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * A member's bytes as a stream: a folder's file, read anew; a `Blob.slice` of the file for a
 * plain tar; for a gzip'd archive, the decompressed stream from the start, skipping to the member's range.
 */
export function readMember(index: ArchiveIndex, member: Member): ReadableStream<Uint8Array> {
  if (member.file) return member.file.stream() as ReadableStream<Uint8Array>;
  if (member.dataOffset < 0 || member.size === 0) return new Blob([]).stream() as ReadableStream<Uint8Array>;
  const start = member.dataOffset;
  const end = start + member.size;
  if (!index.gzipped) return index.source.slice(start, end).stream() as ReadableStream<Uint8Array>;
  const it = chunks(tarStream(index.source, true));
  let pos = 0;
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      for (;;) {
        if (pos >= end) {
          ctl.close();
          await it.return(undefined);
          return;
        }
        const { done, value } = await it.next();
        if (done) {
          ctl.close();
          return;
        }
        const from = pos;
        pos += value.length;
        if (pos <= start) continue;
        ctl.enqueue(value.subarray(Math.max(0, start - from), Math.min(value.length, end - from)));
        return;
      }
    },
    async cancel() {
      await it.return(undefined);
    },
  });
}
