//! The tar-split recorded while a layer is applied: that the archive is rebuilt from it and the
//! applied tree byte for byte (every header form, padding, trailing zeros), that its file
//! entries carry Go's CRC-64/ISO, and that layers whose tree cannot give the archive back are
//! reported unusable instead.

mod sparse_util;

use std::io::{Read, Write};

use stevedore_core::crc64::Crc64Iso;
use stevedore_core::layer::{apply_to, ApplyOptions, FileType, MemFs, TarSplit, WhiteoutMode};
use stevedore_core::tar::{self, EntryKind, Format, Header, Timestamp};

struct E(Header, Vec<u8>);

fn file(path: &str, content: &[u8]) -> E {
    let mut h = Header::new(EntryKind::Regular, path);
    h.size = content.len() as u64;
    h.mtime = Timestamp::new(1_000_000, 0);
    E(h, content.to_vec())
}

fn entry(kind: EntryKind, path: &str, link: &str) -> E {
    let mut h = Header::new(kind, path);
    h.link_name = link.as_bytes().to_vec();
    E(h, Vec::new())
}

fn archive(format: Format, entries: &[E]) -> Vec<u8> {
    let list: Vec<(Header, &[u8])> = entries.iter().map(|E(h, d)| (h.clone(), &d[..])).collect();
    tar::write_archive(format, &list).unwrap()
}

fn record(stream: &[u8]) -> (MemFs, TarSplit) {
    let mut fs = MemFs::new().with_privileged(true, (0, 0));
    let o = ApplyOptions {
        mode: WhiteoutMode::Overlay,
        tar_split: true,
        ..ApplyOptions::default()
    };
    let report = apply_to(stream, &mut fs, &o, |_| {}).unwrap();
    (fs, report.tar_split.expect("asked for a tar-split"))
}

/// One parsed line: (type, name, size, payload) — payload decoded, `None` for `null`.
type Line = (u8, Vec<u8>, u64, Option<Vec<u8>>);

fn lines(gz: &[u8]) -> Vec<Line> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .unwrap();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        // Our own output has a fixed field order; every line ends with its position.
        assert!(
            l.ends_with(&format!("\"position\":{i}}}")),
            "line {i} position: {l}"
        );
        let kind = if l.starts_with("{\"type\":1,") {
            1
        } else if l.starts_with("{\"type\":2,") {
            2
        } else {
            panic!("line {i}: {l}")
        };
        let name = if let Some(rest) = l.split("\"name\":\"").nth(1) {
            unescape(&rest[..rest.find("\",").unwrap()])
        } else if let Some(rest) = l.split("\"name_raw\":\"").nth(1) {
            b64(&rest[..rest.find('"').unwrap()])
        } else {
            Vec::new()
        };
        let size = l
            .split("\"size\":")
            .nth(1)
            .map_or(0, |r| r[..r.find(',').unwrap()].parse().unwrap());
        let payload = match l.split("\"payload\":").nth(1).unwrap() {
            p if p.starts_with("null") => None,
            p => Some(b64(&p[1..p[1..].find('"').unwrap() + 1])),
        };
        out.push((kind, name, size, payload));
    }
    out
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut b = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match chars.next().unwrap() {
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            c => out.push(c as u8),
        }
    }
    out
}

fn b64(s: &str) -> Vec<u8> {
    tar::base64_decode(s.as_bytes()).expect("base64")
}

fn crc(data: &[u8]) -> Vec<u8> {
    let mut c = Crc64Iso::new();
    c.update(data);
    c.to_be_bytes().to_vec()
}

