//! The deterministic, streaming tar writer.

use super::field;
use super::num::{octal_max, put_gnu, put_octal};
use super::pax;
use super::reader::padding;
use super::{display_name, EntryKind, Format, Header, BLOCK_SIZE};
use crate::error::{Error, Result};

static ZEROS: [u8; 2 * BLOCK_SIZE] = [0; 2 * BLOCK_SIZE];

/// Emits tar bytes for the caller to write: header bytes, the caller's data (counted), padding,
/// end marker. See the [module documentation](super) for the encoding rules.
///
/// ```
/// use stevedore_core::tar::{EntryKind, Format, Header, TarWriter};
///
/// let mut out = Vec::new();
/// let mut w = TarWriter::new(Format::Pax);
/// let mut h = Header::new(EntryKind::Regular, "a.txt");
/// h.size = 3;
/// out.extend_from_slice(w.header(&h).unwrap());
/// out.extend_from_slice(w.data(b"abc").unwrap());
/// out.extend_from_slice(w.end_entry().unwrap());
/// out.extend_from_slice(w.finish().unwrap());
/// assert_eq!(out.len(), 512 + 512 + 1024);
/// ```
#[derive(Debug, Clone)]
pub struct TarWriter {
    format: Format,
    buf: Vec<u8>,
    records: Vec<u8>,
    /// Data bytes still owed for the open entry.
    remaining: u64,
    /// Padding owed after the open entry's data; `None` when no entry is open.
    pad: Option<usize>,
    /// Path of the open entry, for messages.
    entry: Vec<u8>,
    finished: bool,
    written: u64,
}

impl TarWriter {
    pub fn new(format: Format) -> Self {
        TarWriter {
            format,
            buf: Vec::with_capacity(2 * BLOCK_SIZE),
            records: Vec::new(),
            remaining: 0,
            pad: None,
            entry: Vec::new(),
            finished: false,
            written: 0,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes handed out so far (headers, data, padding, end marker).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Starts an entry: returns its header bytes (any PAX or GNU extension headers first).
    /// `header.offset` and `header.header_offset` are ignored. Fails if the header cannot be
    /// encoded in this format, or if the previous entry is unfinished (data missing, or
    /// padding not taken with [`end_entry`](Self::end_entry)).
    pub fn header(&mut self, header: &Header) -> Result<&[u8]> {
        self.check_idle(&header.path)?;
        validate(header)?;
        self.buf.clear();
        match self.format {
            Format::Ustar => {
                let block = ustar_block(header)?;
                self.buf.extend_from_slice(&block);
            }
            Format::Pax => self.pax_header(header)?,
            Format::Gnu => self.gnu_header(header)?,
        }
        self.remaining = header.size;
        self.pad = Some(padding(header.size) as usize);
        self.entry.clear();
        self.entry.extend_from_slice(&header.path);
        self.written += self.buf.len() as u64;
        Ok(&self.buf)
    }

    /// Counts `chunk` as data of the open entry and hands it back, for
    /// `sink.write_all(writer.data(chunk)?)`. Fails when it goes past the declared size.
    pub fn data<'a>(&mut self, chunk: &'a [u8]) -> Result<&'a [u8]> {
        if self.pad.is_none() {
            return Err(self.error("data given while no entry is open".into()));
        }
        if chunk.len() as u64 > self.remaining {
            return Err(self.error(format!(
                "{} data bytes given, only {} left of the declared size",
                chunk.len(),
                self.remaining
            )));
        }
        self.remaining -= chunk.len() as u64;
        self.written += chunk.len() as u64;
        Ok(chunk)
    }

