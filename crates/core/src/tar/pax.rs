//! PAX extended header records (`"%d %s=%s\n"`): parsing into overrides, and writing.

use super::num::{self, NumError};
use super::{display_name, Timestamp};
use crate::error::{Error, Result};

/// Values from PAX records (or GNU long names) that override the header block.
#[derive(Debug, Default, Clone)]
pub(crate) struct Overrides {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub uname: Option<Vec<u8>>,
    pub gname: Option<Vec<u8>>,
    pub mtime: Option<Timestamp>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// `GNU.sparse.*` records (GNU tar's PAX sparse formats 0.0, 0.1 and 1.0).
    pub sparse: SparseRecords,
}

/// The `GNU.sparse.*` records of one PAX header, as found; the reader decides what they mean.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SparseRecords {
    /// Some `GNU.sparse.*` record was seen.
    pub any: bool,
    pub major: Option<u64>,
    pub minor: Option<u64>,
    /// `GNU.sparse.size` (formats 0.x) and `GNU.sparse.realsize` (1.0): the logical size.
    pub size: Option<u64>,
    pub realsize: Option<u64>,
    pub numblocks: Option<u64>,
    /// `GNU.sparse.name` (0.1, 1.0): the real name; the header holds `GNUSparseFile.<pid>/…`.
    pub name: Option<Vec<u8>>,
    /// `GNU.sparse.map` (0.1): `offset,numbytes,…`.
    pub map: Option<Vec<u64>>,
    /// `GNU.sparse.offset` / `GNU.sparse.numbytes` records (0.0), alternating, in order.
    pub pairs: Vec<u64>,
}

impl Overrides {
    pub fn clear(&mut self) {
        self.path = None;
        self.linkpath = None;
        self.size = None;
        self.uid = None;
        self.gid = None;
        self.uname = None;
        self.gname = None;
        self.mtime = None;
        self.xattrs.clear();
        self.sparse = SparseRecords::default();
    }

    /// Bytes held, roughly; used to cap the global state.
    pub fn held_bytes(&self) -> u64 {
        let opt = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, |v| v.len() as u64);
        opt(&self.path)
            + opt(&self.linkpath)
            + opt(&self.uname)
            + opt(&self.gname)
            + self
                .xattrs
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>()
            + opt(&self.sparse.name)
            + 8 * (self.sparse.map.as_ref().map_or(0, Vec::len) + self.sparse.pairs.len()) as u64
    }
}

/// Sets an xattr, replacing the value in place when the name is already there (later records
/// win; libarchive writes each xattr twice, as SCHILY and LIBARCHIVE).
pub(crate) fn set_xattr(xattrs: &mut Vec<(Vec<u8>, Vec<u8>)>, name: &[u8], value: Vec<u8>) {
    match xattrs.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => xattrs.push((name.to_vec(), value)),
    }
}

/// Where the records came from, for error messages.
pub(crate) struct Context<'a> {
    /// Offset of the PAX header block.
    pub offset: u64,
    /// The entry's name when already known (from an earlier GNU long name or PAX path).
    pub entry: Option<&'a [u8]>,
    /// Cap on sparse map entries ([`Limits::max_sparse_entries`](super::Limits)).
    pub max_sparse_entries: u64,
}

impl Context<'_> {
    fn entry(&self) -> Option<String> {
        self.entry.map(display_name)
    }

    fn malformed(&self, reason: String) -> Error {
        Error::TarMalformed {
            entry: self.entry(),
            offset: self.offset,
            reason,
        }
    }

    fn number(&self, field: &'static str, value: &[u8], e: NumError, max: &str) -> Error {
        let found = display_name(value);
        match e {
            NumError::Syntax => Error::TarBadNumber {
                entry: self.entry(),
                offset: self.offset,
                field,
                found: format!("{found:?}"),
            },
            NumError::Overflow => Error::TarOverflow {
                entry: self.entry(),
                offset: self.offset,
                field,
                found,
                max: max.to_string(),
            },
        }
    }
}

/// Parses every record of a PAX header's data into `into` (later records override earlier
/// ones). The data must consist of whole records and nothing else.
pub(crate) fn parse_records(data: &[u8], into: &mut Overrides, cx: &Context<'_>) -> Result<()> {
    let mut rest = data;
    let mut at = 0usize;
    while !rest.is_empty() {
        let (key, value, len) = split_record(rest).ok_or_else(|| {
            let shown = display_name(&rest[..rest.len().min(40)]);
            cx.malformed(format!(
                "malformed PAX record at byte {at} of the extended header: {shown:?}"
            ))
        })?;
        apply(key, value, into, cx)?;
        rest = &rest[len..];
        at += len;
    }
    Ok(())
}

