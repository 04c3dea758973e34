// Settings every vitest project shares: a JSON report per project under build/test-results/,
// which tools/test-summary.mjs adds up into the suite's closing line.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** @param {string} name project name, used for the report file */
export function reporters(name) {
  return ['default', ['json', { outputFile: join(root, 'build', 'test-results', `${name}.json`) }]];
}
