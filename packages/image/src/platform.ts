/**
 * Platforms (`os/architecture[/variant]`): parsing, normalization and best-match selection from
 * an index, following containerd's `platforms` package:
 *
 * - architecture aliases: `x86_64`/`x86-64` → `amd64`, `aarch64` → `arm64`, `i386` → `386`,
 *   `armhf` → `arm/v7`, `armel` → `arm/v6`;
 * - variants: `arm64/v8` is `arm64` (v8 is the default), `arm` means `arm/v7`, `amd64/v1` is
 *   `amd64`; `7` → `v7`;
 * - `macos` → `darwin`; names are lowercased;
 * - a lone component is an OS when it is a known OS (architecture from the host), else an
 *   architecture (OS `linux`: images are Linux images, whatever the host).
 *
 * Matching ranks the candidates a platform can run, best first: `arm64` runs arm64, then
 * `arm/v8`…`arm/v5`; `amd64/v3` runs v3, v2, v1, then `386`; `arm/v7` runs v7, v6, v5.
 */
import { StevedoreError } from '@stevedore/core';
import { isIndex, isManifest } from './media-types.js';
import type { Descriptor, ImageIndex } from './schema.js';

/** A platform as OCI descriptors and configs write it (the same field names). */
export interface Platform {
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
  features?: string[];
}

/** An unparsable platform specifier. */
export class PlatformError extends StevedoreError {
  readonly input: string;
  constructor(message: string, input: string) {
    super('ERR_PLATFORM_INVALID', message);
    this.name = 'PlatformError';
    this.input = input;
  }
}

const KNOWN_OS = new Set([
  'aix',
  'android',
  'darwin',
  'dragonfly',
  'freebsd',
  'hurd',
  'illumos',
  'ios',
  'js',
  'linux',
  'nacl',
  'netbsd',
  'openbsd',
  'plan9',
  'solaris',
  'wasip1',
  'windows',
  'zos',
]);

const KNOWN_ARCH = new Set([
  '386',
  'amd64',
  'amd64p32',
  'arm',
  'armbe',
  'arm64',
  'arm64be',
  'loong64',
  'mips',
  'mipsle',
  'mips64',
  'mips64le',
  'mips64p32',
  'mips64p32le',
  'ppc',
  'ppc64',
  'ppc64le',
  'riscv',
  'riscv64',
  's390',
  's390x',
  'sparc',
  'sparc64',
  'wasm',
]);

/** containerd's `normalizeOS`. */
export function normalizeOS(os: string): string {
  const lower = os.toLowerCase();
  return lower === 'macos' ? 'darwin' : lower;
}

/** containerd's `normalizeArch`: canonical architecture and variant (`''` when none). */
export function normalizeArch(architecture: string, variant = ''): { architecture: string; variant: string } {
  let arch = architecture.toLowerCase();
  let v = variant.toLowerCase();
  switch (arch) {
    case 'i386':
      arch = '386';
      v = '';
      break;
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      arch = 'amd64';
      if (v === 'v1') v = '';
      break;
    case 'aarch64':
    case 'arm64':
      arch = 'arm64';
      if (v === '8' || v === 'v8' || v === 'v8.0') v = '';
      else if (v === '9' || v === '9.0' || v === 'v9.0') v = 'v9';
      break;
    case 'armhf':
      arch = 'arm';
      v = 'v7';
      break;
    case 'armel':
      arch = 'arm';
      v = 'v6';
      break;
    case 'arm':
      if (v === '' || v === '7') v = 'v7';
      else if (v === '5' || v === '6' || v === '8') v = `v${v}`;
      break;
  }
  return { architecture: arch, variant: v };
}

/** The canonical form of a platform (see the module comment); an empty variant is left out. */
export function normalizePlatform(p: Platform): Platform {
  const { architecture, variant } = normalizeArch(p.architecture, p.variant ?? '');
  const out: Platform = { architecture, os: normalizeOS(p.os) };
  if (variant) out.variant = variant;
  if (p['os.version']) out['os.version'] = p['os.version'];
  if (p['os.features']) out['os.features'] = [...p['os.features']];
  if (p.features) out.features = [...p.features];
  return out;
}

