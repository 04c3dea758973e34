// vitest setupFiles entry: runs in every test worker before each test file.
import { afterAll } from 'vitest';
import { cleanupAll, installExitHooks } from './cleanup.js';

installExitHooks();
// Tear down whatever a file's tests left running, even when they failed half-way.
afterAll(async () => {
  await cleanupAll();
});
