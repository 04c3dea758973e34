/** The error every stevedore backend throws: `code` is stable, `message` says what and why. */
export class StevedoreError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StevedoreError';
    this.code = code;
  }
}

/** Re-throws a binding error (native `Error` with `code`) as a StevedoreError. */
export function asStevedoreError(e: unknown): StevedoreError {
  if (e instanceof StevedoreError) return e;
  if (e instanceof Error) {
    const raw = (e as Error & { code?: unknown }).code;
    const code = typeof raw === 'string' ? raw : 'ERR_INTERNAL';
    return new StevedoreError(code, e.message, { cause: e });
  }
  return new StevedoreError('ERR_INTERNAL', String(e));
}
