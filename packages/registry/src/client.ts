/**
 * The distribution API client: manifests, blobs (verified, resumable, chunked/monolithic/mount
 * uploads), tags, catalog, deletes, referrers.
 *
 * Contracts:
 * - every blob read is verified while streaming (size and digest, failing at the end) and
 *   nothing unverified is stored under its digest;
 * - manifest bytes are checked against the digest of a digest reference and against the
 *   registry's `Docker-Content-Digest`, and capped at 4 MiB;
 * - a dropped blob download resumes with a closed `Range`; only a matching 206 is accepted,
 *   anything else restarts from zero (the restarted prefix must hash to what was already read);
 * - repeated pushes are no-ops (HEAD first).
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Digest, Hasher, HashFeed } from '@stevedore/core';
import {
  baseMediaType,
  type Descriptor,
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  DOCKER_SCHEMA1_MANIFEST,
  DOCKER_SCHEMA1_MANIFEST_SIGNED,
  ImageFormatError,
  isImageIndex,
  isSchema1,
  type Manifest,
  OCI_INDEX,
  OCI_MANIFEST,
  parseManifest,
  parseReference,
  type Reference,
  verifiedAs,
} from '@stevedore/image';
import { RegistryError } from './errors.js';
import {
  dump,
  failFor,
  header,
  type RequestSpec,
  type Response,
  readBody,
  Transport,
  type TransportOptions,
} from './transport.js';

/** A repository on a registry (a `Reference` is one). */
export interface Repo {
  readonly registry: string;
  readonly repository: string;
}

export interface ProgressEvent {
  direction: 'pull' | 'push';
  registry: string;
  repository: string;
  digest: string;
  /** Bytes transferred so far (of the blob as stored). */
  bytes: number;
  /** The blob's size. */
  total: number;
}

export interface RegistryClientOptions extends TransportOptions {
  /**
   * Blobs up to this size are uploaded in one PUT; larger ones are streamed in one PATCH (as
   * docker does), or, with `chunkedUpload`, sent in PATCH chunks of this size. Default 8 MiB.
   */
  chunkSize?: number;
  /** Upload large blobs in PATCH chunks of `chunkSize` (one round trip each) instead of one streamed PATCH. */
  chunkedUpload?: boolean;
  /** Manifest size cap. Default 4 MiB. */
  maxManifestBytes?: number;
  /** Resumes allowed per blob download after dropped connections. Default 5. */
  maxResumes?: number;
  onProgress?: (event: ProgressEvent) => void;
}

export interface CallOptions {
  signal?: AbortSignal;
}

/** What a manifest GET returned, verified. */
export interface FetchedManifest {
  digest: Digest;
  mediaType: string;
  raw: Uint8Array;
  manifest: Manifest;
}

/** The media types a manifest GET accepts (schema 1 too, so that it is refused with a clear error, not a 404). */
export const MANIFEST_ACCEPT = [
  OCI_INDEX,
  OCI_MANIFEST,
  DOCKER_MANIFEST_LIST,
  DOCKER_MANIFEST,
  `${DOCKER_SCHEMA1_MANIFEST_SIGNED};q=0.1`,
  `${DOCKER_SCHEMA1_MANIFEST};q=0.1`,
].join(', ');

/** Content-Types some registries serve manifests with, which do not tell the kind. */
const GENERIC_TYPES = new Set(['application/json', 'text/plain', 'application/octet-stream']);

const pullScope = (r: Repo) => `repository:${r.repository}:pull`;
const pushScope = (r: Repo) => `repository:${r.repository}:pull,push`;
const enc = (repository: string) => repository.split('/').map(encodeURIComponent).join('/');

/**
 * What names a schema 1 manifest, for messages: its media type (document, else transport),
 * else `schemaVersion 1`; undefined when `raw` is not one. Only for errors: nothing is trusted.
 */
function schema1Of(raw: Uint8Array, contentType: string | undefined): string | undefined {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8'));
  } catch {
    return undefined;
  }
  if (!v || typeof v !== 'object' || (v as { schemaVersion?: unknown }).schemaVersion !== 1) return undefined;
  const declared = (v as { mediaType?: unknown }).mediaType;
  if (typeof declared === 'string' && isSchema1(declared)) return baseMediaType(declared);
  const served = contentType ? baseMediaType(contentType) : '';
  return `schemaVersion 1${served ? `, served as ${served}` : ''}`;
}

