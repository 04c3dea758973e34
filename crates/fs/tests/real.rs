//! `apply_layer` and `create_layer` on real directories: metadata fidelity against GNU tar,
//! the staging directory, the apply-mode transaction, and equivalence with the kernel's
//! overlay mount (both directions: layers applied in overlay mode and mounted vs. applied in
//! apply mode; and an upper dir written by the kernel, turned into a layer by
//! `create_layer`, applied onto the lower tree vs. the merged mount).
//!
//! Root-only parts (owners, devices, trusted.* xattrs, mounts) print why and pass when not
//! root, unless `STEVEDORE_REQUIRE_KERNEL_OVERLAY=1`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use stevedore_core::digest::{hash, Algorithm};
use stevedore_core::overlay::XattrNamespace;
use stevedore_core::tar::{EntryKind, Header, Timestamp};
use stevedore_fs::{
    apply_layer, create_layer, flatten_layers, ApplyOptions, Compression, CreateCompression,
    CreateMode, CreateOptions, WhiteoutMode,
};

fn opts(mode: WhiteoutMode) -> ApplyOptions {
    ApplyOptions {
        mode,
        ..ApplyOptions::default()
    }
}

fn run_with_input(cmd: &str, args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn meta(m: Member, mode: u32, uid: u64, gid: u64, secs: i64, nanos: u32) -> Member {
    with(m, |h| {
        h.mode = mode;
        h.uid = uid;
        h.gid = gid;
        h.mtime = Timestamp::new(secs, nanos);
    })
}

fn xattr(m: Member, name: &str, value: &[u8]) -> Member {
    with(m, |h| {
        h.xattrs.push((name.as_bytes().to_vec(), value.to_vec()))
    })
}

/// Every kind of entry with unusual metadata (root-only parts included when root).
fn rich_layer(root: bool) -> Vec<Member> {
    // Each directory's entries are contiguous: GNU tar (the oracle) sets a directory's mtime
    // when the archive leaves it, not at the end as we do.
    let mut m = vec![
        meta(dir("etc"), 0o751, 10, 20, 1_500_000_000, 0),
        meta(
            file("etc/conf", "a=1\n"),
            0o640,
            1000,
            1000,
            1_400_000_000,
            123_456_789,
        ),
        xattr(
            meta(
                file("etc/suid", "#!/bin/sh\n"),
                0o4755,
                0,
                0,
                1_300_000_000,
                0,
            ),
            "user.note",
            b"hello\0binary",
        ),
        meta(
            file("etc/sgid-dir-file", ""),
            0o2750,
            5,
            6,
            1_300_000_001,
            0,
        ),
        meta(symlink("etc/link", "conf"), 0o777, 7, 8, 1_100_000_000, 500),
        hardlink("etc/conf-hard", "etc/conf"),
    ];
    if root {
        m.extend([
            xattr(
                file("etc/cap", "elf"),
                "security.capability",
                &[
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            xattr(symlink("etc/tlink", "x"), "trusted.note", b"on a symlink"),
            xattr(
                dir("etc/tdir"),
                "trusted.overlay.opaque",
                b"escaped, not opaque",
            ),
        ]);
    }
    m.extend([
        meta(dir("tmp"), 0o1777, 0, 0, 1_200_000_000, 0),
        meta(dir("ro"), 0o555, 0, 0, 1_200_000_001, 0),
        file("ro/inside-readonly-dir", "x"),
        symlink("dangling", "/does/not/exist"),
        meta(
            device("run/fifo", EntryKind::Fifo, 0, 0),
            0o600,
            3,
            4,
            1_000_000_000,
            0,
        ),
        file(&format!("deep/{}", "d/".repeat(40) + "leaf"), "deep"),
        file("big", &"0123456789abcdef".repeat(300_000)),
        file("empty", ""),
        file("non-utf8-\u{e9}", "latin"),
    ]);
    if root {
        m.extend([
            meta(
                device("dev/null", EntryKind::CharDevice, 1, 3),
                0o666,
                0,
                0,
                1,
                0,
            ),
            meta(
                device("dev/loop0", EntryKind::BlockDevice, 7, 0),
                0o660,
                0,
                6,
                2,
                0,
            ),
        ]);
    }
    m
}

#[test]
fn oci_mode_extracts_like_gnu_tar() {
    let root = is_root();
    let scratch = Scratch::new("gnutar");
    let layer = archive(rich_layer(root));
    fs::write(scratch.path("layer.tar"), &layer).unwrap();
    let gnu = scratch.path("gnu");
    fs::create_dir(&gnu).unwrap();
    let mut args = vec![
        "-xpf",
        "layer.tar",
        "-C",
        "gnu",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
    ];
    if !root {
        args.push("--no-same-owner");
    }
    let out = Command::new("tar")
        .args(&args)
        .current_dir(&scratch.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = scratch.path("ours");
    let r = apply_layer(&layer[..], &ours, &opts(WhiteoutMode::Oci), |_| {}).unwrap();
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    // Directories the archive only implies get the time they were created, in both.
    let implied =
        |p: &Path| p.starts_with("deep") || p == Path::new("dev") || p == Path::new("run");
    let strip = |m: BTreeMap<PathBuf, String>| -> BTreeMap<PathBuf, String> {
        m.into_iter()
            .map(|(p, d)| {
                if implied(&p) && d.starts_with("dir") {
                    let i = d.find(" mtime=").unwrap();
                    let j = d[i + 1..].find(' ').unwrap() + i + 1;
                    (p, format!("{}{}", &d[..i], &d[j..]))
                } else {
                    (p, d)
                }
            })
            .collect()
    };
    let mut expected = strip(snapshot(&gnu, &[], true));
    let got = strip(snapshot(&ours, &[], true));
    if root {
        // We escape overlay-private xattrs of the content (SECURITY.md rule 4); GNU tar does not.
        let tdir = expected.get_mut(Path::new("etc/tdir")).unwrap();
        *tdir = tdir.replace("trusted.overlay.opaque", "trusted.overlay.overlay.opaque");
    }
    let diff: Vec<String> = expected
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| expected.get(*k) != got.get(*k))
        .map(|k| {
            format!(
                "{}:\n  gnu:  {:?}\n  ours: {:?}",
                k.display(),
                expected.get(k),
                got.get(k)
            )
        })
        .collect();
    assert!(diff.is_empty(), "differences:\n{}", diff.join("\n"));
    if root {
        // Not vacuous: the file capability survived the chown (set after it).
        assert!(got[Path::new("etc/cap")].contains("security.capability"));
        assert!(got[Path::new("etc/tlink")].contains("trusted.note"));
        assert!(got[Path::new("etc/suid")].contains("mode=4755 owner=0:0"));
    }
    assert_eq!(r.diff_id, hash(Algorithm::Sha256, &layer));
    assert_eq!(r.compression, Compression::None);
}

#[test]
fn staging_never_leaves_partial_output() {
    let scratch = Scratch::new("staging");
    let layer = archive(vec![dir("a"), file("a/f", "content"), file("b", "b")]);
    let gz = gzip(&layer);
    let leftovers = |s: &Scratch| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&s.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".staging-"))
            .collect();
        v.sort();
        v
    };

    // A digest mismatch: no target, no staging.
    let target = scratch.path("t1");
    let o = ApplyOptions {
        expected_digest: Some(hash(Algorithm::Sha256, b"other")),
        ..opts(WhiteoutMode::Overlay)
    };
    let e = apply_layer(&gz[..], &target, &o, |_| {}).unwrap_err();
    assert_eq!(e.code(), "ERR_DIGEST_MISMATCH");
    assert!(
        e.to_string()
            .contains(&hash(Algorithm::Sha256, &gz).to_string()),
        "{e}"
    );
    assert!(!target.exists());
    assert!(leftovers(&scratch).is_empty());

    // A corrupt stream after some files were written: same.
    let mut bad = gz.clone();
    let n = bad.len();
    bad[n - 6] ^= 0xff;
    let e = apply_layer(&bad[..], &target, &opts(WhiteoutMode::Overlay), |_| {}).unwrap_err();
    assert_eq!(e.code(), "ERR_DECOMPRESS", "{e}");
    assert!(!target.exists());
    assert!(leftovers(&scratch).is_empty());

    // Success: the target appears whole, 0755.
    let o = ApplyOptions {
        expected_digest: Some(hash(Algorithm::Sha256, &gz)),
        expected_diff_id: Some(hash(Algorithm::Sha256, &layer)),
        ..opts(WhiteoutMode::Overlay)
    };
    let r = apply_layer(&gz[..], &target, &o, |_| {}).unwrap();
    assert_eq!(r.compression, Compression::Gzip);
    assert_eq!(fs::read_to_string(target.join("a/f")).unwrap(), "content");
    assert!(describe(&target, false).starts_with("dir mode=755"));
    assert!(leftovers(&scratch).is_empty());

    // An existing, empty directory is replaced; a non-empty one is refused and kept.
    let empty = scratch.path("t2");
    fs::create_dir(&empty).unwrap();
    apply_layer(&layer[..], &empty, &opts(WhiteoutMode::Oci), |_| {}).unwrap();
    assert_eq!(fs::read_to_string(empty.join("b")).unwrap(), "b");
    let e = apply_layer(&layer[..], &target, &opts(WhiteoutMode::Overlay), |_| {}).unwrap_err();
    assert_eq!(e.code(), "ERR_IO");
    assert!(e.to_string().contains("not empty"), "{e}");
    assert_eq!(fs::read_to_string(target.join("a/f")).unwrap(), "content");
    fs::write(scratch.path("file"), "").unwrap();
    let e = apply_layer(
        &layer[..],
        &scratch.path("file"),
        &opts(WhiteoutMode::Overlay),
        |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("is a file"), "{e}");
    assert!(leftovers(&scratch).is_empty());
}

