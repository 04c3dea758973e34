/**
 * A dropped or chosen folder as an archive index, so it opens like an oci-archive: an OCI image
 * layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), or a `docker save` extracted to a
 * directory (`manifest.json` and its blobs or legacy `<id>/layer.tar` directories).
 *
 * Files are never read whole unless they are small (`MAX_JSON_MEMBER`): every blob is hashed
 * (in the wasm core) from `file.stream()`, and layer sources stream their `File` anew on each
 * `open()`.
 */
import { type DigestAlgorithm, Hasher } from '@stevedore/core/browser';
import { type ArchiveIndex, MAX_JSON_MEMBER, type Member, normalizePath, type Progress } from './archive.js';

/** Relative path (top folder stripped) → file. */
export type FolderFiles = Map<string, File>;

const BLOB = /^blobs\/(sha256|sha512)\/([0-9a-f]+)$/;
const ANY_BLOB = /^blobs\/[^/]+\/[^/]+$/;

/**
 * Builds the path → file map. When every path starts with the same folder (the folder that was
 * chosen or dropped), that folder is stripped; `name` is its name (or '' when there is none).
 */
export function folderFiles(list: { path: string; file: File }[]): { name: string; files: FolderFiles } {
  const paths = list.map((f) => normalizePath(f.path));
  const firsts = new Set(paths.map((p) => (p.includes('/') ? p.slice(0, p.indexOf('/')) : '')));
  const top = firsts.size === 1 ? ([...firsts][0] as string) : '';
  const files: FolderFiles = new Map();
  list.forEach((f, i) => {
    const p = paths[i] as string;
    const rel = top ? p.slice(top.length + 1) : p;
    if (rel) files.set(rel, f.file);
  });
  return { name: top, files };
}

/** The files of an `<input type="file" webkitdirectory>` (paths from `webkitRelativePath`). */
export function filesFromInput(list: FileList): { name: string; files: FolderFiles } {
  return folderFiles([...list].map((file) => ({ path: file.webkitRelativePath || file.name, file })));
}

function readBatch(reader: FileSystemDirectoryReader): Promise<FileSystemEntry[]> {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

function fileOf(entry: FileSystemFileEntry): Promise<File> {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

/**
 * The files under dropped entries (`DataTransferItem.webkitGetAsEntry()`), read recursively;
 * `readEntries` returns a directory's entries in batches, until an empty one.
 */
export async function filesFromEntries(entries: FileSystemEntry[]): Promise<{ name: string; files: FolderFiles }> {
  const out: { path: string; file: File }[] = [];
  const walk = async (entry: FileSystemEntry): Promise<void> => {
    if (entry.isFile) {
      out.push({ path: entry.fullPath, file: await fileOf(entry as FileSystemFileEntry) });
    } else if (entry.isDirectory) {
      const reader = (entry as FileSystemDirectoryEntry).createReader();
      for (;;) {
        const batch = await readBatch(reader);
        if (!batch.length) break;
        for (const e of batch) await walk(e);
      }
    }
  };
  for (const e of entries) await walk(e);
  const folder = folderFiles(out);
  // A single dropped folder that is empty still has a name.
  if (!folder.name && entries.length === 1 && entries[0]?.isDirectory) folder.name = entries[0].name;
  return folder;
}

async function smallText(file: File): Promise<string> {
  return new TextDecoder().decode(await file.slice(0, 64 * 1024).arrayBuffer());
}

/**
 * What makes `files` openable: a `manifest.json` (docker save) or an OCI layout. Throws with
 * what is missing when it is neither.
 */
export async function checkLayout(files: FolderFiles, name: string): Promise<'docker-archive' | 'oci-layout'> {
  if (files.has('manifest.json')) return 'docker-archive';
  const what = name ? `the folder ${name}` : 'the dropped files';
  const problems: string[] = [];
  const layout = files.get('oci-layout');
  if (!layout) problems.push('no oci-layout file');
  else {
    let version: unknown;
    try {
      version = (JSON.parse(await smallText(layout)) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    } catch {
      version = undefined;
    }
    if (typeof version !== 'string') problems.push('oci-layout has no imageLayoutVersion');
    else if (!version.startsWith('1.')) problems.push(`oci-layout: unsupported imageLayoutVersion ${version}`);
  }
  if (!files.has('index.json')) problems.push('no index.json');
  if (![...files.keys()].some((p) => ANY_BLOB.test(p))) problems.push('no blobs/<alg>/<hex> files');
  if (problems.length) {
    throw new Error(
      `${what} is not an OCI image layout: ${problems.join(', ')} (only OCI layout folders and extracted docker save folders open; archives open as files)`,
    );
  }
  return 'oci-layout';
}

/** sha256 (or the blob's own algorithm) of a file, streamed through the wasm core. */
async function hashFile(file: Blob, algorithm: DigestAlgorithm, onRead: (n: number) => void): Promise<string> {
  const hasher = new Hasher(algorithm);
  const reader = (file.stream() as ReadableStream<Uint8Array>).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      hasher.update(value);
      onRead(value.length);
    }
  } finally {
    reader.releaseLock();
  }
  return hasher.digest().toString();
}

/**
 * The folder as an `ArchiveIndex` whose members stream their own files: blobs are hashed
 * (named by their algorithm), small JSON files kept, other files (legacy layer tars) only
 * listed — their digests come from the layer scans.
 */
export async function indexFolder(files: FolderFiles, progress?: Progress): Promise<ArchiveIndex> {
  const members = new Map<string, Member>();
  let total = 0;
  for (const f of files.values()) total += f.size;
  let read = 0;
  let lastReport = 0;
  const onRead = (n: number) => {
    read += n;
    if (progress && read - lastReport > 4 * 1024 * 1024) {
      lastReport = read;
      progress(read, total, 'hashing blobs');
    }
  };
  const sorted = [...files.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [name, file] of sorted) {
    const member: Member = { name, type: 'file', size: file.size, dataOffset: -1, linkName: '', file };
    const blob = BLOB.exec(name);
    const algorithm = (blob?.[1] ?? 'sha256') as DigestAlgorithm;
    if (file.size > 0 && file.size <= MAX_JSON_MEMBER) {
      const bytes = new Uint8Array(await file.arrayBuffer());
      if (bytes[0] === 0x7b || bytes[0] === 0x5b) member.json = bytes;
      const hasher = new Hasher(algorithm);
      hasher.update(bytes);
      member.digest = hasher.digest().toString();
      onRead(bytes.length);
    } else if (blob || file.size === 0) {
      member.digest = await hashFile(file, algorithm, onRead);
    }
    members.set(name, member);
  }
  progress?.(total, total, 'folder read');
  return { source: new Blob([]), gzipped: false, members, tarSize: total, folder: true };
}
