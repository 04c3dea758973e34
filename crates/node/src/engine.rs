//! The layer engine (apply/create) exported to JS. Work runs on libuv's pool; progress is
//! published through atomics that JS polls (no thread-safe function needed), so a CLI can
//! draw bars while the promise is pending.

use crate::napi::sys::napi_value;
use crate::napi::{Env, JsError, JsResult};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use stevedore_core::layer::TarSplit;
use stevedore_core::overlay::XattrNamespace;
use stevedore_core::Digest;
use stevedore_fs::{
    apply_layer, create_layer, flatten_layers, ApplyOptions, CreateCompression, CreateMode,
    CreateOptions, MtimePolicy, Progress, Warning, WhiteoutMode,
};

/// Progress counters shared between a running task and JS.
#[derive(Default)]
pub struct ProgressCell {
    compressed: AtomicU64,
    uncompressed: AtomicU64,
    entries: AtomicU64,
}

impl ProgressCell {
    fn store(&self, p: Progress) {
        self.compressed.store(p.compressed_in, Ordering::Relaxed);
        self.uncompressed
            .store(p.uncompressed_out, Ordering::Relaxed);
        self.entries.store(p.entries, Ordering::Relaxed);
    }
}

struct ProgressHandle(Arc<ProgressCell>);

/// `progressCreate()`: counters to pass to `layerApply`/`layerCreate` and read with `progressRead`.
pub fn progress_create(env: Env, _args: &[napi_value]) -> JsResult<napi_value> {
    env.external(ProgressHandle(Arc::default()))
}

/// `progressRead(p) -> { compressed, uncompressed, entries }`.
pub fn progress_read(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let p = &env.get_external::<ProgressHandle>(args[0], "progress")?.0;
    let o = env.object()?;
    env.set(
        o,
        "compressed",
        env.double(p.compressed.load(Ordering::Relaxed) as f64)?,
    )?;
    env.set(
        o,
        "uncompressed",
        env.double(p.uncompressed.load(Ordering::Relaxed) as f64)?,
    )?;
    env.set(
        o,
        "entries",
        env.double(p.entries.load(Ordering::Relaxed) as f64)?,
    )?;
    Ok(o)
}

fn progress_of(env: Env, v: napi_value) -> JsResult<Option<Arc<ProgressCell>>> {
    if env.is_nullish(v)? {
        return Ok(None);
    }
    Ok(Some(
        env.get_external::<ProgressHandle>(v, "progress")?.0.clone(),
    ))
}

/// An optional property of an options object.
fn opt(env: Env, o: napi_value, name: &str) -> JsResult<Option<napi_value>> {
    let v = env.get(o, name)?;
    Ok(if env.is_nullish(v)? { None } else { Some(v) })
}

fn opt_string(env: Env, o: napi_value, name: &str) -> JsResult<Option<String>> {
    opt(env, o, name)?
        .map(|v| env.get_string(v, name))
        .transpose()
}

fn opt_u64(env: Env, o: napi_value, name: &str) -> JsResult<Option<u64>> {
    match opt(env, o, name)? {
        None => Ok(None),
        Some(v) => {
            let n = env.get_f64(v, name)?;
            if !(n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0) {
                return Err(JsError::type_error(format!(
                    "{name} must be a non-negative integer"
                )));
            }
            Ok(Some(n as u64))
        }
    }
}

fn namespace(name: Option<String>) -> JsResult<XattrNamespace> {
    match name.as_deref() {
        None | Some("trusted") => Ok(XattrNamespace::Trusted),
        Some("user") => Ok(XattrNamespace::User),
        Some(other) => Err(JsError::type_error(format!(
            "xattrNamespace must be trusted or user, got {other:?}"
        ))),
    }
}