/// tar-split's `asm.WriteOutputTarStream` over a [`MemFs`], checking each file's CRC.
fn rebuild(fs: &MemFs, split: &TarSplit) -> Vec<u8> {
    let TarSplit::Recorded(gz) = split else {
        panic!("unusable: {split:?}")
    };
    let mut out = Vec::new();
    for (kind, name, size, payload) in lines(gz) {
        if kind == 2 {
            out.extend_from_slice(&payload.unwrap());
            continue;
        }
        if size == 0 {
            assert_eq!(payload, None);
            continue;
        }
        let norm: Vec<u8> = name
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect::<Vec<_>>()
            .join(&b'/');
        let e = fs
            .get(&norm)
            .unwrap_or_else(|| panic!("{:?} not in the tree", String::from_utf8_lossy(&name)));
        assert_eq!(e.kind, FileType::File);
        assert_eq!(e.data.len() as u64, size);
        assert_eq!(
            payload.as_deref(),
            Some(&crc(&e.data)[..]),
            "crc of {norm:?}"
        );
        out.extend_from_slice(&e.data);
    }
    out
}

fn varied() -> Vec<E> {
    let long_dir = "d/".to_string() + &"n".repeat(120);
    let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut fifo = entry(EntryKind::Fifo, "d/fifo", "");
    fifo.0.mode = 0o600;
    let mut with_xattr = file("d/xattr", b"x");
    with_xattr
        .0
        .xattrs
        .push((b"user.k".to_vec(), b"v".to_vec()));
    vec![
        entry(EntryKind::Directory, "./", ""),
        entry(EntryKind::Directory, "d/", ""),
        file("d/empty", b""),
        file("d/one", b"1"),
        file("d/block", &[7u8; 512]),
        file("d/big", &big),
        entry(EntryKind::Directory, &format!("{long_dir}/"), ""),
        file(&format!("{long_dir}/{}", "f".repeat(150)), b"long name"),
        file("d/\u{e9}t\u{e9} \"quoted\"\\", b"utf-8 and escapes"),
        entry(EntryKind::Symlink, "d/link", &"t".repeat(200)),
        entry(EntryKind::Hardlink, "d/hard", "d/one"),
        fifo,
        with_xattr,
        file("d/.wh.gone", b""),
        file("d/.wh..wh..opq", b""),
        file("d/.wh..wh.plnk", b""),
    ]
}

#[test]
fn the_tree_and_the_tar_split_give_the_archive_back() {
    for format in [Format::Pax, Format::Gnu, Format::Ustar] {
        // GNU holds no xattrs; ustar no long link names either
        let entries: Vec<E> = varied()
            .into_iter()
            .filter(|E(h, _)| {
                format == Format::Pax
                    || (h.xattrs.is_empty()
                        && (format == Format::Gnu
                            || (h.link_name.len() < 100 && h.path.len() < 100)))
            })
            .collect();
        let mut stream = archive(format, &entries);
        let (fs, split) = record(&stream);
        assert_eq!(rebuild(&fs, &split), stream, "{format:?}");

        // Zero padding after the end marker (tar's 10 KiB records) is part of the stream.
        stream.extend_from_slice(&[0; 9000]);
        let (fs, split) = record(&stream);
        assert_eq!(rebuild(&fs, &split), stream, "{format:?} padded");

        // Without an end marker at all.
        let cut = stream.len() - 9000 - 1024;
        let (fs, split) = record(&stream[..cut]);
        assert_eq!(
            rebuild(&fs, &split),
            &stream[..cut],
            "{format:?} unterminated"
        );
    }
}

#[test]
fn gzip_input_records_the_uncompressed_tar() {
    let stream = archive(Format::Pax, &varied());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&stream).unwrap();
    let (fs, split) = record(&gz.finish().unwrap());
    assert_eq!(rebuild(&fs, &split), stream);
}

#[test]
fn file_entries_carry_gos_crc64_and_names() {
    let stream = archive(Format::Pax, &[file("a/b", b"123456789"), file("c", b"")]);
    let (_, split) = record(&stream);
    let TarSplit::Recorded(gz) = split else {
        panic!()
    };
    let files: Vec<Line> = lines(&gz).into_iter().filter(|l| l.0 == 1).collect();
    // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ISO)) = 0xb90956c775a41001
    assert_eq!(
        files,
        vec![
            (
                1,
                b"a/b".to_vec(),
                9,
                Some(0xb909_56c7_75a4_1001u64.to_be_bytes().to_vec())
            ),
            (1, b"c".to_vec(), 0, None),
        ]
    );
}

