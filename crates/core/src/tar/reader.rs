//! The streaming, sans-I/O tar reader.

use super::field;
use super::num::{self, NumError};
use super::pax::{self, Overrides};
use super::{display_name, EntryKind, Header, Limits, Timestamp, BLOCK_SIZE};
use crate::error::{Error, Result};

/// What [`TarReader::next_event`] found. `Entry` borrows the reader, `Data` borrows the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'h, 'd> {
    /// Every byte of the input was consumed (and buffered if need be); call again with more.
    NeedMore,
    /// A new entry begins. Clone the header to keep it past the next call.
    Entry(&'h Header),
    /// The next bytes of the current entry's data: a sub-slice of the input, never copied.
    Data(&'d [u8]),
    /// The current entry's data and padding are fully consumed.
    EntryEnd,
    /// The end-of-archive marker (two zero blocks) was read. Nothing after it is consumed.
    End,
}

/// Kinds of extension header whose data the reader buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtKind {
    Pax,
    Global,
    LongName,
    LongLink,
}

impl ExtKind {
    fn describe(self) -> &'static str {
        match self {
            ExtKind::Pax => "PAX extended header",
            ExtKind::Global => "PAX global header",
            ExtKind::LongName => "GNU long name",
            ExtKind::LongLink => "GNU long link name",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a header block (possibly partly buffered in `block`).
    Header,
    /// Buffering the data of an extension header.
    Ext {
        kind: ExtKind,
        remaining: u64,
        pad: u32,
        header_offset: u64,
    },
    /// Skipping the padding after an extension header's data.
    ExtPadding { remaining: u32 },
    /// Inside an entry: `remaining` data bytes, then `pad` padding bytes, then `EntryEnd`.
    Data { remaining: u64, pad: u32 },
    /// The end-of-archive marker was read (or `finish` succeeded).
    End,
}

/// Internal event, free of borrows so errors can be recorded before building [`Event`].
enum Ev {
    NeedMore,
    Entry,
    Data(usize, usize),
    EntryEnd,
    End,
}

/// A push parser for tar archives. See the [module documentation](super) for the contract.
#[derive(Debug, Clone)]
pub struct TarReader {
    limits: Limits,
    state: State,
    /// Bytes consumed so far: the archive offset of the next input byte.
    pos: u64,
    block: [u8; BLOCK_SIZE],
    block_len: usize,
    /// Offset of a zero block just read (one more makes the end marker).
    zero_block_at: Option<u64>,
    /// Data of the extension header being read.
    ext: Vec<u8>,
    /// Per-entry overrides: PAX `x` records.
    pax: Overrides,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// Offset of the first `x`, `L` or `K` header waiting for its entry.
    pending_ext: Option<u64>,
    /// Offset of the first extension header (any kind) of the entry being assembled.
    entry_start: Option<u64>,
    /// Header metadata bytes of the entry being assembled.
    meta: u64,
    global: Overrides,
    header: Header,
    /// Total bytes (data + padding) of the current entry, for truncation messages.
    entry_size: u64,
    failed: Option<Error>,
}

impl TarReader {
    pub fn new(limits: Limits) -> Self {
        TarReader {
            limits,
            state: State::Header,
            pos: 0,
            block: [0; BLOCK_SIZE],
            block_len: 0,
            zero_block_at: None,
            ext: Vec::new(),
            pax: Overrides::default(),
            long_name: None,
            long_link: None,
            pending_ext: None,
            entry_start: None,
            meta: 0,
            global: Overrides::default(),
            header: Header::default(),
            entry_size: 0,
            failed: None,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Archive bytes consumed so far (the offset of the next byte the reader expects).
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Whether the end-of-archive marker was read (or [`finish`](Self::finish) succeeded).
    pub fn is_done(&self) -> bool {
        self.state == State::End
    }

    /// Consumes a prefix of `input` and reports what it found. Returns how many bytes were
    /// consumed; pass the rest (and then more input) to the next call. After an error every
    /// further call returns the same error.
    pub fn next_event<'h, 'd>(&'h mut self, input: &'d [u8]) -> Result<(usize, Event<'h, 'd>)> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let (used, ev) = match self.step(input) {
            Ok(v) => v,
            Err(e) => {
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        let event = match ev {
            Ev::NeedMore => Event::NeedMore,
            Ev::Entry => Event::Entry(&self.header),
            Ev::Data(start, len) => Event::Data(&input[start..start + len]),
            Ev::EntryEnd => Event::EntryEnd,
            Ev::End => Event::End,
        };
        Ok((used, event))
    }

    /// Declares the end of input. Succeeds when the archive ended cleanly: after the end
    /// marker, or at an entry boundary without it (as GNU tar and Go accept). Anything else is
    /// [`Error::TarTruncated`] naming the unfinished entry (when known) and its offset.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.check_finished();
        match &result {
            Ok(()) => self.state = State::End,
            Err(e) => self.failed = Some(e.clone()),
        }
        result
    }

    fn check_finished(&self) -> Result<()> {
        let end = self.pos;
        let truncated = |entry: Option<String>, offset: u64, reason: String| {
            Err(Error::TarTruncated {
                entry,
                offset,
                end,
                reason,
            })
        };
        match self.state {
            State::End => Ok(()),
            State::Header => {
                if self.block_len > 0 {
                    let offset = self.pos - self.block_len as u64;
                    truncated(
                        self.pending_name(),
                        offset,
                        format!("header block has {} of 512 bytes", self.block_len),
                    )
                } else if let Some(offset) = self.pending_ext {
                    truncated(
                        self.pending_name(),
                        offset,
                        "extended header is not followed by its entry".into(),
                    )
                } else {
                    Ok(())
                }
            }
            State::Ext {
                kind,
                remaining,
                header_offset,
                ..
            } => truncated(
                self.pending_name(),
                header_offset,
                format!("{} is missing {remaining} bytes", kind.describe()),
            ),
            State::ExtPadding { remaining } => truncated(
                self.pending_name(),
                self.entry_start.unwrap_or(0),
                format!("extension header padding is missing {remaining} bytes"),
            ),
            State::Data { remaining, pad } => {
                let entry = Some(display_name(&self.header.path));
                let offset = self.header.header_offset;
                if remaining > 0 {
                    truncated(
                        entry,
                        offset,
                        format!(
                            "entry data is missing {remaining} of {} bytes",
                            self.header.size
                        ),
                    )
                } else {
                    truncated(
                        entry,
                        offset,
                        format!(
                            "padding after the entry's data is missing {pad} of {} bytes",
                            self.entry_size - self.header.size
                        ),
                    )
                }
            }
        }
    }

    /// The name of the entry being assembled, if an extension header already gave it.
    fn pending_name(&self) -> Option<String> {
        self.pax
            .path
            .as_deref()
            .or(self.long_name.as_deref())
            .map(display_name)
    }

    fn step(&mut self, input: &[u8]) -> Result<(usize, Ev)> {
        let mut used = 0usize;
        loop {
            let avail = input.len() - used;
            match self.state {
                State::Data { remaining, pad } => {
                    if remaining > 0 {
                        if avail == 0 {
                            return Ok((used, Ev::NeedMore));
                        }
                        let n = remaining.min(avail as u64) as usize;
                        self.state = State::Data {
                            remaining: remaining - n as u64,
                            pad,
                        };
                        self.pos += n as u64;
                        return Ok((used + n, Ev::Data(used, n)));
                    }
                    if pad > 0 {
                        if avail == 0 {
                            return Ok((used, Ev::NeedMore));
                        }
                        let n = (pad as usize).min(avail);
                        self.pos += n as u64;
                        used += n;
                        let pad = pad - n as u32;
                        self.state = State::Data { remaining: 0, pad };
                        if pad > 0 {
                            return Ok((used, Ev::NeedMore));
                        }
                    }
                    self.state = State::Header;
                    return Ok((used, Ev::EntryEnd));
                }
                State::Header => {
                    let offset;
                    let ev = if self.block_len == 0 && avail >= BLOCK_SIZE {
                        offset = self.pos;
                        self.pos += BLOCK_SIZE as u64;
                        let block: &[u8; BLOCK_SIZE] = input[used..used + BLOCK_SIZE]
                            .try_into()
                            .expect("512 bytes");
                        used += BLOCK_SIZE;
                        self.on_header(block, offset)?
                    } else {
                        let n = (BLOCK_SIZE - self.block_len).min(avail);
                        self.block[self.block_len..self.block_len + n]
                            .copy_from_slice(&input[used..used + n]);
                        self.block_len += n;
                        self.pos += n as u64;
                        used += n;
                        if self.block_len < BLOCK_SIZE {
                            return Ok((used, Ev::NeedMore));
                        }
                        self.block_len = 0;
                        offset = self.pos - BLOCK_SIZE as u64;
                        let block = self.block;
                        self.on_header(&block, offset)?
                    };
                    if let Some(ev) = ev {
                        return Ok((used, ev));
                    }
                }
                State::Ext {
                    kind,
                    remaining,
                    pad,
                    header_offset,
                } => {
                    if remaining > 0 {
                        if avail == 0 {
                            return Ok((used, Ev::NeedMore));
                        }
                        let n = remaining.min(avail as u64) as usize;
                        self.ext.extend_from_slice(&input[used..used + n]);
                        self.pos += n as u64;
                        used += n;
                        self.state = State::Ext {
                            kind,
                            remaining: remaining - n as u64,
                            pad,
                            header_offset,
                        };
                        if remaining > n as u64 {
                            return Ok((used, Ev::NeedMore));
                        }
                    }
                    self.on_ext_data(kind, header_offset)?;
                    self.state = State::ExtPadding { remaining: pad };
                }
                State::ExtPadding { remaining } => {
                    if remaining > 0 {
                        if avail == 0 {
                            return Ok((used, Ev::NeedMore));
                        }
                        let n = (remaining as usize).min(avail);
                        self.pos += n as u64;
                        used += n;
                        self.state = State::ExtPadding {
                            remaining: remaining - n as u32,
                        };
                        continue;
                    }
                    self.state = State::Header;
                }
                State::End => return Ok((used, Ev::End)),
            }
        }
    }

    /// Handles one complete header block. `Some(event)` to report, `None` to keep going.
    fn on_header(&mut self, block: &[u8; BLOCK_SIZE], offset: u64) -> Result<Option<Ev>> {
        if is_zero_block(block) {
            if let Some(first) = self.pending_ext {
                return Err(Error::TarMalformed {
                    entry: self.pending_name(),
                    offset: first,
                    reason: format!(
                        "extended header is followed by a zero block at offset {offset}, \
                         not by its entry"
                    ),
                });
            }
            if self.zero_block_at.is_some() {
                self.state = State::End;
                return Ok(Some(Ev::End));
            }
            self.zero_block_at = Some(offset);
            return Ok(None);
        }
        if let Some(zero) = self.zero_block_at {
            return Err(Error::TarMalformed {
                entry: None,
                offset: zero,
                reason: format!(
                    "a lone zero block is followed by a header at offset {offset} (GNU tar \
                     would stop at the zero block, other readers would not)"
                ),
            });
        }
        verify_checksum(block, offset)?;

        self.meta += BLOCK_SIZE as u64;
        if self.entry_start.is_none() {
            self.entry_start = Some(offset);
        }
        let typeflag = block[field::TYPEFLAG];
        let ext_kind = match typeflag {
            b'x' => Some(ExtKind::Pax),
            b'g' => Some(ExtKind::Global),
            b'L' => Some(ExtKind::LongName),
            b'K' => Some(ExtKind::LongLink),
            _ => None,
        };
        if let Some(kind) = ext_kind {
            self.start_ext(block, offset, kind)?;
            return Ok(None);
        }
        self.check_meta(offset)?;
        self.build_entry(block, offset, typeflag)?;
        Ok(Some(Ev::Entry))
    }

    fn check_meta(&self, offset: u64) -> Result<()> {
        if self.meta > self.limits.max_entry_metadata {
            return Err(Error::TarLimit {
                entry: self.pending_name(),
                offset: self.entry_start.unwrap_or(offset),
                what: "header metadata of one entry",
                limit: self.limits.max_entry_metadata,
                found: self.meta,
            });
        }
        Ok(())
    }

    fn start_ext(&mut self, block: &[u8; BLOCK_SIZE], offset: u64, kind: ExtKind) -> Result<()> {
        let entry = || self.pending_name();
        let raw = num::parse_numeric(&block[field::SIZE])
            .map_err(|e| number_error(e, "size", &block[field::SIZE], entry(), offset))?;
        let size = u64::try_from(raw).map_err(|_| Error::TarOverflow {
            entry: entry(),
            offset,
            field: "size",
            found: raw.to_string(),
            max: u64::MAX.to_string(),
        })?;
        if size > self.limits.max_extension_size {
            return Err(Error::TarLimit {
                entry: entry(),
                offset,
                what: kind.describe(),
                limit: self.limits.max_extension_size,
                found: size,
            });
        }
        self.meta = self.meta.saturating_add(size);
        self.check_meta(offset)?;
        if kind != ExtKind::Global && self.pending_ext.is_none() {
            self.pending_ext = Some(offset);
        }
        self.ext.clear();
        self.state = State::Ext {
            kind,
            remaining: size,
            pad: padding(size) as u32,
            header_offset: offset,
        };
        Ok(())
    }

    fn on_ext_data(&mut self, kind: ExtKind, offset: u64) -> Result<()> {
        match kind {
            ExtKind::LongName | ExtKind::LongLink => {
                let name = until_nul(&self.ext).to_vec();
                if kind == ExtKind::LongName {
                    self.long_name = Some(name);
                } else {
                    self.long_link = Some(name);
                }
            }
            ExtKind::Pax | ExtKind::Global => {
                let known = self
                    .pax
                    .path
                    .as_deref()
                    .or(self.long_name.as_deref())
                    .map(<[u8]>::to_vec);
                let cx = pax::Context {
                    offset,
                    entry: known.as_deref(),
                };
                let target = if kind == ExtKind::Pax {
                    &mut self.pax
                } else {
                    &mut self.global
                };
                pax::parse_records(&self.ext, target, &cx)?;
                if kind == ExtKind::Global {
                    let held = self.global.held_bytes();
                    if held > self.limits.max_entry_metadata {
                        return Err(Error::TarLimit {
                            entry: None,
                            offset,
                            what: "global PAX state",
                            limit: self.limits.max_entry_metadata,
                            found: held,
                        });
                    }
                }
            }
        }
        // The buffer may have grown to the limit for one huge record; do not keep that.
        if self.ext.capacity() > 64 * 1024 {
            self.ext = Vec::new();
        }
        Ok(())
    }

    /// Fills `self.header` from the block and the pending overrides, then moves to `Data`.
    fn build_entry(&mut self, block: &[u8; BLOCK_SIZE], offset: u64, typeflag: u8) -> Result<()> {
        let magic = &block[field::MAGIC];
        let ustar = magic == b"ustar\0";
        let gnu = magic == b"ustar " && &block[field::VERSION] == b" \0";
        let star = ustar && &block[field::STAR_TRAILER] == b"tar\0";
        let v7 = !ustar && !gnu;

        let h = &mut self.header;
        let (pax, global) = (&self.pax, &self.global);

        // Path: PAX x > GNU L > PAX g > prefix/name.
        h.path.clear();
        if let Some(p) = pax
            .path
            .as_ref()
            .or(self.long_name.as_ref())
            .or(global.path.as_ref())
        {
            h.path.extend_from_slice(p);
        } else {
            if ustar {
                let prefix = if star {
                    until_nul(&block[field::STAR_PREFIX])
                } else {
                    until_nul(&block[field::PREFIX])
                };
                if !prefix.is_empty() {
                    h.path.extend_from_slice(prefix);
                    h.path.push(b'/');
                }
            }
            h.path.extend_from_slice(until_nul(&block[field::NAME]));
        }
        let path = &h.path;
        let entry = || Some(display_name(path));

        let kind = match typeflag {
            b'0' | b'7' => {
                if path.last() == Some(&b'/') {
                    return Err(Error::TarMalformed {
                        entry: entry(),
                        offset,
                        reason: format!(
                            "regular file entry (type '{}') has a name ending in '/'",
                            typeflag as char
                        ),
                    });
                }
                EntryKind::Regular
            }
            0 if path.last() == Some(&b'/') => EntryKind::Directory,
            0 => EntryKind::Regular,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'S' | b'M' | b'V' | b'D' | b'N' => {
                let feature = match typeflag {
                    b'S' => "GNU sparse file (type 'S'); sparse entries are rejected",
                    b'M' => "GNU multi-volume continuation (type 'M')",
                    b'V' => "GNU volume label (type 'V')",
                    b'D' => "GNU incremental dump directory (type 'D')",
                    _ => "old GNU long file names (type 'N')",
                };
                return Err(Error::TarUnsupported {
                    entry: entry(),
                    offset,
                    feature: feature.into(),
                });
            }
            _ => {
                return Err(Error::TarInvalidType {
                    entry: entry(),
                    offset,
                    typeflag,
                })
            }
        };

        let num = |range: std::ops::Range<usize>, name: &'static str| {
            num::parse_numeric(&block[range.clone()])
                .map_err(|e| number_error(e, name, &block[range], entry(), offset))
        };
        let overflow = |name: &'static str, found: i128, max: String| Error::TarOverflow {
            entry: entry(),
            offset,
            field: name,
            found: found.to_string(),
            max,
        };
        let unsigned = |range: std::ops::Range<usize>, name: &'static str| -> Result<u64> {
            let v = num(range, name)?;
            u64::try_from(v).map_err(|_| overflow(name, v, u64::MAX.to_string()))
        };
        let small = |range: std::ops::Range<usize>, name: &'static str| -> Result<u32> {
            let v = num(range, name)?;
            u32::try_from(v).map_err(|_| overflow(name, v, u32::MAX.to_string()))
        };

