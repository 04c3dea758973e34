//! stevedore-fs: the layer engine of `stevedore-core` on real Linux directories.
//!
//! * [`apply_layer`]: extract a layer stream (gzip, zstd or plain tar) into a directory, in
//!   one pass that also computes the blob digest and the diff_id and verifies them.
//! * [`flatten_layers`]: apply several layers onto a root filesystem, staging them in
//!   parallel (one thread per layer, up to a limit) and replaying them in order.
//! * [`create_layer`]: write a directory (a full tree, or an overlay upper/diff dir) as a
//!   deterministic layer.
//! * [`scan_tree`]: every entry of a tree with metadata and content hashes (a diff dir's
//!   record for later verification); [`apply_and_scan_layer`] applies a layer and scans the
//!   result with the files hashed as they are written, not read back.
//! * [`DirFs`]: the core's [`stevedore_core::layer::Fs`] trait on a directory, every
//!   call relative to a directory descriptor (`openat2(RESOLVE_IN_ROOT)` where the kernel has
//!   it, a component-by-component `O_NOFOLLOW` walk otherwise).
//!
//! All functions are synchronous and meant to run on a worker thread; each uses one helper
//! thread of its own while it runs (decompression, or compression) so that two cores work.
//! Errors are [`stevedore_core::Error`]s: a binding maps them with `code()`.

mod dirfs;
mod scan;

pub use dirfs::{DirFile, DirFs, DirHandle};
pub use scan::{scan_tree, scan_tree_known, scan_tree_metadata, KnownContent, TreeEntry, TreeScan};
pub use stevedore_core::layer::{
    ApplyLimits, ApplyOptions, ApplyReport, Compression, CreateCompression, CreateMode,
    CreateOptions, CreateReport, MtimePolicy, Progress, StagedLayer, Warning, WhiteoutMode,
};
pub use stevedore_core::{Error, Result};

use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use std::collections::VecDeque;
use std::sync::Mutex;
use stevedore_core::layer::{
    apply_staged, apply_to, create_from, remove_tree, stage_layer, Fs, FsError, SetMeta, Target,
};

fn io_error(op: &str, path: &Path, e: &io::Error) -> Error {
    let fs = dirfs::from_io(e);
    Error::Io {
        op: op.to_string(),
        path: path.display().to_string(),
        errno: fs.errno,
        reason: fs.message,
    }
}

fn fs_error(op: &str, path: &Path, e: FsError) -> Error {
    Error::Io {
        op: op.to_string(),
        path: path.display().to_string(),
        errno: e.errno,
        reason: e.message,
    }
}

/// Applies the layer stream `reader` to `target`. See
/// [`stevedore_core::layer`] for the whiteout modes, the limits and
/// the safety rules; `progress` is called on this thread after each 1 MiB of uncompressed
/// data and once at the end.
///
/// * [`WhiteoutMode::Overlay`] and [`WhiteoutMode::Oci`]: `target` must not exist, or be an
///   empty directory. The layer is extracted into `<target>.staging-<random>` next to it
///   (mode 0700 while it is written), which is renamed onto `target` once everything,
///   digests included, checked out, and removed on any error: `target` never holds a partial
///   layer. Without a `./` entry in the layer the result has mode 0755.
/// * [`WhiteoutMode::Apply`]: `target` is an existing root filesystem changed in place;
///   on any error every change is undone (see "Failure guarantees" in the core).
///
/// Not `fsync`ed: callers that need durability sync the filesystem afterwards.
pub fn apply_layer<R: Read + Send>(
    reader: R,
    target: &Path,
    opts: &ApplyOptions,
    progress: impl FnMut(Progress),
) -> Result<ApplyReport> {
    apply_layer_recording(reader, target, opts, progress, None)
}

