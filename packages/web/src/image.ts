/**
 * Finds the images in an indexed archive (docker-save, legacy or Docker 25+, and OCI layouts)
 * and checks every blob: digest = name, sizes = descriptors, layer digests = the manifest,
 * diff_ids = the config's rootfs.
 */
import { type ArchiveIndex, type Member, readMember } from './archive.js';
import {
  formatPlatform,
  type ImageConfig,
  type ImageManifest,
  isImageIndex,
  isImageManifest,
  type Manifest,
  parseConfig,
  parseManifest,
} from './image-model.js';

export type CheckStatus = 'ok' | 'mismatch' | 'missing' | 'unchecked' | 'pending';

/** One verification: what was expected, what was computed. */
export interface Check {
  what: string;
  member: string;
  expected: string;
  actual: string;
  status: CheckStatus;
}

/**
 * Where a layer blob's bytes come from (an archive member, a registry blob): every `open()`
 * streams the blob anew, as stored (compressed or not). `size` is the stored size as far as
 * the source knows it (an archive member's size; a registry descriptor's claim).
 */
export interface LayerSource {
  name: string;
  size: number;
  open(): Promise<ReadableStream<Uint8Array>>;
}

export interface LayerRef {
  index: number;
  source: LayerSource;
  /** From the manifest (the compressed blob's digest), when there is one. */
  digest?: string;
  mediaType?: string;
  /** Descriptor size (compressed), when there is a manifest. */
  size?: number;
  /** From the config's rootfs.diff_ids. */
  diffId?: string;
  createdBy?: string;
  created?: string;
  comment?: string;
}

export type ImageFormat = 'docker-archive' | 'oci-layout' | 'registry';

export interface ImageInfo {
  format: ImageFormat;
  tags: string[];
  platform: string;
  manifestDigest?: string;
  manifest?: ImageManifest;
  /** The config as read: `digest` computed here, `json` its bytes. */
  configMember: Member;
  configDigest: string;
  config: ImageConfig;
  layers: LayerRef[];
}

export interface OpenedArchive {
  archive: ArchiveIndex;
  format: ImageFormat;
  images: ImageInfo[];
  /** Every blob-named member checked against its name. */
  blobChecks: Check[];
  errors: string[];
}

const BLOB = /^blobs\/(sha256|sha512)\/([0-9a-f]+)$/;
const LEGACY_CONFIG = /^(?:.*\/)?([0-9a-f]{64})\.json$/;

const where = (a: ArchiveIndex) => (a.folder ? 'the folder' : 'the archive');

/** The member a blob would be at, as a check that failed: the blob is not there. */
const missingBlob = (digest: string) => {
  const [alg, hex] = digest.split(':');
  return check('blob', `blobs/${alg}/${hex}`, digest, undefined);
};

function blobMember(a: ArchiveIndex, digest: string): Member | undefined {
  const [alg, hex] = digest.split(':');
  return a.members.get(`blobs/${alg}/${hex}`);
}

/** A member of an indexed archive as a layer source (ranges of the file, or re-inflated). */
export function memberSource(a: ArchiveIndex, member: Member): LayerSource {
  return { name: member.name, size: member.size, open: async () => readMember(a, member) };
}

function json(m: Member | undefined): unknown {
  if (!m?.json) return undefined;
  return JSON.parse(new TextDecoder().decode(m.json));
}

export function check(what: string, member: string, expected: string | undefined, actual: string | undefined): Check {
  if (expected === undefined) return { what, member, expected: '', actual: actual ?? '', status: 'unchecked' };
  if (actual === undefined) return { what, member, expected, actual: '', status: 'missing' };
  return { what, member, expected, actual, status: expected === actual ? 'ok' : 'mismatch' };
}

