//! The filesystem interface the layer engine extracts into and creates layers from.
//!
//! It is handle-based, like the `*at` system calls: a [`Fs::Dir`] is an open directory (a file
//! descriptor for a real directory, an inode number in [`MemFs`](super::MemFs)) and every
//! operation names one entry *inside* a directory handle by a single path component. No method
//! takes a multi-component path except the optional fast path [`Fs::open_path`], and no method
//! follows a symlink in the component it is given. Walking paths, following symlinks where a
//! mode allows it (clamped at the root), and every decision about what to write is done once,
//! in the core (`layer/resolve.rs`); an implementation only has to carry out single steps
//! without following links.
//!
//! Contract for implementations:
//! * `name` arguments are one component: never empty, `.` or `..`, never containing `/` or NUL
//!   (implementations should refuse such names anyway, as a second line of defence);
//! * nothing follows a symlink in `name`: `lstat`, `open_dir` (fails on a symlink),
//!   `create_file` (exclusive create, fails on anything existing), `set_meta`/`xattrs` on
//!   [`Target::At`] (act on the link itself), `hardlink` (links the entry itself, as `linkat`
//!   without `AT_SYMLINK_FOLLOW`);
//! * errors carry an [`FsErrorKind`] the core can act on (`NotFound`, `AlreadyExists`, ...).

use crate::tar::Timestamp;
use std::fmt;
use std::io::Read;

/// What went wrong in one filesystem call, errno-like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsErrorKind {
    /// ENOENT.
    NotFound,
    /// EEXIST.
    AlreadyExists,
    /// ENOTDIR: a directory was required.
    NotADirectory,
    /// EISDIR.
    IsADirectory,
    /// ENOTEMPTY.
    DirectoryNotEmpty,
    /// ELOOP: the component is a symlink and following it was not allowed.
    Symlink,
    /// EPERM / EACCES.
    PermissionDenied,
    /// ENOTSUP / EOPNOTSUPP: the filesystem does not support the operation (xattrs, ...).
    Unsupported,
    /// EXDEV.
    CrossDevice,
    /// ENOSPC / EDQUOT.
    NoSpace,
    /// EINVAL, or a name that breaks the contract (`/`, NUL, `..`).
    InvalidInput,
    /// Anything else.
    Other,
}

/// An error of one filesystem call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    pub kind: FsErrorKind,
    /// The OS error number, when there is one.
    pub errno: Option<i32>,
    /// Human-readable detail (the OS message).
    pub message: String,
}

impl FsError {
    pub fn new(kind: FsErrorKind, message: impl Into<String>) -> FsError {
        FsError {
            kind,
            errno: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(errno) => write!(f, "{} (os error {errno})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

pub type FsResult<T> = std::result::Result<T, FsError>;

/// The type of a filesystem object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileType {
    pub fn name(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            FileType::CharDevice => "char device",
            FileType::BlockDevice => "block device",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
        }
    }
}

/// What `lstat` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stat {
    pub kind: FileType,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size in bytes (regular files; the target length for symlinks).
    pub size: u64,
    pub mtime: Timestamp,
    /// Device and inode numbers: equal pairs are the same inode (hardlinks).
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    /// Device numbers of character and block devices.
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

/// A special file to create with [`Fs::mknod`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Special {
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
}

/// What [`Fs::set_meta`], [`Fs::xattrs`] and [`Fs::remove_xattr`] act on.
pub enum Target<'a, D, F> {
    /// A regular file open for writing (its descriptor).
    File(&'a F),
    /// An open directory (its descriptor).
    Dir(&'a D),
    /// The entry `name` of directory `dir`, never following it if it is a symlink. Used for
    /// symlinks, devices and FIFOs (which cannot be opened safely).
    At(&'a D, &'a [u8]),
}

impl<D, F> Clone for Target<'_, D, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D, F> Copy for Target<'_, D, F> {}

/// Metadata to set, applied in this order: owner, xattrs, mode, mtime (chown clears setuid
/// bits and file capabilities, so mode and xattrs come after it; the mtime comes last).
#[derive(Debug, Clone, Copy, Default)]
pub struct SetMeta<'a> {
    pub owner: Option<(u32, u32)>,
    /// Set (added or overwritten); others are left alone.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
    /// Permission bits (`0o7777`); ignored for symlinks.
    pub mode: Option<u32>,
    pub mtime: Option<Timestamp>,
}

/// Xattrs [`Fs::set_meta`] could not set because the filesystem or the caller's privileges do
/// not allow them (`PermissionDenied`, `Unsupported`): the name and the error.
pub type RefusedXattrs = Vec<(Vec<u8>, FsError)>;

/// A directory tree the layer engine writes to and reads from. See the
/// [module documentation](self) for the contract.
pub trait Fs {
    /// An open directory.
    type Dir: Clone;
    /// A regular file open for writing.
    type File;
    /// A regular file open for reading.
    type Reader: Read;

