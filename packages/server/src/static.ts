/**
 * A static site next to the registry API (`stevedore serve --ui`): every GET/HEAD outside `/v2/`
 * is a file of `dir`, so the web inspector and the registry share one origin and the page calls
 * `/v2/` without CORS.
 *
 * Paths are decoded once, must not contain `..`, NUL or backslashes, and are resolved with
 * `realpath` so that a symlink inside `dir` cannot serve a file outside it. `/` and directories
 * serve `index.html`; an unknown path without an extension serves `index.html` too (client-side
 * routes), an unknown file 404s. Hashed assets (`assets/…`, as Vite names them) are cached for a
 * year, everything else is revalidated.
 */
import { createReadStream, existsSync, realpathSync, statSync } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm', // WebAssembly.instantiateStreaming requires it
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.ico': 'image/x-icon',
  '.webp': 'image/webp',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

export interface StaticSite {
  /** The site's root directory (real path). */
  readonly dir: string;
  /** Answers a request for `pathname` (already known to be outside `/v2/`). */
  serve(req: IncomingMessage, res: ServerResponse, pathname: string): Promise<void>;
}

/** A site over `dir`, which must hold `index.html`; throws a clear error otherwise. */
export function staticSite(dir: string): StaticSite {
  const index = path.join(dir, 'index.html');
  if (!existsSync(index) || !statSync(index).isFile()) throw new Error(`${dir} holds no index.html`);
  const root = realpathSync(dir);
  return {
    dir: root,
    async serve(req, res, pathname) {
      req.resume();
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return text(res, 405, 'method not allowed\n', { Allow: 'GET, HEAD' });
      }
      const file = await resolveFile(root, pathname);
      if (!file) return text(res, 404, '404 page not found\n');
      const ext = path.extname(file.path);
      const immutable = file.path.startsWith(path.join(root, 'assets') + path.sep);
      res.writeHead(200, {
        'Content-Type': TYPES[ext] ?? 'application/octet-stream',
        'Content-Length': file.size,
        'Cache-Control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
        'X-Content-Type-Options': 'nosniff',
      });
      if (req.method === 'HEAD') return void res.end();
      await new Promise<void>((resolve) => {
        const src = createReadStream(file.path);
        src.on('error', () => {
          res.destroy();
          resolve();
        });
        res.on('close', () => {
          src.destroy();
          resolve();
        });
        src.pipe(res);
      });
    },
  };
}

/** The regular file `pathname` names under `root` (index.html for directories and client routes). */
async function resolveFile(root: string, pathname: string): Promise<{ path: string; size: number } | undefined> {
  let rel: string;
  try {
    rel = decodeURIComponent(pathname);
  } catch {
    return undefined;
  }
  if (rel.includes('\0') || rel.includes('\\') || rel.split('/').includes('..')) return undefined;
  const wanted = path.join(root, rel);
  const found = await regularFile(root, wanted);
  if (found) return found;
  const dirIndex = await regularFile(root, path.join(wanted, 'index.html'));
  if (dirIndex) return dirIndex;
  // a client-side route (no extension): the page itself
  if (!path.extname(rel)) return regularFile(root, path.join(root, 'index.html'));
  return undefined;
}

async function regularFile(root: string, file: string): Promise<{ path: string; size: number } | undefined> {
  try {
    const real = await realpath(file);
    if (real !== root && !real.startsWith(root + path.sep)) return undefined; // a symlink out of the site
    const s = await stat(real);
    return s.isFile() ? { path: real, size: s.size } : undefined;
  } catch {
    return undefined;
  }
}

function text(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': body.length, ...headers });
  res.end(body);
}
