/**
 * Tar reading and the layer-stack resolver, over whichever backend is active. Shared by the
 * Node and browser entry points.
 */
import { backend, Hasher } from './api.js';
import type {
  LayerIndexBackend,
  LayerStackBackend,
  TarFormat,
  TarScannerBackend,
  TarScanOptions,
  TarWriterBackend,
  WhiteoutForm,
} from './backend.js';
import { StevedoreError } from './errors.js';
import {
  type EntryRecord,
  encodeEntries,
  encodeEntry,
  type LayerEntryInput,
  type Resolution,
  type StackStat,
  type TarEvent,
} from './wire.js';

export type { TarFormat, TarScanOptions, WhiteoutForm } from './backend.js';
export type { EntryRecord, EntryType, LayerEntryInput, Resolution, StackStat, TarEvent } from './wire.js';

const encoder = new TextEncoder();
const pathBytes = (p: string | Uint8Array) => (typeof p === 'string' ? encoder.encode(p) : p);

/**
 * A streaming tar reader: `push` chunks of any size, get events back. Data events are views
 * into the chunk just pushed (valid until you reuse that chunk). Checksums are verified; PAX,
 * GNU and ustar extensions are applied; errors name the entry and byte offset.
 */
export class TarReader {
  private readonly inner: TarScannerBackend;
  constructor(options: TarScanOptions & { withData?: boolean } = {}) {
    this.withData = options.withData ?? true;
    this.inner = backend().createTarScanner(options);
  }
  private readonly withData: boolean;

  push(chunk: Uint8Array): TarEvent[] {
    return this.inner.push(chunk, this.withData);
  }

  /** Call at end of input: throws `ERR_TAR_TRUNCATED` when the archive stopped mid-entry. */
  end(): TarEvent[] {
    return this.inner.finish();
  }

  /** The layer index of what was read (construct with `collectEntries: true`). */
  toLayerIndex(form: WhiteoutForm = 'oci'): LayerIndex {
    return new LayerIndex(this.inner.toIndex(form));
  }
}

/**
 * A deterministic tar writer: equal headers give equal bytes. `pax` adds PAX records only
 * when needed (long or non-ASCII names, big ids, sub-second times, xattrs); `gnu` and `ustar`
 * refuse what they cannot hold. You write the returned bytes, then the entry's data, then
 * `endEntry()`'s padding; `finish()` gives the end-of-archive blocks.
 */
export class TarWriter {
  private readonly inner: TarWriterBackend;
  constructor(readonly format: TarFormat = 'pax') {
    this.inner = backend().createTarWriter(format);
  }
  header(entry: LayerEntryInput): Uint8Array {
    return this.inner.header(encodeEntry(entry));
  }
  /** Accounts for a chunk of the open entry's data (checked against its size); returns it. */
  data(chunk: Uint8Array): Uint8Array {
    this.inner.data(chunk);
    return chunk;
  }
  endEntry(): Uint8Array {
    return this.inner.endEntry();
  }
  finish(): Uint8Array {
    return this.inner.finish();
  }
}

