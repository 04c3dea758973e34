//! Node-API addon of stevedore: each export translates JS values to core calls and core
//! errors to JS errors (`err.code`); the logic lives in `stevedore-core`.
//!
//! The TypeScript declarations of these exports live in `packages/core/src/native.ts`
//! (`NativeAddon`); keep the two in step.

mod engine;
mod layers;
mod napi;

use napi::sys::{napi_env, napi_value};
use napi::{Callback, Env, JsError, JsResult, PinnedBytes};
use std::fs::File;
use std::io::Read;
use stevedore_core::{digest, Algorithm, Digest, Hasher};

fn algorithm(env: Env, v: napi_value) -> JsResult<Algorithm> {
    Ok(env.get_string(v, "algorithm")?.parse::<Algorithm>()?)
}

fn digest_string(env: Env, d: Digest) -> JsResult<napi_value> {
    env.string(&d.to_string())
}

/// `parseDigest(s) -> { algorithm, hex }`; throws `ERR_INVALID_DIGEST`.
fn parse_digest(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let d: Digest = env.get_string(args[0], "digest")?.parse()?;
    let o = env.object()?;
    env.set(o, "algorithm", env.string(d.algorithm().name())?)?;
    env.set(o, "hex", env.string(&d.hex())?)?;
    Ok(o)
}

/// `hash(algorithm, bytes) -> "sha256:…"`, on the calling thread (for small inputs).
fn hash(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let alg = algorithm(env, args[0])?;
    let bytes = env.get_bytes(args[1], "data")?;
    digest_string(env, digest::hash(alg, bytes))
}

/// `hashAsync(algorithm, bytes) -> Promise<"sha256:…">`, on the libuv pool.
fn hash_async(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let alg = algorithm(env, args[0])?;
    let pinned = PinnedBytes::new(env.get_bytes(args[1], "data")?);
    env.spawn(
        "stevedore:hash",
        &[args[1]],
        move || Ok(digest::hash(alg, pinned.as_slice())),
        digest_string,
    )
}

/// `hashFile(algorithm, path) -> Promise<{ digest, size }>`, read and hashed on the libuv pool.
fn hash_file(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let alg = algorithm(env, args[0])?;
    let path = env.get_string(args[1], "path")?;
    env.spawn(
        "stevedore:hashFile",
        &[],
        move || {
            let io_err = |e: std::io::Error| JsError::new("ERR_IO", format!("hash {path}: {e}"));
            let mut file = File::open(&path).map_err(io_err)?;
            let mut hasher = Hasher::new(alg);
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(io_err)?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                hasher.update(&buf[..n]);
            }
            Ok((hasher.finish(), size))
        },
        |env, (d, size)| {
            let o = env.object()?;
            env.set(o, "digest", env.string(&d.to_string())?)?;
            env.set(o, "size", env.double(size as f64)?)?;
            Ok(o)
        },
    )
}

/// A streaming hasher behind a JS external; `None` once finished.
struct HasherHandle(Option<Hasher>);

fn live_hasher<'a>(env: Env, v: napi_value) -> JsResult<&'a mut Hasher> {
    env.get_external::<HasherHandle>(v, "hasher")?
        .0
        .as_mut()
        .ok_or_else(|| JsError::new("ERR_HASHER_FINISHED", "hasher was already finished"))
}

fn hasher_create(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let alg = algorithm(env, args[0])?;
    env.external(HasherHandle(Some(Hasher::new(alg))))
}

fn hasher_update(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let hasher = live_hasher(env, args[0])?;
    hasher.update(env.get_bytes(args[1], "data")?);
    env.undefined()
}

fn hasher_clone(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let copy = live_hasher(env, args[0])?.clone();
    env.external(HasherHandle(Some(copy)))
}

fn hasher_finish(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    live_hasher(env, args[0])?;
    let handle = env.get_external::<HasherHandle>(args[0], "hasher")?;
    let hasher = handle.0.take().expect("checked live above");
    digest_string(env, hasher.finish())
}

fn version(env: Env, _args: &[napi_value]) -> JsResult<napi_value> {
    env.string(env!("CARGO_PKG_VERSION"))
}

const EXPORTS: &[(&str, Callback)] = &[
    ("version", version),
    ("parseDigest", parse_digest),
    ("hash", hash),
    ("hashAsync", hash_async),
    ("hashFile", hash_file),
    ("hasherCreate", hasher_create),
    ("hasherUpdate", hasher_update),
    ("hasherClone", hasher_clone),
    ("hasherFinish", hasher_finish),
    ("tarScannerCreate", layers::tar_scanner_create),
    ("tarScannerPush", layers::tar_scanner_push),
    ("tarScannerFinish", layers::tar_scanner_finish),
    ("tarScanFile", layers::tar_scan_file),
    ("layerIndexFromScanner", layers::layer_index_from_scanner),
    ("layerIndexFromEntries", layers::layer_index_from_entries),
    ("layerStackCreate", layers::layer_stack_create),
    ("layerStackResolve", layers::layer_stack_resolve),
    ("layerStackStat", layers::layer_stack_stat),
    ("layerStackReaddir", layers::layer_stack_readdir),
    ("layerStackWalk", layers::layer_stack_walk),
    ("tarWriterCreate", layers::tar_writer_create),
    ("tarWriterHeader", layers::tar_writer_header),
    ("tarWriterData", layers::tar_writer_data),
    ("tarWriterEndEntry", layers::tar_writer_end_entry),
    ("tarWriterFinish", layers::tar_writer_finish),
    ("progressCreate", engine::progress_create),
    ("progressRead", engine::progress_read),
    ("layerApply", engine::layer_apply),
    ("layerFlatten", engine::layer_flatten),
    ("treeScan", engine::tree_scan),
    ("layerCreate", engine::layer_create),
];

/// Entry point Node looks up when it `dlopen`s the addon.
///
/// # Safety
/// Called by Node with a valid environment and exports object.
#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    let env = Env(env);
    for (name, cb) in EXPORTS {
        match env.function(name, *cb) {
            Ok(f) => {
                if env.set(exports, name, f).is_err() {
                    return std::ptr::null_mut();
                }
            }
            Err(_) => return std::ptr::null_mut(),
        }
    }
    exports
}

/// The Node-API version this addon needs (8: Node ≥ 12.22 / 14.17 / 15.12).
#[no_mangle]
pub extern "C" fn node_api_module_get_api_version_v1() -> i32 {
    8
}
