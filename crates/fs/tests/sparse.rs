//! GNU sparse entries applied to real directories: archives made by GNU tar (`--sparse`, old
//! GNU and PAX 1.0 formats) extract as regular files whose content, size, mode and mtime equal
//! the files GNU tar read, in `overlay` and `apply` modes and through `flatten_layers` (the
//! staged path); the diff_id is the sha256 of the archive as stored; holes count against the
//! layer-size cap. Skips (passes with a note on stderr) when `tar` is not GNU tar.

mod common;
// The GNU tar check and command runner the core's tar tests use.
#[path = "../../core/tests/gnu_util/mod.rs"]
mod gnu_util;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use gnu_util::gnu_tar_available;
use stevedore_core::digest::{hash, Algorithm};
use stevedore_fs::{apply_layer, flatten_layers, ApplyOptions, WhiteoutMode};

fn sparse_file(path: &Path, len: u64, writes: &[(u64, Vec<u8>)]) {
    let f = fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (offset, data) in writes {
        f.write_all_at(data, *offset).unwrap();
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed | 1)
        .collect()
}

/// Sparse files (all hole, data at the end, many fragments, one in a directory) and a plain
/// one, with fixed modes and mtimes. Returns the paths relative to `root`.
fn make_tree(root: &Path) -> Vec<&'static str> {
    sparse_file(&root.join("allhole"), 1 << 20, &[]);
    sparse_file(
        &root.join("end"),
        (1 << 20) + 3,
        &[((1 << 20) - 5, pattern(8, 1))],
    );
    let many: Vec<(u64, Vec<u8>)> = (0..40u8)
        .map(|i| (u64::from(i) * 40_000 + 11, pattern(90 + usize::from(i), i)))
        .collect();
    sparse_file(&root.join("many"), 2 << 20, &many);
    fs::create_dir(root.join("d")).unwrap();
    sparse_file(&root.join("d/inner"), 300_000, &[(0, pattern(5000, 9))]);
    fs::write(root.join("plain"), b"plain\n").unwrap();
    let files = vec!["allhole", "end", "many", "d/inner", "plain"];
    for (i, f) in files.iter().enumerate() {
        let p = root.join(f);
        fs::set_permissions(&p, fs::Permissions::from_mode([0o640, 0o755, 0o600][i % 3])).unwrap();
        gnu_util::run(
            "touch",
            &[
                "-m",
                "-d",
                &format!("@{}", 1_500_000_000 + i),
                p.to_str().unwrap(),
            ],
            None,
        );
    }
    files
}

fn tar_of(src: &Path, out: &Path, format: &[&str]) -> Vec<u8> {
    let mut args = vec!["--sparse", "-cf", out.to_str().unwrap()];
    args.extend_from_slice(format);
    args.extend_from_slice(&[
        "-C",
        src.to_str().unwrap(),
        "allhole",
        "end",
        "many",
        "d",
        "plain",
    ]);
    gnu_util::run("tar", &args, None);
    fs::read(out).unwrap()
}

/// Each file under `got` has the content, size, permission bits and mtime of the one under
/// `want`.
fn assert_same_files(want: &Path, got: &Path, files: &[&str], what: &str) {
    for f in files {
        let (a, b) = (want.join(f), got.join(f));
        let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
        assert!(mb.is_file(), "{what} {f}: not a regular file");
        assert_eq!(mb.len(), ma.len(), "{what} {f}: size");
        assert_eq!(mb.mode() & 0o7777, ma.mode() & 0o7777, "{what} {f}: mode");
        assert_eq!(mb.mtime(), ma.mtime(), "{what} {f}: mtime");
        assert!(
            fs::read(&a).unwrap() == fs::read(&b).unwrap(),
            "{what} {f}: content"
        );
    }
}

/// Apply options that accept sparse entries (refused by default).
fn opts(mode: WhiteoutMode) -> ApplyOptions {
    let mut o = ApplyOptions {
        mode,
        ..ApplyOptions::default()
    };
    o.limits.tar.max_sparse_entries = 1 << 16;
    o
}

