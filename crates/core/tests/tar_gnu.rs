//! Interoperability with GNU tar (/usr/bin/tar, 1.34 when written).
//!
//! * GNU tar writes, we read: trees with files, directories, symlinks, hard links, FIFOs,
//!   devices (when root), names over 100 and 255 bytes, a non-UTF-8 name, user xattrs,
//!   nanosecond, negative and far-future mtimes, big uids, archived with `--format=ustar`,
//!   `--format=gnu` and `--format=pax --xattrs`. Our reader's view must equal both the tree on
//!   disk and GNU tar's own `tar -tv --full-time --numeric-owner` listing.
//! * We write, GNU tar reads: archives from our writer in all three formats are listed by
//!   GNU tar exactly as our reader lists them, and `tar -x` recreates the tree we described
//!   (types, modes, owners, mtimes, data, link targets, hard links, devices, xattrs).
//! * Byte identity: archives made by GNU tar with `--format=ustar` / `--format=gnu`, `--sort=name
//!   --mtime=@0 --owner=0 --group=0 --numeric-owner -b1`, read with our reader and written back
//!   entry by entry with our writer in the same format, are identical byte for byte: every
//!   header block (including GNU `././@LongLink` records, the ustar prefix split, empty device
//!   fields of GNU headers and the checksum format), all data and padding, and the end marker.
//!   (`-b1` makes GNU tar end the archive right after its two zero blocks instead of padding to
//!   a 10240-byte record.) PAX archives are not compared byte for byte: GNU tar's PAX headers
//!   carry atime/ctime records and `./PaxHeaders/` names that our writer does not produce.
//!
//! The tests skip (pass with a note on stderr) when `tar` is not GNU tar.

mod gnu_util;

use gnu_util::{gnu_tar_available, run, TempDir};
use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use stevedore_core::tar::{
    read_archive, write_archive, EntryKind, Event, Format, Header, Limits, TarReader, TarWriter,
    Timestamp,
};

// ---------------------------------------------------------------------------------------------
// Environment

extern "C" {
    fn geteuid() -> u32;
    fn setxattr(
        path: *const std::os::raw::c_char,
        name: *const std::os::raw::c_char,
        value: *const std::os::raw::c_void,
        size: usize,
        flags: std::os::raw::c_int,
    ) -> std::os::raw::c_int;
    fn llistxattr(
        path: *const std::os::raw::c_char,
        list: *mut std::os::raw::c_char,
        size: usize,
    ) -> isize;
    fn lgetxattr(
        path: *const std::os::raw::c_char,
        name: *const std::os::raw::c_char,
        value: *mut std::os::raw::c_void,
        size: usize,
    ) -> isize;
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe {
        setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {path:?} {name}: {}",
        std::io::Error::last_os_error()
    );
}

/// The `user.*` xattrs of a path (not following symlinks), sorted by name.
fn user_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let p = cpath(path);
    let mut list = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is as long as we say.
    let n = unsafe { llistxattr(p.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    assert!(
        n >= 0,
        "llistxattr {path:?}: {}",
        std::io::Error::last_os_error()
    );
    let mut out = Vec::new();
    for name in list[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        if !name.starts_with(b"user.") {
            continue;
        }
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: as above.
        let len = unsafe {
            lgetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(len >= 0);
        value.truncate(len as usize);
        out.push((name.to_vec(), value));
    }
    out.sort();
    out
}

fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let stamp = format!("@{secs}.{nanos:09}");
    run(
        "touch",
        &[os("-h"), os("-d"), os(&stamp), path.as_os_str()],
        None,
    );
}

fn major(rdev: u64) -> u32 {
    (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32
}

fn minor(rdev: u64) -> u32 {
    ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32
}

// ---------------------------------------------------------------------------------------------
// Trees made on disk for GNU tar

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Ustar,
    Gnu,
    Pax,
}

impl Flavor {
    fn arg(self) -> &'static str {
        match self {
            Flavor::Ustar => "--format=ustar",
            Flavor::Gnu => "--format=gnu",
            Flavor::Pax => "--format=pax",
        }
    }
    fn format(self) -> Format {
        match self {
            Flavor::Ustar => Format::Ustar,
            Flavor::Gnu => Format::Gnu,
            Flavor::Pax => Format::Pax,
        }
    }
}

