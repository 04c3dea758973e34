//! WebAssembly binding of stevedore-core, for `wasm32-unknown-unknown` with no wasm-bindgen.
//!
//! ABI (mirrored by the typed glue in `packages/core/src/wasm.ts`):
//! - Memory is shared through `stevedore_alloc(len) -> ptr` / `stevedore_free(ptr, len)`.
//! - Strings go in as (ptr, len) UTF-8.
//! - Calls return an `i32` status: `>= 0` is success, `-1` is an error whose code and message
//!   are read with `stevedore_error_*`. Calls that create a handle return it (a non-zero
//!   pointer, to be read as unsigned) or `0` on error.
//! - A call producing text leaves it in the result buffer (`stevedore_result_ptr/len`) until
//!   the next call.

use std::cell::RefCell;
use stevedore_core::overlay::{LayerIndex, LayerStack, WhiteoutForm, XattrNamespace};
use stevedore_core::tar::{Limits, TarWriter};
use stevedore_core::wire::{self, TarScanner};
use stevedore_core::{digest, Algorithm, Digest, Error, Hasher};

struct LastError {
    code: &'static str,
    message: String,
}

thread_local! {
    static RESULT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static ERROR: RefCell<LastError> = const { RefCell::new(LastError { code: "", message: String::new() }) };
}

const ERR: i32 = -1;

fn set_result(bytes: &[u8]) {
    RESULT.with(|r| {
        let mut r = r.borrow_mut();
        r.clear();
        r.extend_from_slice(bytes);
    });
}

fn fail(code: &'static str, message: String) -> i32 {
    ERROR.with(|e| *e.borrow_mut() = LastError { code, message });
    ERR
}

fn fail_core(e: Error) -> i32 {
    fail(e.code(), e.to_string())
}

/// # Safety
/// `ptr`/`len` must describe memory the JS glue wrote into this module's memory.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, len)
    }
}

unsafe fn text<'a>(ptr: *const u8, len: usize) -> Result<&'a str, i32> {
    std::str::from_utf8(bytes(ptr, len))
        .map_err(|_| fail("ERR_INVALID_ARG_TYPE", "argument is not UTF-8".into()))
}

unsafe fn algorithm(ptr: *const u8, len: usize) -> Result<Algorithm, i32> {
    text(ptr, len)?.parse::<Algorithm>().map_err(fail_core)
}

#[no_mangle]
pub extern "C" fn stevedore_alloc(len: usize) -> *mut u8 {
    let mut v = Vec::<u8>::with_capacity(len.max(1));
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

/// # Safety
/// `ptr` must come from `stevedore_alloc(len)` with the same `len`.
#[no_mangle]
pub unsafe extern "C" fn stevedore_free(ptr: *mut u8, len: usize) {
    drop(Vec::from_raw_parts(ptr, 0, len.max(1)));
}

#[no_mangle]
pub extern "C" fn stevedore_result_ptr() -> *const u8 {
    RESULT.with(|r| r.borrow().as_ptr())
}

#[no_mangle]
pub extern "C" fn stevedore_result_len() -> usize {
    RESULT.with(|r| r.borrow().len())
}

#[no_mangle]
pub extern "C" fn stevedore_error_code_ptr() -> *const u8 {
    ERROR.with(|e| e.borrow().code.as_ptr())
}

#[no_mangle]
pub extern "C" fn stevedore_error_code_len() -> usize {
    ERROR.with(|e| e.borrow().code.len())
}

#[no_mangle]
pub extern "C" fn stevedore_error_message_ptr() -> *const u8 {
    ERROR.with(|e| e.borrow().message.as_ptr())
}

#[no_mangle]
pub extern "C" fn stevedore_error_message_len() -> usize {
    ERROR.with(|e| e.borrow().message.len())
}

/// Result text: `"<algorithm> <hex>"`.
///
/// # Safety
/// See [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_parse_digest(ptr: *const u8, len: usize) -> i32 {
    let s = match text(ptr, len) {
        Ok(s) => s,
        Err(e) => return e,
    };
    match s.parse::<Digest>() {
        Ok(d) => {
            set_result(format!("{} {}", d.algorithm().name(), d.hex()).as_bytes());
            0
        }
        Err(e) => fail_core(e),
    }
}

/// Result text: the digest string.
///
/// # Safety
/// See [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_hash(
    alg_ptr: *const u8,
    alg_len: usize,
    ptr: *const u8,
    len: usize,
) -> i32 {
    let alg = match algorithm(alg_ptr, alg_len) {
        Ok(a) => a,
        Err(e) => return e,
    };
    set_result(digest::hash(alg, bytes(ptr, len)).to_string().as_bytes());
    0
}

/// Returns a hasher handle, or 0 on error.
///
/// # Safety
/// See [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_hasher_create(alg_ptr: *const u8, alg_len: usize) -> usize {
    match algorithm(alg_ptr, alg_len) {
        Ok(a) => Box::into_raw(Box::new(Hasher::new(a))) as usize,
        Err(_) => 0,
    }
}

