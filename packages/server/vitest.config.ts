import { defineConfig } from 'vitest/config';
import { reporters } from '../../tools/vitest-shared.mjs';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    // Real daemons: one file at a time, a process per file.
    fileParallelism: false,
    pool: 'forks',
    reporters: reporters('server'),
  },
});