fn apply_options(env: Env, o: napi_value) -> JsResult<ApplyOptions> {
    let mut opts = ApplyOptions {
        mode: match opt_string(env, o, "mode")?.as_deref() {
            None | Some("overlay") => WhiteoutMode::Overlay,
            Some("apply") => WhiteoutMode::Apply,
            Some("oci") => WhiteoutMode::Oci,
            Some(other) => {
                return Err(JsError::type_error(format!(
                    "mode must be overlay, apply or oci, got {other:?}"
                )))
            }
        },
        xattr_namespace: namespace(opt_string(env, o, "xattrNamespace")?)?,
        ..ApplyOptions::default()
    };
    if let Some(d) = opt_string(env, o, "expectedDigest")? {
        opts.expected_digest = Some(d.parse::<Digest>()?);
    }
    if let Some(d) = opt_string(env, o, "expectedDiffId")? {
        opts.expected_diff_id = Some(d.parse::<Digest>()?);
    }
    if let Some(v) = opt(env, o, "preserveOwner")? {
        opts.preserve_owner = Some(env.get_bool(v, "preserveOwner")?);
    }
    if let Some(v) = opt(env, o, "recordOwner")? {
        opts.record_owner = env.get_bool(v, "recordOwner")?;
    }
    if let Some(n) = opt_u64(env, o, "maxUncompressedBytes")? {
        opts.limits.max_uncompressed_bytes = n;
    }
    if let Some(n) = opt_u64(env, o, "maxRatio")? {
        opts.limits.max_ratio = n;
    }
    if let Some(n) = opt_u64(env, o, "maxEntries")? {
        opts.limits.max_entries = n;
    }
    if let Some(n) = opt_u64(env, o, "maxSparseEntries")? {
        opts.limits.tar.max_sparse_entries = n;
    }
    if let Some(v) = opt(env, o, "tarSplit")? {
        opts.tar_split = env.get_bool(v, "tarSplit")?;
    }
    Ok(opts)
}

fn warnings(env: Env, list: &[Warning]) -> JsResult<napi_value> {
    let items = list
        .iter()
        .map(|w| {
            let o = env.object()?;
            env.set(o, "path", env.string(&w.path)?)?;
            env.set(o, "message", env.string(&w.message)?)?;
            Ok(o)
        })
        .collect::<JsResult<Vec<_>>>()?;
    env.array(&items)
}

/// The fields apply and create reports share, as a JS object.
fn report(
    env: Env,
    digest: &Digest,
    diff_id: &Digest,
    compressed: u64,
    uncompressed: u64,
    entries: u64,
    skipped: &[Warning],
) -> JsResult<napi_value> {
    let o = env.object()?;
    env.set(o, "digest", env.string(&digest.to_string())?)?;
    env.set(o, "diffId", env.string(&diff_id.to_string())?)?;
    env.set(o, "compressedSize", env.double(compressed as f64)?)?;
    env.set(o, "uncompressedSize", env.double(uncompressed as f64)?)?;
    env.set(o, "entries", env.double(entries as f64)?)?;
    env.set(o, "skipped", warnings(env, skipped)?)?;
    Ok(o)
}

/// An [`ApplyReport`] as a JS object (the `report` fields and the compression).
fn apply_report(env: Env, r: &stevedore_fs::ApplyReport) -> JsResult<napi_value> {
    let o = report(
        env,
        &r.digest,
        &r.diff_id,
        r.compressed_size,
        r.uncompressed_size,
        r.entries,
        &r.skipped,
    )?;
    env.set(o, "compression", env.string(r.compression.name())?)?;
    match &r.tar_split {
        Some(TarSplit::Recorded(bytes)) => env.set(o, "tarSplit", env.buffer_copy(bytes)?)?,
        Some(TarSplit::Unusable(why)) => env.set(o, "tarSplitUnusable", env.string(why)?)?,
        None => {}
    }
    Ok(o)
}

fn io_err(what: &str, path: &std::path::Path, e: std::io::Error) -> JsError {
    JsError::new("ERR_IO", format!("{what} {}: {e}", path.display()))
}

/// A file another task is still appending to (a blob being downloaded), so that a layer can be
/// applied while it arrives: the writer reports each append ([`Growing::appended`], from
/// `fileAppend`) and the end (`growingEnd`, ok or failed); a [`FollowReader`] reads up to what
/// was written and waits for more, ends at the end, fails when the writer failed.
#[derive(Default)]
pub struct Growing {
    state: Mutex<GrowState>,
    changed: Condvar,
}

#[derive(Default)]
struct GrowState {
    written: u64,
    /// `Some(true)`: complete (and verified by the writer); `Some(false)`: the writer failed.
    end: Option<bool>,
}

impl Growing {
    pub fn appended(&self, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.written += bytes;
        self.changed.notify_all();
    }

    fn end(&self, ok: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.end.is_none() {
            s.end = Some(ok);
        }
        self.changed.notify_all();
    }
}

