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
use std::sync::{Arc, Mutex};
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

/// A streaming hasher behind a JS external; `None` once finished. Shared (`Arc<Mutex>`) so
/// that `fileAppend` can feed it on a pool thread while JS holds the handle.
struct HasherHandle(Arc<Mutex<Option<Hasher>>>);

fn hasher_cell(env: Env, v: napi_value) -> JsResult<Arc<Mutex<Option<Hasher>>>> {
    Ok(env.get_external::<HasherHandle>(v, "hasher")?.0.clone())
}

fn finished() -> JsError {
    JsError::new("ERR_HASHER_FINISHED", "hasher was already finished")
}

fn with_hasher<T>(env: Env, v: napi_value, f: impl FnOnce(&mut Hasher) -> T) -> JsResult<T> {
    let cell = hasher_cell(env, v)?;
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_mut().map(f).ok_or_else(finished)
}

fn hasher_create(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let alg = algorithm(env, args[0])?;
    env.external(HasherHandle(Arc::new(Mutex::new(Some(Hasher::new(alg))))))
}

fn hasher_update(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let data = env.get_bytes(args[1], "data")?;
    with_hasher(env, args[0], |h| h.update(data))?;
    env.undefined()
}

fn hasher_clone(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let copy = with_hasher(env, args[0], |h| h.clone())?;
    env.external(HasherHandle(Arc::new(Mutex::new(Some(copy)))))
}

fn hasher_finish(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let cell = hasher_cell(env, args[0])?;
    let hasher = cell
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(finished)?;
    digest_string(env, hasher.finish())
}

/// `hasherUpdateAsync(hasher, chunks: Uint8Array[]) -> Promise<bytes>`: feeds the chunks to
/// the hasher on the libuv pool (one call in flight per hasher; chunks untouched meanwhile).
fn hasher_update_async(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let cell = hasher_cell(env, args[0])?;
    let list = env.get_array(args[1], "chunks")?;
    let mut chunks = Vec::with_capacity(list.len());
    for &c in &list {
        chunks.push(PinnedBytes::new(env.get_bytes(c, "chunk")?));
    }
    env.spawn(
        "stevedore:hasherUpdate",
        &[args[1]],
        move || {
            let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
            let hasher = guard.as_mut().ok_or_else(finished)?;
            let mut total = 0u64;
            for c in &chunks {
                hasher.update(c.as_slice());
                total += c.as_slice().len() as u64;
            }
            Ok(total)
        },
        |env, total| env.double(total as f64),
    )
}