/** Parses `Content-Range: bytes a-b/total` (total may be `*`). */
function contentRange(v: string | undefined): { start: number; end: number; total: number | undefined } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(v?.trim() ?? '');
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

export class RegistryClient {
  readonly transport: Transport;
  private readonly chunkSize: number;
  private readonly chunkedUpload: boolean;
  private readonly maxManifest: number;
  private readonly maxResumes: number;

  constructor(readonly options: RegistryClientOptions = {}) {
    this.transport = new Transport(options);
    this.chunkSize = options.chunkSize ?? 8 * 1024 * 1024;
    this.chunkedUpload = options.chunkedUpload ?? false;
    this.maxManifest = options.maxManifestBytes ?? 4 * 1024 * 1024;
    this.maxResumes = options.maxResumes ?? 5;
  }

  private send(r: Repo | { registry: string; repository?: undefined }, spec: RequestSpec): Promise<Response> {
    return this.transport.send(r.registry, { repository: r.repository, ...spec });
  }

  private ctx(r: { registry: string; repository?: string | undefined }, operation: string) {
    return { registry: r.registry, repository: r.repository, operation };
  }

  /** `GET /v2/`: checks the registry speaks the API and that we may use it (authenticating if asked). */
  async ping(registry: string, o: CallOptions = {}): Promise<void> {
    const res = await this.send({ registry }, { method: 'GET', path: '/v2/', operation: 'ping', signal: o.signal });
    if (res.status !== 200) await failFor(res, this.ctx({ registry }, 'ping'));
    await dump(res);
  }

  /** Fetches a manifest or index by tag or digest, verified and parsed (schema 1 → ERR_MANIFEST_SCHEMA1). */
  async getManifest(ref: Reference, o: CallOptions = {}): Promise<FetchedManifest> {
    const op = `pull ${ref.toString()}`;
    const res = await this.send(ref, {
      method: 'GET',
      path: `/v2/${enc(ref.repository)}/manifests/${ref.identifier}`,
      headers: { accept: MANIFEST_ACCEPT },
      scopes: [pullScope(ref)],
      operation: op,
      signal: o.signal,
    });
    if (res.status !== 200) await failFor(res, this.ctx(ref, op));
    const contentType = header(res, 'content-type');
    const headerDigest = header(res, 'docker-content-digest');
    const raw = await readBody(res, this.maxManifest, 'manifest', this.ctx(ref, op));
    // Schema 1 first: its digest is of the payload without the JWS signatures, so the digest
    // checks below would report a mismatch instead of what is wrong.
    if (isSchema1(contentType)) throw this.schema1Error(ref, op, baseMediaType(contentType!));
    const algorithm = ref.digest?.algorithm ?? 'sha256';
    const digest = new Hasher(algorithm).update(raw).digest();
    const mismatch = (what: string) => {
      const schema1 = schema1Of(raw, contentType);
      if (schema1) return this.schema1Error(ref, op, schema1);
      return new RegistryError('ERR_DIGEST_MISMATCH', `manifest: digest mismatch (${what})`, this.ctx(ref, op));
    };
    if (ref.digest && !digest.equals(ref.digest)) throw mismatch(`expected ${ref.digest}, got ${digest}`);
    if (headerDigest) {
      let hd: Digest | undefined;
      try {
        hd = Digest.parse(headerDigest);
      } catch {}
      if (hd && hd.algorithm === algorithm && !hd.equals(digest))
        throw mismatch(`Docker-Content-Digest says ${hd}, the bytes are ${digest}`);
    }
    let manifest: Manifest;
    try {
      // a generic Content-Type (application/json, text/plain, application/octet-stream, none):
      // the kind comes from the body (its mediaType, else manifests[] vs config/layers)
      manifest = parseManifest(raw, contentType, { maxBytes: this.maxManifest });
    } catch (e) {
      if (!(e instanceof ImageFormatError)) throw e;
      if (e.code === 'ERR_MANIFEST_SCHEMA1')
        throw this.schema1Error(ref, op, schema1Of(raw, contentType) ?? 'schemaVersion 1');
      throw new RegistryError(e.code, `${e.message}${contentType ? ` (served as ${contentType})` : ''}`, {
        ...this.ctx(ref, op),
        cause: e,
      });
    }
    return { digest, mediaType: manifest.mediaType, raw, manifest };
  }

