// One suite, run against every backend: native addon and WebAssembly must agree with each
// other and with Node's crypto on every vector.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  appendStream,
  appendToFile,
  Digest,
  type DigestAlgorithm,
  Hasher,
  HashFeed,
  hash,
  hashAsync,
  hashFile,
  openForDirectWrite,
  StevedoreError,
  sha256,
  useBackend,
} from '@stevedore/core';
import { beforeAll, describe, expect, it } from 'vitest';

const ALGS: DigestAlgorithm[] = ['sha256', 'sha512'];
const node = (alg: DigestAlgorithm, data: Uint8Array) => `${alg}:${createHash(alg).update(data).digest('hex')}`;

// Deterministic pseudo-random bytes so failures reproduce.
function bytes(n: number, seed = n): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < n; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    out[i] = x & 0xff;
  }
  return out;
}

const SIZES = [
  0,
  1,
  3,
  55,
  56,
  63,
  64,
  65,
  111,
  112,
  127,
  128,
  129,
  1000,
  4096,
  1 << 20,
  (1 << 20) + 17,
  3 * (1 << 20) + 5,
];

describe.each(['native', 'wasm'] as const)('digests on the %s backend', (kind) => {
  beforeAll(() => {
    expect(useBackend(kind).kind).toBe(kind);
  });

  it.each(ALGS)('%s one-shot matches node:crypto on boundary sizes', (alg) => {
    for (const n of SIZES) {
      const data = bytes(n);
      expect(hash(alg, data).toString(), `size ${n}`).toBe(node(alg, data));
    }
  });

  it.each(ALGS)('%s streaming matches at every chunk boundary', (alg) => {
    const data = bytes(300, 7);
    const want = node(alg, data);
    for (let split = 0; split <= data.length; split += 1) {
      const h = new Hasher(alg);
      h.update(data.subarray(0, split)).update(data.subarray(split));
      expect(h.digest().toString(), `split ${split}`).toBe(want);
    }
  });

  it('streams random chunk sizes and random inputs', () => {
    for (let round = 0; round < 20; round++) {
      const data = randomBytes(Math.floor(Math.random() * 300_000));
      const h = new Hasher('sha256');
      let off = 0;
      while (off < data.length) {
        const n = Math.floor(Math.random() * 70_000);
        h.update(data.subarray(off, off + n));
        off += n;
      }
      expect(h.size).toBe(data.length);
      expect(h.digest().toString()).toBe(node('sha256', data));
    }
  });

  it('clones a hasher mid-stream', () => {
    const a = new Hasher('sha256').update(bytes(100));
    const b = a.clone();
    a.update(bytes(5, 1));
    b.update(bytes(5, 2));
    const joined = (x: Uint8Array, y: Uint8Array) => new Uint8Array([...x, ...y]);
    expect(a.digest().toString()).toBe(node('sha256', joined(bytes(100), bytes(5, 1))));
    expect(b.digest().toString()).toBe(node('sha256', joined(bytes(100), bytes(5, 2))));
  });

  it('refuses a finished hasher with a code', () => {
    const h = new Hasher('sha256');
    h.digest();
    expect(() => h.update(bytes(1))).toThrow(expect.objectContaining({ code: 'ERR_HASHER_FINISHED' }));
  });

  it('hashes off the JS thread with the same answer', async () => {
    const data = bytes(5 << 20);
    expect((await hashAsync('sha256', data)).toString()).toBe(node('sha256', data));
  });

  it('hashes a file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stevedore-core-'));
    try {
      const data = bytes(2_500_000);
      writeFileSync(join(dir, 'f'), data);
      const r = await hashFile(join(dir, 'f'));
      expect(r).toEqual({ digest: expect.any(Digest), size: data.length });
      expect(r.digest.toString()).toBe(node('sha256', data));
      await expect(hashFile(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ERR_IO' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parses digests and names what is wrong', () => {
    const empty = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
    const d = Digest.parse(empty);
    expect([d.algorithm, d.hex, d.toString()]).toEqual(['sha256', empty.slice(7), empty]);
    expect(sha256(new Uint8Array()).equals(d)).toBe(true);
    const bad: [string, RegExp][] = [
      ['sha256', /missing ':'/],
      ['md5:d41d8cd98f00b204e9800998ecf8427e', /unsupported algorithm "md5"/],
      ['sha256:abcd', /needs 64 hex characters, got 4/],
      [empty.toUpperCase().replace('SHA256', 'sha256'), /offset 7 is not lowercase hex/],
      ['sha512:' + 'a'.repeat(64), /needs 128 hex characters/],
    ];
    for (const [input, message] of bad) {
      let caught: unknown;
      try {
        Digest.parse(input);
      } catch (e) {
        caught = e;
      }
      expect(caught, input).toBeInstanceOf(StevedoreError);
      expect((caught as StevedoreError).code).toBe('ERR_INVALID_DIGEST');
      expect((caught as StevedoreError).message).toMatch(message);
    }
  });

  it('verify names both digests', () => {
    const a = sha256(bytes(1));
    const b = sha256(bytes(2));
    expect(() => a.verify(b, 'layer')).toThrow(/layer: digest mismatch \(expected sha256:[0-9a-f]{64}, got sha256:/);
  });

  it('rejects unknown algorithms with a code', () => {
    expect(() => hash('md5' as DigestAlgorithm, bytes(1))).toThrow(
      expect.objectContaining({ code: 'ERR_UNSUPPORTED_ALGORITHM' }),
    );
  });
});

describe('backend selection (STEVEDORE_BACKEND)', () => {
  const kindWith = (value: string | undefined) => {
    const env = { ...process.env };
    delete env.STEVEDORE_BACKEND;
    if (value !== undefined) env.STEVEDORE_BACKEND = value;
    const r = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const m = await import('@stevedore/core'); try { console.log(m.backendKind()); } catch (e) { console.log(e.code); }",
      ],
      { env, encoding: 'utf8' },
    );
    return r.stdout.trim();
  };
  it('prefers the native addon, honours wasm and rejects nonsense', () => {
    expect(kindWith(undefined)).toBe('native');
    expect(kindWith('wasm')).toBe('wasm');
    expect(kindWith('native')).toBe('native');
    expect(kindWith('fast')).toBe('ERR_INVALID_ARG_VALUE');
  });
});