/// Creates a tree exercising what `flavor` can store, with fixed mtimes.
fn build_tree(root: &Path, flavor: Flavor) {
    let w = |rel: &[u8], data: &[u8], mode: u32| {
        let p = root.join(OsStr::from_bytes(rel));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        run("chmod", &[os(&format!("{mode:o}")), p.as_os_str()], None);
    };
    w(b"file.txt", b"hello\n", 0o644);
    w(b"exec.sh", b"#!/bin/sh\necho hi\n", 0o755);
    w(b"empty", b"", 0o600);
    let big: Vec<u8> = (0..70_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    w(b"big.bin", &big, 0o640);
    w(b"exact512", &[b'x'; 512], 0o644);
    w(b"dir/nested/deep.txt", b"deep\n", 0o644);
    run("chmod", &[os("750"), root.join("dir").as_os_str()], None);
    w(b"caf\xe9-\xff.txt", b"latin-1 name\n", 0o644);
    w(b"setuid", b"", 0o4755);
    // > 100 bytes, splittable into ustar prefix/name.
    let split = format!("long-{}/{}.txt", "a".repeat(60), "b".repeat(80));
    w(split.as_bytes(), b"split\n", 0o644);
    std::os::unix::fs::symlink("file.txt", root.join("sym")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    fs::hard_link(root.join("file.txt"), root.join("hard")).unwrap();
    run("mkfifo", &[root.join("fifo").as_os_str()], None);
    if is_root() {
        run(
            "mknod",
            &[root.join("null").as_os_str(), os("c"), os("1"), os("3")],
            None,
        );
        run(
            "mknod",
            &[root.join("blk").as_os_str(), os("b"), os("7"), os("200")],
            None,
        );
        run(
            "chown",
            &[os("1234:5678"), root.join("exec.sh").as_os_str()],
            None,
        );
    }
    if flavor != Flavor::Ustar {
        // > 255 bytes: only GNU long names or PAX can hold it.
        let deep = format!(
            "deep/{}/{}/{}/{}.txt",
            "c".repeat(70),
            "d".repeat(70),
            "e".repeat(70),
            "f".repeat(60)
        );
        w(deep.as_bytes(), b"very deep\n", 0o644);
        std::os::unix::fs::symlink("t".repeat(150), root.join("longlink")).unwrap();
        w(b"old.txt", b"before 1970\n", 0o644);
        w(b"future.txt", b"after 2242\n", 0o644);
        if is_root() {
            // Beyond 7 octal digits: base-256 in GNU format, PAX records in PAX format.
            run(
                "chown",
                &[os("3000000:4000000"), root.join("big.bin").as_os_str()],
                None,
            );
        }
    }
    if flavor == Flavor::Pax {
        set_xattr(&root.join("file.txt"), "user.bin", b"\0\xff=\n");
        set_xattr(&root.join("exec.sh"), "user.text", b"hello world");
        set_xattr(&root.join("exec.sh"), "user.second", b"2");
    }
    // Fixed mtimes everywhere, directories last (deepest first) so nothing disturbs them.
    let mut all = Vec::new();
    walk(root, root, &mut all);
    all.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.len()));
    let nanos = if flavor == Flavor::Pax {
        123_456_789
    } else {
        0
    };
    for (i, (rel, _)) in all.iter().enumerate() {
        let secs = match rel.as_slice() {
            b"old.txt" => -100_000,
            b"future.txt" => 9_000_000_000,
            _ => 1_600_000_000 + i as i64 * 1000,
        };
        set_mtime(&root.join(OsStr::from_bytes(rel)), secs, nanos);
    }
    set_mtime(root, 1_500_000_000, nanos);
}

/// Every path under `dir` (relative to `root`, as bytes) with its metadata.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(Vec<u8>, fs::Metadata)>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        let md = fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        if md.is_dir() {
            walk(root, &path, out);
        }
        out.push((rel, md));
    }
}

