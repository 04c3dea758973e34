// Issue 8: every command that prints data, run as a user runs it (a subprocess with --json) against
// the real distribution registry (one with htpasswd auth for login/logout) and a real store under
// an isolated temp --root (kernel overlay mounts as root): exit code 0, stdout is exactly one JSON
// document that follows the command's schema (the fields its --json code writes, with their
// types), and stderr holds nothing but progress and notes (no JSON).
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import { makeTempDir, type Registry, removeTempDir, startRegistry } from '../../../test/harness/index.js';
import { busyboxImage, inspectSchema, stevedore, writeLayout } from './fixtures.js';

const { canRun } = useRealComponents({ registry: true, dockerd: false });

// ---- schemas ------------------------------------------------------------------------------------

const str = { type: 'string' } as const;
const nonEmpty = { type: 'string', minLength: 1 } as const;
const int = { type: 'integer', minimum: 0 } as const;
const digest = { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' } as const;
const hex64 = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;
const strings = { type: 'array', items: str } as const;
const strOrNull = { type: ['string', 'null'] } as const;
const absPath = { type: 'string', pattern: '^/' } as const;
const obj = (props: Record<string, unknown>, optional: Record<string, unknown> = {}) => ({
  type: 'object',
  required: Object.keys(props),
  properties: { ...props, ...optional },
});
const arrayOf = (items: unknown, minItems = 0) => ({ type: 'array', items, minItems });

const descriptor = obj({ mediaType: nonEmpty, digest, size: int });
/** An OCI / Docker v2 image manifest (not an index). */
const imageManifest = obj({ schemaVersion: { const: 2 }, config: descriptor, layers: arrayOf(descriptor, 1) });

const schemas = {
  version: obj({ stevedore: { const: '0.1.0' }, backend: { enum: ['native', 'wasm'] }, node: nonEmpty }),
  digest: arrayOf(obj({ path: nonEmpty, digest, size: int }), 1),
  tags: obj({ repository: nonEmpty, tags: arrayOf(str, 1) }),
  catalog: obj({ registry: nonEmpty, repositories: arrayOf(str, 1) }),
  manifest: obj({
    reference: nonEmpty,
    digest,
    mediaType: { const: 'application/vnd.oci.image.manifest.v1+json' },
    size: int,
    manifest: imageManifest,
  }),
  copy: obj({
    source: nonEmpty,
    destination: nonEmpty,
    digest,
    destinationDigest: digest,
    config: digest,
    layers: arrayOf(obj({ digest, size: int, copied: { type: 'boolean' } }), 1),
  }),
  inspect: inspectSchema,
  history: arrayOf(
    obj({
      created: strOrNull,
      createdBy: str,
      comment: str,
      emptyLayer: { type: 'boolean' },
      layer: { type: ['string', 'null'], pattern: '^sha256:[0-9a-f]{64}$' },
      diffId: { type: ['string', 'null'], pattern: '^sha256:[0-9a-f]{64}$' },
      size: int,
    }),
    1,
  ),
  pull: obj({
    reference: nonEmpty,
    digest,
    id: digest,
    refs: strings,
    layers: arrayOf(obj({ digest, size: int }), 1),
    applied: int,
    root: absPath,
    seconds: { type: 'number', minimum: 0 },
  }),
  push: obj({ reference: nonEmpty, digest, size: { type: 'integer', minimum: 1 } }),
  images: arrayOf(
    obj({ Repository: nonEmpty, Tag: nonEmpty, Id: digest, Digest: strOrNull, Created: strOrNull, Size: int }),
  ),
  tag: obj({ source: nonEmpty, target: nonEmpty, id: digest }),
  rmi: arrayOf(obj({ name: nonEmpty, untagged: strings, deleted: strings, layers: strings }), 1),
  prune: obj({ images: strings, blobs: strings }),
  layers: obj({
    image: nonEmpty,
    id: digest,
    totalBytes: int,
    wastedBytes: int,
    efficiency: { type: 'number', minimum: 0, maximum: 1 },
    layers: arrayOf(
      obj({
        index: int,
        digest,
        diffId: digest,
        createdBy: str,
        size: int,
        added: int,
        changed: int,
        deleted: int,
        wasted: int,
        files: arrayOf(obj({ kind: { enum: ['A', 'C', 'D'] }, path: { type: 'string', pattern: '^/' }, size: int })),
      }),
      1,
    ),
    wastedFiles: arrayOf(obj({ path: str, layers: arrayOf({ type: 'integer', minimum: 0 }), bytes: int })),
  }),
  save: obj({ file: absPath, images: arrayOf(obj({ name: nonEmpty, digest, tags: strings }), 1) }),
  load: arrayOf(obj({ id: digest, tags: strings, applied: int }), 1),
  unpack: obj({ image: nonEmpty, directory: absPath }),
  export: obj({ image: nonEmpty, file: absPath, diffId: digest }),
  mount: obj(
    {
      target: absPath,
      imageId: digest,
      backend: { enum: ['overlay', 'fuse-overlayfs', 'bind'] },
      lowerdir: nonEmpty,
      mountOptions: nonEmpty,
      image: nonEmpty,
    },
    { layerId: hex64, upperDir: absPath, workDir: absPath },
  ),
  umount: obj({ target: absPath, layerId: { type: ['string', 'null'], pattern: '^[0-9a-f]{64}$' } }),
  ps: arrayOf(
    obj(
      { id: hex64, image: nonEmpty, imageId: digest, created: nonEmpty, upperDir: absPath, mounts: strings },
      { mountTarget: absPath },
    ),
  ),
  rm: arrayOf(hex64, 1),
  diff: arrayOf(obj({ Kind: { enum: ['A', 'C', 'D'] }, Path: { type: 'string', pattern: '^/' } })),
  commit: obj({ id: digest, reference: nonEmpty, from: nonEmpty }),
  fsck: obj({ root: absPath, problems: strings, verifiedLayers: int, mounts: strings }),
  login: obj({ registry: nonEmpty, username: nonEmpty, config: absPath }),
  logout: obj({ registry: nonEmpty, removed: { type: 'boolean' }, config: absPath }),
  dockerLs: arrayOf(obj({ Id: digest, RepoTags: strings, RepoDigests: strings, Created: strOrNull, Size: int })),
};
type Name = keyof typeof schemas;

const ajv = new Ajv({ allErrors: true, strict: false });
const validators = new Map<Name, ValidateFunction>();
const validator = (name: Name) => {
  let v = validators.get(name);
  if (!v) {
    v = ajv.compile(schemas[name]);
    validators.set(name, v);
  }
  return v;
};

/**
 * Runs `stevedore --json ARGS`: exit 0, stdout exactly one JSON document valid against
 * `schemas[name]`, no JSON on stderr. Returns the parsed document.
 */
// biome-ignore lint/suspicious/noExplicitAny: the validated document, read field by field by the tests
async function json(name: Name, args: string[], opts: Parameters<typeof stevedore>[1] = {}): Promise<any> {
  const r = await stevedore(['--json', ...args], opts);
  const what = `stevedore --json ${args.join(' ')}`;
  expect(r.code, `${what}: ${r.stderr}`).toBe(0);
  expect(r.stdout.endsWith('\n'), `${what}: stdout ends with a newline`).toBe(true);
  let doc: unknown;
  // JSON.parse takes exactly one document (two concatenated, or trailing text, throw).
  expect(() => {
    doc = JSON.parse(r.stdout);
  }, `${what}: stdout is one JSON document:\n${r.stdout}`).not.toThrow();
  const validate = validator(name);
  expect(validate(doc), `${what}: ${JSON.stringify(validate.errors)}\n${r.stdout}`).toBe(true);
  // stderr: progress and notes only — no line that is (or starts) a JSON object or array.
  for (const line of r.stderr.split('\n')) {
    expect(/^\s*[[{]/.test(line), `${what}: JSON on stderr: ${line}`).toBe(false);
  }
  expect(r.stderr).not.toContain(r.stdout.trim());
  return doc;
}

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe.skipIf(!canRun)('--json output of every data command follows its schema', () => {
  let reg: Registry;
  let locked: Registry;
  let work: string;
  let layout: string;
  let ref: string;
  const image = busyboxImage('hello from the json test\n');
  const config = image.manifest.config.digest.toString();
  const auth = { username: 'bob', password: 'json-pw' };
  let roots = 0;
  /** A fresh, empty store for one test. */
  const newRoot = () => join(work, `root-${++roots}`);
  /** A fresh store holding `ref` (pulled quietly). */
  const seeded = async () => {
    const root = newRoot();
    const r = await stevedore(['-q', '--root', root, 'pull', ref]);
    expect(r.code, r.stderr).toBe(0);
    return root;
  };

  beforeAll(async () => {
    work = makeTempDir('cli-json');
    [reg, locked] = await Promise.all([startRegistry(), startRegistry({ auth })]);
    layout = join(work, 'layout');
    await writeLayout(layout, image, 'v1');
    ref = `${reg.host}/sd/json:1`;
    const r = await stevedore(['-q', 'copy', `oci:${layout}:v1`, `docker://${ref}`]);
    expect(r.code, r.stderr).toBe(0);
  }, 240_000);
  afterAll(async () => {
    await reg?.stop();
    await locked?.stop();
    if (work) removeTempDir(work);
  }, 60_000);

  it('the schemas reject a missing documented field and a wrong type', () => {
    expect(validator('version')({ stevedore: '0.1.0', backend: 'native' })).toBe(false);
    expect(validator('umount')({ target: '/mnt/x', layerId: 7 })).toBe(false);
    expect(validator('rm')(['abc'])).toBe(false);
    expect(validator('fsck')({ root: '/r', problems: [], verifiedLayers: 0, mounts: [], extra: 1 })).toBe(true);
  });

  it('version and digest (file and stdin)', async () => {
    const v = await json('version', ['version']);
    expect(v.node).toBe(process.versions.node);
    const file = join(work, 'blob.bin');
    writeFileSync(file, 'some bytes\n');
    const d = await json('digest', ['digest', file]);
    expect(d).toEqual([{ path: file, digest: sha256(Buffer.from('some bytes\n')), size: 11 }]);
    const s = await json('digest', ['digest', '-'], { input: 'some bytes\n' });
    expect(s[0]).toMatchObject({ path: '-', digest: d[0].digest });
  });

  it('registry reads: tags, catalog, manifest (wrapped and raw), inspect, history', async () => {
    expect((await json('tags', ['tags', `${reg.host}/sd/json`])).tags).toEqual(['1']);
    expect((await json('catalog', ['catalog', reg.host])).repositories).toContain('sd/json');
    const m = await json('manifest', ['manifest', ref]);
    expect(m.digest).toBe(image.digest.toString());
    expect(m.size).toBe(image.rawManifest.length);
    // without --json: the raw bytes, which are themselves an image manifest
    const raw = await stevedore(['manifest', ref]);
    expect(raw.code, raw.stderr).toBe(0);
    const validate = ajv.compile(imageManifest);
    expect(validate(JSON.parse(raw.stdout)), JSON.stringify(validate.errors)).toBe(true);
    expect(sha256(raw.raw)).toBe(image.digest.toString());
    expect((await json('inspect', ['inspect', ref])).Digest).toBe(image.digest.toString());
    const h = await json('history', ['history', ref]);
    expect(h).toHaveLength(3);
    expect(h[1]).toMatchObject({ emptyLayer: true, layer: null, diffId: null, size: 0 });
  });

  it('copy to a registry and to an OCI layout', async () => {
    const pushed = await json('copy', ['copy', `oci:${layout}:v1`, `docker://${reg.host}/sd/copied:1`]);
    expect(pushed.destinationDigest).toBe(image.digest.toString());
    expect(pushed.layers.every((l: { copied: boolean }) => l.copied)).toBe(true);
    const out = await json('copy', ['copy', ref, `oci:${join(work, 'copy-layout')}:x`]);
    expect(out).toMatchObject({ digest: image.digest.toString(), config });
  });

  it('store: pull, images, tag, push, inspect/history store:, layers, rmi, prune, fsck, fsck --verify', async () => {
    const root = newRoot();
    const sd = (name: Name, args: string[]) => json(name, ['--root', root, ...args]);
    const p = await sd('pull', ['pull', ref]);
    expect(p).toMatchObject({ digest: image.digest.toString(), id: config, applied: 2 });
    expect(p.root).toBe(root);
    expect((await sd('pull', ['pull', ref])).applied).toBe(0);
    const imgs = await sd('images', ['images']);
    expect(imgs).toEqual([expect.objectContaining({ Repository: `${reg.host}/sd/json`, Tag: '1', Id: config })]);
    const target = `${reg.host}/sd/tagged:2`;
    expect(await sd('tag', ['tag', ref, target])).toMatchObject({ source: ref, target, id: config });
    expect(await sd('push', ['push', target])).toMatchObject({ digest: image.digest.toString() });
    expect((await sd('inspect', ['inspect', `store:${target}`])).Id).toBe(config);
    expect(await sd('history', ['history', `store:${ref}`])).toHaveLength(3);
    const l = await sd('layers', ['layers', ref]);
    expect(l.layers).toHaveLength(2);
    expect(l.id).toBe(config);
    const f = await sd('fsck', ['fsck']);
    expect(f).toMatchObject({ root, problems: [], verifiedLayers: 0, mounts: [] });
    expect((await sd('fsck', ['fsck', '--verify'])).verifiedLayers).toBe(2);
    const untag = await sd('rmi', ['rmi', target]);
    expect(untag).toEqual([{ name: target, untagged: [target], deleted: [], layers: [] }]);
    // pull also recorded REPO@DIGEST: the image goes with its last reference
    const gone = await sd('rmi', ['rmi', ref, `${reg.host}/sd/json@${image.digest}`]);
    expect(gone.map((x: { deleted: string[] }) => x.deleted)).toEqual([[], [config]]);
    expect((await sd('prune', ['prune'])).blobs.length).toBeGreaterThan(0);
    expect(await sd('images', ['images'])).toEqual([]);
  });

  it('save → load into another store, unpack, export -o FILE', async () => {
    const root = await seeded();
    const tar = join(work, 'saved.tar');
    const s = await json('save', ['--root', root, 'save', '-o', tar, ref]);
    expect(s).toEqual({ file: tar, images: [{ name: ref, digest: image.digest.toString(), tags: [ref] }] });
    const loaded = await json('load', ['--root', newRoot(), 'load', '-i', tar]);
    expect(loaded).toEqual([{ id: config, tags: [ref], applied: 2 }]);
    const dir = join(work, 'unpacked');
    expect(await json('unpack', ['--root', root, 'unpack', ref, dir])).toEqual({ image: ref, directory: dir });
    expect(readFileSync(join(dir, 'msg.txt'), 'utf8')).toBe('hello from the json test\n');
    const flat = join(work, 'flat.tar');
    const e = await json('export', ['--root', root, 'export', ref, '-o', flat]);
    expect(e).toMatchObject({ image: ref, file: flat });
    expect(e.diffId).toBe(sha256(readFileSync(flat)));
  });

  it('mount / umount (kernel overlay), mount --writable, diff, commit, ps, rm', async () => {
    const root = await seeded();
    const sd = (name: Name, args: string[]) => json(name, ['--root', root, ...args]);
    const ro = join(work, 'mnt-ro');
    const m = await sd('mount', ['mount', ref, ro]);
    expect(m).toMatchObject({ target: ro, imageId: config, backend: 'overlay', image: ref });
    expect(m.layerId).toBeUndefined();
    expect(readFileSync(join(ro, 'msg.txt'), 'utf8')).toBe('hello from the json test\n');
    expect((await sd('fsck', ['fsck'])).mounts).toEqual([ro]);
    expect(await sd('umount', ['umount', ro])).toEqual({ target: ro, layerId: null });

    const rw = join(work, 'mnt-rw');
    const w = await sd('mount', ['mount', '--writable', ref, rw]);
    expect(w.layerId).toMatch(/^[0-9a-f]{64}$/);
    expect(w.upperDir).toBeTypeOf('string');
    mkdirSync(join(rw, 'etc'), { recursive: true });
    writeFileSync(join(rw, 'etc', 'hi'), 'hi\n');
    const ps = await sd('ps', ['ps']);
    expect(ps).toEqual([expect.objectContaining({ id: w.layerId, imageId: config, mounts: [rw] })]);
    const diff = await sd('diff', ['diff', rw]);
    expect(diff).toContainEqual({ Kind: 'A', Path: '/etc/hi' });
    const c = await sd('commit', ['commit', rw, 'committed:1']);
    expect(c).toMatchObject({ reference: 'committed:1', from: ref });
    expect(await sd('umount', ['umount', rw])).toEqual({ target: rw, layerId: w.layerId });
    expect((await sd('ps', ['ps']))[0].mounts).toEqual([]);
    expect(await sd('rm', ['rm', w.layerId.slice(0, 12)])).toEqual([w.layerId]);
    expect(await sd('ps', ['ps'])).toEqual([]);
  });

  it('login and logout against an htpasswd registry', async () => {
    const env = { DOCKER_CONFIG: join(work, 'docker-config') };
    const li = await json('login', ['login', locked.host, '-u', auth.username, '--password-stdin'], {
      input: `${auth.password}\n`,
      env,
    });
    expect(li).toEqual({
      registry: locked.host,
      username: auth.username,
      config: join(env.DOCKER_CONFIG, 'config.json'),
    });
    const saved = JSON.parse(readFileSync(li.config, 'utf8'));
    expect(Buffer.from(saved.auths[locked.host].auth, 'base64').toString()).toBe(`${auth.username}:${auth.password}`);
    expect(await json('logout', ['logout', locked.host], { env })).toMatchObject({
      registry: locked.host,
      removed: true,
    });
    expect((await json('logout', ['logout', locked.host], { env })).removed).toBe(false);
  });

  it('docker ls over an overlay2 data root (no dockerd)', async () => {
    // The smallest data root docker ls reads: one image with no layers, tagged app:1.
    const dataRoot = join(work, 'docker-root');
    const cfg = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        created: '2026-01-02T03:04:05Z',
        config: {},
        rootfs: { type: 'layers', diff_ids: [] },
      }),
    );
    const id = sha256(cfg);
    const content = join(dataRoot, 'image', 'overlay2', 'imagedb', 'content', 'sha256');
    mkdirSync(content, { recursive: true });
    mkdirSync(join(dataRoot, 'overlay2'), { recursive: true });
    writeFileSync(join(content, id.slice(7)), cfg);
    writeFileSync(
      join(dataRoot, 'image', 'overlay2', 'repositories.json'),
      JSON.stringify({ Repositories: { app: { 'app:1': id } } }),
    );
    const rows = await json('dockerLs', ['docker', '--data-root', dataRoot, 'ls']);
    expect(rows).toEqual([{ Id: id, RepoTags: ['app:1'], RepoDigests: [], Created: '2026-01-02T03:04:05Z', Size: 0 }]);
    // not a data root: exit 1, one line on stderr, nothing on stdout
    const bad = await stevedore(['--json', 'docker', '--data-root', join(work, 'empty'), 'ls']);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/^stevedore: .*not a Docker data root/);
  });
});
