// A private dockerd (with its own managed containerd) per test suite.
//
// Isolation: every path dockerd would otherwise share lives in the instance's temp dir: data root,
// exec root (containerd socket and state, netns, runc state), pidfile, API socket, daemon.json and
// the trust key (dockerd 20.10 writes /etc/docker/key.json unless daemon.json says otherwise;
// the key path is settable only there, not as a flag). Containers go into a cgroup parent of
// their own, so teardown can find container processes even after a crashed daemon and shim.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { bins, dockerCertsDir, tmpBase } from './bins.js';
import { makeTempDir, removeTempDir, track, updateMarker } from './cleanup.js';
import { type RunResult, run, spawnDaemon } from './exec.js';
import { waitFor } from './ports.js';
import { isAlive, processesReferencing } from './proc.js';

export interface DockerdOptions {
  /** Default overlay2. */
  storageDriver?: string;
  /** Extra keys for daemon.json (e.g. { 'insecure-registries': ['localhost:5000'] }). */
  daemonConfig?: Record<string, unknown>;
  /** Extra dockerd flags. */
  extraArgs?: string[];
  /** How long to wait for the API. Default 30 s. */
  startTimeoutMs?: number;
  /** A directory whose contents are copied (`cp -a`) into the fresh data root before dockerd starts. */
  dataRootFrom?: string;
}

export interface DockerOptions {
  input?: string | Buffer;
  env?: Record<string, string | undefined>;
  /** Return non-zero exits instead of throwing. */
  allowFailure?: boolean;
  timeoutMs?: number;
}