fn gnu_create(flavor: Flavor, tree: &Path, out: &Path, extra: &[&str]) -> Vec<u8> {
    let mut args: Vec<&OsStr> = vec![os(flavor.arg()), os("--sort=name"), os("-b1")];
    if flavor == Flavor::Pax {
        args.push(os("--xattrs"));
        args.push(os("--xattrs-include=user.*"));
    }
    args.extend(extra.iter().map(|s| os(s)));
    args.extend([
        os("-cf"),
        out.as_os_str(),
        os("-C"),
        tree.as_os_str(),
        os("."),
    ]);
    run("tar", &args, None);
    fs::read(out).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Comparisons

/// Strips `./` and trailing slashes: the path relative to the extraction root.
fn rel(path: &[u8]) -> &[u8] {
    let mut p = path;
    while p.starts_with(b"./") {
        p = &p[2..];
    }
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    if p == b"." {
        b""
    } else {
        p
    }
}

struct Checks {
    nanos: bool,
    xattrs: bool,
    owners: bool,
}

/// Our reader's entries must describe the tree at `root` exactly, and cover all of it.
fn check_against_disk(root: &Path, entries: &[(Header, Vec<u8>)], checks: &Checks) {
    let mut seen = BTreeSet::new();
    for (h, data) in entries {
        let r = rel(&h.path);
        let shown = String::from_utf8_lossy(&h.path).into_owned();
        assert!(seen.insert(r.to_vec()), "{shown} appears twice");
        let disk = if r.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(r))
        };
        let md = fs::symlink_metadata(&disk).unwrap_or_else(|e| panic!("{shown}: {e}"));
        let ft = md.file_type();
        match h.kind {
            EntryKind::Regular => {
                assert!(ft.is_file(), "{shown}");
                assert_eq!(h.size, md.len(), "{shown}");
                assert!(*data == fs::read(&disk).unwrap(), "{shown}: data differs");
            }
            EntryKind::Hardlink => {
                assert!(ft.is_file(), "{shown}");
                let target = root.join(OsStr::from_bytes(rel(&h.link_name)));
                assert_eq!(md.ino(), fs::metadata(target).unwrap().ino(), "{shown}");
            }
            EntryKind::Symlink => {
                assert!(ft.is_symlink(), "{shown}");
                let target = fs::read_link(&disk).unwrap();
                assert_eq!(target.as_os_str().as_bytes(), &h.link_name[..], "{shown}");
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                let is_char = h.kind == EntryKind::CharDevice;
                assert!(if is_char {
                    ft.is_char_device()
                } else {
                    ft.is_block_device()
                });
                assert_eq!(
                    (h.dev_major, h.dev_minor),
                    (major(md.rdev()), minor(md.rdev()))
                );
            }
            EntryKind::Directory => assert!(ft.is_dir(), "{shown}"),
            EntryKind::Fifo => assert!(ft.is_fifo(), "{shown}"),
        }
        if h.kind != EntryKind::Hardlink {
            assert_eq!(h.mode, md.mode() & 0o7777, "{shown}: mode");
            assert_eq!(h.mtime.secs, md.mtime(), "{shown}: mtime");
            let nanos = if checks.nanos {
                md.mtime_nsec() as u32
            } else {
                0
            };
            assert_eq!(h.mtime.nanos, nanos, "{shown}: mtime nanoseconds");
        }
        if checks.owners {
            assert_eq!(
                (h.uid, h.gid),
                (u64::from(md.uid()), u64::from(md.gid())),
                "{shown}"
            );
        }
        if checks.xattrs && h.kind != EntryKind::Symlink && h.kind != EntryKind::Hardlink {
            let mut ours: Vec<_> = h.xattrs.clone();
            ours.sort();
            assert_eq!(ours, user_xattrs(&disk), "{shown}: xattrs");
        }
    }
    let mut all = Vec::new();
    walk(root, root, &mut all);
    for (r, _) in all {
        assert!(
            seen.contains(&r),
            "{} is on disk but not in the archive",
            String::from_utf8_lossy(&r)
        );
    }
}

/// GNU tar's listing, one `[mode, owner, size, date, time, name...]` per entry.
fn gnu_listing(archive: &Path) -> Vec<Vec<String>> {
    let out = run(
        "tar",
        &[
            os("--numeric-owner"),
            os("--full-time"),
            os("--quoting-style=escape"),
            os("-tvf"),
            archive.as_os_str(),
        ],
        None,
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(split_listing_line)
        .collect()
}

fn split_listing_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        let end = rest.find(' ').unwrap_or(rest.len());
        fields.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    fields.push(rest.trim_start().to_string());
    fields
}

