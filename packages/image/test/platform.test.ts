// Platforms as containerd's `platforms` package parses, normalizes and matches them.
import { sha256 } from '@stevedore/core';
import {
  type Descriptor,
  DOCKER_MANIFEST,
  formatPlatform,
  hostPlatform,
  type ImageIndex,
  OCI_INDEX,
  OCI_MANIFEST,
  type Platform,
  PlatformError,
  parsePlatform,
  platformMatcher,
  platformsEqual,
  selectPlatform,
  selectPlatforms,
} from '@stevedore/image';
import { describe, expect, it } from 'vitest';

const ARM64_HOST: Platform = { os: 'linux', architecture: 'arm64' };

describe('parsePlatform', () => {
  it.each<[string, Platform]>([
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }],
    ['linux/x86_64', { os: 'linux', architecture: 'amd64' }],
    ['linux/x86-64', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v1', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v3', { os: 'linux', architecture: 'amd64', variant: 'v3' }],
    ['linux/arm64', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64' }],
    ['linux/aarch64', { os: 'linux', architecture: 'arm64' }],
    ['linux/aarch64/8', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/v9.0', { os: 'linux', architecture: 'arm64', variant: 'v9' }],
    ['linux/arm', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/arm/7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/arm/v6', { os: 'linux', architecture: 'arm', variant: 'v6' }],
    ['linux/arm/5', { os: 'linux', architecture: 'arm', variant: 'v5' }],
    ['linux/armhf', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/armel', { os: 'linux', architecture: 'arm', variant: 'v6' }],
    ['linux/i386', { os: 'linux', architecture: '386' }],
    ['linux/386', { os: 'linux', architecture: '386' }],
    ['linux/ppc64le', { os: 'linux', architecture: 'ppc64le' }],
    ['linux/s390x', { os: 'linux', architecture: 's390x' }],
    ['Linux/AMD64', { os: 'linux', architecture: 'amd64' }],
    ['macos/arm64', { os: 'darwin', architecture: 'arm64' }],
    ['windows/amd64', { os: 'windows', architecture: 'amd64' }],
    ['windows(10.0.17763)/amd64', { os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763' }],
    // one component: an OS takes the host's architecture, an architecture the OS linux
    ['linux', { os: 'linux', architecture: 'arm64' }],
    ['windows', { os: 'windows', architecture: 'arm64' }],
    ['arm64', { os: 'linux', architecture: 'arm64' }],
    ['aarch64', { os: 'linux', architecture: 'arm64' }],
    ['amd64', { os: 'linux', architecture: 'amd64' }],
    ['x86_64', { os: 'linux', architecture: 'amd64' }],
    ['arm', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['armel', { os: 'linux', architecture: 'arm', variant: 'v6' }],
  ])('%s', (specifier, expected) => {
    expect(parsePlatform(specifier, ARM64_HOST)).toEqual(expected);
  });

  it.each([
    ['', /is not an OS/],
    ['linux/*', /wildcards are not supported/],
    ['linux/amd64/v2/extra', /expected os\[\/arch\[\/variant\]\]/],
    ['linux/arm 64', /"arm 64" is not a valid component/],
    ['linux//v7', /"" is not a valid component/],
    ['l!nux/amd64', /"l!nux" is not an OS/],
    ['beos', /unknown operating system or architecture/],
  ])('rejects %j', (specifier, message) => {
    expect(() => parsePlatform(specifier)).toThrow(PlatformError);
    expect(() => parsePlatform(specifier)).toThrow(message);
    try {
      parsePlatform(specifier);
    } catch (e) {
      expect((e as PlatformError).code).toBe('ERR_PLATFORM_INVALID');
    }
  });

  it('defaults to the host architecture on linux', () => {
    const host = hostPlatform();
    expect(host.os).toBe('linux');
    expect(host.architecture).toBe(
      process.arch === 'x64' ? 'amd64' : process.arch === 'arm64' ? 'arm64' : host.architecture,
    );
    expect(parsePlatform('linux').architecture).toBe(host.architecture);
  });

  it('formats and compares', () => {
    expect(formatPlatform({ os: 'linux', architecture: 'arm', variant: 'v7' })).toBe('linux/arm/v7');
    expect(formatPlatform(parsePlatform('linux/arm64/v8'))).toBe('linux/arm64');
    expect(
      platformsEqual({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'aarch64', variant: 'v8' }),
    ).toBe(true);
    expect(
      platformsEqual({ os: 'linux', architecture: 'arm' }, { os: 'linux', architecture: 'arm', variant: 'v7' }),
    ).toBe(true);
    expect(
      platformsEqual({ os: 'linux', architecture: 'arm', variant: 'v6' }, { os: 'linux', architecture: 'arm' }),
    ).toBe(false);
    expect(platformsEqual({ os: 'linux', architecture: 'amd64' }, { os: 'windows', architecture: 'amd64' })).toBe(
      false,
    );
  });
});

describe('platformMatcher', () => {
  const rank = (wanted: string, p: Platform, strict = false) => platformMatcher(wanted, { strict }).rank(p);

  it('ranks what a platform runs, best first (containerd Only)', () => {
    expect(rank('linux/arm64', { os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe(0);
    expect(rank('linux/arm64', { os: 'linux', architecture: 'arm', variant: 'v8' })).toBe(1);
    expect(rank('linux/arm64', { os: 'linux', architecture: 'arm', variant: 'v7' })).toBeGreaterThan(1);
    expect(rank('linux/arm64', { os: 'linux', architecture: 'arm', variant: 'v5' })).toBeGreaterThan(
      rank('linux/arm64', { os: 'linux', architecture: 'arm', variant: 'v6' }),
    );
    expect(rank('linux/arm/v7', { os: 'linux', architecture: 'arm', variant: 'v6' })).toBe(1);
    expect(rank('linux/arm/v6', { os: 'linux', architecture: 'arm', variant: 'v7' })).toBe(-1);
    expect(rank('linux/amd64', { os: 'linux', architecture: '386' })).toBe(1);
    expect(rank('linux/amd64/v3', { os: 'linux', architecture: 'amd64', variant: 'v2' })).toBe(1);
    expect(rank('linux/amd64/v3', { os: 'linux', architecture: 'amd64' })).toBe(2);
    expect(rank('linux/amd64/v3', { os: 'linux', architecture: '386' })).toBe(3);
    expect(rank('linux/amd64', { os: 'linux', architecture: 'amd64', variant: 'v2' })).toBe(-1);
    expect(rank('linux/amd64', { os: 'windows', architecture: 'amd64' })).toBe(-1);
    expect(rank('linux/386', { os: 'linux', architecture: 'amd64' })).toBe(-1);
  });

  it('strict matching takes the exact platform only (containerd OnlyStrict)', () => {
    expect(rank('linux/arm64', { os: 'linux', architecture: 'arm64', variant: 'v8' }, true)).toBe(0);
    expect(rank('linux/arm64', { os: 'linux', architecture: 'arm', variant: 'v7' }, true)).toBe(-1);
    expect(rank('linux/amd64', { os: 'linux', architecture: '386' }, true)).toBe(-1);
  });

  it('compares the OS version only when one is wanted', () => {
    const win: Platform = { os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.5329' };
    expect(platformMatcher('windows/amd64').matches(win)).toBe(true);
    expect(platformMatcher('windows(10.0.17763.5329)/amd64').matches(win)).toBe(true);
    expect(platformMatcher('windows(10.0.20348.1)/amd64').matches(win)).toBe(false);
  });
});

describe('selectPlatform', () => {
  let n = 0;
  const entry = (platform: Platform | undefined, mediaType = OCI_MANIFEST): Descriptor => {
    const d: Descriptor = { mediaType, digest: sha256(new TextEncoder().encode(`m${n++}`)), size: 100 };
    if (platform) d.platform = platform;
    return d;
  };
  const amd64 = entry({ os: 'linux', architecture: 'amd64' });
  const arm64 = entry({ os: 'linux', architecture: 'arm64', variant: 'v8' });
  const armv7 = entry({ os: 'linux', architecture: 'arm', variant: 'v7' });
  const armv6 = entry({ os: 'linux', architecture: 'arm', variant: 'v6' });
  const i386 = entry({ os: 'linux', architecture: '386' });
  const ppc = entry({ os: 'linux', architecture: 'ppc64le' });
  const windows = entry({ os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.1' }, DOCKER_MANIFEST);
  const attestation = entry({ os: 'unknown', architecture: 'unknown' });
  const noPlatform = entry(undefined);
  const full = [attestation, noPlatform, i386, armv6, armv7, amd64, arm64, ppc, windows];
  const index: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: full };

  it('picks the exact platform when there is one', () => {
    expect(selectPlatform(index, 'linux/arm64')).toBe(arm64);
    expect(selectPlatform(index, 'linux/arm64/v8')).toBe(arm64);
    expect(selectPlatform(index, 'linux/aarch64')).toBe(arm64);
    expect(selectPlatform(index, 'linux/amd64')).toBe(amd64);
    expect(selectPlatform(index, 'linux/x86_64')).toBe(amd64);
    expect(selectPlatform(index, 'linux/arm')).toBe(armv7);
    expect(selectPlatform(index, 'linux/arm/v6')).toBe(armv6);
    expect(selectPlatform(index, 'windows/amd64')).toBe(windows);
    expect(selectPlatform(index, { os: 'linux', architecture: 'ppc64le' })).toBe(ppc);
  });

  it('falls back to what the platform can run, best first', () => {
    expect(selectPlatform([armv6, armv7], 'linux/arm64')).toBe(armv7);
    expect(selectPlatforms([armv6, i386, armv7], 'linux/arm64')).toEqual([armv7, armv6]);
    expect(selectPlatform([i386, ppc], 'linux/amd64')).toBe(i386);
    expect(selectPlatform([i386, ppc], 'linux/amd64', { strict: true })).toBeUndefined();
    expect(selectPlatform([armv7], 'linux/arm/v6')).toBeUndefined();
    expect(selectPlatform([ppc], 'linux/s390x')).toBeUndefined();
  });

  it('skips entries without a platform, attestations and non-manifest media types', () => {
    expect(selectPlatforms([noPlatform, attestation], 'linux/amd64')).toEqual([]);
    const blob = entry({ os: 'linux', architecture: 'amd64' }, 'application/vnd.example.blob');
    expect(selectPlatform([blob], 'linux/amd64')).toBeUndefined();
    const nested = entry({ os: 'linux', architecture: 'amd64' }, OCI_INDEX);
    expect(selectPlatform([nested], 'linux/amd64')).toBe(nested);
  });

  it('keeps index order among equal matches', () => {
    const first = entry({ os: 'linux', architecture: 'amd64' });
    const second = entry({ os: 'linux', architecture: 'x86_64' });
    expect(selectPlatforms([first, second], 'linux/amd64')).toEqual([first, second]);
  });

  it('defaults to the host platform', () => {
    const host = hostPlatform();
    const expected = full.find((d) => d.platform && platformsEqual(d.platform, host));
    expect(selectPlatform(index)).toBe(expected);
  });
});