fn lower_layer() -> Vec<Member> {
    vec![
        dir("etc"),
        file("etc/passwd", "root:x:0:0"),
        file("etc/motd", "hello"),
        dir("usr"),
        dir("usr/lib"),
        file("usr/lib/libc.so", "elf"),
        symlink("lib", "usr/lib"),
        dir("var"),
        dir("var/cache"),
        file("var/cache/a", "a"),
        dir("var/cache/sub"),
        file("var/cache/sub/b", "b"),
        file("replace-me", "file"),
        dir("dir-to-file"),
        file("dir-to-file/x", "x"),
    ]
}

fn upper_layer() -> Vec<Member> {
    vec![
        dir("etc"),
        file(".wh.replace-me", ""),
        file("etc/.wh.motd", ""),
        file("etc/passwd", "root:x:0:0\nuser:x:1000:1000"),
        dir("var"),
        dir("var/cache"),
        file("var/cache/.wh..wh..opq", ""),
        file("var/cache/new", "new"),
        dir("replace-me"),
        file("replace-me/now-a-dir", "d"),
        file("dir-to-file", "now a file"),
        dir("usr"),
        file("usr/.wh.lib", ""),
        dir("opt"),
        hardlink("opt/passwd-link", "etc/passwd"),
    ]
}

#[test]
fn apply_mode_rolls_back_on_a_real_tree() {
    if !root_or_skip("apply_mode_rolls_back_on_a_real_tree") {
        return;
    }
    let scratch = Scratch::new("rollback");
    let root = scratch.path("rootfs");
    fs::create_dir(&root).unwrap();
    apply_layer(
        &archive(lower_layer())[..],
        &root,
        &opts(WhiteoutMode::Apply),
        |_| {},
    )
    .unwrap();
    let before = snapshot(&root, &[], true);
    let root_before = describe(&root, true);
    let upper = archive(upper_layer());
    let o = ApplyOptions {
        expected_diff_id: Some(hash(Algorithm::Sha256, b"wrong")),
        ..opts(WhiteoutMode::Apply)
    };
    let e = apply_layer(&upper[..], &root, &o, |_| {}).unwrap_err();
    assert_eq!(e.code(), "ERR_DIGEST_MISMATCH");
    assert_eq!(snapshot(&root, &[], true), before);
    assert_eq!(describe(&root, true), root_before);
    // And it applies for real with the right digest.
    let o = ApplyOptions {
        expected_diff_id: Some(hash(Algorithm::Sha256, &upper)),
        ..opts(WhiteoutMode::Apply)
    };
    apply_layer(&upper[..], &root, &o, |_| {}).unwrap();
    assert!(!root.join("etc/motd").exists());
    assert!(!root.join("var/cache/a").exists());
    assert_eq!(
        fs::read_to_string(root.join("var/cache/new")).unwrap(),
        "new"
    );
    assert!(fs::read_dir(&root).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".stevedore")));
}