/** The platform images are chosen for by default: `linux` and the architecture of this host. */
export function hostPlatform(): Platform {
  const proc = (globalThis as { process?: { arch?: string; config?: { variables?: Record<string, unknown> } } })
    .process;
  const arch = proc?.arch;
  switch (arch) {
    case 'x64':
      return { os: 'linux', architecture: 'amd64' };
    case 'arm64':
      return { os: 'linux', architecture: 'arm64' };
    case 'arm': {
      const v = proc?.config?.variables?.arm_version;
      return normalizePlatform({ os: 'linux', architecture: 'arm', variant: typeof v === 'string' ? v : '7' });
    }
    case 'ia32':
      return { os: 'linux', architecture: '386' };
    case 'ppc64':
      return { os: 'linux', architecture: 'ppc64le' };
    case 'mipsel':
      return { os: 'linux', architecture: 'mipsle' };
    case 's390x':
    case 'riscv64':
    case 'loong64':
    case 'mips':
      return { os: 'linux', architecture: arch };
    default:
      return { os: 'linux', architecture: 'amd64' };
  }
}

const OS_AND_VERSION = /^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)\))?$/;
const COMPONENT = /^[A-Za-z0-9_.-]+$/;

/**
 * Parses `os`, `arch`, `os/arch` or `os/arch/variant` (an OS may carry a version:
 * `windows(10.0.17763)/amd64`) into a normalized platform. A lone OS takes the architecture of
 * `defaults` (the host), a lone architecture the OS `linux`. Throws `PlatformError`.
 */
export function parsePlatform(specifier: string, defaults: Platform = hostPlatform()): Platform {
  if (typeof specifier !== 'string') throw new PlatformError(`invalid platform: expected a string`, String(specifier));
  if (specifier.includes('*'))
    throw new PlatformError(`invalid platform "${specifier}": wildcards are not supported`, specifier);
  const parts = specifier.split('/');
  if (parts.length > 3) {
    throw new PlatformError(`invalid platform "${specifier}": expected os[/arch[/variant]]`, specifier);
  }
  const osMatch = OS_AND_VERSION.exec(parts[0] ?? '');
  if (!osMatch) {
    throw new PlatformError(
      `invalid platform "${specifier}": "${parts[0]}" is not an OS (letters, digits, "_" and "-", optionally "(version)")`,
      specifier,
    );
  }
  for (const part of parts.slice(1)) {
    if (!COMPONENT.test(part)) {
      throw new PlatformError(
        `invalid platform "${specifier}": "${part}" is not a valid component (letters, digits, "_", "." and "-")`,
        specifier,
      );
    }
  }
  const os = normalizeOS(osMatch[1]!);
  const osVersion = osMatch[2];
  const withVersion = (p: Platform): Platform => {
    const out = normalizePlatform(p);
    if (osVersion) out['os.version'] = osVersion;
    return out;
  };
  if (parts.length === 1) {
    if (KNOWN_OS.has(os)) {
      return withVersion({ os, architecture: defaults.architecture, variant: defaults.variant ?? '' });
    }
    const { architecture, variant } = normalizeArch(parts[0]!, '');
    if (KNOWN_ARCH.has(architecture) && !osVersion) return normalizePlatform({ os: 'linux', architecture, variant });
    throw new PlatformError(`invalid platform "${specifier}": unknown operating system or architecture`, specifier);
  }
  return withVersion({ os, architecture: parts[1]!, variant: parts[2] ?? '' });
}

