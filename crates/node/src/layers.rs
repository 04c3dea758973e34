//! Tar scanning and the overlay layer-stack resolver, exported to JS. Results travel in the
//! `stevedore_core::wire` encoding, decoded by `packages/core/src/wire.ts`.

use crate::napi::sys::napi_value;
use crate::napi::{Env, JsError, JsResult};
use std::fs::File;
use std::io::Read;
use stevedore_core::overlay::{LayerIndex, LayerStack, WhiteoutForm, XattrNamespace};
use stevedore_core::tar::{Limits, TarWriter};
use stevedore_core::wire::{self, TarScanner};
use stevedore_core::Algorithm;

/// `null`/`undefined` → no content hashing; otherwise an algorithm name.
fn hash_option(env: Env, v: napi_value) -> JsResult<Option<Algorithm>> {
    if env.is_nullish(v)? {
        return Ok(None);
    }
    Ok(Some(env.get_string(v, "hash")?.parse()?))
}

fn limits(env: Env, max_extension: napi_value, max_metadata: napi_value) -> JsResult<Limits> {
    let mut l = Limits::default();
    if !env.is_nullish(max_extension)? {
        l.max_extension_size = env.get_f64(max_extension, "maxExtensionSize")? as u64;
    }
    if !env.is_nullish(max_metadata)? {
        l.max_entry_metadata = env.get_f64(max_metadata, "maxEntryMetadata")? as u64;
    }
    Ok(l)
}

/// Whiteout form names shared with TS: `oci`, `overlay` (trusted.*), `overlay-user` (user.*).
pub fn whiteout_form(env: Env, v: napi_value) -> JsResult<WhiteoutForm> {
    match env.get_string(v, "form")?.as_str() {
        "oci" => Ok(WhiteoutForm::Oci),
        "overlay" => Ok(WhiteoutForm::Overlay(XattrNamespace::Trusted)),
        "overlay-user" => Ok(WhiteoutForm::Overlay(XattrNamespace::User)),
        other => Err(JsError::type_error(format!(
            "form must be oci, overlay or overlay-user, got {other:?}"
        ))),
    }
}

/// A scanner behind an external; `None` once turned into an index.
struct ScannerHandle(Option<TarScanner>);

fn scanner<'a>(env: Env, v: napi_value) -> JsResult<&'a mut TarScanner> {
    env.get_external::<ScannerHandle>(v, "scanner")?
        .0
        .as_mut()
        .ok_or_else(|| JsError::new("ERR_SCANNER_CONSUMED", "tar scanner was already consumed"))
}

/// `tarScannerCreate(hash|null, collectEntries, maxExtensionSize?, maxEntryMetadata?)`
pub fn tar_scanner_create(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let hash = hash_option(env, args[0])?;
    let collect = env.get_bool(args[1], "collectEntries")?;
    let limits = limits(env, args[2], args[3])?;
    env.external(ScannerHandle(Some(TarScanner::new(limits, hash, collect))))
}

/// `tarScannerPush(scanner, chunk, withData) -> Buffer` of events.
pub fn tar_scanner_push(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let s = scanner(env, args[0])?;
    let chunk = env.get_bytes(args[1], "chunk")?;
    let with_data = env.get_bool(args[2], "withData")?;
    let mut out = Vec::with_capacity(256);
    s.push(chunk, &mut out, with_data)?;
    env.buffer_copy(&out)
}

/// `tarScannerFinish(scanner) -> Buffer`: fails when the archive stopped mid-entry.
pub fn tar_scanner_finish(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let mut out = Vec::new();
    scanner(env, args[0])?.finish(&mut out)?;
    env.buffer_copy(&out)
}

/// `tarScanFile(path, hash|null) -> Promise<Buffer>`: a listing (no data events) of a tar file,
/// read and parsed on the libuv pool.
pub fn tar_scan_file(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let path = env.get_string(args[0], "path")?;
    let hash = hash_option(env, args[1])?;
    env.spawn(
        "stevedore:tarScanFile",
        &[],
        move || {
            let io = |e: std::io::Error| JsError::new("ERR_IO", format!("read {path}: {e}"));
            let mut f = File::open(&path).map_err(io)?;
            let mut s = TarScanner::new(Limits::default(), hash, false);
            let mut buf = vec![0u8; 1 << 20];
            let mut out = Vec::new();
            loop {
                let n = f.read(&mut buf).map_err(io)?;
                if n == 0 || s.is_done() {
                    break;
                }
                s.push(&buf[..n], &mut out, false)?;
            }
            s.finish(&mut out)?;
            Ok(out)
        },
        |env, out| env.buffer_copy(&out),
    )
}