/// The JS handle of a [`Growing`]; if JS drops it without an end, readers are told it failed
/// (so no pool thread waits forever).
pub struct GrowingHandle(pub Arc<Growing>);

impl Drop for GrowingHandle {
    fn drop(&mut self) {
        self.0.end(false);
    }
}

/// `growingCreate() -> handle`.
pub fn growing_create(env: Env, _args: &[napi_value]) -> JsResult<napi_value> {
    env.external(GrowingHandle(Arc::new(Growing::default())))
}

/// `growingEnd(handle, ok)`: the writer is done (`ok`: every byte written and verified).
pub fn growing_end(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let ok = env.get_bool(args[1], "ok")?;
    env.get_external::<GrowingHandle>(args[0], "growing")?
        .0
        .end(ok);
    env.undefined()
}

pub fn growing_of(env: Env, v: napi_value) -> JsResult<Option<Arc<Growing>>> {
    if env.is_nullish(v)? {
        return Ok(None);
    }
    Ok(Some(
        env.get_external::<GrowingHandle>(v, "growing")?.0.clone(),
    ))
}

/// Reads a [`Growing`] file as it is written.
struct FollowReader {
    file: File,
    pos: u64,
    growing: Arc<Growing>,
}

impl std::io::Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = {
            let mut s = self.growing.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if s.end == Some(false) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::Other,
                        "the blob's download failed while the layer was being applied",
                    ));
                }
                if s.written > self.pos || s.end == Some(true) {
                    break s.written - self.pos;
                }
                s = self.changed_wait(s);
            }
        };
        if available == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the blob file is shorter than what was written to it",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl FollowReader {
    fn changed_wait<'a>(
        &self,
        guard: std::sync::MutexGuard<'a, GrowState>,
    ) -> std::sync::MutexGuard<'a, GrowState> {
        self.growing
            .changed
            .wait(guard)
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// `layerApply(sourceFile, targetDir, options, progress|null, growing|null) -> Promise<ApplyReport>`;
/// with `growing`, the source is read as it is written (see [`Growing`]). With option
/// `scan: true` the report also has `tree`: the [`tree_scan`] JSON of the result, its files
/// hashed as they were written ([`stevedore_fs::apply_and_scan_layer`]).
pub fn layer_apply(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let source = PathBuf::from(env.get_string(args[0], "source")?);
    let target = PathBuf::from(env.get_string(args[1], "target")?);
    let (opts, scan) = if env.is_nullish(args[2])? {
        (ApplyOptions::default(), false)
    } else {
        let scan = match opt(env, args[2], "scan")? {
            Some(v) => env.get_bool(v, "scan")?,
            None => false,
        };
        (apply_options(env, args[2])?, scan)
    };
    let progress = progress_of(env, args[3])?;
    let growing = growing_of(env, args[4])?;
    env.spawn(
        "stevedore:layerApply",
        &[],
        move || {
            let file = File::open(&source).map_err(|e| io_err("open layer", &source, e))?;
            let on_progress = |p| {
                if let Some(cell) = &progress {
                    cell.store(p);
                }
            };
            let reader: Box<dyn std::io::Read + Send> = match growing {
                Some(growing) => Box::new(FollowReader {
                    file,
                    pos: 0,
                    growing,
                }),
                None => Box::new(file),
            };
            let reader = BufReader::with_capacity(1 << 20, reader);
            if scan {
                let (report, tree) = stevedore_fs::apply_and_scan_layer(
                    reader,
                    &target,
                    &opts,
                    on_progress,
                    scan_threads(),
                )?;
                Ok((report, Some(tree_json(&tree))))
            } else {
                Ok((apply_layer(reader, &target, &opts, on_progress)?, None))
            }
        },
        |env, (r, tree)| {
            let o = apply_report(env, &r)?;
            if let Some(json) = tree {
                env.set(o, "tree", env.string(&json)?)?;
            }
            Ok(o)
        },
    )
}

