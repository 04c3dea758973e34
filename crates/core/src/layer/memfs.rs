//! An in-memory [`Fs`]: for unit tests, and for the browser, where there is no filesystem.
//!
//! It models what the layer engine relies on from Linux: inodes with hard links, symlinks that
//! are never followed by the primitive calls, exclusive creation, `rmdir` only on empty
//! directories, `rename` without replacing, directory mtimes bumped to [`MemFs::set_now`]'s
//! time when an entry is added or removed, and, when not [privileged](MemFs::with_privileged),
//! Linux's refusals: no devices other than the 0/0 whiteout, no foreign owners, no `trusted.*`
//! or `security.*` xattrs and no `user.*` xattrs on symlinks, devices and FIFOs.

use super::fs::{
    FileType, Fs, FsError, FsErrorKind, FsResult, RefusedXattrs, SetMeta, Special, Stat, Target,
};
use crate::tar::Timestamp;
use std::collections::BTreeMap;
use std::io::Cursor;

/// Inode number of the root directory.
const ROOT: usize = 0;

#[derive(Debug, Clone)]
enum Data {
    File(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, usize>),
    Symlink(Vec<u8>),
    Special(Special),
}

#[derive(Debug, Clone)]
struct Node {
    data: Data,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timestamp,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    nlink: u64,
    /// Parent inode (directories only; the root is its own parent).
    parent: usize,
}

/// One entry of a [`MemFs`] as [`MemFs::get`] and [`MemFs::walk`] report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemEntry {
    pub kind: FileType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    /// File content, or the symlink target; empty otherwise.
    pub data: Vec<u8>,
    /// Device numbers (devices only).
    pub rdev: (u32, u32),
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Inode number: equal for hard links of one file.
    pub ino: usize,
    pub nlink: u64,
}

/// A file of a [`MemFs`] open for writing.
#[derive(Debug)]
pub struct MemFile(usize);

/// An in-memory directory tree: an inode table, with the Linux behaviour the layer engine
/// relies on (see [`Fs`]).
#[derive(Debug, Clone)]
pub struct MemFs {
    nodes: Vec<Node>,
    privileged: bool,
    /// The ids an unprivileged caller has.
    caller: (u32, u32),
    now: Timestamp,
}

impl Default for MemFs {
    fn default() -> Self {
        MemFs::new()
    }
}

fn err(kind: FsErrorKind, message: &str) -> FsError {
    FsError::new(kind, message)
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(err(
            FsErrorKind::InvalidInput,
            "a name must be one path component",
        ));
    }
    Ok(())
}

impl MemFs {
    /// An empty tree (the root: a directory, mode 0755, owner 0:0, mtime 0), privileged.
    pub fn new() -> MemFs {
        MemFs {
            nodes: vec![Node {
                data: Data::Dir(BTreeMap::new()),
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: Timestamp::default(),
                xattrs: BTreeMap::new(),
                nlink: 1,
                parent: ROOT,
            }],
            privileged: true,
            caller: (0, 0),
            now: Timestamp::default(),
        }
    }

    /// Privileged (root) or not; an unprivileged caller has the ids `caller`, which new
    /// entries get.
    pub fn with_privileged(mut self, privileged: bool, caller: (u32, u32)) -> MemFs {
        self.privileged = privileged;
        self.caller = if privileged { (0, 0) } else { caller };
        let root = &mut self.nodes[ROOT];
        (root.uid, root.gid) = self.caller;
        self
    }

    /// The time given to new entries and to directories whose contents change.
    pub fn set_now(&mut self, now: Timestamp) {
        self.now = now;
    }

    fn node(&self, ino: usize) -> &Node {
        &self.nodes[ino]
    }

    fn dir_map(&self, ino: usize) -> FsResult<&BTreeMap<Vec<u8>, usize>> {
        match &self.nodes.get(ino).map(|n| &n.data) {
            Some(Data::Dir(map)) => Ok(map),
            _ => Err(err(FsErrorKind::NotADirectory, "not a directory")),
        }
    }