/// [`apply_layer`], then [`scan_tree`] of `target` on `threads` helpers — the record an image
/// store keeps of a new diff dir. Regular files are hashed as the engine writes them, so the
/// scan reads none back (only their metadata).
///
/// With [`ApplyOptions::tar_split`] the files are not hashed: the report's tar-split rebuilds
/// the tar, whose digest is the diff_id, so the scan records metadata only. Only when the
/// tar-split is [`TarSplit::Unusable`](stevedore_core::layer::TarSplit) are the files read back
/// and hashed.
pub fn apply_and_scan_layer<R: Read + Send>(
    reader: R,
    target: &Path,
    opts: &ApplyOptions,
    progress: impl FnMut(Progress),
    threads: usize,
) -> Result<(ApplyReport, TreeScan)> {
    if opts.tar_split {
        let report = apply_layer_recording(reader, target, opts, progress, None)?;
        let recorded = matches!(
            report.tar_split,
            Some(stevedore_core::layer::TarSplit::Recorded(_))
        );
        let scan = if recorded {
            scan_tree_metadata(target)
        } else {
            scan_tree(target, threads)
        }
        .map_err(|e| io_error("scan", target, &e))?;
        return Ok((report, scan));
    }
    let known = std::sync::Arc::new(KnownContent::default());
    let report = apply_layer_recording(reader, target, opts, progress, Some(known.clone()))?;
    let scan =
        scan_tree_known(target, threads, Some(&known)).map_err(|e| io_error("scan", target, &e))?;
    Ok((report, scan))
}