export interface Dockerd {
  /** Path of the API unix socket. */
  socket: string;
  /** DOCKER_HOST value, unix://… */
  host: string;
  dataRoot: string;
  execRoot: string;
  /** The instance's temp dir (everything above lives under it). */
  dir: string;
  /** DOCKER_CONFIG for the client (isolated ~/.docker: logins land here). */
  clientConfigDir: string;
  /** cgroup parent of this daemon's containers. */
  cgroupParent: string;
  pid: number;
  /** Run the docker client (bins.docker) against this daemon. Throws with stderr on non-zero. */
  docker(args: string[], opts?: DockerOptions): Promise<RunResult>;
  logs(): string;
  /** pids of dockerd, containerd and shims of this instance (via their command lines). */
  processes(): number[];
  /** Remove containers, stop the daemon, kill leftovers, unmount, delete the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export async function startDockerd(opts: DockerdOptions = {}): Promise<Dockerd> {
  // The deepest socket (containerd's ttrpc one) must fit in sun_path (108 bytes with the NUL).
  const longest = path.join(tmpBase, 'sd-it-dockerd-XXXXXX', 'exec/containerd/containerd.sock.ttrpc');
  if (longest.length > 107) throw new Error(`temp dir too deep for unix sockets; set STEVEDORE_IT_TMPDIR: ${longest}`);
  const dir = makeTempDir('dockerd');
  // cgroupfs driver + a relative parent: containers land in /<parent>/<id> in every hierarchy.
  const cgroupParent = path.basename(dir);
  updateMarker(dir, { cgroupParent });
  const p = (f: string) => path.join(dir, f);
  const socket = p('docker.sock');
  const host = `unix://${socket}`;
  const dataRoot = p('data');
  const execRoot = p('exec');
  const clientConfigDir = p('client');
  for (const d of [dataRoot, execRoot, clientConfigDir]) mkdirSync(d, { mode: 0o700 });
  if (opts.dataRootFrom) execFileSync('cp', ['-a', `${opts.dataRootFrom}/.`, dataRoot]);
  // An empty client config: no credential helper, so `docker login` stores into this file.
  writeFileSync(path.join(clientConfigDir, 'config.json'), JSON.stringify({ auths: {} }));
  const daemonJson = p('daemon.json');
  writeFileSync(daemonJson, JSON.stringify({ 'deprecated-key-path': p('key.json'), ...opts.daemonConfig }));

  // biome-ignore format: flag/value pairs
  const args = [
    '--config-file', daemonJson,
    '--data-root', dataRoot,
    '--exec-root', execRoot,
    '--pidfile', p('docker.pid'),
    '--host', host,
    '--storage-driver', opts.storageDriver ?? 'overlay2',
    // No docker0 bridge, no iptables/NAT rules: nothing touches host networking. Containers must
    // then use --network none (or host); the default bridge network does not exist.
    '--bridge=none', '--iptables=false', '--ip6tables=false', '--ip-masq=false',
    '--exec-opt', 'native.cgroupdriver=cgroupfs',
    '--cgroup-parent', cgroupParent,
    '--shutdown-timeout', '3',
    ...(opts.extraArgs ?? []),
  ];
  const daemon = spawnDaemon(bins.dockerd, args, { env: { DOCKER_HOST: undefined }, logFile: p('dockerd.log') });

  const docker = async (cmdArgs: string[], o: DockerOptions = {}): Promise<RunResult> =>
    run(bins.docker, ['--host', host, ...cmdArgs], {
      input: o.input,
      allowFailure: o.allowFailure,
      timeoutMs: o.timeoutMs,
      env: {
        // The client must talk to this daemon only, with its own config dir.
        DOCKER_HOST: undefined,
        DOCKER_CONTEXT: undefined,
        DOCKER_TLS_VERIFY: undefined,
        DOCKER_CERT_PATH: undefined,
        DOCKER_CONFIG: clientConfigDir,
        DOCKER_CLI_HINTS: 'false',
        ...o.env,
      },
    });

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (!daemon.hasExited()) {
        // Kill containers first (fast, SIGKILL) instead of waiting for the shutdown timeout.
        const ps = await docker(['ps', '-aq'], { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
        const ids = ps?.stdout.split('\n').filter(Boolean) ?? [];
        if (ids.length > 0)
          await docker(['rm', '-f', ...ids], { allowFailure: true, timeoutMs: 20_000 }).catch(() => {});
        await daemon.terminate(15_000);
      }
      // Whatever survived (containerd after a dockerd crash, shims, container processes, mounts).
      removeTempDir(dir);
      untrack();
    })();
    return stopping;
  };
  const untrack = track(`dockerd ${host}`, stop, () => removeTempDir(dir));

  const ping = async () => {
    const r = await docker(['version', '--format', '{{.Server.Version}}'], { allowFailure: true, timeoutMs: 5000 });
    return r.code === 0 ? true : undefined;
  };
  try {
    await waitFor(ping, {
      what: `dockerd at ${host}`,
      timeoutMs: opts.startTimeoutMs ?? 30_000,
      intervalMs: 100,
      check: () => {
        if (daemon.hasExited()) throw new Error(`dockerd exited\n--- dockerd logs ---\n${daemon.logs()}`);
      },
    });
  } catch (e) {
    await stop().catch(() => {});
    const msg = (e as Error).message;
    throw new Error(msg.includes('dockerd logs') ? msg : `${msg}\n--- dockerd logs ---\n${daemon.logs()}`);
  }

  return {
    socket,
    host,
    dataRoot,
    execRoot,
    dir,
    clientConfigDir,
    cgroupParent,
    pid: daemon.pid,
    docker,
    logs: daemon.logs,
    processes: () => processesReferencing(dir).filter(isAlive),
    stop,
  };
}

/**
 * Make dockerd trust `caPath` for registry `host` ("127.0.0.1:PORT") by installing
 * <certs.d>/<host>/ca.crt (dockerd reads it on every pull/push; no restart needed).
 * Refuses to overwrite an existing file. Returns an idempotent undo; teardown undoes it too.
 *
 * Note: dockerd treats 127.0.0.0/8 registries as insecure by default, and for insecure
 * registries it skips TLS verification, so a push to a TLS registry on loopback works even
 * without this. It matters for registries reached under other names/addresses.
 */
export function trustRegistryCA(host: string, caPath: string): () => void {
  if (host.includes('/') || host.includes('..')) throw new Error(`bad registry host: ${host}`);
  const hostDir = path.join(dockerCertsDir, host);
  const target = path.join(hostDir, 'ca.crt');
  if (existsSync(target)) throw new Error(`${target} exists; not overwriting`);
  // Record the dirs we create (deepest last) so undo removes exactly those, and only if empty.
  const created: string[] = [];
  for (let d = hostDir; !existsSync(d); d = path.dirname(d)) created.unshift(d);
  const marker = makeTempDir('certsd', { extraPaths: [target, ...created.reverse()] });
  mkdirSync(hostDir, { recursive: true });
  writeFileSync(target, readFileSync(caPath));
  return () => removeTempDir(marker);
}
