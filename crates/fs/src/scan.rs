//! [`scan_tree`]: every entry of a directory tree with its metadata and content hash — the
//! record an image store keeps of a diff dir to prove it later unchanged (`fsck --verify`).
//!
//! The walk never follows a symlink (fd-relative, `O_NOFOLLOW`, through [`DirFs`]); names are
//! visited in byte order, depth first, so two equal trees give equal lists. Regular files are
//! hashed on helper threads while the walk goes on (a bounded number open at once), except
//! those whose hash is already known: a [`DirFs`] that records content hashes the files it
//! writes, so a scan right after an extraction ([`crate::apply_and_scan_layer`]) reads no
//! file back.

use crate::dirfs::DirFs;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{mpsc, Mutex};
use stevedore_core::digest::{Algorithm, Digest, Hasher};
use stevedore_core::layer::{FileType, Fs, FsError, Target};
use stevedore_core::tar::Timestamp;

/// One entry of a scanned tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Relative to the root, `/`-separated.
    pub path: Vec<u8>,
    pub kind: FileType,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of a regular file (0 otherwise).
    pub size: u64,
    pub mtime: Timestamp,
    /// sha256 of a regular file's content (the first path of a hard-link group only).
    pub sha256: Option<Digest>,
    /// Symlink target.
    pub link: Option<Vec<u8>>,
    /// For the second and later paths of one inode: the first path (in walk order).
    pub hardlink: Option<Vec<u8>>,
    /// Device numbers of character and block devices.
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What [`scan_tree`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeScan {
    pub entries: Vec<TreeEntry>,
    /// Docker's size of a layer dir: bytes of non-directories, each inode once.
    pub size: u64,
}

fn err(op: &str, path: &[u8], e: FsError) -> io::Error {
    io::Error::new(
        io::ErrorKind::Other,
        format!("{op} {}: {e}", String::from_utf8_lossy(path)),
    )
}

/// sha256 of files as they were written, by inode (`st_dev`, `st_ino`) with the length hashed:
/// filled by a [`DirFs::recording_content`], read by [`scan_tree_known`]. A file counts as known
/// only while its size still equals the length hashed (the newest record of an inode wins, so a
/// reused inode number takes its new file's hash).
#[derive(Debug, Default)]
pub struct KnownContent {
    files: Mutex<HashMap<(u64, u64), (u64, Digest)>>,
}

impl KnownContent {
    pub fn record(&self, dev: u64, ino: u64, len: u64, digest: Digest) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((dev, ino), (len, digest));
    }

    fn get(&self, dev: u64, ino: u64, len: u64) -> Option<Digest> {
        match self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(dev, ino))
        {
            Some((l, d)) if *l == len => Some(d.clone()),
            _ => None,
        }
    }
}

/// Scans the tree at `root` (see the module documentation), hashing on `threads` helpers.
pub fn scan_tree(root: &Path, threads: usize) -> io::Result<TreeScan> {
    scan_tree_known(root, threads, None)
}

/// [`scan_tree`], taking the hash of a regular file from `known` when it has the file's inode
/// and size (files the engine just wrote and hashed) instead of reading the file.
pub fn scan_tree_known(
    root: &Path,
    threads: usize,
    known: Option<&KnownContent>,
) -> io::Result<TreeScan> {
    scan(root, threads, known, true)
}

/// [`scan_tree`] without content hashes (`sha256` stays `None`): metadata only, for a tree
/// whose content is proven another way (a tar-split rebuilt against the diff_id).
pub fn scan_tree_metadata(root: &Path) -> io::Result<TreeScan> {
    scan(root, 1, None, false)
}

