//! Tar archives: a streaming, sans-I/O reader and a deterministic, streaming writer.
//!
//! # Reading
//!
//! [`TarReader`] is a push parser. Hand it whatever bytes you have — one byte, 7 bytes, a whole
//! file — and it answers with the number of bytes it consumed and one [`Event`]:
//!
//! ```
//! use stevedore_core::tar::{self, Event, Format, Header, EntryKind, Limits, TarReader};
//!
//! let mut file = Header::new(EntryKind::Regular, "hello.txt");
//! file.size = 6;
//! let archive = tar::write_archive(Format::Pax, &[(file, b"hello\n".as_slice())]).unwrap();
//!
//! let mut reader = TarReader::new(Limits::default());
//! let mut names = Vec::new();
//! for chunk in archive.chunks(7) {
//!     let mut input = chunk;
//!     loop {
//!         let (used, event) = reader.next_event(input).unwrap();
//!         input = &input[used..];
//!         match event {
//!             Event::Entry(header) => names.push(header.path.clone()),
//!             Event::Data(_bytes) => {} // borrowed from `input`, never copied
//!             Event::EntryEnd => {}
//!             Event::NeedMore | Event::End => break,
//!         }
//!     }
//! }
//! reader.finish().unwrap(); // at EOF: Ok if the archive was complete
//! assert_eq!(names, [b"hello.txt".to_vec()]);
//! ```
//!
//! Each entry yields `Entry(&Header)`, then zero or more `Data(&[u8])` slices of the caller's
//! input (or, for the holes of a sparse file, of a static zero buffer: see "Sparse files"),
//! then `EntryEnd` once the entry's data and its padding to 512 bytes are consumed. Two
//! zero blocks yield `End`; after `End` the reader consumes nothing more (GNU tar pads archives
//! to a 10240-byte record with zeros; what to do with trailing bytes is the caller's choice).
//! `NeedMore` always comes with all of the input consumed (partial blocks and extension records
//! are buffered inside the reader, file data never is).
//!
//! At end of input call [`TarReader::finish`]: it accepts an archive that stops at an entry
//! boundary without the two zero blocks (GNU tar and Go accept those too) and otherwise reports
//! [`Error::TarTruncated`](crate::Error::TarTruncated) naming the unfinished entry and its
//! offset.
//!
//! Formats understood: V7, ustar (with the 155-byte prefix joined as `prefix/name`), star, GNU
//! (`L` long names, `K` long link names, base-256 numbers, `S` sparse files) and PAX (`x` per
//! entry, `g` global, GNU's sparse records). Entry names are raw bytes; nothing assumes UTF-8.
//!
//! Precedence of values, highest first: the entry's own PAX `x` records, GNU `L`/`K` long
//! names, global PAX `g` records, the header block. PAX values are applied literally, as GNU tar
//! and Go do: an empty `path` gives an empty name, an empty number is an error (POSIX's
//! "empty value deletes the keyword" is not implemented).
//!
//! PAX keys read: `path`, `linkpath`, `size`, `uid`, `gid`, `uname`, `gname`, `mtime`
//! (fractional seconds, negative allowed), `SCHILY.xattr.<name>` (value bytes kept as they are,
//! NULs included) and `LIBARCHIVE.xattr.<percent-encoded name>` (base64 value; when both forms
//! name the same attribute the later record wins, keeping the first position). `atime` and
//! `ctime` are ignored, as are unknown keys. `path`, `linkpath`, `uname` and `gname` must not
//! contain NUL. `GNU.sparse.*` keys are read as described under "Sparse files"; an unknown
//! one is [`Error::TarUnsupported`](crate::Error::TarUnsupported), as are the GNU
//! multi-volume, volume-label, dumpdir and old long-name types (`M`, `V`, `D`, `N`).
//!
//! # Sparse files
//!
//! GNU tar's sparse entries (`tar --sparse`) are presented as regular files: the header's
//! `size` is the logical (real) size and the `Data` events give the logical content, holes as
//! zero bytes, so consumers need not know. Zero fill comes from a static buffer instead of the
//! input ([`is_hole`] tells such slices apart, and those events consume no input); a hole is
//! never buffered, whatever its size. [`Header::sparse`] marks these entries; the raw archive
//! bytes are untouched (digests over them do not change). Formats read, as GNU tar 1.34 and
//! Go's archive/tar write and read them:
//! * old GNU (typeflag `S`, GNU magic only): four map descriptors in the header, more in
//!   extension blocks of 21 while `isextended` is set, the logical size in `realsize`;
//! * PAX 0.0 (`GNU.sparse.size`, `GNU.sparse.numblocks`, alternating `GNU.sparse.offset` /
//!   `GNU.sparse.numbytes` records) and 0.1 (the same with one `GNU.sparse.map=o,n,o,n…`);
//! * PAX 1.0 (`GNU.sparse.major=1`, `minor=0`, `GNU.sparse.realsize`): the map is at the start
//!   of the entry's data as decimal lines (count, then offset and length of each fragment),
//!   zero-padded to 512 bytes, followed by the fragments.
//!
//! `GNU.sparse.name` (0.1, 1.0) replaces the entry's name (it beats a PAX `path`). The
//! `Entry` event of an entry whose map follows its header (extension blocks, 1.0) comes once
//! the map is read and checked. The map is validated strictly, since readers that disagree
//! about it disagree about file content: numbers are plain decimals (PAX) or header numbers
//! (old GNU); fragments are in order and do not overlap (each starts at or after the previous
//! one's end; zero-length fragments, which GNU tar writes at the end, are allowed); each ends
//! within the logical size, which is at most 2^63 - 1; their lengths add up to exactly the
//! stored data; the version is 0.0, 0.1 or 1.0; the PAX records are complete and do not
//! contradict each other; the padding after a 1.0 map is zero. Where GNU tar and Go read an
//! old GNU map differently (a descriptor that is half empty, an empty descriptor followed by
//! a set `isextended`) the entry is malformed. Sparse records on anything but a regular file,
//! in a global header or together with typeflag `S` are malformed too. At most
//! [`Limits::max_sparse_entries`] fragments are kept.
//!
//! Strictness, so that no two readers can disagree about where an entry's data ends:
//! * only regular files carry data: a hard link, symlink, device, directory or FIFO whose
//!   effective size is not 0 is [`Error::TarMalformed`](crate::Error::TarMalformed) (GNU tar
//!   would skip such data, Go would parse it as headers);
//! * a regular file (`0`, `7`) whose name ends in `/` is malformed (GNU tar extracts it as a
//!   directory, Go as a file); the old `\0` typeflag with a trailing `/` is a directory, as in
//!   V7 tar, Go and GNU tar;
//! * one zero block followed by a header is malformed (GNU tar stops at the lone zero block,
//!   other readers continue);
//! * an extended header (`x`, `L`, `K`) must be followed by an entry.
//!
//! The checksum is accepted when the stored value equals either the unsigned or the signed
//! byte sum, as GNU tar does. Numeric fields are octal (leading and trailing spaces or NULs
//! allowed, an empty field is 0) or GNU base-256. Device numbers are only read for character
//! and block devices.
//!
//! Limits ([`Limits`]) cap each extension record (PAX or GNU long name), all header metadata
//! of one entry (its header blocks plus extension data), the global PAX state and the sparse
//! map of one entry.
//!
//! # Writing
//!
//! [`TarWriter`] hands back the bytes to write; the caller writes file data itself:
//! `header(&h)` → header bytes, `data(chunk)` for each chunk (checked against `h.size`, passed
//! through), `end_entry()` → zero padding to 512, and finally `finish()` → two zero blocks.
//! [`write_archive`] does all of that into a `Vec<u8>`.
//!
//! Output is deterministic: equal headers give equal bytes. [`Format`] chooses the encoding:
//! * [`Format::Ustar`]: POSIX ustar only; anything that does not fit is an error.
//! * [`Format::Pax`]: ustar, plus one PAX `x` header before the entry when needed: a path that
//!   is not ASCII or does not fit name/prefix, a link name that is not ASCII or longer than
//!   100 bytes, size ≥ 8 GiB, uid/gid > 2097151, a user/group name that is not ASCII or longer
//!   than 32 bytes, an mtime before 1970, after 2242 or with nanoseconds, and every xattr (as
//!   `SCHILY.xattr.<name>`, value bytes verbatim). Records come in this fixed order: `path`,
//!   `linkpath`, `size`, `uid`, `gid`, `uname`, `gname`, `mtime`, then the xattrs in the
//!   header's order. The PAX header block is named `PaxHeaders.0/<last path component>` (bytes
//!   outside printable ASCII replaced by `_`, cut at 100 bytes; Go's archive/tar uses the same
//!   name with the directory in front), with mode 0644, uid/gid 0, mtime 0, empty user/group
//!   names. In the entry's own ustar block, a name that went to PAX holds its first bytes (as
//!   GNU tar does), a number that went to PAX holds 0, and the mtime field holds the whole
//!   seconds when they fit. `mtime` records are written as Go writes them: `secs[.frac]` with
//!   trailing zeros removed, times before 1970 as a negative decimal (`-1.25`).
//! * [`Format::Gnu`]: GNU tar's `--format=gnu` layout: magic `ustar  \0`, `L`/`K` long name
//!   records (named `././@LongLink`, mode 0644, everything else 0 or empty, written `K` first)
//!   with the first 100 bytes of the name in the entry's own header, base-256 for numbers that
//!   do not fit octal, empty device fields for entries that are not devices. Xattrs and
//!   sub-second mtimes are errors (GNU format has no place for them).
//!
//! Modes are written as given (GNU tar writes the 12 permission bits only), so reading a
//! GNU-tar archive and writing each entry back in the same format reproduces it byte for byte
//! (see `tests/tar_gnu.rs` for what is compared).

