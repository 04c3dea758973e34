//! [`DirFs`]: the core's `Fs` on a real Linux directory (see the type's documentation).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use crate::scan::KnownContent;
use stevedore_core::digest::{Algorithm, Hasher};

use stevedore_core::layer::fs::RefusedXattrs;
use stevedore_core::layer::{
    FileType, Fs, FsError, FsErrorKind, FsResult, SetMeta, Special, Stat, Target,
};
use stevedore_core::tar::Timestamp;

/// An open directory of a [`DirFs`] (shared: the resolver keeps chains of them).
pub type DirHandle = Rc<OwnedFd>;

/// The core's [`Fs`] on a real Linux directory: every call relative to a directory file
/// descriptor, none following a symlink in the name it is given.
///
/// | operation | system call |
/// |---|---|
/// | `lstat` | `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)` |
/// | `open_dir` | `openat(dirfd, name, O_DIRECTORY \| O_NOFOLLOW)` |
/// | `open_path` (fast path) | `openat2(dirfd, path, RESOLVE_IN_ROOT \| RESOLVE_NO_SYMLINKS \| RESOLVE_NO_MAGICLINKS)`, when the kernel has it (5.6+) |
/// | `create_file` | `openat(O_CREAT \| O_EXCL \| O_NOFOLLOW)` |
/// | `mkdir`, `symlink`, `mknod` | `mkdirat`, `symlinkat`, `mknodat` (never follow the new name) |
/// | `hardlink` | `linkat(..., 0)`: links the entry itself, never its symlink target |
/// | `remove`, `rename` | `unlinkat`, `renameat2(RENAME_NOREPLACE)` |
/// | metadata of files and directories | `fchown`, `fsetxattr`, `fchmod`, `futimens` on the open descriptor |
/// | metadata of symlinks, devices, FIFOs | `fchownat(AT_SYMLINK_NOFOLLOW)`, `lsetxattr` and `chmod` through `/proc/self/fd` (the directory descriptor, or an `O_PATH \| O_NOFOLLOW` descriptor of the entry itself), `utimensat(AT_SYMLINK_NOFOLLOW)` |
///
/// Names must be single components (no `/`, not `.` or `..`); anything else is refused with
/// `InvalidInput` before a system call is made.
#[derive(Debug)]
pub struct DirFs {
    root: DirHandle,
    privileged: bool,
    openat2: bool,
    /// Where files created here record the hash of what was written (see [`DirFs::recording_content`]).
    content: Option<Arc<KnownContent>>,
}

/// A regular file [`DirFs`] created for writing: its descriptor and, when the `DirFs` records
/// content, the sha256 and length of what was written so far.
pub struct DirFile {
    file: File,
    content: Option<(Hasher, u64)>,
}

impl std::fmt::Debug for DirFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirFile")
            .field("fd", &self.file.as_raw_fd())
            .field("hashed", &self.content.as_ref().map(|(_, len)| *len))
            .finish()
    }
}

impl AsRawFd for DirFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// `FsError` for the current `errno`.
pub(crate) fn last_error() -> FsError {
    from_io(&io::Error::last_os_error())
}

/// `FsError` for an `io::Error`, with the kind the core acts on.
pub(crate) fn from_io(e: &io::Error) -> FsError {
    let errno = e.raw_os_error();
    let kind = match errno {
        Some(libc::ENOENT) => FsErrorKind::NotFound,
        Some(libc::EEXIST) => FsErrorKind::AlreadyExists,
        Some(libc::ENOTDIR) => FsErrorKind::NotADirectory,
        Some(libc::EISDIR) => FsErrorKind::IsADirectory,
        Some(libc::ENOTEMPTY) => FsErrorKind::DirectoryNotEmpty,
        Some(libc::ELOOP) => FsErrorKind::Symlink,
        Some(libc::EPERM) | Some(libc::EACCES) => FsErrorKind::PermissionDenied,
        Some(libc::EOPNOTSUPP) => FsErrorKind::Unsupported,
        Some(libc::EXDEV) => FsErrorKind::CrossDevice,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => FsErrorKind::NoSpace,
        Some(libc::EINVAL) => FsErrorKind::InvalidInput,
        _ => FsErrorKind::Other,
    };
    let mut message = e.to_string();
    if let Some(i) = message.find(" (os error ") {
        message.truncate(i);
    }
    FsError {
        kind,
        errno,
        message,
    }
}