/// `fileAppend(fd, chunks: Uint8Array[], hasher|null, growing|null, writeback|null, direct|null) -> Promise<bytes written>`: on the libuv
/// pool, writes every chunk to the open file descriptor `fd` (at its current offset) and feeds
/// it to `hasher`. Moves a download's hashing and writing off the JS thread in one pool trip;
/// the caller keeps one call in flight per file (order) and does not touch the chunks meanwhile.
///
/// `direct`: `fd` was opened with `O_DIRECT`. A batch whose length is a multiple of
/// [`DIRECT_ALIGN`] is copied into an aligned buffer and written past the page cache; any other
/// (the file's last piece) turns `O_DIRECT` off for the rest of the file and is written normally.
fn file_append(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let fd = env.get_f64(args[0], "fd")?;
    if fd < 0.0 || fd.fract() != 0.0 || fd > f64::from(i32::MAX) {
        return Err(JsError::type_error("fd must be a file descriptor"));
    }
    let fd = fd as i32;
    let list = env.get_array(args[1], "chunks")?;
    let mut chunks = Vec::with_capacity(list.len());
    for &c in &list {
        chunks.push(PinnedBytes::new(env.get_bytes(c, "chunk")?));
    }
    let hasher = if env.is_nullish(args[2])? {
        None
    } else {
        Some(hasher_cell(env, args[2])?)
    };
    let growing = engine::growing_of(env, args[3])?;
    let writeback = !env.is_nullish(args[4])? && env.get_bool(args[4], "writeback")?;
    let direct = !env.is_nullish(args[5])? && env.get_bool(args[5], "direct")?;
    env.spawn(
        "stevedore:fileAppend",
        &[args[1]],
        move || {
            use std::os::fd::FromRawFd as _;
            // SAFETY: the caller's open descriptor, borrowed for these writes and never
            // closed here (ManuallyDrop).
            let mut file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
            let mut total = 0u64;
            let mut guard = hasher
                .as_ref()
                .map(|cell| cell.lock().unwrap_or_else(|e| e.into_inner()));
            for chunk in &chunks {
                let data = chunk.as_slice();
                if let Some(g) = &mut guard {
                    g.as_mut().ok_or_else(finished)?.update(data);
                }
                total += data.len() as u64;
            }
            let io_err =
                |e: std::io::Error| JsError::new("ERR_IO", format!("write to fd {fd}: {e}"));
            if direct && total % DIRECT_ALIGN as u64 == 0 {
                write_direct(&mut file, &chunks).map_err(io_err)?;
            } else {
                if direct {
                    leave_direct_io(fd).map_err(io_err)?;
                }
                // One writev for the batch (network chunks are ~64 KiB: a write each would be
                // 16 syscalls per MiB).
                write_all_vectored(&mut file, &chunks).map_err(io_err)?;
            }
            // `writeback`: start writing these bytes back now (asynchronously), so that an fsync
            // before the file is committed waits only for the tail. Best effort.
            // SAFETY: plain syscalls on the caller's descriptor.
            if writeback {
                unsafe {
                    let end = libc::lseek(fd, 0, libc::SEEK_CUR);
                    if end >= total as libc::off_t {
                        libc::sync_file_range(
                            fd,
                            end - total as libc::off_t,
                            total as libc::off_t,
                            libc::SYNC_FILE_RANGE_WRITE,
                        );
                    }
                }
            }
            if let Some(g) = &growing {
                g.appended(total);
            }
            Ok(total)
        },
        |env, total| env.double(total as f64),
    )
}

/// Alignment of `O_DIRECT` writes (buffer address, length, file offset): 4 KiB covers the
/// logical block size of every common device.
const DIRECT_ALIGN: usize = 4096;

/// A page-aligned buffer for `O_DIRECT` writes, kept per pool thread (a fresh one per call
/// would fault its pages in every time).
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
}

impl AlignedBuf {
    fn layout(cap: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(cap, DIRECT_ALIGN).expect("valid layout")
    }
    fn with_capacity(cap: usize) -> AlignedBuf {
        let layout = Self::layout(cap);
        // SAFETY: a non-zero size (callers ask for at least DIRECT_ALIGN).
        let ptr = unsafe { std::alloc::alloc(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, cap }
    }
    fn as_mut_slice(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.cap);
        // SAFETY: `len` bytes inside our allocation, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in with_capacity with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) }
    }
}

thread_local! {
    static DIRECT_BUF: std::cell::RefCell<Option<AlignedBuf>> = const { std::cell::RefCell::new(None) };
}

