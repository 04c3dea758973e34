//! Tar reader and writer against hand-built archives: every entry type, PAX and GNU
//! extensions, every error class, every cut point, every chunking, random mutations (GNU
//! sparse archives included; `tar_sparse.rs` has their formats and errors).

mod sparse_util;

use stevedore_core::tar::{
    self, read_archive, write_archive, EntryKind, Event, Format, Header, Limits, TarReader,
    TarWriter, Timestamp,
};
use stevedore_core::Error;

// ---------------------------------------------------------------------------------------------
// Helpers

/// An owned record of what the reader reported; consecutive data events are merged, so two
/// logs are equal whatever the chunking.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Entry(Header),
    Data(Vec<u8>),
    EntryEnd,
    End,
    /// The data reported reached the cap of [`log_chunked_capped`]; reading stopped.
    Capped,
}

/// Feeds `input` in chunks of the sizes `sizes` yields (cycled), then calls `finish`.
fn log_chunked(input: &[u8], sizes: &mut dyn FnMut() -> usize) -> Result<Vec<Item>, Error> {
    log_chunked_capped(input, sizes, usize::MAX)
}

/// [`log_chunked`], stopping once `cap` data bytes were reported (a mutated sparse header can
/// claim an exabyte of holes). The log keeps exactly `cap` bytes, so it does not depend on the
/// chunking either.
fn log_chunked_capped(
    input: &[u8],
    sizes: &mut dyn FnMut() -> usize,
    cap: usize,
) -> Result<Vec<Item>, Error> {
    // Sparse entries on (refused by default), so that chunking and mutations reach them too.
    let mut reader = TarReader::new(sparse_util::sparse_limits());
    let mut log = Vec::new();
    let mut pos = 0;
    let mut ended = false;
    let mut total = 0usize;
    while pos < input.len() && !ended {
        let n = sizes().max(1).min(input.len() - pos);
        let mut chunk = &input[pos..pos + n];
        pos += n;
        loop {
            let (used, event) = reader.next_event(chunk)?;
            assert!(used <= chunk.len());
            let before = chunk;
            chunk = &chunk[used..];
            match event {
                Event::NeedMore => {
                    assert!(chunk.is_empty(), "NeedMore must consume everything");
                    break;
                }
                Event::Entry(h) => log.push(Item::Entry(h.clone())),
                Event::Data(d) => {
                    // Data borrows the caller's input: it must point into it, unless it is
                    // the zero fill of a sparse file's hole (which consumes nothing).
                    let range = before.as_ptr_range();
                    assert!(!d.is_empty());
                    assert!(
                        range.contains(&d.as_ptr()) || (tar::is_hole(d) && used == 0),
                        "data outside the input"
                    );
                    let d = &d[..d.len().min(cap - total)];
                    total += d.len();
                    match log.last_mut() {
                        Some(Item::Data(acc)) => acc.extend_from_slice(d),
                        _ => log.push(Item::Data(d.to_vec())),
                    }
                    if total == cap {
                        log.push(Item::Capped);
                        return Ok(log);
                    }
                }
                Event::EntryEnd => log.push(Item::EntryEnd),
                Event::End => {
                    log.push(Item::End);
                    ended = true;
                    break;
                }
            }
        }
    }
    reader.finish()?;
    Ok(log)
}

fn log_whole(input: &[u8]) -> Result<Vec<Item>, Error> {
    let len = input.len().max(1);
    log_chunked(input, &mut || len)
}

/// Small deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A ustar header block with a valid checksum; `edit` may change any field first.
fn block(name: &[u8], typeflag: u8, size: u64, edit: impl FnOnce(&mut [u8; 512])) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0001750\0");
    b[116..124].copy_from_slice(b"0001750\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"14524770400\0");
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[265..269].copy_from_slice(b"user");
    b[297..302].copy_from_slice(b"group");
    edit(&mut b);
    fix_checksum(&mut b);
    b
}

fn fix_checksum(b: &mut [u8; 512]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Appends `data` padded to a block boundary.
fn push_padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize((out.len() + 511) / 512 * 512, 0);
}

fn pax_records(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let base = k.len() + v.len() + 3;
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len = base + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} ").as_bytes());
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// A PAX or GNU extension header followed by its padded data.
fn ext(typeflag: u8, data: &[u8]) -> Vec<u8> {
    let name: &[u8] = if matches!(typeflag, b'L' | b'K') {
        b"././@LongLink"
    } else {
        b"PaxHeaders.0/x"
    };
    let mut out = block(name, typeflag, data.len() as u64, |_| {}).to_vec();
    push_padded(&mut out, data);
    out
}

fn end_marker(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

fn entries(log: &[Item]) -> Vec<(Header, Vec<u8>)> {
    let mut out: Vec<(Header, Vec<u8>)> = Vec::new();
    for item in log {
        match item {
            Item::Entry(h) => out.push((h.clone(), Vec::new())),
            Item::Data(d) => out.last_mut().unwrap().1.extend_from_slice(d),
            _ => {}
        }
    }
    out
}

/// Header with reader-only fields cleared, for comparing with what was written.
fn comparable(h: &Header) -> Header {
    Header {
        offset: 0,
        header_offset: 0,
        ..h.clone()
    }
}

fn sample_entries() -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    let mut file = Header::new(EntryKind::Regular, "file.txt");
    file.size = 6;
    file.uid = 1000;
    file.gid = 100;
    file.uname = b"alice".to_vec();
    file.gname = b"users".to_vec();
    file.mtime = Timestamp::new(1_600_000_000, 0);
    out.push((file, b"hello\n".to_vec()));
    let mut big = Header::new(EntryKind::Regular, "dir/big.bin");
    big.size = 1500;
    big.mode = 0o755;
    out.push((big, (0..1500u32).map(|i| (i * 31 + 7) as u8).collect()));
    let mut empty = Header::new(EntryKind::Regular, "dir/empty");
    empty.mode = 0o600;
    out.push((empty, Vec::new()));
    out.push((Header::new(EntryKind::Directory, "dir/"), Vec::new()));
    let mut hard = Header::new(EntryKind::Hardlink, "hard");
    hard.link_name = b"file.txt".to_vec();
    out.push((hard, Vec::new()));
    let mut sym = Header::new(EntryKind::Symlink, "sym");
    sym.link_name = b"../elsewhere/target".to_vec();
    out.push((sym, Vec::new()));
    let mut chr = Header::new(EntryKind::CharDevice, "dev/null");
    chr.dev_major = 1;
    chr.dev_minor = 3;
    chr.mode = 0o666;
    out.push((chr, Vec::new()));
    let mut blk = Header::new(EntryKind::BlockDevice, "dev/sda");
    blk.dev_major = 8;
    blk.dev_minor = 0;
    blk.mode = 0o660;
    out.push((blk, Vec::new()));
    out.push((Header::new(EntryKind::Fifo, "fifo"), Vec::new()));
    out
}