fn check(ret: libc::c_int) -> FsResult<()> {
    if ret < 0 {
        Err(last_error())
    } else {
        Ok(())
    }
}

/// A single path component as a C string.
fn cname(name: &[u8]) -> FsResult<CString> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::new(
            FsErrorKind::InvalidInput,
            format!(
                "{:?} is not a single path component",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    CString::new(name).map_err(|_| FsError::new(FsErrorKind::InvalidInput, "NUL byte in a name"))
}

fn cbytes(bytes: &[u8], what: &str) -> FsResult<CString> {
    CString::new(bytes)
        .map_err(|_| FsError::new(FsErrorKind::InvalidInput, format!("NUL byte in {what}")))
}

/// `/proc/self/fd/<fd>` or `/proc/self/fd/<fd>/<name>`.
fn proc_path(fd: RawFd, name: Option<&[u8]>) -> FsResult<CString> {
    let mut p = format!("/proc/self/fd/{fd}").into_bytes();
    if let Some(name) = name {
        cname(name)?;
        p.push(b'/');
        p.extend_from_slice(name);
    }
    cbytes(&p, "a path")
}

pub(crate) fn stat_of(st: &libc::stat) -> Stat {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Dir,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::Fifo,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::File,
    };
    Stat {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        mtime: Timestamp::new(st.st_mtime, st.st_mtime_nsec as u32),
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        rdev_major: libc::major(st.st_rdev),
        rdev_minor: libc::minor(st.st_rdev),
    }
}

