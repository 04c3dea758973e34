//! A compact binary encoding of core values for the bindings.
//!
//! The Node addon and the WebAssembly module return the same bytes for the same call, and one
//! TypeScript decoder (`packages/core/src/wire.ts`) reads them, so both backends agree by
//! construction and no per-field JS object is built on the hot path. All integers are little
//! endian; `bytes` is a `u32` length followed by that many bytes.
//!
//! Entry record (a tar header or a layer-index entry):
//! `kind u8 | mode u32 | uid u64 | gid u64 | size u64 | mtime_secs i64 | mtime_nanos u32 |
//!  dev_major u32 | dev_minor u32 | offset u64 | path bytes | link bytes | uname bytes |
//!  gname bytes | content bytes | xattr_count u32 | (name bytes, value bytes)*`
//! with kind 0 file, 1 hardlink, 2 symlink, 3 char device, 4 block device, 5 dir, 6 fifo.
//!
//! Tar scan events (see [`TarScanner`]): `1 entry-record`, `2 data: offset u32, len u32` (a
//! slice of the input given to that call), `3 entry-end: digest bytes` (empty unless content
//! hashing is on), `4 end`, `5 zeros: len u32` (that many zero bytes of data: a hole of a
//! sparse entry, which is not in the input).

use crate::digest::{Algorithm, Hasher};
use crate::error::{Error, Result};
use crate::overlay::{Entry, EntryKind as OvlKind, LayerIndex, Resolution, Stat, WhiteoutForm};
use crate::tar::{self, EntryKind, Event, Format, Header, Limits, TarReader, Timestamp};

pub const EV_ENTRY: u8 = 1;
pub const EV_DATA: u8 = 2;
pub const EV_ENTRY_END: u8 = 3;
pub const EV_END: u8 = 4;
pub const EV_ZEROS: u8 = 5;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn tar_kind_code(k: EntryKind) -> u8 {
    match k {
        EntryKind::Regular => 0,
        EntryKind::Hardlink => 1,
        EntryKind::Symlink => 2,
        EntryKind::CharDevice => 3,
        EntryKind::BlockDevice => 4,
        EntryKind::Directory => 5,
        EntryKind::Fifo => 6,
    }
}

fn tar_kind_from_code(c: u8) -> Result<EntryKind> {
    Ok(match c {
        0 => EntryKind::Regular,
        1 => EntryKind::Hardlink,
        2 => EntryKind::Symlink,
        3 => EntryKind::CharDevice,
        4 => EntryKind::BlockDevice,
        5 => EntryKind::Directory,
        6 => EntryKind::Fifo,
        _ => return Err(malformed(format!("unknown entry kind {c}"))),
    })
}

fn malformed(reason: String) -> Error {
    Error::WireMalformed { reason }
}

/// Encodes a tar header as an entry record.
pub fn put_tar_header(out: &mut Vec<u8>, h: &Header) {
    out.push(tar_kind_code(h.kind));
    put_u32(out, h.mode);
    put_u64(out, h.uid);
    put_u64(out, h.gid);
    put_u64(out, h.size);
    put_u64(out, h.mtime.secs as u64);
    put_u32(out, h.mtime.nanos);
    put_u32(out, h.dev_major);
    put_u32(out, h.dev_minor);
    put_u64(out, h.offset);
    put_bytes(out, &h.path);
    put_bytes(out, &h.link_name);
    put_bytes(out, &h.uname);
    put_bytes(out, &h.gname);
    put_bytes(out, b"");
    put_u32(out, h.xattrs.len() as u32);
    for (k, v) in &h.xattrs {
        put_bytes(out, k);
        put_bytes(out, v);
    }
}