/// The same listing computed from our reader's headers.
fn our_listing(entries: &[(Header, Vec<u8>)]) -> Vec<Vec<String>> {
    entries.iter().map(|(h, _)| listing_line(h)).collect()
}

fn listing_line(h: &Header) -> Vec<String> {
    let t = match h.kind {
        EntryKind::Regular => '-',
        EntryKind::Hardlink => 'h',
        EntryKind::Symlink => 'l',
        EntryKind::CharDevice => 'c',
        EntryKind::BlockDevice => 'b',
        EntryKind::Directory => 'd',
        EntryKind::Fifo => 'p',
    };
    let m = h.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |mask: u32, exec: u32, set: char, unset: char, plain: char| match (
        m & mask != 0,
        m & exec != 0,
    ) {
        (true, true) => set,
        (true, false) => unset,
        (false, true) => plain,
        (false, false) => '-',
    };
    let mode: String = [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o4000, 0o100, 's', 'S', 'x'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o2000, 0o010, 's', 'S', 'x'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o1000, 0o001, 't', 'T', 'x'),
    ]
    .iter()
    .collect();
    let size = if h.kind.is_device() {
        format!("{},{}", h.dev_major, h.dev_minor)
    } else {
        h.size.to_string()
    };
    // GNU tar's tartime() shows a time before 1970 with a fraction as `secs + 1` and
    // `1e9 - nanos` (-1.25 s, stored as secs -2 + 0.75, prints as 23:59:59.25).
    let (secs, nanos) = match h.mtime {
        Timestamp { secs, nanos } if secs < 0 && nanos != 0 => (secs + 1, 1_000_000_000 - nanos),
        Timestamp { secs, nanos } => (secs, nanos),
    };
    let (date, mut time) = utc(secs);
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        time = format!("{time}.{}", frac.trim_end_matches('0'));
    }
    let mut name = escape(&h.path);
    match h.kind {
        EntryKind::Symlink => name = format!("{name} -> {}", escape(&h.link_name)),
        EntryKind::Hardlink => name = format!("{name} link to {}", escape(&h.link_name)),
        _ => {}
    }
    vec![mode, format!("{}/{}", h.uid, h.gid), size, date, time, name]
}

/// GNU's `escape` quoting style in the C locale (the names used here need only this much).
fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x21..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s
}

/// `YYYY-MM-DD`, `HH:MM:SS` in UTC (proleptic Gregorian, any year after 0).
fn utc(secs: i64) -> (String, String) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60),
    )
}

fn read_chunked(archive: &[u8], chunk: usize) -> Vec<(Header, Vec<u8>)> {
    let mut reader = TarReader::new(Limits::default());
    let mut out: Vec<(Header, Vec<u8>)> = Vec::new();
    'outer: for piece in archive.chunks(chunk) {
        let mut input = piece;
        loop {
            let (used, event) = reader.next_event(input).unwrap();
            input = &input[used..];
            match event {
                Event::Entry(h) => out.push((h.clone(), Vec::new())),
                Event::Data(d) => out.last_mut().unwrap().1.extend_from_slice(d),
                Event::EntryEnd => {}
                Event::NeedMore => break,
                Event::End => break 'outer,
            }
        }
    }
    reader.finish().unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// GNU tar writes, we read

