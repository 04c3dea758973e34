/** `stevedore copy SRC DST`: skopeo copy across registries, docker-archives and OCI layouts. */
import { copyImage, type Image, type Layer } from '@stevedore/image';
import type { RegistryClient } from '@stevedore/registry';
import type { Output } from '../output.js';
import { humanSize, type RegistryOpts, registryClient } from './common.js';
import { openDestination, openSource, parseLocation } from './transports.js';

export interface CopyResult {
  source: string;
  destination: string;
  digest: string;
  /** The digest at the destination (differs when the destination rewrites the manifest). */
  destinationDigest: string | undefined;
  config: string;
  layers: { digest: string; size: number; copied: boolean }[];
}

export async function copyCommand(
  src: string,
  dst: string,
  o: RegistryOpts & { root?: string },
  out: Output,
): Promise<void> {
  const from = parseLocation(src);
  const to = parseLocation(dst);
  let client: RegistryClient | undefined;
  const getClient = () => {
    client ??= registryClient(o);
    return client;
  };
  try {
    // Every layer is read by the copy: each is verified (digest, diff_id) as it goes, not all first.
    const source = await openSource(from, {
      client: getClient,
      platform: o.platform,
      root: o.root,
      verifyOnRead: true,
    });
    try {
      const dest = openDestination(to, { client: getClient, source, root: o.root });
      const copied = new Set<string>();
      const image = withProgress(source.image, out, copied);
      out.log(`Copying ${src} (${source.image.digest}) to ${dst}`);
      await copyImage(image, dest.sink, dest.tags ? { tags: dest.tags } : {});
      await dest.sink.close();
      for (const l of source.image.layers) {
        if (!copied.has(l.digest.toString())) out.log(`Copying blob ${short(l.digest)} skipped: already exists`);
      }
      out.log(`Copying config ${short(source.image.manifest.config.digest)} done`);
      const result: CopyResult = {
        source: src,
        destination: dst,
        digest: source.image.digest.toString(),
        destinationDigest: dest.sink.lastDigest?.toString(),
        config: source.image.manifest.config.digest.toString(),
        layers: source.image.layers.map((l) => ({
          digest: l.digest.toString(),
          size: l.size,
          copied: copied.has(l.digest.toString()),
        })),
      };
      if (out.json) out.data(result, () => '');
      else out.log(`Wrote ${dst}${result.destinationDigest ? ` (${result.destinationDigest})` : ''}`);
    } finally {
      await source.close();
    }
  } finally {
    await client?.close();
  }
}

const short = (d: { hex: string; algorithm: string }) => `${d.algorithm}:${d.hex.slice(0, 12)}`;

/** The image with each layer's streams reporting one stderr line when a blob has been copied. */
function withProgress(image: Image, out: Output, copied: Set<string>): Image {
  const layers = image.layers.map((l) => {
    const report = async function* (stream: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
      let n = 0;
      for await (const c of stream) {
        n += c.length;
        yield c;
      }
      const key = l.digest.toString();
      if (!copied.has(key)) {
        copied.add(key);
        out.log(`Copying blob ${short(l.digest)} ${humanSize(n)} done`);
      }
    };
    // Object.create keeps the layer's class (registry pushes mount RemoteLayers across repositories).
    const wrapped = Object.create(l) as Layer;
    Object.defineProperties(wrapped, {
      compressed: { value: () => report(l.compressed()) },
      uncompressed: { value: () => report(l.uncompressed()) },
    });
    return wrapped;
  });
  const wrapped = Object.create(image) as Image;
  Object.defineProperty(wrapped, 'layers', { value: layers });
  return wrapped;
}