    /// Ends the open entry: returns the zero padding (0..=511 bytes) to write after its data.
    /// Fails when data is missing.
    pub fn end_entry(&mut self) -> Result<&'static [u8]> {
        let Some(pad) = self.pad else {
            return Err(self.error("end_entry called while no entry is open".into()));
        };
        if self.remaining > 0 {
            return Err(self.error(format!(
                "entry ended with {} data bytes still missing",
                self.remaining
            )));
        }
        self.pad = None;
        self.written += pad as u64;
        Ok(&ZEROS[..pad])
    }

    /// Ends the archive: returns the two zero blocks. Fails if an entry is unfinished.
    pub fn finish(&mut self) -> Result<&'static [u8]> {
        self.check_idle(b"")?;
        self.finished = true;
        self.written += ZEROS.len() as u64;
        Ok(&ZEROS[..])
    }

    fn error(&self, reason: String) -> Error {
        Error::TarWrite {
            entry: display_name(&self.entry),
            reason,
        }
    }

    /// An entry may start (or the archive end) when the previous entry has its data and its
    /// padding, or needs no padding.
    fn check_idle(&self, next: &[u8]) -> Result<()> {
        if self.finished {
            return Err(Error::TarWrite {
                entry: display_name(next),
                reason: "the archive is already finished".into(),
            });
        }
        match self.pad {
            Some(_) if self.remaining > 0 => Err(self.error(format!(
                "{} data bytes still missing when the next entry or the end began",
                self.remaining
            ))),
            Some(pad) if pad > 0 => {
                Err(self.error("end_entry was not called (its padding was not written)".into()))
            }
            _ => Ok(()),
        }
    }

    fn pax_header(&mut self, h: &Header) -> Result<()> {
        let fail = |reason: String| Error::TarWrite {
            entry: display_name(&h.path),
            reason,
        };
        let records = &mut self.records;
        records.clear();
        let mut b = [0u8; BLOCK_SIZE];

        let path_ascii = h.path.is_ascii();
        if path_ascii && h.path.len() <= 100 {
            put(&mut b[field::NAME], &h.path);
        } else if let Some(i) = split_ustar(&h.path).filter(|_| path_ascii) {
            put(&mut b[field::PREFIX], &h.path[..i]);
            put(&mut b[field::NAME], &h.path[i + 1..]);
        } else {
            pax::push_record(records, b"path", &h.path);
            put(&mut b[field::NAME], &h.path);
        }
        if !h.link_name.is_ascii() || h.link_name.len() > 100 {
            pax::push_record(records, b"linkpath", &h.link_name);
        }
        put(&mut b[field::LINKNAME], &h.link_name);
        if !put_octal(&mut b[field::SIZE], h.size) {
            push_number(records, b"size", h.size);
            put_octal(&mut b[field::SIZE], 0);
        }
        if !put_octal(&mut b[field::UID], h.uid) {
            push_number(records, b"uid", h.uid);
            put_octal(&mut b[field::UID], 0);
        }
        if !put_octal(&mut b[field::GID], h.gid) {
            push_number(records, b"gid", h.gid);
            put_octal(&mut b[field::GID], 0);
        }
        if !h.uname.is_ascii() || h.uname.len() > 32 {
            pax::push_record(records, b"uname", &h.uname);
        }
        put(&mut b[field::UNAME], &h.uname);
        if !h.gname.is_ascii() || h.gname.len() > 32 {
            pax::push_record(records, b"gname", &h.gname);
        }
        put(&mut b[field::GNAME], &h.gname);
        let secs_fit = h.mtime.secs >= 0 && h.mtime.secs as u64 <= octal_max(12);
        if !secs_fit || h.mtime.nanos != 0 {
            let mut value = Vec::with_capacity(32);
            super::num::push_pax_time(&mut value, h.mtime.secs, h.mtime.nanos);
            pax::push_record(records, b"mtime", &value);
        }
        put_octal(
            &mut b[field::MTIME],
            if secs_fit { h.mtime.secs as u64 } else { 0 },
        );
        let mut key = Vec::new();
        for (name, value) in &h.xattrs {
            key.clear();
            key.extend_from_slice(b"SCHILY.xattr.");
            key.extend_from_slice(name);
            pax::push_record(records, &key, value);
        }
        if !put_octal(&mut b[field::MODE], u64::from(h.mode)) {
            return Err(fail(format!(
                "mode {:o} does not fit 7 octal digits",
                h.mode
            )));
        }
        put_devices(&mut b, h, false).map_err(fail)?;
        b[field::TYPEFLAG] = h.kind.typeflag();
        b[field::MAGIC].copy_from_slice(b"ustar\0");
        b[field::VERSION].copy_from_slice(b"00");
        set_checksum(&mut b);

        if !self.records.is_empty() {
            let mut x = [0u8; BLOCK_SIZE];
            pax_header_name(&h.path, &mut x[field::NAME]);
            put_octal(&mut x[field::MODE], 0o644);
            put_octal(&mut x[field::UID], 0);
            put_octal(&mut x[field::GID], 0);
            put_octal(&mut x[field::SIZE], self.records.len() as u64);
            put_octal(&mut x[field::MTIME], 0);
            x[field::TYPEFLAG] = b'x';
            x[field::MAGIC].copy_from_slice(b"ustar\0");
            x[field::VERSION].copy_from_slice(b"00");
            put_octal(&mut x[field::DEVMAJOR], 0);
            put_octal(&mut x[field::DEVMINOR], 0);
            set_checksum(&mut x);
            self.buf.extend_from_slice(&x);
            self.buf.extend_from_slice(&self.records);
            let pad = padding(self.records.len() as u64) as usize;
            self.buf.extend_from_slice(&ZEROS[..pad]);
        }
        self.buf.extend_from_slice(&b);
        // Do not keep a huge record buffer around after one huge header.
        if self.records.capacity() > 64 * 1024 {
            self.records = Vec::new();
        }
        Ok(())
    }

    fn gnu_header(&mut self, h: &Header) -> Result<()> {
        let fail = |reason: String| Error::TarWrite {
            entry: display_name(&h.path),
            reason,
        };
        if !h.xattrs.is_empty() {
            return Err(fail(
                "GNU format cannot store xattrs; use Format::Pax".into(),
            ));
        }
        if h.mtime.nanos != 0 {
            return Err(fail(
                "GNU format cannot store sub-second mtimes; round the time or use Format::Pax"
                    .into(),
            ));
        }
        if h.uname.len() > 32 || h.gname.len() > 32 {
            return Err(fail(
                "GNU format holds user and group names of 32 bytes at most".into(),
            ));
        }
        if h.link_name.len() > 100 {
            push_gnu_long(&mut self.buf, b'K', &h.link_name);
        }
        if h.path.len() > 100 {
            push_gnu_long(&mut self.buf, b'L', &h.path);
        }
        let mut b = [0u8; BLOCK_SIZE];
        put(&mut b[field::NAME], &h.path);
        put(&mut b[field::LINKNAME], &h.link_name);
        let numbers: [(std::ops::Range<usize>, i128, &str); 5] = [
            (field::MODE, i128::from(h.mode), "mode"),
            (field::UID, i128::from(h.uid), "uid"),
            (field::GID, i128::from(h.gid), "gid"),
            (field::SIZE, i128::from(h.size), "size"),
            (field::MTIME, i128::from(h.mtime.secs), "mtime"),
        ];
        for (range, value, name) in numbers {
            let len = range.len();
            if !put_gnu(&mut b[range], value) {
                return Err(fail(format!(
                    "{name} {value} does not fit a {len}-byte base-256 field"
                )));
            }
        }
        put(&mut b[field::UNAME], &h.uname);
        put(&mut b[field::GNAME], &h.gname);
        put_devices(&mut b, h, true).map_err(fail)?;
        b[field::TYPEFLAG] = h.kind.typeflag();
        b[257..265].copy_from_slice(b"ustar  \0");
        set_checksum(&mut b);
        self.buf.extend_from_slice(&b);
        Ok(())
    }
}

