import { defineConfig } from 'vitest/config';
import { reporters } from '../tools/vitest-shared.mjs';

export default defineConfig({
  test: {
    root: import.meta.dirname,
    include: ['**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    // Real daemons: generous timeouts, one file at a time (they share the host's kernel state).
    testTimeout: 180_000,
    hookTimeout: 180_000,
    teardownTimeout: 60_000,
    fileParallelism: false,
    // Child processes and signal hooks: a process per file, not threads.
    pool: 'forks',
    globalSetup: ['./harness/global-setup.ts'],
    setupFiles: ['./harness/setup.ts'],
    reporters: reporters('integration'),
  },
});
