// Locations of the real components. Defaults are the Debian 12 package paths; every one can be
// overridden by an environment variable so the harness runs on other layouts.
import { tmpdir } from 'node:os';

function env(name: string, fallback: string): string {
  const v = process.env[name];
  return v && v.length > 0 ? v : fallback;
}

export const bins = {
  /** The daemon. */
  dockerd: env('STEVEDORE_DOCKERD', '/usr/sbin/dockerd'),
  /** The client matching dockerd (Debian's; /usr/local/bin/docker may be a newer, different one). */
  docker: env('STEVEDORE_DOCKER', '/usr/bin/docker'),
  /** The CNCF distribution reference registry (`docker-registry serve CONFIG`). */
  registry: env('STEVEDORE_REGISTRY', '/usr/bin/docker-registry'),
  htpasswd: env('STEVEDORE_HTPASSWD', '/usr/bin/htpasswd'),
  openssl: env('STEVEDORE_OPENSSL', '/usr/bin/openssl'),
  umount: env('STEVEDORE_UMOUNT', '/usr/bin/umount'),
  /** A static busybox, copied into FROM scratch images to make them runnable. */
  busybox: env('STEVEDORE_BUSYBOX', '/bin/busybox'),
} as const;

/** Where dockerd looks for per-registry CA certificates (hard-coded in dockerd for rootful mode). */
export const dockerCertsDir = env('STEVEDORE_DOCKER_CERTS_D', '/etc/docker/certs.d');

/**
 * Parent of all harness temp dirs. Kept short on purpose: dockerd and containerd put unix sockets
 * under it and sun_path is limited to 108 bytes.
 */
export const tmpBase = env('STEVEDORE_IT_TMPDIR', tmpdir());