#[test]
fn non_utf8_names_are_name_raw() {
    let mut h = Header::new(EntryKind::Regular, "x");
    h.path = b"caf\xe9".to_vec();
    h.size = 3;
    let stream = archive(Format::Pax, &[E(h, b"abc".to_vec())]);
    let (fs, split) = record(&stream);
    let TarSplit::Recorded(gz) = &split else {
        panic!()
    };
    let text = {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    assert!(text.contains("\"name_raw\":\"Y2Fm6Q==\""), "{text}");
    assert_eq!(rebuild(&fs, &split), stream);
}

fn unusable(entries: &[E]) -> String {
    match record(&archive(Format::Pax, entries)).1 {
        TarSplit::Unusable(why) => why,
        TarSplit::Recorded(_) => panic!("recorded"),
    }
}

#[test]
fn layers_the_tree_cannot_give_back_are_unusable() {
    let why = unusable(&[file("a", b"one"), file("a", b"two")]);
    assert!(why.contains("\"a\" appears twice"), "{why}");
    let why = unusable(&[file("d/a", b"one"), file("d/.wh.a", b"")]);
    assert!(why.contains("whites out a file of the same layer"), "{why}");
    let why = unusable(&[file("d/x/a", b"one"), file("d/.wh.x", b"")]);
    assert!(why.contains("whites out files of the same layer"), "{why}");
    let why = unusable(&[
        file("d/a", b"one"),
        entry(EntryKind::Symlink, "d", "elsewhere"),
    ]);
    assert!(why.contains("replaces a directory"), "{why}");
    let why = unusable(&[
        entry(EntryKind::Symlink, "l", "x"),
        entry(EntryKind::Symlink, "l", "y"),
    ]);
    assert!(why.contains("appears twice"), "{why}");
}

#[test]
fn what_the_tree_keeps_apart_is_still_recorded() {
    // A directory given twice merges; an opaque marker after the dir's own files keeps them; a
    // whiteout of a name the layer never wrote; a file over a whiteout's own path is impossible in
    // one layer, so not tested.
    let entries = [
        entry(EntryKind::Directory, "d/", ""),
        file("d/a", b"kept"),
        entry(EntryKind::Directory, "d/", ""),
        file("d/.wh..wh..opq", b""),
        file("d/.wh.lower", b""),
        entry(EntryKind::Hardlink, "d/b", "d/a"),
    ];
    let stream = archive(Format::Pax, &entries);
    let (fs, split) = record(&stream);
    assert_eq!(rebuild(&fs, &split), stream);
}

#[test]
fn nothing_is_recorded_unless_asked() {
    let stream = archive(Format::Pax, &varied());
    let mut fs = MemFs::new().with_privileged(true, (0, 0));
    let report = apply_to(&stream[..], &mut fs, &ApplyOptions::default(), |_| {}).unwrap();
    assert_eq!(report.tar_split, None);
}

#[test]
fn a_sparse_file_makes_it_unusable() {
    // The archive stores fragments; the tree holds the expanded file: not the same bytes.
    for (name, real, map) in sparse_util::sample_maps() {
        let stored = sparse_util::stored_for(&map);
        let mut stream = sparse_util::regular("before", b"plain");
        stream.extend_from_slice(&sparse_util::pax10(name, real, &map, &stored));
        sparse_util::end(&mut stream);
        let mut fs = MemFs::new().with_privileged(true, (0, 0));
        let mut o = ApplyOptions {
            tar_split: true,
            ..ApplyOptions::default()
        };
        o.limits.tar = sparse_util::sparse_limits();
        let report = apply_to(&stream[..], &mut fs, &o, |_| {}).unwrap();
        match report.tar_split {
            Some(TarSplit::Unusable(why)) => assert!(why.contains("sparse"), "{why}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}