/** Blob members against their names (sha256 is computed while streaming). */
function blobChecks(a: ArchiveIndex): Check[] {
  const out: Check[] = [];
  for (const m of a.members.values()) {
    const b = BLOB.exec(m.name);
    if (b && m.type === 'file') {
      const expected = `${b[1]}:${b[2]}`;
      // The archive pass hashes sha256 only; a folder's blobs are hashed with their own algorithm.
      out.push(
        m.digest?.startsWith(`${b[1]}:`)
          ? check('blob', m.name, expected, m.digest)
          : check('blob', m.name, undefined, m.digest),
      );
      continue;
    }
    const c = LEGACY_CONFIG.exec(m.name);
    if (c && m.type === 'file' && !m.name.startsWith('blobs/'))
      out.push(check('config', m.name, `sha256:${c[1]}`, m.digest));
  }
  return out;
}

/** History entries that made layers, in layer order. */
export function layersOf(config: ImageConfig): Pick<LayerRef, 'createdBy' | 'created' | 'comment'>[] {
  return (config.history ?? [])
    .filter((h) => !h.empty_layer)
    .map((h) => ({ createdBy: h.created_by, created: h.created, comment: h.comment }));
}

function fromManifest(
  a: ArchiveIndex,
  manifest: ImageManifest,
  manifestDigest: string | undefined,
  tags: string[],
  format: ImageInfo['format'],
  errors: string[],
  missing: Check[],
): ImageInfo | undefined {
  const configDigest = manifest.config.digest.toString();
  const configMember = blobMember(a, configDigest);
  if (!configMember?.json) {
    errors.push(`config ${configDigest} is missing from ${where(a)}`);
    if (!configMember) missing.push(missingBlob(configDigest));
    return undefined;
  }
  const config = parseConfig(configMember.json, manifest.config.mediaType);
  const history = layersOf(config);
  const layers: LayerRef[] = [];
  manifest.layers.forEach((d, i) => {
    const member = blobMember(a, d.digest.toString());
    if (!member) {
      errors.push(`layer ${i} ${d.digest.toString()} is missing from ${where(a)}`);
      missing.push(missingBlob(d.digest.toString()));
      return;
    }
    layers.push({
      index: i,
      source: memberSource(a, member),
      digest: d.digest.toString(),
      mediaType: d.mediaType,
      size: d.size,
      diffId: config.rootfs.diff_ids[i]?.toString(),
      ...history[i],
    });
  });
  return {
    format,
    tags,
    platform: formatPlatform({ os: config.os, architecture: config.architecture, variant: config.variant }),
    manifestDigest,
    manifest,
    configMember,
    configDigest,
    config,
    layers,
  };
}

function walkIndex(
  a: ArchiveIndex,
  idx: Manifest,
  out: { manifest: ImageManifest; digest: string; tags: string[] }[],
  errors: string[],
  missing: Check[],
  depth = 0,
): void {
  if (!isImageIndex(idx) || depth > 4) return;
  for (const d of idx.manifests) {
    const digest = d.digest.toString();
    const m = blobMember(a, digest);
    if (!m?.json) {
      errors.push(`manifest ${digest} is missing from ${where(a)}`);
      if (!m) missing.push(missingBlob(digest));
      continue;
    }
    const parsed = parseManifest(m.json, d.mediaType);
    const tag = d.annotations?.['io.containerd.image.name'] ?? d.annotations?.['org.opencontainers.image.ref.name'];
    if (isImageManifest(parsed)) out.push({ manifest: parsed, digest, tags: tag ? [tag] : [] });
    else walkIndex(a, parsed, out, errors, missing, depth + 1);
  }
}

interface LegacyEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

