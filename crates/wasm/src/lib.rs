//! WebAssembly binding of stevedore-core, for `wasm32-unknown-unknown` with no wasm-bindgen.
//!
//! ABI (mirrored by the typed glue in `packages/core/src/wasm.ts`):
//! - Memory is shared through `stevedore_alloc(len) -> ptr` / `stevedore_free(ptr, len)`.
//! - Strings go in as (ptr, len) UTF-8.
//! - Calls return an `i32` status: `>= 0` is success (for handle-returning calls, the handle),
//!   `-1` is an error whose code and message are read with `stevedore_error_*`.
//! - A call producing text leaves it in the result buffer (`stevedore_result_ptr/len`) until
//!   the next call.

use std::cell::RefCell;
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

/// Returns a hasher handle (a pointer, always > 0).
///
/// # Safety
/// See [`bytes`].
#[no_mangle]
pub unsafe extern "C" fn stevedore_hasher_create(alg_ptr: *const u8, alg_len: usize) -> i32 {
    match algorithm(alg_ptr, alg_len) {
        Ok(a) => Box::into_raw(Box::new(Hasher::new(a))) as i32,
        Err(e) => e,
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
pub unsafe extern "C" fn stevedore_hasher_clone(handle: *mut Hasher) -> i32 {
    Box::into_raw(Box::new((*handle).clone())) as i32
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