// --- kernel overlay --------------------------------------------------------------------------

fn overlay_available(what: &str) -> bool {
    if !root_or_skip(what) {
        return false;
    }
    let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let ok = fss.lines().any(|l| l.trim_end().ends_with("\toverlay"));
    if !ok {
        if std::env::var("STEVEDORE_REQUIRE_KERNEL_OVERLAY").as_deref() == Ok("1") {
            panic!("{what}: overlay is not in /proc/filesystems");
        }
        eprintln!("skipping {what}: no overlayfs");
    }
    ok
}

/// An overlay mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(target: &Path, options: &str) -> Mount {
        fs::create_dir_all(target).unwrap();
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", options])
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -o {options}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(target.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A snapshot for comparing with a merged mount: overlay-private xattrs left out (the mount
/// hides them; the layers' own directories carry the opaque ones).
fn comparable(root: &Path) -> BTreeMap<PathBuf, String> {
    snapshot(root, &[], true)
        .into_iter()
        .map(|(p, d)| {
            let d = strip_private_xattrs(&d);
            (p, d)
        })
        .collect()
}

fn strip_private_xattrs(d: &str) -> String {
    // `xattrs={"a": [..], "trusted.overlay.x": [..]}`: drop trusted.overlay.* keys.
    match d.find(" xattrs=") {
        Some(i) => {
            let (head, tail) = d.split_at(i);
            let kept: Vec<&str> = tail[" xattrs={".len()..tail.len() - 1]
                .split(", \"")
                .filter(|kv| {
                    !kv.is_empty() && !kv.trim_start_matches('"').starts_with("trusted.overlay.")
                })
                .collect();
            let mut joined = kept.join(", \"");
            if !joined.is_empty() && !joined.starts_with('"') {
                joined.insert(0, '"');
            }
            format!("{head} xattrs={{{joined}}}")
        }
        None => d.to_string(),
    }
}

fn diff_maps(a: &BTreeMap<PathBuf, String>, b: &BTreeMap<PathBuf, String>) -> Vec<String> {
    a.keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{}:\n  left:  {:?}\n  right: {:?}",
                k.display(),
                a.get(k),
                b.get(k)
            )
        })
        .collect()
}