    /// The root of the tree.
    fn root(&mut self) -> FsResult<Self::Dir>;

    /// Whether the caller may create devices and set any owner (root).
    fn privileged(&self) -> bool;

    /// `lstat` of `name` in `dir`; `Ok(None)` when it does not exist.
    fn lstat(&mut self, dir: &Self::Dir, name: &[u8]) -> FsResult<Option<Stat>>;

    /// `fstat` of an open directory.
    fn stat_dir(&mut self, dir: &Self::Dir) -> FsResult<Stat>;

    /// Opens directory `name` of `dir`. Fails with `Symlink` (or `NotADirectory`) when it is a
    /// symlink, never following it.
    fn open_dir(&mut self, dir: &Self::Dir, name: &[u8]) -> FsResult<Self::Dir>;

    /// Optional fast path: opens the directory at `path` (several plain components separated
    /// by `/`, no `.`, `..` or empty ones) below `dir` in one step, failing on any symlink on
    /// the way (Linux: `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`). `None` when the
    /// implementation has no such call; the core then walks component by component.
    fn open_path(&mut self, dir: &Self::Dir, path: &[u8]) -> Option<FsResult<Self::Dir>> {
        let _ = (dir, path);
        None
    }

    /// The names in `dir`, without `.` and `..`, in any order.
    fn read_dir(&mut self, dir: &Self::Dir) -> FsResult<Vec<Vec<u8>>>;

    /// The target of symlink `name`.
    fn read_link(&mut self, dir: &Self::Dir, name: &[u8]) -> FsResult<Vec<u8>>;

    /// Creates directory `name` (failing if anything exists there).
    fn mkdir(&mut self, dir: &Self::Dir, name: &[u8], mode: u32) -> FsResult<()>;

    /// Creates regular file `name` for writing, exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`).
    fn create_file(&mut self, dir: &Self::Dir, name: &[u8], mode: u32) -> FsResult<Self::File>;

    /// Appends `data` to a file opened by [`create_file`](Self::create_file).
    fn write_file(&mut self, file: &mut Self::File, data: &[u8]) -> FsResult<()>;

    /// Closes a file opened by [`create_file`](Self::create_file), reporting write-back errors.
    fn close_file(&mut self, file: Self::File) -> FsResult<()>;

    /// Opens regular file `name` for reading, never following a symlink.
    fn open_file(&mut self, dir: &Self::Dir, name: &[u8]) -> FsResult<Self::Reader>;

    /// Creates symlink `name` pointing at `target` (stored verbatim).
    fn symlink(&mut self, dir: &Self::Dir, name: &[u8], target: &[u8]) -> FsResult<()>;

    /// Creates `name` in `dir` as a hard link to `from_name` in `from_dir`, without following
    /// `from_name` if it is a symlink.
    fn hardlink(
        &mut self,
        from_dir: &Self::Dir,
        from_name: &[u8],
        dir: &Self::Dir,
        name: &[u8],
    ) -> FsResult<()>;

    /// Creates a device or FIFO.
    fn mknod(&mut self, dir: &Self::Dir, name: &[u8], node: Special, mode: u32) -> FsResult<()>;

    /// Removes `name`: an empty directory when `is_dir`, anything else otherwise.
    fn remove(&mut self, dir: &Self::Dir, name: &[u8], is_dir: bool) -> FsResult<()>;

    /// Renames `from_name` to `to_name`, failing with `AlreadyExists` if `to_name` exists.
    fn rename(
        &mut self,
        from_dir: &Self::Dir,
        from_name: &[u8],
        to_dir: &Self::Dir,
        to_name: &[u8],
    ) -> FsResult<()>;

    /// Sets metadata, in the order documented on [`SetMeta`]. Returns the xattrs that were
    /// refused for lack of privilege or support; any other failure is an error.
    fn set_meta(
        &mut self,
        target: Target<'_, Self::Dir, Self::File>,
        meta: &SetMeta<'_>,
    ) -> FsResult<RefusedXattrs>;

    /// All extended attributes, `(name, value)`, in any order.
    fn xattrs(
        &mut self,
        target: Target<'_, Self::Dir, Self::File>,
    ) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Removes one extended attribute (absent is not an error).
    fn remove_xattr(
        &mut self,
        target: Target<'_, Self::Dir, Self::File>,
        name: &[u8],
    ) -> FsResult<()>;
}
