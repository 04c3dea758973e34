//! stevedore-fs: the layer engine of `stevedore-core` on real Linux directories.
//!
//! * [`apply_layer`]: extract a layer stream (gzip, zstd or plain tar) into a directory, in
//!   one pass that also computes the blob digest and the diff_id and verifies them.
//! * [`create_layer`]: write a directory (a full tree, or an overlay upper/diff dir) as a
//!   deterministic layer.
//! * [`DirFs`]: the core's [`stevedore_core::layer::Fs`] trait on a directory, every
//!   call relative to a directory descriptor (`openat2(RESOLVE_IN_ROOT)` where the kernel has
//!   it, a component-by-component `O_NOFOLLOW` walk otherwise).
//!
//! All functions are synchronous and meant to run on a worker thread; each uses one helper
//! thread of its own while it runs (decompression, or compression) so that two cores work.
//! Errors are [`stevedore_core::Error`]s: a binding maps them with `code()`.

mod dirfs;

pub use dirfs::{DirFs, DirHandle};
pub use stevedore_core::layer::{
    ApplyLimits, ApplyOptions, ApplyReport, Compression, CreateCompression, CreateMode,
    CreateOptions, CreateReport, MtimePolicy, Progress, Warning, WhiteoutMode,
};
pub use stevedore_core::{Error, Result};

use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use stevedore_core::layer::{apply_to, create_from, remove_tree, Fs, FsError};

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
    if opts.mode == WhiteoutMode::Apply {
        let mut fs =
            DirFs::open(target).map_err(|e| io_error("open the target directory", target, &e))?;
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
        let mut fs = DirFs::from_fd(fd).with_privileged(parent_fs.privileged());
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
