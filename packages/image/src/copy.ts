/**
 * Copying images between sources and sinks, over the `Image` interface only.
 *
 * Digests are preserved where bytes are: config and layer blobs are copied as they are stored
 * (a layer's `digest` and `size` stay the same), and a manifest is kept byte for byte unless the
 * sink's format needs another one:
 * - OCI layout / oci-archive: an OCI manifest is kept; a Docker schema 2 manifest is rewritten
 *   with OCI media types (same blobs) unless `ociMediaTypes: false`.
 * - docker-archive: layers are stored uncompressed (docker's own form), so a compressed layer's
 *   digest becomes its diff_id; the manifest is docker-archive's own (manifest.json).
 *
 * Legacy docker-archive → OCI layout: the layers of a legacy archive are uncompressed
 * `layer.tar`s; they are kept uncompressed (media type `application/vnd.oci.image.layer.v1.tar`)
 * by default, so each layer's `diff_id == digest`, and the synthesized OCI manifest is stored as
 * it is (its digest is the image's `digest`).
 */
import type { Digest } from '@stevedore/core';
import { type DockerArchiveWriteOptions, writeDockerArchive } from './docker-archive.js';
import type { Image } from './model.js';
import { OciLayout, type OciWriteOptions, writeOciArchive } from './oci-layout.js';

/** Where images can be copied to. Archive sinks collect images and write them on `close()`. */
export interface ImageSink {
  putImage(image: Image, options?: { tags?: string[] }): Promise<void>;
  /** Finishes the sink (writes the archive); a no-op for directory layouts. */
  close(): Promise<void>;
}

/** Copies one image into a sink under `tags`. */
export async function copyImage(source: Image, sink: ImageSink, options: { tags?: string[] } = {}): Promise<void> {
  await sink.putImage(source, options);
}

/** A sink writing into an OCI layout directory (each image lands at once). */
export function ociLayoutSink(
  dir: string,
  options: OciWriteOptions = {},
): ImageSink & { lastDigest: Digest | undefined } {
  let layout: Promise<OciLayout> | undefined;
  const sink = {
    lastDigest: undefined as Digest | undefined,
    async putImage(image: Image, o: { tags?: string[] } = {}) {
      layout ??= OciLayout.open(dir, { directIo: options.directIo ?? false });
      sink.lastDigest = await (await layout).putImage(image, { ...options, ...o });
    },
    async close() {},
  };
  return sink;
}

/** A sink that collects images and writes one oci-archive on `close()`. */
export function ociArchiveSink(file: string, options: OciWriteOptions = {}): ImageSink {
  const entries: { image: Image; tags?: string[] }[] = [];
  return {
    async putImage(image, o = {}) {
      entries.push({ image, ...(o.tags ? { tags: o.tags } : {}) });
    },
    close: () => writeOciArchive(file, entries, options),
  };
}

/** A sink that collects images and writes one docker-archive on `close()`. */
export function dockerArchiveSink(file: string, options: DockerArchiveWriteOptions = {}): ImageSink {
  const entries: { image: Image; tags?: string[] }[] = [];
  return {
    async putImage(image, o = {}) {
      entries.push({ image, ...(o.tags ? { tags: o.tags } : {}) });
    },
    close: () => writeDockerArchive(file, entries, options),
  };
}
