/**
 * The JSON schemas of image documents (data only). `scripts/gen-validators.mjs` compiles them
 * ahead of time into `validators.generated.ts` (ajv standalone code), so validating a document
 * costs no schema compilation at run time (loading ajv and compiling the manifest and config
 * schemas took ~70 ms of every command that reads an image); `schema.ts` applies them.
 * Change a schema here, then run `npm run -w packages/image gen-validators`.
 */
import { DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST } from './media-types.js';

const DIGEST_PATTERN = '^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$';
const MEDIA_TYPE_PATTERN = '^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$';
const BASE64_PATTERN = '^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$';
const URI_PATTERN = '^[A-Za-z][A-Za-z0-9+.-]*:[^\\s]*$';

export const PATTERN_TEXT: Record<string, string> = {
  [DIGEST_PATTERN]: 'must be a digest (algorithm:encoded, e.g. sha256:<64 hex digits>)',
  [MEDIA_TYPE_PATTERN]: 'must be a media type (type/subtype)',
  [BASE64_PATTERN]: 'must be base64',
  [URI_PATTERN]: 'must be a URI',
};

const str = { type: 'string' } as const;
const strings = { type: 'array', items: str } as const;
const nullableStrings = { type: ['array', 'null'], items: str } as const;
const stringMap = { type: 'object', additionalProperties: str } as const;
const objectMap = { type: ['object', 'null'], additionalProperties: { type: 'object' } } as const;
const mediaType = { type: 'string', pattern: MEDIA_TYPE_PATTERN } as const;

const platformSchema = {
  type: 'object',
  required: ['architecture', 'os'],
  properties: {
    architecture: str,
    os: str,
    'os.version': str,
    'os.features': strings,
    variant: str,
    features: strings,
  },
} as const;

const descriptorSchema = {
  type: 'object',
  required: ['mediaType', 'digest', 'size'],
  properties: {
    mediaType,
    digest: { type: 'string', pattern: DIGEST_PATTERN },
    size: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    urls: { type: 'array', items: { type: 'string', pattern: URI_PATTERN } },
    annotations: stringMap,
    data: { type: 'string', pattern: BASE64_PATTERN },
    artifactType: mediaType,
    platform: platformSchema,
  },
} as const;

/** Where a schema embeds a descriptor: one shared validator in the generated code, not a copy per use. */
const DESCRIPTOR_REF = { $ref: 'descriptor' } as const;

const platformDescriptorSchema = {
  ...descriptorSchema,
  required: ['mediaType', 'digest', 'size', 'platform'],
} as const;

const schemaVersion2 = { type: 'integer', const: 2 } as const;

const ociManifestSchema = {
  type: 'object',
  required: ['schemaVersion', 'config', 'layers'],
  properties: {
    schemaVersion: schemaVersion2,
    mediaType: { const: OCI_MANIFEST },
    artifactType: mediaType,
    config: DESCRIPTOR_REF,
    layers: { type: 'array', items: DESCRIPTOR_REF },
    subject: DESCRIPTOR_REF,
    annotations: stringMap,
  },
} as const;

const dockerManifestSchema = {
  type: 'object',
  required: ['schemaVersion', 'mediaType', 'config', 'layers'],
  properties: {
    schemaVersion: schemaVersion2,
    mediaType: { const: DOCKER_MANIFEST },
    config: DESCRIPTOR_REF,
    layers: { type: 'array', items: DESCRIPTOR_REF },
  },
} as const;

const ociIndexSchema = {
  type: 'object',
  required: ['schemaVersion', 'manifests'],
  properties: {
    schemaVersion: schemaVersion2,
    mediaType: { const: OCI_INDEX },
    artifactType: mediaType,
    manifests: { type: 'array', items: DESCRIPTOR_REF },
    subject: DESCRIPTOR_REF,
    annotations: stringMap,
  },
} as const;

const dockerManifestListSchema = {
  type: 'object',
  required: ['schemaVersion', 'mediaType', 'manifests'],
  properties: {
    schemaVersion: schemaVersion2,
    mediaType: { const: DOCKER_MANIFEST_LIST },
    manifests: { type: 'array', items: platformDescriptorSchema },
  },
} as const;

const historySchema = {
  type: 'object',
  properties: {
    created: str,
    created_by: str,
    author: str,
    comment: str,
    empty_layer: { type: 'boolean' },
  },
} as const;

const configSchema = {
  type: 'object',
  required: ['architecture', 'os', 'rootfs'],
  properties: {
    created: str,
    author: str,
    architecture: str,
    os: str,
    'os.version': str,
    'os.features': strings,
    variant: str,
    config: {
      type: ['object', 'null'],
      properties: {
        User: str,
        ExposedPorts: objectMap,
        Env: nullableStrings,
        Entrypoint: nullableStrings,
        Cmd: nullableStrings,
        Volumes: objectMap,
        WorkingDir: str,
        Labels: { type: ['object', 'null'], additionalProperties: str },
        StopSignal: str,
        ArgsEscaped: { type: 'boolean' },
        OnBuild: nullableStrings,
        Shell: nullableStrings,
        Healthcheck: {
          type: ['object', 'null'],
          properties: {
            Test: nullableStrings,
            Interval: { type: 'integer' },
            Timeout: { type: 'integer' },
            StartPeriod: { type: 'integer' },
            StartInterval: { type: 'integer' },
            Retries: { type: 'integer' },
          },
        },
      },
    },
    rootfs: {
      type: 'object',
      required: ['type'],
      properties: {
        type: { const: 'layers' },
        diff_ids: { type: ['array', 'null'], items: { type: 'string', pattern: DIGEST_PATTERN } },
      },
    },
    history: { type: ['array', 'null'], items: historySchema },
  },
} as const;

const schema1Schema = {
  type: 'object',
  required: ['schemaVersion', 'name', 'tag', 'architecture', 'fsLayers', 'history'],
  properties: {
    schemaVersion: { type: 'integer', const: 1 },
    name: str,
    tag: str,
    architecture: str,
    fsLayers: {
      type: 'array',
      items: {
        type: 'object',
        required: ['blobSum'],
        properties: { blobSum: { type: 'string', pattern: DIGEST_PATTERN } },
      },
    },
    history: {
      type: 'array',
      items: { type: 'object', required: ['v1Compatibility'], properties: { v1Compatibility: str } },
    },
    signatures: { type: 'array' },
  },
} as const;

export type SchemaName =
  | 'descriptor'
  | 'ociManifest'
  | 'dockerManifest'
  | 'ociIndex'
  | 'dockerList'
  | 'config'
  | 'schema1';

export const SCHEMAS: Record<SchemaName, object> = {
  descriptor: descriptorSchema,
  ociManifest: ociManifestSchema,
  dockerManifest: dockerManifestSchema,
  ociIndex: ociIndexSchema,
  dockerList: dockerManifestListSchema,
  config: configSchema,
  schema1: schema1Schema,
};