fn scan_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `layerVerify(sourceFile, options|null) -> Promise<ApplyReport>`: reads a layer blob file to
/// its end on the libuv pool (decompression on a helper thread) and checks its digest and
/// diff_id against `expectedDigest`/`expectedDiffId`, with the apply limits and tar checks;
/// writes nothing.
pub fn layer_verify(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let source = PathBuf::from(env.get_string(args[0], "source")?);
    let opts = if env.is_nullish(args[1])? {
        ApplyOptions::default()
    } else {
        apply_options(env, args[1])?
    };
    env.spawn(
        "stevedore:layerVerify",
        &[],
        move || {
            let file = File::open(&source).map_err(|e| io_err("open layer", &source, e))?;
            Ok(stevedore_core::layer::verify_layer(
                BufReader::with_capacity(1 << 20, file),
                &opts,
                |_| {},
            )?)
        },
        |env, r| apply_report(env, &r),
    )
}

/// `layerFlatten(sourceFiles[], targetDir, options[] (one per layer, nullable entries),
/// parallel|null, progress|null) -> Promise<ApplyReport[]>`: every layer in apply mode onto
/// `targetDir`, staged in parallel and replayed in order (see `stevedore_fs::flatten_layers`).
/// A failure names its layer in the message (`layer N: ...`).
pub fn layer_flatten(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let sources = env.get_array(args[0], "sources")?;
    let sources = sources
        .into_iter()
        .map(|v| env.get_string(v, "source").map(PathBuf::from))
        .collect::<JsResult<Vec<_>>>()?;
    let target = PathBuf::from(env.get_string(args[1], "target")?);
    let options = if env.is_nullish(args[2])? {
        Vec::new()
    } else {
        env.get_array(args[2], "options")?
    };
    let mut opts = Vec::with_capacity(sources.len());
    for i in 0..sources.len() {
        let mut o = match options.get(i) {
            Some(&v) if !env.is_nullish(v)? => apply_options(env, v)?,
            _ => ApplyOptions::default(),
        };
        o.mode = WhiteoutMode::Apply;
        opts.push(o);
    }
    let parallel = if env.is_nullish(args[3])? {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        env.get_f64(args[3], "parallel")?.max(1.0) as usize
    };
    let progress = progress_of(env, args[4])?;
    env.spawn(
        "stevedore:layerFlatten",
        &[],
        move || {
            let mut layers = Vec::with_capacity(sources.len());
            for (source, o) in sources.iter().zip(opts) {
                let file = File::open(source).map_err(|e| io_err("open layer", source, e))?;
                layers.push((BufReader::with_capacity(1 << 20, file), o));
            }
            flatten_layers(layers, &target, parallel, |p| {
                if let Some(cell) = &progress {
                    cell.store(p);
                }
            })
            .map_err(|e| JsError::new(e.error.code(), e.to_string()))
        },
        |env, reports| {
            let mut items = Vec::with_capacity(reports.len());
            for r in &reports {
                items.push(apply_report(env, r)?);
            }
            env.array(&items)
        },
    )
}

fn create_options(env: Env, o: napi_value) -> JsResult<CreateOptions> {
    let mode = match opt_string(env, o, "mode")?.as_deref() {
        None | Some("full") => CreateMode::Full,
        Some("overlay-diff") => {
            CreateMode::OverlayDiff(namespace(opt_string(env, o, "xattrNamespace")?)?)
        }
        Some(other) => {
            return Err(JsError::type_error(format!(
                "mode must be full or overlay-diff, got {other:?}"
            )))
        }
    };
    let level = opt(env, o, "level")?
        .map(|v| env.get_f64(v, "level"))
        .transpose()?;
    let compression = match opt_string(env, o, "compression")?.as_deref() {
        None | Some("gzip") => CreateCompression::Gzip {
            level: level.unwrap_or(6.0).clamp(0.0, 9.0) as u32,
        },
        Some("zstd") => CreateCompression::Zstd {
            level: level.unwrap_or(3.0).clamp(1.0, 22.0) as i32,
        },
        Some("none") => CreateCompression::None,
        Some(other) => {
            return Err(JsError::type_error(format!(
                "compression must be gzip, zstd or none, got {other:?}"
            )))
        }
    };
    let mtime = match opt(env, o, "clampMtime")? {
        Some(v) => MtimePolicy::Clamp(env.get_f64(v, "clampMtime")? as i64),
        None => MtimePolicy::Preserve,
    };
    Ok(CreateOptions {
        mode,
        compression,
        mtime,
        ..CreateOptions::default()
    })
}