#[test]
fn apply_mode_equals_the_overlay_mount_of_overlay_mode_layers() {
    if !overlay_available("apply_mode_equals_the_overlay_mount_of_overlay_mode_layers") {
        return;
    }
    let scratch = Scratch::new("ovl-apply");
    let (lower, upper) = (archive(lower_layer()), archive(upper_layer()));
    let l0 = scratch.path("l0");
    let l1 = scratch.path("l1");
    apply_layer(&lower[..], &l0, &opts(WhiteoutMode::Overlay), |_| {}).unwrap();
    apply_layer(&upper[..], &l1, &opts(WhiteoutMode::Overlay), |_| {}).unwrap();
    // The overlay form on disk: whiteouts and the opaque directory.
    assert!(describe(&l1.join("etc/motd"), false).starts_with("char 0:0 mode=0"));
    assert!(describe(&l1.join("replace-me"), false).contains("trusted.overlay.opaque"));
    assert!(describe(&l1.join("var/cache"), false).contains("trusted.overlay.opaque"));
    let merged = scratch.path("merged");
    let mount = Mount::new(
        &merged,
        &format!("ro,lowerdir={}:{}", l1.display(), l0.display()),
    );
    let want = comparable(&merged);
    let flat = scratch.path("flat");
    fs::create_dir(&flat).unwrap();
    apply_layer(&lower[..], &flat, &opts(WhiteoutMode::Apply), |_| {}).unwrap();
    apply_layer(&upper[..], &flat, &opts(WhiteoutMode::Apply), |_| {}).unwrap();
    let got = comparable(&flat);
    drop(mount);
    let diff = diff_maps(&want, &got);
    assert!(
        diff.is_empty(),
        "merged mount vs apply mode:\n{}",
        diff.join("\n")
    );
    assert!(want.contains_key(Path::new("var/cache/new")));
    assert!(!want.contains_key(Path::new("var/cache/a")));
}