/// Splits `"<len> <key>=<value>\n"` off the front; returns key, value and the record length.
fn split_record(s: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let space = s.iter().take(21).position(|&b| b == b' ')?;
    let len = usize::try_from(num::parse_decimal(&s[..space]).ok()?).ok()?;
    if len <= space + 1 || len > s.len() || s[len - 1] != b'\n' {
        return None;
    }
    let record = &s[space + 1..len - 1];
    let eq = record.iter().position(|&b| b == b'=')?;
    let key = &record[..eq];
    if key.is_empty() || key.contains(&0) {
        return None;
    }
    Some((key, &record[eq + 1..], len))
}

const SCHILY_XATTR: &[u8] = b"SCHILY.xattr.";
const LIBARCHIVE_XATTR: &[u8] = b"LIBARCHIVE.xattr.";
const GNU_SPARSE: &[u8] = b"GNU.sparse.";

fn apply(key: &[u8], value: &[u8], into: &mut Overrides, cx: &Context<'_>) -> Result<()> {
    let text = |field: &str| -> Result<Vec<u8>> {
        if value.contains(&0) {
            Err(cx.malformed(format!("PAX {field} contains a NUL byte")))
        } else {
            Ok(value.to_vec())
        }
    };
    let u64_max = u64::MAX.to_string();
    match key {
        b"path" => into.path = Some(text("path")?),
        b"linkpath" => into.linkpath = Some(text("linkpath")?),
        b"uname" => into.uname = Some(text("uname")?),
        b"gname" => into.gname = Some(text("gname")?),
        b"size" => {
            let v =
                num::parse_decimal(value).map_err(|e| cx.number("PAX size", value, e, &u64_max))?;
            into.size = Some(v);
        }
        b"uid" => {
            let v =
                num::parse_decimal(value).map_err(|e| cx.number("PAX uid", value, e, &u64_max))?;
            into.uid = Some(v);
        }
        b"gid" => {
            let v =
                num::parse_decimal(value).map_err(|e| cx.number("PAX gid", value, e, &u64_max))?;
            into.gid = Some(v);
        }
        b"mtime" => {
            let (secs, nanos) = num::parse_pax_time(value)
                .map_err(|e| cx.number("PAX mtime", value, e, &i64::MAX.to_string()))?;
            into.mtime = Some(Timestamp { secs, nanos });
        }
        _ if key.starts_with(SCHILY_XATTR) => {
            let name = &key[SCHILY_XATTR.len()..];
            if name.is_empty() {
                return Err(cx.malformed("PAX record SCHILY.xattr. has an empty name".into()));
            }
            set_xattr(&mut into.xattrs, name, value.to_vec());
        }
        _ if key.starts_with(LIBARCHIVE_XATTR) => {
            let encoded = &key[LIBARCHIVE_XATTR.len()..];
            let name = percent_decode(encoded).filter(|n| !n.is_empty() && !n.contains(&0));
            let name = name.ok_or_else(|| {
                let shown = display_name(encoded);
                cx.malformed(format!("PAX LIBARCHIVE.xattr name {shown:?} is not valid"))
            })?;
            let decoded = base64_decode(value).ok_or_else(|| {
                let shown = display_name(&name);
                cx.malformed(format!("PAX LIBARCHIVE.xattr.{shown} value is not base64"))
            })?;
            set_xattr(&mut into.xattrs, &name, decoded);
        }
        _ if key.starts_with(GNU_SPARSE) => {
            apply_sparse(&key[GNU_SPARSE.len()..], value, into, cx)?
        }
        // atime, ctime, charset, comment, hdrcharset, SCHILY.* and unknown keys.
        _ => {}
    }
    Ok(())
}