    fn dir_map_mut(&mut self, ino: usize) -> FsResult<&mut BTreeMap<Vec<u8>, usize>> {
        match self.nodes.get_mut(ino).map(|n| &mut n.data) {
            Some(Data::Dir(map)) => Ok(map),
            _ => Err(err(FsErrorKind::NotADirectory, "not a directory")),
        }
    }

    fn child(&self, dir: usize, name: &[u8]) -> FsResult<Option<usize>> {
        check_name(name)?;
        Ok(self.dir_map(dir)?.get(name).copied())
    }

    fn existing(&self, dir: usize, name: &[u8]) -> FsResult<usize> {
        self.child(dir, name)?
            .ok_or_else(|| err(FsErrorKind::NotFound, "no such file or directory"))
    }

    fn insert(&mut self, dir: usize, name: &[u8], data: Data, mode: u32) -> FsResult<usize> {
        if self.child(dir, name)?.is_some() {
            return Err(err(FsErrorKind::AlreadyExists, "file exists"));
        }
        let ino = self.nodes.len();
        self.nodes.push(Node {
            data,
            mode: mode & 0o7777,
            uid: self.caller.0,
            gid: self.caller.1,
            mtime: self.now,
            xattrs: BTreeMap::new(),
            nlink: 1,
            parent: dir,
        });
        self.dir_map_mut(dir)?.insert(name.to_vec(), ino);
        self.nodes[dir].mtime = self.now;
        Ok(ino)
    }

    fn kind_of(node: &Node) -> FileType {
        match &node.data {
            Data::File(_) => FileType::File,
            Data::Dir(_) => FileType::Dir,
            Data::Symlink(_) => FileType::Symlink,
            Data::Special(Special::CharDevice { .. }) => FileType::CharDevice,
            Data::Special(Special::BlockDevice { .. }) => FileType::BlockDevice,
            Data::Special(Special::Fifo) => FileType::Fifo,
        }
    }

    fn stat_of(&self, ino: usize) -> Stat {
        let n = self.node(ino);
        let (size, rdev) = match &n.data {
            Data::File(d) | Data::Symlink(d) => (d.len() as u64, (0, 0)),
            Data::Special(Special::CharDevice { major, minor })
            | Data::Special(Special::BlockDevice { major, minor }) => (0, (*major, *minor)),
            _ => (0, (0, 0)),
        };
        Stat {
            kind: Self::kind_of(n),
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            size,
            mtime: n.mtime,
            dev: 1,
            ino: ino as u64,
            nlink: n.nlink,
            rdev_major: rdev.0,
            rdev_minor: rdev.1,
        }
    }

    fn entry_of(&self, ino: usize) -> MemEntry {
        let st = self.stat_of(ino);
        let n = self.node(ino);
        let data = match &n.data {
            Data::File(d) | Data::Symlink(d) => d.clone(),
            _ => Vec::new(),
        };
        MemEntry {
            kind: st.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            mtime: n.mtime,
            data,
            rdev: (st.rdev_major, st.rdev_minor),
            xattrs: n.xattrs.clone(),
            ino,
            nlink: n.nlink,
        }
    }

    /// The entry at `path` (`/`-separated, relative to the root; `""` is the root), without
    /// following any symlink.
    pub fn get(&self, path: impl AsRef<[u8]>) -> Option<MemEntry> {
        let mut ino = ROOT;
        for comp in path
            .as_ref()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
        {
            ino = *self.dir_map(ino).ok()?.get(comp)?;
        }
        Some(self.entry_of(ino))
    }

