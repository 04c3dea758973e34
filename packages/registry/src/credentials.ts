/**
 * Credentials as docker keeps them: `config.json` in `DOCKER_CONFIG` (else `~/.docker`) with
 * `auths` (base64 `auth` = user:password, or an `identitytoken`), and credential helpers
 * (`credsStore` for every registry, `credHelpers` per registry) run as
 * `docker-credential-<name> get|store|erase` with the server URL (or a JSON record) on stdin.
 * `login`/`logout` write the same file (mode 0600, temp file + rename).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { StevedoreError } from '@stevedore/core';

/** What a registry is accessed with. `identityToken` is an OAuth2 refresh token. */
export interface Credentials {
  username?: string;
  password?: string;
  identityToken?: string;
}

/** Docker Hub's key in config.json (docker keeps the legacy v1 URL). */
export const DOCKER_HUB_AUTH_KEY = 'https://index.docker.io/v1/';

/** The config.json key / helper server URL docker uses for a registry host. */
export function serverAddress(registry: string): string {
  return registry === 'docker.io' || registry === 'index.docker.io' || registry === 'registry-1.docker.io'
    ? DOCKER_HUB_AUTH_KEY
    : registry;
}

/** `https://host:port/path` → `host:port` (docker's ConvertToHostname). */
export function hostnameOfKey(key: string): string {
  let s = key;
  if (s.startsWith('http://')) s = s.slice(7);
  else if (s.startsWith('https://')) s = s.slice(8);
  return s.split('/')[0] ?? s;
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [k: string]: unknown;
}

export interface DockerConfigOptions {
  /** The directory holding config.json; default `DOCKER_CONFIG`, else `~/.docker`. */
  dir?: string;
  /** Directory to find `docker-credential-*` in; default: PATH. */
  helperDir?: string;
}

/** docker's config.json: read credentials, log in and out. */
export class DockerConfig {
  readonly dir: string;
  readonly file: string;
  private readonly helperDir: string | undefined;

  constructor(options: DockerConfigOptions = {}) {
    this.dir = options.dir ?? process.env.DOCKER_CONFIG ?? path.join(homedir(), '.docker');
    this.file = path.join(this.dir, 'config.json');
    this.helperDir = options.helperDir;
  }