/// One `GNU.sparse.<name>` record. Numbers are plain decimals (no sign, no spaces); whether
/// they make a valid map is checked by the reader once the entry's header is complete.
fn apply_sparse(name: &[u8], value: &[u8], into: &mut Overrides, cx: &Context<'_>) -> Result<()> {
    let u64_max = u64::MAX.to_string();
    let number = |field: &'static str, v: &[u8]| {
        num::parse_decimal(v).map_err(|e| cx.number(field, v, e, &u64_max))
    };
    // Two numbers per map entry; checked before growing, so memory follows the cap.
    let max_numbers = cx.max_sparse_entries.saturating_mul(2);
    let too_many = |found: u64| Error::TarLimit {
        entry: cx.entry(),
        offset: cx.offset,
        what: "sparse map entries",
        limit: cx.max_sparse_entries,
        found,
    };
    let sparse = &mut into.sparse;
    sparse.any = true;
    match name {
        b"major" => sparse.major = Some(number("PAX GNU.sparse.major", value)?),
        b"minor" => sparse.minor = Some(number("PAX GNU.sparse.minor", value)?),
        b"size" => sparse.size = Some(number("PAX GNU.sparse.size", value)?),
        b"realsize" => sparse.realsize = Some(number("PAX GNU.sparse.realsize", value)?),
        b"numblocks" => sparse.numblocks = Some(number("PAX GNU.sparse.numblocks", value)?),
        b"name" => {
            // Go ignores an empty name and GNU tar uses it: refuse rather than pick one.
            if value.is_empty() || value.contains(&0) {
                return Err(
                    cx.malformed("PAX GNU.sparse.name is empty or contains a NUL byte".into())
                );
            }
            sparse.name = Some(value.to_vec());
        }
        b"map" => {
            let mut map = Vec::new();
            if !value.is_empty() {
                for (i, v) in value.split(|&b| b == b',').enumerate() {
                    if i as u64 >= max_numbers {
                        let found = value.iter().filter(|&&b| b == b',').count() as u64 / 2 + 1;
                        return Err(too_many(found));
                    }
                    map.push(number("PAX GNU.sparse.map", v)?);
                }
            }
            sparse.map = Some(map);
        }
        b"offset" | b"numbytes" => {
            // Format 0.0 repeats these records: they must alternate, offset first (as Go
            // checks), and they accumulate instead of replacing each other.
            let want_offset = sparse.pairs.len() % 2 == 0;
            if want_offset != (name == b"offset") {
                return Err(cx.malformed(format!(
                    "PAX GNU.sparse.{} record out of order (offset and numbytes must alternate)",
                    display_name(name)
                )));
            }
            if sparse.pairs.len() as u64 >= max_numbers {
                return Err(too_many(sparse.pairs.len() as u64 / 2 + 1));
            }
            let field = if want_offset {
                "PAX GNU.sparse.offset"
            } else {
                "PAX GNU.sparse.numbytes"
            };
            sparse.pairs.push(number(field, value)?);
        }
        _ => {
            return Err(Error::TarUnsupported {
                entry: cx.entry(),
                offset: cx.offset,
                feature: format!("PAX record GNU.sparse.{}", display_name(name)),
            })
        }
    }
    Ok(())
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = hex(*s.get(i + 1)?)?;
            let lo = hex(*s.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Standard base64 (RFC 4648 alphabet); `=` padding optional, nothing else allowed. Also what
/// decodes tar-split payloads (Go's JSON form of bytes).
pub fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut end = s.len();
    while end > 0 && s[end - 1] == b'=' && s.len() - end < 2 {
        end -= 1;
    }
    let body = &s[..end];
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Appends one record `"<len> <key>=<value>\n"`, where `<len>` counts the whole record,
/// its own digits included.
pub(crate) fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = base + num::decimal_len(base as u64);
    while base + num::decimal_len(len as u64) != len {
        len = base + num::decimal_len(len as u64);
    }
    num::push_decimal(out, len as u64);
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(data: &[u8]) -> Result<Overrides> {
        let mut o = Overrides::default();
        parse_records(
            data,
            &mut o,
            &Context {
                offset: 0,
                entry: None,
                max_sparse_entries: 4,
            },
        )?;
        Ok(o)
    }

    #[test]
    fn record_lengths_count_their_own_digits() {
        for value_len in 0..1200 {
            let value = vec![b'v'; value_len];
            let mut out = Vec::new();
            push_record(&mut out, b"path", &value);
            let (k, v, len) = split_record(&out).unwrap();
            assert_eq!((k, v, len), (&b"path"[..], &value[..], out.len()));
        }
    }

    #[test]
    fn records_apply_and_later_ones_win() {
        let mut data = Vec::new();
        push_record(&mut data, b"path", b"first");
        push_record(&mut data, b"path", b"second\xff");
        push_record(&mut data, b"size", b"12345678901");
        push_record(&mut data, b"mtime", b"1.25");
        push_record(&mut data, b"atime", b"not even a number");
        push_record(&mut data, b"SCHILY.xattr.user.a", b"\0\x01=\n");
        push_record(&mut data, b"LIBARCHIVE.xattr.user.%62", b"aGk=");
        push_record(&mut data, b"SCHILY.xattr.user.b", b"replaced");
        push_record(&mut data, b"comment", b"");
        let o = parse(&data).unwrap();
        assert_eq!(o.path.as_deref(), Some(&b"second\xff"[..]));
        assert_eq!(o.size, Some(12345678901));
        assert_eq!(o.mtime, Some(Timestamp::new(1, 250_000_000)));
        assert_eq!(
            o.xattrs,
            vec![
                (b"user.a".to_vec(), b"\0\x01=\n".to_vec()),
                (b"user.b".to_vec(), b"replaced".to_vec())
            ]
        );
    }

    #[test]
    fn sparse_records_are_kept_and_0_0_pairs_accumulate() {
        let mut data = Vec::new();
        push_record(&mut data, b"GNU.sparse.size", b"100");
        push_record(&mut data, b"GNU.sparse.numblocks", b"2");
        for (k, v) in [
            ("offset", "0"),
            ("numbytes", "5"),
            ("offset", "90"),
            ("numbytes", "10"),
        ] {
            push_record(
                &mut data,
                format!("GNU.sparse.{k}").as_bytes(),
                v.as_bytes(),
            );
        }
        push_record(&mut data, b"GNU.sparse.name", b"real/name");
        push_record(&mut data, b"GNU.sparse.map", b"");
        let o = parse(&data).unwrap();
        let sparse = &o.sparse;
        assert!(sparse.any);
        assert_eq!((sparse.size, sparse.numblocks), (Some(100), Some(2)));
        assert_eq!(sparse.pairs, [0, 5, 90, 10]);
        assert_eq!(sparse.map.as_deref(), Some(&[][..]));
        assert_eq!(sparse.name.as_deref(), Some(&b"real/name"[..]));
        assert!(o.held_bytes() > 0);
        let mut cleared = o.clone();
        cleared.clear();
        assert_eq!(cleared.sparse, SparseRecords::default());
    }

    #[test]
    fn bad_records_are_errors() {
        let rec = |k: &[u8], v: &[u8]| {
            let mut out = Vec::new();
            push_record(&mut out, k, v);
            out
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"5 a=b\n".to_vec(), "ERR_TAR_MALFORMED"), // length too short for the record
            (b"6 a=b\nx".to_vec(), "ERR_TAR_MALFORMED"), // trailing garbage
            (b"7 a=bc".to_vec(), "ERR_TAR_MALFORMED"),  // longer than the data
            (b"6 a=bc".to_vec(), "ERR_TAR_MALFORMED"),  // no newline
            (b"6 abc\n".to_vec(), "ERR_TAR_MALFORMED"), // no '='
            (b"5 =b\n".to_vec(), "ERR_TAR_MALFORMED"),  // empty key
            (b"x a=b\n".to_vec(), "ERR_TAR_MALFORMED"), // bad length
            (b"06 a=b\n".to_vec(), "ERR_TAR_MALFORMED"), // length off by one
            (rec(b"size", b"1x"), "ERR_TAR_BAD_NUMBER"),
            (rec(b"size", b""), "ERR_TAR_BAD_NUMBER"),
            (rec(b"uid", b"-1"), "ERR_TAR_BAD_NUMBER"),
            (rec(b"mtime", b"1.x"), "ERR_TAR_BAD_NUMBER"),
            (rec(b"size", b"99999999999999999999"), "ERR_TAR_OVERFLOW"),
            (rec(b"path", b"a\0b"), "ERR_TAR_MALFORMED"),
            (rec(b"a\0b", b"c"), "ERR_TAR_MALFORMED"),
            (rec(b"GNU.sparse.major", b"x"), "ERR_TAR_BAD_NUMBER"),
            (rec(b"GNU.sparse.map", b"1,,2"), "ERR_TAR_BAD_NUMBER"),
            (
                rec(b"GNU.sparse.map", b"1,2,3,4,5,6,7,8,9,10"),
                "ERR_TAR_LIMIT",
            ),
            (rec(b"GNU.sparse.numbytes", b"1"), "ERR_TAR_MALFORMED"),
            (rec(b"GNU.sparse.name", b""), "ERR_TAR_MALFORMED"),
            (rec(b"GNU.sparse.other", b"1"), "ERR_TAR_UNSUPPORTED"),
            (rec(b"LIBARCHIVE.xattr.a", b"@@"), "ERR_TAR_MALFORMED"),
            (rec(b"LIBARCHIVE.xattr.%zz", b""), "ERR_TAR_MALFORMED"),
            (rec(b"SCHILY.xattr.", b""), "ERR_TAR_MALFORMED"),
        ];
        for (data, code) in cases {
            let err = parse(&data).unwrap_err();
            assert_eq!(
                err.code(),
                code,
                "{:?}: {err}",
                String::from_utf8_lossy(&data)
            );
        }
    }

    #[test]
    fn base64_and_percent() {
        assert_eq!(base64_decode(b"").unwrap(), b"");
        assert_eq!(base64_decode(b"aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode(b"aGk").unwrap(), b"hi");
        assert_eq!(base64_decode(b"AP8=").unwrap(), b"\0\xff");
        assert_eq!(base64_decode(b"aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert!(base64_decode(b"a").is_none());
        assert!(base64_decode(b"a===").is_none());
        assert!(base64_decode(b"a b=").is_none());
        assert_eq!(percent_decode(b"a%3Db%25").unwrap(), b"a=b%");
        assert!(percent_decode(b"%4").is_none());
        assert!(percent_decode(b"%zz").is_none());
    }
}
