/**
 * What the image commands share: usage errors, reference and platform parsing, the registry
 * client (insecure registries, docker's credentials), and one-line error messages.
 */
import { StevedoreError } from '@stevedore/core';
import { type Platform, parsePlatform, parseReference, type Reference } from '@stevedore/image';
import { RegistryClient, RegistryError } from '@stevedore/registry';

/** Options every registry-facing command takes. */
export interface RegistryOpts {
  insecureRegistry?: string[];
  platform?: string;
}

/** A command-line mistake: exit code 2. */
export function usage(message: string): StevedoreError {
  return new StevedoreError('ERR_USAGE', message);
}

/** Parses an image reference (a `docker://` prefix is allowed); a bad one is a usage error. */
export function reference(text: string, options: { defaultTag?: boolean } = {}): Reference {
  const t = text.startsWith('docker://') ? text.slice('docker://'.length) : text;
  try {
    return parseReference(t, options.defaultTag === false ? { defaultTag: false } : {});
  } catch (e) {
    throw usage(`invalid reference ${JSON.stringify(t)}: ${(e as Error).message}`);
  }
}

/** A repository (`host/name`, no tag or digest). */
export function repository(text: string): Reference {
  const ref = reference(text, { defaultTag: false });
  if (ref.tag || ref.digest) throw usage(`${text}: give a repository without a tag or digest`);
  return ref;
}

/** A registry host (`host[:port]`), as `login`/`catalog` take it. */
export function registryHost(text: string): string {
  let t = text.replace(/^https?:\/\//, '').replace(/^docker:\/\//, '');
  t = t.replace(/\/+$/, '');
  if (t === 'docker.io' || t === 'index.docker.io' || t === 'registry-1.docker.io') return 'docker.io';
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$/.test(t)) {
    throw usage(`invalid registry ${JSON.stringify(text)}: expected HOST[:PORT], e.g. ghcr.io or localhost:5000`);
  }
  return t;
}

export function platform(text: string | undefined): Platform | undefined {
  if (text === undefined) return undefined;
  try {
    return parsePlatform(text);
  } catch (e) {
    throw usage(`invalid --platform ${JSON.stringify(text)}: ${(e as Error).message} (expected os/arch[/variant])`);
  }
}

/** The registry client: docker's config.json credentials (DOCKER_CONFIG), insecure registries from flags. */
export function registryClient(o: RegistryOpts, onProgress?: RegistryClient['options']['onProgress']): RegistryClient {
  return new RegistryClient({
    insecureRegistries: o.insecureRegistry ?? [],
    retry: { retries: 2, baseDelayMs: 100 },
    userAgent: 'stevedore/0.1.0',
    ...(onProgress ? { onProgress } : {}),
  });
}

/** Human sizes, as docker prints them. */
export function humanSize(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  do {
    v /= 1000;
    i++;
  } while (v >= 1000 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
}

/**
 * The one line a failure prints: what failed and what to do. Registry errors already carry the
 * operation, where, the HTTP status, the registry's codes and a hint; we add hints for the
 * common cases the library leaves open.
 */
export function errorLine(e: unknown): string {
  if (e instanceof RegistryError) {
    if (e.code === 'ERR_REGISTRY_NETWORK') {
      const cause = e.cause instanceof Error ? e.cause.message : e.message;
      return (
        `${e.operation}: cannot connect to ${e.registry} (${oneLine(cause)}) — check that the registry is running ` +
        `and the address is right`
      );
    }
    if (e.has('MANIFEST_UNKNOWN') || (e.code === 'ERR_REGISTRY_NOT_FOUND' && e.operation.startsWith('pull '))) {
      const repo = e.repository ? `${e.registry}/${e.repository}` : e.registry;
      return `${oneLine(e.message)} — check the name and tag (\`stevedore tags ${repo}\` lists the tags)`;
    }
    if (e.has('NAME_UNKNOWN')) {
      return `${oneLine(e.message)} — check the repository name (\`stevedore catalog ${e.registry}\` lists them)`;
    }
    if (e.code === 'ERR_REGISTRY_UNAUTHORIZED' && !e.hint) {
      return `${oneLine(e.message)} — run \`stevedore login ${e.registry}\``;
    }
    return oneLine(e.message);
  }
  if (e instanceof StevedoreError && e.code === 'ERR_IMAGE_NOT_FOUND') return oneLine(e.message);
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EPIPE') return 'output closed';
    return oneLine(e.message);
  }
  return oneLine(String(e));
}

const oneLine = (s: string) => s.replace(/\s*\n\s*/g, ' ').trim();
