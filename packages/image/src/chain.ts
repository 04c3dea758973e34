/**
 * Identities derived from layer and config digests, as Docker and containerd compute them.
 *
 * - The chain ID of the first layer is its diff ID; of each next layer,
 *   `sha256(previousChainId + " " + diffId)` over the digests' text. A chain ID names a stack of
 *   layers (base first), which is how Docker's layer store (`image/overlay2/layerdb/sha256/<chainId>`)
 *   and containerd's snapshotters key unpacked layers.
 * - The image ID is the digest of the config bytes (`docker images --no-trunc` shows it).
 */
import { type Digest, sha256 } from '@stevedore/core';

const encoder = new TextEncoder();

/** The chain ID of a stack of layers given their diff IDs, base first; undefined for none. */
export function chainId(diffIds: readonly Digest[]): Digest | undefined {
  return chainIds(diffIds).at(-1);
}

/** The chain IDs of every prefix of `diffIds` (base first): `[d0, sha256(c0 + " " + d1), …]`. */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  let previous: Digest | undefined;
  for (const diffId of diffIds) {
    previous = previous === undefined ? diffId : sha256(encoder.encode(`${previous.toString()} ${diffId.toString()}`));
    out.push(previous);
  }
  return out;
}

/** The image ID: the sha256 digest of the config exactly as stored (its bytes, not a re-serialization). */
export function imageId(configBytes: Uint8Array): Digest {
  return sha256(configBytes);
}
