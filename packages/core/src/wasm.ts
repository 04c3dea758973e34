/**
 * Typed glue for the WebAssembly build of the core (`crates/wasm`), written by hand because
 * wasm-bindgen is not available. The ABI is documented at the top of `crates/wasm/src/lib.rs`.
 * No Node built-ins here: this file is shared by the Node and browser entry points.
 */
import type {
  Backend,
  DigestAlgorithm,
  HasherBackend,
  LayerIndexBackend,
  LayerStackBackend,
  TarScannerBackend,
  TarScanOptions,
  WhiteoutForm,
} from './backend.js';
import { StevedoreError } from './errors.js';
import { decodeNames, decodeResolution, decodeStat, decodeStats, decodeTarEvents, type TarEvent } from './wire.js';

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
  stevedore_tar_scanner_create(
    hashPtr: Ptr,
    hashLen: number,
    collect: number,
    maxExtensionSize: number,
    maxEntryMetadata: number,
  ): number;
  stevedore_tar_scanner_push(scanner: number, ptr: Ptr, len: number, withData: number): number;
  stevedore_tar_scanner_finish(scanner: number): number;
  stevedore_tar_scanner_free(scanner: number): void;
  stevedore_layer_index_from_scanner(scanner: number, formPtr: Ptr, formLen: number): number;
  stevedore_layer_index_from_entries(ptr: Ptr, len: number, formPtr: Ptr, formLen: number): number;
  stevedore_layer_index_free(index: number): void;
  stevedore_layer_stack_create(ptr: Ptr, count: number): number;
  stevedore_layer_stack_resolve(stack: number, ptr: Ptr, len: number): number;
  stevedore_layer_stack_stat(stack: number, ptr: Ptr, len: number, follow: number): number;
  stevedore_layer_stack_readdir(stack: number, ptr: Ptr, len: number): number;
  stevedore_layer_stack_walk(stack: number): number;
  stevedore_layer_stack_free(stack: number): void;
  stevedore_tar_writer_create(ptr: Ptr, len: number): number;
  stevedore_tar_writer_header(writer: number, ptr: Ptr, len: number): number;
  stevedore_tar_writer_data(writer: number, ptr: Ptr, len: number): number;
  stevedore_tar_writer_end_entry(writer: number): number;
  stevedore_tar_writer_finish(writer: number): number;
  stevedore_tar_writer_free(writer: number): void;
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
    return decoder.decode(this.resultBytes());
  }

  /** A view of the result buffer, valid until the next call into the module. */
  resultBytes(): Uint8Array {
    return this.bytes(this.x.stevedore_result_ptr(), this.x.stevedore_result_len());
  }

  /** Runs `fn` with `data` copied into wasm memory (any size). */
  withBytes<T>(data: Uint8Array, fn: (ptr: Ptr, len: number) => T): T {
    if (data.length <= SCRATCH_SIZE) return fn(this.put(data), data.length);
    const ptr = this.x.stevedore_alloc(data.length);
    try {
      this.bytes(ptr, data.length).set(data);
      return fn(ptr, data.length);
    } finally {
      this.x.stevedore_free(ptr, data.length);
    }
  }

  /** Handle-returning calls give 0 on error (pointers are read unsigned). */
  handle(h: number): number {
    if (h !== 0) return h >>> 0;
    return this.check(-1);
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

// Frees Rust objects whose JS wrappers were collected.
const freeRegistry = new FinalizationRegistry<() => void>((free) => free());

class WasmIndex implements LayerIndexBackend {
  readonly backend = 'wasm' as const;
  constructor(
    readonly core: WasmCore,
    readonly handle: number,
  ) {
    freeRegistry.register(this, () => core.x.stevedore_layer_index_free(handle));
  }
}

function wasmScanner(core: WasmCore, o: TarScanOptions): TarScannerBackend {
  const x = core.x;
  const create = (hp: Ptr, hl: number) =>
    core.handle(
      x.stevedore_tar_scanner_create(
        hp,
        hl,
        o.collectEntries ? 1 : 0,
        o.maxExtensionSize ?? 0,
        o.maxEntryMetadata ?? 0,
      ),
    );
  let handle: number | null = o.hash ? core.withString(o.hash, create) : create(0, 0);
  const token = {};
  freeRegistry.register(token, () => handle !== null && x.stevedore_tar_scanner_free(handle), token);
  const live = () => {
    if (handle === null) throw new StevedoreError('ERR_SCANNER_CONSUMED', 'tar scanner was already consumed');
    return handle;
  };
  return {
    push: (chunk, withData) => {
      const h = live();
      const events: TarEvent[] = [];
      // The scanner only keeps partial headers internally, so the chunk may go in slices.
      for (let off = 0; off < chunk.length || (off === 0 && chunk.length === 0); off += SCRATCH_SIZE) {
        const piece = chunk.subarray(off, Math.min(off + SCRATCH_SIZE, chunk.length));
        core.check(x.stevedore_tar_scanner_push(h, core.put(piece), piece.length, withData ? 1 : 0));
        decodeTarEvents(core.resultBytes(), piece, events);
        if (chunk.length === 0) break;
      }
      return events;
    },
    finish: () => {
      core.check(x.stevedore_tar_scanner_finish(live()));
      return decodeTarEvents(core.resultBytes(), undefined);
    },
    toIndex: (form: WhiteoutForm) => {
      const h = live();
      handle = null;
      freeRegistry.unregister(token);
      return new WasmIndex(
        core,
        core.withString(form, (p, l) => core.handle(x.stevedore_layer_index_from_scanner(h, p, l))),
      );
    },
  };
}

function wasmStack(core: WasmCore, layers: LayerIndexBackend[]): LayerStackBackend {
  const x = core.x;
  const handles = new Uint32Array(
    layers.map((l) => {
      if (!(l instanceof WasmIndex) || l.core !== core) {
        throw new StevedoreError('ERR_BACKEND_MISMATCH', 'layer index was built by another backend');
      }
      return l.handle;
    }),
  );
  const stack = core.withBytes(new Uint8Array(handles.buffer), (p) =>
    core.handle(x.stevedore_layer_stack_create(p, handles.length)),
  );
  const wrapper: LayerStackBackend = {
    resolve: (path) =>
      core.withBytes(path, (p, l) => {
        core.check(x.stevedore_layer_stack_resolve(stack, p, l));
        return decodeResolution(core.resultBytes());
      }),
    stat: (path, follow) =>
      core.withBytes(path, (p, l) => {
        core.check(x.stevedore_layer_stack_stat(stack, p, l, follow ? 1 : 0));
        return decodeStat(core.resultBytes());
      }),
    readdir: (path) =>
      core.withBytes(path, (p, l) => {
        core.check(x.stevedore_layer_stack_readdir(stack, p, l));
        return decodeNames(core.resultBytes());
      }),
    walk: () => {
      core.check(x.stevedore_layer_stack_walk(stack));
      return decodeStats(core.resultBytes());
    },
  };
  freeRegistry.register(wrapper, () => x.stevedore_layer_stack_free(stack));
  return wrapper;
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
    return new WasmHasher(this.core, this.core.handle(this.core.x.stevedore_hasher_clone(this.live())));
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
    createTarScanner: (o) => wasmScanner(core, o),
    createTarWriter: (format) => {
      const w = core.withString(format, (p, l) => core.handle(x.stevedore_tar_writer_create(p, l)));
      const out = (status: number) => {
        core.check(status);
        return core.resultBytes().slice();
      };
      const writer = {
        header: (record: Uint8Array) => core.withBytes(record, (p, l) => out(x.stevedore_tar_writer_header(w, p, l))),
        data: (chunk: Uint8Array) => {
          for (let off = 0; off < chunk.length; off += SCRATCH_SIZE) {
            const piece = chunk.subarray(off, off + SCRATCH_SIZE);
            core.check(x.stevedore_tar_writer_data(w, core.put(piece), piece.length));
          }
        },
        endEntry: () => out(x.stevedore_tar_writer_end_entry(w)),
        finish: () => out(x.stevedore_tar_writer_finish(w)),
      };
      freeRegistry.register(writer, () => x.stevedore_tar_writer_free(w));
      return writer;
    },
    layerIndexFromEntries: (encoded, form) =>
      new WasmIndex(
        core,
        core.withBytes(encoded, (p, l) =>
          core.withString(form, (fp, fl) => core.handle(x.stevedore_layer_index_from_entries(p, l, fp, fl))),
        ),
      ),
    createLayerStack: (layers) => wasmStack(core, layers),
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