        let mode = small(field::MODE, "mode")?;
        let uid = match pax.uid.or(global.uid) {
            Some(v) => v,
            None => unsigned(field::UID, "uid")?,
        };
        let gid = match pax.gid.or(global.gid) {
            Some(v) => v,
            None => unsigned(field::GID, "gid")?,
        };
        let size = match pax.size.or(global.size) {
            Some(v) => v,
            None => unsigned(field::SIZE, "size")?,
        };
        let mtime = match pax.mtime.or(global.mtime) {
            Some(t) => t,
            None => {
                let v = num(field::MTIME, "mtime")?;
                let secs =
                    i64::try_from(v).map_err(|_| overflow("mtime", v, i64::MAX.to_string()))?;
                Timestamp { secs, nanos: 0 }
            }
        };
        let (dev_major, dev_minor) = if kind.is_device() && !v7 {
            (
                small(field::DEVMAJOR, "devmajor")?,
                small(field::DEVMINOR, "devminor")?,
            )
        } else {
            (0, 0)
        };
        if size != 0 && !kind.has_data() {
            return Err(Error::TarMalformed {
                entry: entry(),
                offset,
                reason: format!(
                    "{} entry has size {size}; only regular files may carry data",
                    kind_name(kind)
                ),
            });
        }
        let pad = padding(size);
        let data_start = offset + BLOCK_SIZE as u64;
        let total = size
            .checked_add(pad)
            .filter(|t| data_start.checked_add(*t).is_some());
        let total = total.ok_or_else(|| Error::TarOverflow {
            entry: entry(),
            offset,
            field: "size",
            found: size.to_string(),
            max: format!(
                "{} at this offset",
                (u64::MAX - data_start).saturating_sub(511)
            ),
        })?;