mod num;
mod pax;
mod reader;
mod writer;

pub use pax::base64_decode;
pub use reader::{is_hole, read_archive, Event, TarReader};
pub use writer::{write_archive, TarWriter};

/// Size of a tar block; headers are one block, data is padded to a multiple of it.
pub const BLOCK_SIZE: usize = 512;

/// What an entry is. Typeflags `0`, `\0` and `7` (contiguous file) are all [`Regular`].
///
/// [`Regular`]: EntryKind::Regular
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EntryKind {
    /// A regular file (`0`; also `\0` and `7` when read). The only kind that carries data.
    #[default]
    Regular,
    /// A hard link (`1`) to `link_name`, an earlier entry of the archive.
    Hardlink,
    /// A symbolic link (`2`) whose target is `link_name`.
    Symlink,
    /// A character device (`3`) with `dev_major`/`dev_minor`.
    CharDevice,
    /// A block device (`4`) with `dev_major`/`dev_minor`.
    BlockDevice,
    /// A directory (`5`).
    Directory,
    /// A FIFO (`6`).
    Fifo,
}

impl EntryKind {
    /// The typeflag the writer uses for this kind.
    pub fn typeflag(self) -> u8 {
        match self {
            EntryKind::Regular => b'0',
            EntryKind::Hardlink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Directory => b'5',
            EntryKind::Fifo => b'6',
        }
    }

