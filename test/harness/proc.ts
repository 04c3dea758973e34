// procfs/cgroupfs/mount helpers for hard teardown. Everything here is synchronous on purpose:
// it also runs from process 'exit' hooks, where no asynchronous work can happen.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { bins } from './bins.js';

function readProc(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined; // process gone, or not ours to read
  }
}

export function listPids(): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((p) => p !== process.pid);
}

/** argv of a process, or undefined if it is gone (zombies have an empty argv). */
export function cmdline(pid: number): string[] | undefined {
  const raw = readProc(`/proc/${pid}/cmdline`);
  if (raw === undefined || raw.length === 0) return undefined;
  return raw.replace(/\0$/, '').split('\0');
}

/** True while the process exists and is not a zombie (a zombie holds no resources, only a pid). */
export function isAlive(pid: number): boolean {
  const stat = readProc(`/proc/${pid}/stat`);
  if (stat === undefined) return false;
  // "pid (comm) S ..." - comm may contain spaces and parens, so split after the last ')'.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** True if `p` is `dir` or lies under it (string check on normalized absolute paths). */
export function isUnder(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/**
 * Processes whose argv mentions `dir` (as a path or a `--flag=path`/`unix://path` value). This is
 * how we find dockerd, its containerd and the containerd-shims: each gets a path under the
 * daemon's private temp dir on its command line.
 */
export function processesReferencing(dir: string): number[] {
  const needle = new RegExp(`(^|[=:/ ,])${escapeRe(dir)}(/|$|[ ,])`);
  return listPids().filter((pid) => (cmdline(pid) ?? []).some((arg) => needle.test(arg) || arg === dir));
}

/**
 * Live processes in cgroup `/<name>` or below it, in any hierarchy (v1 or v2). Zombies are
 * skipped: they cannot be killed, hold nothing, and are reaped by their (re)parent eventually.
 */
export function processesInCgroup(name: string): number[] {
  const root = `/${name.replace(/^\/+/, '')}`;
  return listPids().filter(
    (pid) =>
      (readProc(`/proc/${pid}/cgroup`) ?? '').split('\n').some((line) => {
        const cg = line.split(':').slice(2).join(':');
        return cg === root || cg.startsWith(`${root}/`);
      }) && isAlive(pid),
  );
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** SIGKILL the pids and wait (up to timeoutMs) until they are gone. Returns those still alive. */
export function killAndWaitSync(pids: readonly number[], timeoutMs = 5000): number[] {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  const deadline = Date.now() + timeoutMs;
  let left = pids.filter(isAlive);
  while (left.length > 0 && Date.now() < deadline) {
    sleepSync(20);
    left = left.filter(isAlive);
  }
  return left;
}

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Mounts in our mount namespace, in mount order (from /proc/self/mountinfo). */
export function listMounts(): MountEntry[] {
  const decodeOctal = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return (readProc('/proc/self/mountinfo') ?? '')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [pre = '', post = ''] = line.split(' - ');
      const fields = pre.split(' ');
      const [fsType = '', source = ''] = post.split(' ');
      return { mountPoint: decodeOctal(fields[4] ?? ''), fsType, source };
    });
}

export function mountsUnder(dir: string): MountEntry[] {
  return listMounts().filter((m) => isUnder(m.mountPoint, dir));
}

/**
 * Unmount everything at or under `dir`, newest first (so stacked mounts come off in order).
 * Lazy (MNT_DETACH) so a mount kept busy by a dying process cannot block us. Returns the mount
 * points still present afterwards.
 */
export function unmountUnderSync(dir: string): string[] {
  for (let round = 0; round < 3; round++) {
    const mounts = mountsUnder(dir).reverse();
    if (mounts.length === 0) return [];
    for (const m of mounts) spawnSync(bins.umount, ['-l', m.mountPoint], { stdio: 'ignore' });
  }
  return mountsUnder(dir).map((m) => m.mountPoint);
}

/** Mount points of all cgroup hierarchies (v1 controllers and the v2 unified one). */
function cgroupRoots(): string[] {
  return listMounts()
    .filter((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2')
    .map((m) => m.mountPoint);
}

/** rmdir cgroup `/<name>` and its children in every hierarchy (cgroup dirs go with rmdir only). */
export function removeCgroupSync(name: string): void {
  const rel = name.replace(/^\/+/, '');
  if (!rel) return;
  const removeTree = (d: string) => {
    let entries: string[] = [];
    try {
      entries = readdirSync(d, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) removeTree(path.join(d, e));
    try {
      rmdirSync(d);
    } catch {}
  };
  for (const root of cgroupRoots()) {
    const d = path.join(root, rel);
    if (existsSync(d)) removeTree(d);
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