#[test]
fn a_kernel_upper_dir_becomes_a_layer_that_reproduces_the_merged_view() {
    if !overlay_available("a_kernel_upper_dir_becomes_a_layer_that_reproduces_the_merged_view") {
        return;
    }
    let scratch = Scratch::new("ovl-create");
    let lower = archive(lower_layer());
    let l0 = scratch.path("l0");
    apply_layer(&lower[..], &l0, &opts(WhiteoutMode::Overlay), |_| {}).unwrap();
    let upper = scratch.path("upper");
    let work = scratch.path("work");
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let merged = scratch.path("merged");
    let options = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
        l0.display(),
        upper.display(),
        work.display()
    );
    let want = {
        let _mount = Mount::new(&merged, &options);
        let m = |p: &str| merged.join(p);
        fs::remove_file(m("etc/motd")).unwrap();
        fs::write(m("etc/passwd"), "changed").unwrap();
        fs::remove_dir_all(m("var/cache")).unwrap();
        fs::create_dir(m("var/cache")).unwrap(); // opaque
        fs::write(m("var/cache/fresh"), "f").unwrap();
        fs::remove_file(m("replace-me")).unwrap();
        fs::create_dir(m("replace-me")).unwrap();
        fs::remove_dir_all(m("dir-to-file")).unwrap();
        fs::write(m("dir-to-file"), "file now").unwrap();
        fs::hard_link(m("etc/passwd"), m("etc/passwd-link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", m("abs-link")).unwrap();
        run(
            "setfattr",
            &[
                "-n",
                "user.kept",
                "-v",
                "1",
                m("etc/passwd").to_str().unwrap(),
            ],
        );
        comparable(&merged)
    };
    // The kernel wrote whiteouts and an opaque directory into the upper dir.
    assert!(describe(&upper.join("etc/motd"), false).starts_with("char 0:0"));
    let mut layer = Vec::new();
    let o = CreateOptions {
        mode: CreateMode::OverlayDiff(XattrNamespace::Trusted),
        compression: CreateCompression::Gzip { level: 6 },
        ..CreateOptions::default()
    };
    let created = create_layer(&upper, &o, &mut layer, |_| {}).unwrap();
    let flat = scratch.path("flat");
    fs::create_dir(&flat).unwrap();
    apply_layer(&lower[..], &flat, &opts(WhiteoutMode::Apply), |_| {}).unwrap();
    let r = apply_layer(&layer[..], &flat, &opts(WhiteoutMode::Apply), |_| {}).unwrap();
    assert_eq!((r.digest, r.diff_id), (created.digest, created.diff_id));
    // Layers carry whole seconds: compare mtimes at that precision.
    let secs = |m: BTreeMap<PathBuf, String>| -> BTreeMap<PathBuf, String> {
        m.into_iter()
            .map(|(p, d)| {
                let d = match d.find(" mtime=") {
                    Some(i) => {
                        let dot = d[i..].find('.').unwrap() + i;
                        format!("{}{}", &d[..dot], &d[dot + 10..])
                    }
                    None => d,
                };
                (p, d)
            })
            .collect()
    };
    let diff = diff_maps(&secs(want), &secs(comparable(&flat)));
    assert!(
        diff.is_empty(),
        "merged mount vs lower + created layer:\n{}",
        diff.join("\n")
    );
}

