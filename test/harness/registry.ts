// The CNCF distribution registry (`docker-registry serve CONFIG`) on a random loopback port.
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { bins } from './bins.js';
import { makeTempDir, removeTempDir, track } from './cleanup.js';
import { type Daemon, run, spawnDaemon } from './exec.js';
import { getFreePort, httpStatus, LOOPBACK, waitFor } from './ports.js';
import { createTlsMaterials } from './tls.js';

export interface RegistryAuth {
  username: string;
  password: string;
}

export interface RegistryOptions {
  /** Require HTTP basic auth against an htpasswd file (bcrypt, the only scheme the registry takes). */
  auth?: RegistryAuth;
  /** Serve HTTPS with a fresh test CA + server cert for 127.0.0.1/localhost. */
  tls?: boolean;
  /** Use this storage root (kept at stop()); default: a dir inside the registry's temp dir. */
  storageDir?: string;
  /** Deep-merged over the generated configuration (objects merge, everything else replaces). */
  config?: Record<string, unknown>;
  /** How long to wait for /v2/ to answer. Default 15 s. */
  startTimeoutMs?: number;
}

export interface Registry {
  /** Base URL, e.g. http://127.0.0.1:41234 (no trailing slash). */
  url: string;
  /** host:port as used in image references, e.g. 127.0.0.1:41234. */
  host: string;
  port: number;
  storageDir: string;
  /** CA that signed the server certificate (tls only). */
  caCertPath?: string;
  /** The CA certificate PEM (tls only), e.g. for undici `new Agent({ connect: { ca } })`. */
  caPem?: string;
  auth?: RegistryAuth;
  /** `Authorization` header value for `auth`, if any. */
  authHeader?: string;
  /** The registry's private temp dir (config, htpasswd, certs, default storage). */
  dir: string;
  pid: number;
  logs(): string;
  /** Stop the registry and remove its temp dir. Idempotent. */
  stop(): Promise<void>;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  const dir = makeTempDir('registry');
  try {
    return await startIn(dir, opts);
  } catch (e) {
    removeTempDir(dir);
    throw e;
  }
}

async function startIn(dir: string, opts: RegistryOptions): Promise<Registry> {
  const storageDir = opts.storageDir ?? path.join(dir, 'storage');
  mkdirSync(storageDir, { recursive: true });

  let htpasswdPath: string | undefined;
  if (opts.auth) {
    // -B bcrypt, -b password from argv, -n print instead of writing a file.
    const { stdout } = await run(bins.htpasswd, ['-Bbn', opts.auth.username, opts.auth.password]);
    htpasswdPath = path.join(dir, 'htpasswd');
    writeFileSync(htpasswdPath, stdout.trim() + '\n');
  }
  const tls = opts.tls ? await createTlsMaterials({ dir: path.join(dir, 'tls') }) : undefined;

  // The free port can be taken between probe and bind; retry on a bind failure.
  for (let attempt = 1; ; attempt++) {
    const port = await getFreePort();
    const host = `${LOOPBACK}:${port}`;
    const config = deepMerge(
      {
        version: '0.1',
        log: { level: 'info', formatter: 'text', fields: { service: 'registry' } },
        storage: {
          filesystem: { rootdirectory: storageDir },
          delete: { enabled: true },
          // No background upload purging touching storage while tests run.
          maintenance: { uploadpurging: { enabled: false } },
        },
        http: {
          addr: host,
          // Fixed secret avoids the "generated random secret" warning; a random one per instance.
          secret: randomBytes(16).toString('hex'),
          headers: { 'X-Content-Type-Options': ['nosniff'] },
          ...(tls ? { tls: { certificate: tls.certPath, key: tls.keyPath } } : {}),
        },
        ...(htpasswdPath ? { auth: { htpasswd: { realm: 'stevedore-test', path: htpasswdPath } } } : {}),
        health: { storagedriver: { enabled: false } },
      },
      opts.config ?? {},
    );
    const configPath = path.join(dir, 'config.yml');
    // JSON is a subset of YAML; the registry parses it as YAML.
    writeFileSync(configPath, JSON.stringify(config, null, 2));

    // REGISTRY_* variables override the config file in distribution; keep the host's out.
    const env = Object.fromEntries(
      Object.keys(process.env)
        .filter((k) => k.startsWith('REGISTRY_') || k.startsWith('OTEL_'))
        .map((k) => [k, undefined]),
    );
    const daemon = spawnDaemon(bins.registry, ['serve', configPath], {
      env,
      cwd: dir,
      logFile: path.join(dir, 'registry.log'),
    });
    const url = `${tls ? 'https' : 'http'}://${host}`;
    try {
      // /v2/ is the API version check: 200 when open, 401 when auth is required.
      await waitFor(
        async () => {
          const s = await httpStatus(`${url}/v2/`, { ca: tls?.caPem });
          return s === 200 || s === 401 ? s : undefined;
        },
        {
          what: `registry at ${url}/v2/`,
          timeoutMs: opts.startTimeoutMs ?? 15_000,
          check: () => {
            if (daemon.hasExited()) throw new Error('registry exited');
          },
        },
      );
    } catch (e) {
      await daemon.terminate(2000);
      const logs = daemon.logs();
      if (attempt < 3 && /address already in use/.test(logs)) continue;
      throw new Error(`${(e as Error).message}\n--- registry logs ---\n${logs}`);
    }
    return handle(dir, daemon, { url, host, port, storageDir, tls, auth: opts.auth });
  }
}

function handle(
  dir: string,
  daemon: Daemon,
  h: {
    url: string;
    host: string;
    port: number;
    storageDir: string;
    tls?: { caCertPath: string; caPem: string } | undefined;
    auth?: RegistryAuth | undefined;
  },
): Registry {
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await daemon.terminate(5000);
      removeTempDir(dir);
      untrack();
    })();
    return stopping;
  };
  const untrack = track(`registry ${h.url}`, stop, () => removeTempDir(dir));
  return {
    url: h.url,
    host: h.host,
    port: h.port,
    storageDir: h.storageDir,
    caCertPath: h.tls?.caCertPath,
    caPem: h.tls?.caPem,
    auth: h.auth,
    authHeader: h.auth ? `Basic ${Buffer.from(`${h.auth.username}:${h.auth.password}`).toString('base64')}` : undefined,
    dir,
    pid: daemon.pid,
    logs: daemon.logs,
    stop,
  };
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Merge `over` into `base`: nested objects merge, other values (arrays included) replace. */
export function deepMerge(base: Obj, over: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isObj(b) && isObj(v) ? deepMerge(b, v) : v;
  }
  return out;
}
