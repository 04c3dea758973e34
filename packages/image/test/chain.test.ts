// Chain IDs and image IDs, checked against an independent computation with node:crypto (the
// docker test checks them against dockerd's own layer store).
import { createHash } from 'node:crypto';
import { Digest, sha256 } from '@stevedore/core';
import { chainId, chainIds, imageId } from '@stevedore/image';
import { describe, expect, it } from 'vitest';

const node = (s: string | Uint8Array) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const diff = (s: string) => sha256(new TextEncoder().encode(s));

describe('chainIds', () => {
  it('is empty for no layers', () => {
    expect(chainIds([])).toEqual([]);
    expect(chainId([])).toBeUndefined();
  });

  it('starts with the first diff ID and chains with sha256("<chain> <diff>")', () => {
    const diffs = ['base', 'second', 'third'].map(diff);
    const ids = chainIds(diffs).map(String);
    const c0 = diffs[0]!.toString();
    const c1 = node(`${c0} ${diffs[1]!.toString()}`);
    const c2 = node(`${c1} ${diffs[2]!.toString()}`);
    expect(ids).toEqual([c0, c1, c2]);
    expect(chainId(diffs)?.toString()).toBe(c2);
    expect(chainIds(diffs)[1]).toBeInstanceOf(Digest);
  });

  it('matches a known chain (two layers)', () => {
    const a = Digest.parse(`sha256:${'a'.repeat(64)}`);
    const b = Digest.parse(`sha256:${'b'.repeat(64)}`);
    expect(chainIds([a, b])[1]?.toString()).toBe(node(`sha256:${'a'.repeat(64)} sha256:${'b'.repeat(64)}`));
  });

  it('depends on order', () => {
    const [x, y] = [diff('x'), diff('y')];
    expect(chainId([x, y])?.toString()).not.toBe(chainId([y, x])?.toString());
  });
});

describe('imageId', () => {
  it('is the sha256 of the config bytes as stored', () => {
    const bytes = new TextEncoder().encode(
      '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
    );
    expect(imageId(bytes).toString()).toBe(node(bytes));
    // re-serializing would change it: the bytes are what count
    const spaced = new TextEncoder().encode(
      '{ "architecture": "amd64", "os": "linux", "rootfs": { "type": "layers", "diff_ids": [] } }',
    );
    expect(imageId(spaced).toString()).not.toBe(imageId(bytes).toString());
  });
});