/// Strict ustar: everything must fit the fields.
fn ustar_block(h: &Header) -> Result<[u8; BLOCK_SIZE]> {
    let fail = |reason: String| Error::TarWrite {
        entry: display_name(&h.path),
        reason,
    };
    let mut b = [0u8; BLOCK_SIZE];
    if h.path.len() <= 100 {
        put(&mut b[field::NAME], &h.path);
    } else if let Some(i) = split_ustar(&h.path) {
        put(&mut b[field::PREFIX], &h.path[..i]);
        put(&mut b[field::NAME], &h.path[i + 1..]);
    } else {
        return Err(fail(format!(
            "a path of {} bytes fits neither ustar's name nor its prefix/name split; \
             use Format::Pax or Format::Gnu",
            h.path.len()
        )));
    }
    if h.link_name.len() > 100 {
        return Err(fail(format!(
            "a link name of {} bytes does not fit ustar's 100 bytes; use Format::Pax or \
             Format::Gnu",
            h.link_name.len()
        )));
    }
    put(&mut b[field::LINKNAME], &h.link_name);
    if h.mtime.secs < 0 || h.mtime.nanos != 0 {
        return Err(fail(format!(
            "ustar cannot store the mtime {}.{:09} (negative or sub-second); use Format::Pax",
            h.mtime.secs, h.mtime.nanos
        )));
    }
    let numbers: [(std::ops::Range<usize>, u64, &str); 5] = [
        (field::MODE, u64::from(h.mode), "mode"),
        (field::UID, h.uid, "uid"),
        (field::GID, h.gid, "gid"),
        (field::SIZE, h.size, "size"),
        (field::MTIME, h.mtime.secs as u64, "mtime"),
    ];
    for (range, value, name) in numbers {
        let digits = range.len() - 1;
        if !put_octal(&mut b[range], value) {
            return Err(fail(format!(
                "{name} {value} does not fit ustar's {digits} octal digits; use Format::Pax \
                 or Format::Gnu"
            )));
        }
    }
    if h.uname.len() > 32 || h.gname.len() > 32 {
        return Err(fail(
            "ustar holds user and group names of 32 bytes at most".into(),
        ));
    }
    put(&mut b[field::UNAME], &h.uname);
    put(&mut b[field::GNAME], &h.gname);
    if !h.xattrs.is_empty() {
        return Err(fail("ustar cannot store xattrs; use Format::Pax".into()));
    }
    put_devices(&mut b, h, false).map_err(fail)?;
    b[field::TYPEFLAG] = h.kind.typeflag();
    b[field::MAGIC].copy_from_slice(b"ustar\0");
    b[field::VERSION].copy_from_slice(b"00");
    set_checksum(&mut b);
    Ok(b)
}

