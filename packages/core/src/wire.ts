/**
 * Decoder/encoder for the core's binary wire format (`crates/core/src/wire.rs`, which
 * documents the layout). Both backends hand back these bytes; decoding them in one place is
 * what makes native and wasm results identical.
 */
import type { DigestAlgorithm } from './backend.js';

export type EntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'directory' | 'fifo';
const TYPES: EntryType[] = ['file', 'hardlink', 'symlink', 'char', 'block', 'directory', 'fifo'];

/** One entry of a tar archive or of a layer index. Sizes are of the uncompressed bytes. */
export interface EntryRecord {
  type: EntryType;
  /** Path as UTF-8 (invalid sequences replaced); `pathBytes` holds the exact bytes. */
  path: string;
  pathBytes: Uint8Array;
  /** Symlink target or hardlink target ('' otherwise). */
  linkName: string;
  linkNameBytes: Uint8Array;
  /**
   * The mode as stored: permission bits (with setuid/setgid/sticky). Some writers (Docker's
   * commit) also store the file-type bits; use `mode & 0o7777` for the permissions. Layer-index
   * entries never carry type bits.
   */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  size: number;
  /** Seconds since the epoch, and the sub-second part in nanoseconds. */
  mtime: number;
  mtimeNanos: number;
  devMajor: number;
  devMinor: number;
  /** Byte offset in the archive of the entry's first header block (tar only). */
  offset: number;
  /** Content id of a regular file in a layer index (e.g. its sha256), or ''. */
  content: string;
  /** Extended attributes in archive order. */
  xattrs: [string, Uint8Array][];
}

const utf8 = new TextDecoder();
const encoder = new TextEncoder();