/// Encodes a layer-index entry as an entry record.
pub fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    let (kind, link, major, minor): (u8, &[u8], u32, u32) = match &e.kind {
        OvlKind::File => (0, b"", 0, 0),
        OvlKind::Hardlink { target } => (1, target, 0, 0),
        OvlKind::Symlink { target } => (2, target, 0, 0),
        OvlKind::CharDevice { major, minor } => (3, b"", *major, *minor),
        OvlKind::BlockDevice { major, minor } => (4, b"", *major, *minor),
        OvlKind::Dir => (5, b"", 0, 0),
        OvlKind::Fifo => (6, b"", 0, 0),
    };
    out.push(kind);
    put_u32(out, e.mode);
    put_u64(out, e.uid as u64);
    put_u64(out, e.gid as u64);
    put_u64(out, e.size);
    put_u64(out, e.mtime as u64);
    put_u32(out, 0);
    put_u32(out, major);
    put_u32(out, minor);
    put_u64(out, 0);
    put_bytes(out, &e.path);
    put_bytes(out, link);
    put_bytes(out, b"");
    put_bytes(out, b"");
    put_bytes(out, e.content.as_deref().unwrap_or("").as_bytes());
    put_u32(out, e.xattrs.len() as u32);
    for (k, v) in &e.xattrs {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v);
    }
}

/// Reads values back from an encoded buffer (records sent from JavaScript).
pub struct WireReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> WireReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        WireReader { buf, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| malformed(format!("record truncated at byte {}", self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Decodes one entry record into a tar header (for the writer).
    pub fn tar_header(&mut self) -> Result<Header> {
        let kind = tar_kind_from_code(self.u8()?)?;
        let mut h = Header::new(kind, Vec::new());
        h.mode = self.u32()?;
        h.uid = self.u64()?;
        h.gid = self.u64()?;
        h.size = self.u64()?;
        let secs = self.u64()? as i64;
        h.mtime = Timestamp::new(secs, self.u32()?);
        h.dev_major = self.u32()?;
        h.dev_minor = self.u32()?;
        let _offset = self.u64()?;
        h.path = self.bytes()?.to_vec();
        h.link_name = self.bytes()?.to_vec();
        h.uname = self.bytes()?.to_vec();
        h.gname = self.bytes()?.to_vec();
        let _content = self.bytes()?;
        let n = self.u32()? as usize;
        for _ in 0..n {
            let name = self.bytes()?.to_vec();
            h.xattrs.push((name, self.bytes()?.to_vec()));
        }
        if !self.is_empty() {
            return Err(malformed("trailing bytes after the header".into()));
        }
        Ok(h)
    }

    /// Decodes one entry record into a layer-index entry.
    pub fn entry(&mut self) -> Result<Entry> {
        let kind = tar_kind_from_code(self.u8()?)?;
        let mode = self.u32()?;
        let uid = self.u64()?;
        let gid = self.u64()?;
        let size = self.u64()?;
        let mtime = self.u64()? as i64;
        let _nanos = self.u32()?;
        let major = self.u32()?;
        let minor = self.u32()?;
        let _offset = self.u64()?;
        let path = self.bytes()?.to_vec();
        let link = self.bytes()?.to_vec();
        let _uname = self.bytes()?;
        let _gname = self.bytes()?;
        let content = self.bytes()?;
        let n = self.u32()? as usize;
        let mut xattrs = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let name = String::from_utf8_lossy(self.bytes()?).into_owned();
            xattrs.push((name, self.bytes()?.to_vec()));
        }
        let to_u32 = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| malformed(format!("{what} {v} does not fit 32 bits")))
        };
        let mut e = Entry::new(path, overlay_kind(kind, link, major, minor));
        e.mode = mode & 0o7777;
        e.uid = to_u32(uid, "uid")?;
        e.gid = to_u32(gid, "gid")?;
        e.size = size;
        e.mtime = mtime;
        e.content = (!content.is_empty()).then(|| String::from_utf8_lossy(content).into_owned());
        e.xattrs = xattrs;
        Ok(e)
    }
}

fn overlay_kind(kind: EntryKind, link: Vec<u8>, major: u32, minor: u32) -> OvlKind {
    match kind {
        EntryKind::Regular => OvlKind::File,
        EntryKind::Hardlink => OvlKind::Hardlink { target: link },
        EntryKind::Symlink => OvlKind::Symlink { target: link },
        EntryKind::CharDevice => OvlKind::CharDevice { major, minor },
        EntryKind::BlockDevice => OvlKind::BlockDevice { major, minor },
        EntryKind::Directory => OvlKind::Dir,
        EntryKind::Fifo => OvlKind::Fifo,
    }
}