/** Reads what an indexed archive holds. */
export function openArchive(a: ArchiveIndex): OpenedArchive {
  const errors: string[] = [];
  const images: ImageInfo[] = [];
  const ociManifests: { manifest: ImageManifest; digest: string; tags: string[] }[] = [];
  const missing: Check[] = [];
  const indexMember = a.members.get('index.json');
  if (indexMember?.json) {
    try {
      walkIndex(
        a,
        parseManifest(indexMember.json, 'application/vnd.oci.image.index.v1+json'),
        ociManifests,
        errors,
        missing,
      );
    } catch (e) {
      errors.push(`index.json: ${(e as Error).message}`);
    }
  }
  const legacy = json(a.members.get('manifest.json')) as LegacyEntry[] | undefined;
  let format: OpenedArchive['format'] = 'oci-layout';
  if (Array.isArray(legacy)) {
    format = 'docker-archive';
    for (const entry of legacy) {
      const configMember = a.members.get(entry.Config);
      if (!configMember?.json) {
        errors.push(`config ${entry.Config} is missing from ${where(a)}`);
        continue;
      }
      const config = parseConfig(configMember.json);
      const configDigest = configMember.digest ?? '';
      // Docker 25+: an OCI manifest for this config sits among the blobs.
      const oci = ociManifests.find((m) => m.manifest.config.digest.toString() === configDigest);
      const history = layersOf(config);
      const layers: LayerRef[] = [];
      entry.Layers.forEach((name, i) => {
        const member = a.members.get(name);
        const desc = oci?.manifest.layers[i];
        if (!member) {
          errors.push(`layer ${i} ${name} is missing from ${where(a)}`);
          missing.push(check(`layer ${i} file`, name, desc?.digest.toString() ?? 'present', undefined));
          return;
        }
        layers.push({
          index: i,
          source: memberSource(a, member),
          digest: desc?.digest.toString(),
          mediaType: desc?.mediaType,
          size: desc?.size,
          diffId: config.rootfs.diff_ids[i]?.toString(),
          ...history[i],
        });
      });
      images.push({
        format,
        tags: entry.RepoTags ?? [],
        platform: formatPlatform({ os: config.os, architecture: config.architecture, variant: config.variant }),
        manifestDigest: oci?.digest,
        manifest: oci?.manifest,
        configMember,
        configDigest,
        config,
        layers,
      });
    }
  } else {
    for (const m of ociManifests) {
      try {
        const img = fromManifest(a, m.manifest, m.digest, m.tags, format, errors, missing);
        if (img) images.push(img);
      } catch (e) {
        errors.push(`manifest ${m.digest}: ${(e as Error).message}`);
      }
    }
  }
  if (images.length === 0 && errors.length === 0) {
    errors.push('no image found: expected manifest.json (docker save) or index.json (OCI layout)');
  }
  return { archive: a, format, images, blobChecks: [...missing, ...blobChecks(a)], errors };
}

/**
 * The checks of one image that need no layer scan: config digest and size, layer count. Layer
 * sizes, digests and diff_ids are checked against the scans (`layerChecks`).
 */
export function imageChecks(img: ImageInfo): Check[] {
  const out: Check[] = [];
  // Without a manifest (legacy docker save) the config is checked against its file name instead.
  if (img.manifest) {
    out.push(
      check('config digest', img.configMember.name, img.manifest.config.digest.toString(), img.configMember.digest),
    );
    out.push(
      check('config size', img.configMember.name, String(img.manifest.config.size), String(img.configMember.size)),
    );
  }
  out.push(
    check(
      'layer count',
      '',
      String(img.config.rootfs.diff_ids.length),
      String(img.manifest?.layers.length ?? img.layers.length),
    ),
  );
  return out;
}

/** A layer's descriptor (size, digest) and config (diff_id) against what scanning it computed. */
export function layerChecks(l: LayerRef, scan: { digest: string; diffId: string; compressedSize: number }): Check[] {
  const out: Check[] = [];
  if (l.size !== undefined)
    out.push(check(`layer ${l.index} size`, l.source.name, String(l.size), String(scan.compressedSize)));
  if (l.digest) out.push(check(`layer ${l.index} digest`, l.source.name, l.digest, scan.digest));
  out.push(check(`layer ${l.index} diff_id`, l.source.name, l.diffId, scan.diffId));
  return out;
}
