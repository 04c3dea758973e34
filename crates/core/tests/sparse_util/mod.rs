//! Hand-built GNU sparse archives (old GNU `S`, PAX 0.0, 0.1 and 1.0), laid out as GNU tar 1.34
//! writes them, for `tar_sparse.rs` and `tar_format.rs`. Nothing here trusts our reader or
//! writer: headers are written field by field.
#![allow(dead_code)]

/// A fragment of a sparse map: `(offset, length)`.
pub type Map = [(u64, u64)];

/// The logical content of a sparse file: `stored` fills the fragments in order, zeros elsewhere.
pub fn logical(map: &Map, stored: &[u8], real: u64) -> Vec<u8> {
    let mut out = vec![0u8; real as usize];
    let mut at = 0usize;
    for &(offset, len) in map {
        let (o, l) = (offset as usize, len as usize);
        out[o..o + l].copy_from_slice(&stored[at..at + l]);
        at += l;
    }
    out
}

/// Stored bytes for `map`: a pattern that differs per fragment and per position.
pub fn stored_for(map: &Map) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &(offset, len)) in map.iter().enumerate() {
        for k in 0..len {
            out.push(
                offset
                    .wrapping_add(k)
                    .wrapping_mul(31)
                    .wrapping_add(i as u64 + 1) as u8
                    | 1,
            );
        }
    }
    out
}

pub fn fix_checksum(b: &mut [u8; 512]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// An octal field of `width` bytes (`width - 1` digits and a NUL), or GNU base-256 when the
/// value does not fit.
pub fn number(field: &mut [u8], value: u64) {
    let width = field.len();
    let digits = width - 1;
    if value < 1u64 << (3 * digits as u32) {
        field.copy_from_slice(format!("{value:0digits$o}\0").as_bytes());
    } else {
        field.fill(0);
        field[0] = 0x80;
        for (i, byte) in value.to_be_bytes().iter().enumerate() {
            field[width - 8 + i] = *byte;
        }
    }
}

/// A header block. `gnu` chooses the magic (`ustar  \0`, as GNU tar's old format, or POSIX
/// `ustar\000`); `edit` may change any field before the checksum is computed.
pub fn header(
    name: &[u8],
    typeflag: u8,
    size: u64,
    gnu: bool,
    edit: impl FnOnce(&mut [u8; 512]),
) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(b"0000640\0");
    b[108..116].copy_from_slice(b"0001750\0");
    b[116..124].copy_from_slice(b"0001751\0");
    number(&mut b[124..136], size);
    b[136..148].copy_from_slice(b"14524770400\0");
    b[156] = typeflag;
    if gnu {
        b[257..265].copy_from_slice(b"ustar  \0");
    } else {
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
    }
    b[265..269].copy_from_slice(b"user");
    b[297..302].copy_from_slice(b"group");
    edit(&mut b);
    fix_checksum(&mut b);
    b
}

/// mtime written by [`header`].
pub const MTIME: i64 = 0o14524770400;

pub fn push_padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize((out.len() + 511) / 512 * 512, 0);
}

pub fn pax_records(records: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let base = k.len() + v.len() + 3;
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len = base + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}={v}\n").as_bytes());
    }
    out
}

/// A PAX `x` header with its padded records.
pub fn pax_header(records: &[u8]) -> Vec<u8> {
    let mut out = header(b"./PaxHeaders/x", b'x', records.len() as u64, false, |_| {}).to_vec();
    push_padded(&mut out, records);
    out
}

/// Writes the descriptors of `map` into `area` (24 bytes each) and returns how many fit.
fn descriptors(area: &mut [u8], map: &Map) -> usize {
    let n = (area.len() / 24).min(map.len());
    for (i, &(offset, len)) in map[..n].iter().enumerate() {
        number(&mut area[i * 24..i * 24 + 12], offset);
        number(&mut area[i * 24 + 12..i * 24 + 24], len);
    }
    n
}

/// An old GNU sparse entry (typeflag `S`): four descriptors in the header, the rest in
/// extension blocks of 21, then the stored data padded. `edit` runs on the header block.
pub fn old_gnu_with(
    name: &str,
    real: u64,
    map: &Map,
    stored: &[u8],
    edit: impl FnOnce(&mut [u8; 512]),
) -> Vec<u8> {
    let mut out = Vec::new();
    let in_header = map.len().min(4);
    let head = header(name.as_bytes(), b'S', stored.len() as u64, true, |b| {
        descriptors(&mut b[386..482], &map[..in_header]);
        b[482] = u8::from(map.len() > 4);
        number(&mut b[483..495], real);
        edit(b);
    });
    out.extend_from_slice(&head);
    let mut rest = &map[in_header..];
    while !rest.is_empty() {
        let mut ext = [0u8; 512];
        let n = descriptors(&mut ext[..504], rest);
        rest = &rest[n..];
        ext[504] = u8::from(!rest.is_empty());
        out.extend_from_slice(&ext);
    }
    push_padded(&mut out, stored);
    out
}

pub fn old_gnu(name: &str, real: u64, map: &Map, stored: &[u8]) -> Vec<u8> {
    old_gnu_with(name, real, map, stored, |_| {})
}