/// Checks what no format can encode.
fn validate(h: &Header) -> Result<()> {
    let fail = |reason: String| {
        Err(Error::TarWrite {
            entry: display_name(&h.path),
            reason,
        })
    };
    if h.path.is_empty() {
        return fail("the path is empty".into());
    }
    for (what, value) in [
        ("path", &h.path),
        ("link name", &h.link_name),
        ("user name", &h.uname),
        ("group name", &h.gname),
    ] {
        if value.contains(&0) {
            return fail(format!("the {what} contains a NUL byte"));
        }
    }
    if matches!(h.kind, EntryKind::Hardlink | EntryKind::Symlink) && h.link_name.is_empty() {
        return fail("a link needs a non-empty link name".into());
    }
    if h.size != 0 && !h.kind.has_data() {
        return fail(format!(
            "only regular files carry data, but this {:?} has size {}",
            h.kind, h.size
        ));
    }
    if h.mtime.nanos >= 1_000_000_000 {
        return fail(format!(
            "mtime nanoseconds {} are not below 10^9",
            h.mtime.nanos
        ));
    }
    for (i, (name, _)) in h.xattrs.iter().enumerate() {
        if name.is_empty() || name.contains(&0) || name.contains(&b'=') {
            return fail(format!(
                "xattr name {:?} is empty or contains NUL or '='",
                display_name(name)
            ));
        }
        if h.xattrs[..i].iter().any(|(other, _)| other == name) {
            return fail(format!("xattr {:?} appears twice", display_name(name)));
        }
    }
    Ok(())
}

/// Device numbers for devices; for other kinds, zeros (ustar) or empty fields (GNU, as GNU
/// tar leaves them).
fn put_devices(b: &mut [u8; BLOCK_SIZE], h: &Header, gnu: bool) -> Result<(), String> {
    if h.kind.is_device() {
        for (range, value, name) in [
            (field::DEVMAJOR, h.dev_major, "device major"),
            (field::DEVMINOR, h.dev_minor, "device minor"),
        ] {
            let ok = if gnu {
                put_gnu(&mut b[range], i128::from(value))
            } else {
                put_octal(&mut b[range], u64::from(value))
            };
            if !ok {
                return Err(format!("{name} {value} does not fit 7 octal digits"));
            }
        }
    } else if !gnu {
        put_octal(&mut b[field::DEVMAJOR], 0);
        put_octal(&mut b[field::DEVMINOR], 0);
    }
    Ok(())
}

/// A GNU `L`/`K` record: header named `././@LongLink`, then the name and a NUL, padded.
fn push_gnu_long(buf: &mut Vec<u8>, typeflag: u8, name: &[u8]) {
    let size = name.len() as u64 + 1;
    let mut b = [0u8; BLOCK_SIZE];
    put(&mut b[field::NAME], b"././@LongLink");
    put_octal(&mut b[field::MODE], 0o644);
    put_octal(&mut b[field::UID], 0);
    put_octal(&mut b[field::GID], 0);
    put_gnu(&mut b[field::SIZE], i128::from(size));
    put_octal(&mut b[field::MTIME], 0);
    b[field::TYPEFLAG] = typeflag;
    b[257..265].copy_from_slice(b"ustar  \0");
    set_checksum(&mut b);
    buf.extend_from_slice(&b);
    buf.extend_from_slice(name);
    buf.push(0);
    buf.extend_from_slice(&ZEROS[..padding(size) as usize]);
}