        h.link_name.clear();
        match pax
            .linkpath
            .as_ref()
            .or(self.long_link.as_ref())
            .or(global.linkpath.as_ref())
        {
            Some(l) => h.link_name.extend_from_slice(l),
            None => h
                .link_name
                .extend_from_slice(until_nul(&block[field::LINKNAME])),
        }
        h.uname.clear();
        h.gname.clear();
        match pax.uname.as_ref().or(global.uname.as_ref()) {
            Some(u) => h.uname.extend_from_slice(u),
            None if !v7 => h.uname.extend_from_slice(until_nul(&block[field::UNAME])),
            None => {}
        }
        match pax.gname.as_ref().or(global.gname.as_ref()) {
            Some(g) => h.gname.extend_from_slice(g),
            None if !v7 => h.gname.extend_from_slice(until_nul(&block[field::GNAME])),
            None => {}
        }
        h.xattrs.clear();
        if global.xattrs.is_empty() {
            // The per-entry overrides are cleared below anyway: move, do not copy.
            std::mem::swap(&mut h.xattrs, &mut self.pax.xattrs);
        } else {
            h.xattrs.extend(global.xattrs.iter().cloned());
            for (name, value) in self.pax.xattrs.drain(..) {
                pax::set_xattr(&mut h.xattrs, &name, value);
            }
        }
        h.kind = kind;
        h.mode = mode;
        h.uid = uid;
        h.gid = gid;
        h.size = size;
        h.mtime = mtime;
        h.dev_major = dev_major;
        h.dev_minor = dev_minor;
        h.offset = self.entry_start.unwrap_or(offset);
        h.header_offset = offset;