/// `layerCreate(sourceDir, outFile, options, progress|null) -> Promise<CreateReport>`.
/// The layer is written to `outFile` (created or truncated); the caller renames it into place.
pub fn layer_create(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let source = PathBuf::from(env.get_string(args[0], "source")?);
    let out = PathBuf::from(env.get_string(args[1], "out")?);
    let opts = if env.is_nullish(args[2])? {
        CreateOptions::default()
    } else {
        create_options(env, args[2])?
    };
    let progress = progress_of(env, args[3])?;
    env.spawn(
        "stevedore:layerCreate",
        &[],
        move || {
            let file = File::create(&out).map_err(|e| io_err("create", &out, e))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            let report = create_layer(&source, &opts, &mut writer, |p| {
                if let Some(cell) = &progress {
                    cell.store(p);
                }
            })?;
            writer.flush().map_err(|e| io_err("write", &out, e))?;
            Ok(report)
        },
        |env, r| {
            report(
                env,
                &r.digest,
                &r.diff_id,
                r.compressed_size,
                r.uncompressed_size,
                r.entries,
                &r.skipped,
            )
        },
    )
}

/// `treeScan(dir, hash = true) -> Promise<string>`: [`stevedore_fs::scan_tree`] as JSON
/// ([`stevedore_fs::scan_tree_metadata`] with `hash` false: no `sha256`),
/// `{"entries":[{path,type,mode,uid,gid,size,mtime?,sha256?,link?,hardlink?,rdev?,xattrs?}],"size"}`
/// — the shape of the overlay store's diff manifests (`mtime` as `secs.nanos`, not for
/// directories; xattr values in hex). JSON because one string crosses into JS far faster than
/// thousands of objects built through Node-API.
pub fn tree_scan(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let dir = PathBuf::from(env.get_string(args[0], "dir")?);
    let hash = env.is_nullish(args[1])? || env.get_bool(args[1], "hash")?;
    env.spawn(
        "stevedore:treeScan",
        &[],
        move || {
            let scan = if hash {
                stevedore_fs::scan_tree(&dir, scan_threads())
            } else {
                stevedore_fs::scan_tree_metadata(&dir)
            }
            .map_err(|e| io_err("scan", &dir, e))?;
            Ok(tree_json(&scan))
        },
        |env, json| env.string(&json),
    )
}

fn json_str(out: &mut String, s: &[u8]) {
    use std::fmt::Write as _;
    out.push('"');
    for c in String::from_utf8_lossy(s).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn tree_json(scan: &stevedore_fs::TreeScan) -> String {
    use std::fmt::Write as _;
    use stevedore_core::layer::FileType;
    let mut out = String::with_capacity(scan.entries.len() * 160 + 32);
    out.push_str("{\"entries\":[");
    for (i, e) in scan.entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"path\":");
        json_str(&mut out, &e.path);
        let kind = match e.kind {
            FileType::File => "file",
            FileType::Dir => "directory",
            FileType::Symlink => "symlink",
            FileType::CharDevice => "char",
            FileType::BlockDevice => "block",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
        };
        let _ = write!(
            out,
            ",\"type\":\"{kind}\",\"mode\":{},\"uid\":{},\"gid\":{},\"size\":{}",
            e.mode, e.uid, e.gid, e.size
        );
        if e.kind != FileType::Dir {
            let _ = write!(out, ",\"mtime\":\"{}.{:09}\"", e.mtime.secs, e.mtime.nanos);
        }
        if let Some(d) = &e.sha256 {
            let _ = write!(out, ",\"sha256\":\"{d}\"");
        }
        if let Some(l) = &e.link {
            out.push_str(",\"link\":");
            json_str(&mut out, l);
        }
        if let Some(h) = &e.hardlink {
            out.push_str(",\"hardlink\":");
            json_str(&mut out, h);
        }
        if let Some((major, minor)) = e.rdev {
            let _ = write!(out, ",\"rdev\":\"{major}:{minor}\"");
        }
        if !e.xattrs.is_empty() {
            out.push_str(",\"xattrs\":{");
            for (j, (name, value)) in e.xattrs.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                json_str(&mut out, name);
                out.push_str(":\"");
                for b in value {
                    let _ = write!(out, "{b:02x}");
                }
                out.push('"');
            }
            out.push('}');
        }
        out.push('}');
    }
    let _ = write!(out, "],\"size\":{}}}", scan.size);
    out
}
