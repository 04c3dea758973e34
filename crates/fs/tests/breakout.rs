//! The breakout table: hostile archives applied to a real directory inside a sentinel
//! directory. Whatever an archive says, nothing outside the target may change (the sentinel
//! is snapshotted before and after: types, modes, owners, mtimes, xattrs, contents), errors
//! name the offending entry, a failed staged apply leaves neither the target nor a staging
//! directory behind, and three implementations agree on every outcome: `apply_layer`
//! (openat2), the core on a `DirFs` without openat2 (the component-by-component walk), and
//! the core on the in-memory `MemFs`.
//!
//! Absolute paths in the hostile archives point into the sentinel (never at the host's own
//! `/etc`): an escape would change the sentinel and be seen, without harming the machine.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use stevedore_core::layer::{apply_to, FileType, MemFs};
use stevedore_core::tar::{EntryKind, Timestamp};
use stevedore_fs::{apply_layer, ApplyOptions, DirFs, WhiteoutMode};

use WhiteoutMode::{Apply, Overlay};

enum Expect {
    /// Error code, and a piece of the entry's name the message must contain.
    Err(&'static str, String),
    /// Success; these target paths exist with a description starting with this kind.
    Ok(Vec<(String, &'static str)>),
}

struct Case {
    name: &'static str,
    mode: WhiteoutMode,
    /// Applied first (apply mode): the lower layers of the root filesystem.
    lower: Vec<Member>,
    layer: Vec<Member>,
    expect: Expect,
}

fn err(code: &'static str, names: &str) -> Expect {
    Expect::Err(code, names.to_string())
}

fn ok(paths: &[(&str, &'static str)]) -> Expect {
    Expect::Ok(paths.iter().map(|(p, k)| (p.to_string(), *k)).collect())
}

/// A symlink entry whose metadata would be visible on its target if it were followed.
fn loud(m: Member) -> Member {
    with(m, |h| {
        h.mode = 0o777;
        h.uid = 1234;
        h.gid = 1234;
        h.mtime = Timestamp::new(1, 0);
        h.xattrs.push((b"trusted.pwned".to_vec(), b"1".to_vec()));
    })
}

/// The table. `s` is the sentinel's absolute path, `r` the same without the leading `/`.
fn cases(s: &str, r: &str) -> Vec<Case> {
    let outside = format!("{s}/outside");
    let outside_passwd = format!("{s}/outside/passwd");
    let c = |name, mode, lower, layer, expect| Case {
        name,
        mode,
        lower,
        layer,
        expect,
    };
    vec![
        c(
            "../x",
            Overlay,
            vec![],
            vec![file("../x", "pwned")],
            err("ERR_INVALID_ENTRY_PATH", "../x"),
        ),
        c(
            "a/../../x",
            Overlay,
            vec![],
            vec![file("a/../../x", "pwned")],
            err("ERR_INVALID_ENTRY_PATH", "a/../../x"),
        ),
        c(
            "absolute path stays inside",
            Overlay,
            vec![],
            vec![file(&format!("{s}/x"), "inside")],
            ok(&[(&format!("{r}/x"), "file")]),
        ),
        c(
            "symlink a -> / then a/...",
            Overlay,
            vec![],
            vec![
                symlink("a", "/"),
                file(&format!("a{outside_passwd}"), "pwned"),
            ],
            err("ERR_UNSAFE_PATH", "outside/passwd"),
        ),
        c(
            "symlink a -> / then a/... (apply: resolved in the root)",
            Apply,
            vec![],
            vec![
                symlink("a", "/"),
                file(&format!("a{outside_passwd}"), "inside"),
            ],
            ok(&[(&format!("{r}/outside/passwd"), "file"), ("a", "symlink")]),
        ),
        c(
            "symlink a -> .. then a/x",
            Overlay,
            vec![],
            vec![symlink("a", ".."), file("a/x", "pwned")],
            err("ERR_UNSAFE_PATH", "a/x"),
        ),
        c(
            "symlink a -> .. then a/x (apply: clamped at the root)",
            Apply,
            vec![],
            vec![symlink("a", ".."), file("a/x", "inside")],
            ok(&[("x", "file")]),
        ),
        c(
            "symlink chain escaping",
            Overlay,
            vec![],
            vec![
                dir("c"),
                symlink("c/up", "../../../../.."),
                symlink("b", "c/up"),
                symlink("a", "b"),
                file("a/x", "pwned"),
            ],
            err("ERR_UNSAFE_PATH", "a/x"),
        ),
        c(
            "symlink chain escaping (apply)",
            Apply,
            vec![],
            vec![
                dir("c"),
                symlink("c/up", "../../../../.."),
                symlink("b", "c/up"),
                symlink("a", "b"),
                file("a/x", "inside"),
                symlink("abs", "/../../../../"),
                file("abs/y", "inside"),
            ],
            ok(&[("x", "file"), ("y", "file")]),
        ),
        c(
            "symlink loop",
            Apply,
            vec![],
            vec![symlink("l1", "l2"), symlink("l2", "l1"), file("l1/x", "x")],
            err("ERR_UNSAFE_PATH", "l1/x"),
        ),
        c(
            "hard link to an absolute path outside",
            Overlay,
            vec![],
            vec![hardlink("h", &outside_passwd)],
            err("ERR_ENTRY_CONFLICT", "\"h\""),
        ),
        c(
            "hard link to ../x",
            Overlay,
            vec![],
            vec![hardlink("h", "../x")],
            err("ERR_ENTRY_CONFLICT", "\"h\""),
        ),
        c(
            "hard link with a PAX linkpath ../../../x",
            Overlay,
            vec![],
            vec![
                pax(&[(b"linkpath", b"../../../x")]),
                raw(b"h", b'1', b"", b"safe"),
            ],
            err("ERR_ENTRY_CONFLICT", "\"h\""),
        ),
        c(
            "hard link through a symlinked directory",
            Overlay,
            vec![],
            vec![symlink("d", &outside), hardlink("h", "d/passwd")],
            err("ERR_UNSAFE_PATH", "\"h\""),
        ),
        c(
            "hard link through a symlinked directory (apply)",
            Apply,
            vec![],
            vec![symlink("d", &outside), hardlink("h", "d/passwd")],
            err("ERR_ENTRY_CONFLICT", "\"h\""),
        ),
        c(
            "hard link to a directory",
            Overlay,
            vec![],
            vec![dir("d"), hardlink("h", "d")],
            err("ERR_ENTRY_CONFLICT", "\"h\""),
        ),
        c(
            "hard link to a symlink pointing outside links the symlink",
            Overlay,
            vec![],
            vec![symlink("l", &outside_passwd), hardlink("h", "l")],
            ok(&[("h", "symlink")]),
        ),
        c(
            ".wh...",
            Overlay,
            vec![],
            vec![file(".wh...", "")],
            err("ERR_INVALID_WHITEOUT", ".wh..."),
        ),
        c(
            ".wh..",
            Apply,
            vec![],
            vec![file("d/.wh..", "")],
            err("ERR_INVALID_WHITEOUT", ".wh.."),
        ),
        c(
            ".wh.",
            Overlay,
            vec![],
            vec![file(".wh.", "")],
            err("ERR_INVALID_WHITEOUT", ".wh."),
        ),
        c(
            "opaque marker in a symlinked dir pointing outside",
            Overlay,
            vec![],
            vec![symlink("s", &outside), file("s/.wh..wh..opq", "")],
            err("ERR_UNSAFE_PATH", "s/.wh..wh..opq"),
        ),
        c(
            "opaque marker in a symlinked dir pointing outside (apply)",
            Apply,
            vec![],
            vec![symlink("s", &outside), file("s/.wh..wh..opq", "")],
            ok(&[("s", "symlink")]),
        ),
        c(
            "whiteout through a symlink to outside",
            Overlay,
            vec![],
            vec![symlink("s", "../.."), file("s/.wh.x", "")],
            err("ERR_UNSAFE_PATH", "s/.wh.x"),
        ),
        c(
            "whiteout through a symlink to outside (apply)",
            Apply,
            vec![],
            vec![
                symlink("s", "../.."),
                file("s/.wh.x", ""),
                symlink("o", &outside),
                file("o/.wh.passwd", ""),
                file("o/.wh.keep", ""),
            ],
            ok(&[("s", "symlink"), ("o", "symlink")]),
        ),
        c(
            "symlinks planted by a lower layer",
            Apply,
            vec![
                symlink("lib", &outside),
                symlink("rel", "../../.."),
                dir("etc"),
            ],
            vec![
                file("lib/passwd", "inside"),
                file("rel/x", "inside"),
                file("lib/.wh.keep", ""),
                file("lib/.wh..wh..opq", ""),
                hardlink("h", "lib/passwd"),
                dir("lib/sub"),
                file("rel/.wh.etc", ""),
            ],
            ok(&[
                (&format!("{r}/outside/passwd"), "file"),
                (&format!("{r}/outside/sub"), "dir"),
                ("x", "file"),
                ("h", "file"),
                ("lib", "symlink"),
            ]),
        ),
        c(
            "directory replaced by a symlink, then written through",
            Overlay,
            vec![],
            vec![dir("d"), symlink("d", &outside), file("d/passwd", "pwned")],
            err("ERR_UNSAFE_PATH", "d/passwd"),
        ),
        c(
            "directory replaced by a symlink, then written through (apply)",
            Apply,
            vec![],
            vec![dir("d"), symlink("d", &outside), file("d/passwd", "inside")],
            ok(&[(&format!("{r}/outside/passwd"), "file"), ("d", "symlink")]),
        ),
        c(
            "file over a symlink to outside replaces the link",
            Overlay,
            vec![],
            vec![symlink("f", &outside_passwd), file("f", "inside")],
            ok(&[("f", "file")]),
        ),
        c(
            "metadata of a symlink to outside stays on the link",
            Overlay,
            vec![],
            vec![
                loud(symlink("l", &outside_passwd)),
                loud(symlink("d", &outside)),
            ],
            ok(&[("l", "symlink"), ("d", "symlink")]),
        ),
        c(
            "directory entry over a symlink to an outside directory",
            Apply,
            vec![symlink("d", &outside)],
            vec![loud(dir("d"))],
            ok(&[("d", "dir")]),
        ),
        c(
            "absurd size (octal, no data)",
            Overlay,
            vec![],
            vec![Member::Raw(
                raw_header(b"big", b'0', 0o77777777770, b"").to_vec(),
            )],
            err("ERR_TAR_TRUNCATED", "big"),
        ),
        c(
            "absurd size (base-256)",
            Overlay,
            vec![],
            vec![Member::Raw(
                raw_header(b"huge", b'0', 1 << 62, b"").to_vec(),
            )],
            err("ERR_LAYER_LIMIT", "huge"),
        ),
        c(
            "PAX path ../x overriding a benign name",
            Overlay,
            vec![],
            vec![
                pax(&[(b"path", b"../x")]),
                raw(b"benign", b'0', b"pwned", b""),
            ],
            err("ERR_INVALID_ENTRY_PATH", "../x"),
        ),
        c(
            "GNU long name ../../x",
            Overlay,
            vec![],
            vec![
                gnu_long_name(b"../../x"),
                raw(b"benign", b'0', b"pwned", b""),
            ],
            err("ERR_INVALID_ENTRY_PATH", "../../x"),
        ),
        c(
            "NUL in a PAX path",
            Overlay,
            vec![],
            vec![
                pax(&[(b"path", b"ok\0../../x")]),
                raw(b"benign", b'0', b"pwned", b""),
            ],
            err("ERR_TAR_MALFORMED", "path"),
        ),
        c(
            ". as a file",
            Overlay,
            vec![],
            vec![raw(b".", b'0', b"pwned", b"")],
            err("ERR_INVALID_ENTRY_PATH", "root"),
        ),
        c(
            "empty name",
            Overlay,
            vec![],
            vec![raw(b"", b'0', b"pwned", b"")],
            err("ERR_INVALID_ENTRY_PATH", "root"),
        ),
        c(
            "entry named ..",
            Overlay,
            vec![],
            vec![raw(b"..", b'5', b"", b"")],
            err("ERR_INVALID_ENTRY_PATH", ".."),
        ),
        c(
            "the root as a symlink",
            Apply,
            vec![],
            vec![symlink("./", "/")],
            err("ERR_INVALID_ENTRY_PATH", "root"),
        ),
        c(
            "opaque marker at the root (apply)",
            Apply,
            vec![file("etc/passwd", "lower"), symlink("lib", &outside)],
            vec![file(".wh..wh..opq", ""), file("new", "n")],
            ok(&[("new", "file")]),
        ),
    ]
}

/// What an outcome looks like across implementations.
fn code(r: &Result<(), stevedore_core::Error>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => e.code(),
    }
}

fn check_ok(target: &Path, paths: &[(String, &'static str)], name: &str) {
    for (rel, kind) in paths {
        let p = target.join(rel);
        assert!(
            fs::symlink_metadata(&p).is_ok(),
            "{name}: {rel} missing in {}",
            target.display()
        );
        let d = describe(&p, false);
        assert!(d.starts_with(kind), "{name}: {rel} is {d}, expected {kind}");
    }
}

fn memfs_check(fs: &MemFs, paths: &[(String, &'static str)], name: &str) {
    for (rel, kind) in paths {
        let e = fs
            .get(rel)
            .unwrap_or_else(|| panic!("{name}: {rel} missing in MemFs"));
        let got = match e.kind {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            _ => "other",
        };
        assert_eq!(got, *kind, "{name}: {rel} in MemFs");
    }
}

struct Sentinel {
    scratch: Scratch,
    target: PathBuf,
}

impl Sentinel {
    fn new() -> Sentinel {
        let scratch = Scratch::new("breakout");
        let s = &scratch.0;
        fs::create_dir_all(s.join("outside")).unwrap();
        fs::write(s.join("outside/passwd"), "secret").unwrap();
        fs::write(s.join("outside/keep"), "keep").unwrap();
        fs::create_dir_all(s.join("outside/dir")).unwrap();
        fs::write(s.join("x"), "host x").unwrap();
        fs::create_dir_all(s.join("a/b")).unwrap();
        let target = s.join("a/b/target");
        Sentinel { scratch, target }
    }

    fn snapshot(&self) -> std::collections::BTreeMap<PathBuf, String> {
        snapshot(&self.scratch.0, &[Path::new("a/b")], true)
    }

    /// What is in a/b besides the target: must stay empty.
    fn strays(&self) -> Vec<String> {
        fs::read_dir(self.scratch.0.join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "target")
            .collect()
    }
}

fn opts(mode: WhiteoutMode) -> ApplyOptions {
    ApplyOptions {
        mode,
        ..ApplyOptions::default()
    }
}

#[test]
fn breakout_table() {
    let probe = Sentinel::new();
    let s = probe.scratch.0.display().to_string();
    drop(probe);
    let table_len = cases(&s, &s[1..]).len();
    assert!(table_len >= 20);
    let mut failures = Vec::new();
    for i in 0..table_len {
        let sentinel = Sentinel::new();
        let s = sentinel.scratch.0.display().to_string();
        let r = s[1..].to_string();
        let case = cases(&s, &r).swap_remove(i);
        let name = case.name;
        let layer = archive(case.layer);
        let lower = archive(case.lower);
        let before = sentinel.snapshot();
        let target = sentinel.target.clone();

        // 1. apply_layer: openat2, staging for overlay/oci.
        if case.mode == Apply {
            fs::create_dir(&target).unwrap();
            apply_layer(&lower[..], &target, &opts(Apply), |_| {}).unwrap();
        }
        let real = apply_layer(&layer[..], &target, &opts(case.mode), |_| {}).map(|_| ());
        match (&case.expect, &real) {
            (Expect::Err(code, names), Err(e)) => {
                if e.code() != *code || !e.to_string().contains(names.as_str()) {
                    failures.push(format!("{name}: expected {code} naming {names:?}, got {e}"));
                }
                if case.mode != Apply && target.exists() {
                    failures.push(format!("{name}: a failed staged apply left the target"));
                }
            }
            (Expect::Ok(paths), Ok(())) => check_ok(&target, paths, name),
            (_, other) => failures.push(format!("{name}: unexpected outcome {other:?}")),
        }
        assert_eq!(
            sentinel.strays(),
            Vec::<String>::new(),
            "{name}: staging left behind"
        );
        assert_eq!(
            sentinel.snapshot(),
            before,
            "{name}: something outside the target changed"
        );
        let _ = fs::remove_dir_all(&target);

        // 2. The core on a DirFs without openat2: the component-by-component walk.
        fs::create_dir(&target).unwrap();
        let mut dirfs = DirFs::open(&target).unwrap().without_openat2();
        if case.mode == Apply {
            apply_to(&lower[..], &mut dirfs, &opts(Apply), |_| {}).unwrap();
        }
        let walked = apply_to(&layer[..], &mut dirfs, &opts(case.mode), |_| {}).map(|_| ());
        if let (Expect::Ok(paths), Ok(())) = (&case.expect, &walked) {
            check_ok(&target, paths, name);
        }
        assert_eq!(
            sentinel.snapshot(),
            before,
            "{name}: (no openat2) outside changed"
        );
        drop(dirfs);
        let _ = fs::remove_dir_all(&target);

        // 3. The core on MemFs.
        let mut mem = MemFs::new();
        if case.mode == Apply {
            apply_to(&lower[..], &mut mem, &opts(Apply), |_| {}).unwrap();
        }
        let memory = apply_to(&layer[..], &mut mem, &opts(case.mode), |_| {}).map(|_| ());
        if let (Expect::Ok(paths), Ok(())) = (&case.expect, &memory) {
            memfs_check(&mem, paths, name);
        }

        let codes = [code(&real), code(&walked), code(&memory)];
        eprintln!("{name:<70} {codes:?}");
        if codes.iter().any(|c| *c != codes[0]) {
            failures.push(format!(
                "{name}: implementations disagree (openat2, walk, memfs): {codes:?}: {real:?} / {walked:?} / {memory:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{table_len} hostile archives, 3 implementations each");
}

/// Devices without privilege: skipped with a warning, in a child process running as
/// `nobody` (this test binary re-executed).
#[test]
fn devices_are_skipped_without_privilege() {
    const CHILD: &str = "STEVEDORE_BREAKOUT_UNPRIVILEGED_CHILD";
    if let Ok(dir) = std::env::var(CHILD) {
        let dir = PathBuf::from(dir);
        let layer = archive(vec![
            device("dev/null", EntryKind::CharDevice, 1, 3),
            device("dev/sda", EntryKind::BlockDevice, 8, 0),
            device("fifo", EntryKind::Fifo, 0, 0),
            with(file("owned", "x"), |h| {
                h.uid = 42;
                h.gid = 42;
            }),
            file(".wh.gone", ""),
        ]);
        let r = apply_layer(&layer[..], &dir.join("target"), &opts(Overlay), |_| {}).unwrap();
        let report: Vec<String> = r
            .skipped
            .iter()
            .map(|w| format!("{}: {}", w.path, w.message))
            .collect();
        fs::write(dir.join("report"), report.join("\n")).unwrap();
        return;
    }
    if !root_or_skip("devices_are_skipped_without_privilege (needs root to become nobody)") {
        return;
    }
    let scratch = Scratch::new("nobody");
    let dir = scratch.0.clone();
    // nobody must be able to reach and write the scratch dir.
    let status = std::process::Command::new("chown")
        .args(["65534:65534"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(&exe)
        .args([
            "--exact",
            "devices_are_skipped_without_privilege",
            "--nocapture",
        ])
        .env(CHILD, &dir)
        .uid_gid(65534)
        .output()
        .unwrap();
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        if text.contains("Permission denied") && !exe_accessible_to_nobody(&exe) {
            eprintln!("skipping: the test binary is not executable by nobody");
            return;
        }
        panic!(
            "child failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            text
        );
    }
    let report = fs::read_to_string(dir.join("report")).unwrap();
    assert!(
        report.contains("dev/null: char device 1:3 not created"),
        "{report}"
    );
    assert!(
        report.contains("dev/sda: block device 8:0 not created"),
        "{report}"
    );
    let t = dir.join("target");
    assert!(!t.join("dev/null").exists());
    assert!(describe(&t.join("fifo"), false).starts_with("fifo"));
    // A whiteout device needs no privilege (Linux 5.8+).
    assert!(describe(&t.join("gone"), false).starts_with("char 0:0"));
    let owned = describe(&t.join("owned"), false);
    assert!(owned.contains("owner=65534:65534"), "{owned}");
}

fn exe_accessible_to_nobody(exe: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    exe.ancestors().all(|p| {
        fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0 || p == exe)
            .unwrap_or(false)
    })
}

trait UidGid {
    fn uid_gid(&mut self, id: u32) -> &mut Self;
}

impl UidGid for std::process::Command {
    fn uid_gid(&mut self, id: u32) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.gid(id).uid(id)
    }
}