fn fstatat(dirfd: RawFd, name: &CString) -> FsResult<Option<libc::stat>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid descriptor, a NUL-terminated name and room for one `stat`.
    let r = unsafe {
        libc::fstatat(
            dirfd,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        let e = last_error();
        return if e.kind == FsErrorKind::NotFound {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: fstatat succeeded and filled it.
    Ok(Some(unsafe { st.assume_init() }))
}

fn fstat(fd: RawFd) -> FsResult<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid descriptor and room for one `stat`.
    check(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled it.
    Ok(unsafe { st.assume_init() })
}

fn openat(
    dirfd: RawFd,
    name: &CString,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> FsResult<OwnedFd> {
    // SAFETY: a valid descriptor and a NUL-terminated name.
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct open_how` of `openat2(2)` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`.
/// `Err(None)` when the kernel has no `openat2` (ENOSYS) or refuses the flags.
fn openat2_dir(dirfd: RawFd, path: &[u8]) -> Result<OwnedFd, Option<FsError>> {
    let path = cbytes(path, "a path").map_err(Some)?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid descriptor, a NUL-terminated path and a properly sized
    // `open_how`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let e = last_error();
        return match e.errno {
            Some(libc::ENOSYS) | Some(libc::E2BIG) => Err(None),
            Some(libc::EINVAL) => Err(None),
            _ => Err(Some(e)),
        };
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn timespec(t: Option<Timestamp>) -> [libc::timespec; 2] {
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    let mtime = match t {
        Some(t) => libc::timespec {
            tv_sec: t.secs,
            tv_nsec: t.nanos as libc::c_long,
        },
        None => omit,
    };
    [omit, mtime]
}

/// Whether a failed xattr call is a refusal (no privilege, no support) rather than an error.
fn refusal(e: &FsError) -> bool {
    matches!(
        e.kind,
        FsErrorKind::PermissionDenied | FsErrorKind::Unsupported
    )
}

/// Reads a list or a value whose size is not known in advance (`*listxattr`, `*getxattr`).
fn sized(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> FsResult<Vec<u8>> {
    loop {
        let n = call(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(last_error());
        }
        let mut buf = vec![0u8; n as usize];
        let m = call(buf.as_mut_ptr().cast(), buf.len());
        if m < 0 {
            let e = last_error();
            if e.errno == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
}

/// How xattrs of a target are reached.
enum XattrAt {
    Fd(RawFd),
    Path(CString),
}

impl XattrAt {
    fn list(&self) -> FsResult<Vec<Vec<u8>>> {
        let raw = match self {
            // SAFETY (both): a valid descriptor / NUL-terminated path, and a buffer of `len`.
            XattrAt::Fd(fd) => sized(|p, len| unsafe { libc::flistxattr(*fd, p.cast(), len) }),
            XattrAt::Path(path) => {
                sized(|p, len| unsafe { libc::llistxattr(path.as_ptr(), p.cast(), len) })
            }
        };
        let raw = match raw {
            Err(e) if e.kind == FsErrorKind::Unsupported => return Ok(Vec::new()),
            other => other?,
        };
        Ok(raw
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    fn get(&self, name: &CString) -> FsResult<Vec<u8>> {
        match self {
            // SAFETY (both): valid descriptor / path, NUL-terminated name, buffer of `len`.
            XattrAt::Fd(fd) => {
                sized(|p, len| unsafe { libc::fgetxattr(*fd, name.as_ptr(), p, len) })
            }
            XattrAt::Path(path) => {
                sized(|p, len| unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), p, len) })
            }
        }
    }

    fn set(&self, name: &CString, value: &[u8]) -> FsResult<()> {
        let v = value.as_ptr().cast();
        // SAFETY (both): valid descriptor / path, NUL-terminated name, value of its length.
        check(match self {
            XattrAt::Fd(fd) => unsafe { libc::fsetxattr(*fd, name.as_ptr(), v, value.len(), 0) },
            XattrAt::Path(path) => unsafe {
                libc::lsetxattr(path.as_ptr(), name.as_ptr(), v, value.len(), 0)
            },
        })
    }

    fn remove(&self, name: &CString) -> FsResult<()> {
        // SAFETY (both): valid descriptor / path and a NUL-terminated name.
        let r = check(match self {
            XattrAt::Fd(fd) => unsafe { libc::fremovexattr(*fd, name.as_ptr()) },
            XattrAt::Path(path) => unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) },
        });
        match r {
            Err(e) if e.errno == Some(libc::ENODATA) => Ok(()),
            other => other,
        }
    }
}

impl DirFs {
    /// Opens the directory at `path` as the root (the path itself may contain symlinks: it is
    /// the caller's, not an archive's).
    pub fn open(path: &Path) -> io::Result<DirFs> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        // SAFETY: a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(DirFs::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Uses an open directory descriptor as the root.
    pub fn from_fd(fd: OwnedFd) -> DirFs {
        DirFs {
            root: Rc::new(fd),
            // SAFETY: geteuid has no preconditions.
            privileged: unsafe { libc::geteuid() } == 0,
            openat2: true,
            content: None,
        }
    }

    /// Files created from now on are hashed (sha256) as they are written, and recorded in
    /// `known` by inode when closed: a [`crate::scan_tree_known`] right after an extraction
    /// then need not read them back.
    pub fn recording_content(mut self, known: Arc<KnownContent>) -> DirFs {
        self.content = Some(known);
        self
    }

    /// Overrides the privilege detection (effective uid 0): without privilege, devices are
    /// skipped and owners are not set unless asked for.
    pub fn with_privileged(mut self, privileged: bool) -> DirFs {
        self.privileged = privileged;
        self
    }

    /// Turns the `openat2` fast path off (to test the component-by-component walk).
    pub fn without_openat2(mut self) -> DirFs {
        self.openat2 = false;
        self
    }

    fn xattr_at(target: &Target<'_, DirHandle, DirFile>) -> FsResult<XattrAt> {
        Ok(match target {
            Target::File(f) => XattrAt::Fd(f.as_raw_fd()),
            Target::Dir(d) => XattrAt::Fd(d.as_raw_fd()),
            Target::At(d, name) => XattrAt::Path(proc_path(d.as_raw_fd(), Some(name))?),
        })
    }

    /// `chmod` of a non-directory, non-regular entry without following it: through an
    /// `O_PATH | O_NOFOLLOW` descriptor and its `/proc/self/fd` link.
    fn chmod_at(dir: &DirHandle, name: &[u8], mode: u32) -> FsResult<()> {
        let c = cname(name)?;
        let fd = openat(dir.as_raw_fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = fstat(fd.as_raw_fd())?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Ok(()); // symlinks have no mode of their own on Linux
        }
        let p = proc_path(fd.as_raw_fd(), None)?;
        // SAFETY: a NUL-terminated path.
        match check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) }) {
            Err(e) if e.kind == FsErrorKind::NotFound => {
                // No /proc: the descriptor pins the entry we checked; chmod its name.
                // SAFETY: valid descriptor and NUL-terminated name.
                check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) })
            }
            other => other,
        }
    }
}

