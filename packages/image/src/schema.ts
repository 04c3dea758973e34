/**
 * Validated image documents: OCI descriptors, image manifests, image indexes and image configs,
 * Docker schema 2 manifests and manifest lists. Bytes go through the caps of `json.ts`, then a
 * JSON-schema check (ajv), then into typed values whose digests are `Digest`s.
 *
 * The typed values keep the documents' own field names (`os.version`, `diff_ids`, `Env`), so
 * `JSON.stringify` of a value gives back an equivalent document (not the same bytes: keep the
 * bytes to keep the digest). Unknown fields are kept as they are.
 *
 * Rules beyond the schemas (SECURITY.md §2):
 * - the media type in the document must equal the one the transport (registry `Content-Type`,
 *   layout descriptor) gives, when both give one;
 * - a manifest must not have `manifests` and an index must not have `config`/`layers`
 *   (the CVE-2021-41190 ambiguity);
 * - a key that differs from a known field only by letter case is refused (Go's decoder folds
 *   case, so `"Layers"` would be read as `layers` there);
 * - digests are validated by the core (`Digest.parse`); sizes are non-negative safe integers;
 * - embedded `data` must decode to exactly `size` bytes with the descriptor's digest.
 *
 * Docker schema 1 manifests are recognised and refused by `parseManifest`
 * (ERR_MANIFEST_SCHEMA1); `parseSchema1Manifest` reads them for inspection only.
 */
import { Digest, hash } from '@stevedore/core';
import type { ErrorObject } from 'ajv';
import {
  type DocumentLimits,
  formatPath,
  ImageFormatError,
  type ImageFormatErrorCode,
  parseJsonDocument,
} from './json.js';
import {
  baseMediaType,
  DOCKER_CONFIG,
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  DOCKER_SCHEMA1_MANIFEST,
  DOCKER_SCHEMA1_MANIFEST_SIGNED,
  type ImageIndexMediaType,
  type ImageManifestMediaType,
  isConfig,
  isIndex,
  isManifest,
  isSchema1,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_MANIFEST,
} from './media-types.js';
import type { Platform } from './platform.js';
import { PATTERN_TEXT, type SchemaName } from './schemas.js';
import * as validators from './validators.generated.js';

// --- typed values ------------------------------------------------------------------------------

/** A content descriptor: what a blob is, its digest and size (of the bytes as stored). */
export interface Descriptor {
  mediaType: string;
  digest: Digest;
  /** Size in bytes of the blob as stored and transferred (compressed, for layers). */
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  /** The blob itself, base64 (OCI 1.1); verified against `size` and `digest` when parsed. */
  data?: string;
  artifactType?: string;
  platform?: Platform;
  [field: string]: unknown;
}

/** An OCI image manifest or a Docker schema 2 manifest: one image for one platform. */
export interface ImageManifest {
  schemaVersion: 2;
  /** Always set: from the document, else the transport, else inferred (OCI documents may omit it). */
  mediaType: ImageManifestMediaType;
  artifactType?: string;
  config: Descriptor;
  /** Base layer first. */
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

/** An OCI image index or a Docker manifest list: manifests for several platforms. */
export interface ImageIndex {
  schemaVersion: 2;
  /** Always set, as for `ImageManifest`. */
  mediaType: ImageIndexMediaType;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

/** What `parseManifest` returns: tell them apart with `isImageIndex`/`isImageManifest`. */
export type Manifest = ImageManifest | ImageIndex;

export function isImageIndex(m: Manifest): m is ImageIndex {
  return isIndex(m.mediaType);
}

export function isImageManifest(m: Manifest): m is ImageManifest {
  return isManifest(m.mediaType);
}

/** The runtime defaults of an image (`config` of an image config). Docker writes `null` for empty lists. */
export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, object> | null;
  Env?: string[] | null;
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object> | null;
  WorkingDir?: string;
  Labels?: Record<string, string> | null;
  StopSignal?: string;
  ArgsEscaped?: boolean;
  OnBuild?: string[] | null;
  Shell?: string[] | null;
  Healthcheck?: {
    Test?: string[] | null;
    Interval?: number;
    Timeout?: number;
    StartPeriod?: number;
    StartInterval?: number;
    Retries?: number;
  } | null;
  [field: string]: unknown;
}

/** One entry of an image's history, base first. `empty_layer` entries have no layer. */
export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
  [field: string]: unknown;
}

