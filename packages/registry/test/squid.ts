// A real forward proxy (Debian's squid) on a loopback port, with its own hosts file (names only
// the proxy resolves) and an access log the tests read.
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  getFreePort,
  LOOPBACK,
  makeTempDir,
  removeTempDir,
  spawnDaemon,
  track,
  waitForPort,
} from '../../../test/harness/index.js';

export const SQUID = process.env.STEVEDORE_SQUID ?? '/usr/sbin/squid';

export interface Squid {
  /** http://127.0.0.1:PORT */
  url: string;
  /** Access log lines so far (method, URL, result). */
  log(): string[];
  stop(): Promise<void>;
}

/** Starts squid; `hosts` maps names to addresses for the proxy's resolver only. */
export async function startSquid(hosts: Record<string, string> = {}): Promise<Squid> {
  const dir = makeTempDir('squid');
  // squid started as root drops to its own user: it must be able to write its logs here
  chmodSync(dir, 0o777);
  const port = await getFreePort();
  const f = (n: string) => path.join(dir, n);
  writeFileSync(
    f('hosts'),
    Object.entries(hosts)
      .map(([n, ip]) => `${ip} ${n}\n`)
      .join(''),
  );
  writeFileSync(
    f('squid.conf'),
    [
      `http_port ${LOOPBACK}:${port}`,
      // only loopback can reach the port; CONNECT to any port (registries are not on 443 here)
      'http_access allow all',
      `hosts_file ${f('hosts')}`,
      // never ask a real DNS server: unknown names fail
      `dns_nameservers ${LOOPBACK}`,
      `access_log stdio:${f('access.log')}`,
      `cache_log ${f('cache.log')}`,
      'cache_store_log none',
      `pid_filename ${f('squid.pid')}`,
      `coredump_dir ${dir}`,
      'cache deny all',
      'pinger_enable off',
      'shutdown_lifetime 0 seconds',
      '',
    ].join('\n'),
  );
  const daemon = spawnDaemon(SQUID, ['-N', '-f', f('squid.conf')], { logFile: f('stdout.log'), cwd: dir });
  const stop = async () => {
    await daemon.terminate(3000);
    removeTempDir(dir);
    untrack();
  };
  const untrack = track(`squid :${port}`, stop, () => removeTempDir(dir));
  try {
    await waitForPort(port, { timeoutMs: 15_000 });
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n${daemon.logs()}`);
  }
  return {
    url: `http://${LOOPBACK}:${port}`,
    log: () => (existsSync(f('access.log')) ? readFileSync(f('access.log'), 'utf8').split('\n').filter(Boolean) : []),
    stop,
  };
}