impl Fs for DirFs {
    type Dir = DirHandle;
    type File = DirFile;
    type Reader = File;

    fn root(&mut self) -> FsResult<DirHandle> {
        Ok(self.root.clone())
    }

    fn privileged(&self) -> bool {
        self.privileged
    }

    fn lstat(&mut self, dir: &DirHandle, name: &[u8]) -> FsResult<Option<Stat>> {
        let c = cname(name)?;
        Ok(fstatat(dir.as_raw_fd(), &c)?.as_ref().map(stat_of))
    }

    fn stat_dir(&mut self, dir: &DirHandle) -> FsResult<Stat> {
        Ok(stat_of(&fstat(dir.as_raw_fd())?))
    }

    fn open_dir(&mut self, dir: &DirHandle, name: &[u8]) -> FsResult<DirHandle> {
        let c = cname(name)?;
        let fd = openat(
            dir.as_raw_fd(),
            &c,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        Ok(Rc::new(fd))
    }

    fn open_path(&mut self, dir: &DirHandle, path: &[u8]) -> Option<FsResult<DirHandle>> {
        if !self.openat2 {
            return None;
        }
        match openat2_dir(dir.as_raw_fd(), path) {
            Ok(fd) => Some(Ok(Rc::new(fd))),
            Err(Some(e)) => Some(Err(e)),
            Err(None) => {
                self.openat2 = false;
                None
            }
        }
    }

    fn read_dir(&mut self, dir: &DirHandle) -> FsResult<Vec<Vec<u8>>> {
        // A fresh descriptor: the handle's own offset stays untouched.
        let fd = openat(
            dir.as_raw_fd(),
            &cbytes(b".", "a name")?,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        // SAFETY: fdopendir takes ownership of a valid directory descriptor.
        let d = unsafe { libc::fdopendir(fd.into_raw_fd()) };
        if d.is_null() {
            return Err(last_error());
        }
        let mut names = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; reset it to tell the end from an error.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `d` is an open DIR stream.
            let ent = unsafe { libc::readdir64(d) };
            if ent.is_null() {
                // SAFETY: reading the thread-local errno.
                let errno = unsafe { *libc::__errno_location() };
                break if errno == 0 {
                    Ok(())
                } else {
                    Err(from_io(&io::Error::from_raw_os_error(errno)))
                };
            }
            // SAFETY: readdir returned a valid entry with a NUL-terminated name.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        };
        // SAFETY: closes the stream (and the descriptor) exactly once.
        unsafe { libc::closedir(d) };
        result.map(|()| names)
    }

    fn read_link(&mut self, dir: &DirHandle, name: &[u8]) -> FsResult<Vec<u8>> {
        let c = cname(name)?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: valid descriptor, NUL-terminated name, buffer of its length.
            let n = unsafe {
                libc::readlinkat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(last_error());
            }
            if (n as usize) < buf.len() {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            let len = buf.len() * 2;
            buf.resize(len, 0);
        }
    }

    fn mkdir(&mut self, dir: &DirHandle, name: &[u8], mode: u32) -> FsResult<()> {
        let c = cname(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })
    }

    fn create_file(&mut self, dir: &DirHandle, name: &[u8], mode: u32) -> FsResult<DirFile> {
        let c = cname(name)?;
        let fd = openat(
            dir.as_raw_fd(),
            &c,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            mode as libc::mode_t,
        )?;
        Ok(DirFile {
            file: File::from(fd),
            content: self
                .content
                .as_ref()
                .map(|_| (Hasher::new(Algorithm::Sha256), 0)),
        })
    }

    fn write_file(&mut self, file: &mut DirFile, data: &[u8]) -> FsResult<()> {
        file.file.write_all(data).map_err(|e| from_io(&e))?;
        if let Some((h, len)) = &mut file.content {
            h.update(data);
            *len += data.len() as u64;
        }
        Ok(())
    }

    fn close_file(&mut self, file: DirFile) -> FsResult<()> {
        if let (Some(known), Some((h, len))) = (&self.content, file.content) {
            let st = fstat(file.file.as_raw_fd())?;
            known.record(st.st_dev, st.st_ino, len, h.finish());
        }
        let fd = file.file.into_raw_fd();
        // SAFETY: closes a descriptor we own, once.
        check(unsafe { libc::close(fd) })
    }

    fn open_file(&mut self, dir: &DirHandle, name: &[u8]) -> FsResult<File> {
        let c = cname(name)?;
        // O_NONBLOCK: if a FIFO was swapped in since the lstat, do not hang on it.
        let fd = openat(
            dir.as_raw_fd(),
            &c,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        )?;
        let st = fstat(fd.as_raw_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FsError::new(
                FsErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        // SAFETY: clearing O_NONBLOCK on our own descriptor.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_RDONLY) };
        Ok(File::from(fd))
    }

    fn symlink(&mut self, dir: &DirHandle, name: &[u8], target: &[u8]) -> FsResult<()> {
        let c = cname(name)?;
        let t = cbytes(target, "a symlink target")?;
        // SAFETY: NUL-terminated target and name, valid descriptor.
        check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
    }

    fn hardlink(
        &mut self,
        from_dir: &DirHandle,
        from_name: &[u8],
        dir: &DirHandle,
        name: &[u8],
    ) -> FsResult<()> {
        let from = cname(from_name)?;
        let to = cname(name)?;
        // SAFETY: valid descriptors and NUL-terminated names; flags 0: never follow.
        check(unsafe {
            libc::linkat(
                from_dir.as_raw_fd(),
                from.as_ptr(),
                dir.as_raw_fd(),
                to.as_ptr(),
                0,
            )
        })
    }

    fn mknod(&mut self, dir: &DirHandle, name: &[u8], node: Special, mode: u32) -> FsResult<()> {
        let c = cname(name)?;
        let (kind, dev) = match node {
            Special::CharDevice { major, minor } => (libc::S_IFCHR, libc::makedev(major, minor)),
            Special::BlockDevice { major, minor } => (libc::S_IFBLK, libc::makedev(major, minor)),
            Special::Fifo => (libc::S_IFIFO, 0),
        };
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe {
            libc::mknodat(
                dir.as_raw_fd(),
                c.as_ptr(),
                kind | (mode & 0o7777) as libc::mode_t,
                dev,
            )
        })
    }

    fn remove(&mut self, dir: &DirHandle, name: &[u8], is_dir: bool) -> FsResult<()> {
        let c = cname(name)?;
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
    }

    fn rename(
        &mut self,
        from_dir: &DirHandle,
        from_name: &[u8],
        to_dir: &DirHandle,
        to_name: &[u8],
    ) -> FsResult<()> {
        let from = cname(from_name)?;
        let to = cname(to_name)?;
        // SAFETY: valid descriptors and NUL-terminated names.
        let r = check(unsafe {
            libc::renameat2(
                from_dir.as_raw_fd(),
                from.as_ptr(),
                to_dir.as_raw_fd(),
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        });
        match r {
            Err(e) if e.kind == FsErrorKind::InvalidInput || e.errno == Some(libc::ENOSYS) => {
                // A filesystem without RENAME_NOREPLACE: check, then rename.
                if fstatat(to_dir.as_raw_fd(), &to)?.is_some() {
                    return Err(FsError::new(FsErrorKind::AlreadyExists, "file exists"));
                }
                // SAFETY: as above.
                check(unsafe {
                    libc::renameat(
                        from_dir.as_raw_fd(),
                        from.as_ptr(),
                        to_dir.as_raw_fd(),
                        to.as_ptr(),
                    )
                })
            }
            other => other,
        }
    }

    fn set_meta(
        &mut self,
        target: Target<'_, DirHandle, DirFile>,
        meta: &SetMeta<'_>,
    ) -> FsResult<RefusedXattrs> {
        let fd = match &target {
            Target::File(f) => Some(f.as_raw_fd()),
            Target::Dir(d) => Some(d.as_raw_fd()),
            Target::At(..) => None,
        };
        if let Some((uid, gid)) = meta.owner {
            check(match (&target, fd) {
                // SAFETY: a valid descriptor.
                (_, Some(fd)) => unsafe { libc::fchown(fd, uid, gid) },
                (Target::At(d, name), None) => {
                    let c = cname(name)?;
                    // SAFETY: valid descriptor and NUL-terminated name; no follow.
                    unsafe {
                        libc::fchownat(
                            d.as_raw_fd(),
                            c.as_ptr(),
                            uid,
                            gid,
                            libc::AT_SYMLINK_NOFOLLOW,
                        )
                    }
                }
                _ => 0,
            })?;
        }
        let mut refused = Vec::new();
        if !meta.xattrs.is_empty() {
            let at = Self::xattr_at(&target)?;
            for (name, value) in meta.xattrs {
                let c = cbytes(name, "an xattr name")?;
                match at.set(&c, value) {
                    Ok(()) => {}
                    Err(e) if refusal(&e) => refused.push((name.clone(), e)),
                    Err(e) => {
                        return Err(FsError {
                            message: format!(
                                "set xattr {}: {}",
                                String::from_utf8_lossy(name),
                                e.message
                            ),
                            ..e
                        })
                    }
                }
            }
        }
        if let Some(mode) = meta.mode {
            match (&target, fd) {
                // SAFETY: a valid descriptor.
                (_, Some(fd)) => check(unsafe { libc::fchmod(fd, mode as libc::mode_t) })?,
                (Target::At(d, name), None) => Self::chmod_at(d, name, mode)?,
                _ => {}
            }
        }
        if meta.mtime.is_some() {
            let times = timespec(meta.mtime);
            check(match (&target, fd) {
                // SAFETY: a valid descriptor and two timespecs.
                (_, Some(fd)) => unsafe { libc::futimens(fd, times.as_ptr()) },
                (Target::At(d, name), None) => {
                    let c = cname(name)?;
                    // SAFETY: valid descriptor, NUL-terminated name, two timespecs; no follow.
                    unsafe {
                        libc::utimensat(
                            d.as_raw_fd(),
                            c.as_ptr(),
                            times.as_ptr(),
                            libc::AT_SYMLINK_NOFOLLOW,
                        )
                    }
                }
                _ => 0,
            })?;
        }
        Ok(refused)
    }

    fn xattrs(
        &mut self,
        target: Target<'_, DirHandle, DirFile>,
    ) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let at = Self::xattr_at(&target)?;
        let mut out = Vec::new();
        for name in at.list()? {
            let c = cbytes(&name, "an xattr name")?;
            match at.get(&c) {
                Ok(value) => out.push((name, value)),
                Err(e) if e.errno == Some(libc::ENODATA) => {} // removed in between
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn remove_xattr(
        &mut self,
        target: Target<'_, DirHandle, DirFile>,
        name: &[u8],
    ) -> FsResult<()> {
        let at = Self::xattr_at(&target)?;
        at.remove(&cbytes(name, "an xattr name")?)
    }
}
