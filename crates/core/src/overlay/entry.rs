//! Layer entries: the metadata of one path of one layer, as a tar listing or a directory walk
//! reports it, and the path normalization every entry goes through.

use crate::error::{Error, Result};
use std::borrow::Cow;

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; `target` is stored verbatim (relative or absolute, never normalized).
    Symlink { target: Vec<u8> },
    /// A hard link to another path *of the same layer* (a tar `LNKTYPE` entry). `target` is a
    /// layer path and is normalized like [`Entry::path`] when the index is built.
    Hardlink { target: Vec<u8> },
    /// A character device. In the overlay form, `0/0` is a whiteout, not content.
    CharDevice { major: u32, minor: u32 },
    /// A block device.
    BlockDevice { major: u32, minor: u32 },
    /// A named pipe.
    Fifo,
}

impl EntryKind {
    pub fn is_dir(&self) -> bool {
        matches!(self, EntryKind::Dir)
    }

    /// The `S_IFMT` bits of `st_mode` for this kind (a hardlink reports `S_IFREG`; resolve it
    /// through the stack to learn the kind of the inode it names).
    pub fn type_bits(&self) -> u32 {
        match self {
            EntryKind::File | EntryKind::Hardlink { .. } => 0o100000,
            EntryKind::Dir => 0o040000,
            EntryKind::Symlink { .. } => 0o120000,
            EntryKind::CharDevice { .. } => 0o020000,
            EntryKind::BlockDevice { .. } => 0o060000,
            EntryKind::Fifo => 0o010000,
        }
    }

    /// Short name for messages: `file`, `dir`, `symlink`, ...
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::Hardlink { .. } => "hardlink",
            EntryKind::CharDevice { .. } => "char device",
            EntryKind::BlockDevice { .. } => "block device",
            EntryKind::Fifo => "fifo",
        }
    }
}

/// One path of one layer.
///
/// `path` is relative to the layer root, `/`-separated bytes; it is normalized (leading `/` and
/// `./`, empty and `.` components removed, `..` rejected) when the entry enters a
/// [`LayerIndex`](super::LayerIndex). The layer root itself is the empty path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`), no file-type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Uncompressed content size in bytes (regular files; what `lstat` reports otherwise).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Identifies the content of a regular file (for example `sha256:<hex>` of its bytes).
    pub content: Option<String>,
    /// Extended attributes, name → value, in the order given.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// An entry with the conventional defaults: mode 0644 (files, devices, fifos), 0755 (dirs)
    /// or 0777 (symlinks), owner 0:0, size 0 (a symlink's size is its target length), mtime 0.
    pub fn new(path: impl Into<Vec<u8>>, kind: EntryKind) -> Entry {
        let (mode, size) = match &kind {
            EntryKind::Dir => (0o755, 0),
            EntryKind::Symlink { target } => (0o777, target.len() as u64),
            _ => (0o644, 0),
        };
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            size,
            mtime: 0,
            content: None,
            xattrs: Vec::new(),
        }
    }

    pub fn file(path: impl Into<Vec<u8>>) -> Entry {
        Entry::new(path, EntryKind::File)
    }

    pub fn dir(path: impl Into<Vec<u8>>) -> Entry {
        Entry::new(path, EntryKind::Dir)
    }

    pub fn symlink(path: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Entry {
        Entry::new(
            path,
            EntryKind::Symlink {
                target: target.into(),
            },
        )
    }

    pub fn hardlink(path: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Entry {
        Entry::new(
            path,
            EntryKind::Hardlink {
                target: target.into(),
            },
        )
    }

    /// A regular file whose content id is `content` and size `content.len()`; handy in tests
    /// where the content is a short literal.
    pub fn file_with(path: impl Into<Vec<u8>>, content: &str) -> Entry {
        Entry::file(path)
            .with_size(content.len() as u64)
            .with_content(content)
    }

    pub fn with_mode(mut self, mode: u32) -> Entry {
        self.mode = mode & 0o7777;
        self
    }

    pub fn with_owner(mut self, uid: u32, gid: u32) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn with_size(mut self, size: u64) -> Entry {
        self.size = size;
        self
    }

    pub fn with_mtime(mut self, mtime: i64) -> Entry {
        self.mtime = mtime;
        self
    }

    pub fn with_content(mut self, content: impl Into<String>) -> Entry {
        self.content = Some(content.into());
        self
    }

    pub fn with_xattr(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Entry {
        self.xattrs.push((name.into(), value.into()));
        self
    }

    /// The value of extended attribute `name`, if present.
    pub fn xattr(&self, name: &str) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// `st_mode` as `lstat` reports it: type bits | permission bits.
    pub fn st_mode(&self) -> u32 {
        self.kind.type_bits() | (self.mode & 0o7777)
    }

    /// The last path component (empty for the root).
    pub fn name(&self) -> &[u8] {
        split_parent(&self.path).1
    }

    /// The entry a layer gets for a directory it contains only implicitly (`a/b` listed without
    /// `a`): what extracting the layer into an empty directory creates.
    pub(crate) fn implicit_dir(path: Vec<u8>) -> Entry {
        Entry::dir(path)
    }
}

/// Lossy text of a path for error messages.
pub(crate) fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Normalize a layer path: strip leading `/`, drop empty and `.` components and a trailing `/`;
/// reject `..` components and NUL bytes. The root is the empty path. Borrows when the input
/// is already normal.
pub fn normalize_path(path: &[u8]) -> Result<Cow<'_, [u8]>> {
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = Vec::with_capacity(path.len());
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(Error::InvalidEntryPath {
                    path: display(path),
                    reason: "`..` components are not allowed in layer paths".into(),
                })
            }
            _ => {
                if comp.contains(&0) {
                    return Err(Error::InvalidEntryPath {
                        path: display(path),
                        reason: "NUL byte in path".into(),
                    });
                }
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// True when `path` is already in normal form (see [`normalize_path`]).
pub(crate) fn is_normal(path: &[u8]) -> bool {
    if path.is_empty() {
        return true;
    }
    if path[0] == b'/' || path[path.len() - 1] == b'/' {
        return false;
    }
    path.split(|&b| b == b'/')
        .all(|c| !matches!(c, b"" | b"." | b"..") && !c.contains(&0))
}

/// Split a normalized path into (parent, name); the root and top-level names have parent `""`.
pub(crate) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `parent/name` (or `name` when the parent is the root).
pub(crate) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !parent.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}
