/**
 * The preamble every test file against real components shares: decide whether the file can
 * run here (root, dockerd, the registry binary), register the process-exit hooks and the
 * after-all cleanup, and — when STEVEDORE_REQUIRE_DOCKER=1 (CI) — turn "cannot run" into a
 * failing test instead of a silent skip. Call it once at the top level of a test file.
 */
import { existsSync } from 'node:fs';
import { afterAll, expect, it } from 'vitest';
import { bins } from './bins.js';
import { cleanupAll, installExitHooks } from './cleanup.js';

export interface Needs {
  /** The distribution registry binary (default: not needed). */
  registry?: boolean;
  /** dockerd and the docker client (default: needed). */
  dockerd?: boolean;
}

export function useRealComponents(needs: Needs = {}): { canRun: boolean; required: boolean } {
  const wantDocker = needs.dockerd !== false;
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root');
  if (wantDocker && !existsSync(bins.dockerd)) missing.push(bins.dockerd);
  if (wantDocker && !existsSync(bins.docker)) missing.push(bins.docker);
  if (needs.registry && !existsSync(bins.registry)) missing.push(bins.registry);
  const canRun = missing.length === 0;
  const required = process.env.STEVEDORE_REQUIRE_DOCKER === '1';
  installExitHooks();
  afterAll(async () => {
    await cleanupAll();
  });
  it.runIf(required && !canRun)('STEVEDORE_REQUIRE_DOCKER=1 but something is missing', () => {
    expect.fail(`missing: ${missing.join(', ')}`);
  });
  return { canRun, required };
}
