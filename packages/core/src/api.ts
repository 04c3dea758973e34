/**
 * The one TypeScript API of the core, shared by the Node and browser entry points. Each entry
 * point decides how a backend is obtained (`configureBackend`); everything here only uses the
 * `Backend` contract.
 */
import type { Backend, BackendKind, DigestAlgorithm, HasherBackend } from './backend.js';
import { StevedoreError } from './errors.js';

let current: Backend | undefined;
let loader: (() => Backend) | undefined;

/** Entry points register how to obtain a backend; the first use triggers it. */
export function configureBackend(options: { backend?: Backend; loader?: () => Backend }): void {
  current = options.backend;
  loader = options.loader;
}

/** The active backend (native addon or WebAssembly). */
export function backend(): Backend {
  if (current) return current;
  if (!loader) {
    throw new StevedoreError(
      'ERR_NOT_INITIALIZED',
      'the stevedore core is not initialised: in a browser, await init() from @stevedore/core first',
    );
  }
  current = loader();
  return current;
}

export function backendKind(): BackendKind {
  return backend().kind;
}

/** A validated content digest, e.g. `sha256:e3b0…`. Construct with `Digest.parse` or by hashing. */
export class Digest {
  private constructor(
    readonly algorithm: DigestAlgorithm,
    readonly hex: string,
  ) {}

  /** Parses and validates `algorithm:hex`; throws `ERR_INVALID_DIGEST` saying what is wrong. */
  static parse(text: string): Digest {
    if (typeof text !== 'string') {
      throw new StevedoreError('ERR_INVALID_DIGEST', `invalid digest: expected a string, got ${typeof text}`);
    }
    const { algorithm, hex } = backend().parseDigest(text);
    return new Digest(algorithm, hex);
  }

  /** Trusted construction from a backend result (already validated by the core). */
  static fromCore(text: string): Digest {
    const colon = text.indexOf(':');
    return new Digest(text.slice(0, colon) as DigestAlgorithm, text.slice(colon + 1));
  }

  equals(other: Digest | string): boolean {
    return this.toString() === other.toString();
  }

  /** Throws `ERR_DIGEST_MISMATCH` naming both digests when they differ. */
  verify(expected: Digest, what = 'content'): void {
    if (!this.equals(expected)) {
      throw new StevedoreError(
        'ERR_DIGEST_MISMATCH',
        `${what}: digest mismatch (expected ${expected.toString()}, got ${this.toString()})`,
      );
    }
  }

  toString(): string {
    return `${this.algorithm}:${this.hex}`;
  }

  toJSON(): string {
    return this.toString();
  }
}

/** A streaming hasher: `update` any number of times, then `digest()` once. */
export class Hasher {
  private inner: HasherBackend;
  private bytes = 0;

  constructor(
    readonly algorithm: DigestAlgorithm = 'sha256',
    inner?: HasherBackend,
  ) {
    this.inner = inner ?? backend().createHasher(algorithm);
  }

  update(data: Uint8Array): this {
    this.inner.update(data);
    this.bytes += data.length;
    return this;
  }

  /** Bytes fed so far. */
  get size(): number {
    return this.bytes;
  }

  /**
   * For the engine (`appendToFile`), which feeds a native hasher off the JS thread: the native
   * handle (undefined for a wasm hasher), and the bytes it fed.
   * @internal
   */
  get nativeHandle(): unknown {
    return this.inner.nativeHandle;
  }
  /** @internal */
  fedElsewhere(bytes: number): void {
    this.bytes += bytes;
  }

  /**
   * Feeds `chunks` off the JS thread where the backend can (native: the libuv pool), else here.
   * Keep one call in flight per hasher and leave the chunks untouched until it settles; see
   * {@link HashFeed} for a stream's worth of chunks.
   */
  async updateMany(chunks: Uint8Array[]): Promise<void> {
    if (this.inner.updateAsync) {
      await this.inner.updateAsync(chunks);
      for (const c of chunks) this.bytes += c.length;
    } else for (const c of chunks) this.update(c);
  }

  /** An independent copy of the current state (e.g. to checkpoint a resumable download). */
  clone(): Hasher {
    const copy = new Hasher(this.algorithm, this.inner.clone());
    copy.bytes = this.bytes;
    return copy;
  }

  digest(): Digest {
    return Digest.fromCore(this.inner.finish());
  }
}

/**
 * Hashes a stream's chunks in batches off the JS thread, one batch in flight: `push` each
 * chunk as it passes (await it when it returns a promise: the previous batch is still being
 * hashed), `flush` before reading the hasher. Chunks must not be modified after `push`.
 */
export class HashFeed {
  private batch: Uint8Array[] = [];
  private pending = 0;
  private inflight: Promise<void> | undefined;

  constructor(
    readonly hasher: Hasher,
    private readonly batchBytes = 1 << 20,
  ) {}

  push(chunk: Uint8Array): Promise<void> | undefined {
    this.batch.push(chunk);
    this.pending += chunk.length;
    if (this.pending < this.batchBytes) return undefined;
    return this.start();
  }

  private async start(): Promise<void> {
    await this.inflight;
    const batch = this.batch;
    this.batch = [];
    this.pending = 0;
    const running = this.hasher.updateMany(batch);
    running.catch(() => {}); // observed later by start/flush; never an unhandled rejection
    this.inflight = running;
  }

  /** Every pushed chunk hashed. */
  async flush(): Promise<void> {
    await this.inflight;
    this.inflight = undefined;
    if (this.batch.length) {
      const batch = this.batch;
      this.batch = [];
      this.pending = 0;
      await this.hasher.updateMany(batch);
    }
  }

  /** Waits for a running batch, ignoring its error (cleanup after a failure elsewhere). */
  async settle(): Promise<void> {
    await this.inflight?.catch(() => {});
    this.inflight = undefined;
  }
}

/** One-shot hash on the calling thread (small inputs). */
export function hash(algorithm: DigestAlgorithm, data: Uint8Array): Digest {
  return Digest.fromCore(backend().hash(algorithm, data));
}

/** One-shot hash off the JS thread where the backend can (large inputs). */
export async function hashAsync(algorithm: DigestAlgorithm, data: Uint8Array): Promise<Digest> {
  return Digest.fromCore(await backend().hashAsync(algorithm, data));
}

export function sha256(data: Uint8Array): Digest {
  return hash('sha256', data);
}

export function sha512(data: Uint8Array): Digest {
  return hash('sha512', data);
}
