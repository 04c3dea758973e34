/**
 * htpasswd basic auth: `user:hash` lines with bcrypt hashes (`$2y$`, as `htpasswd -B` writes,
 * also `$2a$`/`$2b$`), the only scheme the reference registry accepts. Verified with bcryptjs;
 * a successful check is cached (keyed by a SHA-256 of user and password) so that bcrypt's cost
 * is paid once per credential, not per request. The file is read once at start.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import bcrypt from 'bcryptjs';

export interface Htpasswd {
  verify(user: string, password: string): Promise<boolean>;
}

export function parseHtpasswd(text: string): Map<string, string> {
  const users = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const i = t.indexOf(':');
    if (i <= 0) continue;
    const hash = t.slice(i + 1);
    if (!/^\$2[aby]\$\d\d\$/.test(hash)) continue; // bcrypt only, like the reference registry
    users.set(t.slice(0, i), hash);
  }
  return users;
}

export function loadHtpasswd(file: string): Htpasswd {
  const users = parseHtpasswd(readFileSync(file, 'utf8'));
  const ok = new Set<string>();
  return {
    async verify(user, password) {
      const hash = users.get(user);
      if (!hash) return false;
      const key = createHash('sha256').update(`${user}\0${password}\0${hash}`).digest('hex');
      if (ok.has(key)) return true;
      const good = await bcrypt.compare(password, hash.replace(/^\$2y\$/, '$2b$'));
      if (good) ok.add(key);
      return good;
    },
  };
}
