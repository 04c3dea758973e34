#!/usr/bin/env node
// Adds up the suite's results (vitest JSON reports and cargo's own lines) into one closing
// line, "N passed, N failed", and exits non-zero when anything failed or nothing ran.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = join(resolve(dirname(fileURLToPath(import.meta.url)), '..'), 'build', 'test-results');
let passed = 0;
let failed = 0;
let skipped = 0;
const rows = [];
for (const file of existsSync(dir) ? readdirSync(dir).sort() : []) {
  if (!/\.(json|txt)$/.test(file)) continue; // screenshots and other artifacts live here too
  const text = readFileSync(join(dir, file), 'utf8');
  let p = 0;
  let f = 0;
  let s = 0;
  if (file.endsWith('.json')) {
    const r = JSON.parse(text);
    p = r.numPassedTests ?? 0;
    // A file that failed to load has no failed tests but is a failed suite: count it.
    f = Math.max(r.numFailedTests ?? 0, r.numFailedTestSuites ?? 0);
    s = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
    if (r.success === false && f === 0) f = 1;
  } else if (file.endsWith('.txt')) {
    for (const m of text.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored/g)) {
      p += Number(m[1]);
      f += Number(m[2]);
      s += Number(m[3]);
    }
  }
  rows.push(`  ${file.replace(/\.(json|txt)$/, '').padEnd(14)} ${p} passed, ${f} failed, ${s} skipped`);
  passed += p;
  failed += f;
  skipped += s;
}
process.stdout.write(`\nTest summary\n${rows.join('\n')}\n`);
process.stdout.write(`${passed} passed, ${failed} failed, ${skipped} skipped\n`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
