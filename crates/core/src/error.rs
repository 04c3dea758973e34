//! The one error type of the core. Each variant carries what was expected and what was found,
//! so a binding can print a useful message without more context.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A digest string did not follow `algorithm:hex` grammar.
    InvalidDigest { input: String, reason: String },
    /// An algorithm name we do not implement.
    UnsupportedAlgorithm { name: String },
    /// Content hashed to something other than what was expected.
    DigestMismatch { expected: String, actual: String },
    /// A binding sent bytes that are not a valid wire record (see `wire`).
    WireMalformed { reason: String },
    /// A tar archive ended inside an entry, a header block or an extension record. `offset` is
    /// where the unfinished structure starts, `end` how many archive bytes there were.
    TarTruncated {
        entry: Option<String>,
        offset: u64,
        end: u64,
        reason: String,
    },
    /// A tar header block whose stored checksum matches neither the unsigned nor the signed sum
    /// of its bytes (GNU tar accepts either).
    TarChecksum {
        entry: Option<String>,
        offset: u64,
        expected: u64,
        unsigned: u64,
        signed: i64,
    },
    /// A numeric tar field (octal, base-256, PAX decimal or PAX time) that does not parse.
    TarBadNumber {
        entry: Option<String>,
        offset: u64,
        field: &'static str,
        found: String,
    },
    /// A tar number that parses but does not fit where it goes (or pushes offsets past 2^64).
    TarOverflow {
        entry: Option<String>,
        offset: u64,
        field: &'static str,
        found: String,
        max: String,
    },
    /// A tar typeflag that names no entry type we know.
    TarInvalidType {
        entry: Option<String>,
        offset: u64,
        typeflag: u8,
    },
    /// A tar feature we refuse on purpose (GNU sparse files, multi-volume archives, ...).
    TarUnsupported {
        entry: Option<String>,
        offset: u64,
        feature: String,
    },
    /// Tar header metadata (PAX records, GNU long names) larger than the configured limit.
    TarLimit {
        entry: Option<String>,
        offset: u64,
        what: &'static str,
        limit: u64,
        found: u64,
    },
    /// Bytes that are not valid tar structure: a bad PAX record, a lone zero block, a
    /// directory with data, an extended header with no entry after it.
    TarMalformed {
        entry: Option<String>,
        offset: u64,
        reason: String,
    },
    /// The tar writer was given a header it cannot encode in its format, or was driven out of
    /// order (data longer than the declared size, a header before the previous entry ended).
    TarWrite { entry: String, reason: String },
    // --- overlay (crates/core/src/overlay) ---
    /// A layer entry path is not usable (a `..` component, a NUL byte, a non-directory root).
    InvalidEntryPath { path: String, reason: String },
    /// A whiteout name or marker is malformed (`.wh.`, `.wh..`, a marker that is not a regular
    /// file, a name that cannot be represented in the requested form).
    InvalidWhiteout { path: String, reason: String },
    /// Two entries of one layer contradict each other (duplicate path, an entry below a
    /// non-directory, a hardlink whose target is not in the layer).
    EntryConflict { path: String, reason: String },
    /// Overlay state the resolver does not model (`redirect`, `metacopy`, xwhiteouts).
    UnsupportedOverlayFeature { path: String, xattr: String },
    /// No such path in the merged view (ENOENT).
    PathNotFound { path: String },
    /// A path component that has to be a directory is not one (ENOTDIR).
    NotADirectory { path: String },
    /// More than `limit` symbolic links followed while resolving a path (ELOOP).
    SymlinkLoop { path: String, limit: u32 },
}