  /** `op` names the reference (`pull <ref>`). */
  private schema1Error(ref: Reference, op: string, what: string): RegistryError {
    return new RegistryError(
      'ERR_MANIFEST_SCHEMA1',
      `the manifest is Docker schema 1 (${what}), deprecated and not supported (it has no image config to verify the layers against)`,
      {
        ...this.ctx(ref, op),
        hint:
          'push the image again with a current docker, buildx or podman (or convert it: `skopeo copy --format v2s2`) ' +
          'to get a schema 2 or OCI manifest',
      },
    );
  }

  /**
   * HEAD of a manifest: its digest, media type and size (each undefined when the registry does not
   * say: no `Docker-Content-Digest` on a tag, a generic Content-Type, no Content-Length), or
   * undefined when the registry does not have it.
   */
  async headManifest(
    ref: Reference,
    o: CallOptions = {},
  ): Promise<{ digest: Digest | undefined; mediaType: string | undefined; size: number | undefined } | undefined> {
    const op = `head ${ref.toString()}`;
    const res = await this.send(ref, {
      method: 'HEAD',
      path: `/v2/${enc(ref.repository)}/manifests/${ref.identifier}`,
      headers: { accept: MANIFEST_ACCEPT },
      scopes: [pullScope(ref)],
      operation: op,
      signal: o.signal,
    });
    await dump(res);
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw (await failFor(res, this.ctx(ref, op)).catch((e) => e)) as Error;
    const d = header(res, 'docker-content-digest');
    const length = header(res, 'content-length');
    const size = length === undefined ? Number.NaN : Number(length);
    const contentType = header(res, 'content-type');
    return {
      digest: d ? Digest.parse(d) : ref.digest,
      // a generic type (application/json, text/plain, application/octet-stream) says nothing: only the body would
      mediaType: contentType && !GENERIC_TYPES.has(baseMediaType(contentType)) ? contentType : undefined,
      size: Number.isFinite(size) ? size : undefined,
    };
  }

  /** PUTs a manifest (or index) under `ref`'s tag (or digest) with its media type; returns the digest. */
  async putManifest(ref: Reference, raw: Uint8Array, mediaType: string, o: CallOptions = {}): Promise<Digest> {
    const op = `push ${ref.toString()}`;
    const digest = new Hasher(ref.digest?.algorithm ?? 'sha256').update(raw).digest();
    if (ref.digest && !digest.equals(ref.digest)) {
      throw new RegistryError(
        'ERR_DIGEST_MISMATCH',
        `manifest: digest mismatch (expected ${ref.digest}, got ${digest})`,
        this.ctx(ref, op),
      );
    }
    const res = await this.send(ref, {
      method: 'PUT',
      path: `/v2/${enc(ref.repository)}/manifests/${ref.tag ?? digest.toString()}`,
      headers: { 'content-type': mediaType },
      body: raw,
      scopes: [pushScope(ref)],
      operation: op,
      signal: o.signal,
    });
    if (res.status !== 201 && res.status !== 200) await failFor(res, this.ctx(ref, op));
    await dump(res);
    const hd = header(res, 'docker-content-digest');
    if (hd && hd !== digest.toString() && hd.startsWith(`${digest.algorithm}:`)) {
      throw new RegistryError(
        'ERR_DIGEST_MISMATCH',
        `registry stored the manifest as ${hd}, expected ${digest}`,
        this.ctx(ref, op),
      );
    }
    return digest;
  }

  /** Deletes a manifest (a tag is resolved to its digest first). */
  async deleteManifest(ref: Reference, o: CallOptions = {}): Promise<Digest> {
    const op = `delete ${ref.toString()}`;
    let digest = ref.digest;
    if (!digest) {
      const h = await this.headManifest(ref, o);
      if (!h?.digest) throw new RegistryError('ERR_REGISTRY_NOT_FOUND', 'manifest not found', this.ctx(ref, op));
      digest = h.digest;
    }
    const res = await this.send(ref, {
      method: 'DELETE',
      path: `/v2/${enc(ref.repository)}/manifests/${digest}`,
      scopes: [`repository:${ref.repository}:delete`, pushScope(ref)],
      operation: op,
      signal: o.signal,
    });
    if (res.status !== 202 && res.status !== 200) await failFor(res, this.ctx(ref, op));
    await dump(res);
    return digest;
  }

  /** HEAD of a blob: true when the repository has it. */
  async blobExists(repo: Repo, digest: Digest, o: CallOptions & { push?: boolean } = {}): Promise<boolean> {
    const op = `head blob ${digest}`;
    const res = await this.send(repo, {
      method: 'HEAD',
      path: `/v2/${enc(repo.repository)}/blobs/${digest}`,
      scopes: [o.push ? pushScope(repo) : pullScope(repo)],
      operation: op,
      signal: o.signal,
    });
    await dump(res);
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    return failFor(res, this.ctx(repo, op));
  }