/** An OCI or Docker image config. Docker's extra fields (`container_config`, …) are kept. */
export interface ImageConfig {
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
  created?: string;
  author?: string;
  config?: ContainerConfig;
  rootfs: {
    type: 'layers';
    /** Digests of the uncompressed layers, base first. Docker omits the field for no layers: `[]` then. */
    diff_ids: Digest[];
  };
  history?: HistoryEntry[];
  [field: string]: unknown;
}

/** A Docker schema 1 manifest, for inspection only (its signature is not verified). */
export interface Schema1Manifest {
  schemaVersion: 1;
  mediaType: typeof DOCKER_SCHEMA1_MANIFEST | typeof DOCKER_SCHEMA1_MANIFEST_SIGNED;
  name: string;
  tag: string;
  architecture: string;
  /** Layer blobs, newest first (the reverse of schema 2). */
  fsLayers: { blobSum: Digest }[];
  history: { v1Compatibility: string }[];
  /** Whether the document carries a JWS `signatures` block. */
  signed: boolean;
}

// --- schemas ----------------------------------------------------------------------------------

/** A schema's validate function, compiled ahead of time (see schemas.ts). */
interface ValidateFunction {
  (data: unknown): boolean;
  errors?: ErrorObject[] | null;
}

function validator(name: SchemaName): ValidateFunction {
  return (validators as unknown as Record<SchemaName, ValidateFunction>)[name];
}

// --- errors -----------------------------------------------------------------------------------

function pointerSegments(pointer: string): (string | number)[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
}

