//! The layer engine against the in-memory filesystem: every whiteout mode, every replacement
//! rule, the apply-mode transaction, digests, compression detection and draining, limits,
//! progress, and layer creation (round trips, determinism, overlay diff conversion).

use std::collections::BTreeMap;
use std::io::Write;

use stevedore_core::digest::{hash, Algorithm, Digest};
use stevedore_core::layer::{
    apply_to, create_from, ApplyLimits, ApplyOptions, ApplyReport, Compression, CreateCompression,
    CreateMode, CreateOptions, FileType, MemEntry, MemFs, MtimePolicy, Progress, WhiteoutMode,
};
use stevedore_core::overlay::{PrivateXattrPolicy, XattrNamespace};
use stevedore_core::tar::{self, EntryKind, Format, Header, Timestamp};
use stevedore_core::Error;

// ---------------------------------------------------------------------------------------------
// Building archives

struct E(Header, Vec<u8>);

fn file(path: &str, content: &str) -> E {
    let mut h = Header::new(EntryKind::Regular, path);
    h.size = content.len() as u64;
    h.mtime = Timestamp::new(1_000_000, 0);
    E(h, content.as_bytes().to_vec())
}

fn dir(path: &str) -> E {
    let mut h = Header::new(EntryKind::Directory, format!("{path}/"));
    h.mtime = Timestamp::new(2_000_000, 0);
    E(h, Vec::new())
}

fn symlink(path: &str, target: &str) -> E {
    let mut h = Header::new(EntryKind::Symlink, path);
    h.link_name = target.as_bytes().to_vec();
    E(h, Vec::new())
}

fn hardlink(path: &str, target: &str) -> E {
    let mut h = Header::new(EntryKind::Hardlink, path);
    h.link_name = target.as_bytes().to_vec();
    E(h, Vec::new())
}

fn node(path: &str, kind: EntryKind, major: u32, minor: u32) -> E {
    let mut h = Header::new(kind, path);
    h.dev_major = major;
    h.dev_minor = minor;
    E(h, Vec::new())
}