/// A layer-index entry from a tar header (the size of a symlink is its target's length).
pub fn entry_from_tar(h: &Header, content: Option<String>) -> Result<Entry> {
    let to_u32 = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| Error::InvalidEntryPath {
            path: String::from_utf8_lossy(&h.path).into_owned(),
            reason: format!("{what} {v} does not fit 32 bits"),
        })
    };
    let kind = overlay_kind(h.kind, h.link_name.clone(), h.dev_major, h.dev_minor);
    let mut e = Entry::new(h.path.clone(), kind);
    e.mode = h.mode & 0o7777;
    e.uid = to_u32(h.uid, "uid")?;
    e.gid = to_u32(h.gid, "gid")?;
    if h.kind == EntryKind::Regular {
        e.size = h.size;
    }
    e.mtime = h.mtime.secs;
    e.content = content;
    e.xattrs = h
        .xattrs
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
        .collect();
    Ok(e)
}

/// A tar reader that writes its events in the wire encoding, optionally hashing each regular
/// file's data (the digest comes with the entry-end event) and collecting layer-index entries.
pub struct TarScanner {
    reader: TarReader,
    hash: Option<Algorithm>,
    hasher: Option<Hasher>,
    current: Option<Header>,
    /// When set, every entry is also kept for a [`LayerIndex`].
    entries: Option<Vec<Entry>>,
    done: bool,
}

impl TarScanner {
    pub fn new(limits: Limits, hash: Option<Algorithm>, collect_entries: bool) -> Self {
        TarScanner {
            reader: TarReader::new(limits),
            hash,
            hasher: None,
            current: None,
            entries: collect_entries.then(Vec::new),
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Consumes all of `input`, appending events to `out`. Data events give offsets in `input`
    /// (holes of sparse entries come as zeros events). With `with_data` false, data events are
    /// left out (a listing).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>, with_data: bool) -> Result<()> {
        let mut rest = input;
        // Until `NeedMore`, not until the input is used up: a hole, or the end of an entry,
        // may come after its last byte.
        while !self.done {
            let (used, event) = self.reader.next_event(rest)?;
            match event {
                Event::NeedMore => break,
                Event::Entry(h) => {
                    out.push(EV_ENTRY);
                    put_tar_header(out, h);
                    self.hasher = match (self.hash, h.kind) {
                        (Some(alg), EntryKind::Regular) => Some(Hasher::new(alg)),
                        _ => None,
                    };
                    if self.entries.is_some() {
                        self.current = Some(h.clone());
                    }
                }
                Event::Data(d) => {
                    if let Some(h) = self.hasher.as_mut() {
                        h.update(d);
                    }
                    if with_data && tar::is_hole(d) {
                        out.push(EV_ZEROS);
                        put_u32(out, d.len() as u32);
                    } else if with_data {
                        out.push(EV_DATA);
                        put_u32(out, (d.as_ptr() as usize - input.as_ptr() as usize) as u32);
                        put_u32(out, d.len() as u32);
                    }
                }
                Event::EntryEnd => {
                    let digest = self.hasher.take().map(|h| h.finish().to_string());
                    out.push(EV_ENTRY_END);
                    put_bytes(out, digest.as_deref().unwrap_or("").as_bytes());
                    if let (Some(entries), Some(h)) = (self.entries.as_mut(), self.current.take()) {
                        entries.push(entry_from_tar(&h, digest)?);
                    }
                }
                Event::End => {
                    out.push(EV_END);
                    self.done = true;
                }
            }
            rest = &rest[used..];
        }
        Ok(())
    }

    /// At end of input: an archive that stopped mid-entry is an error.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.reader.finish()?;
        if !self.done {
            out.push(EV_END);
            self.done = true;
        }
        Ok(())
    }

    /// The layer index of everything scanned (requires `collect_entries`).
    pub fn into_index(self, form: WhiteoutForm) -> Result<LayerIndex> {
        LayerIndex::from_entries(form, self.entries.unwrap_or_default())
    }
}