function valueAt(root: unknown, segments: readonly (string | number)[]): unknown {
  let v = root;
  for (const s of segments) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[s];
  }
  return v;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 77)}...` : v);
  return `${typeof v} ${String(v)}`;
}

function schemaError(code: ImageFormatErrorCode, document: string, root: unknown, e: ErrorObject): ImageFormatError {
  const segments = pointerSegments(e.instancePath);
  const value = valueAt(root, segments);
  const params = e.params as Record<string, unknown>;
  let message: string;
  switch (e.keyword) {
    case 'required':
      segments.push(String(params.missingProperty));
      message = 'required field is missing';
      break;
    case 'type':
      message = `must be ${String(params.type).replace(',', ' or ')}, got ${describe(value)}`;
      break;
    case 'const':
      message = `must be ${JSON.stringify(params.allowedValue)}, got ${describe(value)}`;
      break;
    case 'pattern':
      message = `${PATTERN_TEXT[String(params.pattern)] ?? `must match ${String(params.pattern)}`}, got ${describe(value)}`;
      break;
    case 'minimum':
    case 'maximum':
      message =
        typeof value === 'number' && value > Number.MAX_SAFE_INTEGER
          ? `${value} is larger than ${Number.MAX_SAFE_INTEGER} and cannot be represented exactly`
          : `must be ${e.keyword === 'minimum' ? '>=' : '<='} ${String(params.limit)}, got ${describe(value)}`;
      break;
    default:
      message = `${e.message ?? 'is not valid'}, got ${describe(value)}`;
  }
  return new ImageFormatError(code, document, message, { path: formatPath(segments) });
}

function validate(name: SchemaName, code: ImageFormatErrorCode, document: string, value: unknown): void {
  const v = validator(name);
  if (!v(value)) {
    const first = v.errors?.[0];
    if (!first) throw new ImageFormatError(code, document, 'does not match its schema');
    throw schemaError(code, document, value, first);
  }
}

// --- conversions --------------------------------------------------------------------------------

type Json = Record<string, unknown>;

/**
 * Refuses keys that differ from a known field only by case (`"Layers"` next to, or instead of,
 * `"layers"`): Go's encoding/json matches fields case-insensitively, so such a key would mean
 * something there and nothing here.
 */
function rejectCaseVariants(obj: Json, fields: readonly string[], document: string, path: (string | number)[]): void {
  const lower = new Map(fields.map((f) => [f.toLowerCase(), f]));
  for (const key of Object.keys(obj)) {
    const field = lower.get(key.toLowerCase());
    if (field !== undefined && field !== key) {
      throw new ImageFormatError(
        'ERR_JSON_AMBIGUOUS_KEY',
        document,
        `key ${JSON.stringify(key)} differs from the field ${JSON.stringify(field)} only by case (Go readers take it for that field)`,
        { path: formatPath(path) || undefined },
      );
    }
  }
}

const DESCRIPTOR_FIELDS = ['mediaType', 'digest', 'size', 'urls', 'annotations', 'data', 'artifactType', 'platform'];
const PLATFORM_FIELDS = ['architecture', 'os', 'os.version', 'os.features', 'variant', 'features'];
const MANIFEST_FIELDS = [
  'schemaVersion',
  'mediaType',
  'artifactType',
  'config',
  'layers',
  'subject',
  'annotations',
  'manifests',
];
const CONFIG_FIELDS = [
  'created',
  'author',
  'architecture',
  'os',
  'os.version',
  'os.features',
  'variant',
  'config',
  'rootfs',
  'history',
];
const CONTAINER_CONFIG_FIELDS = [
  'User',
  'ExposedPorts',
  'Env',
  'Entrypoint',
  'Cmd',
  'Volumes',
  'WorkingDir',
  'Labels',
  'StopSignal',
  'ArgsEscaped',
  'OnBuild',
  'Shell',
  'Healthcheck',
];

function parseDigestAt(text: string, code: ImageFormatErrorCode, document: string, path: (string | number)[]): Digest {
  try {
    return Digest.parse(text);
  } catch (e) {
    throw new ImageFormatError(code, document, (e as Error).message, { path: formatPath(path), cause: e });
  }
}

function base64Decode(text: string): Uint8Array {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Descriptor JSON (already schema-checked) → typed, with embedded data verified. */
function toDescriptor(raw: Json, code: ImageFormatErrorCode, document: string, path: (string | number)[]): Descriptor {
  rejectCaseVariants(raw, DESCRIPTOR_FIELDS, document, path);
  if (raw.platform && typeof raw.platform === 'object') {
    rejectCaseVariants(raw.platform as Json, PLATFORM_FIELDS, document, [...path, 'platform']);
  }
  const digest = parseDigestAt(raw.digest as string, code, document, [...path, 'digest']);
  const d = { ...raw, digest } as Descriptor;
  if (typeof raw.data === 'string') {
    const bytes = base64Decode(raw.data);
    if (bytes.length !== d.size) {
      throw new ImageFormatError(
        'ERR_DESCRIPTOR_DATA_MISMATCH',
        document,
        `embedded data is ${bytes.length} bytes but size says ${d.size}`,
        { path: formatPath([...path, 'data']) },
      );
    }
    const actual = hash(digest.algorithm, bytes);
    if (!actual.equals(digest)) {
      throw new ImageFormatError(
        'ERR_DESCRIPTOR_DATA_MISMATCH',
        document,
        `embedded data: digest mismatch (expected ${digest.toString()}, got ${actual.toString()})`,
        { path: formatPath([...path, 'data']) },
      );
    }
  }
  return d;
}

// --- public parsing ---------------------------------------------------------------------------

/** Validates an already-parsed descriptor object (e.g. an entry of a layout's `index.json`). */
export function validateDescriptor(value: unknown, document = 'descriptor'): Descriptor {
  validate('descriptor', 'ERR_DESCRIPTOR_INVALID', document, value);
  return toDescriptor(value as Json, 'ERR_DESCRIPTOR_INVALID', document, []);
}

/** Parses a descriptor document (`application/vnd.oci.descriptor.v1+json`) under the caps. */
export function parseDescriptor(bytes: Uint8Array, limits?: DocumentLimits): Descriptor {
  return validateDescriptor(parseJsonDocument(bytes, 'descriptor', limits));
}

/**
 * Media types a transport may report for any JSON: they say nothing about the kind of
 * manifest, so they are treated as if no media type had been given.
 */
const GENERIC_MEDIA_TYPES = new Set(['application/json', 'application/octet-stream', 'text/plain']);

const SCHEMA1_ERROR =
  'Docker image manifest schema 1 is deprecated and read-only in stevedore: it can be recognised and inspected ' +
  '(parseSchema1Manifest) but not pulled, converted, pushed, saved or signature-verified; ' +
  'push the image again with a current client to get a schema 2 or OCI manifest';

/**
 * Parses and validates an image manifest or index (OCI or Docker schema 2) under the caps of
 * `limits` (default 4 MiB, depth 64; no duplicate keys). `expectedMediaType` is what the
 * transport says (a registry's `Content-Type`, a descriptor's `mediaType`): when the document
 * has a `mediaType` too, they must be equal. Docker schema 1 is refused with
 * ERR_MANIFEST_SCHEMA1. Throws `ImageFormatError` naming the field that is wrong.
 */
export function parseManifest(bytes: Uint8Array, expectedMediaType?: string, limits?: DocumentLimits): Manifest {
  const value = parseJsonDocument(bytes, 'manifest', limits);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ImageFormatError('ERR_MANIFEST_INVALID', 'manifest', `must be a JSON object, got ${describe(value)}`);
  }
  const raw = value as Json;
  rejectCaseVariants(raw, MANIFEST_FIELDS, 'manifest', []);

  let transport = expectedMediaType === undefined ? undefined : baseMediaType(expectedMediaType);
  if (transport !== undefined && (transport === '' || GENERIC_MEDIA_TYPES.has(transport))) transport = undefined;
  if (raw.mediaType !== undefined && typeof raw.mediaType !== 'string') {
    throw new ImageFormatError('ERR_MANIFEST_INVALID', 'manifest', `must be string, got ${describe(raw.mediaType)}`, {
      path: 'mediaType',
    });
  }
  const declared = raw.mediaType as string | undefined;

  if (isSchema1(declared) || isSchema1(transport) || raw.schemaVersion === 1) {
    throw new ImageFormatError('ERR_MANIFEST_SCHEMA1', 'manifest', SCHEMA1_ERROR);
  }
  if (declared !== undefined && transport !== undefined && declared !== transport) {
    throw new ImageFormatError(
      'ERR_MANIFEST_MEDIA_TYPE_MISMATCH',
      'manifest',
      `media type mismatch: the document says ${declared}, the transport says ${transport}`,
      { path: 'mediaType' },
    );
  }

  const hasManifests = 'manifests' in raw;
  const hasImageFields = 'config' in raw || 'layers' in raw;
  let mediaType = declared ?? transport;
  if (mediaType === undefined) {
    // OCI documents may leave mediaType out; the fields tell the kind unless they conflict.
    if (hasManifests && hasImageFields) {
      throw new ImageFormatError(
        'ERR_MANIFEST_AMBIGUOUS',
        'manifest',
        'has both "manifests" (index) and "config"/"layers" (manifest) and no mediaType to tell which it is',
      );
    }
    if (!hasManifests && !hasImageFields) {
      throw new ImageFormatError(
        'ERR_MANIFEST_AMBIGUOUS',
        'manifest',
        'has no mediaType and neither "manifests" (index) nor "config"/"layers" (manifest)',
      );
    }
    mediaType = hasManifests ? OCI_INDEX : OCI_MANIFEST;
  }

  if (isManifest(mediaType)) {
    if (hasManifests) {
      throw new ImageFormatError(
        'ERR_MANIFEST_AMBIGUOUS',
        'manifest',
        `an image manifest (${mediaType}) must not have a "manifests" field`,
        { path: 'manifests' },
      );
    }
    const docker = mediaType === DOCKER_MANIFEST;
    validate(docker ? 'dockerManifest' : 'ociManifest', 'ERR_MANIFEST_INVALID', 'image manifest', raw);
    const m = { ...raw, mediaType } as ImageManifest;
    const code = 'ERR_MANIFEST_INVALID';
    m.config = toDescriptor(raw.config as Json, code, 'image manifest', ['config']);
    m.layers = (raw.layers as Json[]).map((l, i) => toDescriptor(l, code, 'image manifest', ['layers', i]));
    if (raw.subject) m.subject = toDescriptor(raw.subject as Json, code, 'image manifest', ['subject']);
    return m;
  }
  if (isIndex(mediaType)) {
    if (hasImageFields) {
      throw new ImageFormatError(
        'ERR_MANIFEST_AMBIGUOUS',
        'manifest',
        `an index (${mediaType}) must not have "config" or "layers" fields`,
        { path: 'config' in raw ? 'config' : 'layers' },
      );
    }
    const docker = mediaType === DOCKER_MANIFEST_LIST;
    const document = docker ? 'manifest list' : 'image index';
    validate(docker ? 'dockerList' : 'ociIndex', 'ERR_MANIFEST_INVALID', document, raw);
    const idx = { ...raw, mediaType } as ImageIndex;
    idx.manifests = (raw.manifests as Json[]).map((d, i) =>
      toDescriptor(d, 'ERR_MANIFEST_INVALID', document, ['manifests', i]),
    );
    if (raw.subject) idx.subject = toDescriptor(raw.subject as Json, 'ERR_MANIFEST_INVALID', document, ['subject']);
    return idx;
  }
  throw new ImageFormatError(
    'ERR_MANIFEST_UNSUPPORTED_MEDIA_TYPE',
    'manifest',
    `unsupported media type ${mediaType} (expected ${[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].join(', ')})`,
    { path: declared !== undefined ? 'mediaType' : undefined },
  );
}

/** `parseManifest` that requires a single-image manifest (not an index). */
export function parseImageManifest(
  bytes: Uint8Array,
  expectedMediaType?: string,
  limits?: DocumentLimits,
): ImageManifest {
  const m = parseManifest(bytes, expectedMediaType, limits);
  if (!isImageManifest(m)) {
    throw new ImageFormatError(
      'ERR_MANIFEST_UNSUPPORTED_MEDIA_TYPE',
      'manifest',
      `expected an image manifest, got an index (${m.mediaType})`,
    );
  }
  return m;
}

/** `parseManifest` that requires an index or manifest list. */
export function parseImageIndex(bytes: Uint8Array, expectedMediaType?: string, limits?: DocumentLimits): ImageIndex {
  const m = parseManifest(bytes, expectedMediaType, limits);
  if (!isImageIndex(m)) {
    throw new ImageFormatError(
      'ERR_MANIFEST_UNSUPPORTED_MEDIA_TYPE',
      'manifest',
      `expected an index, got an image manifest (${m.mediaType})`,
    );
  }
  return m;
}

/**
 * Parses and validates an image config (OCI or Docker) under the caps. `expectedMediaType`,
 * when given, must be an image config type. Docker's `null` lists and missing `diff_ids` are
 * accepted (`diff_ids` becomes `[]`).
 */
export function parseConfig(bytes: Uint8Array, expectedMediaType?: string, limits?: DocumentLimits): ImageConfig {
  const document = 'image config';
  if (expectedMediaType !== undefined && !isConfig(expectedMediaType)) {
    throw new ImageFormatError(
      'ERR_CONFIG_UNSUPPORTED_MEDIA_TYPE',
      document,
      `unsupported media type ${expectedMediaType} (expected ${OCI_CONFIG} or ${DOCKER_CONFIG})`,
    );
  }
  const value = parseJsonDocument(bytes, document, limits);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ImageFormatError('ERR_CONFIG_INVALID', document, `must be a JSON object, got ${describe(value)}`);
  }
  const raw = value as Json;
  rejectCaseVariants(raw, CONFIG_FIELDS, document, []);
  if (raw.config && typeof raw.config === 'object') {
    rejectCaseVariants(raw.config as Json, CONTAINER_CONFIG_FIELDS, document, ['config']);
  }
  if (raw.rootfs && typeof raw.rootfs === 'object') {
    rejectCaseVariants(raw.rootfs as Json, ['type', 'diff_ids'], document, ['rootfs']);
  }
  validate('config', 'ERR_CONFIG_INVALID', document, raw);
  const rootfs = raw.rootfs as { type: 'layers'; diff_ids?: string[] | null };
  const diffIds = (rootfs.diff_ids ?? []).map((d, i) =>
    parseDigestAt(d, 'ERR_CONFIG_INVALID', document, ['rootfs', 'diff_ids', i]),
  );
  return { ...raw, rootfs: { ...rootfs, diff_ids: diffIds } } as ImageConfig;
}

/**
 * Reads a Docker schema 1 manifest for inspection (name, tag, layer digests, v1 history). The
 * JWS signature is not verified and nothing can be pulled or converted from it.
 */
export function parseSchema1Manifest(
  bytes: Uint8Array,
  expectedMediaType?: string,
  limits?: DocumentLimits,
): Schema1Manifest {
  const document = 'schema 1 manifest';
  const value = parseJsonDocument(bytes, document, limits);
  validate('schema1', 'ERR_MANIFEST_INVALID', document, value);
  const raw = value as Json;
  const signed = Array.isArray(raw.signatures);
  const declared = expectedMediaType === undefined ? undefined : baseMediaType(expectedMediaType);
  if (declared !== undefined && !isSchema1(declared) && !GENERIC_MEDIA_TYPES.has(declared)) {
    throw new ImageFormatError(
      'ERR_MANIFEST_MEDIA_TYPE_MISMATCH',
      document,
      `media type mismatch: the document is schema 1, the transport says ${declared}`,
    );
  }
  return {
    schemaVersion: 1,
    mediaType:
      declared === DOCKER_SCHEMA1_MANIFEST || (!signed && declared !== DOCKER_SCHEMA1_MANIFEST_SIGNED)
        ? DOCKER_SCHEMA1_MANIFEST
        : DOCKER_SCHEMA1_MANIFEST_SIGNED,
    name: raw.name as string,
    tag: raw.tag as string,
    architecture: raw.architecture as string,
    fsLayers: (raw.fsLayers as { blobSum: string }[]).map((l, i) => ({
      blobSum: parseDigestAt(l.blobSum, 'ERR_MANIFEST_INVALID', document, ['fsLayers', i, 'blobSum']),
    })),
    history: (raw.history as { v1Compatibility: string }[]).map((h) => ({ v1Compatibility: h.v1Compatibility })),
    signed,
  };
}
