// biome-ignore lint/suspicious/noExplicitAny: any function shape; the result keeps its exact type
type Fn = (...args: any[]) => unknown;

/**
 * `name` of the module `load` imports, imported on the first call: a command's implementation
 * (and the registry client, store or server behind it) loads only when that command runs, so
 * `stevedore version` or `--help` start in about half the time.
 */
export function lazy<M extends Record<K, Fn>, K extends keyof M>(
  load: () => Promise<M>,
  name: K,
): (...args: Parameters<M[K]>) => Promise<Awaited<ReturnType<M[K]>>> {
  return async (...args: Parameters<M[K]>): Promise<Awaited<ReturnType<M[K]>>> => {
    const result: unknown = await (await load())[name](...args);
    return result as Awaited<ReturnType<M[K]>>;
  };
}
