//! GNU sparse files: old GNU (`S`), PAX 0.0, 0.1 and 1.0.
//!
//! * GNU tar writes, we read: sparse files made on disk (all hole, data at the start or the
//!   very end, many small fragments so the old GNU map needs extension blocks, a nested one, a
//!   logical size past 8 GiB when the filesystem has holes) archived by `tar --sparse` in the
//!   four formats. Our reader must report each as a regular file whose name, size, mode,
//!   owner, mtime and whole logical content equal the file on disk, whatever the chunking,
//!   and agree with GNU tar's own listing on names and sizes.
//! * Hand-built archives of every format with maps GNU tar would not write (adjacent and empty
//!   fragments), read the same in every chunking.
//! * Hostile maps: overlapping, out of order, past the real size, too many entries, numbers
//!   that do not parse, sums that do not match the stored data, truncated extension blocks and
//!   maps, contradictory records. Each is a clear error naming the entry and an offset, never a
//!   panic, and the same error whatever the chunking.
//!
//! The GNU tar tests skip (pass with a note on stderr) when `tar` is not GNU tar.

mod gnu_util;
mod sparse_util;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use gnu_util::{gnu_tar_available, run, TempDir};
use sparse_util::*;
use stevedore_core::tar::{self, read_archive, EntryKind, Event, Header, Limits, TarReader};
use stevedore_core::Error;

// ---------------------------------------------------------------------------------------------
// Reading with checks

/// Reads `archive` in chunks of `chunk` bytes, checking the event contract, and calls `on_data`
/// with the current header, the logical offset and each data slice. Returns the headers.
fn scan(
    archive: &[u8],
    chunk: usize,
    limits: Limits,
    mut on_data: impl FnMut(&Header, u64, &[u8]),
) -> Result<Vec<Header>, Error> {
    let mut reader = TarReader::new(limits);
    let mut headers: Vec<Header> = Vec::new();
    let mut pos = 0u64;
    let mut in_entry = false;
    'outer: for piece in archive.chunks(chunk.max(1)) {
        let mut input = piece;
        loop {
            let before = input;
            let (used, event) = reader.next_event(input)?;
            input = &input[used..];
            match event {
                Event::NeedMore => {
                    assert!(input.is_empty(), "NeedMore must consume everything");
                    break;
                }
                Event::Entry(h) => {
                    assert!(!in_entry, "Entry inside an entry");
                    headers.push(h.clone());
                    pos = 0;
                    in_entry = true;
                }
                Event::Data(d) => {
                    assert!(in_entry && !d.is_empty());
                    if tar::is_hole(d) {
                        assert_eq!(used, 0, "a hole consumes no input");
                        // Zero by construction (a static buffer); scanning every byte of a
                        // 9 GiB hole would only slow the test down.
                        assert!(d[0] == 0 && d[d.len() - 1] == 0);
                    } else {
                        assert!(before.as_ptr_range().contains(&d.as_ptr()));
                    }
                    let h = headers.last().unwrap();
                    on_data(h, pos, d);
                    pos += d.len() as u64;
                    assert!(pos <= h.size, "more data than the header's size");
                }
                Event::EntryEnd => {
                    assert!(in_entry);
                    assert_eq!(pos, headers.last().unwrap().size, "data shorter than size");
                    in_entry = false;
                }
                Event::End => break 'outer,
            }
        }
    }
    reader.finish()?;
    assert!(!in_entry);
    Ok(headers)
}

