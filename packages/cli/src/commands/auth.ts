/** `login` and `logout`: docker's config.json (in DOCKER_CONFIG, else ~/.docker). */
import { DockerConfig, login, logout } from '@stevedore/registry';
import type { Output } from '../output.js';
import { type RegistryOpts, registryClient, registryHost, usage } from './common.js';

export interface LoginOpts extends RegistryOpts {
  username?: string;
  password?: string;
  passwordStdin?: boolean;
}

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

export async function loginCommand(text: string, o: LoginOpts, out: Output): Promise<void> {
  const registry = registryHost(text);
  if (!o.username) throw usage('login needs -u USER (and the password on stdin with --password-stdin)');
  if (o.password !== undefined && o.passwordStdin) throw usage('--password and --password-stdin are exclusive');
  let password = o.password;
  if (o.passwordStdin) password = (await readStdin()).replace(/\r?\n$/, '');
  else if (password !== undefined)
    out.log('WARNING! Using --password on the command line is insecure; use --password-stdin.');
  if (!password) throw usage('login needs a password: pipe it in with --password-stdin');
  const client = registryClient(o);
  try {
    await login(registry, { username: o.username, password }, { client });
  } finally {
    await client.close();
  }
  const file = new DockerConfig().file;
  out.data({ registry, username: o.username, config: file }, () => 'Login Succeeded');
  out.log(`credentials stored in ${file}`);
}

export async function logoutCommand(text: string, out: Output): Promise<void> {
  const registry = registryHost(text);
  const found = await logout(registry);
  const file = new DockerConfig().file;
  out.data({ registry, removed: found, config: file }, () =>
    found ? `Removing login credentials for ${registry}` : `Not logged in to ${registry}`,
  );
}