  /** Deletes a blob. */
  async deleteBlob(repo: Repo, digest: Digest, o: CallOptions = {}): Promise<void> {
    const op = `delete blob ${digest}`;
    const res = await this.send(repo, {
      method: 'DELETE',
      path: `/v2/${enc(repo.repository)}/blobs/${digest}`,
      scopes: [`repository:${repo.repository}:delete`, pushScope(repo)],
      operation: op,
      signal: o.signal,
    });
    if (res.status !== 202 && res.status !== 200) await failFor(res, this.ctx(repo, op));
    await dump(res);
  }

  /** A blob's bytes in memory (configs): verified, capped. */
  async blobBytes(
    repo: Repo,
    digest: Digest,
    size: number,
    o: CallOptions & { max?: number } = {},
  ): Promise<Uint8Array> {
    const max = o.max ?? this.maxManifest;
    if (size > max) {
      throw new RegistryError(
        'ERR_REGISTRY_TOO_LARGE',
        `blob ${digest}: ${size} bytes is more than the limit of ${max}`,
        this.ctx(repo, 'pull blob'),
      );
    }
    const parts: Uint8Array[] = [];
    for await (const c of this.fetchBlob(repo, digest, size, o)) parts.push(c);
    return new Uint8Array(Buffer.concat(parts));
  }

  /**
   * Streams a blob, verified: fails at the end on a size or digest mismatch and never yields more
   * than `size` bytes. A dropped connection is resumed with `Range: bytes=N-(size-1)` when the
   * server advertised `Accept-Ranges: bytes`, else (and after a 416) restarted from zero, the
   * bytes already read checked against the new response.
   * `resume` continues an earlier partial read: its hasher has hashed the first `offset` bytes.
   */
  async *fetchBlob(
    repo: Repo,
    digest: Digest,
    size: number,
    o: CallOptions & { resume?: { offset: number; hasher: Hasher }; verify?: boolean } = {},
  ): AsyncGenerator<Uint8Array> {
    const op = `pull blob ${digest}`;
    const ctx = this.ctx(repo, op);
    // `verify: false` (a consumer that checks the digest itself): sizes only, no hashing.
    const verify = o.verify !== false;
    const hasher = o.resume?.hasher ?? new Hasher(digest.algorithm);
    // Hashing runs in batches on the native pool while the next chunks arrive (the JS thread
    // only moves network buffers); flushed before the hasher is read.
    const feed = verify ? new HashFeed(hasher) : undefined;
    let offset = o.resume?.offset ?? 0;
    let resumes = 0;
    let noRange = false;
    // whether the server takes ranges: from the last full response's `Accept-Ranges` (unknown
    // before the first response: a resumed partial file asks with Range; a 200 is handled anyway)
    let ranges = true;
    try {
      while (offset < size || offset === 0) {
        const headers: Record<string, string> = {};
        if (offset > 0 && ranges && !noRange) headers.range = `bytes=${offset}-${size - 1}`;
        noRange = false;
        const res = await this.send(repo, {
          method: 'GET',
          path: `/v2/${enc(repo.repository)}/blobs/${digest}`,
          headers,
          scopes: [pullScope(repo)],
          operation: op,
          signal: o.signal,
        });
        // skip: bytes of a restarted (200) response that were already read; they must hash the same
        let skip = 0;
        let prefix: Hasher | undefined;
        let checkpoint: Digest | undefined;
        if (res.status === 206 && offset > 0) {
          const cr = contentRange(header(res, 'content-range'));
          if (!cr || cr.start !== offset || cr.end !== size - 1 || (cr.total !== undefined && cr.total !== size)) {
            // not the range we asked for: restart from zero
            await dump(res);
            noRange = true;
            continue;
          }
        } else if (res.status === 416 && headers.range) {
          // the server will not serve that range after all: restart from zero
          await dump(res);
          ranges = false;
          continue;
        } else if (res.status === 200) {
          // a server that does not advertise ranges is not asked for one: a drop restarts from zero
          ranges = /\bbytes\b/i.test(header(res, 'accept-ranges') ?? '');
          if (offset > 0) {
            skip = offset;
            if (feed) {
              prefix = new Hasher(digest.algorithm);
              await feed.flush();
              checkpoint = hasher.clone().digest();
            }
          }
        } else {
          await failFor(res, ctx);
        }
        try {
          let pos = 0;
          for await (const chunk of res.body) {
            let c = new Uint8Array(
              (chunk as Buffer).buffer,
              (chunk as Buffer).byteOffset,
              (chunk as Buffer).byteLength,
            );
            if (pos < skip) {
              const take = Math.min(skip - pos, c.length);
              prefix?.update(c.subarray(0, take));
              pos += take;
              c = c.subarray(take);
              if (pos === skip && prefix && !prefix.clone().digest().equals(checkpoint!)) {
                throw new RegistryError(
                  'ERR_DIGEST_MISMATCH',
                  `blob ${digest}: restarted download differs from the bytes already read`,
                  ctx,
                );
              }
              if (c.length === 0) continue;
            }
            if (offset + c.length > size) {
              throw new RegistryError(
                'ERR_SIZE_MISMATCH',
                `blob ${digest}: size mismatch (expected ${size}, got more)`,
                ctx,
              );
            }
            const wait = feed?.push(c);
            if (wait) await wait;
            offset += c.length;
            this.progress('pull', repo, digest, offset, size);
            yield c;
          }
          res.release();
          break;
        } catch (e) {
          res.body.destroy();
          res.release();
          if (e instanceof RegistryError) throw e;
          if (o.signal?.aborted) throw new RegistryError('ERR_ABORTED', 'aborted', { ...ctx, cause: e });
          if (resumes++ >= this.maxResumes) {
            throw new RegistryError(
              'ERR_REGISTRY_NETWORK',
              `blob ${digest}: connection lost at byte ${offset} of ${size}: ${(e as Error).message}`,
              { ...ctx, cause: e },
            );
          }
          // a dropped connection: ask for the rest with Range from `offset`
        }
      }
      await feed?.flush();
    } finally {
      await feed?.settle();
    }
    if (verify) this.finish(hasher, offset, size, digest, ctx);
    else if (offset !== size)
      throw new RegistryError(
        'ERR_SIZE_MISMATCH',
        `blob ${digest}: size mismatch (expected ${size}, got ${offset})`,
        ctx,
      );
  }