/// Tar format names shared with TS: `pax`, `gnu`, `ustar`.
pub fn tar_format(name: &str) -> Result<Format> {
    match name {
        "pax" => Ok(Format::Pax),
        "gnu" => Ok(Format::Gnu),
        "ustar" => Ok(Format::Ustar),
        other => Err(malformed(format!(
            "tar format must be pax, gnu or ustar, got {other:?}"
        ))),
    }
}

/// Encodes a resolution: `0 absent | 1 found: layer u32, implicit u8, entry | 2 whiteout:
/// layer u32 | 3 shadowed: layer u32`.
pub fn put_resolution(out: &mut Vec<u8>, r: &Resolution<'_>) {
    match r {
        Resolution::Absent => out.push(0),
        Resolution::Found {
            layer,
            entry,
            implicit,
        } => {
            out.push(1);
            put_u32(out, *layer as u32);
            out.push(u8::from(*implicit));
            put_entry(out, entry);
        }
        Resolution::Whiteout { layer } => {
            out.push(2);
            put_u32(out, *layer as u32);
        }
        Resolution::Shadowed { layer } => {
            out.push(3);
            put_u32(out, *layer as u32);
        }
    }
}

/// Encodes a stat: `path bytes | layer u32 | implicit u8 | nlink u32 | entry`.
pub fn put_stat(out: &mut Vec<u8>, s: &Stat<'_>) {
    put_bytes(out, s.path);
    put_u32(out, s.layer as u32);
    out.push(u8::from(s.implicit));
    put_u32(out, s.nlink);
    put_entry(out, s.entry);
}

/// Encodes every visible path of a stack, depth first: `count u32 | stat*`.
pub fn put_walk(out: &mut Vec<u8>, stack: &crate::overlay::LayerStack) {
    let start = out.len();
    put_u32(out, 0);
    let mut n = 0u32;
    for st in stack.iter() {
        put_stat(out, &st);
        n += 1;
    }
    out[start..start + 4].copy_from_slice(&n.to_le_bytes());
}

/// Encodes a list of names: `count u32 | bytes*`.
pub fn put_names(out: &mut Vec<u8>, names: &[&[u8]]) {
    put_u32(out, names.len() as u32);
    for n in names {
        put_bytes(out, n);
    }
}

