//! A small, typed layer over Node-API: values, errors with a `code`, externals, and promises
//! resolved from work done on libuv's thread pool. It replaces the `napi` crate, which cannot
//! be installed here; it only covers what stevedore's binding needs.
//!
//! Every exported function has the shape [`Callback`]: it receives the arguments and returns a
//! value or a [`JsError`], which the trampoline throws as a JS `Error` with `err.code` set.
//! Panics are caught at the boundary and surface as `ERR_INTERNAL` instead of aborting node.

pub mod sys;

use std::any::Any;
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use sys::*;

/// An error on its way to JavaScript.
#[derive(Debug, Clone)]
pub struct JsError {
    pub code: &'static str,
    pub message: String,
    /// Thrown as `TypeError` (wrong argument types) rather than `Error`.
    pub type_error: bool,
}

impl JsError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        JsError {
            code,
            message: message.into(),
            type_error: false,
        }
    }
    pub fn type_error(message: impl Into<String>) -> Self {
        JsError {
            code: "ERR_INVALID_ARG_TYPE",
            message: message.into(),
            type_error: true,
        }
    }
    fn napi(status: napi_status, what: &str) -> Self {
        JsError::new(
            "ERR_NAPI",
            format!("Node-API call {what} failed with status {status}"),
        )
    }
}

impl From<stevedore_core::Error> for JsError {
    fn from(e: stevedore_core::Error) -> Self {
        JsError::new(e.code(), e.to_string())
    }
}

pub type JsResult<T> = Result<T, JsError>;

/// The signature of every function we export.
pub type Callback = fn(Env, &[napi_value]) -> JsResult<napi_value>;

/// A handle on the current Node-API environment; valid only during the call that received it.
#[derive(Clone, Copy)]
pub struct Env(pub napi_env);

fn check(status: napi_status, what: &str) -> JsResult<()> {
    if status == NAPI_OK {
        Ok(())
    } else {
        Err(JsError::napi(status, what))
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).expect("NUL bytes were escaped")
}

// The layer's whole surface is kept even when no export uses a helper yet.
#[allow(dead_code)]
impl Env {
    pub fn undefined(self) -> JsResult<napi_value> {
        let mut v = ptr::null_mut();
        check(
            unsafe { napi_get_undefined(self.0, &mut v) },
            "get_undefined",
        )?;
        Ok(v)
    }

    pub fn null(self) -> JsResult<napi_value> {
        let mut v = ptr::null_mut();
        check(unsafe { napi_get_null(self.0, &mut v) }, "get_null")?;
        Ok(v)
    }

    pub fn boolean(self, b: bool) -> JsResult<napi_value> {
        let mut v = ptr::null_mut();
        check(
            unsafe { napi_get_boolean(self.0, b, &mut v) },
            "get_boolean",
        )?;
        Ok(v)
    }

    pub fn double(self, n: f64) -> JsResult<napi_value> {
        let mut v = ptr::null_mut();
        check(
            unsafe { napi_create_double(self.0, n, &mut v) },
            "create_double",
        )?;
        Ok(v)
    }

    pub fn string(self, s: &str) -> JsResult<napi_value> {
        let mut v = ptr::null_mut();
        let status = unsafe {
            napi_create_string_utf8(self.0, s.as_ptr() as *const c_char, s.len(), &mut v)
        };
        check(status, "create_string_utf8")?;
        Ok(v)
    }

    pub fn object(self) -> JsResult<napi_value> {
        let mut v = ptr::null_mut();
        check(
            unsafe { napi_create_object(self.0, &mut v) },
            "create_object",
        )?;
        Ok(v)
    }

    pub fn array(self, items: &[napi_value]) -> JsResult<napi_value> {
        let mut v = ptr::null_mut();
        check(
            unsafe { napi_create_array_with_length(self.0, items.len(), &mut v) },
            "create_array",
        )?;
        for (i, item) in items.iter().enumerate() {
            check(
                unsafe { napi_set_element(self.0, v, i as u32, *item) },
                "set_element",
            )?;
        }
        Ok(v)
    }

    /// A new Node `Buffer` holding a copy of `bytes`.
    pub fn buffer_copy(self, bytes: &[u8]) -> JsResult<napi_value> {
        let mut v = ptr::null_mut();
        let mut data = ptr::null_mut();
        let status = unsafe {
            napi_create_buffer_copy(
                self.0,
                bytes.len(),
                bytes.as_ptr() as *const c_void,
                &mut data,
                &mut v,
            )
        };
        check(status, "create_buffer_copy")?;
        Ok(v)
    }

