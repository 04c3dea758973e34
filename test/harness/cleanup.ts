// Tracking and teardown of everything the harness starts.
//
// Every resource lives in a private temp dir `<tmp>/sd-it-<kind>-XXXXXX` holding a marker file
// (owner pid, cgroup parent, extra paths). Hard cleanup of such a dir needs nothing but the dir:
// kill the processes that name it on their command line or sit in its cgroup, unmount everything
// under it, remove the cgroup, the extra paths and the dir. That one routine serves
//   - stop() of each helper, after the graceful part,
//   - cleanupAll() (vitest afterAll),
//   - the process 'exit' hook and SIGINT/SIGTERM/SIGHUP handlers (synchronous), and
//   - sweepStale(), which removes leftovers of processes that died without cleaning up
//     (e.g. a SIGKILLed vitest worker); vitest's globalSetup runs it before and after a run.
import { mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tmpBase } from './bins.js';
import {
  isAlive,
  killAndWaitSync,
  processesInCgroup,
  processesReferencing,
  removeCgroupSync,
  unmountUnderSync,
} from './proc.js';

const PREFIX = 'sd-it-';
const MARKER = '.sd-it.json';

export interface Marker {
  /** pid of the test process that owns the dir. */
  owner: number;
  kind: string;
  /** cgroup (relative to each hierarchy root) whose processes die with the dir. */
  cgroupParent?: string;
  /** Files or dirs outside the temp dir to remove (files first, then dirs if empty), in order. */
  extraPaths?: string[];
}

interface Resource {
  name: string;
  stop: () => Promise<void>;
  stopSync: () => void;
}

const live = new Map<number, Resource>();
let nextId = 1;
let hooksInstalled = false;

/**
 * Register a resource for teardown. `stop` is the graceful async path; `stopSync` is what the
 * 'exit' hook can still do. Returns a function that unregisters it (call after a successful stop).
 */
export function track(name: string, stop: () => Promise<void>, stopSync: () => void): () => void {
  installExitHooks();
  const id = nextId++;
  live.set(id, { name, stop, stopSync });
  return () => {
    live.delete(id);
  };
}

/** Names of resources not yet torn down (for assertions and debugging). */
export function liveResources(): string[] {
  return [...live.values()].map((r) => r.name);
}

/** Tear down everything still tracked, newest first. Throws an AggregateError if any stop failed. */
export async function cleanupAll(): Promise<void> {
  const errors: unknown[] = [];
  for (const [id, r] of [...live.entries()].reverse()) {
    try {
      await r.stop();
    } catch (e) {
      errors.push(e);
      try {
        r.stopSync();
      } catch {}
    }
    live.delete(id);
  }
  if (errors.length > 0) throw new AggregateError(errors, `cleanup: ${errors.length} resource(s) failed to stop`);
}

function cleanupAllSync(): void {
  for (const [id, r] of [...live.entries()].reverse()) {
    try {
      r.stopSync();
    } catch {}
    live.delete(id);
  }
}

/** Install (once) the process hooks that tear everything down on exit and on SIGINT/SIGTERM. */
export function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      // Straight to the hard path: SIGKILL, unmount, delete. It needs no cooperation from the
      // daemons and finishes in well under a second, before a runner escalates to SIGKILL.
      cleanupAllSync();
      // Then die of the signal as if we had not caught it (process.exit is patched inside
      // vitest workers, so re-raise instead), unless someone else handles it.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

const untrackers = new Map<string, () => void>();

/**
 * Create a private (0700) temp dir for a resource, with its marker. The dir is tracked: it is
 * hard-cleaned by cleanupAll()/exit unless removeTempDir() ran first.
 */
export function makeTempDir(kind: string, marker: Partial<Omit<Marker, 'owner' | 'kind'>> = {}): string {
  const dir = mkdtempSync(path.join(tmpBase, `${PREFIX}${kind}-`));
  writeMarker(dir, { owner: process.pid, kind, ...marker });
  const untrack = track(
    `dir:${dir}`,
    async () => hardCleanupSync(dir),
    () => hardCleanupSync(dir),
  );
  untrackers.set(dir, untrack);
  return dir;
}

/** Hard-clean a dir made by makeTempDir and stop tracking it. Throws if something survived. */
export function removeTempDir(dir: string): void {
  hardCleanupSync(dir);
  untrackers.get(dir)?.();
  untrackers.delete(dir);
}

export function readMarker(dir: string): Marker | undefined {
  try {
    return JSON.parse(readFileSync(path.join(dir, MARKER), 'utf8')) as Marker;
  } catch {
    return undefined;
  }
}

export function updateMarker(dir: string, patch: Partial<Marker>): void {
  const m = readMarker(dir);
  if (!m) throw new Error(`no harness marker in ${dir}`);
  writeMarker(dir, { ...m, ...patch });
}

function writeMarker(dir: string, m: Marker): void {
  writeFileSync(path.join(dir, MARKER), JSON.stringify(m));
}

/**
 * Kill, unmount, delete. Idempotent. Refuses to delete the dir while anything is still mounted
 * under it (rm -r would otherwise recurse into the mounted filesystem).
 */
export function hardCleanupSync(dir: string): void {
  const marker = readMarker(dir);
  // Two rounds: a dying shim may have spawned nothing new, but a dying dockerd can restart
  // containerd between our scan and our kill.
  let survivors: number[] = [];
  for (let round = 0; round < 2; round++) {
    const pids = new Set(processesReferencing(dir));
    if (marker?.cgroupParent) for (const p of processesInCgroup(marker.cgroupParent)) pids.add(p);
    survivors = killAndWaitSync([...pids]);
  }
  const stuck = unmountUnderSync(dir);
  if (marker?.cgroupParent) removeCgroupSync(marker.cgroupParent);
  for (const p of marker?.extraPaths ?? []) {
    try {
      if (statSync(p).isDirectory()) rmdirSync(p);
      else rmSync(p, { force: true });
    } catch {}
  }
  if (stuck.length > 0) throw new Error(`cleanup of ${dir}: still mounted: ${stuck.join(', ')}`);
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  if (survivors.length > 0) throw new Error(`cleanup of ${dir}: processes survived SIGKILL: ${survivors.join(', ')}`);
}

/**
 * Hard-clean harness dirs left behind by test processes that are gone. Dirs owned by a live
 * process (this one or a concurrent run) are left alone. Returns the dirs cleaned.
 */
export function sweepStale(): string[] {
  const cleaned: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(tmpBase).filter((n) => n.startsWith(PREFIX));
  } catch {
    return cleaned;
  }
  for (const n of names) {
    const dir = path.join(tmpBase, n);
    const m = readMarker(dir);
    if (!m || m.owner === process.pid || isAlive(m.owner)) continue;
    try {
      hardCleanupSync(dir);
      cleaned.push(dir);
    } catch (e) {
      console.warn(`sweepStale: ${(e as Error).message}`);
    }
  }
  return cleaned;
}
