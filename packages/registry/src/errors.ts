/**
 * Registry errors: what was being done (operation), where (registry, repository), the HTTP status
 * and the registry's own error codes from the body (`UNAUTHORIZED`, `MANIFEST_UNKNOWN`, …), plus
 * a hint for the common fixes.
 */
import { StevedoreError } from '@stevedore/core';

/** One entry of a distribution error body: `{"errors":[{"code","message","detail"}]}`. */
export interface RegistryErrorDetail {
  code: string;
  message?: string;
  detail?: unknown;
}

export interface RegistryErrorInit {
  registry: string;
  repository?: string | undefined;
  operation: string;
  status?: number | undefined;
  errors?: RegistryErrorDetail[] | undefined;
  hint?: string | undefined;
  cause?: unknown;
}

/**
 * Stable codes: ERR_REGISTRY_UNAUTHORIZED (401), ERR_REGISTRY_DENIED (403), ERR_REGISTRY_NOT_FOUND
 * (404), ERR_REGISTRY_RATE_LIMITED (429), ERR_REGISTRY_HTTP (other statuses), ERR_REGISTRY_NETWORK,
 * ERR_REGISTRY_TLS, ERR_REGISTRY_AUTH (token/realm problems), ERR_REGISTRY_PROTOCOL (the
 * registry broke the API contract), ERR_DIGEST_MISMATCH / ERR_SIZE_MISMATCH, ERR_REGISTRY_TOO_LARGE,
 * ERR_ABORTED, ERR_REGISTRY_PROXY (an invalid proxy setting), ERR_DECOMPRESS (a corrupt layer
 * stream), ERR_UNSUPPORTED (no decoder for the layer's compression here).
 */
export class RegistryError extends StevedoreError {
  readonly registry: string;
  readonly repository: string | undefined;
  readonly operation: string;
  readonly status: number | undefined;
  readonly errors: RegistryErrorDetail[];
  readonly hint: string | undefined;

  constructor(code: string, what: string, init: RegistryErrorInit) {
    const where = init.repository ? `${init.registry}/${init.repository}` : init.registry;
    const codes = (init.errors ?? []).map((e) => (e.message ? `${e.code}: ${e.message}` : e.code));
    const parts = [`${init.operation} ${where}: ${what}`];
    if (init.status !== undefined) parts.push(`(HTTP ${init.status}${codes.length ? `; ${codes.join('; ')}` : ''})`);
    else if (codes.length) parts.push(`(${codes.join('; ')})`);
    let message = parts.join(' ');
    if (init.hint) message += ` — ${init.hint}`;
    super(code, message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'RegistryError';
    this.registry = init.registry;
    this.repository = init.repository;
    this.operation = init.operation;
    this.status = init.status;
    this.errors = init.errors ?? [];
    this.hint = init.hint;
  }

  /** True when the registry said a code (e.g. `MANIFEST_UNKNOWN`). */
  has(code: string): boolean {
    return this.errors.some((e) => e.code === code);
  }
}

/** Parses a distribution error body (at most 64 KiB is read by the caller); [] when it is not one. */
export function parseErrorBody(text: string): RegistryErrorDetail[] {
  try {
    const v = JSON.parse(text) as { errors?: unknown };
    if (!v || typeof v !== 'object' || !Array.isArray(v.errors)) return [];
    return v.errors
      .filter((e): e is Record<string, unknown> => !!e && typeof e === 'object' && typeof e.code === 'string')
      .slice(0, 16)
      .map((e) => ({
        code: String(e.code),
        ...(typeof e.message === 'string' ? { message: e.message.slice(0, 500) } : {}),
        ...(e.detail !== undefined ? { detail: e.detail } : {}),
      }));
  } catch {
    return [];
  }
}

/** The error for an HTTP status the caller did not expect; `detail` follows the status's wording. */
export function httpError(
  status: number,
  errors: RegistryErrorDetail[],
  init: Omit<RegistryErrorInit, 'status' | 'errors'> & { detail?: string | undefined },
): RegistryError {
  const { detail, ...rest } = init;
  const code =
    status === 401
      ? 'ERR_REGISTRY_UNAUTHORIZED'
      : status === 403
        ? 'ERR_REGISTRY_DENIED'
        : status === 404
          ? 'ERR_REGISTRY_NOT_FOUND'
          : status === 429
            ? 'ERR_REGISTRY_RATE_LIMITED'
            : 'ERR_REGISTRY_HTTP';
  const what =
    status === 401
      ? 'unauthorized'
      : status === 403
        ? 'access denied'
        : status === 404
          ? 'not found'
          : status === 429
            ? 'too many requests'
            : 'unexpected response';
  let hint = rest.hint;
  if (!hint && (status === 401 || errors.some((e) => e.code === 'UNAUTHORIZED'))) {
    hint = `run \`stevedore login ${rest.registry}\``;
  } else if (!hint && status === 403) {
    hint = `check that your account may access ${rest.repository ?? 'this repository'} (stevedore login ${rest.registry})`;
  }
  return new RegistryError(code, detail ? `${what}${detail.startsWith(' ') ? '' : ': '}${detail}` : what, {
    ...rest,
    status,
    errors,
    hint,
  });
}