  private async read(): Promise<DockerConfigFile> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new StevedoreError('ERR_IO', `read ${this.file}: ${(e as Error).message}`, { cause: e });
    }
    if (text.length > 4 * 1024 * 1024) throw new StevedoreError('ERR_CONFIG', `${this.file}: larger than 4 MiB`);
    try {
      const v = JSON.parse(text) as unknown;
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
      return v as DockerConfigFile;
    } catch (e) {
      throw new StevedoreError('ERR_CONFIG', `${this.file}: invalid JSON: ${(e as Error).message}`, { cause: e });
    }
  }

  private helperFor(cfg: DockerConfigFile, registry: string): string | undefined {
    const host = hostnameOfKey(serverAddress(registry));
    return cfg.credHelpers?.[registry] ?? cfg.credHelpers?.[host] ?? cfg.credsStore;
  }

  /** Credentials for `registry` (a host[:port] as in references), or undefined. */
  async get(registry: string): Promise<Credentials | undefined> {
    const cfg = await this.read();
    const helper = this.helperFor(cfg, registry);
    if (helper) return this.helperGet(helper, serverAddress(registry));
    const auths = cfg.auths ?? {};
    const wanted = hostnameOfKey(serverAddress(registry));
    const key =
      serverAddress(registry) in auths
        ? serverAddress(registry)
        : Object.keys(auths).find((k) => hostnameOfKey(k) === wanted);
    if (key === undefined) return undefined;
    const entry = auths[key] ?? {};
    const out: Credentials = {};
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0)
        throw new StevedoreError('ERR_CONFIG', `${this.file}: auths[${key}].auth is not base64(user:password)`);
      out.username = decoded.slice(0, colon);
      out.password = decoded.slice(colon + 1);
    } else if (entry.username !== undefined) {
      out.username = entry.username;
      out.password = entry.password ?? '';
    }
    if (entry.identitytoken) out.identityToken = entry.identitytoken;
    return out.username !== undefined || out.identityToken ? out : undefined;
  }

  /** Stores credentials (helper if configured, else base64 in config.json). */
  async store(registry: string, creds: Credentials): Promise<void> {
    const cfg = await this.read();
    const helper = this.helperFor(cfg, registry);
    const server = serverAddress(registry);
    if (helper) {
      const record = creds.identityToken
        ? { ServerURL: server, Username: '<token>', Secret: creds.identityToken }
        : { ServerURL: server, Username: creds.username ?? '', Secret: creds.password ?? '' };
      await this.runHelper(helper, 'store', JSON.stringify(record));
      // docker keeps an empty entry so `docker info`/logout know the registry
      cfg.auths = { ...(cfg.auths ?? {}), [server]: {} };
    } else {
      const entry: { auth?: string; identitytoken?: string } = {};
      if (creds.username !== undefined) {
        entry.auth = Buffer.from(`${creds.username}:${creds.password ?? ''}`).toString('base64');
      }
      if (creds.identityToken) entry.identitytoken = creds.identityToken;
      cfg.auths = { ...(cfg.auths ?? {}), [server]: entry };
    }
    await this.write(cfg);
  }

  /** Removes stored credentials; returns false when there were none. */
  async erase(registry: string): Promise<boolean> {
    const cfg = await this.read();
    const helper = this.helperFor(cfg, registry);
    const server = serverAddress(registry);
    let found = false;
    if (helper) {
      try {
        await this.runHelper(helper, 'erase', server);
        found = true;
      } catch (e) {
        if (!/not found/i.test((e as Error).message)) throw e;
      }
    }
    const auths = cfg.auths ?? {};
    for (const k of Object.keys(auths)) {
      if (k === server || hostnameOfKey(k) === hostnameOfKey(server)) {
        delete auths[k];
        found = true;
      }
    }
    cfg.auths = auths;
    await this.write(cfg);
    return found;
  }

  private async write(cfg: DockerConfigFile): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(this.dir, `.config.json.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      await writeFile(tmp, `${JSON.stringify(cfg, null, '\t')}\n`, { mode: 0o600, flag: 'wx' });
      await chmod(tmp, 0o600);
      await rename(tmp, this.file);
    } catch (e) {
      await rm(tmp, { force: true });
      throw new StevedoreError('ERR_IO', `write ${this.file}: ${(e as Error).message}`, { cause: e });
    }
  }

  private async helperGet(helper: string, server: string): Promise<Credentials | undefined> {
    let out: string;
    try {
      out = await this.runHelper(helper, 'get', server);
    } catch (e) {
      if (/credentials not found/i.test((e as Error).message)) return undefined;
      throw e;
    }
    let v: { Username?: unknown; Secret?: unknown };
    try {
      v = JSON.parse(out) as typeof v;
    } catch {
      throw new StevedoreError('ERR_CREDENTIAL_HELPER', `docker-credential-${helper} get: output is not JSON`);
    }
    const username = typeof v.Username === 'string' ? v.Username : '';
    const secret = typeof v.Secret === 'string' ? v.Secret : '';
    if (!username && !secret) return undefined;
    // docker's convention: user "<token>" means the secret is an identity (refresh) token
    if (username === '<token>') return { identityToken: secret };
    return { username, password: secret };
  }

  /** Runs `docker-credential-<helper> <action>` with `input` on stdin (exactly what docker sends). */
  private runHelper(helper: string, action: 'get' | 'store' | 'erase', input: string): Promise<string> {
    if (!/^[A-Za-z0-9._-]+$/.test(helper)) {
      return Promise.reject(
        new StevedoreError('ERR_CONFIG', `invalid credential helper name ${JSON.stringify(helper)}`),
      );
    }
    const bin = this.helperDir
      ? path.join(this.helperDir, `docker-credential-${helper}`)
      : `docker-credential-${helper}`;
    // node:child_process is loaded only when a helper runs (most commands never do)
    return import('node:child_process').then(
      ({ spawn }) =>
        new Promise((resolve, reject) => {
          const child = spawn(bin, [action], { stdio: ['pipe', 'pipe', 'pipe'] });
          let stdout = '';
          let stderr = '';
          child.stdout.on('data', (d: Buffer) => {
            if (stdout.length < 64 * 1024) stdout += d.toString('utf8');
          });
          child.stderr.on('data', (d: Buffer) => {
            if (stderr.length < 64 * 1024) stderr += d.toString('utf8');
          });
          child.on('error', (e) =>
            reject(
              new StevedoreError('ERR_CREDENTIAL_HELPER', `docker-credential-${helper} ${action}: ${e.message}`, {
                cause: e,
              }),
            ),
          );
          child.on('close', (code) => {
            if (code === 0) resolve(stdout);
            else {
              // helpers print their error on stdout (docker reads it from there)
              const msg = (stdout.trim() || stderr.trim() || `exit code ${code}`).slice(0, 500);
              reject(new StevedoreError('ERR_CREDENTIAL_HELPER', `docker-credential-${helper} ${action}: ${msg}`));
            }
          });
          child.stdin.on('error', () => {});
          child.stdin.end(input);
        }),
    );
  }
}