/// Every entry with its whole data, read in chunks of `chunk` bytes.
fn read_chunked(archive: &[u8], chunk: usize) -> Result<Vec<(Header, Vec<u8>)>, Error> {
    let mut data: Vec<Vec<u8>> = Vec::new();
    let mut seen = 0usize;
    let headers = scan(archive, chunk, sparse_limits(), |_, pos, d| {
        if pos == 0 {
            data.push(Vec::new());
        }
        data.last_mut().unwrap().extend_from_slice(d);
    })?;
    let mut out = Vec::new();
    for h in headers {
        let d = if h.size > 0 {
            seen += 1;
            std::mem::take(&mut data[seen - 1])
        } else {
            Vec::new()
        };
        out.push((h, d));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Hand-built archives

type Builder = fn(&str, u64, &Map, &[u8]) -> Vec<u8>;

/// PAX records as `(key, value)`.
type Records = Vec<(&'static str, String)>;

const FORMATS: [(&str, Builder); 4] = [
    ("old GNU", old_gnu),
    ("PAX 0.0", pax00),
    ("PAX 0.1", pax01),
    ("PAX 1.0", pax10),
];

#[test]
fn hand_built_sparse_entries_read_as_their_logical_content() {
    for (format, build) in FORMATS {
        let mut archive = regular("before", b"first\n");
        let mut want = vec![("before".to_string(), b"first\n".to_vec(), false)];
        for (name, real, map) in sample_maps() {
            let stored = stored_for(&map);
            archive.extend_from_slice(&build(name, real, &map, &stored));
            want.push((name.to_string(), logical(&map, &stored, real), true));
        }
        archive.extend_from_slice(&regular("after", b"last\n"));
        want.push(("after".to_string(), b"last\n".to_vec(), false));
        end(&mut archive);

        let whole =
            read_archive(&archive, sparse_limits()).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(whole.len(), want.len(), "{format}");
        for ((h, data), (name, content, sparse)) in whole.iter().zip(&want) {
            let shown = String::from_utf8_lossy(&h.path);
            assert_eq!(&shown, name, "{format}");
            assert_eq!(h.kind, EntryKind::Regular, "{format} {name}");
            assert_eq!(h.sparse, *sparse, "{format} {name}");
            assert_eq!(h.size, content.len() as u64, "{format} {name}");
            assert!(data == content, "{format} {name}: content differs");
            assert_eq!(h.mode, 0o640, "{format} {name}");
            assert_eq!((h.uid, h.gid), (0o1750, 0o1751), "{format} {name}");
            assert_eq!(h.mtime.secs, MTIME, "{format} {name}");
        }
        for chunk in [1, 7, 511, 512, 513, 4096, 65536] {
            let got = read_chunked(&archive, chunk).unwrap();
            assert_eq!(got, whole, "{format}, chunks of {chunk}");
        }
    }
}

#[test]
fn old_gnu_maps_fill_the_header_then_blocks_of_21() {
    // 4 in the header, then 21 per block: 4, 5, 25, 26, 46 and 47 entries cross each edge.
    for n in [3u64, 4, 5, 25, 26, 46, 47] {
        let map: Vec<(u64, u64)> = (0..n).map(|i| (i * 10, 4)).collect();
        let stored = stored_for(&map);
        let real = n * 10 + 3;
        let archive = old_gnu("f", real, &map, &stored);
        let blocks = 1 + (n.saturating_sub(4) + 20) / 21 + (stored.len() as u64 + 511) / 512;
        assert_eq!(archive.len() as u64, blocks * 512, "{n}");
        let got = read_archive(&archive, sparse_limits()).unwrap();
        assert_eq!(got[0].1, logical(&map, &stored, real), "{n}");
    }
}

#[test]
fn sizes_past_8_gib_use_base_256_in_old_gnu_maps() {
    let real = (9u64 << 30) + 12_345;
    let map = [(5u64 << 30, 6u64), (real - 5, 5)];
    let stored = b"middlefinal".to_vec();
    for (format, build) in FORMATS {
        let archive = build("huge", real, &map, &stored);
        let mut got = Vec::new();
        let headers = scan(&archive, 4096, sparse_limits(), |_, pos, d| {
            if !tar::is_hole(d) {
                got.push((pos, d.to_vec()));
            }
        })
        .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(headers[0].size, real, "{format}");
        assert_eq!(
            got,
            vec![(5 << 30, b"middle".to_vec()), (real - 5, b"final".to_vec())],
            "{format}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile archives

/// Reads `archive` whole and in small chunks: both must fail with the same error, of `code`,
/// naming `entry` and mentioning each of `texts`.
fn assert_refused(archive: &[u8], code: &str, entry: &str, texts: &[&str]) -> Error {
    assert_refused_with(archive, sparse_limits(), code, entry, texts)
}

fn assert_refused_with(
    archive: &[u8],
    limits: Limits,
    code: &str,
    entry: &str,
    texts: &[&str],
) -> Error {
    let err = read_archive(archive, limits).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.code(), code, "{msg}");
    assert!(msg.contains(&format!("entry \"{entry}\"")), "{msg}");
    assert!(msg.contains("offset "), "{msg}");
    for t in texts {
        assert!(msg.contains(t), "{msg:?} lacks {t:?}");
    }
    for chunk in [1, 5, 512, 1000] {
        let chunked = scan(archive, chunk, limits, |_, _, _| {}).unwrap_err();
        assert_eq!(chunked, err, "chunks of {chunk}");
    }
    err
}

fn with_end(mut archive: Vec<u8>) -> Vec<u8> {
    end(&mut archive);
    archive
}

#[test]
fn overlapping_and_unordered_maps_are_refused() {
    let overlapping: &Map = &[(0, 100), (50, 100)];
    let unordered: &Map = &[(500, 10), (100, 10)];
    for (format, build) in FORMATS {
        for map in [overlapping, unordered] {
            let stored = stored_for(map);
            let archive = with_end(build("bad", 1000, map, &stored));
            let err = assert_refused(
                &archive,
                "ERR_TAR_MALFORMED",
                "bad",
                &["sparse map entry 1"],
            );
            assert!(err.to_string().contains("not overlap"), "{format}: {err}");
        }
    }
}

#[test]
fn maps_past_the_real_size_are_refused() {
    for (_, build) in FORMATS {
        for map in [
            &[(0u64, 10u64), (995, 10)][..],
            &[(2000, 0)],
            &[(u64::MAX - 1, 5)],
        ] {
            let stored = stored_for(map);
            let archive = with_end(build("past", 1000, map, &stored));
            assert_refused(
                &archive,
                "ERR_TAR_MALFORMED",
                "past",
                &["past the real size 1000"],
            );
        }
    }
}

#[test]
fn sums_that_do_not_match_the_stored_data_are_refused() {
    let map: &Map = &[(0, 100), (500, 100)];
    for (_, build) in FORMATS {
        for stored_len in [150usize, 250] {
            let stored = vec![b'x'; stored_len];
            let archive = with_end(build("sum", 1000, map, &stored));
            assert_refused(
                &archive,
                "ERR_TAR_MALFORMED",
                "sum",
                &["add up to 200 bytes", &format!("stores {stored_len}")],
            );
        }
    }
}

#[test]
fn too_many_map_entries_are_refused_before_they_are_kept() {
    let limits = Limits {
        max_sparse_entries: 10,
        ..Limits::default()
    };
    let map: Vec<(u64, u64)> = (0..30).map(|i| (i * 10, 1)).collect();
    let stored = stored_for(&map);
    for (format, build) in FORMATS {
        let archive = with_end(build("many", 400, &map, &stored));
        let text = "sparse map entries exceed the limit of 10";
        let err = if format.starts_with("PAX 0") {
            // Refused while the PAX records are parsed, before the entry's name is known.
            let err = read_archive(&archive, limits).unwrap_err();
            assert!(err.to_string().contains(text), "{err}");
            assert_eq!(scan(&archive, 7, limits, |_, _, _| {}).unwrap_err(), err);
            err
        } else {
            assert_refused_with(&archive, limits, "ERR_TAR_LIMIT", "many", &[text])
        };
        assert_eq!(err.code(), "ERR_TAR_LIMIT");
        // The same archive is fine under the default limit.
        assert!(read_archive(&archive, sparse_limits()).is_ok(), "{err}");
    }
    // A 1.0 map announcing a billion entries fails on its first line, before any allocation.
    let archive = with_end(pax10_with("huge-map", 10, b"1000000000\n", b"", &[]));
    assert_refused(
        &archive,
        "ERR_TAR_LIMIT",
        "huge-map",
        &["1000000000 sparse map entries exceed the limit of 65536"],
    );
    // A PAX 0.1 map that long is refused while its record is parsed.
    let long: Vec<String> = (0..70_000).map(|i| format!("{},1", i * 2)).collect();
    let records = pax_records(&[
        ("GNU.sparse.size", "140000".into()),
        ("GNU.sparse.numblocks", "70000".into()),
        ("GNU.sparse.map", long.join(",")),
    ]);
    let mut archive = pax0_with("long-map", &records, &[]);
    end(&mut archive);
    let err = read_archive(&archive, sparse_limits()).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_LIMIT", "{err}");
}

#[test]
fn truncated_extension_blocks_and_maps_are_reported() {
    let map: Vec<(u64, u64)> = (0..30).map(|i| (i * 10, 2)).collect();
    let stored = stored_for(&map);
    let archive = old_gnu("ext", 400, &map, &stored);
    // The header, then 100 bytes of the first extension block.
    let err = read_archive(&archive[..612], sparse_limits()).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_TRUNCATED");
    assert_eq!(
        err.to_string(),
        "tar: entry \"ext\" at offset 0: archive truncated after 612 bytes: sparse extension \
         block has 100 of 512 bytes"
    );
    // All extension blocks but no data.
    let err = read_archive(&archive[..1536], sparse_limits()).unwrap_err();
    assert!(
        err.to_string().contains("missing 60 of 60 stored bytes"),
        "{err}"
    );

    let archive = pax10("map", 400, &map, &stored);
    let header_at = archive.len() - 512 - 512 - 512; // PAX header, ustar header, map, data
    let map_at = header_at + 512;
    let err = read_archive(&archive[..map_at + 20], sparse_limits()).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_TRUNCATED");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("entry \"map\" at offset {header_at}"))
            && msg.contains("sparse map is incomplete after 20 bytes"),
        "{msg}"
    );
}

#[test]
fn bad_numbers_are_refused() {
    // Old GNU descriptors.
    let map: &Map = &[(0, 10)];
    let stored = stored_for(map);
    let bad_offset = with_end(old_gnu_with("n", 100, map, &stored, |b| {
        b[386..398].copy_from_slice(b"0000000001x\0")
    }));
    assert_refused(&bad_offset, "ERR_TAR_BAD_NUMBER", "n", &["sparse offset"]);
    let bad_real = with_end(old_gnu_with("n", 100, map, &stored, |b| {
        b[483..495].copy_from_slice(b"zzzzzzzzzzz\0")
    }));
    assert_refused(&bad_real, "ERR_TAR_BAD_NUMBER", "n", &["realsize"]);
    let negative = with_end(old_gnu_with("n", 100, map, &stored, |b| {
        b[398..410].copy_from_slice(&[0xff; 12])
    }));
    assert_refused(&negative, "ERR_TAR_OVERFLOW", "n", &["sparse numbytes"]);
    // PAX 0.x records.
    for (key, value, code) in [
        ("GNU.sparse.map", "0,1x", "ERR_TAR_BAD_NUMBER"),
        ("GNU.sparse.map", "0,-1", "ERR_TAR_BAD_NUMBER"),
        ("GNU.sparse.map", "0, 1", "ERR_TAR_BAD_NUMBER"),
        (
            "GNU.sparse.map",
            "0,99999999999999999999",
            "ERR_TAR_OVERFLOW",
        ),
        ("GNU.sparse.size", "1e3", "ERR_TAR_BAD_NUMBER"),
        ("GNU.sparse.numblocks", "", "ERR_TAR_BAD_NUMBER"),
    ] {
        let mut records = vec![
            ("GNU.sparse.size", "100".to_string()),
            ("GNU.sparse.numblocks", "1".to_string()),
            ("GNU.sparse.map", "0,1".to_string()),
        ];
        records.retain(|(k, _)| *k != key);
        records.push((key, value.to_string()));
        let mut archive = pax0_with("n", &pax_records(&records), b"x");
        end(&mut archive);
        let err = read_archive(&archive, sparse_limits()).unwrap_err();
        assert_eq!(err.code(), code, "{key}={value}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }
    // PAX 1.0 map lines.
    for (text, code, what) in [
        (
            &b"1\n0\n1x\n"[..],
            "ERR_TAR_BAD_NUMBER",
            "\"x\" where a digit",
        ),
        (b"1\n-0\n1\n", "ERR_TAR_BAD_NUMBER", "\"-\" where a digit"),
        (
            b"1\n0\n\n1\n",
            "ERR_TAR_BAD_NUMBER",
            "or a newline after one",
        ),
        (b"1\n 0\n1\n", "ERR_TAR_BAD_NUMBER", "\" \" where a digit"),
        (
            b"1\n000000000000000000000\n1\n",
            "ERR_TAR_OVERFLOW",
            "more than 20 digits",
        ),
        (
            b"1\n99999999999999999999\n1\n",
            "ERR_TAR_OVERFLOW",
            "number 99999999999999999999",
        ),
    ] {
        let archive = with_end(pax10_with("m", 100, text, b"x", &[]));
        assert_refused(&archive, code, "m", &[what]);
    }
}

#[test]
fn pax_1_0_maps_must_fit_the_data_and_be_zero_padded() {
    // Padding after the map that is not zero.
    let mut text = map_text(&[(0, 1)]);
    text.resize(512, 0);
    text[300] = b'!';
    let archive = with_end(pax10_with("pad", 10, &text, b"x", &[]));
    assert_refused(
        &archive,
        "ERR_TAR_MALFORMED",
        "pad",
        &["padding after the sparse map"],
    );
    // A map longer than the entry's stored data: the size field says 512, the map needs more.
    let map: Vec<(u64, u64)> = (0..100).map(|i| (i * 10, 0)).collect();
    let mut archive = pax10_with("short", 1000, &map_text(&map), b"", &[]);
    assert!(map_text(&map).len() > 512);
    let fake = b"./GNUSparseFile.1/short";
    let header_at = archive.windows(fake.len()).position(|w| w == fake).unwrap();
    let head = header(b"./GNUSparseFile.1/short", b'0', 512, false, |_| {});
    archive[header_at..header_at + 512].copy_from_slice(&head);
    archive.truncate(header_at + 1024);
    end(&mut archive);
    assert_refused(
        &archive,
        "ERR_TAR_MALFORMED",
        "short",
        &["sparse map does not end within the entry's 512 stored bytes"],
    );
}

#[test]
fn old_gnu_descriptors_readers_could_disagree_on_are_refused() {
    let map: &Map = &[(0, 10), (20, 10)];
    let stored = stored_for(map);
    // Offset set, numbytes empty: Go takes the descriptor, GNU tar stops.
    let half = with_end(old_gnu_with("half", 100, map, &stored, |b| {
        b[422..434].fill(0)
    }));
    assert_refused(
        &half,
        "ERR_TAR_MALFORMED",
        "half",
        &["descriptor 1 is half empty"],
    );
    // A descriptor after an empty one.
    let after = with_end(old_gnu_with("after", 100, map, &stored, |b| {
        let second: [u8; 24] = b[410..434].try_into().unwrap();
        b[410..434].fill(0);
        b[434..458].copy_from_slice(&second);
    }));
    assert_refused(
        &after,
        "ERR_TAR_MALFORMED",
        "after",
        &["follows the empty descriptor 1"],
    );
    // An empty descriptor with isextended set: GNU tar stops, Go reads another block.
    let mut extended = old_gnu_with("ext", 100, map, &stored, |b| b[482] = 1);
    extended.splice(512..512, [0u8; 512]);
    let extended = with_end(extended);
    assert_refused(
        &extended,
        "ERR_TAR_MALFORMED",
        "ext",
        &["isextended is set"],
    );
    // Star's sparse header uses typeflag S with another layout: POSIX magic is not read.
    let mut star = header(b"star", b'S', 0, false, |_| {}).to_vec();
    end(&mut star);
    assert_refused(&star, "ERR_TAR_UNSUPPORTED", "star", &["GNU magic"]);
}

#[test]
fn contradictory_or_incomplete_pax_records_are_refused() {
    let base = [
        ("GNU.sparse.size", "100".to_string()),
        ("GNU.sparse.numblocks", "1".to_string()),
    ];
    // No numblocks (Go requires it for 0.x).
    let records = pax_records(&[
        ("GNU.sparse.size", "100".into()),
        ("GNU.sparse.map", "0,1".into()),
    ]);
    let archive = with_end(pax0_with("p", &records, b"x"));
    assert_refused(
        &archive,
        "ERR_TAR_MALFORMED",
        "p",
        &["no GNU.sparse.numblocks"],
    );
    // Records added to `base`, the error and a text of its message.
    type Case = (Records, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("GNU.sparse.map", "0,1".into()),
                ("GNU.sparse.offset", "0".into()),
                ("GNU.sparse.numbytes", "1".into()),
            ],
            "ERR_TAR_MALFORMED",
            "both GNU.sparse.map and GNU.sparse.offset",
        ),
        (
            vec![("GNU.sparse.offset", "0".into())],
            "ERR_TAR_MALFORMED",
            "offset without its length",
        ),
        (
            vec![("GNU.sparse.map", "0,1,5,1".into())],
            "ERR_TAR_MALFORMED",
            "numblocks is 1 but the map has 2 entries",
        ),
        (
            vec![
                ("GNU.sparse.major", "2".into()),
                ("GNU.sparse.minor", "0".into()),
                ("GNU.sparse.map", "0,1".into()),
            ],
            "ERR_TAR_UNSUPPORTED",
            "GNU sparse format 2.0",
        ),
        (
            vec![
                ("GNU.sparse.major", "1".into()),
                ("GNU.sparse.map", "0,1".into()),
            ],
            "ERR_TAR_MALFORMED",
            "must come together",
        ),
        (
            vec![
                ("GNU.sparse.realsize", "99".into()),
                ("GNU.sparse.map", "0,1".into()),
            ],
            "ERR_TAR_MALFORMED",
            "disagree",
        ),
        (vec![], "ERR_TAR_MALFORMED", "without a sparse map"),
        (
            vec![
                ("GNU.sparse.map", "0,1".into()),
                ("GNU.sparse.size", "9223372036854775808".into()),
            ],
            "ERR_TAR_OVERFLOW",
            "realsize",
        ),
    ];
    for (extra, code, text) in cases {
        let mut records: Records = base.to_vec();
        records.extend(extra);
        let archive = with_end(pax0_with("p", &pax_records(&records), b"x"));
        assert_refused(&archive, code, "p", &[text]);
    }
    // 1.0 with map records as well.
    let archive = with_end(pax10_with(
        "one",
        10,
        &map_text(&[(0, 1)]),
        b"x",
        &[("GNU.sparse.map", "0,1".into())],
    ));
    assert_refused(
        &archive,
        "ERR_TAR_MALFORMED",
        "one",
        &["keeps its map in the data"],
    );
    // Sparse records on a directory, and with typeflag S.
    let records = pax_records(&[
        ("GNU.sparse.size", "0".into()),
        ("GNU.sparse.map", "".into()),
    ]);
    let mut archive = pax_header(&records);
    archive.extend_from_slice(&header(b"d/", b'5', 0, false, |_| {}));
    end(&mut archive);
    assert_refused(
        &archive,
        "ERR_TAR_MALFORMED",
        "d/",
        &["directory entry has PAX GNU.sparse"],
    );
    let mut archive = pax_header(&records);
    archive.extend_from_slice(&old_gnu("s", 0, &[], b""));
    end(&mut archive);
    assert_refused(
        &archive,
        "ERR_TAR_MALFORMED",
        "s",
        &["also has PAX GNU.sparse"],
    );
    // In a global header.
    let mut archive = header(b"g", b'g', records.len() as u64, false, |_| {}).to_vec();
    push_padded(&mut archive, &records);
    archive.extend_from_slice(&regular("f", b""));
    end(&mut archive);
    let err = read_archive(&archive, sparse_limits()).unwrap_err();
    assert!(err.to_string().contains("global PAX header"), "{err}");
}

#[test]
fn a_sparse_file_at_the_end_of_an_archive_without_end_marker_is_complete() {
    // Holes come without input: a reader driven until NeedMore still delivers them after the
    // archive's last byte, and finish() accepts the archive.
    for (format, build) in FORMATS {
        let map: &Map = &[(100, 5), (3000, 0)];
        let stored = stored_for(map);
        let archive = build("last", 3000, map, &stored);
        for chunk in [1, 512, 100_000] {
            let got = read_chunked(&archive, chunk).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(got[0].1, logical(map, &stored, 3000), "{format}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GNU tar writes, we read

extern "C" {
    fn lseek(fd: i32, offset: i64, whence: i32) -> i64;
}
const SEEK_DATA: i32 = 3;
const SEEK_HOLE: i32 = 4;

/// Checks the data a reader reports against a file on disk, by ranges: stored data is read
/// back with `pread`; a hole is checked with `SEEK_DATA`/`SEEK_HOLE`, reading only what the
/// filesystem has as data inside it. So a 9 GiB file costs a few system calls per region.
struct DiskFile {
    file: fs::File,
    /// No data on disk before this offset (from the last `SEEK_DATA`).
    hole_until: u64,
}

impl DiskFile {
    fn open(path: &Path) -> DiskFile {
        DiskFile {
            file: fs::File::open(path).unwrap(),
            hole_until: 0,
        }
    }

    fn check(&mut self, pos: u64, data: &[u8], what: &str) {
        let end = pos + data.len() as u64;
        if !tar::is_hole(data) {
            let mut disk = vec![0u8; data.len()];
            self.file.read_exact_at(&mut disk, pos).unwrap();
            assert!(disk == data, "{what}: data at {pos}..{end} differs");
            return;
        }
        let mut at = pos;
        while at < end {
            if at < self.hole_until {
                at = self.hole_until.min(end);
                continue;
            }
            // SAFETY: a valid fd; lseek has no memory effects.
            let data_at = unsafe { lseek(self.file.as_raw_fd(), at as i64, SEEK_DATA) };
            if data_at < 0 {
                // ENXIO: no data after `at`.
                self.hole_until = u64::MAX;
                return;
            }
            let data_at = data_at as u64;
            if data_at >= end {
                self.hole_until = data_at;
                return;
            }
            // SAFETY: as above.
            let hole_at = unsafe { lseek(self.file.as_raw_fd(), data_at as i64, SEEK_HOLE) };
            let stop = (hole_at as u64).min(end);
            let mut disk = vec![0u8; (stop - data_at) as usize];
            self.file.read_exact_at(&mut disk, data_at).unwrap();
            assert!(
                disk.iter().all(|&b| b == 0),
                "{what}: we report a hole at {data_at}..{stop}, the file has data"
            );
            at = stop;
        }
    }
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
}

fn sparse_file(path: &Path, len: u64, writes: &[(u64, &[u8])]) {
    let f = fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    drop(f);
    for (offset, data) in writes {
        write_at(path, *offset, data);
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i + seed).wrapping_mul(2_654_435_761) >> 7) as u8 | 1)
        .collect()
}

/// The files archived, with whether GNU tar is expected to store them sparse.
fn build_sparse_tree(root: &Path) -> Vec<(&'static str, bool)> {
    let mut files = Vec::new();
    sparse_file(&root.join("allhole"), 3 << 20, &[]);
    files.push(("allhole", true));
    let tail = pattern(8, 1);
    sparse_file(
        &root.join("data-at-end"),
        1 << 20,
        &[((1 << 20) - 8, &tail)],
    );
    files.push(("data-at-end", true));
    let head = pattern(5000, 2);
    sparse_file(&root.join("data-at-start"), 2 << 20, &[(0, &head)]);
    files.push(("data-at-start", true));
    // 60 fragments: the old GNU map needs three extension blocks.
    let chunks: Vec<Vec<u8>> = (0..60).map(|i| pattern(100 + i, i as u64)).collect();
    let writes: Vec<(u64, &[u8])> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (i as u64 * 65536 + 123, &c[..]))
        .collect();
    sparse_file(&root.join("many-chunks"), 4 << 20, &writes);
    files.push(("many-chunks", true));
    fs::write(root.join("plain.txt"), b"no holes here\n").unwrap();
    files.push(("plain.txt", false));
    fs::create_dir(root.join("dir")).unwrap();
    files.push(("dir", false));
    let mid = pattern(3000, 3);
    sparse_file(&root.join("dir/nested"), 200_000, &[(100_000, &mid)]);
    files.push(("dir/nested", true));
    // Past 8 GiB (base-256 numbers in old GNU maps) only where holes are free.
    let huge = root.join("huge");
    let size = (9u64 << 30) + 12_345;
    sparse_file(&huge, size, &[(5 << 30, b"middle"), (size - 5, b"tail!")]);
    if fs::metadata(&huge).unwrap().blocks() < 1024 {
        files.push(("huge", true));
    } else {
        eprintln!("no holes on this filesystem: skipping the 9 GiB file");
        fs::remove_file(&huge).unwrap();
    }
    for (i, (name, _)) in files.iter().enumerate() {
        let p = root.join(name);
        let mode = if *name == "dir" {
            "750"
        } else {
            ["640", "600", "755"][i % 3]
        };
        run("chmod", &[mode, p.to_str().unwrap()], None);
        let stamp = format!("@{}", 1_600_000_000 + i as i64 * 1000);
        run("touch", &["-m", "-d", &stamp, p.to_str().unwrap()], None);
    }
    files
}

const FLAVORS: [(&str, &[&str]); 4] = [
    ("gnu", &["--format=gnu"]),
    ("pax-0.0", &["--format=pax", "--sparse-version=0.0"]),
    ("pax-0.1", &["--format=pax", "--sparse-version=0.1"]),
    ("pax-1.0", &["--format=pax", "--sparse-version=1.0"]),
];

/// `(name, size)` of each entry as `tar -tv` lists it.
fn gnu_listing(archive: &Path) -> Vec<(String, u64)> {
    let out = run(
        "tar",
        &[
            "--numeric-owner",
            "--quoting-style=escape",
            "-tvf",
            archive.to_str().unwrap(),
        ],
        None,
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // mode owner size date time name
            (fields[5..].join(" "), fields[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn gnu_tar_sparse_archives_read_as_the_files_on_disk() {
    if !gnu_tar_available() {
        return;
    }
    let tmp = TempDir::new("gnu");
    let src = tmp.0.join("src");
    fs::create_dir(&src).unwrap();
    let files = build_sparse_tree(&src);
    let names: Vec<&str> = files
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "dir/nested")
        .collect();
    for (flavor, args) in FLAVORS {
        let archive_path = tmp.0.join(format!("{flavor}.tar"));
        let mut cmd: Vec<&str> = vec!["--sparse", "-cf", archive_path.to_str().unwrap()];
        cmd.extend_from_slice(args);
        cmd.extend_from_slice(&["-C", src.to_str().unwrap()]);
        cmd.extend_from_slice(&names);
        run("tar", &cmd, None);
        let archive = fs::read(&archive_path).unwrap();
        let listing = gnu_listing(&archive_path);

        let mut baseline: Option<Vec<Header>> = None;
        for chunk in [archive.len(), 512, 4099] {
            let mut disk: Option<(String, DiskFile)> = None;
            let headers = scan(&archive, chunk, sparse_limits(), |h, pos, d| {
                let name = String::from_utf8_lossy(&h.path).into_owned();
                if disk.as_ref().map(|(n, _)| n != &name).unwrap_or(true) {
                    disk = Some((name.clone(), DiskFile::open(&src.join(&name))));
                }
                let what = format!("{flavor} {name}");
                disk.as_mut().unwrap().1.check(pos, d, &what);
            })
            .unwrap_or_else(|e| panic!("{flavor}: {e}"));
            let ours: Vec<(String, u64)> = headers
                .iter()
                .map(|h| {
                    let name = String::from_utf8_lossy(&h.path).into_owned();
                    (name.trim_end_matches('/').to_string(), h.size)
                })
                .collect();
            let theirs: Vec<(String, u64)> = listing
                .iter()
                .map(|(n, s)| (n.trim_end_matches('/').to_string(), *s))
                .collect();
            assert_eq!(ours, theirs, "{flavor}: our listing vs GNU tar's");
            assert_eq!(headers.len(), files.len(), "{flavor}");
            for h in &headers {
                let name = String::from_utf8_lossy(&h.path)
                    .trim_end_matches('/')
                    .to_string();
                let (_, sparse) = files.iter().find(|(n, _)| *n == name).unwrap();
                let st = fs::metadata(src.join(&name)).unwrap();
                let what = format!("{flavor} {name}");
                assert_eq!(h.mode & 0o7777, st.mode() & 0o7777, "{what}");
                assert_eq!(
                    (h.uid, h.gid),
                    (u64::from(st.uid()), u64::from(st.gid())),
                    "{what}"
                );
                assert_eq!(h.mtime.secs, st.mtime(), "{what}");
                assert_eq!(h.mtime.nanos, 0, "{what}");
                if name == "dir" {
                    assert_eq!(h.kind, EntryKind::Directory, "{what}");
                    continue;
                }
                assert_eq!(h.kind, EntryKind::Regular, "{what}");
                assert_eq!(h.size, st.len(), "{what}");
                assert_eq!(h.sparse, *sparse, "{what}");
                if flavor == "gnu" && name == "many-chunks" {
                    let isextended = archive[h.header_offset as usize + 482];
                    assert_ne!(
                        isextended, 0,
                        "{what}: the map should need extension blocks"
                    );
                }
            }
            let comparable: Vec<Header> = headers
                .into_iter()
                .map(|h| Header {
                    offset: 0,
                    header_offset: 0,
                    ..h
                })
                .collect();
            match &baseline {
                None => baseline = Some(comparable),
                Some(b) => assert_eq!(&comparable, b, "{flavor}: chunking changed headers"),
            }
        }
    }
}

#[test]
fn gnu_tar_sparse_archives_are_refused_when_mutilated() {
    // GNU tar's own archives, cut and corrupted in sparse structures: errors, never panics.
    if !gnu_tar_available() {
        return;
    }
    let tmp = TempDir::new("cut");
    let src = tmp.0.join("src");
    fs::create_dir(&src).unwrap();
    let chunks: Vec<Vec<u8>> = (0..30).map(|i| pattern(50, i)).collect();
    let writes: Vec<(u64, &[u8])> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (i as u64 * 16384, &c[..]))
        .collect();
    sparse_file(&src.join("f"), 1 << 20, &writes);
    for (flavor, args) in FLAVORS {
        let path = tmp.0.join(format!("{flavor}.tar"));
        let mut cmd: Vec<&str> = vec!["--sparse", "-b1", "-cf", path.to_str().unwrap()];
        cmd.extend_from_slice(args);
        cmd.extend_from_slice(&["-C", src.to_str().unwrap(), "f"]);
        run("tar", &cmd, None);
        let archive = fs::read(&path).unwrap();
        let whole = read_archive(&archive, sparse_limits()).unwrap();
        assert_eq!(whole.len(), 1);
        // Every cut inside the entry is a truncation naming it.
        let entry_end = archive.len() - 1024;
        for cut in (1..entry_end).step_by(97) {
            let err = read_archive(&archive[..cut], sparse_limits()).unwrap_err();
            assert_eq!(err.code(), "ERR_TAR_TRUNCATED", "{flavor} cut {cut}: {err}");
        }
        // Flipping bytes of the first 3 blocks (headers, extension blocks, 1.0 map): any
        // outcome but a panic, and the same outcome in every chunking.
        // Every byte in release builds, a sample in debug ones (to stay fast).
        let step = if cfg!(debug_assertions) { 11 } else { 1 };
        for at in (0..(3 * 512).min(entry_end)).step_by(step) {
            for value in [0u8, b'9', b'\n', 0xff] {
                let mut m = archive.clone();
                m[at] = value;
                let whole = read_archive(&m, sparse_limits());
                let chunked = read_chunked(&m, 333);
                assert_eq!(whole.is_ok(), chunked.is_ok(), "{flavor} byte {at}");
                if let (Err(a), Err(b)) = (&whole, &chunked) {
                    assert_eq!(a, b, "{flavor} byte {at}");
                }
            }
        }
    }
}

/// By default (the project's security rules) a sparse entry is refused with a clear error
/// naming it; the entries before it are read.
#[test]
fn sparse_entries_are_refused_by_default() {
    let map = [(10u64, 5u64)];
    let mut archive = old_gnu("holey", 1 << 30, &map, &stored_for(&map));
    archive.extend_from_slice(&[0u8; 1024]);
    let err = read_archive(&archive, Limits::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_UNSUPPORTED", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("holey") && text.contains("GNU sparse"),
        "{text}"
    );
    assert!(read_archive(&archive, sparse_limits()).is_ok());
}
