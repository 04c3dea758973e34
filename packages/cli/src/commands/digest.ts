import { type DigestAlgorithm, Hasher, hashFile, StevedoreError } from '@stevedore/core';
import type { Output } from '../output.js';

export interface DigestResult {
  path: string;
  digest: string;
  size: number;
}

/** `stevedore digest [FILE…]`: content digests as registries and image configs write them. */
export async function digestCommand(paths: string[], algorithm: DigestAlgorithm, out: Output): Promise<void> {
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new StevedoreError('ERR_USAGE', `--algorithm must be sha256 or sha512, got ${algorithm}`);
  }
  const results: DigestResult[] = [];
  for (const path of paths.length ? paths : ['-']) {
    if (path === '-') {
      const h = new Hasher(algorithm);
      for await (const chunk of process.stdin) h.update(chunk as Buffer);
      results.push({ path: '-', digest: h.digest().toString(), size: h.size });
    } else {
      const r = await hashFile(path, algorithm);
      results.push({ path, digest: r.digest.toString(), size: r.size });
    }
  }
  out.data(results, () => results.map((r) => `${r.digest}  ${r.path}`).join('\n'));
}