/// PAX format 0.0: `GNU.sparse.size`, `numblocks`, then alternating offset/numbytes records;
/// the real name in the ustar header.
pub fn pax00(name: &str, real: u64, map: &Map, stored: &[u8]) -> Vec<u8> {
    let mut recs = vec![
        ("GNU.sparse.size", real.to_string()),
        ("GNU.sparse.numblocks", map.len().to_string()),
    ];
    for &(o, n) in map {
        recs.push(("GNU.sparse.offset", o.to_string()));
        recs.push(("GNU.sparse.numbytes", n.to_string()));
    }
    pax0_with(name, &pax_records(&recs), stored)
}

/// PAX format 0.1: one `GNU.sparse.map`, the real name in `GNU.sparse.name`.
pub fn pax01(name: &str, real: u64, map: &Map, stored: &[u8]) -> Vec<u8> {
    let joined: Vec<String> = map.iter().map(|(o, n)| format!("{o},{n}")).collect();
    let recs = [
        ("GNU.sparse.size", real.to_string()),
        ("GNU.sparse.numblocks", map.len().to_string()),
        ("GNU.sparse.name", name.to_string()),
        ("GNU.sparse.map", joined.join(",")),
    ];
    let mut out = pax_header(&pax_records(&recs));
    let fake = format!("./GNUSparseFile.1/{name}");
    let head = header(fake.as_bytes(), b'0', stored.len() as u64, false, |_| {});
    out.extend_from_slice(&head);
    push_padded(&mut out, stored);
    out
}

/// A PAX 0.x entry with the given records and the real name in the ustar header.
pub fn pax0_with(name: &str, records: &[u8], stored: &[u8]) -> Vec<u8> {
    let mut out = pax_header(records);
    let head = header(name.as_bytes(), b'0', stored.len() as u64, false, |_| {});
    out.extend_from_slice(&head);
    push_padded(&mut out, stored);
    out
}

/// The PAX 1.0 map text: count, then offset and length of each fragment, one per line.
pub fn map_text(map: &Map) -> Vec<u8> {
    let mut text = format!("{}\n", map.len());
    for (o, n) in map {
        text.push_str(&format!("{o}\n{n}\n"));
    }
    text.into_bytes()
}

/// PAX format 1.0: version records, `GNU.sparse.name`, `GNU.sparse.realsize`; the map (padded
/// to 512) and then the fragments in the data area.
pub fn pax10(name: &str, real: u64, map: &Map, stored: &[u8]) -> Vec<u8> {
    pax10_with(name, real, &map_text(map), stored, &[])
}

/// PAX 1.0 with a given map area (padded to 512 with zeros) and extra records.
pub fn pax10_with(
    name: &str,
    real: u64,
    map_area: &[u8],
    stored: &[u8],
    extra: &[(&str, String)],
) -> Vec<u8> {
    let mut recs = vec![
        ("GNU.sparse.major", "1".to_string()),
        ("GNU.sparse.minor", "0".to_string()),
        ("GNU.sparse.name", name.to_string()),
        ("GNU.sparse.realsize", real.to_string()),
    ];
    recs.extend(extra.iter().cloned());
    let mut out = pax_header(&pax_records(&recs));
    let mut data = map_area.to_vec();
    data.resize((data.len() + 511) / 512 * 512, 0);
    data.extend_from_slice(stored);
    let fake = format!("./GNUSparseFile.1/{name}");
    let head = header(fake.as_bytes(), b'0', data.len() as u64, false, |_| {});
    out.extend_from_slice(&head);
    push_padded(&mut out, &data);
    out
}

/// A plain regular file entry (POSIX magic).
pub fn regular(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = header(name.as_bytes(), b'0', data.len() as u64, false, |_| {}).to_vec();
    push_padded(&mut out, data);
    out
}

pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

/// A file name, its logical size and its map.
pub type Sample = (&'static str, u64, Vec<(u64, u64)>);

/// Maps that exercise the formats: data at the start and the end, an all-hole file (GNU tar
/// writes one empty fragment at the end), one spanning the old GNU header and two extension
/// blocks, adjacent and empty fragments, fragments that are not block multiples.
pub fn sample_maps() -> Vec<Sample> {
    let many: Vec<(u64, u64)> = (0..50).map(|i| (i * 1000 + 7, 3 + i % 5)).collect();
    vec![
        ("start", 5000, vec![(0, 700), (5000, 0)]),
        ("end", 100_000, vec![(98_304, 1696), (100_000, 0)]),
        ("allhole", 1 << 20, vec![(1 << 20, 0)]),
        ("dense", 1500, vec![(0, 1000), (1000, 500)]),
        ("many", 60_000, many),
        ("zeros", 3000, vec![(10, 0), (10, 5), (2000, 0), (2999, 1)]),
    ]
}

/// Limits that accept sparse entries (the default refuses them).
pub fn sparse_limits() -> stevedore_core::tar::Limits {
    stevedore_core::tar::Limits {
        max_sparse_entries: 1 << 16,
        ..stevedore_core::tar::Limits::default()
    }
}