fn gnu_writes_we_read(flavor: Flavor) {
    if !gnu_tar_available() {
        return;
    }
    let tmp = TempDir::new(&format!("read-{flavor:?}"));
    let tree = tmp.0.join("tree");
    fs::create_dir(&tree).unwrap();
    build_tree(&tree, flavor);
    let archive_path = tmp.0.join("a.tar");
    let archive = gnu_create(flavor, &tree, &archive_path, &["--numeric-owner"]);
    let entries = read_archive(&archive, Limits::default()).unwrap();
    assert!(
        entries.len() >= 15,
        "{flavor:?}: only {} entries",
        entries.len()
    );
    check_against_disk(
        &tree,
        &entries,
        &Checks {
            nanos: flavor == Flavor::Pax,
            xattrs: flavor == Flavor::Pax,
            owners: true,
        },
    );
    assert_eq!(
        our_listing(&entries),
        gnu_listing(&archive_path),
        "{flavor:?}"
    );
    // Chunking does not matter.
    for chunk in [1, 7, 511, 4096] {
        assert_eq!(
            read_chunked(&archive, chunk),
            entries,
            "{flavor:?} chunk {chunk}"
        );
    }
    // The things this flavor was meant to exercise did show up.
    let kinds: BTreeSet<String> = entries
        .iter()
        .map(|(h, _)| format!("{:?}", h.kind))
        .collect();
    for kind in ["Regular", "Hardlink", "Symlink", "Directory", "Fifo"] {
        assert!(kinds.contains(kind), "{flavor:?}: no {kind}");
    }
    if is_root() {
        assert!(kinds.contains("CharDevice") && kinds.contains("BlockDevice"));
    }
    let longest = entries.iter().map(|(h, _)| h.path.len()).max().unwrap();
    assert!(
        longest > if flavor == Flavor::Ustar { 100 } else { 255 },
        "{flavor:?}: {longest}"
    );
    if flavor == Flavor::Gnu {
        // GNU wrote base-256 for the negative and the far-future mtime and the big ids.
        let find = |name: &[u8]| entries.iter().find(|(h, _)| rel(&h.path) == name).unwrap();
        assert_eq!(find(b"old.txt").0.mtime.secs, -100_000);
        assert_eq!(find(b"future.txt").0.mtime.secs, 9_000_000_000);
        if is_root() {
            assert_eq!(
                (find(b"big.bin").0.uid, find(b"big.bin").0.gid),
                (3_000_000, 4_000_000)
            );
        }
        assert!(archive.windows(13).any(|w| w == b"././@LongLink"));
    }
    if flavor == Flavor::Pax {
        let file = entries
            .iter()
            .find(|(h, _)| rel(&h.path) == b"file.txt")
            .unwrap();
        assert_eq!(
            file.0.xattrs,
            vec![(b"user.bin".to_vec(), b"\0\xff=\n".to_vec())]
        );
    }
}

#[test]
fn reads_gnu_tar_ustar_archives() {
    gnu_writes_we_read(Flavor::Ustar);
}

#[test]
fn reads_gnu_tar_gnu_archives() {
    gnu_writes_we_read(Flavor::Gnu);
}

#[test]
fn reads_gnu_tar_pax_archives() {
    gnu_writes_we_read(Flavor::Pax);
}

// ---------------------------------------------------------------------------------------------
// Byte identity: GNU tar → our reader → our writer

fn rewrite_is_byte_identical(flavor: Flavor) {
    if !gnu_tar_available() {
        return;
    }
    let tmp = TempDir::new(&format!("bytes-{flavor:?}"));
    let tree = tmp.0.join("tree");
    fs::create_dir(&tree).unwrap();
    build_tree(&tree, flavor);
    let archive = gnu_create(
        flavor,
        &tree,
        &tmp.0.join("a.tar"),
        &["--mtime=@0", "--owner=0", "--group=0", "--numeric-owner"],
    );
    let entries = read_archive(&archive, Limits::default()).unwrap();
    // Streaming writer, entry by entry.
    let mut w = TarWriter::new(flavor.format());
    let mut ours = Vec::new();
    for (h, data) in &entries {
        ours.extend_from_slice(w.header(h).unwrap());
        ours.extend_from_slice(w.data(data).unwrap());
        ours.extend_from_slice(w.end_entry().unwrap());
    }
    ours.extend_from_slice(w.finish().unwrap());
    assert_eq!(ours.len(), archive.len(), "{flavor:?}: lengths differ");
    if let Some(at) = ours.iter().zip(&archive).position(|(a, b)| a != b) {
        let block = at / 512 * 512;
        panic!(
            "{flavor:?}: first difference at byte {at} (block at {block}, field offset {}):\n\
             ours: {:?}\ngnu:  {:?}",
            at - block,
            String::from_utf8_lossy(&ours[block..block + 512]),
            String::from_utf8_lossy(&archive[block..block + 512]),
        );
    }
}