    /// Every entry below the root, depth first, names in byte order, with its path.
    pub fn walk(&self) -> Vec<(Vec<u8>, MemEntry)> {
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), ROOT)];
        while let Some((path, ino)) = stack.pop() {
            if let Ok(map) = self.dir_map(ino) {
                for (name, &child) in map.iter().rev() {
                    let mut p = path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name);
                    stack.push((p, child));
                }
            }
            if ino != ROOT || !path.is_empty() {
                out.push((path, self.entry_of(ino)));
            }
        }
        out
    }

    /// Creates the directories of `path` that are missing (mode 0755), returning the last.
    fn mkdirs(&mut self, path: &[u8]) -> usize {
        let mut ino = ROOT;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            ino = match self
                .child(ino, comp)
                .expect("fixture path is a directory path")
            {
                Some(c) => c,
                None => self
                    .insert(ino, comp, Data::Dir(BTreeMap::new()), 0o755)
                    .expect("fixture directory"),
            };
        }
        ino
    }

    fn fixture(&mut self, path: &str, data: Data, mode: u32) -> &mut MemFs {
        let (parent, name) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        };
        let dir = self.mkdirs(parent.as_bytes());
        if let Some(old) = self.child(dir, name.as_bytes()).expect("fixture path") {
            if matches!(self.nodes[old].data, Data::Dir(_)) && matches!(data, Data::Dir(_)) {
                self.nodes[old].mode = mode;
                return self;
            }
            panic!("fixture {path:?} already exists");
        }
        self.insert(dir, name.as_bytes(), data, mode)
            .expect("fixture entry");
        self
    }

    /// Test fixture: a directory (and its missing parents).
    pub fn add_dir(&mut self, path: &str, mode: u32) -> &mut MemFs {
        self.fixture(path, Data::Dir(BTreeMap::new()), mode)
    }

    /// Test fixture: a regular file (and its missing parents).
    pub fn add_file(&mut self, path: &str, content: &[u8], mode: u32) -> &mut MemFs {
        self.fixture(path, Data::File(content.to_vec()), mode)
    }

    /// Test fixture: a symlink (and its missing parents).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> &mut MemFs {
        self.fixture(path, Data::Symlink(target.as_bytes().to_vec()), 0o777)
    }

    /// Test fixture: sets an xattr on an existing entry.
    pub fn add_xattr(&mut self, path: &str, name: &str, value: &[u8]) -> &mut MemFs {
        let ino = self.get(path).expect("fixture entry exists").ino;
        self.nodes[ino]
            .xattrs
            .insert(name.as_bytes().to_vec(), value.to_vec());
        self
    }

    fn target_ino(&self, target: Target<'_, usize, MemFile>) -> FsResult<usize> {
        match target {
            Target::File(f) => Ok(f.0),
            Target::Dir(d) => Ok(*d),
            Target::At(d, name) => self.existing(*d, name),
        }
    }

    fn xattr_allowed(&self, ino: usize, name: &[u8]) -> FsResult<()> {
        if self.privileged {
            return Ok(());
        }
        let denied = || err(FsErrorKind::PermissionDenied, "operation not permitted");
        if name.starts_with(b"trusted.") || name.starts_with(b"security.") {
            return Err(denied());
        }
        if name.starts_with(b"user.")
            && !matches!(self.nodes[ino].data, Data::File(_) | Data::Dir(_))
        {
            return Err(denied());
        }
        Ok(())
    }
}

impl Fs for MemFs {
    type Dir = usize;
    type File = MemFile;
    type Reader = Cursor<Vec<u8>>;

    fn root(&mut self) -> FsResult<usize> {
        Ok(ROOT)
    }

    fn privileged(&self) -> bool {
        self.privileged
    }

    fn lstat(&mut self, dir: &usize, name: &[u8]) -> FsResult<Option<Stat>> {
        Ok(self.child(*dir, name)?.map(|ino| self.stat_of(ino)))
    }

    fn stat_dir(&mut self, dir: &usize) -> FsResult<Stat> {
        self.dir_map(*dir)?;
        Ok(self.stat_of(*dir))
    }