/// `.wh.<name>` in the directory of `path`.
fn wh(path: &str) -> E {
    let (parent, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let mut h = Header::new(EntryKind::Regular, format!("{parent}.wh.{name}"));
    h.mode = 0;
    E(h, Vec::new())
}

fn opq(dir: &str) -> E {
    let mut h = Header::new(EntryKind::Regular, format!("{dir}/.wh..wh..opq"));
    h.mode = 0;
    E(h, Vec::new())
}

impl E {
    fn mode(mut self, mode: u32) -> E {
        self.0.mode = mode;
        self
    }
    fn owner(mut self, uid: u64, gid: u64) -> E {
        self.0.uid = uid;
        self.0.gid = gid;
        self
    }
    fn mtime(mut self, secs: i64, nanos: u32) -> E {
        self.0.mtime = Timestamp::new(secs, nanos);
        self
    }
    fn xattr(mut self, name: &str, value: &str) -> E {
        self.0
            .xattrs
            .push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        self
    }
}

fn tar(entries: Vec<E>) -> Vec<u8> {
    let list: Vec<(Header, &[u8])> = entries.iter().map(|E(h, d)| (h.clone(), &d[..])).collect();
    tar::write_archive(Format::Pax, &list).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sha(data: &[u8]) -> Digest {
    hash(Algorithm::Sha256, data)
}

// ---------------------------------------------------------------------------------------------
// Applying and looking

fn opts(mode: WhiteoutMode) -> ApplyOptions {
    ApplyOptions {
        mode,
        ..ApplyOptions::default()
    }
}

fn apply_with(fs: &mut MemFs, o: &ApplyOptions, stream: &[u8]) -> Result<ApplyReport, Error> {
    apply_to(stream, fs, o, |_| {})
}

fn apply(fs: &mut MemFs, mode: WhiteoutMode, entries: Vec<E>) -> Result<ApplyReport, Error> {
    apply_with(fs, &opts(mode), &tar(entries))
}

fn ok(fs: &mut MemFs, mode: WhiteoutMode, entries: Vec<E>) -> ApplyReport {
    apply(fs, mode, entries).unwrap()
}

fn get(fs: &MemFs, path: &str) -> MemEntry {
    fs.get(path)
        .unwrap_or_else(|| panic!("{path} is missing; tree: {:#?}", paths(fs)))
}

fn paths(fs: &MemFs) -> Vec<String> {
    fs.walk()
        .into_iter()
        .map(|(p, e)| format!("{} {:?}", String::from_utf8_lossy(&p), e.kind))
        .collect()
}

fn names(fs: &MemFs) -> Vec<String> {
    fs.walk()
        .into_iter()
        .map(|(p, _)| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

fn content(fs: &MemFs, path: &str) -> String {
    String::from_utf8(get(fs, path).data).unwrap()
}

fn xattrs(e: &MemEntry) -> BTreeMap<String, String> {
    e.xattrs
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn is_whiteout(e: &MemEntry) -> bool {
    e.kind == FileType::CharDevice && e.rdev == (0, 0)
}

const OPAQUE: &str = "trusted.overlay.opaque";

/// A lower layer as a rootfs, for apply mode.
fn rootfs() -> MemFs {
    let mut fs = MemFs::new();
    fs.add_dir("etc", 0o755)
        .add_file("etc/passwd", b"root", 0o644)
        .add_file("etc/motd", b"hi", 0o644)
        .add_dir("usr/lib", 0o755)
        .add_file("usr/lib/libc.so", b"elf", 0o755)
        .add_symlink("lib", "usr/lib")
        .add_dir("var/cache/apt", 0o755)
        .add_file("var/cache/apt/a.deb", b"deb", 0o644)
        .add_file("var/cache/apt/b.deb", b"deb", 0o644)
        .add_file("var/cache/keep", b"k", 0o644);
    fs.set_now(Timestamp::new(9_999_999, 0));
    fs
}

// ---------------------------------------------------------------------------------------------
// overlay mode

#[test]
fn overlay_writes_every_kind_with_metadata() {
    let mut fs = MemFs::new();
    let r = ok(
        &mut fs,
        WhiteoutMode::Overlay,
        vec![
            dir("etc").mode(0o750).owner(1, 2).mtime(1234, 500),
            file("etc/conf", "x=1")
                .mode(0o4755)
                .owner(1000, 100)
                .mtime(99, 7)
                .xattr("user.a", "1")
                .xattr("security.capability", "cap"),
            symlink("etc/link", "/nowhere").owner(5, 6).mtime(77, 0),
            hardlink("etc/hard", "etc/conf"),
            node("dev/null", EntryKind::CharDevice, 1, 3).mode(0o666),
            node("dev/sda", EntryKind::BlockDevice, 8, 0).mode(0o660),
            node("run/fifo", EntryKind::Fifo, 0, 0).mode(0o600),
        ],
    );
    assert_eq!(r.entries, 7);
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    let d = get(&fs, "etc");
    assert_eq!((d.kind, d.mode, d.uid, d.gid), (FileType::Dir, 0o750, 1, 2));
    // Set after the directory's contents were written.
    assert_eq!(d.mtime, Timestamp::new(1234, 500));
    let f = get(&fs, "etc/conf");
    assert_eq!((f.mode, f.uid, f.gid, f.nlink), (0o4755, 1000, 100, 2));
    assert_eq!(f.mtime, Timestamp::new(99, 7));
    assert_eq!(f.data, b"x=1");
    assert_eq!(xattrs(&f)["user.a"], "1");
    assert_eq!(xattrs(&f)["security.capability"], "cap");
    assert_eq!(get(&fs, "etc/hard").ino, f.ino);
    let l = get(&fs, "etc/link");
    assert_eq!(
        (l.kind, l.data.as_slice(), l.uid),
        (FileType::Symlink, &b"/nowhere"[..], 5)
    );
    assert_eq!(l.mtime, Timestamp::new(77, 0));
    assert_eq!(get(&fs, "dev/null").rdev, (1, 3));
    assert_eq!(get(&fs, "dev/null").mode, 0o666);
    assert_eq!(get(&fs, "dev/sda").kind, FileType::BlockDevice);
    assert_eq!(get(&fs, "run/fifo").kind, FileType::Fifo);
    // Implied directories: 0755.
    assert_eq!(get(&fs, "dev").mode, 0o755);
    // The root gets 0755 when the layer has no `./` entry.
    assert_eq!(get(&fs, "").mode, 0o755);
}

#[test]
fn overlay_whiteouts_become_character_devices() {
    let mut fs = MemFs::new();
    ok(
        &mut fs,
        WhiteoutMode::Overlay,
        vec![
            dir("a"),
            wh("a/gone").mtime(5, 0),
            wh("b/c/deep"),
            wh("top"),
        ],
    );
    for p in ["a/gone", "b/c/deep", "top"] {
        let e = get(&fs, p);
        assert!(is_whiteout(&e), "{p}: {e:?}");
        assert_eq!((e.mode, e.uid, e.gid), (0, 0, 0));
    }
    assert_eq!(get(&fs, "a/gone").mtime, Timestamp::new(5, 0));
    assert_eq!(get(&fs, "b/c").kind, FileType::Dir);
    assert!(fs.get("a/.wh.gone").is_none());
}

#[test]
fn overlay_opaque_marker_sets_the_xattr_of_its_namespace() {
    for (ns, name) in [
        (XattrNamespace::Trusted, "trusted.overlay.opaque"),
        (XattrNamespace::User, "user.overlay.opaque"),
    ] {
        let mut fs = MemFs::new();
        let o = ApplyOptions {
            xattr_namespace: ns,
            ..opts(WhiteoutMode::Overlay)
        };
        apply_with(
            &mut fs,
            &o,
            &tar(vec![
                dir("d"),
                opq("d"),
                file("d/x", "1"),
                opq("implied/dir"),
            ]),
        )
        .unwrap();
        assert_eq!(xattrs(&get(&fs, "d"))[name], "y");
        assert_eq!(xattrs(&get(&fs, "implied/dir"))[name], "y");
        assert!(fs.get("d/.wh..wh..opq").is_none());
        assert_eq!(content(&fs, "d/x"), "1");
    }
}

#[test]
fn overlay_whiteout_and_entry_of_one_layer() {
    // The layer's own entry wins over its whiteout, in either order; a directory that also
    // has a whiteout replaces the lower one: it is opaque.
    let mut fs = MemFs::new();
    ok(
        &mut fs,
        WhiteoutMode::Overlay,
        vec![
            wh("d1"),
            dir("d1"),
            dir("d2"),
            wh("d2"),
            wh("f1"),
            file("f1", "new"),
            file("f2", "new"),
            wh("f2"),
            wh("d3"),
            file("d3/child", "c"),
        ],
    );
    for d in ["d1", "d2", "d3"] {
        let e = get(&fs, d);
        assert_eq!(e.kind, FileType::Dir, "{d}");
        assert_eq!(xattrs(&e).get(OPAQUE).map(String::as_str), Some("y"), "{d}");
    }
    assert_eq!(content(&fs, "f1"), "new");
    assert_eq!(content(&fs, "f2"), "new");
    assert_eq!(content(&fs, "d3/child"), "c");
}

#[test]
fn overlay_private_xattrs_in_content_are_escaped_or_dropped() {
    let entries = || {
        vec![
            file("f", "")
                .xattr("trusted.overlay.opaque", "y")
                .xattr("trusted.overlay.redirect", "/x")
                .xattr("user.overlay.origin", "o")
                .xattr("user.keep", "k"),
            dir("d").xattr("trusted.overlay.opaque", "y"),
        ]
    };
    let mut fs = MemFs::new();
    ok(&mut fs, WhiteoutMode::Overlay, entries());
    let f = xattrs(&get(&fs, "f"));
    assert_eq!(f["trusted.overlay.overlay.opaque"], "y");
    assert_eq!(f["trusted.overlay.overlay.redirect"], "/x");
    assert!(!f.contains_key("trusted.overlay.opaque"));
    // Another namespace's xattrs are content for a trusted.* mount.
    assert_eq!(f["user.overlay.origin"], "o");
    assert_eq!(f["user.keep"], "k");
    // A directory's content xattr does not make it opaque.
    assert!(!xattrs(&get(&fs, "d")).contains_key(OPAQUE));

    let mut fs = MemFs::new();
    let o = ApplyOptions {
        private_xattrs: PrivateXattrPolicy::Drop,
        ..opts(WhiteoutMode::Overlay)
    };
    apply_with(&mut fs, &o, &tar(entries())).unwrap();
    let f = xattrs(&get(&fs, "f"));
    assert!(f.keys().all(|k| !k.starts_with("trusted.")), "{f:?}");
}

#[test]
fn overlay_refuses_a_character_device_0_0_as_content() {
    // In overlay form it would read back as a whiteout.
    let mut fs = MemFs::new();
    let e = apply(
        &mut fs,
        WhiteoutMode::Overlay,
        vec![node("dev/wh", EntryKind::CharDevice, 0, 0)],
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_INVALID_WHITEOUT");
    assert!(e.to_string().contains("dev/wh"), "{e}");
}

#[test]
fn overlay_and_oci_never_write_through_a_symlink_of_the_layer() {
    for mode in [WhiteoutMode::Overlay, WhiteoutMode::Oci] {
        let mut fs = MemFs::new();
        let e = apply(
            &mut fs,
            mode,
            vec![symlink("a", "/"), file("a/etc/passwd", "pwned")],
        )
        .unwrap_err();
        assert_eq!(e.code(), "ERR_UNSAFE_PATH", "{e}");
        assert!(e.to_string().contains("a/etc/passwd"), "{e}");
        let mut fs = MemFs::new();
        let e = apply(&mut fs, mode, vec![file("f", ""), file("f/x", "")]).unwrap_err();
        assert_eq!(e.code(), "ERR_ENTRY_CONFLICT", "{e}");
        assert!(e.to_string().contains("f/x"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// replacement rules (all modes)

#[test]
fn later_entries_replace_earlier_ones() {
    for mode in [
        WhiteoutMode::Overlay,
        WhiteoutMode::Apply,
        WhiteoutMode::Oci,
    ] {
        let mut fs = MemFs::new();
        ok(
            &mut fs,
            mode,
            vec![
                file("f2d", "file"),
                dir("f2d"),
                file("f2d/in", "in"),
                dir("d2f"),
                file("d2f/sub/x", "x"),
                file("d2f", "now a file"),
                file("f2l", "file"),
                symlink("f2l", "target"),
                symlink("l2f", "/etc/passwd"),
                file("l2f", "replaced the link, not its target"),
                dir("l2d"),
                symlink("l2d", "."),
                file("dup", "first"),
                file("dup", "second"),
                file("orig", "o"),
                file("h2f", "h"),
                hardlink("h2f", "orig"),
                hardlink("self", "orig"),
                hardlink("self", "self"),
            ],
        );
        assert_eq!(get(&fs, "f2d").kind, FileType::Dir, "{mode:?}");
        assert_eq!(content(&fs, "f2d/in"), "in");
        assert_eq!(content(&fs, "d2f"), "now a file");
        assert!(fs.get("d2f/sub").is_none());
        assert_eq!(get(&fs, "f2l").kind, FileType::Symlink);
        assert_eq!(content(&fs, "l2f"), "replaced the link, not its target");
        assert!(fs.get("etc").is_none());
        assert_eq!(get(&fs, "l2d").kind, FileType::Symlink);
        assert_eq!(content(&fs, "dup"), "second");
        assert_eq!(get(&fs, "h2f").ino, get(&fs, "orig").ino);
        assert_eq!(get(&fs, "orig").nlink, 3);
        assert!(fs.get(".stevedore-apply").is_none());
        assert!(
            names(&fs).iter().all(|n| !n.starts_with(".stevedore")),
            "{:?}",
            names(&fs)
        );
    }
}

#[test]
fn a_directory_over_a_directory_merges_and_takes_the_new_metadata() {
    let mut fs = MemFs::new();
    ok(
        &mut fs,
        WhiteoutMode::Overlay,
        vec![
            dir("d").mode(0o700).xattr("user.old", "1"),
            file("d/kept", "k"),
            dir("d")
                .mode(0o751)
                .owner(3, 4)
                .mtime(42, 0)
                .xattr("user.new", "2"),
        ],
    );
    let d = get(&fs, "d");
    assert_eq!(
        (d.mode, d.uid, d.gid, d.mtime),
        (0o751, 3, 4, Timestamp::new(42, 0))
    );
    let x = xattrs(&d);
    assert_eq!(x.get("user.new").map(String::as_str), Some("2"));
    assert!(!x.contains_key("user.old"), "{x:?}");
    assert_eq!(content(&fs, "d/kept"), "k");
}

#[test]
fn hard_links_need_an_existing_target_inside_the_root() {
    for (target, code) in [
        ("missing", "ERR_ENTRY_CONFLICT"),
        ("../outside", "ERR_ENTRY_CONFLICT"),
        ("d", "ERR_ENTRY_CONFLICT"),
        ("/", "ERR_ENTRY_CONFLICT"),
    ] {
        let mut fs = MemFs::new();
        let mut l = hardlink("link", "x");
        l.0.link_name = target.as_bytes().to_vec();
        let e = apply(&mut fs, WhiteoutMode::Overlay, vec![dir("d"), l]).unwrap_err();
        assert_eq!(e.code(), code, "{target}: {e}");
        assert!(e.to_string().contains("link"), "{e}");
    }
    // A whiteout is not content to link to.
    let mut fs = MemFs::new();
    let e = apply(
        &mut fs,
        WhiteoutMode::Overlay,
        vec![wh("a"), hardlink("b", "a")],
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_ENTRY_CONFLICT", "{e}");
    assert!(e.to_string().contains("whited out"), "{e}");
    // An absolute target names a path of the layer.
    let mut fs = MemFs::new();
    ok(
        &mut fs,
        WhiteoutMode::Overlay,
        vec![file("etc/passwd", "p"), hardlink("copy", "/etc/passwd")],
    );
    assert_eq!(get(&fs, "copy").ino, get(&fs, "etc/passwd").ino);
}

// ---------------------------------------------------------------------------------------------
// apply mode

#[test]
fn apply_whiteouts_delete_from_the_lower_tree() {
    let mut fs = rootfs();
    let r = ok(
        &mut fs,
        WhiteoutMode::Apply,
        vec![
            dir("etc"),
            wh("etc/motd"),
            wh("var/cache"),
            wh("nothing/here"),
            wh("etc/none"),
        ],
    );
    assert!(fs.get("etc/motd").is_none());
    assert!(fs.get("var/cache").is_none());
    assert_eq!(content(&fs, "etc/passwd"), "root");
    assert!(fs.get("nothing").is_none(), "whiteouts create nothing");
    assert_eq!(r.entries, 5);
}

#[test]
fn apply_whiteouts_spare_what_this_layer_wrote() {
    // OCI: whiteouts apply to lower layers only, whatever their order in the tar.
    let mut fs = rootfs();
    ok(
        &mut fs,
        WhiteoutMode::Apply,
        vec![
            file("etc/motd", "new motd"),
            wh("etc/motd"),
            dir("var/cache"),
            file("var/cache/new", "n"),
            wh("var/cache"),
            file("usr/lib/new.so", "n"),
            wh("usr"),
        ],
    );
    assert_eq!(content(&fs, "etc/motd"), "new motd");
    // var/cache is this layer's directory: its lower contents are gone, its own stay.
    assert_eq!(content(&fs, "var/cache/new"), "n");
    assert!(fs.get("var/cache/apt").is_none());
    assert!(fs.get("var/cache/keep").is_none());
    // usr was only implied by this layer: kept as far as needed for usr/lib/new.so.
    assert_eq!(content(&fs, "usr/lib/new.so"), "n");
    assert!(fs.get("usr/lib/libc.so").is_none());
}

#[test]
fn apply_opaque_clears_lower_contents_only() {
    // Marker first (Docker's order) and marker last give the same result.
    for marker_first in [true, false] {
        let mut fs = rootfs();
        let mut entries = vec![dir("var/cache"), file("var/cache/mine", "m")];
        if marker_first {
            entries.insert(1, opq("var/cache"));
        } else {
            entries.push(opq("var/cache"));
        }
        ok(&mut fs, WhiteoutMode::Apply, entries);
        let mut left: Vec<String> = names(&fs)
            .into_iter()
            .filter(|n| n.starts_with("var/cache/"))
            .collect();
        left.sort();
        assert_eq!(left, ["var/cache/mine"], "marker first: {marker_first}");
    }
    // An opaque marker for a directory the tree does not have does nothing.
    let mut fs = rootfs();
    ok(&mut fs, WhiteoutMode::Apply, vec![opq("no/such")]);
    assert!(fs.get("no").is_none());
}

#[test]
fn apply_follows_lower_symlinks_inside_the_root_only() {
    let mut fs = rootfs();
    fs.add_symlink("escape", "/tmp/outside")
        .add_symlink("up", "../../../../usr");
    ok(
        &mut fs,
        WhiteoutMode::Apply,
        vec![
            file("lib/libnew.so", "n"),
            file("escape/x", "x"),
            file("up/lib/via-dotdot", "d"),
            wh("lib/libc.so"),
        ],
    );
    // lib -> usr/lib: written where the link points, as umoci and containerd do.
    assert_eq!(content(&fs, "usr/lib/libnew.so"), "n");
    assert_eq!(get(&fs, "lib").kind, FileType::Symlink);
    // An absolute link is resolved with the root as `/`.
    assert_eq!(content(&fs, "tmp/outside/x"), "x");
    // `..` stops at the root.
    assert_eq!(content(&fs, "usr/lib/via-dotdot"), "d");
    assert!(fs.get("usr/lib/libc.so").is_none());
}

#[test]
fn apply_replaces_a_lower_non_directory_in_the_way() {
    let mut fs = rootfs();
    ok(
        &mut fs,
        WhiteoutMode::Apply,
        vec![file("etc/motd/now-a-dir", "x")],
    );
    assert_eq!(get(&fs, "etc/motd").kind, FileType::Dir);
    // ... but not one the layer wrote itself.
    let mut fs = rootfs();
    let e = apply(
        &mut fs,
        WhiteoutMode::Apply,
        vec![file("new", "f"), file("new/x", "x")],
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_ENTRY_CONFLICT", "{e}");
}

#[test]
fn apply_restores_mtimes_of_directories_it_changed_without_listing() {
    let mut fs = rootfs();
    let before = get(&fs, "var/cache/apt").mtime;
    let root_before = get(&fs, "").mtime;
    ok(
        &mut fs,
        WhiteoutMode::Apply,
        vec![
            wh("var/cache/apt/a.deb"),
            file("etc/new", "n"),
            dir("usr").mtime(55, 0),
        ],
    );
    assert!(fs.get("var/cache/apt/a.deb").is_none());
    assert_eq!(get(&fs, "var/cache/apt").mtime, before);
    assert_eq!(get(&fs, "").mtime, root_before);
    assert_eq!(get(&fs, "usr").mtime, Timestamp::new(55, 0));
}

fn snapshot(fs: &MemFs) -> Vec<(Vec<u8>, MemEntry)> {
    fs.walk()
        .into_iter()
        .map(|(p, mut e)| {
            e.ino = 0; // inode numbers of restored entries are the same; of re-created, not
            (p, e)
        })
        .collect()
}

#[test]
fn apply_rolls_everything_back_on_a_digest_mismatch() {
    let mut fs = rootfs();
    fs.add_xattr("var", "user.x", b"1");
    let before = snapshot(&fs);
    let root_mtime = get(&fs, "").mtime;
    let layer = tar(vec![
        dir("etc").mode(0o700).xattr("user.new", "n"),
        file("etc/passwd", "replaced"),
        wh("etc/motd"),
        dir("var").owner(9, 9),
        opq("var/cache"),
        file("var/cache/new", "n"),
        file("lib/via-link", "x"),
        file("etc/motd/dir-now/f", "f"),
        dir("").mode(0o700),
        symlink("usr", "gone"),
    ]);
    let wrong = sha(b"something else");
    let o = ApplyOptions {
        expected_diff_id: Some(wrong.clone()),
        ..opts(WhiteoutMode::Apply)
    };
    let e = apply_with(&mut fs, &o, &layer).unwrap_err();
    match &e {
        Error::LayerDigestMismatch {
            what,
            expected,
            actual,
            diff_id,
            ..
        } => {
            assert_eq!(*what, "diff_id");
            assert_eq!(expected, &wrong.to_string());
            assert_eq!(actual, &sha(&layer).to_string());
            assert_eq!(diff_id, actual);
        }
        other => panic!("{other}"),
    }
    assert_eq!(e.code(), "ERR_DIGEST_MISMATCH");
    assert_eq!(snapshot(&fs), before, "the tree must be as it was");
    assert_eq!(get(&fs, "").mtime, root_mtime);
}

#[test]
fn apply_rolls_back_on_an_error_in_the_middle() {
    let mut fs = rootfs();
    let before = snapshot(&fs);
    let e = apply(
        &mut fs,
        WhiteoutMode::Apply,
        vec![
            file("etc/passwd", "replaced"),
            wh("var/cache"),
            file("new/f", "f"),
            hardlink("bad", "does/not/exist"),
            file("never", "n"),
        ],
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_ENTRY_CONFLICT", "{e}");
    assert_eq!(snapshot(&fs), before);
}

// ---------------------------------------------------------------------------------------------
// oci mode

#[test]
fn oci_mode_keeps_whiteout_files() {
    let mut fs = MemFs::new();
    ok(
        &mut fs,
        WhiteoutMode::Oci,
        vec![dir("d"), opq("d"), wh("d/gone"), file("d/x", "x")],
    );
    assert_eq!(get(&fs, "d/.wh..wh..opq").kind, FileType::File);
    assert_eq!(get(&fs, "d/.wh.gone").kind, FileType::File);
    assert!(!xattrs(&get(&fs, "d")).contains_key(OPAQUE));
    for bad in [".wh.", ".wh..", ".wh..."] {
        let mut fs = MemFs::new();
        let e = apply(&mut fs, WhiteoutMode::Oci, vec![file(bad, "")]).unwrap_err();
        assert_eq!(e.code(), "ERR_INVALID_WHITEOUT", "{bad}: {e}");
    }
    // Only regular files are markers.
    let mut fs = MemFs::new();
    let e = apply(&mut fs, WhiteoutMode::Oci, vec![dir(".wh.x")]).unwrap_err();
    assert_eq!(e.code(), "ERR_INVALID_WHITEOUT");
}

// ---------------------------------------------------------------------------------------------
// privilege

#[test]
fn unprivileged_skips_devices_and_keeps_the_callers_ids() {
    let mut fs = MemFs::new().with_privileged(false, (1000, 1000));
    let o = ApplyOptions {
        record_owner: true,
        ..opts(WhiteoutMode::Overlay)
    };
    let r = apply_with(
        &mut fs,
        &o,
        &tar(vec![
            node("dev/null", EntryKind::CharDevice, 1, 3),
            node("dev/sda", EntryKind::BlockDevice, 8, 0),
            node("fifo", EntryKind::Fifo, 0, 0),
            file("f", "x")
                .owner(33, 300)
                .xattr("trusted.t", "1")
                .xattr("user.u", "2"),
            file("root-owned", "x"),
            wh("gone"),
        ]),
    )
    .unwrap();
    assert!(fs.get("dev/null").is_none());
    assert!(fs.get("dev/sda").is_none());
    assert_eq!(get(&fs, "fifo").kind, FileType::Fifo);
    assert!(
        is_whiteout(&get(&fs, "gone")),
        "whiteouts need no privilege"
    );
    let f = get(&fs, "f");
    assert_eq!((f.uid, f.gid), (1000, 1000));
    let x = xattrs(&f);
    assert_eq!(x["user.u"], "2");
    assert!(!x.contains_key("trusted.t"));
    // umoci's user.rootlesscontainers: protobuf {uid: 33, gid: 300}.
    assert_eq!(
        get(&fs, "f").xattrs[&b"user.rootlesscontainers"[..]],
        vec![0x08, 33, 0x10, 0xac, 0x02]
    );
    assert!(!get(&fs, "root-owned")
        .xattrs
        .contains_key(&b"user.rootlesscontainers"[..]));
    let warned: Vec<&str> = r.skipped.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(warned, ["dev/null", "dev/sda", "f"], "{:?}", r.skipped);
    assert!(r.skipped[0].message.contains("privilege"));
    assert!(r.skipped[2].message.contains("trusted.t"));
    // Asking to preserve owners without privilege is an error, not a silent skip.
    let mut fs = MemFs::new().with_privileged(false, (1000, 1000));
    let o = ApplyOptions {
        preserve_owner: Some(true),
        ..opts(WhiteoutMode::Overlay)
    };
    let e = apply_with(&mut fs, &o, &tar(vec![file("f", "").owner(1, 1)])).unwrap_err();
    assert_eq!(e.code(), "ERR_IO");
}

// ---------------------------------------------------------------------------------------------
// the stream: digests, compression, draining, limits, progress

#[test]
fn digests_of_plain_and_gzip_streams() {
    let layer = tar(vec![file("a", "hello"), dir("d")]);
    for (stream, compression) in [
        (layer.clone(), Compression::None),
        (gzip(&layer), Compression::Gzip),
    ] {
        for pipelined in [true, false] {
            let mut fs = MemFs::new();
            let o = ApplyOptions {
                expected_digest: Some(sha(&stream)),
                expected_diff_id: Some(sha(&layer)),
                pipelined,
                ..ApplyOptions::default()
            };
            let r = apply_with(&mut fs, &o, &stream).unwrap();
            assert_eq!(r.digest, sha(&stream));
            assert_eq!(r.diff_id, sha(&layer));
            assert_eq!(r.compressed_size, stream.len() as u64);
            assert_eq!(r.uncompressed_size, layer.len() as u64);
            assert_eq!(r.compression, compression);
            assert_eq!(content(&fs, "a"), "hello");
        }
    }
}

#[test]
fn sha512_expected_digests_are_computed_with_sha512() {
    let layer = tar(vec![file("a", "x")]);
    let stream = gzip(&layer);
    let mut fs = MemFs::new();
    let o = ApplyOptions {
        expected_digest: Some(hash(Algorithm::Sha512, &stream)),
        ..ApplyOptions::default()
    };
    let r = apply_with(&mut fs, &o, &stream).unwrap();
    assert_eq!(r.digest.algorithm(), Algorithm::Sha512);
    assert_eq!(r.diff_id, sha(&layer));
}

#[test]
fn a_compressed_digest_mismatch_names_both_digests() {
    let layer = tar(vec![file("a", "x")]);
    let stream = gzip(&layer);
    let wrong = sha(b"nope");
    let mut fs = MemFs::new();
    let o = ApplyOptions {
        expected_digest: Some(wrong.clone()),
        expected_diff_id: Some(sha(&layer)),
        ..ApplyOptions::default()
    };
    let e = apply_with(&mut fs, &o, &stream).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&wrong.to_string()) && msg.contains(&sha(&stream).to_string()),
        "{msg}"
    );
    assert!(msg.contains(&sha(&layer).to_string()), "{msg}");
}

#[test]
fn multi_member_gzip_is_read_to_the_end() {
    let layer = tar(vec![file("a", "first half"), file("b", "second half")]);
    let (x, y) = layer.split_at(700);
    let mut stream = gzip(x);
    stream.extend(gzip(y));
    let mut fs = MemFs::new();
    let r = apply_with(&mut fs, &ApplyOptions::default(), &stream).unwrap();
    assert_eq!(r.diff_id, sha(&layer));
    assert_eq!(content(&fs, "b"), "second half");
}

#[test]
fn corrupt_compressed_streams_fail() {
    let layer = tar(vec![file("a", &"x".repeat(5000))]);
    let good = gzip(&layer);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut crc = good.clone();
    let n = crc.len();
    crc[n - 8] ^= 0xff; // CRC32 of the member
    cases.push(("bad crc", crc, "ERR_DECOMPRESS"));
    let mut len = good.clone();
    len[n - 1] ^= 0x01; // ISIZE
    cases.push(("bad length", len, "ERR_DECOMPRESS"));
    cases.push((
        "truncated",
        good[..good.len() - 10].to_vec(),
        "ERR_DECOMPRESS",
    ));
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage after the member");
    cases.push(("trailing garbage", trailing, "ERR_DECOMPRESS"));
    cases.push((
        "bzip2",
        b"BZh91AY&SY".to_vec(),
        "ERR_UNSUPPORTED_COMPRESSION",
    ));
    cases.push((
        "xz",
        b"\xfd7zXZ\0rest".to_vec(),
        "ERR_UNSUPPORTED_COMPRESSION",
    ));
    cases.push((
        "lz4",
        b"\x04\x22\x4d\x18rest".to_vec(),
        "ERR_UNSUPPORTED_COMPRESSION",
    ));
    for (what, stream, code) in cases {
        let mut fs = MemFs::new();
        let e = apply_with(&mut fs, &ApplyOptions::default(), &stream).unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e}");
    }
}

#[cfg(feature = "zstd")]
#[test]
fn zstd_streams_and_their_failures() {
    let layer = tar(vec![file("a", &"z".repeat(10000))]);
    let stream = zstd::encode_all(&layer[..], 3).unwrap();
    let mut fs = MemFs::new();
    let r = apply_with(&mut fs, &ApplyOptions::default(), &stream).unwrap();
    assert_eq!(r.compression, Compression::Zstd);
    assert_eq!(r.diff_id, sha(&layer));
    assert_eq!(r.digest, sha(&stream));
    // Two frames, with a skippable frame in between.
    let (x, y) = layer.split_at(1024);
    let mut two = zstd::encode_all(x, 1).unwrap();
    two.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
    two.extend(zstd::encode_all(y, 19).unwrap());
    let mut fs = MemFs::new();
    assert_eq!(
        apply_with(&mut fs, &ApplyOptions::default(), &two)
            .unwrap()
            .diff_id,
        sha(&layer)
    );
    for (what, bad) in [
        ("truncated", stream[..stream.len() - 3].to_vec()),
        ("trailing", [stream.clone(), b"junk".to_vec()].concat()),
    ] {
        let mut fs = MemFs::new();
        let e = apply_with(&mut fs, &ApplyOptions::default(), &bad).unwrap_err();
        assert_eq!(e.code(), "ERR_DECOMPRESS", "{what}: {e}");
    }
    // A window larger than the cap is refused.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.window_log(24).unwrap();
    enc.long_distance_matching(true).unwrap();
    enc.write_all(&vec![7u8; 1 << 20]).unwrap();
    let big_window = enc.finish().unwrap();
    let o = ApplyOptions {
        limits: ApplyLimits {
            zstd_window_log_max: 20,
            ..ApplyLimits::default()
        },
        ..ApplyOptions::default()
    };
    let mut fs = MemFs::new();
    let e = apply_with(&mut fs, &o, &big_window).unwrap_err();
    assert_eq!(e.code(), "ERR_DECOMPRESS", "{e}");
}

#[test]
fn only_zeros_may_follow_the_end_of_archive() {
    let mut layer = tar(vec![file("a", "x")]);
    layer.extend_from_slice(&[0u8; 10240]);
    let mut fs = MemFs::new();
    let r = apply_with(&mut fs, &ApplyOptions::default(), &layer).unwrap();
    assert_eq!(
        r.diff_id,
        sha(&layer),
        "trailing zeros are part of the diff_id"
    );
    layer.extend_from_slice(&tar(vec![file("hidden", "second archive")]));
    let mut fs = MemFs::new();
    let e = apply_with(&mut fs, &ApplyOptions::default(), &layer).unwrap_err();
    assert_eq!(e.code(), "ERR_TAR_MALFORMED", "{e}");
    // An archive without its end marker, cut at an entry boundary, is accepted (GNU tar and
    // Go do); one cut inside an entry is not.
    let layer = tar(vec![file("a", "x")]);
    let mut fs = MemFs::new();
    apply_with(&mut fs, &ApplyOptions::default(), &layer[..1024]).unwrap();
    let mut fs = MemFs::new();
    let e = apply_with(&mut fs, &ApplyOptions::default(), &layer[..700]).unwrap_err();
    assert_eq!(e.code(), "ERR_TAR_TRUNCATED");
}

#[test]
fn limits_have_clear_errors() {
    let zeros = tar((0..8)
        .map(|i| file(&format!("zeros{i}"), &"\0".repeat(512 << 10)))
        .collect());
    let bomb = gzip(&zeros);
    let limited = |f: &dyn Fn(&mut ApplyLimits)| {
        let mut limits = ApplyLimits::default();
        f(&mut limits);
        ApplyOptions {
            limits,
            ..ApplyOptions::default()
        }
    };
    let cases: Vec<(ApplyOptions, &[u8], &str, &str)> = vec![
        (
            limited(&|l| l.max_uncompressed_bytes = 1 << 20),
            &bomb,
            "ERR_LAYER_LIMIT",
            "uncompressed layer size",
        ),
        (
            limited(&|l| {
                l.max_ratio = 100;
                l.ratio_grace_bytes = 1 << 20;
            }),
            &bomb,
            "ERR_DECOMPRESSION_RATIO",
            "decompression bomb",
        ),
    ];
    for (o, stream, code, text) in cases {
        let mut fs = MemFs::new();
        let e = apply_with(&mut fs, &o, stream).unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().contains(text), "{e}");
    }
    let two = tar(vec![file("a", ""), file("b", "")]);
    let mut fs = MemFs::new();
    let e = apply_with(&mut fs, &limited(&|l| l.max_entries = 1), &two).unwrap_err();
    assert_eq!(e.code(), "ERR_LAYER_LIMIT");
    assert!(e.to_string().contains("\"b\""), "{e}");
    // A declared size beyond the budget fails at the header, before any data.
    let mut huge = Header::new(EntryKind::Regular, "huge");
    huge.size = 1 << 40;
    let mut stream = tar::TarWriter::new(Format::Pax)
        .header(&huge)
        .unwrap()
        .to_vec();
    stream.extend_from_slice(&[0u8; 512]);
    let mut fs = MemFs::new();
    let e = apply_with(
        &mut fs,
        &limited(&|l| l.max_uncompressed_bytes = 1 << 30),
        &stream,
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_LAYER_LIMIT");
    assert!(e.to_string().contains("huge"), "{e}");
    // PAX records are capped by the tar limits.
    let long = file("x", "").xattr("user.big", &"v".repeat(5000));
    let mut fs = MemFs::new();
    let e = apply_with(
        &mut fs,
        &limited(&|l| l.tar.max_extension_size = 4096),
        &tar(vec![long]),
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_TAR_LIMIT");
}

#[test]
fn progress_is_reported_per_chunk_and_at_the_end() {
    let big = "p".repeat(3 << 20);
    let layer = tar(vec![file("a", &big), file("b", "x"), dir("d")]);
    let stream = gzip(&layer);
    for pipelined in [true, false] {
        let mut seen: Vec<Progress> = Vec::new();
        let mut fs = MemFs::new();
        let o = ApplyOptions {
            pipelined,
            ..ApplyOptions::default()
        };
        let r = apply_to(&stream[..], &mut fs, &o, |p| seen.push(p)).unwrap();
        assert!(seen.len() >= 4, "{seen:?}");
        for w in seen.windows(2) {
            assert!(w[0].uncompressed_out <= w[1].uncompressed_out);
            assert!(w[0].compressed_in <= w[1].compressed_in);
            assert!(w[0].entries <= w[1].entries);
        }
        let last = seen.last().unwrap();
        assert_eq!(last.compressed_in, r.compressed_size);
        assert_eq!(last.uncompressed_out, r.uncompressed_size);
        assert_eq!(last.entries, 3);
    }
}

// ---------------------------------------------------------------------------------------------
// creating layers

fn create(fs: &mut MemFs, o: &CreateOptions) -> (Vec<u8>, stevedore_core::layer::CreateReport) {
    let mut out = Vec::new();
    let r = create_from(fs, o, &mut out, |_| {}).unwrap();
    (out, r)
}

fn sample_tree() -> MemFs {
    let mut fs = MemFs::new();
    ok(
        &mut fs,
        WhiteoutMode::Overlay,
        vec![
            dir("b").mode(0o700).mtime(3, 0),
            file("b/z", "zz")
                .mtime(4, 999)
                .owner(7, 8)
                .xattr("user.k", "v"),
            file("b/a", "aa"),
            hardlink("b/a2", "b/a"),
            symlink("a-link", "b/z"),
            node("dev/tty", EntryKind::CharDevice, 5, 0),
            node("fifo", EntryKind::Fifo, 0, 0),
            dir("a-dir"),
            file("a-dir/x", "x"),
        ],
    );
    fs
}

#[test]
fn create_round_trips_and_is_deterministic() {
    let mut src = sample_tree();
    for compression in [
        CreateCompression::None,
        CreateCompression::Gzip { level: 1 },
        CreateCompression::Gzip { level: 9 },
    ] {
        for pipelined in [true, false] {
            let o = CreateOptions {
                compression,
                pipelined,
                ..CreateOptions::default()
            };
            let (bytes, r) = create(&mut src, &o);
            let (again, r2) = create(&mut src, &o);
            assert_eq!(bytes, again, "deterministic");
            assert_eq!(r, r2);
            assert_eq!(r.digest, sha(&bytes));
            assert_eq!(r.compressed_size, bytes.len() as u64);
            // Every path is one entry (the hard link too).
            assert_eq!(r.entries, 10);
            let mut dst = MemFs::new();
            let a = apply_with(&mut dst, &ApplyOptions::default(), &bytes).unwrap();
            assert_eq!(a.diff_id, r.diff_id);
            assert_eq!(a.uncompressed_size, r.uncompressed_size);
            let norm = |fs: &MemFs| -> Vec<(Vec<u8>, MemEntry)> {
                fs.walk()
                    .into_iter()
                    .map(|(p, mut e)| {
                        e.ino = 0;
                        e.mtime.nanos = 0; // layers carry whole seconds
                        if e.kind == FileType::Dir && p.is_empty() {
                            e.mtime = Timestamp::default();
                        }
                        (p, e)
                    })
                    .collect()
            };
            assert_eq!(norm(&dst), norm(&src));
        }
    }
    // Gzip blocks are cut at fixed offsets: one thread or many, the same bytes, and every
    // level reads back.
    let mut big = MemFs::new();
    big.add_file(
        "a",
        &(0..5_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
        0o644,
    )
    .add_file("b", b"tail", 0o644);
    for level in [0, 1, 6, 9] {
        let mk = |pipelined| CreateOptions {
            compression: CreateCompression::Gzip { level },
            pipelined,
            ..CreateOptions::default()
        };
        let (one, r1) = create(&mut big, &mk(false));
        let (many, r2) = create(&mut big, &mk(true));
        assert_eq!(one, many, "level {level}");
        assert_eq!(r1, r2);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&one[..]), &mut plain)
            .unwrap();
        assert_eq!(sha(&plain), r1.diff_id, "level {level}");
    }
    // Entry order: depth first, names in byte order, directories with a slash.
    let (bytes, _) = create(
        &mut src,
        &CreateOptions {
            compression: CreateCompression::None,
            ..CreateOptions::default()
        },
    );
    let listed: Vec<String> = tar::read_archive(&bytes, Default::default())
        .unwrap()
        .into_iter()
        .map(|(h, _)| String::from_utf8(h.path).unwrap())
        .collect();
    assert_eq!(
        listed,
        ["a-dir/", "a-dir/x", "a-link", "b/", "b/a", "b/a2", "b/z", "dev/", "dev/tty", "fifo"]
    );
    let entries = tar::read_archive(&bytes, Default::default()).unwrap();
    let a2 = &entries[5].0;
    assert_eq!(
        (a2.kind, a2.link_name.as_slice()),
        (EntryKind::Hardlink, &b"b/a"[..])
    );
    assert_eq!(entries[6].0.mtime, Timestamp::new(4, 0), "whole seconds");
}

#[test]
fn create_stores_incompressible_blocks_as_zlib_does() {
    // xorshift bytes: incompressible. Deflated, they would come out larger than they are.
    let mut x = 0x9e37_79b9u32;
    let noise: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut fs = MemFs::new();
    fs.add_file("noise", &noise, 0o644);
    for level in [1, 6, 9] {
        let o = CreateOptions {
            compression: CreateCompression::Gzip { level },
            ..CreateOptions::default()
        };
        let (bytes, r) = create(&mut fs, &o);
        // Stored: 5 bytes per 64 KiB piece, plus the tar headers, gzip header and trailer.
        // Coded as literals (miniz_oxide alone), it came to 0.09 % over.
        assert!(
            r.compressed_size < r.uncompressed_size + r.uncompressed_size / 10_000 + 64,
            "level {level}: {} bytes for {}",
            r.compressed_size,
            r.uncompressed_size
        );
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain)
            .unwrap();
        assert_eq!(sha(&plain), r.diff_id);
        let mut dst = MemFs::new();
        let a = apply_with(&mut dst, &ApplyOptions::default(), &bytes).unwrap();
        assert_eq!(a.diff_id, r.diff_id);
        assert!(get(&dst, "noise").data == noise);
    }
    // Compressible data is still deflated.
    let mut text = MemFs::new();
    text.add_file("a", &b"stevedore ".repeat(300_000), 0o644);
    let (_, r) = create(
        &mut text,
        &CreateOptions {
            compression: CreateCompression::Gzip { level: 1 },
            ..CreateOptions::default()
        },
    );
    assert!(r.compressed_size * 20 < r.uncompressed_size);
}

#[test]
fn create_clamps_mtimes() {
    let mut src = sample_tree();
    let o = CreateOptions {
        compression: CreateCompression::None,
        mtime: MtimePolicy::Clamp(3),
        ..CreateOptions::default()
    };
    let (bytes, _) = create(&mut src, &o);
    for (h, _) in tar::read_archive(&bytes, Default::default()).unwrap() {
        assert!(h.mtime.secs <= 3, "{:?}", h);
    }
}

#[test]
fn create_converts_an_overlay_diff_dir() {
    let mut upper = MemFs::new();
    ok(
        &mut upper,
        WhiteoutMode::Overlay,
        vec![
            dir("etc"),
            wh("etc/removed"),
            dir("opaque"),
            opq("opaque"),
            file("opaque/new", "n"),
            file("esc", "").xattr("trusted.overlay.opaque", "content"),
        ],
    );
    upper.add_xattr("etc", "trusted.overlay.origin", b"state");
    let o = CreateOptions {
        mode: CreateMode::OverlayDiff(XattrNamespace::Trusted),
        compression: CreateCompression::None,
        ..CreateOptions::default()
    };
    let (bytes, _) = create(&mut upper, &o);
    let entries = tar::read_archive(&bytes, Default::default()).unwrap();
    let listed: Vec<String> = entries
        .iter()
        .map(|(h, _)| String::from_utf8(h.path.clone()).unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "esc",
            "etc/",
            "etc/.wh.removed",
            "opaque/",
            "opaque/.wh..wh..opq",
            "opaque/new"
        ]
    );
    // Driver state is dropped, escaped content unescaped.
    assert!(entries[1].0.xattrs.is_empty(), "{:?}", entries[1].0.xattrs);
    assert!(entries[3].0.xattrs.is_empty(), "{:?}", entries[3].0.xattrs);
    assert_eq!(
        entries[0].0.xattrs,
        [(b"trusted.overlay.opaque".to_vec(), b"content".to_vec())]
    );
    // Applying it again in overlay mode gives the same upper dir back.
    let mut again = MemFs::new();
    apply_with(&mut again, &opts(WhiteoutMode::Overlay), &bytes).unwrap();
    assert!(is_whiteout(&get(&again, "etc/removed")));
    assert_eq!(xattrs(&get(&again, "opaque"))[OPAQUE], "y");
    assert_eq!(
        xattrs(&get(&again, "esc"))["trusted.overlay.overlay.opaque"],
        "content"
    );

    // Full mode: overlay-private xattrs are not content; a whiteout device is just a device.
    let o = CreateOptions {
        compression: CreateCompression::None,
        ..CreateOptions::default()
    };
    let mut out = Vec::new();
    let r = create_from(&mut upper, &o, &mut out, |_| {}).unwrap();
    let entries = tar::read_archive(&out, Default::default()).unwrap();
    assert!(entries.iter().all(|(h, _)| h
        .xattrs
        .iter()
        .all(|(n, _)| !n.starts_with(b"trusted.overlay."))));
    assert!(!r.skipped.is_empty());
}

#[test]
fn create_refuses_redirect_and_metacopy_and_unrepresentable_names() {
    for (x, v) in [
        ("trusted.overlay.redirect", "/old"),
        ("trusted.overlay.metacopy", ""),
    ] {
        let mut upper = MemFs::new();
        upper.add_dir("d", 0o755).add_xattr("d", x, v.as_bytes());
        let o = CreateOptions {
            mode: CreateMode::OverlayDiff(XattrNamespace::Trusted),
            ..CreateOptions::default()
        };
        let e = create_from(&mut upper, &o, Vec::new(), |_| {}).unwrap_err();
        assert_eq!(e.code(), "ERR_UNSUPPORTED_OVERLAY_FEATURE", "{e}");
        assert!(e.to_string().contains(x));
    }
    let mut src = MemFs::new();
    src.add_file("d/.wh.looks-like-a-whiteout", b"", 0o644);
    let e = create_from(&mut src, &CreateOptions::default(), Vec::new(), |_| {}).unwrap_err();
    assert_eq!(e.code(), "ERR_INVALID_WHITEOUT", "{e}");
}

#[cfg(feature = "zstd")]
#[test]
fn create_zstd_round_trips() {
    let mut src = sample_tree();
    let o = CreateOptions {
        compression: CreateCompression::Zstd { level: 3 },
        ..CreateOptions::default()
    };
    let (bytes, r) = create(&mut src, &o);
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    let mut dst = MemFs::new();
    let a = apply_with(&mut dst, &ApplyOptions::default(), &bytes).unwrap();
    assert_eq!((a.digest, a.diff_id), (r.digest, r.diff_id));
}

#[test]
fn create_progress_reaches_the_totals() {
    let mut src = MemFs::new();
    src.add_file("big", &vec![1u8; 3 << 20], 0o644);
    let mut seen = Vec::new();
    let r = create_from(&mut src, &CreateOptions::default(), Vec::new(), |p| {
        seen.push(p)
    })
    .unwrap();
    assert!(seen.len() >= 3);
    assert_eq!(seen.last().unwrap().compressed_in, r.compressed_size);
    assert_eq!(seen.last().unwrap().uncompressed_out, r.uncompressed_size);
}

/// A reader and a writer that cannot cross threads (like a JavaScript stream in wasm).
struct LocalReader(std::rc::Rc<std::cell::RefCell<std::io::Cursor<Vec<u8>>>>);

impl std::io::Read for LocalReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

struct LocalWriter(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn local_variants_take_non_send_io_and_agree() {
    use stevedore_core::layer::{apply_to_local, create_from_local};
    let mut src = sample_tree();
    for compression in [
        CreateCompression::None,
        CreateCompression::Gzip { level: 6 },
    ] {
        let o = CreateOptions {
            compression,
            ..CreateOptions::default()
        };
        let (threaded, r1) = create(&mut src, &o);
        let sink = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let r2 = create_from_local(&mut src, &o, LocalWriter(sink.clone()), |_| {}).unwrap();
        assert_eq!(*sink.borrow(), threaded);
        assert_eq!(r1, r2);
        let mut a = MemFs::new();
        let ra = apply_with(&mut a, &ApplyOptions::default(), &threaded).unwrap();
        let mut b = MemFs::new();
        let reader = LocalReader(std::rc::Rc::new(std::cell::RefCell::new(
            std::io::Cursor::new(threaded.clone()),
        )));
        let rb = apply_to_local(reader, &mut b, &ApplyOptions::default(), |_| {}).unwrap();
        assert_eq!(ra, rb);
        assert_eq!(a.walk(), b.walk());
    }
}