#[test]
fn metacopy_upper_dirs_are_refused() {
    if !overlay_available("metacopy_upper_dirs_are_refused") {
        return;
    }
    let scratch = Scratch::new("metacopy");
    let l0 = scratch.path("l0");
    apply_layer(
        &archive(lower_layer())[..],
        &l0,
        &opts(WhiteoutMode::Overlay),
        |_| {},
    )
    .unwrap();
    let (upper, work, merged) = (scratch.path("u"), scratch.path("w"), scratch.path("m"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    {
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={},redirect_dir=on,metacopy=on",
                l0.display(),
                upper.display(),
                work.display()
            ))
            .arg({
                fs::create_dir_all(&merged).unwrap();
                &merged
            })
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "skipping: metacopy=on is not supported here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let _mount = Mount(merged.clone());
        run(
            "chmod",
            &["0600", merged.join("etc/passwd").to_str().unwrap()],
        );
    }
    let e = create_layer(
        &upper,
        &CreateOptions {
            mode: CreateMode::OverlayDiff(XattrNamespace::Trusted),
            ..CreateOptions::default()
        },
        Vec::new(),
        |_| {},
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_UNSUPPORTED_OVERLAY_FEATURE", "{e}");
    assert!(e.to_string().contains("metacopy"), "{e}");
}

// --- create ----------------------------------------------------------------------------------

#[test]
fn created_layers_extract_identically_with_gnu_tar_and_with_us() {
    let root = is_root();
    let scratch = Scratch::new("create");
    let src = scratch.path("src");
    apply_layer(
        &archive(rich_layer(root))[..],
        &src,
        &opts(WhiteoutMode::Oci),
        |_| {},
    )
    .unwrap();
    for compression in [
        CreateCompression::None,
        CreateCompression::Gzip { level: 6 },
        CreateCompression::Zstd { level: 3 },
    ] {
        let o = CreateOptions {
            compression,
            ..CreateOptions::default()
        };
        let mut a = Vec::new();
        let r1 = create_layer(&src, &o, &mut a, |_| {}).unwrap();
        let mut b = Vec::new();
        let r2 = create_layer(&src, &o, &mut b, |_| {}).unwrap();
        assert_eq!(a, b, "{compression:?}: deterministic");
        assert_eq!(r1, r2);
        assert_eq!(r1.digest, hash(Algorithm::Sha256, &a));
        let ext = match compression {
            CreateCompression::None => "tar",
            CreateCompression::Gzip { .. } => "tar.gz",
            CreateCompression::Zstd { .. } => "tar.zst",
        };
        let file = scratch.path(&format!("layer.{ext}"));
        fs::write(&file, &a).unwrap();
        // GNU tar reads what we wrote (zstd through the zstd tool).
        let gnu = scratch.path(&format!("gnu-{ext}"));
        fs::create_dir(&gnu).unwrap();
        let mut args = vec![
            "-xpf".to_string(),
            file.display().to_string(),
            "-C".into(),
            gnu.display().to_string(),
            "--numeric-owner".into(),
            "--xattrs".into(),
            "--xattrs-include=*".into(),
        ];
        if ext == "tar.zst" {
            args.push("--zstd".into());
        }
        let out = Command::new("tar").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = scratch.path(&format!("ours-{ext}"));
        let applied = apply_layer(&a[..], &ours, &opts(WhiteoutMode::Oci), |_| {}).unwrap();
        assert_eq!(applied.diff_id, r1.diff_id);
        let secs = |p: &Path| -> BTreeMap<PathBuf, String> {
            snapshot(p, &[], true)
                .into_iter()
                .map(|(k, d)| {
                    let i = d.find(" mtime=").unwrap();
                    let dot = d[i..].find('.').unwrap() + i;
                    (k, format!("{}{}", &d[..dot], &d[dot + 10..]))
                })
                .collect()
        };
        let mut want = secs(&src);
        if root {
            // Content that looks overlay-private is escaped on the way in and kept as such.
            let tdir = want.get_mut(Path::new("etc/tdir")).unwrap();
            assert!(tdir.contains("trusted.overlay.overlay.opaque"), "{tdir}");
        }
        for other in [secs(&gnu), secs(&ours)] {
            let diff = diff_maps(&want, &other);
            // Full mode drops overlay-private xattrs (they are not content).
            let diff: Vec<String> = diff
                .into_iter()
                .filter(|d| !d.starts_with("etc/tdir"))
                .collect();
            assert!(diff.is_empty(), "{compression:?}:\n{}", diff.join("\n"));
        }
    }
}

#[test]
fn hard_links_in_the_source_become_hard_link_entries() {
    let scratch = Scratch::new("links");
    let src = scratch.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/one"), "same inode").unwrap();
    fs::hard_link(src.join("a/one"), src.join("b-two")).unwrap();
    fs::hard_link(src.join("a/one"), src.join("a/zz-three")).unwrap();
    let mut out = Vec::new();
    let o = CreateOptions {
        compression: CreateCompression::None,
        ..CreateOptions::default()
    };
    create_layer(&src, &o, &mut out, |_| {}).unwrap();
    let entries = stevedore_core::tar::read_archive(&out, Default::default()).unwrap();
    let list: Vec<(String, EntryKind, String)> = entries
        .iter()
        .map(|(h, _): &(Header, Vec<u8>)| {
            (
                String::from_utf8_lossy(&h.path).into_owned(),
                h.kind,
                String::from_utf8_lossy(&h.link_name).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        list,
        [
            ("a/".to_string(), EntryKind::Directory, String::new()),
            ("a/one".into(), EntryKind::Regular, String::new()),
            ("a/zz-three".into(), EntryKind::Hardlink, "a/one".into()),
            ("b-two".into(), EntryKind::Hardlink, "a/one".into()),
        ]
    );
}

// --- flatten ---------------------------------------------------------------------------------

/// Hard-link groups of a tree: the sorted relative paths sharing each inode (groups of 2+).
fn link_groups(root: &Path) -> Vec<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            } else {
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                by_inode.entry((md.dev(), md.ino())).or_default().push(rel);
            }
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = by_inode
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    groups
}

/// A third layer that exercises what a replay must get right: an implicit parent through a
/// lower symlink (`lib2/x` where `lib2 -> usr/share`), a hard link to a lower layer's file, a
/// path written twice, a whiteout of a whole lower tree, a file replaced by a symlink, and the
/// root's own metadata (`./`).
fn third_layer() -> Vec<Member> {
    vec![
        meta(dir("."), 0o750, 0, 0, 1_600_000_000, 0),
        file("usr/share/doc", "doc"),
        symlink("lib2", "usr/share"),
        file("lib2/through-the-link", "lands in usr/share"),
        hardlink("etc/passwd-again", "etc/passwd"),
        file("twice", "first"),
        file("twice", "second"),
        file(".wh.opt", ""),
        symlink("dir-to-file", "etc"),
        meta(file("etc/late", "late"), 0o600, 3, 4, 1_000, 0),
    ]
}

fn flatten_layers_of(members: Vec<Vec<Member>>) -> Vec<Vec<u8>> {
    members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let tar = archive(m);
            // Mixed compression: the stager must handle each kind.
            if i % 2 == 1 {
                gzip(&tar)
            } else {
                tar
            }
        })
        .collect()
}