    fn open_dir(&mut self, dir: &usize, name: &[u8]) -> FsResult<usize> {
        let ino = self.existing(*dir, name)?;
        match self.nodes[ino].data {
            Data::Dir(_) => Ok(ino),
            Data::Symlink(_) => Err(err(FsErrorKind::Symlink, "is a symlink")),
            _ => Err(err(FsErrorKind::NotADirectory, "not a directory")),
        }
    }

    fn read_dir(&mut self, dir: &usize) -> FsResult<Vec<Vec<u8>>> {
        Ok(self.dir_map(*dir)?.keys().cloned().collect())
    }

    fn read_link(&mut self, dir: &usize, name: &[u8]) -> FsResult<Vec<u8>> {
        match &self.nodes[self.existing(*dir, name)?].data {
            Data::Symlink(t) => Ok(t.clone()),
            _ => Err(err(FsErrorKind::InvalidInput, "not a symlink")),
        }
    }

    fn mkdir(&mut self, dir: &usize, name: &[u8], mode: u32) -> FsResult<()> {
        self.insert(*dir, name, Data::Dir(BTreeMap::new()), mode)
            .map(|_| ())
    }

    fn create_file(&mut self, dir: &usize, name: &[u8], mode: u32) -> FsResult<MemFile> {
        self.insert(*dir, name, Data::File(Vec::new()), mode)
            .map(MemFile)
    }

    fn write_file(&mut self, file: &mut MemFile, data: &[u8]) -> FsResult<()> {
        match &mut self.nodes[file.0].data {
            Data::File(d) => {
                d.extend_from_slice(data);
                Ok(())
            }
            _ => Err(err(FsErrorKind::InvalidInput, "not a file")),
        }
    }

    fn close_file(&mut self, _file: MemFile) -> FsResult<()> {
        Ok(())
    }

    fn open_file(&mut self, dir: &usize, name: &[u8]) -> FsResult<Cursor<Vec<u8>>> {
        match &self.nodes[self.existing(*dir, name)?].data {
            Data::File(d) => Ok(Cursor::new(d.clone())),
            Data::Symlink(_) => Err(err(FsErrorKind::Symlink, "is a symlink")),
            _ => Err(err(FsErrorKind::InvalidInput, "not a regular file")),
        }
    }

    fn symlink(&mut self, dir: &usize, name: &[u8], target: &[u8]) -> FsResult<()> {
        if target.is_empty() {
            return Err(err(FsErrorKind::NotFound, "empty symlink target"));
        }
        self.insert(*dir, name, Data::Symlink(target.to_vec()), 0o777)
            .map(|_| ())
    }

    fn hardlink(
        &mut self,
        from_dir: &usize,
        from_name: &[u8],
        dir: &usize,
        name: &[u8],
    ) -> FsResult<()> {
        let ino = self.existing(*from_dir, from_name)?;
        if matches!(self.nodes[ino].data, Data::Dir(_)) {
            return Err(err(
                FsErrorKind::PermissionDenied,
                "hard link to a directory",
            ));
        }
        if self.child(*dir, name)?.is_some() {
            return Err(err(FsErrorKind::AlreadyExists, "file exists"));
        }
        self.dir_map_mut(*dir)?.insert(name.to_vec(), ino);
        self.nodes[ino].nlink += 1;
        self.nodes[*dir].mtime = self.now;
        Ok(())
    }

    fn mknod(&mut self, dir: &usize, name: &[u8], node: Special, mode: u32) -> FsResult<()> {
        let whiteout = node == Special::CharDevice { major: 0, minor: 0 };
        if !self.privileged && node != Special::Fifo && !whiteout {
            return Err(err(
                FsErrorKind::PermissionDenied,
                "operation not permitted",
            ));
        }
        self.insert(*dir, name, Data::Special(node), mode)
            .map(|_| ())
    }

