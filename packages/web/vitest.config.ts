import { defineConfig } from 'vitest/config';
import { reporters } from '../../tools/vitest-shared.mjs';

export default defineConfig({
  test: { include: ['test/**/*.test.ts'], testTimeout: 120_000, hookTimeout: 240_000, reporters: reporters('web') },
});
