//! `apply_and_scan_layer`: the scan of a freshly applied layer takes each regular file's hash
//! from what the engine wrote (by inode and size), so it reads no file back; and it equals a
//! `scan_tree` walk of the same tree.

mod common;

use std::fs;
use std::sync::Arc;

use common::*;
use stevedore_core::digest::{hash, Algorithm};
use stevedore_core::layer::apply_to;
use stevedore_fs::{
    apply_and_scan_layer, scan_tree, scan_tree_known, ApplyOptions, DirFs, KnownContent,
    WhiteoutMode,
};

fn layer() -> Vec<u8> {
    archive(vec![
        dir("etc/"),
        file("etc/conf", "version one, A\n"),
        file("etc/empty", ""),
        file("etc/.wh.gone", ""),
        hardlink("etc/conf-link", "etc/conf"),
        symlink("etc/to-conf", "conf"),
        file("big", &"z".repeat(3 << 20)),
        // the same path again: its second content is the file's content
        file("etc/conf", "version two, B\n"),
    ])
}

#[test]
fn the_scan_equals_a_walk_and_has_the_last_written_content() {
    let s = Scratch::new("scan-eq");
    let target = s.path("diff");
    let tar = layer();
    let opts = ApplyOptions {
        mode: WhiteoutMode::Oci,
        ..ApplyOptions::default()
    };
    let (report, scan) = apply_and_scan_layer(&tar[..], &target, &opts, |_| {}, 2).unwrap();
    assert_eq!(report.entries, 8);
    assert_eq!(scan, scan_tree(&target, 2).unwrap());
    let conf = scan.entries.iter().find(|e| e.path == b"etc/conf").unwrap();
    assert_eq!(
        conf.sha256,
        Some(hash(Algorithm::Sha256, b"version two, B\n"))
    );
}

#[test]
fn files_written_with_a_record_are_not_read_back() {
    // Apply through a DirFs that records what it writes, then change a file's bytes behind the
    // engine's back (same size, same inode): the scan with the record still reports what was
    // written, so it did not read the file; a plain scan reads the change.
    let s = Scratch::new("scan-known");
    let target = s.path("diff");
    fs::create_dir(&target).unwrap();
    let known = Arc::new(KnownContent::default());
    let mut dirfs = DirFs::open(&target)
        .unwrap()
        .recording_content(known.clone());
    let opts = ApplyOptions {
        mode: WhiteoutMode::Oci,
        ..ApplyOptions::default()
    };
    apply_to(&layer()[..], &mut dirfs, &opts, |_| {}).unwrap();
    let conf = target.join("etc/conf");
    let size = fs::metadata(&conf).unwrap().len();
    fs::write(&conf, b"tampered bytes\n").unwrap();
    assert_eq!(fs::metadata(&conf).unwrap().len(), size);
    let sha = |scan: &stevedore_fs::TreeScan, path: &[u8]| {
        scan.entries
            .iter()
            .find(|e| e.path == path)
            .unwrap()
            .sha256
            .clone()
    };
    let recorded = scan_tree_known(&target, 2, Some(&known)).unwrap();
    assert_eq!(
        sha(&recorded, b"etc/conf"),
        Some(hash(Algorithm::Sha256, b"version two, B\n"))
    );
    assert_eq!(
        sha(&recorded, b"big"),
        Some(hash(Algorithm::Sha256, "z".repeat(3 << 20).as_bytes()))
    );
    let plain = scan_tree(&target, 2).unwrap();
    assert_eq!(
        sha(&plain, b"etc/conf"),
        Some(hash(Algorithm::Sha256, b"tampered bytes\n"))
    );
    // a size change makes the record stale: the file is read
    fs::write(&conf, b"a longer tampered file\n").unwrap();
    let stale = scan_tree_known(&target, 2, Some(&known)).unwrap();
    assert_eq!(
        sha(&stale, b"etc/conf"),
        Some(hash(Algorithm::Sha256, b"a longer tampered file\n"))
    );
}