  private finish(h: Hasher, got: number, size: number, digest: Digest, ctx: ReturnType<RegistryClient['ctx']>): void {
    if (got !== size)
      throw new RegistryError('ERR_SIZE_MISMATCH', `blob ${digest}: size mismatch (expected ${size}, got ${got})`, ctx);
    const actual = h.digest();
    if (!actual.equals(digest)) {
      throw new RegistryError('ERR_DIGEST_MISMATCH', `blob: digest mismatch (expected ${digest}, got ${actual})`, ctx);
    }
  }

  private progress(direction: 'pull' | 'push', repo: Repo, digest: Digest, bytes: number, total: number): void {
    this.options.onProgress?.({
      direction,
      registry: repo.registry,
      repository: repo.repository,
      digest: digest.toString(),
      bytes,
      total,
    });
  }

  /**
   * Downloads a blob to `target`, resumable across process runs: bytes land in
   * `<ingestDir>/<algorithm>-<hex>.partial` (kept when the transfer fails on the network); a
   * later call re-hashes that partial file and asks for the rest with `Range`. The file is
   * verified, fsynced and renamed to `target`; on a digest or size mismatch the partial is
   * deleted. A no-op when `target` exists.
   */
  async downloadBlob(
    repo: Repo,
    digest: Digest,
    size: number,
    target: string,
    o: CallOptions & { ingestDir?: string } = {},
  ): Promise<{ resumedFrom: number }> {
    if (
      await stat(target).then(
        () => true,
        () => false,
      )
    )
      return { resumedFrom: size };
    const ingestDir = o.ingestDir ?? path.join(path.dirname(target), '.stevedore-ingest');
    await mkdir(ingestDir, { recursive: true, mode: 0o700 });
    const partial = path.join(ingestDir, `${digest.algorithm}-${digest.hex}.partial`);
    const hasher = new Hasher(digest.algorithm);
    let offset = 0;
    const st = await stat(partial).catch(() => undefined);
    if (st?.isFile() && st.size <= size) {
      for await (const c of createReadStream(partial)) hasher.update(c as Buffer);
      offset = hasher.size;
    } else if (st) {
      await rm(partial, { force: true });
    }
    const resumedFrom = offset;
    const fh = await open(partial, offset > 0 ? 'r+' : 'w', 0o600);
    let ok = false;
    let keep = true;
    try {
      let pos = offset;
      for await (const c of this.fetchBlob(repo, digest, size, { ...o, resume: { offset, hasher } })) {
        await fh.write(c, 0, c.length, pos);
        pos += c.length;
      }
      await fh.truncate(pos);
      await fh.sync();
      ok = true;
    } catch (e) {
      if (e instanceof RegistryError && (e.code === 'ERR_DIGEST_MISMATCH' || e.code === 'ERR_SIZE_MISMATCH'))
        keep = false;
      throw e;
    } finally {
      await fh.close();
      if (!ok && !keep) await rm(partial, { force: true });
    }
    await mkdir(path.dirname(target), { recursive: true });
    await rename(partial, target);
    const dh = await open(path.dirname(target), 'r');
    try {
      await dh.sync();
    } catch {
    } finally {
      await dh.close();
    }
    return { resumedFrom };
  }