    pub fn set(self, object: napi_value, name: &str, value: napi_value) -> JsResult<()> {
        let name = cstring(name);
        check(
            unsafe { napi_set_named_property(self.0, object, name.as_ptr(), value) },
            "set_named_property",
        )
    }

    pub fn get(self, object: napi_value, name: &str) -> JsResult<napi_value> {
        let name = cstring(name);
        let mut v = ptr::null_mut();
        check(
            unsafe { napi_get_named_property(self.0, object, name.as_ptr(), &mut v) },
            "get_named_property",
        )?;
        Ok(v)
    }

    pub fn type_of(self, value: napi_value) -> JsResult<napi_valuetype> {
        let mut t = 0;
        check(unsafe { napi_typeof(self.0, value, &mut t) }, "typeof")?;
        Ok(t)
    }

    pub fn is_nullish(self, value: napi_value) -> JsResult<bool> {
        let t = self.type_of(value)?;
        Ok(t == NAPI_UNDEFINED || t == NAPI_NULL)
    }

    /// Reads a JS string argument; `what` names it in the TypeError.
    pub fn get_string(self, value: napi_value, what: &str) -> JsResult<String> {
        if self.type_of(value)? != NAPI_STRING {
            return Err(JsError::type_error(format!("{what} must be a string")));
        }
        let mut len = 0usize;
        check(
            unsafe { napi_get_value_string_utf8(self.0, value, ptr::null_mut(), 0, &mut len) },
            "get_value_string_utf8",
        )?;
        let mut buf = vec![0u8; len + 1];
        let mut written = 0usize;
        check(
            unsafe {
                napi_get_value_string_utf8(
                    self.0,
                    value,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len(),
                    &mut written,
                )
            },
            "get_value_string_utf8",
        )?;
        buf.truncate(written);
        String::from_utf8(buf).map_err(|_| JsError::type_error(format!("{what} is not UTF-8")))
    }

    pub fn get_f64(self, value: napi_value, what: &str) -> JsResult<f64> {
        if self.type_of(value)? != NAPI_NUMBER {
            return Err(JsError::type_error(format!("{what} must be a number")));
        }
        let mut n = 0f64;
        check(
            unsafe { napi_get_value_double(self.0, value, &mut n) },
            "get_value_double",
        )?;
        Ok(n)
    }

    pub fn get_bool(self, value: napi_value, what: &str) -> JsResult<bool> {
        if self.type_of(value)? != NAPI_BOOLEAN {
            return Err(JsError::type_error(format!("{what} must be a boolean")));
        }
        let mut b = false;
        check(
            unsafe { napi_get_value_bool(self.0, value, &mut b) },
            "get_value_bool",
        )?;
        Ok(b)
    }

    /// The elements of a JS array.
    pub fn get_array(self, value: napi_value, what: &str) -> JsResult<Vec<napi_value>> {
        let mut is_array = false;
        check(
            unsafe { napi_is_array(self.0, value, &mut is_array) },
            "is_array",
        )?;
        if !is_array {
            return Err(JsError::type_error(format!("{what} must be an array")));
        }
        let mut len = 0u32;
        check(
            unsafe { napi_get_array_length(self.0, value, &mut len) },
            "get_array_length",
        )?;
        (0..len)
            .map(|i| {
                let mut v = ptr::null_mut();
                check(
                    unsafe { napi_get_element(self.0, value, i, &mut v) },
                    "get_element",
                )?;
                Ok(v)
            })
            .collect()
    }

    /// Borrows the bytes of a `Uint8Array` (or `Buffer`). The slice is valid for the current
    /// call only; to use it on another thread, keep the value alive with [`Env::spawn`].
    pub fn get_bytes<'a>(self, value: napi_value, what: &str) -> JsResult<&'a [u8]> {
        let mut is_typed = false;
        check(
            unsafe { napi_is_typedarray(self.0, value, &mut is_typed) },
            "is_typedarray",
        )?;
        if !is_typed {
            return Err(JsError::type_error(format!(
                "{what} must be a Uint8Array or Buffer"
            )));
        }
        let mut kind = 0;
        let mut len = 0usize;
        let mut data = ptr::null_mut();
        let mut ab = ptr::null_mut();
        let mut offset = 0usize;
        check(
            unsafe {
                napi_get_typedarray_info(
                    self.0,
                    value,
                    &mut kind,
                    &mut len,
                    &mut data,
                    &mut ab,
                    &mut offset,
                )
            },
            "get_typedarray_info",
        )?;
        if kind != NAPI_UINT8_ARRAY {
            return Err(JsError::type_error(format!(
                "{what} must be a Uint8Array or Buffer"
            )));
        }
        if len == 0 || data.is_null() {
            return Ok(&[]);
        }
        // `data` already points at byte_offset within the ArrayBuffer.
        Ok(unsafe { std::slice::from_raw_parts(data as *const u8, len) })
    }

