/**
 * @stevedore/registry: a client for the OCI distribution API (docker registries) with docker's
 * credentials, token auth, verified and resumable blob transfers, and push.
 */
export {
  type CallOptions,
  type FetchedManifest,
  MANIFEST_ACCEPT,
  type ProgressEvent,
  RegistryClient,
  type RegistryClientOptions,
  type Repo,
} from './client.js';
export {
  type Credentials,
  DOCKER_HUB_AUTH_KEY,
  DockerConfig,
  type DockerConfigOptions,
  hostnameOfKey,
  serverAddress,
} from './credentials.js';
export { parseErrorBody, RegistryError, type RegistryErrorDetail } from './errors.js';
export { login, logout } from './login.js';
export {
  type ProxyEnv,
  type ProxyResolver,
  parseProxyUrl,
  proxyEnvFrom,
  proxyFromEnvironment,
  proxyResolver,
} from './proxy.js';
export {
  pull,
  pullImage,
  pushImage,
  pushIndex,
  RemoteImage,
  RemoteIndex,
  RemoteLayer,
  registrySink,
} from './remote.js';
export { dump, isLoopbackHost, type RetryOptions, Transport, type TransportOptions } from './transport.js';
export { type Challenge, parseWwwAuthenticate, splitScopes } from './www-authenticate.js';