  /**
   * Pushes a blob unless the repository has it: a cross-repository mount when `mountFrom` names
   * a repository on the same registry (falling back to an upload when the registry declines),
   * else one PUT (up to `chunkSize`) or POST → PATCH… → PUT. `source` is verified against
   * `digest` and `size` before the final PUT.
   */
  async pushBlob(
    repo: Repo,
    digest: Digest,
    size: number,
    source: () => AsyncIterable<Uint8Array>,
    o: CallOptions & { mountFrom?: string } = {},
  ): Promise<'exists' | 'mounted' | 'uploaded'> {
    const op = `push blob ${digest}`;
    const ctx = this.ctx(repo, op);
    if (await this.blobExists(repo, digest, { ...o, push: true })) {
      this.progress('push', repo, digest, size, size);
      return 'exists';
    }
    const scopes = [pushScope(repo)];
    let start = `/v2/${enc(repo.repository)}/blobs/uploads/`;
    if (o.mountFrom && o.mountFrom !== repo.repository) {
      scopes.push(`repository:${o.mountFrom}:pull`);
      start += `?mount=${encodeURIComponent(digest.toString())}&from=${encodeURIComponent(o.mountFrom)}`;
    }
    const res = await this.send(repo, { method: 'POST', path: start, scopes, operation: op, signal: o.signal });
    if (res.status === 201) {
      await dump(res);
      this.progress('push', repo, digest, size, size);
      return 'mounted';
    }
    if (res.status !== 202) await failFor(res, ctx);
    await dump(res);
    let location = this.location(res, ctx);
    const stream = source();
    // A stream that verifies itself against this digest and size (a layer's `compressed()`)
    // throws at its end on a mismatch; it is not hashed a second time here.
    const self = verifiedAs(stream);
    const trusted = self?.digest.equals(digest) && self?.size === size;
    const hasher = trusted ? undefined : new Hasher(digest.algorithm);
    let sent = 0;
    const verify = () => {
      if (sent !== size)
        throw new RegistryError(
          'ERR_SIZE_MISMATCH',
          `blob ${digest}: size mismatch (expected ${size}, got ${sent})`,
          ctx,
        );
      hasher?.digest().verify(digest, `push blob`);
    };
    const cancel = async () => {
      await this.send(repo, { method: 'DELETE', path: location.toString(), scopes, operation: op, retry: false })
        .then(dump)
        .catch(() => {});
    };
    const commit = async () => {
      const u = new URL(location);
      u.searchParams.set('digest', digest.toString());
      const put = await this.send(repo, {
        method: 'PUT',
        path: u.toString(),
        scopes,
        operation: op,
        signal: o.signal,
        retry: false,
      });
      if (put.status !== 201) await failFor(put, ctx);
      await dump(put);
      this.progress('push', repo, digest, size, size);
      return 'uploaded' as const;
    };
    try {
      if (size <= this.chunkSize) {
        // monolithic: one PUT with the whole (verified) blob
        const parts: Uint8Array[] = [];
        for await (const c of stream) {
          hasher?.update(c);
          sent += c.length;
          if (sent > size) break;
          parts.push(c);
        }
        verify();
        const u = new URL(location);
        u.searchParams.set('digest', digest.toString());
        const put = await this.send(repo, {
          method: 'PUT',
          path: u.toString(),
          headers: { 'content-type': 'application/octet-stream' },
          body: parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts, sent),
          scopes,
          operation: op,
          signal: o.signal,
        });
        if (put.status !== 201) await failFor(put, ctx);
        await dump(put);
        this.progress('push', repo, digest, size, size);
        return 'uploaded';
      }
      if (!this.chunkedUpload) {
        // streamed: the whole blob in one PATCH (no buffering, no round trip per chunk), checked
        // against size and digest once it is sent and before the PUT ?digest= that commits it
        let failure: unknown;
        let reported = 0;
        const body = async function* (this: RegistryClient) {
          try {
            for await (const c of stream) {
              hasher?.update(c);
              sent += c.length;
              if (sent > size)
                throw new RegistryError(
                  'ERR_SIZE_MISMATCH',
                  `blob ${digest}: size mismatch (expected ${size}, got more)`,
                  ctx,
                );
              if (sent - reported >= this.chunkSize) {
                reported = sent;
                this.progress('push', repo, digest, sent, size);
              }
              yield c;
            }
          } catch (e) {
            failure = e;
            throw e;
          }
        }.call(this);
        let patch: Response;
        try {
          patch = await this.send(repo, {
            method: 'PATCH',
            path: location.toString(),
            headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
            body,
            scopes,
            operation: op,
            signal: o.signal,
            retry: false,
          });
        } catch (e) {
          throw failure ?? e;
        }
        if (failure) {
          await dump(patch);
          throw failure;
        }
        if (patch.status !== 202) await failFor(patch, ctx);
        await dump(patch);
        verify();
        location = this.location(patch, ctx);
        return await commit();
      }
      // chunked: PATCH chunkSize pieces, then PUT ?digest=
      let buf: Uint8Array[] = [];
      let buffered = 0;
      const flush = async () => {
        if (buffered === 0) return;
        const body = buf.length === 1 ? (buf[0] as Uint8Array) : Buffer.concat(buf, buffered);
        const from = sent - buffered;
        const patch = await this.send(repo, {
          method: 'PATCH',
          path: location.toString(),
          headers: { 'content-type': 'application/octet-stream', 'content-range': `${from}-${from + body.length - 1}` },
          body,
          scopes,
          operation: op,
          signal: o.signal,
          retry: false,
        });
        if (patch.status !== 202) await failFor(patch, ctx);
        await dump(patch);
        const range = /^(?:bytes=)?0-(\d+)$/.exec(header(patch, 'range') ?? '');
        if (range && Number(range[1]) !== sent - 1) {
          throw new RegistryError(
            'ERR_REGISTRY_PROTOCOL',
            `upload: registry has bytes 0-${range[1]}, expected 0-${sent - 1}`,
            ctx,
          );
        }
        location = this.location(patch, ctx);
        this.progress('push', repo, digest, sent, size);
        buf = [];
        buffered = 0;
      };
      for await (const c of stream) {
        hasher?.update(c);
        sent += c.length;
        if (sent > size) break;
        let rest = c;
        while (rest.length > 0) {
          const take = Math.min(this.chunkSize - buffered, rest.length);
          buf.push(rest.subarray(0, take));
          buffered += take;
          rest = rest.subarray(take);
          if (buffered === this.chunkSize) {
            // `sent` counts the whole source chunk; flush accounts by what is buffered
            const pending = rest.length;
            sent -= pending;
            await flush();
            sent += pending;
          }
        }
      }
      verify();
      await flush();
      return await commit();
    } catch (e) {
      await cancel();
      throw e;
    }
  }

  private location(res: Response, ctx: ReturnType<RegistryClient['ctx']>): URL {
    const loc = header(res, 'location');
    if (!loc) throw new RegistryError('ERR_REGISTRY_PROTOCOL', 'upload response without Location', ctx);
    const u = new URL(loc, res.url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      throw new RegistryError('ERR_REGISTRY_PROTOCOL', `bad upload Location ${loc}`, ctx);
    return u;
  }

  /** One page of tags; `next` is the `last` to ask for the next page (from the `Link` header). */
  async tagsPage(
    repo: Repo,
    o: CallOptions & { n?: number; last?: string } = {},
  ): Promise<{ tags: string[]; next: string | undefined }> {
    const q = new URLSearchParams();
    if (o.n !== undefined) q.set('n', String(o.n));
    if (o.last !== undefined) q.set('last', o.last);
    const qs = q.toString();
    return this.page(
      repo,
      `/v2/${enc(repo.repository)}/tags/list${qs ? `?${qs}` : ''}`,
      'tags',
      [pullScope(repo)],
      `list tags`,
      o,
    );
  }

  /** All tags (following `Link` pagination). */
  async listTags(repo: Repo, o: CallOptions & { pageSize?: number } = {}): Promise<string[]> {
    const out: string[] = [];
    let last: string | undefined;
    for (let i = 0; i < 10_000; i++) {
      const p = await this.tagsPage(repo, {
        ...o,
        ...(o.pageSize ? { n: o.pageSize } : {}),
        ...(last !== undefined ? { last } : {}),
      });
      out.push(...p.tags);
      if (p.next === undefined || p.tags.length === 0) break;
      last = p.next;
    }
    return out;
  }

  /** The repositories of a registry (`/v2/_catalog`, paginated). */
  async catalog(registry: string, o: CallOptions & { pageSize?: number } = {}): Promise<string[]> {
    const out: string[] = [];
    let last: string | undefined;
    for (let i = 0; i < 10_000; i++) {
      const q = new URLSearchParams();
      if (o.pageSize) q.set('n', String(o.pageSize));
      if (last !== undefined) q.set('last', last);
      const qs = q.toString();
      const p = await this.page(
        { registry },
        `/v2/_catalog${qs ? `?${qs}` : ''}`,
        'repositories',
        ['registry:catalog:*'],
        'catalog',
        o,
      );
      out.push(...p.tags);
      if (p.next === undefined || p.tags.length === 0) break;
      last = p.next;
    }
    return out;
  }

  private async page(
    r: Repo | { registry: string; repository?: undefined },
    p: string,
    field: 'tags' | 'repositories',
    scopes: string[],
    op: string,
    o: CallOptions,
  ): Promise<{ tags: string[]; next: string | undefined }> {
    const res = await this.send(r, { method: 'GET', path: p, scopes, operation: op, signal: o.signal });
    if (res.status !== 200) await failFor(res, this.ctx(r, op));
    const link = header(res, 'link');
    const body = await readBody(res, this.maxManifest, op, this.ctx(r, op));
    let v: Record<string, unknown>;
    try {
      v = JSON.parse(Buffer.from(body).toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new RegistryError('ERR_REGISTRY_PROTOCOL', `${op}: response is not JSON`, this.ctx(r, op));
    }
    const list = Array.isArray(v[field])
      ? (v[field] as unknown[]).filter((t): t is string => typeof t === 'string')
      : [];
    let next: string | undefined;
    const m = link ? /<([^>]*)>\s*;\s*rel="?next"?/.exec(link) : null;
    if (m) next = new URL(m[1]!, 'http://x').searchParams.get('last') ?? list[list.length - 1];
    return { tags: list, next };
  }

  /**
   * The referrers of a manifest (OCI 1.1 `/v2/<name>/referrers/<digest>`), optionally filtered
   * by artifact type; falls back to the `<alg>-<hex>` tag schema when the API is missing.
   */
  async referrers(repo: Repo, digest: Digest, o: CallOptions & { artifactType?: string } = {}): Promise<Descriptor[]> {
    const op = `referrers ${digest}`;
    const ctx = this.ctx(repo, op);
    const qs = o.artifactType ? `?artifactType=${encodeURIComponent(o.artifactType)}` : '';
    const res = await this.send(repo, {
      method: 'GET',
      path: `/v2/${enc(repo.repository)}/referrers/${digest}${qs}`,
      headers: { accept: OCI_INDEX },
      scopes: [pullScope(repo)],
      operation: op,
      signal: o.signal,
    });
    let manifests: Descriptor[];
    if (res.status === 200) {
      const raw = await readBody(res, this.maxManifest, 'referrers index', ctx);
      const m = parseManifest(raw, OCI_INDEX, { maxBytes: this.maxManifest });
      manifests = isImageIndex(m) ? m.manifests : [];
    } else if (res.status === 404) {
      await dump(res);
      const tagRef = parseReference(
        `${repo.registry}/${repo.repository}:${digest.algorithm}-${digest.hex}`.slice(0, 1000),
      );
      try {
        const m = await this.getManifest(tagRef, o);
        manifests = isImageIndex(m.manifest) ? m.manifest.manifests : [];
      } catch (e) {
        if (e instanceof RegistryError && e.status === 404) return [];
        throw e;
      }
    } else {
      return failFor(res, ctx);
    }
    return o.artifactType ? manifests.filter((d) => d.artifactType === o.artifactType) : manifests;
  }

  async close(): Promise<void> {
    await this.transport.close();
  }
}
