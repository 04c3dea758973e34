//! Helpers shared by the stevedore-fs tests: archive builders (the core's TarWriter, and raw
//! headers for what it refuses to write), scratch directories, tree snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use stevedore_core::digest::{hash, Algorithm};
use stevedore_core::tar::{self, EntryKind, Format, Header, Timestamp};

// --- archives --------------------------------------------------------------------------------

/// One archive member: either a header the TarWriter encodes, or raw bytes.
pub enum Member {
    Entry(Header, Vec<u8>),
    Raw(Vec<u8>),
}

pub fn file(path: &str, content: &str) -> Member {
    let mut h = Header::new(EntryKind::Regular, path);
    h.size = content.len() as u64;
    h.mtime = Timestamp::new(1_600_000_000, 0);
    Member::Entry(h, content.as_bytes().to_vec())
}

pub fn dir(path: &str) -> Member {
    let mut h = Header::new(EntryKind::Directory, format!("{path}/"));
    h.mtime = Timestamp::new(1_600_000_000, 0);
    Member::Entry(h, Vec::new())
}

pub fn symlink(path: &str, target: &str) -> Member {
    let mut h = Header::new(EntryKind::Symlink, path);
    h.link_name = target.as_bytes().to_vec();
    Member::Entry(h, Vec::new())
}

pub fn hardlink(path: &str, target: &str) -> Member {
    let mut h = Header::new(EntryKind::Hardlink, path);
    h.link_name = target.as_bytes().to_vec();
    Member::Entry(h, Vec::new())
}

pub fn device(path: &str, kind: EntryKind, major: u32, minor: u32) -> Member {
    let mut h = Header::new(kind, path);
    h.dev_major = major;
    h.dev_minor = minor;
    Member::Entry(h, Vec::new())
}

/// An entry with extra header changes.
pub fn with(m: Member, f: impl FnOnce(&mut Header)) -> Member {
    match m {
        Member::Entry(mut h, d) => {
            f(&mut h);
            Member::Entry(h, d)
        }
        raw => raw,
    }
}

/// A ustar header block written by hand: any name bytes (NUL-terminated by the field), any
/// typeflag, any size (octal if it fits 11 digits, else GNU base-256).
pub fn raw_header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    if size < 0o77777777777 {
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        b[124] = 0x80;
        b[128..136].copy_from_slice(&size.to_be_bytes());
    }
    b[136..148].copy_from_slice(b"13000000000\0");
    b[156] = typeflag;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

fn padded(mut data: Vec<u8>) -> Vec<u8> {
    let pad = (512 - data.len() % 512) % 512;
    data.extend(std::iter::repeat(0).take(pad));
    data
}

/// A raw member: header + data (padded).
pub fn raw(name: &[u8], typeflag: u8, data: &[u8], link: &[u8]) -> Member {
    let mut out = raw_header(name, typeflag, data.len() as u64, link).to_vec();
    out.extend(padded(data.to_vec()));
    Member::Raw(out)
}

/// A PAX `x` header with these records, to go before an entry.
pub fn pax(records: &[(&[u8], &[u8])]) -> Member {
    let mut body = Vec::new();
    for (k, v) in records {
        let base = k.len() + v.len() + 3;
        let mut len = base + base.to_string().len();
        if len.to_string().len() + base != len {
            len = base + len.to_string().len();
        }
        body.extend_from_slice(len.to_string().as_bytes());
        body.push(b' ');
        body.extend_from_slice(k);
        body.push(b'=');
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    let mut out = raw_header(b"PaxHeaders/x", b'x', body.len() as u64, b"").to_vec();
    out.extend(padded(body));
    Member::Raw(out)
}

/// A GNU `L` long-name header, to go before an entry.
pub fn gnu_long_name(name: &[u8]) -> Member {
    let mut data = name.to_vec();
    data.push(0);
    let mut out = raw_header(b"././@LongLink", b'L', data.len() as u64, b"").to_vec();
    out.extend(padded(data));
    Member::Raw(out)
}

pub fn archive(members: Vec<Member>) -> Vec<u8> {
    let mut w = tar::TarWriter::new(Format::Pax);
    let mut out = Vec::new();
    for m in members {
        match m {
            Member::Entry(h, data) => {
                out.extend_from_slice(w.header(&h).unwrap());
                out.extend_from_slice(w.data(&data).unwrap());
                out.extend_from_slice(w.end_entry().unwrap());
            }
            Member::Raw(bytes) => out.extend(bytes),
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

// --- scratch ---------------------------------------------------------------------------------

/// A scratch directory under the temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "stevedore-fs-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether root-only tests run: as root yes; otherwise they print why and pass, unless
/// `STEVEDORE_REQUIRE_KERNEL_OVERLAY=1` (CI) makes the absence a failure.
pub fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("STEVEDORE_REQUIRE_KERNEL_OVERLAY").as_deref() == Ok("1") {
        panic!("{what}: needs root, but STEVEDORE_REQUIRE_KERNEL_OVERLAY=1");
    }
    eprintln!("skipping {what}: not root");
    false
}

// --- snapshots -------------------------------------------------------------------------------

/// Extended attributes of `path` (not following a symlink).
pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut out = BTreeMap::new();
    // SAFETY: NUL-terminated path; size query.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n <= 0 {
        return out;
    }
    let mut names = vec![0u8; n as usize];
    // SAFETY: buffer of its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    names.truncate(n as usize);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        // SAFETY: as above.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            continue;
        }
        let mut v = vec![0u8; len as usize];
        // SAFETY: buffer of its length.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if len < 0 {
            continue;
        }
        v.truncate(len as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), v);
    }
    out
}

/// One path of a tree as comparable text.
pub fn describe(path: &Path, with_mtime: bool) -> String {
    let md = fs::symlink_metadata(path).unwrap();
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_symlink() {
        format!("symlink->{}", fs::read_link(path).unwrap().display())
    } else if ft.is_file() {
        let data = fs::read(path).unwrap();
        format!(
            "file {} {}",
            data.len(),
            hash(Algorithm::Sha256, &data).hex()
        )
    } else if ft.is_char_device() {
        format!("char {}:{}", libc::major(md.rdev()), libc::minor(md.rdev()))
    } else if ft.is_block_device() {
        format!(
            "block {}:{}",
            libc::major(md.rdev()),
            libc::minor(md.rdev())
        )
    } else if ft.is_fifo() {
        "fifo".into()
    } else {
        "socket".into()
    };
    let mtime = if with_mtime {
        format!(" mtime={}.{:09}", md.mtime(), md.mtime_nsec())
    } else {
        String::new()
    };
    format!(
        "{kind} mode={:o} owner={}:{}{mtime} xattrs={:?}",
        md.mode() & 0o7777,
        md.uid(),
        md.gid(),
        xattrs(path)
    )
}

/// Every path below `root` (relative) with its description; `skip` paths (relative) and
/// their subtrees are left out.
pub fn snapshot(root: &Path, skip: &[&Path], with_mtime: bool) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if skip.iter().any(|s| rel.starts_with(s)) {
                continue;
            }
            out.insert(rel.clone(), describe(&p, with_mtime));
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}
