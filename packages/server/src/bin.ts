#!/usr/bin/env node
// stevedore-server ROOT [--addr host:port] [--htpasswd FILE] [--tls-cert F --tls-key F] [--read-only] [--cors ORIGIN] [--quiet] [--no-fsync]
//   [--token-realm URL --token-service S --token-issuer I --token-root-cert PEM] [--upload-purge-age 168h] [--ui-dir DIR]
// stevedore-server ROOT --garbage-collect [--dry-run] [--purge-uploads AGE]
import { parseArgs } from 'node:util';
import { garbageCollect } from './gc.js';
import { parseDuration } from './purge.js';
import { startServer } from './server.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    addr: { type: 'string', default: '127.0.0.1:5000' },
    htpasswd: { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'read-only': { type: 'boolean' },
    cors: { type: 'string' },
    quiet: { type: 'boolean' },
    'no-fsync': { type: 'boolean' },
    'garbage-collect': { type: 'boolean' },
    'dry-run': { type: 'boolean' },
    'purge-uploads': { type: 'string' },
    'token-realm': { type: 'string' },
    'token-service': { type: 'string' },
    'token-issuer': { type: 'string' },
    'token-root-cert': { type: 'string' },
    'upload-purge-age': { type: 'string', default: '168h' },
    'upload-purge-interval': { type: 'string', default: '24h' },
    'ui-dir': { type: 'string' },
  },
});
const root = positionals[0];
if (!root) {
  process.stderr.write('usage: stevedore-server ROOT [--addr host:port] [...]\n');
  process.exit(2);
}
if (values['garbage-collect']) {
  const r = await garbageCollect(root, {
    dryRun: values['dry-run'],
    uploadMaxAgeMs: values['purge-uploads'] === undefined ? undefined : parseDuration(values['purge-uploads']),
    log: (l) => process.stdout.write(`${l}\n`),
  });
  process.stdout.write(
    `${r.marked.length} blobs marked, ${r.deleted.length} blobs ${values['dry-run'] ? 'eligible for deletion' : 'deleted'}\n`,
  );
} else {
  const s = await startServer({
    root,
    addr: values.addr,
    htpasswd: values.htpasswd,
    tls: values['tls-cert'] && values['tls-key'] ? { cert: values['tls-cert'], key: values['tls-key'] } : undefined,
    readOnly: values['read-only'],
    token: values['token-realm']
      ? {
          realm: values['token-realm'],
          service: values['token-service'] ?? '',
          issuer: values['token-issuer'] ?? '',
          rootCertBundle: values['token-root-cert'] ?? '',
        }
      : undefined,
    uploadPurging: {
      maxAgeMs: parseDuration(values['upload-purge-age']),
      intervalMs: parseDuration(values['upload-purge-interval']),
    },
    staticDir: values['ui-dir'],
    corsOrigin: values.cors,
    log: !values.quiet,
    fsync: !values['no-fsync'],
  });
  process.stderr.write(`listening on ${s.url}\n`);
  const stop = () => void s.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
