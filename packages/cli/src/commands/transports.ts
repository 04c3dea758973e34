/**
 * Image locations as skopeo writes them: `docker://REF`, `docker-archive:PATH[:REF]`,
 * `oci:PATH[:TAG]`, `oci-archive:PATH[:TAG]` (a bare reference means `docker://`). Opening one
 * as a source gives an `Image`; as a destination, an `ImageSink` and the tags to write.
 */
import {
  DockerArchive,
  dockerArchiveSink,
  type Image,
  type ImageSink,
  OciLayoutReader,
  ociArchiveSink,
  ociLayoutSink,
  type Reference,
} from '@stevedore/image';
import { pull, type RegistryClient, RemoteIndex, registrySink } from '@stevedore/registry';
import { platform as parsePlatformOpt, reference, usage } from './common.js';
import { findStoredImage, openStore, tagsOf } from './store.js';

export type Location =
  | { transport: 'docker'; ref: Reference; text: string }
  | { transport: 'docker-archive'; path: string; ref: Reference | undefined; text: string }
  | { transport: 'oci' | 'oci-archive'; path: string; tag: string | undefined; text: string }
  | { transport: 'store'; name: string; text: string };

const TRANSPORTS = ['docker://', 'docker-archive:', 'oci:', 'oci-archive:', 'store:'];
/** skopeo transports stevedore does not speak (a bare `name:tag` is a docker reference). */
const SKOPEO_ONLY = ['containers-storage', 'dir', 'docker-daemon', 'ostree', 'sif', 'tarball'];
const TAG = /^[\w][\w.-]{0,127}$/;