    /// Wraps a Rust value in a JS external; it is dropped when the external is collected.
    pub fn external<T: Any + Send>(self, value: T) -> JsResult<napi_value> {
        unsafe extern "C" fn finalize(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
            drop(Box::from_raw(data as *mut Box<dyn Any + Send>));
        }
        let boxed: Box<Box<dyn Any + Send>> = Box::new(Box::new(value));
        let raw = Box::into_raw(boxed) as *mut c_void;
        let mut v = ptr::null_mut();
        let status =
            unsafe { napi_create_external(self.0, raw, Some(finalize), ptr::null_mut(), &mut v) };
        if status != NAPI_OK {
            drop(unsafe { Box::from_raw(raw as *mut Box<dyn Any + Send>) });
            return Err(JsError::napi(status, "create_external"));
        }
        Ok(v)
    }

    /// The Rust value behind an external made by [`Env::external`], checked by type.
    pub fn get_external<'a, T: Any + Send>(
        self,
        value: napi_value,
        what: &str,
    ) -> JsResult<&'a mut T> {
        if self.type_of(value)? != NAPI_EXTERNAL {
            return Err(JsError::type_error(format!(
                "{what} must be a handle from this addon"
            )));
        }
        let mut raw = ptr::null_mut();
        check(
            unsafe { napi_get_value_external(self.0, value, &mut raw) },
            "get_value_external",
        )?;
        let outer = unsafe { &mut *(raw as *mut Box<dyn Any + Send>) };
        outer
            .downcast_mut::<T>()
            .ok_or_else(|| JsError::type_error(format!("{what} is a handle of another kind")))
    }

    /// A JS `Error` (or `TypeError`) object with `code` set.
    pub fn error_value(self, err: &JsError) -> JsResult<napi_value> {
        let code = self.string(err.code)?;
        let msg = self.string(&err.message)?;
        let mut v = ptr::null_mut();
        let status = unsafe {
            if err.type_error {
                napi_create_type_error(self.0, code, msg, &mut v)
            } else {
                napi_create_error(self.0, code, msg, &mut v)
            }
        };
        check(status, "create_error")?;
        Ok(v)
    }

    fn throw(self, err: &JsError) {
        let mut pending = false;
        unsafe { napi_is_exception_pending(self.0, &mut pending) };
        if pending {
            return; // JS already has an exception to report; keep the first one.
        }
        if let Ok(v) = self.error_value(err) {
            unsafe { napi_throw(self.0, v) };
        }
    }

    /// A JS function that calls `cb` through the panic-catching trampoline.
    pub fn function(self, name: &str, cb: Callback) -> JsResult<napi_value> {
        let mut v = ptr::null_mut();
        let status = unsafe {
            napi_create_function(
                self.0,
                name.as_ptr() as *const c_char,
                name.len(),
                Some(trampoline),
                cb as *mut c_void,
                &mut v,
            )
        };
        check(status, "create_function")?;
        Ok(v)
    }

    /// Runs `work` on libuv's thread pool and returns a promise settled with `done(result)`.
    /// `keep_alive` values (e.g. the buffers `work` reads) stay referenced until it settles.
    pub fn spawn<T, W>(
        self,
        name: &str,
        keep_alive: &[napi_value],
        work: W,
        done: fn(Env, T) -> JsResult<napi_value>,
    ) -> JsResult<napi_value>
    where
        T: Send + 'static,
        W: FnOnce() -> JsResult<T> + Send + 'static,
    {
        let mut deferred = ptr::null_mut();
        let mut promise = ptr::null_mut();
        check(
            unsafe { napi_create_promise(self.0, &mut deferred, &mut promise) },
            "create_promise",
        )?;
        let mut refs = Vec::with_capacity(keep_alive.len());
        for v in keep_alive {
            let mut r = ptr::null_mut();
            check(
                unsafe { napi_create_reference(self.0, *v, 1, &mut r) },
                "create_reference",
            )?;
            refs.push(r);
        }
        let task = Box::new(Task::<T> {
            work: Some(Box::new(work)),
            result: None,
            done,
            deferred,
            refs,
            handle: ptr::null_mut(),
        });
        let raw = Box::into_raw(task);
        let resource_name = self.string(name)?;
        let status = unsafe {
            napi_create_async_work(
                self.0,
                ptr::null_mut(),
                resource_name,
                Some(Task::<T>::execute),
                Some(Task::<T>::complete),
                raw as *mut c_void,
                &mut (*raw).handle,
            )
        };
        if status != NAPI_OK {
            unsafe { Task::<T>::release(self, raw) };
            return Err(JsError::napi(status, "create_async_work"));
        }
        let status = unsafe { napi_queue_async_work(self.0, (*raw).handle) };
        if status != NAPI_OK {
            unsafe {
                napi_delete_async_work(self.0, (*raw).handle);
                Task::<T>::release(self, raw);
            }
            return Err(JsError::napi(status, "queue_async_work"));
        }
        Ok(promise)
    }
}