/** UTF-8 decoding with an ASCII fast path (most tar names): TextDecoder's call cost dominates. */
function decodeText(buf: Uint8Array, start: number, len: number): string {
  if (len === 0) return '';
  if (len <= 256) {
    let ascii = true;
    for (let i = start; i < start + len; i++) {
      if ((buf[i] as number) >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, buf.subarray(start, start + len) as unknown as number[]);
  }
  return utf8.decode(buf.subarray(start, start + len));
}

export class WireReader {
  private pos = 0;
  private readonly view: DataView;
  private readonly buf: Uint8Array;
  /**
   * `owned`: the caller hands over `source` (a fresh buffer from the native addon), so byte
   * fields can be views into it; otherwise (wasm memory, reused by the next call) they are copies.
   */
  constructor(
    source: Uint8Array,
    private readonly owned = false,
  ) {
    // A plain Uint8Array view, so copies are plain too (a Node Buffer's would be Buffers).
    this.buf = new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
    this.view = new DataView(source.buffer, source.byteOffset, source.byteLength);
  }
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  u8(): number {
    return this.view.getUint8(this.pos++);
  }
  u32(): number {
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  // 64-bit values as two 32-bit halves: much cheaper than BigInt on the hot path. Values
  // beyond 2^53 lose precision, as any JS number would.
  u64(): number {
    const lo = this.view.getUint32(this.pos, true);
    const hi = this.view.getUint32(this.pos + 4, true);
    this.pos += 8;
    return hi * 0x1_0000_0000 + lo;
  }
  i64(): number {
    const lo = this.view.getUint32(this.pos, true);
    const hi = this.view.getInt32(this.pos + 4, true);
    this.pos += 8;
    return hi * 0x1_0000_0000 + lo;
  }
  bytes(): Uint8Array {
    const n = this.u32();
    const b = this.owned ? this.buf.subarray(this.pos, this.pos + n) : this.buf.slice(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  text(): string {
    const n = this.u32();
    const s = decodeText(this.buf, this.pos, n);
    this.pos += n;
    return s;
  }
  entry(): EntryRecord {
    const type = TYPES[this.u8()] ?? 'file';
    const mode = this.u32();
    const uid = this.u64();
    const gid = this.u64();
    const size = this.u64();
    const mtime = this.i64();
    const mtimeNanos = this.u32();
    const devMajor = this.u32();
    const devMinor = this.u32();
    const offset = this.u64();
    const pathBytes = this.bytes();
    const linkNameBytes = this.bytes();
    const path = decodeText(pathBytes, 0, pathBytes.length);
    const linkName = linkNameBytes.length ? decodeText(linkNameBytes, 0, linkNameBytes.length) : '';
    const uname = this.text();
    const gname = this.text();
    const content = this.text();
    const n = this.u32();
    const xattrs: [string, Uint8Array][] = [];
    for (let i = 0; i < n; i++) xattrs.push([this.text(), this.bytes()]);
    return {
      type,
      path,
      pathBytes,
      linkName,
      linkNameBytes,
      mode,
      uid,
      gid,
      uname,
      gname,
      size,
      mtime,
      mtimeNanos,
      devMajor,
      devMinor,
      offset,
      content,
      xattrs,
    };
  }
}

/** Events of a streaming tar read. `data` is a view into the chunk given to that `push`. */
export type TarEvent =
  | { type: 'entry'; header: EntryRecord }
  /** `hole`: zero bytes of a sparse entry's hole (not in the input: `data` is a fresh array). */
  | { type: 'data'; data: Uint8Array; hole?: true }
  | { type: 'entry-end'; digest: string | undefined }
  | { type: 'end' };

/** Decodes scanner events; data offsets are relative to `chunk`. */
export function decodeTarEvents(
  buf: Uint8Array,
  chunk: Uint8Array | undefined,
  into: TarEvent[] = [],
  owned = false,
): TarEvent[] {
  const r = new WireReader(buf, owned);
  while (!r.done) {
    const tag = r.u8();
    if (tag === 1) into.push({ type: 'entry', header: r.entry() });
    else if (tag === 2) {
      const off = r.u32();
      const len = r.u32();
      into.push({ type: 'data', data: (chunk as Uint8Array).subarray(off, off + len) });
    } else if (tag === 3) {
      const d = r.text();
      into.push({ type: 'entry-end', digest: d || undefined });
    } else if (tag === 4) into.push({ type: 'end' });
    else if (tag === 5) into.push({ type: 'data', data: new Uint8Array(r.u32()), hole: true });
    else throw new Error(`wire: unknown tar event tag ${tag}`);
  }
  return into;
}

/** What a path resolves to in a layer stack, without following symlinks. */
export type Resolution =
  | { kind: 'found'; layer: number; implicit: boolean; entry: EntryRecord }
  | { kind: 'whiteout'; layer: number }
  | { kind: 'shadowed'; layer: number }
  | { kind: 'absent' };

export function decodeResolution(buf: Uint8Array): Resolution {
  const r = new WireReader(buf);
  const tag = r.u8();
  if (tag === 1) {
    const layer = r.u32();
    const implicit = r.u8() === 1;
    return { kind: 'found', layer, implicit, entry: r.entry() };
  }
  if (tag === 2) return { kind: 'whiteout', layer: r.u32() };
  if (tag === 3) return { kind: 'shadowed', layer: r.u32() };
  return { kind: 'absent' };
}

/** `stat`/`lstat` of a merged-view path: the providing layer and the inode's entry. */
export interface StackStat {
  /** The path after resolving symlinks. */
  path: string;
  layer: number;
  implicit: boolean;
  nlink: number;
  entry: EntryRecord;
}

function stat(r: WireReader): StackStat {
  const path = r.text();
  const layer = r.u32();
  const implicit = r.u8() === 1;
  const nlink = r.u32();
  return { path, layer, implicit, nlink, entry: r.entry() };
}

export function decodeStat(buf: Uint8Array): StackStat {
  return stat(new WireReader(buf));
}

export function decodeStats(buf: Uint8Array): StackStat[] {
  const r = new WireReader(buf);
  const n = r.u32();
  const out: StackStat[] = [];
  for (let i = 0; i < n; i++) out.push(stat(r));
  return out;
}

export function decodeNames(buf: Uint8Array): string[] {
  const r = new WireReader(buf);
  const n = r.u32();
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(r.text());
  return out;
}

/** A layer entry given by JS (e.g. from a directory walk). */
export interface LayerEntryInput {
  path: string | Uint8Array;
  type: EntryType;
  linkName?: string | Uint8Array;
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: number;
  mtimeNanos?: number;
  uname?: string;
  gname?: string;
  devMajor?: number;
  devMinor?: number;
  content?: string;
  xattrs?: [string, Uint8Array][];
}

class WireWriter {
  private buf = new Uint8Array(1024);
  private view = new DataView(this.buf.buffer);
  private pos = 0;
  private room(n: number) {
    if (this.pos + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    next.set(this.buf);
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number) {
    this.room(1);
    this.view.setUint8(this.pos++, v);
  }
  u32(v: number) {
    this.room(4);
    this.view.setUint32(this.pos, v, true);
    this.pos += 4;
  }
  u64(v: number) {
    this.room(8);
    this.view.setBigUint64(this.pos, BigInt.asUintN(64, BigInt(Math.trunc(v))), true);
    this.pos += 8;
  }
  bytes(b: string | Uint8Array) {
    const bytes = typeof b === 'string' ? encoder.encode(b) : b;
    this.u32(bytes.length);
    this.room(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

function putEntry(w: WireWriter, e: LayerEntryInput): void {
  {
    const kind = TYPES.indexOf(e.type);
    if (kind < 0) throw new TypeError(`unknown entry type ${String(e.type)}`);
    w.u8(kind);
    w.u32(e.mode ?? (e.type === 'directory' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644));
    w.u64(e.uid ?? 0);
    w.u64(e.gid ?? 0);
    w.u64(e.size ?? 0);
    w.u64(e.mtime ?? 0);
    w.u32(e.mtimeNanos ?? 0);
    w.u32(e.devMajor ?? 0);
    w.u32(e.devMinor ?? 0);
    w.u64(0);
    w.bytes(e.path);
    w.bytes(e.linkName ?? '');
    w.bytes(e.uname ?? '');
    w.bytes(e.gname ?? '');
    w.bytes(e.content ?? '');
    w.u32(e.xattrs?.length ?? 0);
    for (const [k, v] of e.xattrs ?? []) {
      w.bytes(k);
      w.bytes(v);
    }
  }
}

export function encodeEntries(entries: LayerEntryInput[]): Uint8Array {
  const w = new WireWriter();
  w.u32(entries.length);
  for (const e of entries) putEntry(w, e);
  return w.finish();
}

export function encodeEntry(entry: LayerEntryInput): Uint8Array {
  const w = new WireWriter();
  putEntry(w, entry);
  return w.finish();
}

export type { DigestAlgorithm };