/** Parses a location; mistakes are usage errors (exit 2). */
export function parseLocation(text: string): Location {
  if (text.startsWith('store:')) {
    const name = text.slice('store:'.length);
    if (!name) throw usage(`${text}: missing image (expected store:REF or store:IMAGE-ID)`);
    if (!/^(sha256:)?[a-f0-9]{12,64}$/.test(name)) reference(name);
    return { transport: 'store', name, text };
  }
  if (text.startsWith('docker://')) return { transport: 'docker', ref: reference(text), text };
  for (const t of ['docker-archive', 'oci-archive', 'oci'] as const) {
    if (!text.startsWith(`${t}:`)) continue;
    const rest = text.slice(t.length + 1);
    const colon = rest.indexOf(':');
    const path = colon < 0 ? rest : rest.slice(0, colon);
    const extra = colon < 0 ? undefined : rest.slice(colon + 1);
    if (!path) throw usage(`${text}: missing path (expected ${t}:PATH[:${t === 'docker-archive' ? 'REF' : 'TAG'}])`);
    if (t === 'docker-archive') {
      return { transport: t, path, ref: extra ? reference(extra) : undefined, text };
    }
    if (extra !== undefined && !TAG.test(extra)) throw usage(`${text}: invalid tag ${JSON.stringify(extra)}`);
    return { transport: t, path, tag: extra || undefined, text };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/.exec(text);
  if (scheme && (text.startsWith(`${scheme[1]}://`) || SKOPEO_ONLY.includes(scheme[1] as string))) {
    throw usage(`${text}: unknown or unsupported transport ${scheme[1]}: (use one of ${TRANSPORTS.join(' ')})`);
  }
  return { transport: 'docker', ref: reference(text), text };
}

/** An opened source: the image, what else we know about it, and how to let go of it. */
export interface Source {
  image: Image;
  /** The registry reference, for docker:// sources. */
  ref?: Reference;
  /** Tags the source gives the image (docker-archive RepoTags, OCI ref.name). */
  repoTags: string[];
  /** `name@digest` references the source knows (the store's). */
  repoDigests?: string[];
  close(): Promise<void>;
}

export async function openSource(
  loc: Location,
  o: {
    client: () => RegistryClient;
    platform?: string | undefined;
    root?: string | undefined;
    /** Verify OCI layout layers as they are read (a copy reads them all) instead of at open. */
    verifyOnRead?: boolean;
  },
): Promise<Source> {
  const wanted = parsePlatformOpt(o.platform);
  switch (loc.transport) {
    case 'store': {
      const store = await openStore({ ...(o.root ? { root: o.root } : {}) });
      const image = await findStoredImage(store, loc.name);
      const id = image.manifest.config.digest.toString();
      const { tags, digests } = await tagsOf(store, id);
      const isName = !/^(sha256:)?[a-f0-9]{12,64}$/.test(loc.name);
      return {
        image,
        ...(isName ? { ref: reference(loc.name) } : {}),
        repoTags: tags,
        repoDigests: digests,
        close: async () => {},
      };
    }
    case 'docker': {
      const r = await pull(o.client(), loc.ref);
      const image = r instanceof RemoteIndex ? await r.imageFor(wanted) : r;
      return { image, ref: loc.ref, repoTags: loc.ref.tag ? [loc.ref.familiar()] : [], close: async () => {} };
    }
    case 'docker-archive': {
      const archive = await DockerArchive.open(loc.path);
      try {
        const image = archive.image(loc.ref ? archiveTag(loc.ref) : undefined);
        return { image, repoTags: [...image.repoTags], close: () => archive.close() };
      } catch (e) {
        await archive.close();
        throw e;
      }
    }
    case 'oci':
    case 'oci-archive': {
      const read = o.verifyOnRead ? { verify: 'on-read' as const } : {};
      const reader =
        loc.transport === 'oci'
          ? await OciLayoutReader.openDir(loc.path, read)
          : await OciLayoutReader.openArchive(loc.path, read);
      try {
        const image = await reader.image(loc.tag, wanted ? { platform: wanted } : {});
        // the tag may name an index (multi-platform layout): it tags the image chosen from it
        const tags = reader
          .entries()
          .filter((e) => e.tag !== undefined && (e.descriptor.digest.equals(image.digest) || e.tag === loc.tag));
        return { image, repoTags: tags.map((e) => e.tag as string), close: () => reader.close() };
      } catch (e) {
        await reader.close();
        throw e;
      }
    }
  }
}

/** `name:tag` as docker writes it in RepoTags (Docker Hub names short). */
function archiveTag(ref: Reference): string {
  if (!ref.tag) throw usage(`${ref}: a docker-archive names images by tag, not by digest`);
  return ref.familiar();
}

/** A destination: the sink, the tags to write, and a label for messages. */
export interface Destination {
  sink: ImageSink & { lastDigest?: { toString(): string } | undefined };
  tags: string[] | undefined;
}

export function openDestination(
  loc: Location,
  o: { client: () => RegistryClient; source: Source; root?: string | undefined },
): Destination {
  switch (loc.transport) {
    case 'store': {
      if (/^(sha256:)?[a-f0-9]{12,64}$/.test(loc.name)) throw usage(`${loc.text}: name a tag to store the image as`);
      const ref = reference(loc.name);
      const sink: ImageSink = {
        async putImage(image, p = {}) {
          const store = await openStore({ ...(o.root ? { root: o.root } : {}) });
          await store.loadImage(image, { tags: p.tags ?? [ref] });
        },
        async close() {},
      };
      return { sink, tags: [ref.familiar()] };
    }
    case 'docker':
      if (!loc.ref.tag && !loc.ref.digest) throw usage(`${loc.text}: name a tag to push to`);
      return { sink: registrySink(o.client(), loc.ref), tags: undefined };
    case 'docker-archive': {
      // Without a name, keep the source's docker reference so `docker load` tags the image.
      const ref = loc.ref ?? (o.source.ref?.tag ? o.source.ref : undefined);
      return { sink: dockerArchiveSink(loc.path), tags: ref ? [archiveTag(ref)] : [] };
    }
    case 'oci':
      return { sink: ociLayoutSink(loc.path), tags: loc.tag ? [loc.tag] : [] };
    case 'oci-archive':
      return { sink: ociArchiveSink(loc.path), tags: loc.tag ? [loc.tag] : [] };
  }
}
