//! The streaming, sans-I/O tar reader.

use super::field;
use super::num::{self, NumError};
use super::pax::{self, Overrides, SparseRecords};
use super::{display_name, EntryKind, Header, Limits, Timestamp, BLOCK_SIZE};
use crate::error::{Error, Result};

/// What [`TarReader::next_event`] found. `Entry` borrows the reader, `Data` borrows the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'h, 'd> {
    /// Every byte of the input was consumed (and buffered if need be); call again with more.
    NeedMore,
    /// A new entry begins. Clone the header to keep it past the next call.
    Entry(&'h Header),
    /// The next bytes of the current entry's data: a sub-slice of the input, never copied; or,
    /// inside a hole of a sparse entry, zeros from a static buffer ([`is_hole`]), consuming
    /// no input.
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
    /// Inside an entry: `remaining` data bytes, then `EntryEnd`, then `pad` padding bytes.
    Data { remaining: u64, pad: u32 },
    /// Skipping the padding after an entry's data (its `EntryEnd` was reported).
    DataPadding { remaining: u32 },
    /// Reading the extension blocks of an old GNU sparse header (buffered in `block`).
    SparseExt,
    /// Reading a PAX 1.0 sparse map from the start of the entry's data.
    SparseMap(MapState),
    /// Inside a sparse entry: stored fragments and zero-filled holes, then padding.
    Sparse(SparseState),
    /// The end-of-archive marker was read (or `finish` succeeded).
    End,
}

/// Where the PAX 1.0 map reader is: decimal lines (count, then offset and length of each
/// fragment), then zero padding to the next block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MapState {
    /// Stored bytes of the entry not read yet (map, its padding and the fragments).
    remaining: u64,
    /// Map bytes read so far.
    read: u64,
    /// Fragments announced by the first line; `None` until it is read.
    count: Option<u64>,
    /// Offset of the fragment whose length comes next.
    half: Option<u64>,
    /// The number being read and its digit count.
    value: u64,
    digits: u8,
    /// All lines read: skipping the zero padding.
    padding: bool,
}

/// Progress through a sparse entry's logical content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SparseState {
    /// Index in `sparse_map` of the next fragment.
    next: usize,
    /// Logical offset of the next byte to report.
    logical: u64,
    /// Stored bytes left in the current fragment (0 in a hole).
    fragment: u64,
    /// Stored bytes left in the whole entry.
    stored: u64,
    pad: u32,
}

/// How a sparse entry's map is stored.
enum SparseFormat {
    /// Typeflag `S`; `extended` when extension blocks follow the header.
    OldGnu { extended: bool },
    /// PAX 0.0 / 0.1: the map is in the PAX records.
    Pax0(Vec<u64>),
    /// PAX 1.0: the map starts the entry's data.
    Pax1,
}