/** `os/arch[/variant]` of the platform as given (normalize first for the canonical form). */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Same OS, architecture, variant (after normalization) and OS version. */
export function platformsEqual(a: Platform, b: Platform): boolean {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  return (
    x.os === y.os &&
    x.architecture === y.architecture &&
    (x.variant ?? '') === (y.variant ?? '') &&
    (x['os.version'] ?? '') === (y['os.version'] ?? '')
  );
}

/** containerd's `platformVector`: what a platform can run, best first. */
function compatible(p: Platform): Platform[] {
  const base = normalizePlatform(p);
  const out: Platform[] = [base];
  const extra = (architecture: string, variant?: string): Platform => {
    const q: Platform = { os: base.os, architecture };
    if (variant) q.variant = variant;
    if (base['os.version']) q['os.version'] = base['os.version'];
    return q;
  };
  const version = (v: string | undefined) => {
    const m = /^v?(\d+)$/.exec(v ?? '');
    return m ? Number(m[1]) : undefined;
  };
  switch (base.architecture) {
    case 'amd64': {
      const n = version(base.variant);
      if (n !== undefined) for (let i = n - 1; i >= 1; i--) out.push(extra('amd64', i === 1 ? undefined : `v${i}`));
      out.push(extra('386'));
      break;
    }
    case 'arm': {
      const n = version(base.variant);
      if (n !== undefined) for (let i = n - 1; i >= 5; i--) out.push(extra('arm', `v${i}`));
      break;
    }
    case 'arm64':
      out.push(...compatible(extra('arm', base.variant ?? 'v8')));
      break;
  }
  return out;
}

/** Ranks platforms against a wanted one. */
export interface PlatformMatcher {
  /** True when an image for `p` runs on the wanted platform. */
  matches(p: Platform): boolean;
  /** 0 for an exact match, higher for worse ones, -1 for no match. */
  rank(p: Platform): number;
}

/**
 * A matcher for `wanted`. By default a platform also runs older variants of itself (and arm64
 * runs arm, amd64 runs 386), as containerd's `Only`; `strict` accepts the exact platform only
 * (containerd's `OnlyStrict`). An OS version is compared only when `wanted` has one.
 */
export function platformMatcher(wanted: Platform | string, options: { strict?: boolean } = {}): PlatformMatcher {
  const w = typeof wanted === 'string' ? parsePlatform(wanted) : normalizePlatform(wanted);
  const order = options.strict ? [w] : compatible(w);
  const rank = (p: Platform): number => {
    const c = normalizePlatform(p);
    return order.findIndex(
      (o) =>
        o.os === c.os &&
        o.architecture === c.architecture &&
        (o.variant ?? '') === (c.variant ?? '') &&
        (!o['os.version'] || o['os.version'] === c['os.version']),
    );
  };
  return { rank, matches: (p) => rank(p) >= 0 };
}

function candidates(index: ImageIndex | readonly Descriptor[]): readonly Descriptor[] {
  return 'manifests' in index ? index.manifests : index;
}

/**
 * All manifests of an index that run on `wanted`, best match first (index order among equals).
 * Entries without a platform, and entries that are not manifests or indexes (attestations use
 * `unknown/unknown`), are skipped.
 */
export function selectPlatforms(
  index: ImageIndex | readonly Descriptor[],
  wanted: Platform | string = hostPlatform(),
  options: { strict?: boolean } = {},
): Descriptor[] {
  const matcher = platformMatcher(wanted, options);
  return candidates(index)
    .map((d, i) => ({
      d,
      i,
      r: d.platform && (isManifest(d.mediaType) || isIndex(d.mediaType)) ? matcher.rank(d.platform) : -1,
    }))
    .filter((x) => x.r >= 0)
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .map((x) => x.d);
}

/** The best manifest of an index for `wanted` (default: this host's platform), or undefined. */
export function selectPlatform(
  index: ImageIndex | readonly Descriptor[],
  wanted: Platform | string = hostPlatform(),
  options: { strict?: boolean } = {},
): Descriptor | undefined {
  return selectPlatforms(index, wanted, options)[0];
}
