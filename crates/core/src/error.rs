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
    /// A tar feature we refuse on purpose (multi-volume archives, star sparse files, ...).
    TarUnsupported {
        entry: Option<String>,
        offset: u64,
        feature: String,
    },
    /// Tar header metadata (PAX records, GNU long names) larger than the configured limit, or
    /// a sparse map with more entries than allowed (`what` then ends in " entries" and
    /// `limit`/`found` count entries, not bytes).
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
    // --- layer engine (crates/core/src/layer) ---
    /// The stream starts with the magic bytes of a compression this build does not read.
    UnsupportedCompression { format: String },
    /// The compressed stream is corrupt: a bad header or checksum, truncated, or followed by
    /// bytes that are not another member/frame. `offset` counts compressed bytes read.
    Decompress {
        format: &'static str,
        offset: u64,
        reason: String,
    },
    /// A configured cap of the layer engine was exceeded (`what`: "uncompressed layer size",
    /// "entries", "entry size", ...).
    LayerLimit {
        entry: Option<String>,
        what: &'static str,
        limit: u64,
        found: u64,
    },
    /// The stream expands more than the configured ratio (a decompression bomb).
    DecompressionRatio {
        compressed: u64,
        uncompressed: u64,
        max_ratio: u64,
    },
    /// A layer's digest (`what` = "digest", of the compressed stream) or diff_id (`what` =
    /// "diff_id", of the uncompressed tar) is not the expected one. `digest` and `diff_id` are
    /// both values computed from the stream.
    LayerDigestMismatch {
        what: &'static str,
        expected: String,
        actual: String,
        digest: String,
        diff_id: String,
    },
    /// A filesystem or stream operation failed. `path` names the archive entry (or the source
    /// path) it was for.
    Io {
        op: String,
        path: String,
        errno: Option<i32>,
        reason: String,
    },
    /// An entry would be written through a symlink, or outside the target.
    UnsafePath { path: String, reason: String },
    /// Applying failed and undoing the partial changes failed too: the tree is partly applied.
    RollbackFailed { error: String, rollback: String },
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
            Error::UnsupportedCompression { .. } => "ERR_UNSUPPORTED_COMPRESSION",
            Error::Decompress { .. } => "ERR_DECOMPRESS",
            Error::LayerLimit { .. } => "ERR_LAYER_LIMIT",
            Error::DecompressionRatio { .. } => "ERR_DECOMPRESSION_RATIO",
            Error::LayerDigestMismatch { .. } => "ERR_DIGEST_MISMATCH",
            Error::Io { .. } => "ERR_IO",
            Error::UnsafePath { .. } => "ERR_UNSAFE_PATH",
            Error::RollbackFailed { .. } => "ERR_ROLLBACK_FAILED",
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
                if what.ends_with(" entries") {
                    // A count, not a size.
                    write!(f, "tar: {at}: {found} {what} exceed the limit of {limit}")
                } else {
                    write!(
                        f,
                        "tar: {at}: {what} of {found} bytes exceeds the limit of {limit}"
                    )
                }
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
            Error::UnsupportedCompression { format } => {
                write!(f, "unsupported layer compression: {format}")
            }
            Error::Decompress {
                format,
                offset,
                reason,
            } => write!(
                f,
                "{format} stream corrupt after {offset} compressed bytes: {reason}"
            ),
            Error::LayerLimit {
                entry,
                what,
                limit,
                found,
            } => match entry {
                Some(entry) => write!(
                    f,
                    "entry {entry:?}: {what} of {found} exceeds the limit of {limit}"
                ),
                None => write!(f, "{what} of {found} exceeds the limit of {limit}"),
            },
            Error::DecompressionRatio {
                compressed,
                uncompressed,
                max_ratio,
            } => write!(
                f,
                "decompression bomb: {compressed} compressed bytes expanded to {uncompressed} \
                 (more than {max_ratio}:1)"
            ),
            Error::LayerDigestMismatch {
                what,
                expected,
                actual,
                digest,
                diff_id,
            } => write!(
                f,
                "layer {what} mismatch: expected {expected}, got {actual} \
                 (computed digest {digest}, diff_id {diff_id})"
            ),
            Error::Io {
                op,
                path,
                errno,
                reason,
            } => {
                write!(f, "{op} {path:?}: {reason}")?;
                match errno {
                    Some(n) => write!(f, " (os error {n})"),
                    None => Ok(()),
                }
            }
            Error::UnsafePath { path, reason } => write!(f, "unsafe entry {path:?}: {reason}"),
            Error::RollbackFailed { error, rollback } => write!(
                f,
                "{error}; undoing the partial apply failed too, the tree is partly applied: \
                 {rollback}"
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