#[test]
fn gnu_sparse_archives_extract_as_the_files_on_disk() {
    if !gnu_tar_available() {
        return;
    }
    let scratch = Scratch::new("sparse");
    let src = scratch.path("src");
    fs::create_dir(&src).unwrap();
    let files = make_tree(&src);
    for (name, format) in [
        ("gnu", &["--format=gnu"][..]),
        ("pax-1.0", &["--format=pax", "--sparse-version=1.0"][..]),
    ] {
        let tar = tar_of(&src, &scratch.path(&format!("{name}.tar")), format);
        // The layer's identity is its bytes as stored, holes or not.
        let diff_id = hash(Algorithm::Sha256, &tar);
        let gz = gzip(&tar);

        let out = scratch.path(&format!("{name}-overlay"));
        let mut o = opts(WhiteoutMode::Overlay);
        o.expected_diff_id = Some(diff_id.clone());
        o.expected_digest = Some(hash(Algorithm::Sha256, &gz));
        let report = apply_layer(&gz[..], &out, &o, |_| {}).unwrap();
        assert_eq!(report.diff_id, diff_id, "{name}");
        assert_eq!(report.uncompressed_size, tar.len() as u64, "{name}");
        assert_eq!(report.entries, 6, "{name}");
        assert_same_files(&src, &out, &files, name);

        // Apply mode, onto a tree that already has one of the files (replaced).
        let root = scratch.path(&format!("{name}-apply"));
        fs::create_dir(&root).unwrap();
        fs::write(root.join("end"), b"old content").unwrap();
        let mut o = opts(WhiteoutMode::Apply);
        o.expected_diff_id = Some(diff_id.clone());
        apply_layer(&tar[..], &root, &o, |_| {}).unwrap();
        assert_same_files(&src, &root, &files, name);

        // Staged (flatten_layers): files are written in phase 1, moved in phase 2.
        let flat = scratch.path(&format!("{name}-flat"));
        fs::create_dir(&flat).unwrap();
        let reports = flatten_layers(
            vec![(&tar[..], opts(WhiteoutMode::Apply))],
            &flat,
            1,
            |_| {},
        )
        .unwrap();
        assert_eq!(reports[0].diff_id, diff_id, "{name}");
        assert_same_files(&src, &flat, &files, name);
    }
}

#[test]
fn holes_count_against_the_layer_size_cap() {
    if !gnu_tar_available() {
        return;
    }
    let scratch = Scratch::new("sparse-cap");
    let src = scratch.path("src");
    fs::create_dir(&src).unwrap();
    // Two all-hole files of 600 KiB: a few KiB of archive, 1.2 MiB once extracted.
    sparse_file(&src.join("a"), 600 << 10, &[]);
    sparse_file(&src.join("b"), 600 << 10, &[]);
    let tar_path = scratch.path("holes.tar");
    gnu_util::run(
        "tar",
        &[
            "--sparse",
            "--format=gnu",
            "-cf",
            tar_path.to_str().unwrap(),
            "-C",
            src.to_str().unwrap(),
            "a",
            "b",
        ],
        None,
    );
    let tar = fs::read(&tar_path).unwrap();
    assert!(tar.len() < 64 << 10);
    let mut o = opts(WhiteoutMode::Overlay);
    o.limits.max_uncompressed_bytes = 1 << 20;
    let out = scratch.path("out");
    let err = apply_layer(&tar[..], &out, &o, |_| {}).unwrap_err();
    assert_eq!(err.code(), "ERR_LAYER_LIMIT", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"b\"") && msg.contains("sparse files expanded"),
        "{msg}"
    );
    assert!(!out.exists(), "a failed apply leaves nothing at the target");
    // Under the cap it applies.
    o.limits.max_uncompressed_bytes = 2 << 20;
    apply_layer(&tar[..], &out, &o, |_| {}).unwrap();
    assert_eq!(fs::read(out.join("b")).unwrap(), vec![0u8; 600 << 10]);
}