describe('off-thread hashing and writing (HashFeed, appendToFile)', () => {
  const data = randomBytes(5_000_003);
  const chunks = () => {
    const out: Uint8Array[] = [];
    for (let i = 0, n = 1; i < data.length; i += n, n = (n * 7 + 13) % 70_000) out.push(data.subarray(i, i + n));
    return out;
  };
  const want = `sha256:${createHash('sha256').update(data).digest('hex')}`;

  it('HashFeed gives the digest of everything pushed, in order, with small batches', async () => {
    const feed = new HashFeed(new Hasher('sha256'), 100_000);
    for (const c of chunks()) {
      const wait = feed.push(c);
      if (wait) await wait;
    }
    await feed.flush();
    expect(feed.hasher.size).toBe(data.length);
    expect(feed.hasher.digest().toString()).toBe(want);
  });

  it('appendStream with direct I/O (O_DIRECT where the filesystem has it) writes the same bytes, odd sizes and all', async () => {
    const dirs = [mkdtempSync(join(tmpdir(), 'stevedore-direct-'))];
    if (existsSync('/dev/shm')) dirs.push(mkdtempSync('/dev/shm/stevedore-direct-')); // tmpfs: no O_DIRECT
    try {
      const seen: boolean[] = [];
      for (const dir of dirs) {
        for (const size of [0, 1, 4095, 4096, 1 << 20, data.length]) {
          const file = join(dir, `blob-${size}`);
          const { fh, direct } = await openForDirectWrite(file);
          seen.push(direct);
          const h = new Hasher('sha256');
          const part = data.subarray(0, size);
          async function* src() {
            // odd chunk sizes, some smaller than a block, so batches split inside chunks
            for (let i = 0, n = 3; i < part.length; i += n, n = (n * 5 + 7) % 150_000) yield part.subarray(i, i + n);
          }
          const written = await appendStream(fh.fd, src(), { hasher: h, direct });
          await fh.sync();
          await fh.close();
          expect(written).toBe(size);
          expect(readFileSync(file).equals(part)).toBe(true);
          expect(h.digest().toString()).toBe(`sha256:${createHash('sha256').update(part).digest('hex')}`);
        }
      }
      if (process.platform === 'linux') expect(seen).toContain(true);
    } finally {
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    }
  });

  it('appendToFile writes the chunks at the file offset and feeds the hasher', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stevedore-append-'));
    try {
      const file = join(dir, 'out');
      const fh = await open(file, 'wx');
      const h = new Hasher('sha256');
      const all = chunks();
      let written = 0;
      for (let i = 0; i < all.length; i += 40) written += await appendToFile(fh.fd, all.slice(i, i + 40), h);
      await fh.close();
      expect(written).toBe(data.length);
      expect(readFileSync(file).equals(data)).toBe(true);
      expect(h.size).toBe(data.length);
      expect(h.digest().toString()).toBe(want);
      // One call with more chunks than a writev takes (IOV_MAX 1024), empty ones among them.
      const small = randomBytes(30_000);
      const pieces: Uint8Array[] = [];
      for (let i = 0; i < small.length; i += 10) pieces.push(small.subarray(i, i + 10), new Uint8Array(0));
      const fh3 = await open(join(dir, 'three'), 'wx');
      expect(await appendToFile(fh3.fd, pieces)).toBe(small.length);
      await fh3.close();
      expect(readFileSync(join(dir, 'three')).equals(small)).toBe(true);
      // A finished hasher is refused, with nothing written.
      const fh2 = await open(join(dir, 'two'), 'wx');
      await expect(appendToFile(fh2.fd, [data.subarray(0, 10)], h)).rejects.toMatchObject({
        code: 'ERR_HASHER_FINISHED',
      });
      await fh2.close();
      expect(readFileSync(join(dir, 'two')).length).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
