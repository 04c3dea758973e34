/** `login`/`logout` as docker does them: check the credentials against the registry, then store them. */
import type { RegistryClient } from './client.js';
import { RegistryClient as Client } from './client.js';
import { type Credentials, DockerConfig, type DockerConfigOptions } from './credentials.js';

/**
 * Verifies `credentials` with a `/v2/` ping (and a token fetch when the registry uses tokens),
 * then writes them to docker's config.json (or its credential helper).
 */
export async function login(
  registry: string,
  credentials: Credentials,
  options: { client?: RegistryClient; config?: DockerConfigOptions; signal?: AbortSignal } = {},
): Promise<void> {
  const base = options.client?.options ?? {};
  const probe = new Client({ ...base, credentials: async () => ({ ...credentials }) });
  try {
    await probe.ping(registry, { signal: options.signal });
  } finally {
    await probe.close();
  }
  await new DockerConfig(options.config).store(registry, credentials);
  options.client?.transport.reset(registry);
}

/** Removes stored credentials for `registry`; false when there were none. */
export async function logout(
  registry: string,
  options: { client?: RegistryClient; config?: DockerConfigOptions } = {},
): Promise<boolean> {
  const found = await new DockerConfig(options.config).erase(registry);
  options.client?.transport.reset(registry);
  return found;
}