fn scan(
    root: &Path,
    threads: usize,
    known: Option<&KnownContent>,
    hash: bool,
) -> io::Result<TreeScan> {
    let mut fs = DirFs::open(root)?;
    let top = fs.root().map_err(|e| err("open", b".", e))?;
    let threads = threads.max(1);
    let (work_tx, work_rx) = mpsc::sync_channel::<(usize, File)>(threads * 16);
    let work_rx = std::sync::Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, io::Result<Digest>)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            scope.spawn(move || loop {
                let next = work_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((i, mut file)) = next else { return };
                let mut h = Hasher::new(Algorithm::Sha256);
                let mut buf = vec![0u8; 1 << 20];
                let r = loop {
                    match file.read(&mut buf) {
                        Ok(0) => break Ok(h.finish()),
                        Ok(n) => h.update(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                if done_tx.send((i, r)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let walked = walk(&mut fs, top, &work_tx, known, hash);
        drop(work_tx); // the helpers finish the queue and stop
        let mut scan = walked?;
        for (i, r) in done_rx {
            let digest = r.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "read {}: {e}",
                        String::from_utf8_lossy(&scan.entries[i].path)
                    ),
                )
            })?;
            scan.entries[i].sha256 = Some(digest);
        }
        Ok(scan)
    })
}

fn walk(
    fs: &mut DirFs,
    top: <DirFs as Fs>::Dir,
    work: &mpsc::SyncSender<(usize, File)>,
    known: Option<&KnownContent>,
    hash: bool,
) -> io::Result<TreeScan> {
    let mut entries = Vec::new();
    let mut size = 0u64;
    let mut inodes: std::collections::HashMap<(u64, u64), Vec<u8>> = Default::default();
    // Depth first, names in byte order: a stack of (dir, its path, remaining names reversed).
    let mut names = fs.read_dir(&top).map_err(|e| err("read", b".", e))?;
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut stack = vec![(top, Vec::<u8>::new(), names)];
    while let Some((dir, prefix, names)) = stack.last_mut() {
        let Some(name) = names.pop() else {
            stack.pop();
            continue;
        };
        let dir = dir.clone();
        let mut path = prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        let Some(st) = fs.lstat(&dir, &name).map_err(|e| err("lstat", &path, e))? else {
            continue; // removed while we walked
        };
        let mut e = TreeEntry {
            path: path.clone(),
            kind: st.kind,
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            size: if st.kind == FileType::File {
                st.size
            } else {
                0
            },
            mtime: st.mtime,
            sha256: None,
            link: None,
            hardlink: None,
            rdev: None,
            xattrs: Vec::new(),
        };
        let mut sub = None;
        match st.kind {
            FileType::Dir => {
                let d = fs
                    .open_dir(&dir, &name)
                    .map_err(|e| err("open", &path, e))?;
                e.xattrs = fs
                    .xattrs(Target::Dir(&d))
                    .map_err(|e| err("xattrs of", &path, e))?;
                sub = Some(d);
            }
            _ => {
                e.xattrs = fs
                    .xattrs(Target::At(&dir, &name))
                    .map_err(|e| err("xattrs of", &path, e))?;
                match inodes.get(&(st.dev, st.ino)) {
                    Some(first) => e.hardlink = Some(first.clone()),
                    None => {
                        inodes.insert((st.dev, st.ino), path.clone());
                        size += st.size;
                    }
                }
            }
        }
        e.xattrs.sort();
        match st.kind {
            FileType::Symlink => {
                e.link = Some(
                    fs.read_link(&dir, &name)
                        .map_err(|e| err("read link", &path, e))?,
                );
            }
            FileType::CharDevice | FileType::BlockDevice => {
                e.rdev = Some((st.rdev_major, st.rdev_minor));
            }
            FileType::File if hash && e.hardlink.is_none() => {
                if let Some(d) = known.and_then(|k| k.get(st.dev, st.ino, st.size)) {
                    e.sha256 = Some(d);
                    entries.push(e);
                    continue;
                }
                let file = fs
                    .open_file(&dir, &name)
                    .map_err(|e| err("open", &path, e))?;
                work.send((entries.len(), file)).map_err(|_| {
                    io::Error::new(io::ErrorKind::Other, "a hashing thread stopped")
                })?;
            }
            _ => {}
        }
        entries.push(e);
        if let Some(d) = sub {
            let mut names = fs.read_dir(&d).map_err(|e| err("read", &path, e))?;
            names.sort_unstable_by(|a, b| b.cmp(a));
            stack.push((d, path, names));
        }
    }
    Ok(TreeScan { entries, size })
}
