// Images built by code (no checked-in binaries), trees walked for comparisons.
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { type LayerEntryInput, sha256, writeTar } from '@stevedore/core';
import {
  type Image,
  type Layer,
  OCI_CONFIG,
  OCI_LAYER,
  OCI_LAYER_GZIP,
  OCI_MANIFEST,
  parseConfig,
  parseManifest,
} from '@stevedore/image';
import type { MergedView } from '../src/index.js';

const enc = new TextEncoder();

export type Spec = Record<string, string | { dir: true; mode?: number } | { symlink: string } | { whiteout: true }>;

/** A layer tar from a spec: `x/` dirs, files, symlinks, `.wh.` markers (as zero-byte files). */
export function layerTar(spec: Spec): Uint8Array {
  return writeTar(
    Object.entries(spec).map(([p, v]) => {
      if (typeof v === 'string') {
        return {
          entry: { path: p, type: 'file', mode: 0o644, mtime: 1_700_000_000 } as LayerEntryInput,
          data: enc.encode(v),
        };
      }
      if ('dir' in v)
        return {
          entry: { path: p, type: 'directory', mode: v.mode ?? 0o755, mtime: 1_700_000_000 } as LayerEntryInput,
        };
      if ('symlink' in v) {
        return {
          entry: {
            path: p,
            type: 'symlink',
            linkName: v.symlink,
            mode: 0o777,
            mtime: 1_700_000_000,
          } as LayerEntryInput,
        };
      }
      return {
        entry: { path: p, type: 'file', mode: 0o644, mtime: 1_700_000_000 } as LayerEntryInput,
        data: new Uint8Array(),
      };
    }),
  );
}

/** An in-memory OCI image: `tars` are uncompressed layer tars (base first). */
export function memImage(tars: Uint8Array[], o: { gzip?: boolean; label?: string; fail?: number } = {}): Image {
  const blobs = tars.map((t) => (o.gzip ? new Uint8Array(gzipSync(t)) : t));
  const rawConfig = enc.encode(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: { fixture: o.label ?? 'x' } },
      rootfs: { type: 'layers', diff_ids: tars.map((t) => sha256(t).toString()) },
    }),
  );
  const mediaType = o.gzip ? OCI_LAYER_GZIP : OCI_LAYER;
  const rawManifest = enc.encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(rawConfig).toString(), size: rawConfig.length },
      layers: blobs.map((b) => ({ mediaType, digest: sha256(b).toString(), size: b.length })),
    }),
  );
  const layers: Layer[] = blobs.map((b, i) => ({
    digest: sha256(b),
    diffId: sha256(tars[i]!),
    size: b.length,
    mediaType,
    async *compressed() {
      if (o.fail === i) {
        yield b.subarray(0, 10);
        throw new Error('connection dropped');
      }
      yield b;
    },
    async *uncompressed() {
      yield tars[i]!;
    },
  }));
  const manifest = parseManifest(rawManifest) as Image['manifest'];
  return { digest: sha256(rawManifest), manifest, rawManifest, config: parseConfig(rawConfig), rawConfig, layers };
}

export const L0: Spec = {
  'etc/': { dir: true },
  'etc/a.txt': 'a\n',
  'etc/b.txt': 'b\n',
  'app/': { dir: true },
  'app/msg': 'hello\n',
  'opq/': { dir: true },
  'opq/old': 'old\n',
  'opq/sub/': { dir: true },
  'opq/sub/deep': 'deep\n',
  link: { symlink: 'app/msg' },
  'tree/': { dir: true },
  'tree/x/': { dir: true },
  'tree/x/y': 'y\n',
};
export const L1: Spec = {
  'etc/': { dir: true },
  'etc/.wh.a.txt': { whiteout: true },
  'etc/c.txt': 'c\n',
  'opq/': { dir: true },
  'opq/.wh..wh..opq': { whiteout: true },
  'opq/new': 'new\n',
  'app/': { dir: true },
  'app/msg': 'hello again\n',
};
export const L2: Spec = {
  'etc/': { dir: true },
  'etc/b.txt': 'b2\n',
  'data/': { dir: true },
  'data/bin': 'x'.repeat(70_000),
};

export const TARS = [layerTar(L0), layerTar(L1), layerTar(L2)];

export interface Node {
  type: string;
  mode: number;
  size: number;
  link: string;
  sha: string;
  dev?: string;
}

/** A host tree (a mount, an unpacked rootfs, a diff dir) as path → node, lstat only. */
export function walkTree(
  root: string,
  opts: { uidGid?: boolean } = {},
): Map<string, Node & { uid?: number; gid?: number }> {
  const out = new Map<string, Node & { uid?: number; gid?: number }>();
  const visit = (rel: string) => {
    for (const name of readdirSync(rel ? path.join(root, rel) : root).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, r);
      const st = lstatSync(abs);
      const type = st.isDirectory()
        ? 'directory'
        : st.isSymbolicLink()
          ? 'symlink'
          : st.isCharacterDevice()
            ? 'char'
            : st.isFile()
              ? 'file'
              : 'other';
      const n: Node & { uid?: number; gid?: number } = {
        type,
        mode: st.mode & 0o7777,
        size: type === 'file' ? st.size : 0,
        link: type === 'symlink' ? readlinkSync(abs) : '',
        sha: type === 'file' ? createHash('sha256').update(readFileSync(abs)).digest('hex') : '',
      };
      if (type === 'char') n.dev = `${st.rdev >> 8}/${st.rdev & 0xff}`;
      if (opts.uidGid) {
        n.uid = st.uid;
        n.gid = st.gid;
      }
      out.set(r, n);
      if (type === 'directory') visit(r);
    }
  };
  visit('');
  return out;
}

/** The userspace view as the same path → node map (file bytes read from the providing diff dir). */
export async function walkView(v: MergedView): Promise<Map<string, Node>> {
  const out = new Map<string, Node>();
  for (const st of v.walk()) {
    const e = st.entry;
    if (st.path === '' || st.path === '.') continue;
    out.set(st.path.replace(/^\.?\//, '').replace(/\/$/, ''), {
      type: e.type,
      mode: e.mode,
      size: e.type === 'file' ? e.size : 0,
      link: e.type === 'symlink' ? e.linkName : '',
      sha:
        e.type === 'file'
          ? createHash('sha256')
              .update(await v.readFile(st.path))
              .digest('hex')
          : '',
    });
  }
  return out;
}

export const asObject = <T>(m: Map<string, T>) => Object.fromEntries([...m].sort(([a], [b]) => (a < b ? -1 : 1)));