#[test]
fn flatten_equals_applying_layer_by_layer() {
    let root = is_root();
    let layers = flatten_layers_of(vec![
        rich_layer(root).into_iter().chain(lower_layer()).collect(),
        upper_layer(),
        third_layer(),
    ]);
    let scratch = Scratch::new("flatten");
    let one_by_one = scratch.path("one-by-one");
    let flat = scratch.path("flat");
    for d in [&one_by_one, &flat] {
        fs::create_dir(d).unwrap();
        fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let mut reports = Vec::new();
    for l in &layers {
        reports.push(apply_layer(&l[..], &one_by_one, &opts(WhiteoutMode::Apply), |_| {}).unwrap());
    }
    for parallel in [1, 3] {
        let _ = fs::remove_dir_all(&flat);
        fs::create_dir(&flat).unwrap();
        fs::set_permissions(&flat, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let got = flatten_layers(
            layers
                .iter()
                .map(|l| (&l[..], opts(WhiteoutMode::Apply)))
                .collect(),
            &flat,
            parallel,
            |_| {},
        )
        .unwrap();
        for (a, b) in reports.iter().zip(&got) {
            assert_eq!(
                (&a.digest, &a.diff_id, a.entries),
                (&b.digest, &b.diff_id, b.entries)
            );
        }
        // Directories no layer lists (implied by a deeper entry) get the time they were made:
        // their mtimes are not the layers' to compare.
        let implied = |p: &Path| {
            ["dev", "run", "usr/share"]
                .iter()
                .any(|d| p == Path::new(d))
                || p.starts_with("deep")
        };
        let without_implied_mtimes = |root: &Path| -> BTreeMap<PathBuf, String> {
            snapshot(root, &[], true)
                .into_iter()
                .map(|(p, d)| {
                    if implied(&p) && d.starts_with("dir ") {
                        let cut = d.find(" mtime=").unwrap();
                        let rest = &d[cut + 7..];
                        let rest = &rest[rest.find(' ').unwrap()..];
                        (p, format!("{}{rest}", &d[..cut]))
                    } else {
                        (p, d)
                    }
                })
                .collect()
        };
        let a = without_implied_mtimes(&one_by_one);
        let b = without_implied_mtimes(&flat);
        let diff = diff_maps(&a, &b);
        assert!(diff.is_empty(), "parallel {parallel}:\n{}", diff.join("\n"));
        assert_eq!(describe(&one_by_one, true), describe(&flat, true));
        assert_eq!(link_groups(&one_by_one), link_groups(&flat));
    }
    // The layers did what the test means them to do.
    assert_eq!(
        fs::read_to_string(flat.join("usr/share/through-the-link")).unwrap(),
        "lands in usr/share"
    );
    assert_eq!(fs::read_to_string(flat.join("twice")).unwrap(), "second");
    assert!(!flat.join("opt").exists());
    assert!(fs::symlink_metadata(flat.join("dir-to-file"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn flatten_changes_nothing_when_any_layer_is_bad() {
    let layers = flatten_layers_of(vec![lower_layer(), upper_layer(), third_layer()]);
    let scratch = Scratch::new("flatten-bad");
    let target = scratch.path("rootfs");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("already-here"), "keep").unwrap();
    let before = snapshot(&target, &[], true);
    let root_before = describe(&target, true);
    // The last layer's diff_id is wrong: found after the first two were staged.
    let mut list: Vec<(&[u8], ApplyOptions)> = layers
        .iter()
        .map(|l| (&l[..], opts(WhiteoutMode::Apply)))
        .collect();
    list[2].1.expected_diff_id = Some(hash(Algorithm::Sha256, b"not this layer"));
    let e = flatten_layers(list, &target, 2, |_| {}).unwrap_err();
    assert_eq!(e.layer, Some(2));
    assert_eq!(e.error.code(), "ERR_DIGEST_MISMATCH");
    assert!(e.to_string().starts_with("layer 2: "), "{e}");
    assert_eq!(snapshot(&target, &[], true), before);
    assert_eq!(describe(&target, true), root_before);
    // An unsafe path in layer 1 names the entry; nothing changed either.
    let evil = archive(vec![file("../escape", "x")]);
    let list: Vec<(&[u8], ApplyOptions)> = vec![
        (&layers[0][..], opts(WhiteoutMode::Apply)),
        (&evil[..], opts(WhiteoutMode::Apply)),
    ];
    let e = flatten_layers(list, &target, 2, |_| {}).unwrap_err();
    assert_eq!(e.layer, Some(1));
    assert!(e.to_string().contains("../escape"), "{e}");
    assert_eq!(snapshot(&target, &[], true), before);
    assert!(!scratch.path("escape").exists());
}

/// The layout fuse-overlayfs (unprivileged) leaves for `rm -rf d; mkdir d; echo n > d/new`
/// (checked on this kernel): `d` carries `user.fuseoverlayfs.opaque=y` and holds a `.wh..opq`
/// 0/0 character device and an empty `.wh..wh..opq` file next to the new content.
#[test]
fn fuse_overlayfs_opaque_dirs_become_one_oci_marker() {
    if !root_or_skip("fuse_overlayfs_opaque_dirs_become_one_oci_marker") {
        return;
    }
    let scratch = Scratch::new("fuse-upper");
    let upper = scratch.path("upper");
    fs::create_dir_all(upper.join("d")).unwrap();
    fs::write(upper.join("d/new"), "n").unwrap();
    fs::write(upper.join("d/.wh..wh..opq"), "").unwrap();
    run(
        "mknod",
        &[upper.join("d/.wh..opq").to_str().unwrap(), "c", "0", "0"],
    );
    run(
        "setfattr",
        &[
            "-n",
            "user.fuseoverlayfs.opaque",
            "-v",
            "y",
            upper.join("d").to_str().unwrap(),
        ],
    );
    // A directory whose markers are there but which is not opaque keeps the refusal.
    fs::create_dir_all(upper.join("e")).unwrap();
    fs::write(upper.join("e/.wh..wh..opq"), "").unwrap();
    let o = CreateOptions {
        mode: CreateMode::OverlayDiff(XattrNamespace::User),
        compression: CreateCompression::None,
        ..CreateOptions::default()
    };
    let err = create_layer(&upper, &o, Vec::new(), |_| {}).unwrap_err();
    assert!(err.to_string().contains(".wh."), "{err}");
    fs::remove_dir_all(upper.join("e")).unwrap();
    let mut tar = Vec::new();
    create_layer(&upper, &o, &mut tar, |_| {}).unwrap();
    let names = run_with_input("tar", &["-tf", "-"], &tar);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        vec!["d/", "d/.wh..wh..opq", "d/new"],
        "{names}"
    );
    // Applied onto a lower `d` with content, only the new file remains (and no xattr leaks).
    let root = scratch.path("rootfs");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("d/old"), "o").unwrap();
    apply_layer(&tar[..], &root, &opts(WhiteoutMode::Apply), |_| {}).unwrap();
    let mut left: Vec<_> = fs::read_dir(root.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["new"]);
    assert!(xattrs(&root.join("d")).is_empty());
}
