/**
 * Typed glue for the WebAssembly build of the core (`crates/wasm`), written by hand because
 * wasm-bindgen is not available. The ABI is documented at the top of `crates/wasm/src/lib.rs`.
 * No Node built-ins here: this file is shared by the Node and browser entry points.
 */
import type { Backend, DigestAlgorithm, HasherBackend } from './backend.js';
import { StevedoreError } from './errors.js';

type Ptr = number;

/** The module's exports, as declared with `#[no_mangle]` in `crates/wasm/src/lib.rs`. */
interface WasmExports {
  memory: WebAssembly.Memory;
  stevedore_alloc(len: number): Ptr;
  stevedore_free(ptr: Ptr, len: number): void;
  stevedore_result_ptr(): Ptr;
  stevedore_result_len(): number;
  stevedore_error_code_ptr(): Ptr;
  stevedore_error_code_len(): number;
  stevedore_error_message_ptr(): Ptr;
  stevedore_error_message_len(): number;
  stevedore_parse_digest(ptr: Ptr, len: number): number;
  stevedore_hash(algPtr: Ptr, algLen: number, ptr: Ptr, len: number): number;
  stevedore_hasher_create(algPtr: Ptr, algLen: number): number;
  stevedore_hasher_update(handle: number, ptr: Ptr, len: number): void;
  stevedore_hasher_clone(handle: number): number;
  stevedore_hasher_finish(handle: number): number;
  stevedore_hasher_free(handle: number): void;
}

/** Inputs are copied into wasm memory in slices of this size. */
const SCRATCH_SIZE = 1 << 20;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

class WasmCore {
  private scratch: Ptr;
  constructor(readonly x: WasmExports) {
    this.scratch = x.stevedore_alloc(SCRATCH_SIZE);
  }

  private bytes(ptr: Ptr, len: number): Uint8Array {
    // Views are rebuilt per call: memory.grow() detaches the old buffer.
    return new Uint8Array(this.x.memory.buffer, ptr, len);
  }

  /** Copies `data` (≤ SCRATCH_SIZE) into the scratch area. */
  put(data: Uint8Array): Ptr {
    this.bytes(this.scratch, data.length).set(data);
    return this.scratch;
  }

  /** Runs `fn` with a short string copied into wasm memory. */
  withString<T>(s: string, fn: (ptr: Ptr, len: number) => T): T {
    const encoded = encoder.encode(s);
    const ptr = this.x.stevedore_alloc(encoded.length);
    try {
      this.bytes(ptr, encoded.length).set(encoded);
      return fn(ptr, encoded.length);
    } finally {
      this.x.stevedore_free(ptr, encoded.length);
    }
  }

  result(): string {
    return decoder.decode(this.bytes(this.x.stevedore_result_ptr(), this.x.stevedore_result_len()));
  }

  check(status: number): number {
    if (status >= 0) return status;
    const code = decoder.decode(this.bytes(this.x.stevedore_error_code_ptr(), this.x.stevedore_error_code_len()));
    const message = decoder.decode(
      this.bytes(this.x.stevedore_error_message_ptr(), this.x.stevedore_error_message_len()),
    );
    throw new StevedoreError(code || 'ERR_INTERNAL', message || 'unknown error in stevedore wasm core');
  }

  /** Feeds `data` to a hasher in scratch-sized slices. */
  feed(handle: number, data: Uint8Array): void {
    for (let off = 0; off < data.length; off += SCRATCH_SIZE) {
      const slice = data.subarray(off, Math.min(off + SCRATCH_SIZE, data.length));
      this.x.stevedore_hasher_update(handle, this.put(slice), slice.length);
    }
  }
}

// Frees Rust hashers that were dropped without `finish()`.
const hasherRegistry = new FinalizationRegistry<{ core: WasmCore; handle: number }>(({ core, handle }) =>
  core.x.stevedore_hasher_free(handle),
);

class WasmHasher implements HasherBackend {
  private handle: number | null;
  constructor(
    private readonly core: WasmCore,
    handle: number,
  ) {
    this.handle = handle;
    hasherRegistry.register(this, { core, handle }, this);
  }
  private live(): number {
    if (this.handle === null) throw new StevedoreError('ERR_HASHER_FINISHED', 'hasher was already finished');
    return this.handle;
  }
  update(data: Uint8Array): void {
    this.core.feed(this.live(), data);
  }
  clone(): HasherBackend {
    return new WasmHasher(this.core, this.core.check(this.core.x.stevedore_hasher_clone(this.live())));
  }
  finish(): string {
    const handle = this.live();
    this.handle = null;
    hasherRegistry.unregister(this);
    this.core.check(this.core.x.stevedore_hasher_finish(handle));
    return this.core.result();
  }
}

function backendFrom(instance: WebAssembly.Instance): Backend {
  const core = new WasmCore(instance.exports as unknown as WasmExports);
  const x = core.x;
  const createHasher = (alg: DigestAlgorithm): WasmHasher =>
    new WasmHasher(
      core,
      core.withString(alg, (p, l) => core.check(x.stevedore_hasher_create(p, l))),
    );
  const hash = (alg: DigestAlgorithm, data: Uint8Array): string => {
    if (data.length <= SCRATCH_SIZE) {
      const ptr = core.put(data);
      core.withString(alg, (p, l) => core.check(x.stevedore_hash(p, l, ptr, data.length)));
      return core.result();
    }
    const h = createHasher(alg);
    h.update(data);
    return h.finish();
  };
  return {
    kind: 'wasm',
    version: () => '0.1.0',
    parseDigest: (digest) => {
      core.withString(digest, (p, l) => core.check(x.stevedore_parse_digest(p, l)));
      const [algorithm, hex] = core.result().split(' ') as [DigestAlgorithm, string];
      return { algorithm, hex };
    },
    hash,
    // WASM runs on the calling thread; callers that need the thread free use a Worker.
    hashAsync: async (alg, data) => hash(alg, data),
    createHasher,
  };
}

/** Instantiates the core from a compiled module, synchronously (Node, workers). */
export function wasmBackendSync(module: WebAssembly.Module): Backend {
  return backendFrom(new WebAssembly.Instance(module, {}));
}

/** Instantiates the core from bytes or a fetch `Response` (browsers: streaming compile). */
export async function wasmBackend(source: BufferSource | Response | Promise<Response>): Promise<Backend> {
  const resolved = await source;
  if (typeof Response !== 'undefined' && resolved instanceof Response) {
    if (!resolved.ok) {
      throw new StevedoreError('ERR_WASM_LOAD', `fetching the stevedore wasm core failed: HTTP ${resolved.status}`);
    }
    if (
      typeof WebAssembly.instantiateStreaming === 'function' &&
      resolved.headers.get('content-type')?.startsWith('application/wasm')
    ) {
      return backendFrom((await WebAssembly.instantiateStreaming(resolved, {})).instance);
    }
    return backendFrom((await WebAssembly.instantiate(await resolved.arrayBuffer(), {})).instance);
  }
  return backendFrom((await WebAssembly.instantiate(resolved as BufferSource, {})).instance);
}
