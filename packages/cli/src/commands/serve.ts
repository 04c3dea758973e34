import { garbageCollect, startServer } from '@stevedore/server';
import type { Output } from '../output.js';

export interface ServeOptions {
  addr: string;
  htpasswd?: string;
  tlsCert?: string;
  tlsKey?: string;
  readOnly?: boolean;
  cors?: string;
  fsync?: boolean;
}

/**
 * `stevedore serve ROOT`: an OCI distribution registry over ROOT (the reference registry's
 * filesystem layout, so either can serve the other's directory). Runs until SIGINT/SIGTERM,
 * then closes gracefully (requests in flight finish).
 */
export async function serveCommand(root: string, o: ServeOptions, out: Output): Promise<void> {
  if ((o.tlsCert && !o.tlsKey) || (!o.tlsCert && o.tlsKey)) {
    const { StevedoreError } = await import('@stevedore/core');
    throw new StevedoreError('ERR_USAGE', '--tls-cert and --tls-key go together');
  }
  const server = await startServer({
    root,
    addr: o.addr,
    htpasswd: o.htpasswd,
    tls: o.tlsCert && o.tlsKey ? { cert: o.tlsCert, key: o.tlsKey } : undefined,
    readOnly: o.readOnly,
    corsOrigin: o.cors,
    log: !out.quiet,
    fsync: o.fsync !== false,
  });
  out.data({ url: server.url, root }, () => `serving ${root} at ${server.url} (Ctrl-C stops)`);
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

/** `stevedore garbage-collect ROOT [--dry-run]`: mark from every manifest, sweep the rest. */
export async function garbageCollectCommand(root: string, o: { dryRun?: boolean }, out: Output): Promise<void> {
  const r = await garbageCollect(root, { dryRun: o.dryRun, log: (l) => out.log(l) });
  out.data(
    { marked: r.marked.length, deleted: r.deleted.map(String), dryRun: Boolean(o.dryRun) },
    () =>
      `${r.marked.length} blobs marked, ${r.deleted.length} blobs ${o.dryRun ? 'eligible for deletion' : 'deleted'}`,
  );
}