    /// Whether entries of this kind carry data (only regular files do).
    pub fn has_data(self) -> bool {
        self == EntryKind::Regular
    }

    /// Whether `dev_major`/`dev_minor` mean something for this kind.
    pub fn is_device(self) -> bool {
        matches!(self, EntryKind::CharDevice | EntryKind::BlockDevice)
    }
}

/// A point in time as seconds since the Unix epoch plus nanoseconds, always normalized so
/// that `nanos < 1_000_000_000` (1.5 s before the epoch is `secs: -2, nanos: 500_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn new(secs: i64, nanos: u32) -> Self {
        Timestamp { secs, nanos }
    }
}

/// One archive entry's metadata, as read (effective values, after PAX and GNU overrides) or
/// as to be written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Entry name, raw bytes (ustar prefix already joined as `prefix/name`).
    pub path: Vec<u8>,
    /// Target of a hard link or symlink, raw bytes; empty for other kinds.
    pub link_name: Vec<u8>,
    pub kind: EntryKind,
    /// The mode field as stored (GNU tar stores the 12 permission bits; old archives may
    /// include file-type bits).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// User name, raw bytes (empty when the archive has none).
    pub uname: Vec<u8>,
    /// Group name, raw bytes.
    pub gname: Vec<u8>,
    /// Number of data bytes (uncompressed, without padding). Always 0 for kinds other than
    /// [`EntryKind::Regular`]. For a sparse entry read from an archive, the logical size
    /// (holes included), not what the archive stores.
    pub size: u64,
    pub mtime: Timestamp,
    /// Device numbers; 0 unless `kind` is a character or block device.
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes `(name, value)` in archive order; values are arbitrary bytes.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Reader only: archive offset of the first block belonging to this entry (its first
    /// PAX or GNU extension header if it has one, else its own header). Ignored by the writer.
    pub offset: u64,
    /// Reader only: archive offset of the entry's own (ustar) header block; its data starts
    /// 512 bytes later. Ignored by the writer.
    pub header_offset: u64,
    /// Reader only: the entry was stored as a GNU sparse file. Its `Data` events still give
    /// the whole logical content, but the archive does not hold `size` contiguous bytes at
    /// [`data_offset`](Self::data_offset) (old GNU extension blocks come first, a 1.0 map
    /// starts the data, holes are not stored). Ignored by the writer.
    pub sparse: bool,
}

impl Header {
    /// A header with the given kind and path, mode 0755 for directories, 0777 for symlinks and
    /// 0644 otherwise, and everything else zero or empty.
    pub fn new(kind: EntryKind, path: impl Into<Vec<u8>>) -> Header {
        let mode = match kind {
            EntryKind::Directory => 0o755,
            EntryKind::Symlink => 0o777,
            _ => 0o644,
        };
        Header {
            path: path.into(),
            kind,
            mode,
            ..Header::default()
        }
    }

    /// Archive offset of the entry's first data byte (for a [`sparse`](Self::sparse) entry,
    /// of its first stored byte after its own header block).
    pub fn data_offset(&self) -> u64 {
        self.header_offset + BLOCK_SIZE as u64
    }
}