#[test]
fn rewriting_gnu_tar_ustar_archives_is_byte_identical() {
    rewrite_is_byte_identical(Flavor::Ustar);
}

#[test]
fn rewriting_gnu_tar_gnu_archives_is_byte_identical() {
    rewrite_is_byte_identical(Flavor::Gnu);
}

// ---------------------------------------------------------------------------------------------
// We write, GNU tar reads

/// Headers (and data) covering what `format` can store.
fn our_entries(format: Format) -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    let t = |i: i64| Timestamp::new(1_600_000_000 + i * 3600, 0);
    let mut add = |kind, path: &[u8], edit: &dyn Fn(&mut Header), data: &[u8]| {
        let mut h = Header::new(kind, path.to_vec());
        h.size = data.len() as u64;
        h.mtime = t(out.len() as i64);
        edit(&mut h);
        out.push((h, data.to_vec()));
    };
    let none = |_: &mut Header| {};
    add(EntryKind::Directory, b"dir/", &|h| h.mode = 0o750, b"");
    add(EntryKind::Regular, b"dir/file.txt", &none, b"hello\n");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    add(EntryKind::Regular, b"big.bin", &|h| h.mode = 0o600, &big);
    add(EntryKind::Regular, b"empty", &none, b"");
    add(
        EntryKind::Regular,
        b"exec",
        &|h| h.mode = 0o4755,
        b"#!/bin/sh\n",
    );
    add(
        EntryKind::Regular,
        b"owned",
        &|h| {
            h.uid = 1234;
            h.gid = 5678;
        },
        b"o",
    );
    add(
        EntryKind::Hardlink,
        b"hard",
        &|h| h.link_name = b"dir/file.txt".to_vec(),
        b"",
    );
    add(
        EntryKind::Symlink,
        b"sym",
        &|h| h.link_name = b"dir/file.txt".to_vec(),
        b"",
    );
    add(EntryKind::Fifo, b"fifo", &none, b"");
    if is_root() {
        add(
            EntryKind::CharDevice,
            b"null",
            &|h| {
                h.dev_major = 1;
                h.dev_minor = 3;
            },
            b"",
        );
        add(
            EntryKind::BlockDevice,
            b"loop",
            &|h| {
                h.dev_major = 7;
                h.dev_minor = 300;
            },
            b"",
        );
    }
    add(EntryKind::Regular, b"caf\xe9-\xff.txt", &none, b"latin-1\n");
    // 181 bytes: ustar stores it as prefix/name.
    let split = format!("{}/{}", "p".repeat(90), "q".repeat(90));
    add(
        EntryKind::Directory,
        format!("{}/", "p".repeat(90)).as_bytes(),
        &none,
        b"",
    );
    add(EntryKind::Regular, split.as_bytes(), &none, b"split\n");
    if format != Format::Ustar {
        let deep = format!("{}/{}", "r".repeat(200), "s".repeat(150));
        add(
            EntryKind::Directory,
            format!("{}/", "r".repeat(200)).as_bytes(),
            &none,
            b"",
        );
        add(EntryKind::Regular, deep.as_bytes(), &none, b"deep\n");
        add(
            EntryKind::Symlink,
            b"longlink",
            &|h| h.link_name = "t".repeat(180).into_bytes(),
            b"",
        );
        add(
            EntryKind::Regular,
            b"old",
            &|h| h.mtime = Timestamp::new(-86_400 * 400, 0),
            b"",
        );
        add(
            EntryKind::Regular,
            b"future",
            &|h| h.mtime = Timestamp::new(9_000_000_000, 0),
            b"",
        );
        add(
            EntryKind::Regular,
            b"bigids",
            &|h| {
                h.uid = 3_000_000;
                h.gid = 70_000_000;
            },
            b"",
        );
    }
    if format == Format::Pax {
        add(
            EntryKind::Regular,
            b"nanos",
            &|h| h.mtime = Timestamp::new(1_234_567_890, 5),
            b"n",
        );
        add(
            EntryKind::Regular,
            b"xattrs",
            &|h| {
                h.xattrs = vec![
                    (b"user.bin".to_vec(), b"\0\x01\xff=\n".to_vec()),
                    (b"user.empty".to_vec(), Vec::new()),
                    (b"user.text".to_vec(), b"some text".to_vec()),
                ]
            },
            b"x",
        );
        add(EntryKind::Regular, "ünïcödé.txt".as_bytes(), &none, b"u");
    }
    out
}