struct IndexHandle(LayerIndex);

/// `layerIndexFromScanner(scanner, form)`: the index of everything the scanner collected.
pub fn layer_index_from_scanner(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let form = whiteout_form(env, args[1])?;
    let handle = env.get_external::<ScannerHandle>(args[0], "scanner")?;
    let s = handle
        .0
        .take()
        .ok_or_else(|| JsError::new("ERR_SCANNER_CONSUMED", "tar scanner was already consumed"))?;
    env.external(IndexHandle(s.into_index(form)?))
}

/// `layerIndexFromEntries(encodedEntries, form)`: an index from entries JS collected (a walk).
pub fn layer_index_from_entries(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let entries = wire::read_entries(env.get_bytes(args[0], "entries")?)?;
    let form = whiteout_form(env, args[1])?;
    env.external(IndexHandle(LayerIndex::from_entries(form, entries)?))
}

struct StackHandle(LayerStack);

/// `layerStackCreate([index, …])`, base layer first.
pub fn layer_stack_create(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let layers = env
        .get_array(args[0], "layers")?
        .into_iter()
        .map(|v| Ok(env.get_external::<IndexHandle>(v, "layer index")?.0.clone()))
        .collect::<JsResult<Vec<_>>>()?;
    env.external(StackHandle(LayerStack::new(layers)))
}

fn stack<'a>(env: Env, v: napi_value) -> JsResult<&'a LayerStack> {
    Ok(&env.get_external::<StackHandle>(v, "layer stack")?.0)
}

/// `layerStackResolve(stack, pathBytes) -> Buffer` (a wire resolution).
pub fn layer_stack_resolve(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let s = stack(env, args[0])?;
    let mut out = Vec::new();
    wire::put_resolution(&mut out, &s.resolve(env.get_bytes(args[1], "path")?)?);
    env.buffer_copy(&out)
}

/// `layerStackStat(stack, pathBytes, followLast) -> Buffer` (a wire stat).
pub fn layer_stack_stat(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let s = stack(env, args[0])?;
    let path = env.get_bytes(args[1], "path")?;
    let st = if env.get_bool(args[2], "follow")? {
        s.stat(path)?
    } else {
        s.lstat(path)?
    };
    let mut out = Vec::new();
    wire::put_stat(&mut out, &st);
    env.buffer_copy(&out)
}

/// `layerStackReaddir(stack, pathBytes) -> Buffer` (wire names).
pub fn layer_stack_readdir(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let s = stack(env, args[0])?;
    let names = s.readdir(env.get_bytes(args[1], "path")?)?;
    let mut out = Vec::new();
    wire::put_names(&mut out, &names);
    env.buffer_copy(&out)
}

/// `layerStackWalk(stack) -> Buffer`: every visible path, depth first (`count u32 | stat*`).
pub fn layer_stack_walk(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let mut out = Vec::new();
    wire::put_walk(&mut out, stack(env, args[0])?);
    env.buffer_copy(&out)
}

struct WriterHandle(TarWriter);

fn writer<'a>(env: Env, v: napi_value) -> JsResult<&'a mut TarWriter> {
    Ok(&mut env.get_external::<WriterHandle>(v, "tar writer")?.0)
}

/// `tarWriterCreate(format)`: `pax`, `gnu` or `ustar`.
pub fn tar_writer_create(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let format = wire::tar_format(&env.get_string(args[0], "format")?)?;
    env.external(WriterHandle(TarWriter::new(format)))
}

/// `tarWriterHeader(writer, entryRecord) -> Buffer`: the header block(s) for one entry.
pub fn tar_writer_header(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let w = writer(env, args[0])?;
    let header = wire::WireReader::new(env.get_bytes(args[1], "header")?).tar_header()?;
    env.buffer_copy(w.header(&header)?)
}

/// `tarWriterData(writer, chunk)`: counts the entry's data (checked against its size).
pub fn tar_writer_data(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    writer(env, args[0])?.data(env.get_bytes(args[1], "chunk")?)?;
    env.undefined()
}

/// `tarWriterEndEntry(writer) -> Buffer`: the padding after the entry's data.
pub fn tar_writer_end_entry(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    env.buffer_copy(writer(env, args[0])?.end_entry()?)
}

/// `tarWriterFinish(writer) -> Buffer`: the end-of-archive blocks.
pub fn tar_writer_finish(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    env.buffer_copy(writer(env, args[0])?.finish()?)
}
