/** Registry reads: `manifest`, `blob`, `tags`, `catalog`. */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Digest } from '@stevedore/core';
import { formatPlatform, isImageIndex, type Reference, selectPlatform } from '@stevedore/image';
import { dump, type FetchedManifest, type RegistryClient, RegistryError } from '@stevedore/registry';
import type { Output } from '../output.js';
import {
  platform as parsePlatformOpt,
  type RegistryOpts,
  reference,
  registryClient,
  registryHost,
  repository,
  usage,
} from './common.js';

async function withClient<T>(o: RegistryOpts, f: (c: RegistryClient) => Promise<T>): Promise<T> {
  const c = registryClient(o);
  try {
    return await f(c);
  } finally {
    await c.close();
  }
}

/** Writes bytes to stdout, waiting for drain (pipes to `head`, big blobs). */
async function writeStdout(chunk: Uint8Array): Promise<void> {
  if (!process.stdout.write(chunk)) await once(process.stdout, 'drain');
}

/** The manifest `ref` names; with a platform, an index is resolved to that platform's manifest. */
export async function fetchManifest(
  c: RegistryClient,
  ref: Reference,
  platformText: string | undefined,
): Promise<FetchedManifest> {
  const wanted = parsePlatformOpt(platformText);
  let m = await c.getManifest(ref);
  // Nested indexes are followed (at most a few levels).
  for (let depth = 0; wanted && isImageIndex(m.manifest) && depth < 4; depth++) {
    const d = selectPlatform(m.manifest, wanted);
    if (!d) {
      const have = m.manifest.manifests.flatMap((x) => (x.platform ? [formatPlatform(x.platform)] : [])).join(', ');
      throw new RegistryError('ERR_PLATFORM_NOT_FOUND', `no manifest for ${formatPlatform(wanted)}`, {
        registry: ref.registry,
        repository: ref.repository,
        operation: `pull ${ref}`,
        hint: `the index has ${have || 'no platforms'}`,
      });
    }
    m = await c.getManifest(ref.withDigest(d.digest));
  }
  return m;
}

export async function manifestCommand(text: string, o: RegistryOpts, out: Output): Promise<void> {
  const ref = reference(text);
  await withClient(o, async (c) => {
    const m = await fetchManifest(c, ref, o.platform);
    if (out.json) {
      out.data(
        {
          reference: ref.toString(),
          digest: m.digest.toString(),
          mediaType: m.mediaType,
          size: m.raw.length,
          manifest: JSON.parse(Buffer.from(m.raw).toString('utf8')),
        },
        () => '',
      );
    } else {
      // The exact bytes the digest is over (no newline added).
      await writeStdout(m.raw);
    }
  });
}

/** `blob REPO@DIGEST` or `blob REPO DIGEST`. */
export async function blobCommand(
  first: string,
  second: string | undefined,
  o: RegistryOpts & { output?: string },
  out: Output,
): Promise<void> {
  let repo: Reference;
  let digest: Digest;
  const parseDigest = (t: string) => {
    try {
      return Digest.parse(t);
    } catch (e) {
      throw usage(`invalid digest ${JSON.stringify(t)}: ${(e as Error).message}`);
    }
  };
  if (second !== undefined) {
    repo = repository(first);
    digest = parseDigest(second);
  } else {
    const at = first.indexOf('@');
    if (at < 0) throw usage(`${first}: expected REPO@DIGEST (or REPO DIGEST)`);
    repo = repository(first.slice(0, at));
    digest = parseDigest(first.slice(at + 1));
  }
  if (!o.output && out.json) throw usage('--json needs -o FILE (the blob itself goes to stdout otherwise)');
  await withClient(o, async (c) => {
    const size = await blobSize(c, repo, digest);
    if (o.output) {
      const partial = `${o.output}.partial`;
      const file = createWriteStream(partial);
      try {
        for await (const chunk of c.fetchBlob(repo, digest, size)) {
          if (!file.write(chunk)) await once(file, 'drain');
        }
        file.end();
        await once(file, 'finish');
        await rename(partial, o.output);
      } catch (e) {
        file.destroy();
        await rm(partial, { force: true });
        throw e;
      }
      if (out.json) out.data({ repository: repo.name, digest: digest.toString(), size, path: o.output }, () => '');
      else out.log(`wrote ${size} bytes (${digest}) to ${o.output}`);
    } else {
      for await (const chunk of c.fetchBlob(repo, digest, size)) await writeStdout(chunk);
    }
  });
}

/** The size of a blob from a HEAD (a 404 says the blob is unknown, with a hint). */
async function blobSize(c: RegistryClient, repo: Reference, digest: Digest): Promise<number> {
  if (!(await c.blobExists(repo, digest))) {
    throw new RegistryError('ERR_REGISTRY_NOT_FOUND', `blob ${digest} not found`, {
      registry: repo.registry,
      repository: repo.repository,
      operation: 'pull blob',
      errors: [{ code: 'BLOB_UNKNOWN' }],
      hint: `check the digest (\`stevedore manifest ${repo.name}:TAG\` lists the blobs of an image)`,
    });
  }
  const res = await c.transport.send(repo.registry, {
    method: 'HEAD',
    path: `/v2/${repo.repository}/blobs/${digest}`,
    scopes: [`repository:${repo.repository}:pull`],
    repository: repo.repository,
    operation: `head blob ${digest}`,
  });
  const length = res.headers['content-length'];
  await dump(res);
  const size = Number(Array.isArray(length) ? length[0] : length);
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new RegistryError('ERR_REGISTRY_PROTOCOL', `blob ${digest}: no Content-Length on HEAD`, {
      registry: repo.registry,
      repository: repo.repository,
      operation: 'pull blob',
    });
  }
  return size;
}

export async function tagsCommand(text: string, o: RegistryOpts & { pageSize?: string }, out: Output): Promise<void> {
  const repo = repository(text);
  const tags = await withClient(o, (c) => c.listTags(repo, { pageSize: pageSize(o.pageSize) }));
  if (out.json || tags.length) out.data({ repository: repo.name, tags }, () => tags.join('\n'));
}

export async function catalogCommand(
  text: string,
  o: RegistryOpts & { pageSize?: string },
  out: Output,
): Promise<void> {
  const registry = registryHost(text);
  const repositories = await withClient(o, (c) => c.catalog(registry, { pageSize: pageSize(o.pageSize) }));
  if (out.json || repositories.length) out.data({ registry, repositories }, () => repositories.join('\n'));
}

function pageSize(text: string | undefined): number {
  if (text === undefined) return 100;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw usage(`--page-size must be a positive integer, got ${text}`);
  return n;
}