        self.entry_size = total;
        self.state = State::Data {
            remaining: size,
            pad: pad as u32,
        };
        self.pax.clear();
        self.long_name = None;
        self.long_link = None;
        self.pending_ext = None;
        self.entry_start = None;
        self.meta = 0;
        Ok(())
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Regular => "regular file",
        EntryKind::Hardlink => "hard link",
        EntryKind::Symlink => "symlink",
        EntryKind::CharDevice => "character device",
        EntryKind::BlockDevice => "block device",
        EntryKind::Directory => "directory",
        EntryKind::Fifo => "FIFO",
    }
}

fn number_error(
    e: NumError,
    name: &'static str,
    raw: &[u8],
    entry: Option<String>,
    offset: u64,
) -> Error {
    match e {
        NumError::Syntax => Error::TarBadNumber {
            entry,
            offset,
            field: name,
            found: format!("{:?}", display_name(raw)),
        },
        NumError::Overflow => Error::TarOverflow {
            entry,
            offset,
            field: name,
            found: display_name(raw),
            max: u64::MAX.to_string(),
        },
    }
}

/// Bytes of zero padding after `size` data bytes.
pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK_SIZE as u64 - size % BLOCK_SIZE as u64) % BLOCK_SIZE as u64
}

fn until_nul(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

fn is_zero_block(block: &[u8; BLOCK_SIZE]) -> bool {
    // Word-wise: this runs for every header.
    block
        .chunks_exact(8)
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
}

/// Accepts the stored checksum if it equals the unsigned or the signed byte sum (the checksum
/// field itself counted as eight spaces), like GNU tar.
fn verify_checksum(block: &[u8; BLOCK_SIZE], offset: u64) -> Result<()> {
    let raw = &block[field::CHKSUM];
    let stored = num::parse_numeric(raw)
        .ok()
        .filter(|v| (0..=0o7777777).contains(v));
    let unsigned: u64 = block.iter().map(|&b| u64::from(b)).sum::<u64>()
        - raw.iter().map(|&b| u64::from(b)).sum::<u64>()
        + 8 * u64::from(b' ');
    if stored == Some(i128::from(unsigned)) {
        return Ok(());
    }
    let signed: i64 = block.iter().map(|&b| i64::from(b as i8)).sum::<i64>()
        - raw.iter().map(|&b| i64::from(b as i8)).sum::<i64>()
        + 8 * i64::from(b' ');
    if stored == Some(i128::from(signed)) {
        return Ok(());
    }
    let name = until_nul(&block[field::NAME]);
    Err(match stored {
        Some(expected) => Error::TarChecksum {
            entry: (!name.is_empty()).then(|| display_name(name)),
            offset,
            expected: expected as u64,
            unsigned,
            signed,
        },
        None => Error::TarBadNumber {
            entry: (!name.is_empty()).then(|| display_name(name)),
            offset,
            field: "checksum",
            found: format!("{:?}", display_name(raw)),
        },
    })
}

/// Reads a whole archive held in memory into `(header, data)` pairs, calling
/// [`TarReader::finish`] at the end. Copies every entry's data; meant for tests and small
/// archives, not for streaming.
pub fn read_archive(input: &[u8], limits: Limits) -> Result<Vec<(Header, Vec<u8>)>> {
    let mut reader = TarReader::new(limits);
    let mut out: Vec<(Header, Vec<u8>)> = Vec::new();
    let mut rest = input;
    loop {
        let (used, event) = reader.next_event(rest)?;
        rest = &rest[used..];
        match event {
            Event::Entry(h) => out.push((h.clone(), Vec::new())),
            Event::Data(d) => {
                if let Some(last) = out.last_mut() {
                    last.1.extend_from_slice(d);
                }
            }
            Event::EntryEnd => {}
            Event::NeedMore | Event::End => break,
        }
    }
    reader.finish()?;
    Ok(out)
}
