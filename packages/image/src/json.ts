/**
 * Strict JSON reading for image documents (manifests, indexes, configs, descriptors), per
 * SECURITY.md: a size cap before anything is parsed, strict UTF-8, a nesting-depth cap, and no
 * duplicate keys. `JSON.parse` keeps the last of two equal keys while other readers (Go's
 * encoding/json keeps the last too, but other languages differ) may keep the first; a document
 * whose meaning depends on the reader is refused.
 */
import { StevedoreError } from '@stevedore/core';

/** Manifests and configs: 4 MiB (SECURITY.md §3). */
export const DEFAULT_MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;
/** Deepest nesting of objects and arrays accepted. Real manifests and configs stay under 10. */
export const DEFAULT_MAX_JSON_DEPTH = 64;

/** Caps applied before and while a document is parsed. */
export interface DocumentLimits {
  /** Largest document in bytes. Default 4 MiB. */
  maxBytes?: number;
  /** Deepest nesting of objects/arrays. Default 64. */
  maxDepth?: number;
}

/** Stable codes of `ImageFormatError`. */
export type ImageFormatErrorCode =
  /** More bytes than `maxBytes`. */
  | 'ERR_DOCUMENT_TOO_LARGE'
  /** Not valid UTF-8. */
  | 'ERR_JSON_INVALID_UTF8'
  /** Not valid JSON. */
  | 'ERR_JSON_SYNTAX'
  /** Nested deeper than `maxDepth`. */
  | 'ERR_JSON_TOO_DEEP'
  /** The same key twice in one object. */
  | 'ERR_JSON_DUPLICATE_KEY'
  /** A key that differs from a known field only by letter case (Go's decoder would take it for the field). */
  | 'ERR_JSON_AMBIGUOUS_KEY'
  /** A manifest or index that breaks its schema. */
  | 'ERR_MANIFEST_INVALID'
  /** Media type of the document and of the transport differ. */
  | 'ERR_MANIFEST_MEDIA_TYPE_MISMATCH'
  /** A media type that is not an image manifest or index. */
  | 'ERR_MANIFEST_UNSUPPORTED_MEDIA_TYPE'
  /** Both manifest fields (config/layers) and index fields (manifests), or neither. */
  | 'ERR_MANIFEST_AMBIGUOUS'
  /** Docker schema 1: recognised, but read-only (see `parseSchema1Manifest`). */
  | 'ERR_MANIFEST_SCHEMA1'
  /** An image config that breaks its schema. */
  | 'ERR_CONFIG_INVALID'
  /** A media type that is not an image config. */
  | 'ERR_CONFIG_UNSUPPORTED_MEDIA_TYPE'
  /** A descriptor that breaks its schema. */
  | 'ERR_DESCRIPTOR_INVALID'
  /** A descriptor's embedded `data` does not match its size or digest. */
  | 'ERR_DESCRIPTOR_DATA_MISMATCH';

/**
 * A document that cannot be used. `document` names its kind (`image manifest`, `image config`,
 * …), `path` the field that is wrong (`layers[2].digest`; empty for the whole document).
 */
export class ImageFormatError extends StevedoreError {
  declare readonly code: ImageFormatErrorCode;
  readonly document: string;
  readonly path: string | undefined;
  constructor(
    code: ImageFormatErrorCode,
    document: string,
    message: string,
    options?: { path?: string | undefined; cause?: unknown },
  ) {
    const where = options?.path ? `${options.path}: ` : '';
    super(code, `${document}: ${where}${message}`, options);
    this.name = 'ImageFormatError';
    this.document = document;
    this.path = options?.path || undefined;
  }
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** A field path for messages: `layers[0].digest`, `config.Labels["a b"]`. */
export function formatPath(segments: readonly (string | number)[]): string {
  let out = '';
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (IDENTIFIER.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

type Frame =
  | { kind: 'object'; keys: Set<string>; key: string | undefined; expectKey: boolean }
  | { kind: 'array'; index: number };

function framePath(stack: readonly Frame[], extra?: string): string {
  const segments: (string | number)[] = [];
  for (const f of stack) {
    if (f.kind === 'array') segments.push(f.index);
    else if (f.key !== undefined) segments.push(f.key);
  }
  if (extra !== undefined) segments.push(extra);
  return formatPath(segments);
}

/**
 * One pass over JSON text that enforces the depth cap and rejects duplicate keys (compared after
 * unescaping, so `"a"` and `"\u0061"` are the same key). Malformed text is left for `JSON.parse`
 * to report.
 */
function scan(text: string, document: string, maxDepth: number): void {
  const stack: Frame[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (stack.length >= maxDepth) {
        throw new ImageFormatError('ERR_JSON_TOO_DEEP', document, `JSON nested deeper than ${maxDepth} levels`, {
          path: framePath(stack),
        });
      }
      stack.push(
        c === 0x7b ? { kind: 'object', keys: new Set(), key: undefined, expectKey: true } : { kind: 'array', index: 0 },
      );
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      i++;
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top?.kind === 'array') top.index++;
      else if (top?.kind === 'object') top.expectKey = true;
      i++;
    } else if (c === 0x22 /* " */) {
      const start = i;
      let escaped = false;
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) {
          escaped = true;
          i += 2;
        } else if (d === 0x22) {
          break;
        } else {
          i++;
        }
      }
      if (i >= n) return; // unterminated string: JSON.parse reports it
      i++;
      const top = stack[stack.length - 1];
      if (top?.kind === 'object' && top.expectKey) {
        let key: string;
        try {
          key = escaped ? (JSON.parse(text.slice(start, i)) as string) : text.slice(start + 1, i - 1);
        } catch {
          return; // bad escape: JSON.parse reports it
        }
        if (top.keys.has(key)) {
          throw new ImageFormatError('ERR_JSON_DUPLICATE_KEY', document, `duplicate key ${JSON.stringify(key)}`, {
            path: framePath(stack.slice(0, -1), key),
          });
        }
        top.keys.add(key);
        top.key = key;
        top.expectKey = false;
      }
    } else {
      i++;
    }
  }
}

/**
 * Decodes and parses a JSON document under the caps (size, UTF-8, depth, duplicate keys).
 * `document` names the kind of document in error messages.
 */
export function parseJsonDocument(bytes: Uint8Array, document: string, limits: DocumentLimits = {}): unknown {
  const maxBytes = limits.maxBytes ?? DEFAULT_MAX_DOCUMENT_BYTES;
  const maxDepth = limits.maxDepth ?? DEFAULT_MAX_JSON_DEPTH;
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`${document}: expected a Uint8Array, got ${typeof bytes}`);
  }
  if (bytes.length > maxBytes) {
    throw new ImageFormatError(
      'ERR_DOCUMENT_TOO_LARGE',
      document,
      `${bytes.length} bytes is more than the limit of ${maxBytes} bytes`,
    );
  }
  let text: string;
  try {
    // A byte order mark is kept (ignoreBOM) so that JSON.parse rejects it, as Go's decoder does.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (e) {
    throw new ImageFormatError('ERR_JSON_INVALID_UTF8', document, 'not valid UTF-8', { cause: e });
  }
  scan(text, document, maxDepth);
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new ImageFormatError('ERR_JSON_SYNTAX', document, `not valid JSON: ${(e as Error).message}`, { cause: e });
  }
}