fn write(format: Format, entries: &[(Header, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(Header, &[u8])> = entries.iter().map(|(h, d)| (h.clone(), &d[..])).collect();
    write_archive(format, &refs).unwrap()
}

fn read_one(archive: &[u8]) -> Result<Header, Error> {
    Ok(read_archive(archive, Limits::default())?.remove(0).0)
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn every_entry_type_round_trips_in_every_format() {
    let sample = sample_entries();
    for format in [Format::Ustar, Format::Pax, Format::Gnu] {
        let archive = write(format, &sample);
        assert_eq!(archive.len() % 512, 0);
        let got = read_archive(&archive, Limits::default()).unwrap();
        assert_eq!(got.len(), sample.len());
        for ((h, d), (want_h, want_d)) in got.iter().zip(&sample) {
            assert_eq!(&comparable(h), want_h, "{format:?}");
            assert_eq!(d, want_d);
        }
        // Offsets: first entry at 0; each header's data follows it.
        assert_eq!(got[0].0.offset, 0);
        assert_eq!(got[1].0.header_offset, 1024);
        assert_eq!(got[1].0.data_offset(), 1536);
    }
}

#[test]
fn every_typeflag_is_read() {
    let cases: &[(u8, EntryKind)] = &[
        (b'0', EntryKind::Regular),
        (0, EntryKind::Regular),
        (b'7', EntryKind::Regular),
        (b'1', EntryKind::Hardlink),
        (b'2', EntryKind::Symlink),
        (b'3', EntryKind::CharDevice),
        (b'4', EntryKind::BlockDevice),
        (b'5', EntryKind::Directory),
        (b'6', EntryKind::Fifo),
    ];
    for &(flag, kind) in cases {
        let size = if kind == EntryKind::Regular { 3 } else { 0 };
        let mut archive = block(b"entry", flag, size, |b| {
            b[157..163].copy_from_slice(b"target");
            b[329..337].copy_from_slice(b"0000012\0");
            b[337..345].copy_from_slice(b"0000034\0");
        })
        .to_vec();
        push_padded(&mut archive, &b"abc"[..size as usize]);
        end_marker(&mut archive);
        let got = read_archive(&archive, Limits::default()).unwrap();
        let h = &got[0].0;
        assert_eq!(h.kind, kind, "typeflag {flag}");
        assert_eq!(h.link_name, b"target");
        assert_eq!((h.mode, h.uid, h.gid, h.size), (0o644, 1000, 1000, size));
        assert_eq!(h.mtime, Timestamp::new(1_700_000_000, 0));
        assert_eq!(
            (h.uname.as_slice(), h.gname.as_slice()),
            (&b"user"[..], &b"group"[..])
        );
        let devs = if kind.is_device() { (10, 28) } else { (0, 0) };
        assert_eq!((h.dev_major, h.dev_minor), devs);
        assert_eq!(got[0].1, &b"abc"[..size as usize]);
    }
    // The old regular typeflag with a trailing slash is a directory.
    let mut archive = block(b"olddir/", 0, 0, |_| {}).to_vec();
    end_marker(&mut archive);
    assert_eq!(read_one(&archive).unwrap().kind, EntryKind::Directory);
}

#[test]
fn ustar_prefix_star_prefix_and_v7() {
    let mut archive = block(b"name.txt", b'0', 0, |b| {
        b[345..352].copy_from_slice(b"pre/fix");
    })
    .to_vec();
    // star: prefix is 131 bytes, then atime/ctime; trailer "tar\0".
    archive.extend_from_slice(&block(b"star.txt", b'0', 0, |b| {
        b[345..349].copy_from_slice(b"sdir");
        b[476..488].copy_from_slice(b"14524770400\0");
        b[508..512].copy_from_slice(b"tar\0");
    }));
    // V7: no magic; user/group names and the prefix area are not read.
    archive.extend_from_slice(&block(b"v7.txt", b'0', 0, |b| {
        b[257..265].fill(0);
        b[345..349].copy_from_slice(b"junk");
    }));
    end_marker(&mut archive);
    let got = read_archive(&archive, Limits::default()).unwrap();
    assert_eq!(got[0].0.path, b"pre/fix/name.txt");
    assert_eq!(got[1].0.path, b"sdir/star.txt");
    assert_eq!(got[2].0.path, b"v7.txt");
    assert!(got[2].0.uname.is_empty());
}

#[test]
fn non_utf8_names_survive_every_format() {
    let name = b"caf\xe9/\xff\xfe name.txt".to_vec();
    let link = b"\x80target".to_vec();
    let mut file = Header::new(EntryKind::Regular, name.clone());
    file.size = 2;
    let mut sym = Header::new(EntryKind::Symlink, b"link\xc0".to_vec());
    sym.link_name = link.clone();
    let sample = vec![(file, b"hi".to_vec()), (sym, Vec::new())];
    for format in [Format::Ustar, Format::Pax, Format::Gnu] {
        let archive = write(format, &sample);
        let got = read_archive(&archive, Limits::default()).unwrap();
        assert_eq!(got[0].0.path, name, "{format:?}");
        assert_eq!(got[1].0.link_name, link, "{format:?}");
    }
    // Pax format stores non-ASCII names in a PAX record too.
    let archive = write(Format::Pax, &sample);
    assert_eq!(archive[156], b'x');
}

// ---------------------------------------------------------------------------------------------
// PAX

#[test]
fn pax_records_override_the_header_block() {
    let records = pax_records(&[
        (b"path", b"very/long/\xffpath"),
        (b"linkpath", b"link/target"),
        (b"size", b"5"),
        (b"uid", b"4000000000"),
        (b"gid", b"3000000"),
        (b"uname", b"\xc3\xa9lodie"),
        (b"gname", b"staff"),
        (b"mtime", b"1600000000.123456789"),
        (b"atime", b"1600000001.5"),
        (b"ctime", b"garbage is ignored"),
        (b"SCHILY.xattr.user.bin", b"\0\xff\n="),
        (b"LIBARCHIVE.xattr.user.b64%3Dname", b"aGVsbG8="),
        (b"SCHILY.xattr.security.capability", b"\x01\0\0\x02"),
        (b"SCHILY.xattr.user.bin", b"replaced"),
        (b"comment", b"unknown keys are ignored"),
    ]);
    let mut archive = ext(b'x', &records);
    archive.extend_from_slice(&block(b"short", b'0', 99, |_| {}));
    push_padded(&mut archive, b"12345");
    end_marker(&mut archive);
    let got = read_archive(&archive, Limits::default()).unwrap();
    let (h, data) = &got[0];
    assert_eq!(h.path, b"very/long/\xffpath");
    assert_eq!(h.link_name, b"link/target");
    assert_eq!((h.size, h.uid, h.gid), (5, 4_000_000_000, 3_000_000));
    assert_eq!(h.uname, "élodie".as_bytes());
    assert_eq!(h.gname, b"staff");
    assert_eq!(h.mtime, Timestamp::new(1_600_000_000, 123_456_789));
    assert_eq!(
        h.xattrs,
        vec![
            (b"user.bin".to_vec(), b"replaced".to_vec()),
            (b"user.b64=name".to_vec(), b"hello".to_vec()),
            (b"security.capability".to_vec(), b"\x01\0\0\x02".to_vec()),
        ]
    );
    assert_eq!(data, b"12345");
    assert_eq!((h.offset, h.header_offset), (0, 1024));
}

#[test]
fn pax_negative_and_fractional_times() {
    for (text, want) in [
        (&b"-1.5"[..], Timestamp::new(-2, 500_000_000)),
        (b"-100", Timestamp::new(-100, 0)),
        (b"0.000000001", Timestamp::new(0, 1)),
        (b"12.3", Timestamp::new(12, 300_000_000)),
    ] {
        let mut archive = ext(b'x', &pax_records(&[(b"mtime", text)]));
        archive.extend_from_slice(&block(b"f", b'0', 0, |_| {}));
        end_marker(&mut archive);
        assert_eq!(read_one(&archive).unwrap().mtime, want);
    }
}

#[test]
fn pax_global_headers_apply_until_replaced_and_x_wins() {
    let mut archive = ext(
        b'g',
        &pax_records(&[
            (b"uname", b"global"),
            (b"mtime", b"42"),
            (b"SCHILY.xattr.user.g", b"1"),
        ]),
    );
    archive.extend_from_slice(&block(b"a", b'0', 0, |_| {}));
    archive.extend_from_slice(&ext(
        b'x',
        &pax_records(&[(b"uname", b"local"), (b"SCHILY.xattr.user.g", b"2")]),
    ));
    archive.extend_from_slice(&block(b"b", b'0', 0, |_| {}));
    archive.extend_from_slice(&ext(b'g', &pax_records(&[(b"mtime", b"43")])));
    archive.extend_from_slice(&block(b"c", b'0', 0, |_| {}));
    end_marker(&mut archive);
    let got = read_archive(&archive, Limits::default()).unwrap();
    let facts: Vec<_> = got
        .iter()
        .map(|(h, _)| (h.uname.clone(), h.mtime.secs, h.xattrs.clone()))
        .collect();
    let x = |v: &[u8]| vec![(b"user.g".to_vec(), v.to_vec())];
    assert_eq!(
        facts,
        vec![
            (b"global".to_vec(), 42, x(b"1")),
            (b"local".to_vec(), 42, x(b"2")),
            (b"global".to_vec(), 43, x(b"1")),
        ]
    );
    // The first entry's offset includes its global header.
    assert_eq!(got[0].0.offset, 0);
    assert_eq!(got[0].0.header_offset, 1024);
}

#[test]
fn pax_empty_values_are_literal() {
    let mut archive = ext(b'x', &pax_records(&[(b"path", b"")]));
    archive.extend_from_slice(&block(b"name", b'0', 0, |_| {}));
    end_marker(&mut archive);
    assert_eq!(read_one(&archive).unwrap().path, b"");
    let mut archive = ext(b'x', &pax_records(&[(b"uid", b"")]));
    archive.extend_from_slice(&block(b"name", b'0', 0, |_| {}));
    end_marker(&mut archive);
    assert_eq!(read_one(&archive).unwrap_err().code(), "ERR_TAR_BAD_NUMBER");
}

#[test]
fn pax_writer_uses_records_only_when_needed_in_a_fixed_order() {
    // Everything fits ustar: no PAX header.
    let mut h = Header::new(EntryKind::Regular, "a/b.txt");
    h.size = 1;
    let plain = write(Format::Pax, &[(h.clone(), b"x".to_vec())]);
    assert_eq!(plain.len(), 512 * 4);
    assert_eq!(&plain[257..263], b"ustar\0");
    // A long ASCII path that splits goes into prefix/name, still no PAX.
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
    let mut h2 = h.clone();
    h2.path = long.clone().into_bytes();
    let split = write(Format::Pax, &[(h2, b"x".to_vec())]);
    assert_eq!(split[156], b'0');
    assert_eq!(&split[345..465], "d".repeat(120).as_bytes());
    // Everything at once: the records come in the documented order.
    let mut h3 = Header::new(EntryKind::Symlink, "x".repeat(300));
    h3.link_name = "t".repeat(150).into_bytes();
    h3.uid = 1 << 40;
    h3.gid = 2_097_152;
    h3.uname = "ü".repeat(20).into_bytes();
    h3.gname = "g".repeat(33).into_bytes();
    h3.mtime = Timestamp::new(-1, 250_000_000);
    h3.xattrs = vec![
        (b"user.z".to_vec(), b"1".to_vec()),
        (b"user.a".to_vec(), b"\0".to_vec()),
    ];
    let archive = write(Format::Pax, &[(h3.clone(), Vec::new())]);
    assert_eq!(archive[156], b'x');
    assert_eq!(&archive[..17], b"PaxHeaders.0/xxxx");
    assert_eq!(&archive[100..108], b"0000644\0");
    let size = usize::from_str_radix(std::str::from_utf8(&archive[124..135]).unwrap(), 8).unwrap();
    let records = &archive[512..512 + size];
    let keys: Vec<&[u8]> = records
        .split(|&b| b == b'\n')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let r = &r[r.iter().position(|&b| b == b' ').unwrap() + 1..];
            &r[..r.iter().position(|&b| b == b'=').unwrap()]
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            &b"path"[..],
            b"linkpath",
            b"uid",
            b"gid",
            b"uname",
            b"gname",
            b"mtime",
            b"SCHILY.xattr.user.z",
            b"SCHILY.xattr.user.a"
        ]
    );
    let text = String::from_utf8_lossy(records);
    assert!(text.contains(" mtime=-0.75\n"), "{text}");
    let back = read_one(&archive).unwrap();
    assert_eq!(comparable(&back), h3);
    // Deterministic: the same input gives the same bytes.
    assert_eq!(write(Format::Pax, &[(h3, Vec::new())]), archive);
}

#[test]
fn pax_writer_handles_huge_sizes() {
    let mut h = Header::new(EntryKind::Regular, "huge");
    h.size = (8 << 30) + 1;
    let mut w = TarWriter::new(Format::Pax);
    let bytes = w.header(&h).unwrap().to_vec();
    let text = String::from_utf8_lossy(&bytes[512..1024]).into_owned();
    assert!(text.contains("size=8589934593\n"), "{text}");
    assert_eq!(read_header_only(&bytes).size, (8 << 30) + 1);
    let mut g = TarWriter::new(Format::Gnu);
    let bytes = g.header(&h).unwrap().to_vec();
    assert_eq!(bytes.len(), 512);
    assert_eq!(bytes[124], 0x80);
    assert_eq!(read_header_only(&bytes).size, (8 << 30) + 1);
    assert!(TarWriter::new(Format::Ustar).header(&h).is_err());
}

/// Reads just the first entry's header from header bytes (no data needed).
fn read_header_only(bytes: &[u8]) -> Header {
    let mut reader = TarReader::new(Limits::default());
    let (used, event) = reader.next_event(bytes).unwrap();
    assert_eq!(used, bytes.len());
    match event {
        Event::Entry(h) => h.clone(),
        other => panic!("expected an entry, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// GNU

#[test]
fn gnu_long_names_and_links() {
    let long_name = format!("{}/{}", "n".repeat(150), "file".repeat(40)).into_bytes();
    let long_link = "l".repeat(200).into_bytes();
    let mut h = Header::new(EntryKind::Symlink, long_name.clone());
    h.link_name = long_link.clone();
    let archive = write(Format::Gnu, &[(h.clone(), Vec::new())]);
    // K first, then L, then the entry whose fields hold the first 100 bytes.
    assert_eq!(&archive[..13], b"././@LongLink");
    assert_eq!(archive[156], b'K');
    assert_eq!(&archive[257..265], b"ustar  \0");
    let k_blocks = 1 + (long_link.len() + 1 + 511) / 512;
    let l_at = k_blocks * 512;
    assert_eq!(archive[l_at + 156], b'L');
    let l_blocks = 1 + (long_name.len() + 1 + 511) / 512;
    let main = &archive[l_at + l_blocks * 512..][..512];
    assert_eq!(&main[..100], &long_name[..100]);
    assert_eq!(&main[157..257], &long_link[..100]);
    let back = read_one(&archive).unwrap();
    assert_eq!(comparable(&back), h);
    assert_eq!(back.offset, 0);
    assert_eq!(back.header_offset, (l_at + l_blocks * 512) as u64);

    // Hand-made: an L record without its trailing NUL, and a K record.
    let mut archive = ext(b'L', b"made/by/hand");
    archive.extend_from_slice(&ext(b'K', b"target\0\0\0"));
    archive.extend_from_slice(&block(b"ignored", b'1', 0, |_| {}));
    end_marker(&mut archive);
    let h = read_one(&archive).unwrap();
    assert_eq!(
        (h.path.as_slice(), h.link_name.as_slice()),
        (&b"made/by/hand"[..], &b"target"[..])
    );
    // PAX path wins over an L name.
    let mut archive = ext(b'L', b"from-gnu");
    archive.extend_from_slice(&ext(b'x', &pax_records(&[(b"path", b"from-pax")])));
    archive.extend_from_slice(&block(b"block", b'0', 0, |_| {}));
    end_marker(&mut archive);
    assert_eq!(read_one(&archive).unwrap().path, b"from-pax");
}

#[test]
fn gnu_base256_numbers() {
    let mut h = Header::new(EntryKind::Regular, "b256");
    h.uid = 1 << 40;
    h.gid = 3_000_000;
    h.mtime = Timestamp::new(-1_000_000_000, 0);
    let archive = write(Format::Gnu, &[(h.clone(), Vec::new())]);
    assert_eq!(archive[108], 0x80);
    assert_eq!(archive[116], 0x80);
    assert_eq!(archive[136], 0xff);
    assert_eq!(comparable(&read_one(&archive).unwrap()), h);
    let mut dev = Header::new(EntryKind::CharDevice, "dev");
    dev.dev_major = u32::MAX;
    dev.dev_minor = 5;
    let archive = write(Format::Gnu, &[(dev.clone(), Vec::new())]);
    assert_eq!(archive[329], 0x80);
    assert_eq!(comparable(&read_one(&archive).unwrap()), dev);

    // Hand-made base-256 fields: a 12-byte size beyond u64 overflows, a negative size too.
    for (payload, code) in [
        (
            [0x80u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "ERR_TAR_OVERFLOW",
        ),
        ([0xff; 12], "ERR_TAR_OVERFLOW"),
    ] {
        let mut archive =
            block(b"big", b'0', 0, |b| b[124..136].copy_from_slice(&payload)).to_vec();
        end_marker(&mut archive);
        let err = read_one(&archive).unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        assert!(err.to_string().contains("\"big\""), "{err}");
    }
    // A 2^64 - 1 byte entry cannot end inside a u64 offset.
    let mut archive = block(b"max", b'0', 0, |b| {
        b[124] = 0x80;
        b[125..128].fill(0);
        b[128..136].fill(0xff);
    })
    .to_vec();
    end_marker(&mut archive);
    assert_eq!(read_one(&archive).unwrap_err().code(), "ERR_TAR_OVERFLOW");
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn checksums_signed_and_unsigned() {
    // A name with high bytes makes the signed and unsigned sums differ.
    let good = block(b"\xe9t\xe9", b'0', 0, |_| {});
    let mut archive = good.to_vec();
    end_marker(&mut archive);
    assert_eq!(read_one(&archive).unwrap().path, b"\xe9t\xe9");
    // Store the signed sum instead: GNU tar accepts it, so do we.
    let mut signed = good;
    signed[148..156].copy_from_slice(b"        ");
    let sum: i64 = signed.iter().map(|&b| i64::from(b as i8)).sum();
    signed[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut archive = signed.to_vec();
    end_marker(&mut archive);
    assert_eq!(read_one(&archive).unwrap().path, b"\xe9t\xe9");
    // One flipped bit: a checksum error naming the entry and the offset.
    let mut archive = write(Format::Ustar, &sample_entries());
    archive[1024 + 5] ^= 1;
    let err = read_archive(&archive, Limits::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_CHECKSUM");
    assert!(
        matches!(err, Error::TarChecksum { offset: 1024, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("offset 1024"), "{err}");
    // A checksum field that is not a number.
    let mut bad = good;
    bad[148..156].copy_from_slice(b"zzzzzz\0 ");
    let mut archive = bad.to_vec();
    end_marker(&mut archive);
    assert_eq!(read_one(&archive).unwrap_err().code(), "ERR_TAR_BAD_NUMBER");
    // Bytes that are not tar (here: text) fail on the checksum field.
    let text = b"This is not a tar archive, only text. ".repeat(30);
    let err = read_archive(&text, Limits::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_BAD_NUMBER", "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    let mut zeros_checksum = text[..512].to_vec();
    zeros_checksum[148..156].copy_from_slice(b"0000000\0");
    let err = read_archive(&zeros_checksum, Limits::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_CHECKSUM", "{err}");
}

#[test]
fn bad_fields_name_the_entry_and_offset() {
    let first = block(b"first", b'0', 0, |_| {});
    let cases: Vec<([u8; 512], &str, &str)> = vec![
        (
            block(b"octal", b'0', 0, |b| {
                b[100..108].copy_from_slice(b"0000968\0")
            }),
            "ERR_TAR_BAD_NUMBER",
            "mode",
        ),
        (
            block(b"uid", b'0', 0, |b| {
                b[108..116].copy_from_slice(b"12 34\0\0\0")
            }),
            "ERR_TAR_BAD_NUMBER",
            "uid",
        ),
        (
            block(b"size", b'0', 0, |b| {
                b[124..136].copy_from_slice(b"0000000000x\0")
            }),
            "ERR_TAR_BAD_NUMBER",
            "size",
        ),
        (
            block(b"mtime", b'0', 0, |b| {
                b[136..148].copy_from_slice(b"-1234567890\0")
            }),
            "ERR_TAR_BAD_NUMBER",
            "mtime",
        ),
        (
            block(b"devs", b'3', 0, |b| {
                b[329..337].copy_from_slice(b"abc\0\0\0\0\0")
            }),
            "ERR_TAR_BAD_NUMBER",
            "devmajor",
        ),
        (
            block(b"type", b'Z', 0, |_| {}),
            "ERR_TAR_INVALID_TYPE",
            "'Z'",
        ),
        (
            block(b"nul\x01", b'\x01', 0, |_| {}),
            "ERR_TAR_INVALID_TYPE",
            "0x01",
        ),
        (
            // Typeflag S with POSIX magic: star's sparse layout, not GNU's.
            block(b"sparse", b'S', 100, |_| {}),
            "ERR_TAR_UNSUPPORTED",
            "sparse",
        ),
        (
            block(b"multi", b'M', 0, |_| {}),
            "ERR_TAR_UNSUPPORTED",
            "multi-volume",
        ),
        (
            block(b"volume", b'V', 0, |_| {}),
            "ERR_TAR_UNSUPPORTED",
            "volume",
        ),
        (
            block(b"dumpdir", b'D', 0, |_| {}),
            "ERR_TAR_UNSUPPORTED",
            "dump",
        ),
        (
            block(b"dirdata", b'5', 10, |_| {}),
            "ERR_TAR_MALFORMED",
            "only regular files",
        ),
        (
            block(b"symdata", b'2', 1, |_| {}),
            "ERR_TAR_MALFORMED",
            "only regular files",
        ),
        (
            block(b"slash/", b'0', 0, |_| {}),
            "ERR_TAR_MALFORMED",
            "ending in '/'",
        ),
        (
            block(b"bigmode", b'0', 0, |b| b[100] = 0x80 | 0x01),
            "ERR_TAR_OVERFLOW",
            "mode",
        ),
    ];
    for (b, code, text) in cases {
        let mut archive = first.to_vec();
        archive.extend_from_slice(&b);
        archive.extend_from_slice(&[0u8; 2048]);
        let err = read_archive(&archive, Limits::default()).unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("offset 512"), "{msg}");
        assert!(msg.contains(text), "{msg}");
        let name =
            String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap()]).into_owned();
        assert!(
            msg.contains(&format!(
                "entry \"{}",
                name.escape_debug().to_string().split('\\').next().unwrap()
            )),
            "{msg}"
        );
    }
    // PAX sparse records of a format version GNU tar never wrote (tests/tar_sparse.rs has
    // the formats that are read, and their errors).
    let mut archive = ext(
        b'x',
        &pax_records(&[(b"GNU.sparse.major", b"2"), (b"GNU.sparse.minor", b"0")]),
    );
    archive.extend_from_slice(&block(b"f", b'0', 0, |_| {}));
    let err = read_one(&archive).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_UNSUPPORTED");
    assert!(err.to_string().contains("GNU sparse format 2.0"), "{err}");
}

#[test]
fn structure_errors() {
    let file = block(b"file", b'0', 0, |_| {});
    // A lone zero block followed by a header.
    let mut archive = file.to_vec();
    archive.extend_from_slice(&[0u8; 512]);
    archive.extend_from_slice(&file);
    let err = read_archive(&archive, Limits::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_MALFORMED");
    assert!(err.to_string().contains("lone zero block"), "{err}");
    // An extended header followed by the end marker.
    let mut archive = ext(b'x', &pax_records(&[(b"path", b"orphan")]));
    end_marker(&mut archive);
    let err = read_archive(&archive, Limits::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_TAR_MALFORMED");
    assert!(err.to_string().contains("\"orphan\""), "{err}");
    // A malformed PAX record.
    let mut archive = ext(b'x', b"99 path=x\n");
    archive.extend_from_slice(&file);
    assert_eq!(
        read_archive(&archive, Limits::default())
            .unwrap_err()
            .code(),
        "ERR_TAR_MALFORMED"
    );
    // Errors are sticky.
    let mut reader = TarReader::new(Limits::default());
    let bad = block(b"type", b'Z', 0, |_| {});
    let first = reader.next_event(&bad).unwrap_err();
    assert_eq!(reader.next_event(&file).unwrap_err(), first);
    assert_eq!(reader.finish().unwrap_err(), first);
}

#[test]
fn limits_are_enforced() {
    let limits = Limits {
        max_extension_size: 1000,
        max_entry_metadata: 3000,
        ..Limits::default()
    };
    let read = |archive: &[u8]| read_archive(archive, limits);
    // One record over the per-record cap: refused from its header, before buffering.
    let mut archive = ext(b'x', &pax_records(&[(b"path", &[b'p'; 1200])]));
    archive.extend_from_slice(&block(b"f", b'0', 0, |_| {}));
    let err = read(&archive).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TarLimit {
                limit: 1000,
                offset: 0,
                ..
            }
        ),
        "{err:?}"
    );
    let mut archive = ext(b'L', &[b'n'; 1001]);
    archive.extend_from_slice(&block(b"f", b'0', 0, |_| {}));
    assert_eq!(read(&archive).unwrap_err().code(), "ERR_TAR_LIMIT");
    // Several records each under the cap, together over the per-entry cap.
    let mut archive = Vec::new();
    for _ in 0..3 {
        archive.extend_from_slice(&ext(b'x', &pax_records(&[(b"comment", &[b'c'; 900])])));
    }
    archive.extend_from_slice(&block(b"f", b'0', 0, |_| {}));
    assert_eq!(read(&archive).unwrap_err().code(), "ERR_TAR_LIMIT");
    // Empty extension headers still count their blocks: no endless header chains.
    let mut archive = Vec::new();
    for _ in 0..10 {
        archive.extend_from_slice(&ext(b'x', b""));
    }
    archive.extend_from_slice(&block(b"f", b'0', 0, |_| {}));
    assert_eq!(read(&archive).unwrap_err().code(), "ERR_TAR_LIMIT");
    // The cap is per entry: many entries with metadata are fine.
    let mut archive = Vec::new();
    for i in 0..10 {
        archive.extend_from_slice(&ext(b'x', &pax_records(&[(b"comment", &[b'c'; 900])])));
        archive.extend_from_slice(&block(format!("f{i}").as_bytes(), b'0', 0, |_| {}));
    }
    end_marker(&mut archive);
    assert_eq!(read(&archive).unwrap().len(), 10);
    // Global state is capped too.
    let mut archive = Vec::new();
    for i in 0..5 {
        let key = format!("SCHILY.xattr.user.{i}");
        archive.extend_from_slice(&ext(b'g', &pax_records(&[(key.as_bytes(), &[b'v'; 900])])));
        archive.extend_from_slice(&block(b"f", b'0', 0, |_| {}));
    }
    assert_eq!(read(&archive).unwrap_err().code(), "ERR_TAR_LIMIT");
    assert_eq!(Limits::default().max_extension_size, 1 << 20);
}

#[test]
fn end_marker_and_trailing_bytes() {
    let mut archive = write(Format::Pax, &sample_entries());
    let len = archive.len();
    archive.extend_from_slice(b"trailing junk after the end marker");
    let mut reader = TarReader::new(Limits::default());
    let mut rest = &archive[..];
    loop {
        let (used, event) = reader.next_event(rest).unwrap();
        rest = &rest[used..];
        if event == Event::End {
            break;
        }
    }
    assert_eq!(archive.len() - rest.len(), len);
    assert!(reader.is_done());
    assert_eq!(reader.offset(), len as u64);
    // After End nothing more is consumed.
    assert_eq!(reader.next_event(rest).unwrap(), (0, Event::End));
    reader.finish().unwrap();

    // Without an end marker (or with only one zero block): accepted by finish().
    let full = write(Format::Pax, &sample_entries());
    for cut in [full.len() - 1024, full.len() - 512] {
        let got = read_archive(&full[..cut], Limits::default()).unwrap();
        assert_eq!(got.len(), sample_entries().len());
    }
    // An empty input is an empty archive.
    assert!(read_archive(&[], Limits::default()).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Truncation and chunking

/// Entry boundaries (where finish() may succeed) of an archive: offsets after each entry's
/// padding, and the archive's end.
fn boundaries(archive: &[u8]) -> Vec<usize> {
    let got = read_archive(archive, Limits::default()).unwrap();
    let mut out: Vec<usize> = got.iter().map(|(h, _)| h.offset as usize).collect();
    // Right after an entry's data, before its padding: a clean end, as Go's archive/tar reads
    // it (umoci ≤ 0.4.7 writes such layers).
    out.extend(data_ends(&got));
    out.push(archive.len() - 1024);
    out.push(archive.len() - 512);
    out.push(archive.len());
    out
}

/// Where the data of each non-sparse entry with data ends.
fn data_ends(got: &[(Header, Vec<u8>)]) -> Vec<usize> {
    got.iter()
        .filter(|(h, _)| !h.sparse && h.size > 0)
        .map(|(h, _)| (h.data_offset() + h.size) as usize)
        .collect()
}

#[test]
fn truncation_at_every_cut_point() {
    let mut sample = sample_entries();
    let mut long = Header::new(EntryKind::Regular, format!("{}/\u{e9}", "p".repeat(130)));
    long.size = 3;
    long.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
    sample.insert(1, (long, b"abc".to_vec()));
    let mut gnu_long = sample.clone();
    gnu_long[1].0.xattrs.clear();
    for (format, entries) in [(Format::Pax, &sample), (Format::Gnu, &gnu_long)] {
        let archive = write(format, entries);
        let ok_at = boundaries(&archive);
        let got = read_archive(&archive, Limits::default()).unwrap();
        for cut in 0..=archive.len() {
            let result = read_archive(&archive[..cut], Limits::default());
            if ok_at.contains(&cut) || cut == 0 {
                assert!(result.is_ok(), "{format:?} cut {cut}: {result:?}");
                continue;
            }
            let err = result.unwrap_err();
            assert_eq!(
                err.code(),
                "ERR_TAR_TRUNCATED",
                "{format:?} cut {cut}: {err}"
            );
            let Error::TarTruncated { end, entry, .. } = &err else {
                unreachable!()
            };
            assert_eq!(*end, cut as u64);
            // Inside an entry's data the message names it.
            for (h, _) in &got {
                let data_end = h.data_offset() + (h.size + 511) / 512 * 512;
                if (h.data_offset() as usize) < cut && cut < data_end as usize {
                    let name = String::from_utf8_lossy(&h.path).into_owned();
                    assert_eq!(entry.as_deref(), Some(&name[..]), "cut {cut}");
                    assert!(err
                        .to_string()
                        .contains(&format!("offset {}", h.header_offset)));
                }
            }
        }
    }
}

/// GNU sparse entries of every format between two plain files: an old GNU map with two
/// extension blocks, PAX 0.0, 0.1 and 1.0, and an all-hole file longer than one zero buffer.
fn sparse_sample() -> Vec<u8> {
    use sparse_util::*;
    let mut out = regular("head", b"plain\n");
    let many: Vec<(u64, u64)> = (0..30).map(|i| (i * 100 + 5, 7)).collect();
    out.extend_from_slice(&old_gnu("old", 4000, &many, &stored_for(&many)));
    let map = [(0, 700), (1500, 20), (3000, 0)];
    let stored = stored_for(&map);
    out.extend_from_slice(&pax00("zero", 3000, &map, &stored));
    out.extend_from_slice(&pax01("one", 3000, &map, &stored));
    out.extend_from_slice(&pax10("ten", 3000, &map, &stored));
    out.extend_from_slice(&old_gnu("hole", 200_000, &[(200_000, 0)], b""));
    out.extend_from_slice(&regular("tail", b"end\n"));
    end(&mut out);
    out
}

#[test]
fn sparse_truncation_at_every_cut_point() {
    let archive = sparse_sample();
    let got = read_archive(&archive, sparse_util::sparse_limits()).unwrap();
    assert_eq!(got.len(), 7);
    assert!(got[1..6].iter().all(|(h, _)| h.sparse));
    // Each entry spans from its first block to the next entry's first block.
    let mut starts: Vec<usize> = got.iter().map(|(h, _)| h.offset as usize).collect();
    starts.push(archive.len() - 1024);
    let mut ok_at = starts.clone();
    ok_at.extend([archive.len() - 512, archive.len()]);
    ok_at.extend(data_ends(&got));
    for cut in 0..=archive.len() {
        let result = read_archive(&archive[..cut], sparse_util::sparse_limits());
        if ok_at.contains(&cut) || cut == 0 {
            let entries = result.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(entries[..], got[..entries.len()], "cut {cut}");
            continue;
        }
        let err = result.unwrap_err();
        assert_eq!(err.code(), "ERR_TAR_TRUNCATED", "cut {cut}: {err}");
        let Error::TarTruncated { end, entry, .. } = &err else {
            unreachable!()
        };
        assert_eq!(*end, cut as u64);
        // Past an entry's own header (extension blocks, a 1.0 map, data) the message names it.
        for (i, (h, _)) in got.iter().enumerate() {
            if (h.data_offset() as usize) <= cut && cut < starts[i + 1] {
                let name = String::from_utf8_lossy(&h.path).into_owned();
                assert_eq!(entry.as_deref(), Some(&name[..]), "cut {cut}: {err}");
                assert!(
                    err.to_string()
                        .contains(&format!("offset {}", h.header_offset)),
                    "cut {cut}: {err}"
                );
            }
        }
    }
}

#[test]
fn sparse_chunk_sizes_give_the_same_events() {
    let archive = sparse_sample();
    let whole = log_whole(&archive).unwrap();
    assert_eq!(whole.last(), Some(&Item::End));
    let hole = entries(&whole)
        .into_iter()
        .find(|(h, _)| h.path == b"hole")
        .unwrap();
    assert_eq!((hole.0.size, hole.1.len()), (200_000, 200_000));
    for size in 1..=13 {
        assert_eq!(
            log_chunked(&archive, &mut || size).unwrap(),
            whole,
            "{size}"
        );
    }
    let mut rng = Rng(0x5eed);
    for _ in 0..50 {
        let max = [2, 600, 5000][rng.below(3) as usize];
        let log = log_chunked(&archive, &mut || rng.below(max) as usize + 1).unwrap();
        assert_eq!(log, whole);
    }
}

#[test]
fn truncation_message_names_entry_and_offset() {
    let archive = write(Format::Pax, &sample_entries());
    let err = read_archive(&archive[..1024 + 512 + 100], Limits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tar: entry \"dir/big.bin\" at offset 1024: archive truncated after 1636 bytes: \
         entry data is missing 1400 of 1500 bytes"
    );
    // Cut right after the data: a clean end (Go reads it so); inside the padding: truncated.
    assert!(read_archive(&archive[..1024 + 512 + 1500], Limits::default()).is_ok());
    let err = read_archive(&archive[..1024 + 512 + 1500 + 10], Limits::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("padding after the entry's data is missing 26 of 36 bytes"),
        "{err}"
    );
    let err = read_archive(&archive[..1024 + 188], Limits::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("header block has 188 of 512 bytes"),
        "{err}"
    );
}

#[test]
fn chunk_sizes_one_to_thirteen_and_random_give_the_same_events() {
    let mut sample = sample_entries();
    let mut x = Header::new(EntryKind::Regular, "x".repeat(200));
    x.size = 700;
    x.xattrs = vec![(b"user.a".to_vec(), vec![7; 600])];
    x.mtime = Timestamp::new(5, 5);
    sample.push((x, vec![9; 700]));
    let mut gnu_sample = sample.clone();
    gnu_sample.last_mut().unwrap().0.xattrs.clear();
    gnu_sample.last_mut().unwrap().0.mtime = Timestamp::new(5, 0);
    for (format, set) in [
        (Format::Ustar, &sample[..sample.len() - 1]),
        (Format::Pax, &sample[..]),
        (Format::Gnu, &gnu_sample[..]),
    ] {
        let archive = write(format, set);
        let whole = log_whole(&archive).unwrap();
        assert_eq!(whole.last(), Some(&Item::End));
        let got = entries(&whole);
        assert_eq!(got.len(), set.len());
        for ((h, d), (want_h, want_d)) in got.iter().zip(set) {
            assert_eq!((&comparable(h), d), (want_h, want_d));
        }
        for size in 1..=13 {
            assert_eq!(
                log_chunked(&archive, &mut || size).unwrap(),
                whole,
                "{format:?} {size}"
            );
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ format as u64);
        for _ in 0..50 {
            let max = [2, 600, 5000][rng.below(3) as usize];
            let log = log_chunked(&archive, &mut || rng.below(max) as usize + 1).unwrap();
            assert_eq!(log, whole);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer contracts

#[test]
fn writer_rejects_what_its_format_cannot_hold() {
    let h = |kind, path: &str| Header::new(kind, path);
    let long_path = "a".repeat(300);
    let mut cases: Vec<(Format, Header, &str)> = vec![
        (
            Format::Ustar,
            h(EntryKind::Regular, &long_path),
            "fits neither",
        ),
        (Format::Pax, h(EntryKind::Regular, ""), "empty"),
        (Format::Gnu, h(EntryKind::Regular, "nul\0byte"), "NUL"),
        (Format::Pax, h(EntryKind::Symlink, "sym"), "link name"),
    ];
    let mut with = |format, edit: fn(&mut Header), text| {
        let mut header = h(EntryKind::Regular, "f");
        edit(&mut header);
        cases.push((format, header, text));
    };
    with(
        Format::Ustar,
        |h| h.link_name = vec![b'l'; 101],
        "link name",
    );
    with(Format::Ustar, |h| h.uid = 1 << 21, "uid");
    with(Format::Ustar, |h| h.size = 1 << 33, "size");
    with(Format::Ustar, |h| h.mtime = Timestamp::new(-1, 0), "mtime");
    with(Format::Ustar, |h| h.mtime = Timestamp::new(1, 1), "mtime");
    with(Format::Ustar, |h| h.uname = vec![b'u'; 33], "32 bytes");
    with(
        Format::Ustar,
        |h| h.xattrs = vec![(b"user.a".to_vec(), vec![])],
        "xattrs",
    );
    with(
        Format::Gnu,
        |h| h.xattrs = vec![(b"user.a".to_vec(), vec![])],
        "xattrs",
    );
    with(
        Format::Gnu,
        |h| h.mtime = Timestamp::new(1, 1),
        "sub-second",
    );
    with(Format::Gnu, |h| h.uid = 1 << 60, "uid");
    with(Format::Pax, |h| h.mode = 0o100000000, "mode");
    with(
        Format::Pax,
        |h| h.mtime.nanos = 1_000_000_000,
        "nanoseconds",
    );
    with(
        Format::Pax,
        |h| h.xattrs = vec![(b"user.a".to_vec(), vec![]), (b"user.a".to_vec(), vec![])],
        "twice",
    );
    with(
        Format::Pax,
        |h| h.xattrs = vec![(b"a=b".to_vec(), vec![])],
        "'='",
    );
    with(
        Format::Pax,
        |h| {
            h.kind = EntryKind::Directory;
            h.size = 1;
        },
        "only regular files",
    );
    with(
        Format::Pax,
        |h| {
            h.kind = EntryKind::CharDevice;
            h.dev_major = 1 << 21;
        },
        "device major",
    );
    for (format, header, text) in cases {
        let err = TarWriter::new(format).header(&header).unwrap_err();
        assert_eq!(err.code(), "ERR_TAR_WRITE");
        assert!(err.to_string().contains(text), "{format:?}: {err}");
    }
}

#[test]
fn writer_enforces_the_entry_sequence() {
    let mut file = Header::new(EntryKind::Regular, "f");
    file.size = 10;
    let mut w = TarWriter::new(Format::Pax);
    assert!(w.data(b"x").is_err());
    assert!(w.end_entry().is_err());
    w.header(&file).unwrap();
    assert!(w.data(&[0; 11]).is_err());
    w.data(&[0; 4]).unwrap();
    assert!(w.end_entry().is_err());
    assert!(w.header(&file).is_err());
    assert!(w.finish().is_err());
    assert_eq!(w.data(&[1; 6]).unwrap(), &[1; 6]);
    assert!(w.header(&file).is_err(), "padding not taken");
    assert_eq!(w.end_entry().unwrap().len(), 502);
    // A size-0 or block-multiple entry needs no end_entry.
    w.header(&Header::new(EntryKind::Directory, "d/")).unwrap();
    file.size = 512;
    w.header(&file).unwrap();
    w.data(&[2; 512]).unwrap();
    assert_eq!(w.finish().unwrap(), &[0u8; 1024][..]);
    assert!(w.header(&file).is_err());
    assert_eq!(w.bytes_written(), 512 + 512 + 512 + 512 + 512 + 1024);
}

#[test]
fn readme_example_streams_into_a_vec() {
    // The module documentation's loop, spelled out over a multi-entry archive.
    let archive = write(Format::Gnu, &sample_entries());
    let mut reader = TarReader::new(Limits::default());
    let mut sizes = Vec::new();
    let mut data_len = 0;
    for chunk in archive.chunks(100) {
        let mut input = chunk;
        loop {
            let (used, event) = reader.next_event(input).unwrap();
            input = &input[used..];
            match event {
                Event::Entry(h) => sizes.push(h.size),
                Event::Data(d) => data_len += d.len() as u64,
                Event::EntryEnd => {}
                Event::NeedMore | Event::End => break,
            }
        }
    }
    reader.finish().unwrap();
    assert_eq!(sizes.iter().sum::<u64>(), data_len);
    assert_eq!(tar::BLOCK_SIZE, 512);
}

// ---------------------------------------------------------------------------------------------
// Fuzz-ish

#[test]
fn random_mutations_never_panic_and_chunking_never_changes_the_answer() {
    let mut sample = sample_entries();
    let mut x = Header::new(EntryKind::Regular, "p".repeat(180));
    x.size = 30;
    x.xattrs = vec![(b"user.x".to_vec(), b"value".to_vec())];
    sample.push((x, vec![1; 30]));
    let mut gnu = sample.clone();
    gnu.last_mut().unwrap().0.xattrs.clear();
    let bases = [
        write(Format::Pax, &sample),
        write(Format::Gnu, &gnu),
        sparse_sample(),
    ];
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let iterations = if cfg!(debug_assertions) { 5000 } else { 50000 };
    for i in 0..iterations {
        let base = &bases[i % bases.len()];
        let mut m = base.clone();
        let edits = 1 + rng.below(8);
        for _ in 0..edits {
            let at = rng.below(m.len() as u64) as usize;
            match rng.below(6) {
                0 => m[at] ^= 1 << rng.below(8),
                1 => m[at] = rng.next() as u8,
                2 => m[at] = [0, 0x80, 0xff, b'0', b'7', b' ', b'\n', b'='][rng.below(8) as usize],
                3 => m.truncate(at),
                4 => {
                    // Mutate and re-checksum the enclosing block, to get past the checksum.
                    m[at] = rng.next() as u8;
                    let start = at / 512 * 512;
                    if start + 512 <= m.len() {
                        let blk: &mut [u8; 512] = (&mut m[start..start + 512]).try_into().unwrap();
                        fix_checksum(blk);
                    }
                }
                _ => {
                    let n = rng.below(600) as usize;
                    let insert: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    let at = at.min(m.len());
                    m.splice(at..at, insert);
                }
            }
            if m.is_empty() {
                break;
            }
        }
        // A mutated sparse header may claim any logical size: read at most 16 MiB of data.
        let cap = 16 << 20;
        let len = m.len().max(1);
        let whole = log_chunked_capped(&m, &mut || len, cap);
        let size = 1 + rng.below(700) as usize;
        let chunked = log_chunked_capped(&m, &mut || size, cap);
        assert_eq!(whole, chunked, "iteration {i}, chunk size {size}");
    }
}