/// Writes the chunks (their total a multiple of [`DIRECT_ALIGN`]) through an aligned buffer to a
/// file opened with `O_DIRECT`; a short write leaves direct I/O and writes the rest normally.
fn write_direct(file: &mut File, chunks: &[PinnedBytes]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    const MAX: usize = 4 << 20;
    let data: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
    let total: usize = data.iter().map(|d| d.len()).sum();
    DIRECT_BUF.with(|cell| {
        let mut slot = cell.borrow_mut();
        let mut done = 0usize; // bytes of `data` (in order) written
        let mut buffered = false;
        let (mut idx, mut off) = (0usize, 0usize);
        while done < total {
            let want = (total - done).min(MAX);
            if slot.as_ref().map_or(true, |b| b.cap < want) {
                *slot = Some(AlignedBuf::with_capacity(want.max(1 << 20)));
            }
            let buf = slot.as_mut().expect("allocated above").as_mut_slice(want);
            let mut filled = 0;
            while filled < want {
                let src = &data[idx][off..];
                let n = src.len().min(want - filled);
                buf[filled..filled + n].copy_from_slice(&src[..n]);
                filled += n;
                off += n;
                if off == data[idx].len() {
                    idx += 1;
                    off = 0;
                }
            }
            let mut written = 0;
            while written < want {
                match file.write(&buf[written..want]) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) if n % DIRECT_ALIGN == 0 || written + n == want => written += n,
                    Ok(n) => {
                        // an unaligned short write: finish this file without direct I/O
                        written += n;
                        leave_direct_io(file.as_raw_fd())?;
                        buffered = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // a filesystem that took O_DIRECT at open but refuses the write (some
                    // FUSE and network filesystems): write normally from here on
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !buffered => {
                        leave_direct_io(file.as_raw_fd())?;
                        buffered = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            done += want;
        }
        Ok(())
    })
}

/// Turns `O_DIRECT` off on `fd` (Linux allows it with `F_SETFL`).
fn leave_direct_io(fd: i32) -> std::io::Result<()> {
    // SAFETY: plain fcntl calls on the caller's descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes every chunk, in order, with as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut File, chunks: &[PinnedBytes]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write as _};
    let data: Vec<&[u8]> = chunks
        .iter()
        .map(|c| c.as_slice())
        .filter(|s| !s.is_empty())
        .collect();
    // (first chunk not fully written, bytes of it already written)
    let (mut first, mut offset) = (0usize, 0usize);
    while first < data.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&data[first][offset..]))
            .chain(data[first + 1..].iter().map(|d| IoSlice::new(d)))
            .take(1024) // IOV_MAX
            .collect();
        let mut n = match file.write_vectored(&slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let left = data[first].len() - offset;
            if n < left {
                offset += n;
                n = 0;
            } else {
                n -= left;
                first += 1;
                offset = 0;
            }
        }
    }
    Ok(())
}

/// A push-style zstd decoder behind a JS external; `None` once finished.
struct ZstdHandle(Option<stevedore_core::zstd_stream::ZstdDecoder>);

/// `zstdDecoderCreate(windowLogMax) -> handle`.
fn zstd_decoder_create(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let log = env.get_f64(args[0], "windowLogMax")?;
    if !(10.0..=31.0).contains(&log) || log.fract() != 0.0 {
        return Err(JsError::type_error(
            "windowLogMax must be an integer from 10 to 31",
        ));
    }
    env.external(ZstdHandle(Some(
        stevedore_core::zstd_stream::ZstdDecoder::new(log as u32)?,
    )))
}

/// `zstdDecoderPush(handle, chunk) -> [output: Buffer, used: number]`: decodes from `chunk`
/// (at most 1 MiB of output per call); call again with the unused rest, and with an empty
/// chunk while output keeps coming.
fn zstd_decoder_push(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let input = env.get_bytes(args[1], "chunk")?;
    let d = env
        .get_external::<ZstdHandle>(args[0], "decoder")?
        .0
        .as_mut()
        .ok_or_else(|| JsError::new("ERR_DECODER_FINISHED", "zstd decoder was already finished"))?;
    let mut out = Vec::new();
    let used = d.push(input, &mut out)?;
    let o = env.buffer_copy(&out)?;
    let n = env.double(used as f64)?;
    env.array(&[o, n])
}

/// `zstdDecoderFinish(handle)`: throws `ERR_DECOMPRESS` when the input stopped inside a frame.
fn zstd_decoder_finish(env: Env, args: &[napi_value]) -> JsResult<napi_value> {
    let handle = env.get_external::<ZstdHandle>(args[0], "decoder")?;
    if let Some(d) = handle.0.take() {
        d.finish()?;
    }
    env.undefined()
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
    ("layerVerify", engine::layer_verify),
    ("treeScan", engine::tree_scan),
    ("growingCreate", engine::growing_create),
    ("zstdDecoderCreate", zstd_decoder_create),
    ("zstdDecoderPush", zstd_decoder_push),
    ("zstdDecoderFinish", zstd_decoder_finish),
    ("growingEnd", engine::growing_end),
    ("fileAppend", file_append),
    ("hasherUpdateAsync", hasher_update_async),
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