fn push_number(records: &mut Vec<u8>, key: &[u8], value: u64) {
    let mut digits = Vec::with_capacity(20);
    super::num::push_decimal(&mut digits, value);
    pax::push_record(records, key, &digits);
}

/// Copies as much of `value` as fits; the block is zeroed, so shorter values end in NUL.
fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// GNU tar's and Go's ustar split: the last '/' at index ≤ 155 such that the rest is 1..=100
/// bytes (a trailing '/' is not a split point). `None` if the path cannot be split.
fn split_ustar(path: &[u8]) -> Option<usize> {
    let mut length = path.len();
    if length <= 100 {
        return None;
    }
    if length > 156 {
        length = 156;
    } else if path[length - 1] == b'/' {
        length -= 1;
    }
    let i = path[..length].iter().rposition(|&c| c == b'/')?;
    let name_len = path.len() - i - 1;
    (i > 0 && i <= 155 && (1..=100).contains(&name_len)).then_some(i)
}

/// `PaxHeaders.0/<last component>`, bytes outside printable ASCII as `_`, cut at 100 bytes.
fn pax_header_name(path: &[u8], out: &mut [u8]) {
    let mut end = path.len();
    while end > 0 && path[end - 1] == b'/' {
        end -= 1;
    }
    let trimmed = &path[..end];
    let base = match trimmed.iter().rposition(|&c| c == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    const PREFIX: &[u8] = b"PaxHeaders.0/";
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    for (slot, &c) in out[PREFIX.len()..].iter_mut().zip(base) {
        *slot = if (0x21..=0x7e).contains(&c) { c } else { b'_' };
    }
}

/// Sum of the bytes with the checksum field as spaces, stored as six octal digits, NUL, space.
fn set_checksum(b: &mut [u8; BLOCK_SIZE]) {
    b[field::CHKSUM].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    put_octal(&mut b[148..155], sum);
}

/// Writes a whole archive into memory: each header, its data (whose length must equal
/// `header.size`), padding, and the end marker.
pub fn write_archive(format: Format, entries: &[(Header, &[u8])]) -> Result<Vec<u8>> {
    let mut w = TarWriter::new(format);
    let mut out = Vec::new();
    for (header, data) in entries {
        out.extend_from_slice(w.header(header)?);
        out.extend_from_slice(w.data(data)?);
        out.extend_from_slice(w.end_entry()?);
    }
    out.extend_from_slice(w.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_split_matches_gnu_and_go() {
        let dir = "d".repeat(60);
        let file = "f".repeat(60);
        let p = format!("{dir}/{file}");
        assert_eq!(split_ustar(p.as_bytes()), Some(60));
        // Name part too long.
        let p = format!("{dir}/{}", "f".repeat(101));
        assert_eq!(split_ustar(p.as_bytes()), None);
        // Prefix too long: the only slash is past index 155.
        let p = format!("{}/{}", "d".repeat(156), "f");
        assert_eq!(split_ustar(p.as_bytes()), None);
        // A trailing slash is not a split point.
        let p = format!("{}/", "d".repeat(120));
        assert_eq!(split_ustar(p.as_bytes()), None);
        let p = format!("{}/{}/", "a".repeat(50), "b".repeat(60));
        assert_eq!(split_ustar(p.as_bytes()), Some(50));
        // Leading slash only: i == 0 is not allowed.
        let p = format!("/{}", "f".repeat(100));
        assert_eq!(split_ustar(p.as_bytes()), None);
    }

    #[test]
    fn pax_header_names_are_sanitized() {
        let mut out = [0u8; 100];
        pax_header_name(b"dir/caf\xc3\xa9 x.txt", &mut out);
        assert_eq!(&out[..24], b"PaxHeaders.0/caf___x.txt");
        let mut out = [0u8; 100];
        pax_header_name(b"a/dir/", &mut out);
        assert_eq!(&out[..16], b"PaxHeaders.0/dir");
        assert_eq!(out[16], 0);
    }

    #[test]
    fn checksum_field_layout() {
        let mut b = [0u8; BLOCK_SIZE];
        set_checksum(&mut b);
        assert_eq!(&b[field::CHKSUM], b"000400\0 ");
    }
}