/// Caps applied by [`TarReader`] before buffering header metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest data size of one PAX (`x`, `g`) header or GNU long name/link (`L`, `K`)
    /// record. Default 1 MiB.
    pub max_extension_size: u64,
    /// Largest total header metadata of one entry: every header block (512 bytes each) plus
    /// the data of every extension record before it. Also caps the global PAX state kept
    /// across entries. Default 2 MiB.
    pub max_entry_metadata: u64,
    /// Largest number of fragments in the map of one sparse entry (each costs 16 bytes of
    /// memory while the entry is read). Default 65536 (1 MiB of map).
    pub max_sparse_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_extension_size: 1 << 20,
            max_entry_metadata: 2 << 20,
            max_sparse_entries: 0,
        }
    }
}

/// Output encoding of [`TarWriter`]; see the module documentation for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// POSIX ustar; headers that do not fit are errors.
    Ustar,
    /// ustar plus a PAX `x` header when needed (long or non-ASCII names, big numbers,
    /// sub-second times, xattrs). The default choice.
    Pax,
    /// GNU tar's `--format=gnu`: `L`/`K` long names, base-256 numbers, no xattrs.
    Gnu,
}

/// Field positions inside a header block.
pub(crate) mod field {
    use std::ops::Range;
    pub const NAME: Range<usize> = 0..100;
    pub const MODE: Range<usize> = 100..108;
    pub const UID: Range<usize> = 108..116;
    pub const GID: Range<usize> = 116..124;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const MAGIC: Range<usize> = 257..263;
    pub const VERSION: Range<usize> = 263..265;
    pub const UNAME: Range<usize> = 265..297;
    pub const GNAME: Range<usize> = 297..329;
    pub const DEVMAJOR: Range<usize> = 329..337;
    pub const DEVMINOR: Range<usize> = 337..345;
    pub const PREFIX: Range<usize> = 345..500;
    /// star's shorter prefix (followed by atime and ctime).
    pub const STAR_PREFIX: Range<usize> = 345..476;
    pub const STAR_TRAILER: Range<usize> = 508..512;
    /// Old GNU sparse header (typeflag `S`): four `(offset, numbytes)` descriptors of 12 + 12
    /// bytes, the `isextended` flag and the logical size.
    pub const GNU_SPARSE: usize = 386;
    pub const GNU_ISEXTENDED: usize = 482;
    pub const GNU_REALSIZE: Range<usize> = 483..495;
    /// Old GNU sparse extension block: 21 descriptors, then `isextended`.
    pub const EXT_SPARSE_COUNT: usize = 21;
    pub const EXT_ISEXTENDED: usize = 504;
}

/// A name for error messages: valid UTF-8 kept, other bytes and controls as `\xNN`, at most
/// about 200 characters.
pub(crate) fn display_name(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    const MAX: usize = 200;
    let mut out = String::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, &rest[rest.len()..]),
            Err(e) => {
                let (v, r) = rest.split_at(e.valid_up_to());
                let bad_len = e.error_len().unwrap_or(r.len());
                // from_utf8 said this prefix is valid, so the fallback is never used.
                (std::str::from_utf8(v).unwrap_or(""), &r[..bad_len])
            }
        };
        for c in valid.chars() {
            if out.len() >= MAX {
                out.push('…');
                return out;
            }
            if c.is_control() {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                out.push(c);
            }
        }
        for byte in bad {
            if out.len() >= MAX {
                out.push('…');
                return out;
            }
            let _ = write!(out, "\\x{byte:02x}");
        }
        rest = &rest[valid.len() + bad.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_escapes_invalid_utf8_and_controls() {
        assert_eq!(display_name(b"caf\xc3\xa9"), "café");
        assert_eq!(display_name(b"caf\xe9.txt"), "caf\\xe9.txt");
        assert_eq!(display_name(b"a\nb"), "a\\x0ab");
        for long in [vec![b'a'; 500], vec![0xff; 1 << 20]] {
            let shown = display_name(&long);
            assert!(shown.ends_with('…') && shown.len() < 210, "{shown}");
        }
    }

    #[test]
    fn kinds_map_to_typeflags() {
        let all = [
            (EntryKind::Regular, b'0'),
            (EntryKind::Hardlink, b'1'),
            (EntryKind::Symlink, b'2'),
            (EntryKind::CharDevice, b'3'),
            (EntryKind::BlockDevice, b'4'),
            (EntryKind::Directory, b'5'),
            (EntryKind::Fifo, b'6'),
        ];
        for (kind, flag) in all {
            assert_eq!(kind.typeflag(), flag);
            assert_eq!(kind.has_data(), flag == b'0');
            assert_eq!(kind.is_device(), flag == b'3' || flag == b'4');
        }
    }
}