type Work<T> = Box<dyn FnOnce() -> JsResult<T> + Send>;

struct Task<T> {
    work: Option<Work<T>>,
    result: Option<JsResult<T>>,
    done: fn(Env, T) -> JsResult<napi_value>,
    deferred: napi_deferred,
    refs: Vec<napi_ref>,
    handle: napi_async_work,
}

impl<T: Send + 'static> Task<T> {
    /// Runs on a pool thread: no Node-API calls allowed here.
    unsafe extern "C" fn execute(_env: napi_env, data: *mut c_void) {
        let task = &mut *(data as *mut Task<T>);
        if let Some(work) = task.work.take() {
            task.result = Some(match catch_unwind(AssertUnwindSafe(work)) {
                Ok(r) => r,
                Err(panic) => Err(panic_error(panic)),
            });
        }
    }

    /// Back on the JS thread: settle the promise and free everything.
    unsafe extern "C" fn complete(env: napi_env, status: napi_status, data: *mut c_void) {
        let env = Env(env);
        let raw = data as *mut Task<T>;
        let task = &mut *raw;
        let outcome = match task.result.take() {
            Some(r) => r,
            None => Err(JsError::new(
                "ERR_CANCELLED",
                format!("async work did not run (status {status})"),
            )),
        };
        let done = task.done;
        let settled = outcome.and_then(|value| {
            catch_unwind(AssertUnwindSafe(|| done(env, value)))
                .unwrap_or_else(|p| Err(panic_error(p)))
        });
        match settled {
            Ok(v) => {
                napi_resolve_deferred(env.0, task.deferred, v);
            }
            Err(e) => {
                if let Ok(v) = env.error_value(&e) {
                    napi_reject_deferred(env.0, task.deferred, v);
                }
            }
        }
        napi_delete_async_work(env.0, task.handle);
        Task::<T>::release(env, raw);
    }

    unsafe fn release(env: Env, raw: *mut Task<T>) {
        let task = Box::from_raw(raw);
        for r in &task.refs {
            napi_delete_reference(env.0, *r);
        }
    }
}

fn panic_error(panic: Box<dyn Any + Send>) -> JsError {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    JsError::new(
        "ERR_INTERNAL",
        format!("internal error in stevedore native addon: {msg}"),
    )
}

const MAX_ARGS: usize = 8;

unsafe extern "C" fn trampoline(env: napi_env, info: napi_callback_info) -> napi_value {
    let env = Env(env);
    let mut argc = MAX_ARGS;
    let mut argv = [ptr::null_mut(); MAX_ARGS];
    let mut data = ptr::null_mut();
    let status = napi_get_cb_info(
        env.0,
        info,
        &mut argc,
        argv.as_mut_ptr(),
        ptr::null_mut(),
        &mut data,
    );
    if status != NAPI_OK {
        env.throw(&JsError::napi(status, "get_cb_info"));
        return ptr::null_mut();
    }
    // Missing arguments read as `undefined`, as in JS.
    let undefined = env.undefined().unwrap_or(ptr::null_mut());
    for slot in argv.iter_mut().skip(argc.min(MAX_ARGS)) {
        *slot = undefined;
    }
    let cb: Callback = std::mem::transmute::<*mut c_void, Callback>(data);
    let outcome = catch_unwind(AssertUnwindSafe(|| cb(env, &argv[..])))
        .unwrap_or_else(|p| Err(panic_error(p)));
    match outcome {
        Ok(v) => v,
        Err(e) => {
            env.throw(&e);
            ptr::null_mut()
        }
    }
}

/// Bytes borrowed from a JS value that is kept alive by [`Env::spawn`]'s `keep_alive`.
/// Callers promise not to mutate or detach the buffer until the returned promise settles.
pub struct PinnedBytes {
    ptr: *const u8,
    len: usize,
}

// The JS side keeps the memory alive (a reference) and unmodified (documented contract).
unsafe impl Send for PinnedBytes {}

impl PinnedBytes {
    pub fn new(bytes: &[u8]) -> Self {
        PinnedBytes {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }
    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}