fn apply_layer_recording<R: Read + Send>(
    reader: R,
    target: &Path,
    opts: &ApplyOptions,
    progress: impl FnMut(Progress),
    known: Option<std::sync::Arc<KnownContent>>,
) -> Result<ApplyReport> {
    let record = |fs: DirFs| match &known {
        Some(k) => fs.recording_content(k.clone()),
        None => fs,
    };
    if opts.mode == WhiteoutMode::Apply {
        let mut fs = record(
            DirFs::open(target).map_err(|e| io_error("open the target directory", target, &e))?,
        );
        return apply_to(reader, &mut fs, opts, progress);
    }
    let Some(name) = target.file_name() else {
        return Err(Error::Io {
            op: "apply layer to".into(),
            path: target.display().to_string(),
            errno: None,
            reason: "the target has no final name component".into(),
        });
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut parent_fs =
        DirFs::open(parent).map_err(|e| io_error("open the target's parent", parent, &e))?;
    let parent_dir = parent_fs
        .root()
        .map_err(|e| fs_error("open the target's parent", parent, e))?;
    let name = name.as_bytes();
    let replace = match parent_fs
        .lstat(&parent_dir, name)
        .map_err(|e| fs_error("lstat", target, e))?
    {
        None => false,
        Some(st) if st.kind == stevedore_core::layer::FileType::Dir => {
            let dir = parent_fs
                .open_dir(&parent_dir, name)
                .map_err(|e| fs_error("open", target, e))?;
            let names = parent_fs
                .read_dir(&dir)
                .map_err(|e| fs_error("read", target, e))?;
            if !names.is_empty() {
                return Err(Error::Io {
                    op: "apply layer to".into(),
                    path: target.display().to_string(),
                    errno: Some(libc::ENOTEMPTY),
                    reason: "the target exists and is not empty".into(),
                });
            }
            true
        }
        Some(st) => {
            return Err(Error::Io {
                op: "apply layer to".into(),
                path: target.display().to_string(),
                errno: Some(libc::EEXIST),
                reason: format!("the target exists and is a {}", st.kind.name()),
            })
        }
    };
    let mut staging = name.to_vec();
    staging.extend_from_slice(format!(".staging-{}", random_hex()).as_bytes());
    let staging_path = parent.join(OsStr::from_bytes(&staging));
    parent_fs
        .mkdir(&parent_dir, &staging, 0o700)
        .map_err(|e| fs_error("create staging directory", &staging_path, e))?;
    let result = (|| {
        let dir = parent_fs
            .open_dir(&parent_dir, &staging)
            .map_err(|e| fs_error("open staging directory", &staging_path, e))?;
        let fd = dup(dir.as_raw_fd()).map_err(|e| io_error("dup", &staging_path, &e))?;
        let mut fs = record(DirFs::from_fd(fd).with_privileged(parent_fs.privileged()));
        let report = apply_to(reader, &mut fs, opts, progress)?;
        rename_into_place(&parent_dir, &staging, name, replace)
            .map_err(|e| io_error("rename the staging directory onto", target, &e))?;
        Ok(report)
    })();
    if result.is_err() {
        // Whatever happened, nothing partial stays behind (the rename is the last step, so
        // after it succeeded there is no error).
        let _ = remove_tree(&mut parent_fs, &parent_dir, &staging);
    }
    result
}

/// Which layer of a [`flatten_layers`] call failed, and how.
#[derive(Debug)]
pub struct FlattenError {
    /// Index in the list given (`None`: not one layer's fault, e.g. the target is missing).
    pub layer: Option<usize>,
    /// Boxed: `Error` is large and this travels through several `Result`s.
    pub error: Box<Error>,
}

impl std::fmt::Display for FlattenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.layer {
            Some(i) => write!(f, "layer {i}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// Applies `layers` (bottom first; each reader with its own options, mode
/// [`WhiteoutMode::Apply`]) onto the existing directory `target`, as applying them one after
/// the other with [`apply_layer`] would, but faster: every layer is first *staged* (decompressed,
/// verified and its files written) on up to `parallel` threads at once into
/// `<target>/.stevedore-flatten-<random>/<i>`, then the layers are replayed in order, moving
/// the staged files into place (see `stevedore_core::layer::stage_layer`).
///
/// Nothing in `target` changes before every layer has been read and verified: a digest
/// mismatch, a limit or an unsafe path in any layer leaves `target` as it was. An error while
/// replaying layer `i` undoes layer `i`; layers before it stay applied. The staging directory
/// is removed in every case and the root's mtime is kept. `progress` gets the sums over all
/// layers.
pub fn flatten_layers<R: Read + Send>(
    layers: Vec<(R, ApplyOptions)>,
    target: &Path,
    parallel: usize,
    progress: impl Fn(Progress) + Sync,
) -> std::result::Result<Vec<ApplyReport>, FlattenError> {
    let whole = |error| FlattenError {
        layer: None,
        error: Box::new(error),
    };
    if let Some(i) = layers
        .iter()
        .position(|(_, o)| o.mode != WhiteoutMode::Apply)
    {
        return Err(FlattenError {
            layer: Some(i),
            error: Box::new(Error::Io {
                op: "flatten".into(),
                path: target.display().to_string(),
                errno: None,
                reason: "every layer of a flatten must use the apply whiteout mode".into(),
            }),
        });
    }
    let mut fs = DirFs::open(target)
        .map_err(|e| whole(io_error("open the target directory", target, &e)))?;
    let root = fs
        .root()
        .map_err(|e| whole(fs_error("open the target directory", target, e)))?;
    let root_mtime = fs
        .stat_dir(&root)
        .map_err(|e| whole(fs_error("stat", target, e)))?
        .mtime;
    let stage_name = format!(".stevedore-flatten-{}", random_hex()).into_bytes();
    let stage_path = target.join(OsStr::from_bytes(&stage_name));
    fs.mkdir(&root, &stage_name, 0o700)
        .map_err(|e| whole(fs_error("create the staging directory", &stage_path, e)))?;

    let outcome = (|| {
        let stage = fs
            .open_dir(&root, &stage_name)
            .map_err(|e| whole(fs_error("open", &stage_path, e)))?;
        let mut queue = VecDeque::with_capacity(layers.len());
        let mut options = Vec::with_capacity(layers.len());
        for (i, (reader, opts)) in layers.into_iter().enumerate() {
            let name = i.to_string().into_bytes();
            let dir = fs
                .mkdir(&stage, &name, 0o700)
                .and_then(|()| fs.open_dir(&stage, &name))
                .map_err(|e| whole(fs_error("create", &stage_path.join(i.to_string()), e)))?;
            let fd = dup(dir.as_raw_fd()).map_err(|e| whole(io_error("dup", &stage_path, &e)))?;
            queue.push_back((i, reader, opts.clone(), fd));
            options.push(opts);
        }
        let staged = stage_all(queue, parallel.max(1), fs.privileged(), &progress)?;
        let mut reports = Vec::with_capacity(staged.len());
        for (i, layer) in staged.iter().enumerate() {
            let dir = fs
                .open_dir(&stage, i.to_string().as_bytes())
                .map_err(|e| whole(fs_error("open", &stage_path.join(i.to_string()), e)))?;
            let report =
                apply_staged(&mut fs, &dir, layer, &options[i]).map_err(|error| FlattenError {
                    layer: Some(i),
                    error: Box::new(error),
                })?;
            reports.push(report);
        }
        let sets_root = staged.iter().any(StagedLayer::sets_root);
        Ok((reports, sets_root))
    })();

    // The staging directory goes in every case; its own mkdir and removal must not show in
    // the root's mtime (a layer that sets the root's metadata keeps its value).
    let keep = match &outcome {
        Ok((_, true)) => fs.stat_dir(&root).ok().map(|st| st.mtime),
        _ => None,
    };
    let removed = remove_tree(&mut fs, &root, &stage_name)
        .map_err(|e| whole(fs_error("remove the staging directory", &stage_path, e)));
    let meta = SetMeta {
        mtime: Some(keep.unwrap_or(root_mtime)),
        ..SetMeta::default()
    };
    let restored = fs
        .set_meta(Target::Dir(&root), &meta)
        .map(|_| ())
        .map_err(|e| whole(fs_error("restore the mtime of", target, e)));
    let (reports, _) = outcome?;
    removed?;
    restored?;
    Ok(reports)
}

type Staged = std::result::Result<StagedLayer, FlattenError>;

/// Phase 1 of [`flatten_layers`]: stages the queued layers on up to `parallel` threads.
/// Returns the staged layers in order, or the error of the lowest failing layer.
fn stage_all<R: Read + Send>(
    queue: VecDeque<(usize, R, ApplyOptions, OwnedFd)>,
    parallel: usize,
    privileged: bool,
    progress: &(impl Fn(Progress) + Sync),
) -> std::result::Result<Vec<StagedLayer>, FlattenError> {
    let count = queue.len();
    let queue = Mutex::new(queue);
    let results: Mutex<Vec<Option<Staged>>> = Mutex::new((0..count).map(|_| None).collect());
    let totals = Mutex::new(vec![Progress::default(); count]);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let report = |i: usize, p: Progress| {
        let sum = {
            let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
            t[i] = p;
            t.iter().fold(Progress::default(), |a, b| Progress {
                compressed_in: a.compressed_in + b.compressed_in,
                uncompressed_out: a.uncompressed_out + b.uncompressed_out,
                entries: a.entries + b.entries,
            })
        };
        progress(sum);
    };
    std::thread::scope(|scope| {
        for _ in 0..parallel.min(count) {
            scope.spawn(|| loop {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some((i, reader, opts, fd)) = next else {
                    return;
                };
                let mut fs = DirFs::from_fd(fd).with_privileged(privileged);
                let r = fs
                    .root()
                    .map_err(|e| fs_error("open the staging directory", Path::new(""), e))
                    .and_then(|dir| stage_layer(reader, &mut fs, &dir, &opts, |p| report(i, p)))
                    .map_err(|error| FlattenError {
                        layer: Some(i),
                        error: Box::new(error),
                    });
                if r.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    let mut staged = Vec::with_capacity(count);
    for r in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match r {
            Some(Ok(layer)) => staged.push(layer),
            Some(Err(e)) => return Err(e),
            // Not started because another layer failed: that one is reported.
            None => {}
        }
    }
    if staged.len() != count {
        return Err(FlattenError {
            layer: None,
            error: Box::new(Error::Io {
                op: "flatten".into(),
                path: String::new(),
                errno: None,
                reason: "internal error: a layer was not staged".into(),
            }),
        });
    }
    Ok(staged)
}

/// Writes the tree at `source` as a layer to `out`. See
/// [`stevedore_core::layer::create_from`] for the entry order and contents;
/// `progress` is called on this thread after each 1 MiB of tar and once at the end.
pub fn create_layer<W: Write + Send>(
    source: &Path,
    opts: &CreateOptions,
    out: W,
    progress: impl FnMut(Progress),
) -> Result<CreateReport> {
    let mut fs =
        DirFs::open(source).map_err(|e| io_error("open the source directory", source, &e))?;
    create_from(&mut fs, opts, out, progress)
}

fn dup(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new one we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn rename_into_place(dir: &DirHandle, from: &[u8], to: &[u8], replace: bool) -> io::Result<()> {
    let from = CString::new(from).map_err(|_| io::ErrorKind::InvalidInput)?;
    let to = CString::new(to).map_err(|_| io::ErrorKind::InvalidInput)?;
    // Over an existing empty directory a plain rename replaces it atomically (and fails if it
    // is no longer empty); otherwise never replace anything that appeared meanwhile.
    let flags = if replace { 0 } else { libc::RENAME_NOREPLACE };
    // SAFETY: a valid descriptor and NUL-terminated names.
    let r = unsafe {
        libc::renameat2(
            dir.as_raw_fd(),
            from.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// 16 random hex digits (getrandom, falling back to the time and pid).
fn random_hex() -> String {
    let mut buf = [0u8; 8];
    // SAFETY: a buffer of 8 bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        buf = (t ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
