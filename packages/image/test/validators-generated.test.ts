import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs script without types
import { GENERATED_FILE, generateValidators } from '../scripts/gen-validators.mjs';
import { SCHEMAS } from '../src/schemas.js';
import * as validators from '../src/validators.generated.js';

describe('ahead-of-time schema validators', () => {
  it('the committed validators.generated.ts is what the schemas compile to (run gen-validators after changing a schema)', () => {
    expect(readFileSync(GENERATED_FILE, 'utf8')).toBe(generateValidators(SCHEMAS));
  });

  it('exports one validate function per schema', () => {
    expect(Object.keys(validators).sort()).toEqual(Object.keys(SCHEMAS).sort());
    const v = (validators as unknown as Record<string, (d: unknown) => boolean>).descriptor!;
    expect(v({ mediaType: 'a/b', digest: `sha256:${'a'.repeat(64)}`, size: 1 })).toBe(true);
    expect(v({ mediaType: 'a/b', digest: 'nope', size: 1 })).toBe(false);
  });
});
