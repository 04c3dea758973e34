import { DEFAULT_DOCKER_ROOT as overlayDefault } from '@stevedore/overlay';
import { describe, expect, it } from 'vitest';
import { DEFAULT_DOCKER_ROOT } from '../src/commands/docker.js';
import { lazy } from '../src/lazy.js';

describe('start-up: command implementations load when their command runs', () => {
  it("the docker commands' default data root is @stevedore/overlay's (kept as a literal so --help loads no store)", () => {
    expect(DEFAULT_DOCKER_ROOT).toBe(overlayDefault);
  });

  it('lazy() imports the module on the first call only, and passes arguments and results through', async () => {
    let loads = 0;
    const mod = { add: async (a: number, b: number) => a + b, fail: async () => Promise.reject(new Error('no')) };
    const load = async () => {
      loads++;
      return mod;
    };
    const add = lazy(load, 'add');
    const fail = lazy(load, 'fail');
    expect(loads).toBe(0);
    expect(await add(2, 3)).toBe(5);
    await expect(fail()).rejects.toThrow('no');
    expect(loads).toBe(2); // each call asks the loader; import() itself caches the module
  });
});