/// Internal event, free of borrows so errors can be recorded before building [`Event`].
enum Ev {
    NeedMore,
    Entry,
    Data(usize, usize),
    /// Zero fill of this many bytes (a hole of a sparse entry).
    Hole(usize),
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
    /// Data bytes the current entry stores (its size field; less than `header.size` for a
    /// sparse entry).
    stored_size: u64,
    /// The fragments `(offset, length)` of the current sparse entry, in order.
    sparse_map: Vec<(u64, u64)>,
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
            stored_size: 0,
            sparse_map: Vec::new(),
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
            Ev::Hole(len) => Event::Data(&ZEROS[..len]),
            Ev::EntryEnd => Event::EntryEnd,
            Ev::End => Event::End,
        };
        Ok((used, event))
    }

    /// Adds input to the partly buffered block; the whole block once it has 512 bytes.
    fn buffer_block(&mut self, input: &[u8], used: &mut usize) -> Option<[u8; BLOCK_SIZE]> {
        let n = (BLOCK_SIZE - self.block_len).min(input.len() - *used);
        self.block[self.block_len..self.block_len + n].copy_from_slice(&input[*used..*used + n]);
        self.block_len += n;
        self.pos += n as u64;
        *used += n;
        if self.block_len < BLOCK_SIZE {
            return None;
        }
        self.block_len = 0;
        Some(self.block)
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
            State::Data { remaining, .. } => truncated(
                Some(display_name(&self.header.path)),
                self.header.header_offset,
                format!(
                    "entry data is missing {remaining} of {} bytes",
                    self.stored_size
                ),
            ),
            State::DataPadding { remaining } => {
                let total = (self.entry_size - self.stored_size) as u32;
                if remaining == total {
                    // Cut right after the last entry's data: a clean end for Go (io.EOF
                    // before any padding byte), so for docker and umoci too.
                    Ok(())
                } else {
                    truncated(
                        Some(display_name(&self.header.path)),
                        self.header.header_offset,
                        format!("padding after the entry's data is missing {remaining} of {total} bytes"),
                    )
                }
            }
            State::SparseExt => truncated(
                Some(display_name(&self.header.path)),
                self.header.header_offset,
                format!("sparse extension block has {} of 512 bytes", self.block_len),
            ),
            State::SparseMap(m) => truncated(
                Some(display_name(&self.header.path)),
                self.header.header_offset,
                format!(
                    "sparse map is incomplete after {} bytes ({} of {} stored bytes missing)",
                    m.read, m.remaining, self.stored_size
                ),
            ),
            State::Sparse(s) => {
                let entry = Some(display_name(&self.header.path));
                let offset = self.header.header_offset;
                let reason = if s.stored > 0 {
                    format!(
                        "sparse entry data is missing {} of {} stored bytes",
                        s.stored, self.stored_size
                    )
                } else if s.pad > 0 {
                    format!(
                        "padding after the entry's data is missing {} of {} bytes",
                        s.pad,
                        self.entry_size - self.stored_size
                    )
                } else {
                    // Everything was consumed, but the caller stopped before the last hole
                    // and `EntryEnd` (call `next_event` until `NeedMore`).
                    "the end of the sparse entry was not read".into()
                };
                truncated(entry, offset, reason)
            }
        }
    }

    /// The name of the entry being assembled, if an extension header already gave it.
    fn pending_name(&self) -> Option<String> {
        self.pax
            .sparse
            .name
            .as_deref()
            .or(self.pax.path.as_deref())
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
                    // The entry ends with its data; its padding is skipped after, so that an
                    // archive cut right there (no padding, no end marker: umoci ≤ 0.4.7's
                    // layers) ends cleanly at `finish`, as Go's archive/tar reads it.
                    self.state = if pad > 0 {
                        State::DataPadding { remaining: pad }
                    } else {
                        State::Header
                    };
                    return Ok((used, Ev::EntryEnd));
                }
                State::DataPadding { remaining } => {
                    if avail == 0 {
                        return Ok((used, Ev::NeedMore));
                    }
                    let n = (remaining as usize).min(avail);
                    self.pos += n as u64;
                    used += n;
                    let remaining = remaining - n as u32;
                    self.state = if remaining > 0 {
                        State::DataPadding { remaining }
                    } else {
                        State::Header
                    };
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
                        let Some(block) = self.buffer_block(input, &mut used) else {
                            return Ok((used, Ev::NeedMore));
                        };
                        offset = self.pos - BLOCK_SIZE as u64;
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
                State::SparseExt => {
                    let Some(block) = self.buffer_block(input, &mut used) else {
                        return Ok((used, Ev::NeedMore));
                    };
                    if self.on_sparse_ext(&block, self.pos - BLOCK_SIZE as u64)? {
                        return Ok((used, Ev::Entry));
                    }
                }
                State::SparseMap(m) => {
                    if m.remaining == 0 {
                        return Err(self.sparse_error(
                            self.header.header_offset,
                            format!(
                                "sparse map does not end within the entry's {} stored bytes",
                                self.stored_size
                            ),
                        ));
                    }
                    if avail == 0 {
                        return Ok((used, Ev::NeedMore));
                    }
                    let n = m.remaining.min(avail as u64) as usize;
                    let (consumed, done) = self.read_map(&input[used..used + n], m)?;
                    self.pos += consumed as u64;
                    used += consumed;
                    if done {
                        return Ok((used, Ev::Entry));
                    }
                }
                State::Sparse(mut s) => {
                    if s.fragment > 0 {
                        if avail == 0 {
                            return Ok((used, Ev::NeedMore));
                        }
                        let n = s.fragment.min(avail as u64) as usize;
                        s.fragment -= n as u64;
                        s.stored -= n as u64;
                        s.logical += n as u64;
                        self.pos += n as u64;
                        self.state = State::Sparse(s);
                        return Ok((used + n, Ev::Data(used, n)));
                    }
                    let hole_end = match self.sparse_map.get(s.next) {
                        Some(&(offset, len)) if offset == s.logical => {
                            s.next += 1;
                            s.fragment = len;
                            self.state = State::Sparse(s);
                            continue;
                        }
                        Some(&(offset, _)) => offset,
                        None => self.header.size,
                    };
                    if s.logical < hole_end {
                        // The map was validated, so holes end where fragments (or the file)
                        // begin; zeros are never buffered, whatever the hole's size.
                        let n = (hole_end - s.logical).min(ZEROS.len() as u64) as usize;
                        s.logical += n as u64;
                        self.state = State::Sparse(s);
                        return Ok((used, Ev::Hole(n)));
                    }
                    if s.pad > 0 {
                        if avail == 0 {
                            return Ok((used, Ev::NeedMore));
                        }
                        let n = (s.pad as usize).min(avail);
                        self.pos += n as u64;
                        used += n;
                        s.pad -= n as u32;
                        self.state = State::Sparse(s);
                        if s.pad > 0 {
                            return Ok((used, Ev::NeedMore));
                        }
                    }
                    self.state = State::Header;
                    return Ok((used, Ev::EntryEnd));
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
        let ready = self.build_entry(block, offset, typeflag)?;
        // A sparse entry whose map follows the header reports `Entry` once the map is read.
        Ok(ready.then_some(Ev::Entry))
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
                    .sparse
                    .name
                    .as_deref()
                    .or(self.pax.path.as_deref())
                    .or(self.long_name.as_deref())
                    .map(<[u8]>::to_vec);
                let cx = pax::Context {
                    offset,
                    entry: known.as_deref(),
                    max_sparse_entries: self.limits.max_sparse_entries,
                };
                let target = if kind == ExtKind::Pax {
                    &mut self.pax
                } else {
                    &mut self.global
                };
                pax::parse_records(&self.ext, target, &cx)?;
                if kind == ExtKind::Global && self.global.sparse.any {
                    // A map for every following entry makes no sense; no writer does it.
                    return Err(Error::TarMalformed {
                        entry: None,
                        offset,
                        reason: "GNU.sparse records in a global PAX header".into(),
                    });
                }
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

    /// Fills `self.header` from the block and the pending overrides, then moves to `Data` (or
    /// to reading a sparse map). Returns whether the entry is ready to report.
    fn build_entry(&mut self, block: &[u8; BLOCK_SIZE], offset: u64, typeflag: u8) -> Result<bool> {
        let sparse_records = std::mem::take(&mut self.pax.sparse);
        let magic = &block[field::MAGIC];
        let ustar = magic == b"ustar\0";
        let gnu = magic == b"ustar " && &block[field::VERSION] == b" \0";
        let star = ustar && &block[field::STAR_TRAILER] == b"tar\0";
        let v7 = !ustar && !gnu;

        let h = &mut self.header;
        let (pax, global) = (&self.pax, &self.global);

        // Path: GNU.sparse.name > PAX x > GNU L > PAX g > prefix/name.
        h.path.clear();
        if let Some(p) = sparse_records
            .name
            .as_ref()
            .or(pax.path.as_ref())
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
            b'0' | b'7' | b'S' => {
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
            b'M' | b'V' | b'D' | b'N' => {
                let feature = match typeflag {
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
        let sparse = if typeflag == b'S' {
            if !gnu {
                return Err(Error::TarUnsupported {
                    entry: entry(),
                    offset,
                    feature: "sparse entry (type 'S') without the GNU magic (star's sparse \
                              layout is not read)"
                        .into(),
                });
            }
            if sparse_records.any {
                return Err(Error::TarMalformed {
                    entry: entry(),
                    offset,
                    reason: "old GNU sparse entry (type 'S') also has PAX GNU.sparse records"
                        .into(),
                });
            }
            let real = unsigned(field::GNU_REALSIZE, "realsize")?;
            let extended = block[field::GNU_ISEXTENDED] != 0;
            Some((SparseFormat::OldGnu { extended }, real))
        } else if sparse_records.any {
            if kind != EntryKind::Regular {
                return Err(Error::TarMalformed {
                    entry: entry(),
                    offset,
                    reason: format!("{} entry has PAX GNU.sparse records", kind_name(kind)),
                });
            }
            Some(pax_sparse(sparse_records, entry(), offset)?)
        } else {
            None
        };
        if let Some((_, real)) = &sparse {
            // Go reads sizes as int64: a bigger logical size would be read differently.
            if *real > i64::MAX as u64 {
                return Err(overflow(
                    "realsize",
                    i128::from(*real),
                    i64::MAX.to_string(),
                ));
            }
        }
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
        if sparse.is_some() && self.limits.max_sparse_entries == 0 {
            // Off by default (the project's security rules): a sparse entry's holes cost no
            // archive bytes, so a small layer could claim terabytes.
            return Err(Error::TarUnsupported {
                entry: entry(),
                offset,
                feature: "GNU sparse file (refused by default; allow with a max_sparse_entries \
                          limit above 0)"
                    .into(),
            });
        }
        h.kind = kind;
        h.mode = mode;
        h.uid = uid;
        h.gid = gid;
        h.size = sparse.as_ref().map_or(size, |(_, real)| *real);
        h.mtime = mtime;
        h.dev_major = dev_major;
        h.dev_minor = dev_minor;
        h.offset = self.entry_start.unwrap_or(offset);
        h.header_offset = offset;
        h.sparse = sparse.is_some();

        self.entry_size = total;
        self.stored_size = size;
        self.pax.clear();
        self.long_name = None;
        self.long_link = None;
        self.pending_ext = None;
        self.entry_start = None;
        self.meta = 0;
        self.sparse_map.clear();
        if self.sparse_map.capacity() > 4096 {
            // Do not keep a huge map's memory for the rest of the archive.
            self.sparse_map = Vec::new();
        }
        let Some((format, _)) = sparse else {
            self.state = State::Data {
                remaining: size,
                pad: pad as u32,
            };
            return Ok(true);
        };
        match format {
            SparseFormat::OldGnu { extended } => {
                let descriptors = &block[field::GNU_SPARSE..field::GNU_ISEXTENDED];
                self.read_descriptors(descriptors, extended, offset)?;
                if extended {
                    self.state = State::SparseExt;
                    return Ok(false);
                }
                self.start_sparse(size)?;
            }
            SparseFormat::Pax0(numbers) => {
                for pair in numbers.chunks_exact(2) {
                    self.push_fragment(pair[0], pair[1], offset)?;
                }
                self.start_sparse(size)?;
            }
            SparseFormat::Pax1 => {
                self.state = State::SparseMap(MapState {
                    remaining: size,
                    read: 0,
                    count: None,
                    half: None,
                    value: 0,
                    digits: 0,
                    padding: false,
                });
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// An error about the current sparse entry's map.
    fn sparse_error(&self, offset: u64, reason: String) -> Error {
        Error::TarMalformed {
            entry: Some(display_name(&self.header.path)),
            offset,
            reason,
        }
    }

    fn push_fragment(&mut self, offset: u64, len: u64, at: u64) -> Result<()> {
        if self.sparse_map.len() as u64 >= self.limits.max_sparse_entries {
            return Err(Error::TarLimit {
                entry: Some(display_name(&self.header.path)),
                offset: at,
                what: "sparse map entries",
                limit: self.limits.max_sparse_entries,
                found: self.sparse_map.len() as u64 + 1,
            });
        }
        self.sparse_map.push((offset, len));
        Ok(())
    }

    /// Reads old GNU sparse descriptors (`offset`, `numbytes`: 12 bytes each) from a header
    /// or an extension block at archive offset `at`.
    fn read_descriptors(&mut self, descriptors: &[u8], extended: bool, at: u64) -> Result<()> {
        let mut empty_at = None;
        for (i, d) in descriptors.chunks_exact(24).enumerate() {
            if d.iter().all(|&b| b == 0) {
                empty_at.get_or_insert(i);
                continue;
            }
            // GNU tar stops at the first empty `numbytes`, Go at the first empty `offset`:
            // anything where they could part ways is refused.
            if let Some(first) = empty_at {
                return Err(self.sparse_error(
                    at,
                    format!("sparse descriptor {i} follows the empty descriptor {first}"),
                ));
            }
            if d[0] == 0 || d[12] == 0 {
                return Err(self.sparse_error(at, format!("sparse descriptor {i} is half empty")));
            }
            let number = |raw: &[u8], name: &'static str| -> Result<u64> {
                let entry = || Some(display_name(&self.header.path));
                let v =
                    num::parse_numeric(raw).map_err(|e| number_error(e, name, raw, entry(), at))?;
                u64::try_from(v).map_err(|_| Error::TarOverflow {
                    entry: entry(),
                    offset: at,
                    field: name,
                    found: v.to_string(),
                    max: u64::MAX.to_string(),
                })
            };
            let offset = number(&d[..12], "sparse offset")?;
            let len = number(&d[12..], "sparse numbytes")?;
            self.push_fragment(offset, len, at)?;
        }
        if extended {
            if let Some(first) = empty_at {
                return Err(self.sparse_error(
                    at,
                    format!(
                        "sparse descriptor {first} is empty but isextended is set (GNU tar \
                         would stop there, Go would read the next block)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Handles one old GNU sparse extension block. Returns whether the map is complete (the
    /// entry is then ready to report).
    fn on_sparse_ext(&mut self, block: &[u8; BLOCK_SIZE], offset: u64) -> Result<bool> {
        let extended = block[field::EXT_ISEXTENDED] != 0;
        let descriptors = &block[..field::EXT_SPARSE_COUNT * 24];
        self.read_descriptors(descriptors, extended, offset)?;
        if extended {
            return Ok(false);
        }
        let data = self.stored_size;
        self.start_sparse(data)?;
        Ok(true)
    }

    /// Reads PAX 1.0 map bytes (`bytes` never goes past the entry's stored data). Returns how
    /// many were consumed and whether the map, with its padding, is complete.
    fn read_map(&mut self, bytes: &[u8], mut m: MapState) -> Result<(usize, bool)> {
        const FIELD: &str = "sparse map";
        for (i, &b) in bytes.iter().enumerate() {
            let at = self.pos + i as u64;
            m.read += 1;
            m.remaining -= 1;
            let entry = || Some(display_name(&self.header.path));
            if m.padding {
                if b != 0 {
                    return Err(self.sparse_error(
                        at,
                        "non-zero byte in the padding after the sparse map".into(),
                    ));
                }
            } else if b.is_ascii_digit() {
                // 20 digits hold any u64; more is only leading zeros or an overflow, and
                // the cap keeps a line of a million zeros from being read to its end.
                let value = m
                    .value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')));
                m.value = match value {
                    Some(v) if m.digits < 20 => v,
                    _ => {
                        let found = if m.digits < 20 {
                            format!("{}{}…", m.value, b as char)
                        } else {
                            "with more than 20 digits".into()
                        };
                        return Err(Error::TarOverflow {
                            entry: entry(),
                            offset: at,
                            field: "sparse map number",
                            found,
                            max: u64::MAX.to_string(),
                        });
                    }
                };
                m.digits += 1;
            } else if b == b'\n' && m.digits > 0 {
                let v = m.value;
                m.value = 0;
                m.digits = 0;
                match (m.count, m.half) {
                    (None, _) => {
                        if v > self.limits.max_sparse_entries {
                            return Err(Error::TarLimit {
                                entry: entry(),
                                offset: at,
                                what: "sparse map entries",
                                limit: self.limits.max_sparse_entries,
                                found: v,
                            });
                        }
                        m.count = Some(v);
                    }
                    (Some(_), None) => m.half = Some(v),
                    (Some(_), Some(offset)) => {
                        m.half = None;
                        self.push_fragment(offset, v, at)?;
                    }
                }
                m.padding = m.half.is_none() && m.count == Some(self.sparse_map.len() as u64);
            } else {
                return Err(Error::TarBadNumber {
                    entry: entry(),
                    offset: at,
                    field: FIELD,
                    found: format!(
                        "{:?} where a digit or a newline after one was expected",
                        display_name(&[b])
                    ),
                });
            }
            if m.padding && m.read % BLOCK_SIZE as u64 == 0 {
                self.start_sparse(m.remaining)?;
                return Ok((i + 1, true));
            }
        }
        self.state = State::SparseMap(m);
        Ok((bytes.len(), false))
    }

    /// Checks the complete map against the logical size and the `data` bytes stored after it,
    /// then moves to reading the entry's content.
    fn start_sparse(&mut self, data: u64) -> Result<()> {
        let real = self.header.size;
        let at = self.header.header_offset;
        let mut end = 0u64;
        let mut total = 0u64;
        for (i, &(offset, len)) in self.sparse_map.iter().enumerate() {
            if offset < end {
                return Err(self.sparse_error(
                    at,
                    format!(
                        "sparse map entry {i} (offset {offset}) starts before the end of the \
                         previous one ({end}): entries must be in order and not overlap"
                    ),
                ));
            }
            end = match offset.checked_add(len).filter(|&e| e <= real) {
                Some(e) => e,
                None => {
                    return Err(self.sparse_error(
                        at,
                        format!(
                            "sparse map entry {i} (offset {offset}, {len} bytes) ends past the \
                             real size {real}"
                        ),
                    ))
                }
            };
            // Fragments are disjoint and within `real`, so this cannot overflow.
            total += len;
        }
        if total != data {
            return Err(self.sparse_error(
                at,
                format!("sparse map fragments add up to {total} bytes but the entry stores {data}"),
            ));
        }
        self.state = State::Sparse(SparseState {
            next: 0,
            logical: 0,
            fragment: 0,
            stored: data,
            pad: padding(self.stored_size) as u32,
        });
        Ok(())
    }
}

/// Decides what an entry's PAX `GNU.sparse.*` records mean: the map format (with the map for
/// 0.x) and the logical size.
fn pax_sparse(r: SparseRecords, entry: Option<String>, offset: u64) -> Result<(SparseFormat, u64)> {
    let malformed = |reason: String| Error::TarMalformed {
        entry: entry.clone(),
        offset,
        reason,
    };
    let has_map = r.map.is_some() || !r.pairs.is_empty();
    let version_1 = match (r.major, r.minor) {
        (Some(0), Some(0 | 1)) => false,
        (Some(1), Some(0)) => true,
        // 0.0 and 0.1 have no version records: a map says which.
        (None, None) if has_map => false,
        (Some(major), Some(minor)) => {
            return Err(Error::TarUnsupported {
                entry: entry.clone(),
                offset,
                feature: format!("GNU sparse format {major}.{minor}"),
            })
        }
        (None, None) => {
            return Err(malformed(
                "PAX GNU.sparse records without a sparse map or a format version".into(),
            ))
        }
        _ => {
            return Err(malformed(
                "PAX GNU.sparse.major and GNU.sparse.minor must come together".into(),
            ))
        }
    };
    let real = match (r.size, r.realsize) {
        (Some(a), Some(b)) if a != b => {
            return Err(malformed(format!(
                "PAX GNU.sparse.size {a} and GNU.sparse.realsize {b} disagree"
            )))
        }
        (a, b) => a.or(b).ok_or_else(|| {
            malformed("sparse entry has no GNU.sparse.size or GNU.sparse.realsize".into())
        })?,
    };
    if version_1 {
        if has_map || r.numblocks.is_some() {
            return Err(malformed(
                "sparse format 1.0 keeps its map in the data, yet the PAX header has map \
                 records too"
                    .into(),
            ));
        }
        return Ok((SparseFormat::Pax1, real));
    }
    let numbers = match (r.map, r.pairs.is_empty()) {
        (Some(_), false) => {
            return Err(malformed(
                "both GNU.sparse.map and GNU.sparse.offset/numbytes records".into(),
            ))
        }
        (Some(map), true) => map,
        (None, _) => r.pairs,
    };
    if numbers.len() % 2 != 0 {
        return Err(malformed(
            "sparse map has an offset without its length".into(),
        ));
    }
    let blocks = r
        .numblocks
        .ok_or_else(|| malformed("sparse format 0.x entry has no GNU.sparse.numblocks".into()))?;
    if blocks != (numbers.len() / 2) as u64 {
        return Err(malformed(format!(
            "GNU.sparse.numblocks is {blocks} but the map has {} entries",
            numbers.len() / 2
        )));
    }
    Ok((SparseFormat::Pax0(numbers), real))
}

/// Zero fill for the holes of sparse entries: `Data` events point into it.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Whether a `Data` slice is zero fill for a hole of a sparse entry (it then points into a
/// static buffer, not into the caller's input, and consumed no input). Never true for data
/// that came from the archive.
pub fn is_hole(data: &[u8]) -> bool {
    let zeros = ZEROS.as_ptr_range();
    let range = data.as_ptr_range();
    !data.is_empty() && zeros.start <= range.start && range.end <= zeros.end
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
