// The strict JSON reader under every document: size cap, UTF-8, depth, duplicate keys.
import {
  DEFAULT_MAX_DOCUMENT_BYTES,
  DEFAULT_MAX_JSON_DEPTH,
  ImageFormatError,
  type ImageFormatErrorCode,
  parseJsonDocument,
} from '@stevedore/image';
import { describe, expect, it } from 'vitest';

const enc = (s: string) => new TextEncoder().encode(s);

function failure(bytes: Uint8Array, limits?: { maxBytes?: number; maxDepth?: number }): ImageFormatError {
  try {
    parseJsonDocument(bytes, 'test document', limits);
  } catch (e) {
    if (e instanceof ImageFormatError) return e;
    throw e;
  }
  throw new Error('expected an ImageFormatError');
}

describe('parseJsonDocument', () => {
  it('parses ordinary documents', () => {
    expect(parseJsonDocument(enc('{"a":[1,{"b":"x"}],"c":null}'), 'doc')).toEqual({ a: [1, { b: 'x' }], c: null });
    expect(parseJsonDocument(enc(' [ ] '), 'doc')).toEqual([]);
    expect(parseJsonDocument(enc('"text with { and [ and \\" inside"'), 'doc')).toBe('text with { and [ and " inside');
  });

  it('caps the size before parsing (4 MiB by default)', () => {
    expect(DEFAULT_MAX_DOCUMENT_BYTES).toBe(4 * 1024 * 1024);
    const exact = new Uint8Array(DEFAULT_MAX_DOCUMENT_BYTES).fill(0x20);
    exact[0] = 0x30; // "0" followed by spaces: valid JSON of exactly the limit
    expect(parseJsonDocument(exact, 'doc')).toBe(0);
    const over = new Uint8Array(DEFAULT_MAX_DOCUMENT_BYTES + 1).fill(0x20);
    const e = failure(over);
    expect(e.code).toBe('ERR_DOCUMENT_TOO_LARGE');
    expect(e.message).toBe('test document: 4194305 bytes is more than the limit of 4194304 bytes');
    expect(failure(enc('{"a":1}'), { maxBytes: 4 }).code).toBe('ERR_DOCUMENT_TOO_LARGE');
  });

  it.each<[string, Uint8Array, ImageFormatErrorCode, RegExp]>([
    [
      'invalid UTF-8',
      new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]),
      'ERR_JSON_INVALID_UTF8',
      /not valid UTF-8/,
    ],
    ['a byte order mark', new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), 'ERR_JSON_SYNTAX', /not valid JSON/],
    ['truncated JSON', enc('{"a":'), 'ERR_JSON_SYNTAX', /not valid JSON/],
    ['an unterminated string', enc('{"a'), 'ERR_JSON_SYNTAX', /not valid JSON/],
    ['trailing garbage', enc('{} x'), 'ERR_JSON_SYNTAX', /not valid JSON/],
    ['a bad escape in a key', enc('{"\\x":1}'), 'ERR_JSON_SYNTAX', /not valid JSON/],
    ['empty input', enc(''), 'ERR_JSON_SYNTAX', /not valid JSON/],
  ])('rejects %s', (_, bytes, code, message) => {
    const e = failure(bytes);
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
  });

  it('caps the nesting depth (64 by default) and says where', () => {
    expect(DEFAULT_MAX_JSON_DEPTH).toBe(64);
    const nest = (n: number) => enc('['.repeat(n) + ']'.repeat(n));
    expect(parseJsonDocument(nest(64), 'doc')).toBeDefined();
    const e = failure(nest(65));
    expect(e.code).toBe('ERR_JSON_TOO_DEEP');
    expect(e.message).toMatch(/JSON nested deeper than 64 levels/);
    expect(e.path).toBe('[0]'.repeat(64));
    const objects = failure(enc('{"a":{"b":{"c":[{}]}}}'), { maxDepth: 4 });
    expect(objects.code).toBe('ERR_JSON_TOO_DEEP');
    expect(objects.path).toBe('a.b.c[0]');
    // a million levels fail fast, without a stack overflow
    const deep = failure(nest(1_000_000));
    expect(deep.code).toBe('ERR_JSON_TOO_DEEP');
  });

  it.each([
    ['top level', '{"a":1,"a":2}', 'a'],
    ['after unescaping', '{"a":1,"\\u0061":2}', 'a'],
    ['nested object', '{"config":{"digest":"x","size":1,"digest":"y"}}', 'config.digest'],
    ['object in an array', '{"layers":[{"a":1},{"a":1,"a":2}]}', 'layers[1].a'],
    ['odd key names', '{"annotations":{"org.x y":"1","org.x y":"2"}}', 'annotations["org.x y"]'],
  ])('rejects duplicate keys: %s', (_, text, path) => {
    const e = failure(enc(text));
    expect(e.code).toBe('ERR_JSON_DUPLICATE_KEY');
    expect(e.path).toBe(path);
    expect(e.message).toMatch(/duplicate key/);
  });

  it('allows equal keys in different objects and key-like values', () => {
    expect(parseJsonDocument(enc('{"a":{"a":1},"b":[{"a":1},{"a":2}],"c":"a","d":["a","a"]}'), 'doc')).toEqual({
      a: { a: 1 },
      b: [{ a: 1 }, { a: 2 }],
      c: 'a',
      d: ['a', 'a'],
    });
    // keys that differ only by case are different JSON keys
    expect(parseJsonDocument(enc('{"a":1,"A":2}'), 'doc')).toEqual({ a: 1, A: 2 });
  });

  it('keeps "__proto__" as data', () => {
    const v = parseJsonDocument(enc('{"__proto__":{"polluted":true}}'), 'doc') as Record<string, unknown>;
    expect(Object.hasOwn(v, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('rejects what is not bytes', () => {
    expect(() => parseJsonDocument('{}' as unknown as Uint8Array, 'doc')).toThrow(TypeError);
  });
});
