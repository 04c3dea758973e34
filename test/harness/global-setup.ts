// vitest globalSetup: runs once in the main process. Sweeps harness dirs (daemons, mounts,
// cgroups) whose owning test process is gone: before the run (a previous run was killed) and
// after it (a worker died without running its own teardown).
import { sweepStale } from './cleanup.js';

function report(when: string, dirs: string[]): void {
  if (dirs.length > 0) console.warn(`[harness] ${when}: cleaned up after dead test processes: ${dirs.join(', ')}`);
}

export default function setup(): () => void {
  report('before run', sweepStale());
  return () => report('after run', sweepStale());
}