/// Decodes the layer-index entries JavaScript sends (`count u32 | entry*`).
pub fn read_entries(buf: &[u8]) -> Result<Vec<Entry>> {
    let mut r = WireReader::new(buf);
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        out.push(r.entry()?);
    }
    if !r.is_empty() {
        return Err(malformed("trailing bytes after the entries".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::LayerStack;
    use crate::tar::{write_archive, Format};

    fn archive() -> Vec<u8> {
        let mut f = Header::new(EntryKind::Regular, "etc/hello");
        f.size = 6;
        let d = Header::new(EntryKind::Directory, "etc/");
        let mut l = Header::new(EntryKind::Symlink, "link");
        l.link_name = b"etc/hello".to_vec();
        write_archive(
            Format::Pax,
            &[(d, b"".as_slice()), (f, b"hello\n"), (l, b"")],
        )
        .unwrap()
    }

    #[test]
    fn scanner_events_and_content_digests_do_not_depend_on_chunking() {
        let tar = archive();
        let mut whole = Vec::new();
        let mut s = TarScanner::new(Limits::default(), Some(Algorithm::Sha256), false);
        s.push(&tar, &mut whole, false).unwrap();
        s.finish(&mut whole).unwrap();
        for size in [1, 7, 512, 513] {
            let mut out = Vec::new();
            let mut s = TarScanner::new(Limits::default(), Some(Algorithm::Sha256), false);
            for c in tar.chunks(size) {
                s.push(c, &mut out, false).unwrap();
            }
            s.finish(&mut out).unwrap();
            assert_eq!(out, whole, "chunk size {size}");
        }
        let hello = crate::digest::hash(Algorithm::Sha256, b"hello\n").to_string();
        assert!(whole.windows(hello.len()).any(|w| w == hello.as_bytes()));
    }

    /// An old GNU sparse file `s`: logical size 70000, "abc" stored at 65540, holes around.
    fn sparse_archive() -> Vec<u8> {
        let mut h = Header::new(EntryKind::Regular, "s");
        h.size = 3;
        let mut tar = write_archive(Format::Gnu, &[(h, b"abc".as_slice())]).unwrap();
        let b = &mut tar[..512];
        b[156] = b'S';
        b[386..398].copy_from_slice(format!("{:011o}\0", 65540).as_bytes());
        b[398..410].copy_from_slice(b"00000000003\0");
        b[483..495].copy_from_slice(format!("{:011o}\0", 70000).as_bytes());
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar
    }

    #[test]
    fn sparse_holes_are_zeros_events_and_hashed_as_content() {
        let tar = sparse_archive();
        let mut content = vec![0u8; 70000];
        content[65540..65543].copy_from_slice(b"abc");
        let digest = crate::digest::hash(Algorithm::Sha256, &content).to_string();
        for size in [1, 512, tar.len()] {
            let mut out = Vec::new();
            let limits = Limits {
                max_sparse_entries: 16,
                ..Limits::default()
            };
            let mut s = TarScanner::new(limits, Some(Algorithm::Sha256), true);
            let mut got = Vec::new();
            for c in tar.chunks(size) {
                let start = out.len();
                s.push(c, &mut out, true).unwrap();
                // Rebuild the content from data and zeros events.
                let mut r = WireReader::new(&out[start..]);
                while !r.is_empty() {
                    match r.u8().unwrap() {
                        EV_ENTRY => assert_eq!(r.entry().unwrap().size, 70000),
                        EV_DATA => {
                            let (off, len) = (r.u32().unwrap(), r.u32().unwrap());
                            got.extend_from_slice(&c[off as usize..(off + len) as usize]);
                        }
                        EV_ZEROS => got.resize(got.len() + r.u32().unwrap() as usize, 0),
                        EV_ENTRY_END => {
                            r.bytes().unwrap();
                        }
                        other => assert_eq!(other, EV_END),
                    }
                }
            }
            s.finish(&mut out).unwrap();
            assert!(got == content, "chunk size {size}");
            assert!(out.windows(digest.len()).any(|w| w == digest.as_bytes()));
            let index = s.into_index(WhiteoutForm::Oci).unwrap();
            let stack = crate::overlay::LayerStack::new(vec![index]);
            assert_eq!(stack.stat(b"s").unwrap().entry.size, 70000);
        }
    }

    #[test]
    fn tar_header_records_round_trip() {
        let mut h = Header::new(EntryKind::Symlink, "a/b");
        h.link_name = b"../c".to_vec();
        h.mtime = Timestamp::new(1_700_000_000, 5);
        h.xattrs.push((b"user.x".to_vec(), vec![0, 1]));
        let mut enc = Vec::new();
        put_tar_header(&mut enc, &h);
        let back = WireReader::new(&enc).tar_header().unwrap();
        assert_eq!(
            (back.path, back.link_name, back.mtime, back.xattrs),
            (h.path, h.link_name, h.mtime, h.xattrs)
        );
    }

    #[test]
    fn entries_round_trip_and_build_a_stack() {
        let tar = archive();
        let mut s = TarScanner::new(Limits::default(), Some(Algorithm::Sha256), true);
        let mut sink = Vec::new();
        s.push(&tar, &mut sink, true).unwrap();
        s.finish(&mut sink).unwrap();
        let index = s.into_index(WhiteoutForm::Oci).unwrap();
        let stack = LayerStack::new(vec![index]);
        let st = stack.stat(b"link").unwrap();
        assert_eq!(st.path, b"etc/hello");
        assert_eq!(st.entry.size, 6);

        let mut enc = Vec::new();
        put_u32(&mut enc, 1);
        put_entry(&mut enc, st.entry);
        let back = read_entries(&enc).unwrap();
        assert_eq!(&back[0], st.entry);
        assert!(read_entries(&enc[..enc.len() - 1]).is_err());
    }
}
