//! The tar-split recorded by `apply_and_scan_layer` against archives GNU tar makes of real
//! system directories (thousands of files, hard links, symlinks, long names, PAX and GNU
//! formats): the tar rebuilt from the tar-split and the extracted directory is the archive, byte
//! for byte; the scan then carries no content hashes. A layer whose directory cannot give the
//! archive back (GNU tar appending a path twice) has no tar-split and a hashed scan.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use common::Scratch;
use stevedore_core::layer::TarSplit;
use stevedore_fs::{apply_and_scan_layer, ApplyOptions, WhiteoutMode};

fn gnu_tar(args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("tar").args(args).output().ok()?;
    // GNU tar exits 1 when a file changed while it read it; 2 is a real failure
    if out.status.code() == Some(2) || !out.stderr.is_empty() && out.stdout.is_empty() {
        eprintln!(
            "skipping: tar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(out.stdout)
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        mode: WhiteoutMode::Overlay,
        tar_split: true,
        preserve_owner: Some(false),
        ..ApplyOptions::default()
    }
}

fn b64(s: &[u8]) -> Vec<u8> {
    stevedore_core::tar::base64_decode(s).expect("base64")
}

/// The string value of `"key":"…"` in a line of ours (escapes: `\"`, `\\`, `\u00XX`).
fn field(line: &str, key: &str) -> Option<Vec<u8>> {
    let rest = line.split(&format!("\"{key}\":\"")).nth(1)?;
    let (mut out, mut it) = (Vec::new(), rest.char_indices());
    while let Some((_, c)) = it.next() {
        match c {
            '"' => return Some(out),
            '\\' => match it.next().unwrap().1 {
                'u' => {
                    let hex: String = it.by_ref().take(4).map(|(_, c)| c).collect();
                    out.push(u8::from_str_radix(&hex, 16).unwrap());
                }
                c => out.push(c as u8),
            },
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    None
}

/// tar-split's reassembly: segments, then each named file's bytes from `dir`.
fn rebuild(gz: &[u8], dir: &Path) -> Vec<u8> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("{\"type\":2,") {
            out.extend_from_slice(&b64(&field(line, "payload").unwrap()));
            continue;
        }
        let size: u64 = line
            .split("\"size\":")
            .nth(1)
            .map_or(0, |r| r[..r.find(',').unwrap()].parse().unwrap());
        if size == 0 {
            continue;
        }
        let name = field(line, "name")
            .or_else(|| field(line, "name_raw").map(|r| b64(&r)))
            .unwrap();
        let data = fs::read(dir.join(std::ffi::OsStr::from_bytes(&name))).unwrap();
        assert_eq!(
            data.len() as u64,
            size,
            "{}",
            String::from_utf8_lossy(&name)
        );
        out.extend_from_slice(&data);
    }
    out
}

#[test]
fn gnu_tar_archives_of_system_dirs_are_rebuilt_byte_for_byte() {
    let mut checked = 0;
    for (format, dirs) in [
        ("posix", ["usr/share/perl5", "usr/share/zoneinfo"]),
        ("gnu", ["usr/lib/python3", "usr/share/doc/git"]),
    ] {
        let mut args = vec!["-C", "/", "-cf", "-", "--format", format];
        args.extend(dirs.iter().filter(|d| Path::new("/").join(d).is_dir()));
        if args.len() == 6 {
            continue;
        }
        let Some(archive) = gnu_tar(&args) else {
            continue;
        };
        let s = Scratch::new("tar-split");
        let target = s.path("diff");
        let (report, scan) =
            apply_and_scan_layer(&archive[..], &target, &opts(), |_| {}, 2).unwrap();
        let Some(TarSplit::Recorded(gz)) = &report.tar_split else {
            panic!("{format}: {:?}", report.tar_split)
        };
        let rebuilt = rebuild(gz, &target);
        assert_eq!(rebuilt.len(), archive.len(), "{format}");
        assert!(rebuilt == archive, "{format}: rebuilt tar differs");
        let files = scan
            .entries
            .iter()
            .filter(|e| e.kind == stevedore_core::layer::FileType::File)
            .count();
        assert!(files > 100, "{format}: {files} files");
        assert!(scan.entries.iter().all(|e| e.sha256.is_none()));
        eprintln!(
            "{format}: {} bytes, {files} files, tar-split {} bytes",
            archive.len(),
            gz.len()
        );
        checked += 1;
    }
    assert!(checked > 0, "no system directory to archive");
}

#[test]
fn a_path_appended_twice_has_no_tar_split_and_a_hashed_scan() {
    let s = Scratch::new("tar-split-dup");
    fs::write(s.path("f"), b"one").unwrap();
    let first = gnu_tar(&["-C", s.0.to_str().unwrap(), "-cf", "-", "f"]).unwrap();
    fs::write(s.path("f"), b"two!").unwrap();
    let second = gnu_tar(&["-C", s.0.to_str().unwrap(), "-cf", "-", "f"]).unwrap();
    // the first archive without its end marker, then the second: `f` twice
    let mut archive = first[..1024].to_vec();
    archive.extend_from_slice(&second);
    let target = s.path("diff");
    let (report, scan) = apply_and_scan_layer(&archive[..], &target, &opts(), |_| {}, 2).unwrap();
    match &report.tar_split {
        Some(TarSplit::Unusable(why)) => assert!(why.contains("appears twice"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read(target.join("f")).unwrap(), b"two!");
    let f = scan.entries.iter().find(|e| e.path == b"f").unwrap();
    assert_eq!(
        f.sha256,
        Some(stevedore_core::digest::hash(
            stevedore_core::digest::Algorithm::Sha256,
            b"two!"
        ))
    );
}
