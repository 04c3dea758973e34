// Test harness for the real components: dockerd, the distribution registry, openssl PKI.
export { bins, dockerCertsDir, tmpBase } from './bins.js';
export {
  cleanupAll,
  hardCleanupSync,
  installExitHooks,
  liveResources,
  makeTempDir,
  removeTempDir,
  sweepStale,
  track,
} from './cleanup.js';
export { type Dockerd, type DockerdOptions, type DockerOptions, startDockerd, trustRegistryCA } from './dockerd.js';
export { CommandError, type Daemon, type RunOptions, type RunResult, run, spawnDaemon } from './exec.js';
export { buildScratchImage, type ScratchImage, type ScratchImageOptions } from './images.js';
export {
  canConnect,
  getFreePort,
  httpStatus,
  LOOPBACK,
  type WaitOptions,
  waitFor,
  waitForHttp,
  waitForPort,
} from './ports.js';
export { cmdline, isAlive, listMounts, mountsUnder, processesInCgroup, processesReferencing } from './proc.js';
export { deepMerge, type Registry, type RegistryAuth, type RegistryOptions, startRegistry } from './registry.js';
export { createTlsMaterials, type TlsMaterials, type TlsOptions } from './tls.js';