impl Error {
    /// Stable, machine-readable code; bindings attach it to the JS `Error` as `err.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidDigest { .. } => "ERR_INVALID_DIGEST",
            Error::UnsupportedAlgorithm { .. } => "ERR_UNSUPPORTED_ALGORITHM",
            Error::DigestMismatch { .. } => "ERR_DIGEST_MISMATCH",
            Error::WireMalformed { .. } => "ERR_WIRE_MALFORMED",
            Error::TarTruncated { .. } => "ERR_TAR_TRUNCATED",
            Error::TarChecksum { .. } => "ERR_TAR_CHECKSUM",
            Error::TarBadNumber { .. } => "ERR_TAR_BAD_NUMBER",
            Error::TarOverflow { .. } => "ERR_TAR_OVERFLOW",
            Error::TarInvalidType { .. } => "ERR_TAR_INVALID_TYPE",
            Error::TarUnsupported { .. } => "ERR_TAR_UNSUPPORTED",
            Error::TarLimit { .. } => "ERR_TAR_LIMIT",
            Error::TarMalformed { .. } => "ERR_TAR_MALFORMED",
            Error::TarWrite { .. } => "ERR_TAR_WRITE",
            Error::InvalidEntryPath { .. } => "ERR_INVALID_ENTRY_PATH",
            Error::InvalidWhiteout { .. } => "ERR_INVALID_WHITEOUT",
            Error::EntryConflict { .. } => "ERR_ENTRY_CONFLICT",
            Error::UnsupportedOverlayFeature { .. } => "ERR_UNSUPPORTED_OVERLAY_FEATURE",
            Error::PathNotFound { .. } => "ERR_PATH_NOT_FOUND",
            Error::NotADirectory { .. } => "ERR_NOT_A_DIRECTORY",
            Error::SymlinkLoop { .. } => "ERR_SYMLINK_LOOP",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidDigest { input, reason } => {
                write!(f, "invalid digest {input:?}: {reason}")
            }
            Error::UnsupportedAlgorithm { name } => {
                write!(
                    f,
                    "unsupported digest algorithm {name:?} (expected sha256 or sha512)"
                )
            }
            Error::DigestMismatch { expected, actual } => {
                write!(f, "digest mismatch: expected {expected}, got {actual}")
            }
            Error::WireMalformed { reason } => write!(f, "malformed binding record: {reason}"),
            Error::TarTruncated {
                entry,
                offset,
                end,
                reason,
            } => {
                let at = TarAt(entry, *offset);
                write!(
                    f,
                    "tar: {at}: archive truncated after {end} bytes: {reason}"
                )
            }
            Error::TarChecksum {
                entry,
                offset,
                expected,
                unsigned,
                signed,
            } => {
                let at = TarAt(entry, *offset);
                write!(
                    f,
                    "tar: {at}: bad header checksum: stored {expected} (octal {expected:o}), \
                     computed {unsigned} unsigned or {signed} signed"
                )
            }
            Error::TarBadNumber {
                entry,
                offset,
                field,
                found,
            } => {
                let at = TarAt(entry, *offset);
                write!(f, "tar: {at}: invalid number in {field} field: {found}")
            }
            Error::TarOverflow {
                entry,
                offset,
                field,
                found,
                max,
            } => {
                let at = TarAt(entry, *offset);
                write!(f, "tar: {at}: {field} {found} is out of range (max {max})")
            }
            Error::TarInvalidType {
                entry,
                offset,
                typeflag,
            } => {
                let at = TarAt(entry, *offset);
                let shown = std::ascii::escape_default(*typeflag);
                write!(
                    f,
                    "tar: {at}: unknown entry type '{shown}' (0x{typeflag:02x})"
                )
            }
            Error::TarUnsupported {
                entry,
                offset,
                feature,
            } => {
                let at = TarAt(entry, *offset);
                write!(f, "tar: {at}: unsupported: {feature}")
            }
            Error::TarLimit {
                entry,
                offset,
                what,
                limit,
                found,
            } => {
                let at = TarAt(entry, *offset);
                write!(
                    f,
                    "tar: {at}: {what} of {found} bytes exceeds the limit of {limit}"
                )
            }
            Error::TarMalformed {
                entry,
                offset,
                reason,
            } => {
                let at = TarAt(entry, *offset);
                write!(f, "tar: {at}: {reason}")
            }
            Error::TarWrite { entry, reason } => {
                write!(f, "tar: cannot write entry {entry:?}: {reason}")
            }
            Error::InvalidEntryPath { path, reason } => {
                write!(f, "invalid entry path {path:?}: {reason}")
            }
            Error::InvalidWhiteout { path, reason } => {
                write!(f, "invalid whiteout {path:?}: {reason}")
            }
            Error::EntryConflict { path, reason } => {
                write!(f, "conflicting layer entry {path:?}: {reason}")
            }
            Error::UnsupportedOverlayFeature { path, xattr } => write!(
                f,
                "{path:?} carries overlay xattr {xattr:?} (redirect_dir/metacopy/xwhiteout state \
                 is not supported: mount with them off, or diff against the merged view)"
            ),
            Error::PathNotFound { path } => write!(f, "{path:?}: no such file or directory"),
            Error::NotADirectory { path } => write!(f, "{path:?}: not a directory"),
            Error::SymlinkLoop { path, limit } => write!(
                f,
                "{path:?}: too many levels of symbolic links (more than {limit})"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// `entry "name" at offset N`, or `offset N` when the entry's name is not known yet.
struct TarAt<'a>(&'a Option<String>, u64);

impl fmt::Display for TarAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, "entry {name:?} at offset {}", self.1),
            None => write!(f, "offset {}", self.1),
        }
    }
}