fn we_write_gnu_reads(format: Format) {
    if !gnu_tar_available() {
        return;
    }
    let tmp = TempDir::new(&format!("write-{format:?}"));
    let entries = our_entries(format);
    let refs: Vec<(Header, &[u8])> = entries.iter().map(|(h, d)| (h.clone(), &d[..])).collect();
    let archive = write_archive(format, &refs).unwrap();
    let archive_path = tmp.0.join("ours.tar");
    fs::write(&archive_path, &archive).unwrap();

    // Listed equally.
    let back = read_archive(&archive, Limits::default()).unwrap();
    assert_eq!(our_listing(&back), gnu_listing(&archive_path), "{format:?}");
    assert_eq!(our_listing(&back), our_listing(&entries));

    // Extracted into the tree we described.
    let out = tmp.0.join("out");
    fs::create_dir(&out).unwrap();
    run(
        "tar",
        &[
            os("-x"),
            os("--xattrs"),
            os("--xattrs-include=user.*"),
            os("--numeric-owner"),
            os("--same-owner"),
            os("-p"),
            os("-f"),
            archive_path.as_os_str(),
            os("-C"),
            out.as_os_str(),
        ],
        None,
    );
    // tar -x leaves the extraction root's own metadata alone; compare only the entries.
    check_against_disk(
        &out,
        &entries,
        &Checks {
            nanos: format == Format::Pax,
            xattrs: format == Format::Pax,
            owners: is_root(),
        },
    );
}

#[test]
fn gnu_tar_reads_our_ustar_archives() {
    we_write_gnu_reads(Format::Ustar);
}

#[test]
fn gnu_tar_reads_our_gnu_archives() {
    we_write_gnu_reads(Format::Gnu);
}

#[test]
fn gnu_tar_reads_our_pax_archives() {
    we_write_gnu_reads(Format::Pax);
}

/// Sizes past 8 GiB (base-256 in GNU format, a PAX `size` record in PAX format), checked
/// without 8 GiB of disk: the archive file is sparse, GNU tar seeks over the data, and our
/// reader is fed one zero buffer over and over (data events borrow it, nothing is copied).
#[test]
fn sizes_beyond_8_gib() {
    if !gnu_tar_available() {
        return;
    }
    let tmp = TempDir::new("huge");
    let size: u64 = (8 << 30) + 12_345;
    for format in [Format::Gnu, Format::Pax] {
        let mut h = Header::new(EntryKind::Regular, "huge.bin");
        h.size = size;
        h.mtime = Timestamp::new(1_600_000_000, 0);
        let mut w = TarWriter::new(format);
        let head = w.header(&h).unwrap().to_vec();
        let path = tmp.0.join(format!("{format:?}.tar"));
        let total = head.len() as u64 + size + (512 - size % 512) % 512 + 1024;
        {
            let f = fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &f, &head).unwrap();
            f.set_len(total).unwrap();
        }
        let listing = gnu_listing(&path);
        assert_eq!(listing, vec![listing_line(&h)], "{format:?}");
        assert_eq!(listing[0][2], size.to_string());

        let zeros = vec![0u8; 1 << 20];
        let mut reader = TarReader::new(Limits::default());
        let (used, event) = reader.next_event(&head).unwrap();
        assert_eq!(used, head.len());
        let Event::Entry(got) = event else {
            panic!("{event:?}")
        };
        assert_eq!(got.size, size);
        let mut data = 0u64;
        let mut ended = false;
        while !ended {
            let mut input = &zeros[..];
            while !input.is_empty() {
                let (used, event) = reader.next_event(input).unwrap();
                input = &input[used..];
                match event {
                    Event::Data(d) => data += d.len() as u64,
                    Event::End => {
                        ended = true;
                        break;
                    }
                    Event::EntryEnd | Event::NeedMore => {}
                    Event::Entry(h) => panic!("unexpected entry {h:?}"),
                }
            }
        }
        reader.finish().unwrap();
        assert_eq!(data, size);
    }
}
