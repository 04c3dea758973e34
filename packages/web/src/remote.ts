/**
 * An image from a registry as the page's `ImageInfo`: the manifest (or an index and its
 * platforms), the config and layer sources that stream each blob from the registry. Every
 * document's digest is computed here and shown as a check against what was asked for or
 * claimed; layers are verified by the same scans as archive members.
 */
import { hash } from '@stevedore/core/browser';
import type { Member } from './archive.js';
import { type Check, check, type ImageInfo, type LayerRef, layersOf } from './image.js';
import {
  type Descriptor,
  formatPlatform,
  type ImageManifest,
  isImageIndex,
  isImageManifest,
  parseConfig,
  parseManifest,
  selectPlatform,
} from './image-model.js';
import {
  type Credentials,
  MANIFEST_ACCEPT,
  RegistryAccessError,
  RegistrySession,
  type RegistryTarget,
} from './registry.js';

export interface RemotePlatform {
  label: string;
  descriptor: Descriptor;
}

/** An opened reference: one image, or an index whose platforms load on demand. */
export interface OpenedRemote {
  /** `host/repository:tag` or `host/repository@digest`. */
  label: string;
  /** The index's image manifests (empty for a single manifest). */
  platforms: RemotePlatform[];
  /** The platform shown first: linux/amd64 when there is one, else the first. */
  defaultPlatform: number;
  /** The top document's checks (its digest). */
  checks: Check[];
  /** Fetches platform `i` (ignored without an index): manifest and config, checked. */
  load(i: number): Promise<{ image: ImageInfo; checks: Check[] }>;
}

type Algorithm = 'sha256' | 'sha512';
const digestOf = (bytes: Uint8Array, like?: string): string =>
  hash((like?.startsWith('sha512:') ? 'sha512' : 'sha256') as Algorithm, bytes).toString();

const transportType = (t: string) => (MANIFEST_ACCEPT.includes(t) && t ? t : undefined);

export function targetLabel(t: RegistryTarget): string {
  return `${new URL(t.base).host}/${t.repository}${t.tag ? `:${t.tag}` : ''}${t.digest ? `@${t.digest}` : ''}`;
}

export async function openRemote(target: RegistryTarget, credentials?: Credentials): Promise<OpenedRemote> {
  const session = await RegistrySession.connect(target.base, target.repository, credentials);
  const repo = target.repository;
  const label = targetLabel(target);
  const top = await session.manifest(repo, target.digest ?? (target.tag as string));
  const topDigest = digestOf(top.bytes, target.digest ?? top.claimedDigest);
  const checks: Check[] = [];
  if (target.digest) checks.push(check('manifest digest', label, target.digest, topDigest));
  else if (top.claimedDigest)
    checks.push(check('manifest digest (Docker-Content-Digest)', label, top.claimedDigest, topDigest));
  const manifest = parseManifest(top.bytes, transportType(top.mediaType));
  if (isImageManifest(manifest)) {
    return {
      label,
      platforms: [],
      defaultPlatform: 0,
      checks,
      load: async () => ({
        image: await imageFrom(session, target, manifest, topDigest),
        checks: [],
      }),
    };
  }
  if (!isImageIndex(manifest)) throw new RegistryAccessError(`${label} is neither an image manifest nor an index`);
  // Image manifests only: attestations (unknown/unknown) and nested indexes are not images.
  const images = manifest.manifests.filter(
    (d) => d.mediaType.endsWith('manifest.v1+json') || d.mediaType.endsWith('manifest.v2+json'),
  );
  const platforms = images
    .filter((d) => d.platform?.os !== 'unknown')
    .map((d) => ({ label: d.platform ? formatPlatform(d.platform) : d.digest.toString().slice(0, 19), descriptor: d }));
  if (!platforms.length) throw new RegistryAccessError(`the index ${label} lists no image manifest`);
  const amd64 = selectPlatform(
    platforms.map((p) => p.descriptor),
    'linux/amd64',
    { strict: true },
  );
  return {
    label,
    platforms,
    defaultPlatform: Math.max(
      0,
      platforms.findIndex((p) => p.descriptor === amd64),
    ),
    checks,
    async load(i) {
      const d = (platforms[i] ?? platforms[0]) as RemotePlatform;
      const want = d.descriptor.digest.toString();
      const child = await session.manifest(repo, want);
      const childDigest = digestOf(child.bytes, want);
      const childChecks = [check(`manifest digest (${d.label})`, `${repo}@${want}`, want, childDigest)];
      const parsed = parseManifest(child.bytes, transportType(child.mediaType) ?? d.descriptor.mediaType);
      if (!isImageManifest(parsed)) throw new RegistryAccessError(`${repo}@${want} is not an image manifest`);
      return { image: await imageFrom(session, target, parsed, childDigest), checks: childChecks };
    },
  };
}

async function imageFrom(
  session: RegistrySession,
  target: RegistryTarget,
  manifest: ImageManifest,
  manifestDigest: string,
): Promise<ImageInfo> {
  const repo = target.repository;
  const configDigest = manifest.config.digest.toString();
  const bytes = await session.smallBlob(repo, configDigest);
  // The config's digest is computed here; imageChecks compares it with the manifest's.
  const configMember: Member = {
    name: `${repo}@${configDigest}`,
    type: 'file',
    size: bytes.length,
    dataOffset: -1,
    linkName: '',
    digest: digestOf(bytes, configDigest),
    json: bytes,
  };
  const config = parseConfig(bytes, manifest.config.mediaType);
  const history = layersOf(config);
  const layers: LayerRef[] = manifest.layers.map((d, i) => {
    const digest = d.digest.toString();
    return {
      index: i,
      source: { name: `${repo}@${digest}`, size: d.size, open: () => session.blob(repo, digest) },
      digest,
      mediaType: d.mediaType,
      size: d.size,
      diffId: config.rootfs.diff_ids[i]?.toString(),
      ...history[i],
    };
  });
  return {
    format: 'registry',
    tags: [targetLabel(target)],
    platform: formatPlatform({ os: config.os, architecture: config.architecture, variant: config.variant }),
    manifestDigest,
    manifest,
    configMember,
    configDigest: configMember.digest as string,
    config,
    layers,
  };
}