/** A whole archive in memory: each entry's `size` is taken from its data. */
export function writeTar(
  entries: { entry: LayerEntryInput; data?: Uint8Array }[],
  format: TarFormat = 'pax',
): Uint8Array {
  const w = new TarWriter(format);
  const parts: Uint8Array[] = [];
  for (const { entry, data } of entries) {
    parts.push(w.header({ ...entry, size: data?.length ?? 0 }));
    if (data) parts.push(w.data(data));
    parts.push(w.endEntry());
  }
  parts.push(w.finish());
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** One listed tar entry, with its content digest when hashing was asked for. */
export interface TarListing extends EntryRecord {
  digest?: string;
}

/** Folds scanner events into a listing (digests attach to their entry). */
export function collectListing(events: TarEvent[], into: TarListing[]): void {
  for (const e of events) {
    if (e.type === 'entry') into.push({ ...e.header });
    else if (e.type === 'entry-end' && e.digest) (into[into.length - 1] as TarListing).digest = e.digest;
  }
}

/** Lists a whole tar archive held in memory (optionally hashing every file). */
export function listTar(archive: Uint8Array, options: Pick<TarScanOptions, 'hash'> = {}): TarListing[] {
  const r = new TarReader({ ...options, withData: false });
  const out: TarListing[] = [];
  collectListing(r.push(archive), out);
  collectListing(r.end(), out);
  return out;
}

/** Lists a tar archive from a stream of chunks (a Node stream, a web ReadableStream, …). */
export async function listTarStream(
  source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
  options: Pick<TarScanOptions, 'hash'> = {},
): Promise<TarListing[]> {
  const r = new TarReader({ ...options, withData: false });
  const out: TarListing[] = [];
  for await (const chunk of iterate(source)) collectListing(r.push(chunk), out);
  collectListing(r.end(), out);
  return out;
}

async function* iterate(source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>): AsyncIterable<Uint8Array> {
  if (Symbol.asyncIterator in source) {
    yield* source as AsyncIterable<Uint8Array>;
    return;
  }
  const reader = (source as ReadableStream<Uint8Array>).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

/** Every path of one layer, whiteouts normalized. Build from a tar (stream) or from entries. */
export class LayerIndex {
  /** @internal */
  constructor(readonly inner: LayerIndexBackend) {}

  /** From an uncompressed layer tar; file contents are hashed (sha256) as content ids. */
  static fromTar(archive: Uint8Array, form: WhiteoutForm = 'oci'): LayerIndex {
    const r = new TarReader({ hash: 'sha256', collectEntries: true, withData: false });
    r.push(archive);
    r.end();
    return r.toLayerIndex(form);
  }

  static async fromTarStream(
    source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
    form: WhiteoutForm = 'oci',
  ): Promise<LayerIndex> {
    const r = new TarReader({ hash: 'sha256', collectEntries: true, withData: false });
    for await (const chunk of iterate(source)) r.push(chunk);
    r.end();
    return r.toLayerIndex(form);
  }

  /** From entries gathered elsewhere (e.g. a walk of a diff dir: `form: 'overlay'`). */
  static fromEntries(entries: LayerEntryInput[], form: WhiteoutForm = 'oci'): LayerIndex {
    return new LayerIndex(backend().layerIndexFromEntries(encodeEntries(entries), form));
  }
}

/**
 * The merged view of a layer stack (base layer first, the top layer wins), answering as the
 * kernel's overlayfs would: whiteouts, opaque dirs, file↔dir replacement, and symlinks
 * resolved inside the root (never escaping it).
 */
export class LayerStack {
  private readonly inner: LayerStackBackend;
  constructor(readonly layers: LayerIndex[]) {
    if (!Array.isArray(layers)) throw new StevedoreError('ERR_INVALID_ARG_TYPE', 'layers must be an array');
    this.inner = backend().createLayerStack(layers.map((l) => l.inner));
  }

  /** Which layer provides `path`, without following symlinks. */
  resolve(path: string | Uint8Array): Resolution {
    return this.inner.resolve(pathBytes(path));
  }

  /** Follows symlinks (within the root); throws `ERR_PATH_NOT_FOUND`, `ERR_SYMLINK_LOOP`, … */
  stat(path: string | Uint8Array): StackStat {
    return this.inner.stat(pathBytes(path), true);
  }

  lstat(path: string | Uint8Array): StackStat {
    return this.inner.stat(pathBytes(path), false);
  }

  /** Sorted names of a directory of the merged view. */
  readdir(path: string | Uint8Array): string[] {
    return this.inner.readdir(pathBytes(path));
  }

  /** Every visible path, depth first. */
  walk(): StackStat[] {
    return this.inner.walk();
  }
}

/** What scanning a layer blob found. Sizes: compressed = the blob, uncompressed = the tar. */
export interface LayerScan {
  /** Digest of the blob as read. */
  digest: string;
  /** Digest of the uncompressed tar. */
  diffId: string;
  compression: 'tar' | 'gzip' | 'zstd';
  compressedSize: number;
  uncompressedSize: number;
  /** Every entry, with a sha256 per regular file. */
  entries: TarListing[];
}

const MAGIC_GZIP = [0x1f, 0x8b];
const MAGIC_ZSTD = [0x28, 0xb5, 0x2f, 0xfd];
const startsWith = (b: Uint8Array, m: number[]) => m.every((v, i) => b[i] === v);

/**
 * Lists a layer blob from a stream and computes its digest and diff_id in one pass, with no
 * buffering: gzip (and zstd where the platform's `DecompressionStream` has it) by magic bytes,
 * else plain tar. Works in browsers and in Node (≥ 18). Expected digests, when given, are
 * checked at the end (`ERR_DIGEST_MISMATCH` names both).
 */
export async function scanLayer(
  source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
  expected: { digest?: string; diffId?: string } = {},
): Promise<LayerScan> {
  const blobHash = new Hasher('sha256');
  const tarHash = new Hasher('sha256');
  const reader = new TarReader({ hash: 'sha256', withData: false });
  const entries: TarListing[] = [];
  const onTar = (chunk: Uint8Array) => {
    tarHash.update(chunk);
    collectListing(reader.push(chunk), entries);
  };
  let compression: LayerScan['compression'] | undefined;
  let writer: WritableStreamDefaultWriter<BufferSource> | undefined;
  let pump: Promise<void> | undefined;
  let pumpError: unknown;
  const start = (first: Uint8Array) => {
    compression = startsWith(first, MAGIC_GZIP) ? 'gzip' : startsWith(first, MAGIC_ZSTD) ? 'zstd' : 'tar';
    if (compression === 'tar') return;
    let ds: DecompressionStream;
    try {
      ds = new DecompressionStream(compression as CompressionFormat);
    } catch {
      throw new StevedoreError('ERR_UNSUPPORTED_COMPRESSION', `this platform cannot decompress ${compression} layers`);
    }
    writer = ds.writable.getWriter();
    pump = (async () => {
      for await (const chunk of iterate(ds.readable as ReadableStream<Uint8Array>)) onTar(chunk);
    })().catch((e) => {
      pumpError = e;
      writer?.abort(e).catch(() => {});
    });
  };
  try {
    for await (const chunk of iterate(source)) {
      if (chunk.length === 0) continue;
      if (compression === undefined) start(chunk);
      blobHash.update(chunk);
      if (writer) await writer.write(chunk as Uint8Array<ArrayBuffer>);
      else onTar(chunk);
      if (pumpError) break;
    }
    if (compression === undefined) compression = 'tar';
    if (writer && !pumpError) await writer.close();
    await pump;
  } catch (e) {
    if (!pumpError) {
      throw e instanceof StevedoreError
        ? e
        : new StevedoreError('ERR_DECOMPRESS', `layer ${compression ?? ''} stream: ${(e as Error).message}`, {
            cause: e,
          });
    }
  }
  if (pumpError) throw pumpError;
  collectListing(reader.end(), entries);
  const scan: LayerScan = {
    digest: blobHash.digest().toString(),
    diffId: '',
    compression: compression ?? 'tar',
    compressedSize: blobHash.size,
    uncompressedSize: tarHash.size,
    entries,
  };
  scan.diffId = tarHash.digest().toString();
  for (const [what, want, got] of [
    ['layer', expected.digest, scan.digest],
    ['layer diff_id', expected.diffId, scan.diffId],
  ] as const) {
    if (want && want !== got) {
      throw new StevedoreError('ERR_DIGEST_MISMATCH', `${what}: digest mismatch (expected ${want}, got ${got})`);
    }
  }
  return scan;
}