/// # Safety
/// `handle` must be a live handle from `stevedore_hasher_create` or `stevedore_hasher_clone`.
#[no_mangle]
pub unsafe extern "C" fn stevedore_hasher_update(handle: *mut Hasher, ptr: *const u8, len: usize) {
    (*handle).update(bytes(ptr, len));
}

/// # Safety
/// As for `stevedore_hasher_update`.
#[no_mangle]
pub unsafe extern "C" fn stevedore_hasher_clone(handle: *mut Hasher) -> usize {
    Box::into_raw(Box::new((*handle).clone())) as usize
}

/// Finishes and frees the hasher; the digest string is in the result buffer.
///
/// # Safety
/// As for `stevedore_hasher_update`; the handle is dead afterwards.
#[no_mangle]
pub unsafe extern "C" fn stevedore_hasher_finish(handle: *mut Hasher) -> i32 {
    let hasher = Box::from_raw(handle);
    set_result(hasher.finish().to_string().as_bytes());
    0
}

/// Frees a hasher that will not be finished.
///
/// # Safety
/// As for `stevedore_hasher_finish`.
#[no_mangle]
pub unsafe extern "C" fn stevedore_hasher_free(handle: *mut Hasher) {
    drop(Box::from_raw(handle));
}

fn result_of(r: stevedore_core::Result<Vec<u8>>) -> i32 {
    match r {
        Ok(bytes) => {
            set_result(&bytes);
            0
        }
        Err(e) => fail_core(e),
    }
}

fn handle_of<T>(r: std::result::Result<T, i32>) -> usize {
    match r {
        Ok(v) => Box::into_raw(Box::new(v)) as usize,
        Err(_) => 0,
    }
}

/// # Safety
/// See [`bytes`].
unsafe fn whiteout_form(ptr: *const u8, len: usize) -> Result<WhiteoutForm, i32> {
    match text(ptr, len)? {
        "oci" => Ok(WhiteoutForm::Oci),
        "overlay" => Ok(WhiteoutForm::Overlay(XattrNamespace::Trusted)),
        "overlay-user" => Ok(WhiteoutForm::Overlay(XattrNamespace::User)),
        other => Err(fail(
            "ERR_INVALID_ARG_TYPE",
            format!("form must be oci, overlay or overlay-user, got {other:?}"),
        )),
    }
}

/// A tar scanner (see `stevedore_core::wire::TarScanner`); `hash_len == 0` means no content
/// hashing; limits `<= 0` keep the defaults. Returns a handle or 0.
///
/// # Safety
/// See [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_scanner_create(
    hash_ptr: *const u8,
    hash_len: usize,
    collect_entries: u32,
    max_extension_size: f64,
    max_entry_metadata: f64,
) -> usize {
    let hash = if hash_len == 0 {
        Ok(None)
    } else {
        algorithm(hash_ptr, hash_len).map(Some)
    };
    let mut limits = Limits::default();
    if max_extension_size > 0.0 {
        limits.max_extension_size = max_extension_size as u64;
    }
    if max_entry_metadata > 0.0 {
        limits.max_entry_metadata = max_entry_metadata as u64;
    }
    handle_of(hash.map(|h| TarScanner::new(limits, h, collect_entries != 0)))
}

/// Events for `input` in the result buffer (data offsets are relative to `ptr`).
///
/// # Safety
/// `scanner` must be a live scanner handle; see [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_scanner_push(
    scanner: *mut TarScanner,
    ptr: *const u8,
    len: usize,
    with_data: u32,
) -> i32 {
    let mut out = Vec::with_capacity(256);
    result_of(
        (*scanner)
            .push(bytes(ptr, len), &mut out, with_data != 0)
            .map(|_| out),
    )
}

/// # Safety
/// `scanner` must be a live scanner handle.
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_scanner_finish(scanner: *mut TarScanner) -> i32 {
    let mut out = Vec::new();
    result_of((*scanner).finish(&mut out).map(|_| out))
}

/// # Safety
/// `scanner` must be a live scanner handle; it is dead afterwards.
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_scanner_free(scanner: *mut TarScanner) {
    drop(Box::from_raw(scanner));
}

/// Turns a scanner (created with `collect_entries`) into a layer index; the scanner handle is
/// consumed either way. Returns an index handle or 0.
///
/// # Safety
/// `scanner` must be a live scanner handle; see [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_layer_index_from_scanner(
    scanner: *mut TarScanner,
    form_ptr: *const u8,
    form_len: usize,
) -> usize {
    let scanner = Box::from_raw(scanner);
    handle_of(
        whiteout_form(form_ptr, form_len)
            .and_then(|form| scanner.into_index(form).map_err(fail_core)),
    )
}