    fn remove(&mut self, dir: &usize, name: &[u8], is_dir: bool) -> FsResult<()> {
        let ino = self.existing(*dir, name)?;
        match (&self.nodes[ino].data, is_dir) {
            (Data::Dir(map), true) if !map.is_empty() => {
                return Err(err(FsErrorKind::DirectoryNotEmpty, "directory not empty"))
            }
            (Data::Dir(_), true) => {}
            (Data::Dir(_), false) => return Err(err(FsErrorKind::IsADirectory, "is a directory")),
            (_, true) => return Err(err(FsErrorKind::NotADirectory, "not a directory")),
            (_, false) => {}
        }
        self.dir_map_mut(*dir)?.remove(name);
        self.nodes[*dir].mtime = self.now;
        let node = &mut self.nodes[ino];
        node.nlink -= 1;
        if node.nlink == 0 {
            if let Data::File(d) = &mut node.data {
                *d = Vec::new();
            }
        }
        Ok(())
    }

    fn rename(
        &mut self,
        from_dir: &usize,
        from_name: &[u8],
        to_dir: &usize,
        to_name: &[u8],
    ) -> FsResult<()> {
        let ino = self.existing(*from_dir, from_name)?;
        if self.child(*to_dir, to_name)?.is_some() {
            return Err(err(FsErrorKind::AlreadyExists, "file exists"));
        }
        if matches!(self.nodes[ino].data, Data::Dir(_)) {
            // A directory cannot move below itself.
            let mut up = *to_dir;
            loop {
                if up == ino {
                    return Err(err(
                        FsErrorKind::InvalidInput,
                        "cannot move a directory into itself",
                    ));
                }
                if up == ROOT {
                    break;
                }
                up = self.nodes[up].parent;
            }
            self.nodes[ino].parent = *to_dir;
        }
        self.dir_map_mut(*from_dir)?.remove(from_name);
        self.dir_map_mut(*to_dir)?.insert(to_name.to_vec(), ino);
        self.nodes[*from_dir].mtime = self.now;
        self.nodes[*to_dir].mtime = self.now;
        Ok(())
    }

    fn set_meta(
        &mut self,
        target: Target<'_, usize, MemFile>,
        meta: &SetMeta<'_>,
    ) -> FsResult<RefusedXattrs> {
        let ino = self.target_ino(target)?;
        if let Some((uid, gid)) = meta.owner {
            if !self.privileged && (uid, gid) != self.caller {
                return Err(err(
                    FsErrorKind::PermissionDenied,
                    "operation not permitted (chown)",
                ));
            }
            let n = &mut self.nodes[ino];
            (n.uid, n.gid) = (uid, gid);
            if !matches!(n.data, Data::Dir(_)) {
                n.mode &= !0o6000;
            }
        }
        let mut refused = Vec::new();
        for (name, value) in meta.xattrs {
            match self.xattr_allowed(ino, name) {
                Ok(()) => {
                    self.nodes[ino].xattrs.insert(name.clone(), value.clone());
                }
                Err(e) => refused.push((name.clone(), e)),
            }
        }
        let n = &mut self.nodes[ino];
        if let Some(mode) = meta.mode {
            if !matches!(n.data, Data::Symlink(_)) {
                n.mode = mode & 0o7777;
            }
        }
        if let Some(mtime) = meta.mtime {
            n.mtime = mtime;
        }
        Ok(refused)
    }

    fn xattrs(&mut self, target: Target<'_, usize, MemFile>) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let ino = self.target_ino(target)?;
        Ok(self.nodes[ino]
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn remove_xattr(&mut self, target: Target<'_, usize, MemFile>, name: &[u8]) -> FsResult<()> {
        let ino = self.target_ino(target)?;
        if self.nodes[ino].xattrs.contains_key(name) {
            self.xattr_allowed(ino, name)?;
            self.nodes[ino].xattrs.remove(name);
        }
        Ok(())
    }
}
