import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { StevedoreError } from '@stevedore/core';
import { garbageCollect, parseDuration, startServer } from '@stevedore/server';
import type { Output } from '../output.js';

export interface ServeOptions {
  addr: string;
  htpasswd?: string;
  tlsCert?: string;
  tlsKey?: string;
  readOnly?: boolean;
  cors?: string;
  fsync?: boolean;
  tokenRealm?: string;
  tokenService?: string;
  tokenIssuer?: string;
  tokenRootCert?: string;
  /** Go-style durations (`168h`, `30m`, `7d`). */
  uploadPurgeAge?: string;
  uploadPurgeInterval?: string;
  /** false with --no-upload-purge. */
  uploadPurge?: boolean;
  ui?: boolean;
  uiDir?: string;
}

const TOKEN_FLAGS = ['tokenRealm', 'tokenService', 'tokenIssuer', 'tokenRootCert'] as const;
const flag = (k: string) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
const usage = (message: string) => new StevedoreError('ERR_USAGE', message);

/**
 * The web inspector's built page: `@stevedore/web`'s `dist`, resolved like a dependency from
 * `from` (this module by default). Throws a clear error when it is not installed or not built.
 */
export function locateWebDist(from: string = import.meta.url): string {
  let pkg: string;
  try {
    pkg = createRequire(from).resolve('@stevedore/web/package.json');
  } catch {
    throw new StevedoreError(
      'ERR_NOT_FOUND',
      'the web inspector (@stevedore/web) is not installed here: pass --ui-dir DIR (its built dist)',
    );
  }
  const dist = path.join(path.dirname(pkg), 'dist');
  if (!existsSync(path.join(dist, 'index.html'))) {
    throw new StevedoreError(
      'ERR_NOT_FOUND',
      `the web inspector is not built (${dist} has no index.html): run \`npm run -w packages/web build\` or pass --ui-dir`,
    );
  }
  return dist;
}

function uiDir(o: ServeOptions): string | undefined {
  if (o.uiDir !== undefined) {
    if (!existsSync(path.join(o.uiDir, 'index.html'))) {
      throw new StevedoreError(
        'ERR_NOT_FOUND',
        `--ui-dir ${o.uiDir} has no index.html (build the web inspector first)`,
      );
    }
    return o.uiDir;
  }
  return o.ui ? locateWebDist() : undefined;
}

function duration(text: string, name: string): number {
  try {
    return parseDuration(text);
  } catch (e) {
    throw usage(`${name}: ${(e as Error).message}`);
  }
}

/**
 * `stevedore serve ROOT`: an OCI distribution registry over ROOT (the reference registry's
 * filesystem layout, so either can serve the other's directory). Runs until SIGINT/SIGTERM,
 * then closes gracefully (requests in flight finish).
 */
export async function serveCommand(root: string, o: ServeOptions, out: Output): Promise<void> {
  if ((o.tlsCert && !o.tlsKey) || (!o.tlsCert && o.tlsKey)) throw usage('--tls-cert and --tls-key go together');
  const tokenSet = TOKEN_FLAGS.filter((k) => o[k] !== undefined);
  if (tokenSet.length > 0 && tokenSet.length < TOKEN_FLAGS.length) {
    const missing = TOKEN_FLAGS.filter((k) => o[k] === undefined).map(flag);
    throw usage(`token auth needs ${TOKEN_FLAGS.map(flag).join(', ')}: missing ${missing.join(', ')}`);
  }
  if (tokenSet.length > 0 && o.htpasswd) throw usage('--htpasswd and --token-* exclude each other: choose one');
  const staticDir = uiDir(o);
  const server = await startServer({
    root,
    addr: o.addr,
    htpasswd: o.htpasswd,
    tls: o.tlsCert && o.tlsKey ? { cert: o.tlsCert, key: o.tlsKey } : undefined,
    readOnly: o.readOnly,
    corsOrigin: o.cors,
    token:
      tokenSet.length > 0
        ? { realm: o.tokenRealm!, service: o.tokenService!, issuer: o.tokenIssuer!, rootCertBundle: o.tokenRootCert! }
        : undefined,
    uploadPurging:
      o.uploadPurge === false
        ? false
        : {
            maxAgeMs: duration(o.uploadPurgeAge ?? '168h', '--upload-purge-age'),
            intervalMs: duration(o.uploadPurgeInterval ?? '24h', '--upload-purge-interval'),
          },
    staticDir,
    log: !out.quiet,
    fsync: o.fsync !== false,
  });
  out.data({ url: server.url, root, ...(staticDir ? { ui: staticDir } : {}) }, () =>
    staticDir
      ? `serving ${root} at ${server.url}, the web inspector at ${server.url}/ (Ctrl-C stops)`
      : `serving ${root} at ${server.url} (Ctrl-C stops)`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void server.close().then(resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

/** `stevedore garbage-collect ROOT [--dry-run] [--purge-uploads AGE]`: mark from every manifest, sweep the rest. */
export async function garbageCollectCommand(
  root: string,
  o: { dryRun?: boolean; purgeUploads?: string },
  out: Output,
): Promise<void> {
  const uploadMaxAgeMs = o.purgeUploads === undefined ? undefined : duration(o.purgeUploads, '--purge-uploads');
  const r = await garbageCollect(root, { dryRun: o.dryRun, uploadMaxAgeMs, log: (l) => out.log(l) });
  out.data(
    {
      marked: r.marked.length,
      deleted: r.deleted.map(String),
      dryRun: Boolean(o.dryRun),
      ...(uploadMaxAgeMs === undefined ? {} : { purgedUploads: r.purgedUploads }),
    },
    () =>
      `${r.marked.length} blobs marked, ${r.deleted.length} blobs ${o.dryRun ? 'eligible for deletion' : 'deleted'}`,
  );
}