/// A layer index from wire-encoded entries. Returns an index handle or 0.
///
/// # Safety
/// See [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_layer_index_from_entries(
    ptr: *const u8,
    len: usize,
    form_ptr: *const u8,
    form_len: usize,
) -> usize {
    handle_of(whiteout_form(form_ptr, form_len).and_then(|form| {
        wire::read_entries(bytes(ptr, len))
            .and_then(|entries| LayerIndex::from_entries(form, entries))
            .map_err(fail_core)
    }))
}

/// # Safety
/// `index` must be a live index handle; it is dead afterwards.
#[no_mangle]
pub unsafe extern "C" fn stevedore_layer_index_free(index: *mut LayerIndex) {
    drop(Box::from_raw(index));
}

/// A stack from `count` index handles (u32 each, base first) at `ptr`; the indexes stay
/// usable. Returns a stack handle (never 0).
///
/// # Safety
/// `ptr` holds `count` live index handles.
#[no_mangle]
pub unsafe extern "C" fn stevedore_layer_stack_create(ptr: *const u32, count: usize) -> usize {
    let handles = if count == 0 {
        &[][..]
    } else {
        std::slice::from_raw_parts(ptr, count)
    };
    let layers = handles
        .iter()
        .map(|h| (*(*h as usize as *const LayerIndex)).clone())
        .collect();
    Box::into_raw(Box::new(LayerStack::new(layers))) as usize
}

/// # Safety
/// `stack` must be a live stack handle; see [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_layer_stack_resolve(
    stack: *const LayerStack,
    ptr: *const u8,
    len: usize,
) -> i32 {
    result_of((*stack).resolve(bytes(ptr, len)).map(|r| {
        let mut out = Vec::new();
        wire::put_resolution(&mut out, &r);
        out
    }))
}

/// # Safety
/// `stack` must be a live stack handle; see [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_layer_stack_stat(
    stack: *const LayerStack,
    ptr: *const u8,
    len: usize,
    follow: u32,
) -> i32 {
    let path = bytes(ptr, len);
    let st = if follow != 0 {
        (*stack).stat(path)
    } else {
        (*stack).lstat(path)
    };
    result_of(st.map(|st| {
        let mut out = Vec::new();
        wire::put_stat(&mut out, &st);
        out
    }))
}

/// # Safety
/// `stack` must be a live stack handle; see [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_layer_stack_readdir(
    stack: *const LayerStack,
    ptr: *const u8,
    len: usize,
) -> i32 {
    result_of((*stack).readdir(bytes(ptr, len)).map(|names| {
        let mut out = Vec::new();
        wire::put_names(&mut out, &names);
        out
    }))
}

/// Every visible path, depth first: `count u32 | stat*`.
///
/// # Safety
/// `stack` must be a live stack handle.
#[no_mangle]
pub unsafe extern "C" fn stevedore_layer_stack_walk(stack: *const LayerStack) -> i32 {
    let mut out = Vec::new();
    wire::put_walk(&mut out, &*stack);
    result_of(Ok(out))
}

/// # Safety
/// `stack` must be a live stack handle; it is dead afterwards.
#[no_mangle]
pub unsafe extern "C" fn stevedore_layer_stack_free(stack: *mut LayerStack) {
    drop(Box::from_raw(stack));
}

/// A tar writer for `format` (`pax`, `gnu`, `ustar`); a handle or 0.
///
/// # Safety
/// See [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_writer_create(ptr: *const u8, len: usize) -> usize {
    handle_of(
        text(ptr, len)
            .and_then(|f| wire::tar_format(f).map_err(fail_core))
            .map(TarWriter::new),
    )
}

/// The header block(s) for one wire entry record, in the result buffer.
///
/// # Safety
/// `writer` must be a live writer handle; see [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_writer_header(
    writer: *mut TarWriter,
    ptr: *const u8,
    len: usize,
) -> i32 {
    result_of(
        wire::WireReader::new(bytes(ptr, len))
            .tar_header()
            .and_then(|h| (*writer).header(&h).map(|b| b.to_vec())),
    )
}

/// Counts `len` bytes of the current entry's data (checked against its size).
///
/// # Safety
/// `writer` must be a live writer handle; see [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_writer_data(
    writer: *mut TarWriter,
    ptr: *const u8,
    len: usize,
) -> i32 {
    result_of((*writer).data(bytes(ptr, len)).map(|_| Vec::new()))
}

/// The padding after the current entry, in the result buffer.
///
/// # Safety
/// `writer` must be a live writer handle.
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_writer_end_entry(writer: *mut TarWriter) -> i32 {
    result_of((*writer).end_entry().map(|b| b.to_vec()))
}

/// The end-of-archive blocks, in the result buffer.
///
/// # Safety
/// `writer` must be a live writer handle.
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_writer_finish(writer: *mut TarWriter) -> i32 {
    result_of((*writer).finish().map(|b| b.to_vec()))
}

/// # Safety
/// `writer` must be a live writer handle; it is dead afterwards.
#[no_mangle]
pub unsafe extern "C" fn stevedore_tar_writer_free(writer: *mut TarWriter) {
    drop(Box::from_raw(writer));
}
