//! The layer engine: apply a layer stream to a directory tree, and create a layer from one.
//!
//! Everything here works against the small [`Fs`] trait; `stevedore-fs` implements it for a
//! real Linux directory (fd-relative, `openat2`), [`MemFs`] in memory. The public entry points
//! for real directories (`apply_layer`, `create_layer`, with the staging directory) live in
//! `stevedore-fs`; this module has the logic they share with the in-memory filesystem:
//! [`apply_to`] and [`create_from`].
//!
//! # Applying: [`apply_to`]
//!
//! The input is a layer blob as stored in a registry: gzip, zstd or plain tar, told apart by
//! their magic bytes (bzip2, xz and lz4 are recognized and refused). One pass computes the
//! digest of the bytes as read (the blob digest, *compressed*) and the diff_id (sha256 of the
//! *uncompressed* tar, trailing bytes included), checks them against the expected values, and
//! extracts. The decompressor is drained to its end (gzip CRCs and lengths of every member,
//! zstd checksums); after the tar end-of-archive marker only zero bytes may follow.
//!
//! With [`ApplyOptions::pipelined`] (the default except on wasm) decompression and compressed
//! hashing run on a helper thread while the calling thread parses the tar, hashes it and writes
//! files; they pass 1 MiB chunks through a channel of 4, so memory stays flat whatever the size
//! of the layer. The progress callback runs on the calling thread after each chunk.
//!
//! GNU sparse entries (see [`crate::tar`]) are extracted as regular files of their logical
//! size, holes written as zeros: the [`Fs`] has no hole punching and the diff_id is over the
//! raw archive either way. Since holes cost no stream bytes, the sizes of all regular files
//! together are held against [`ApplyLimits::max_uncompressed_bytes`] once a sparse entry is
//! seen.
//!
//! Whiteouts follow [`WhiteoutMode`]; the names and conversions are those of
//! [`crate::overlay`], defined once. Later entries of a layer replace earlier ones (any type by
//! any type; a directory over a directory merges and takes the new metadata).
//!
//! Safety (SECURITY.md rule 4): paths are normalized (`..` refused, a leading `/` dropped) and
//! then walked below the root by one resolver (`layer/resolve.rs`) without ever following a symlink in `overlay` and
//! `oci` modes (an entry below a symlink is an error naming the entry) and following symlinks
//! only inside the root in `apply` mode, where lower layers legitimately hold links like
//! `lib -> usr/lib` (as umoci and containerd do). The last component is never followed by any
//! call. Hard-link targets must already exist inside the root. Devices need privilege;
//! without it they are skipped with a [`Warning`]. Overlay-private xattrs arriving in content
//! are escaped or dropped ([`PrivateXattrPolicy`]).
//!
//! ## Failure guarantees
//!
//! * `overlay` and `oci` modes write into an empty tree; `stevedore-fs` makes that a staging
//!   directory next to the target, renamed onto the target on success and removed on any
//!   error, digest mismatches included: nothing partial is ever visible at the target.
//! * `apply` mode changes an existing tree in place, transactionally: everything this layer
//!   removes or replaces is first moved into a trash directory at the root
//!   (`.stevedore-apply-<random>`), and every change is journaled. On any error, a digest
//!   mismatch at the end of the stream included, the journal is undone in reverse order
//!   (created entries removed, moved ones moved back, changed directory metadata and mtimes
//!   restored) and the tree is as it was. On success the trash is deleted. The guarantee holds
//!   for errors, not for crashes: after a crash the tree may be partly applied, with the trash
//!   directory left at its root as the sign; treat such a tree as lost.
//!
//! # Creating: [`create_from`]
//!
//! Walks a tree depth first with names in byte order (so equal trees give equal bytes),
//! writes PAX tar entries with the [`TarWriter`](crate::tar::TarWriter), detects hard links by
//! (device, inode), and compresses with gzip (level 0-9), zstd (level 1-22) or nothing. In
//! [`CreateMode::OverlayDiff`] the tree is an overlay upper/diff dir: character devices 0/0
//! become `.wh.<name>`, opaque directories are followed by `.wh..wh..opq`, and `redirect` /
//! `metacopy` xattrs are refused (SECURITY.md rule 9). The tar is hashed (diff_id) on the
//! calling thread while a helper thread compresses and hashes the output (digest).

mod apply;
mod create;
pub mod fs;
mod memfs;
pub(crate) mod resolve;
mod staged;
mod stream;
mod tar_split;

pub use apply::{apply_to, apply_to_local, remove_tree};
pub use create::{create_from, create_from_local};
pub use fs::{FileType, Fs, FsError, FsErrorKind, FsResult, SetMeta, Special, Stat, Target};
pub use memfs::{MemEntry, MemFile, MemFs};
pub use staged::{apply_staged, stage_layer, verify_layer, StagedLayer};
pub use stream::{detect_compression, Compression};
pub use tar_split::TarSplit;

use crate::digest::Digest;
use crate::overlay::{PrivateXattrPolicy, XattrNamespace};
use crate::tar;

/// How whiteouts are written when applying a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WhiteoutMode {
    /// Docker overlay2 / containerd overlay diff dir: `.wh.x` becomes a character device 0/0
    /// named `x`, `.wh..wh..opq` sets `<ns>.overlay.opaque = "y"` on its directory. The
    /// target is one layer's own directory, to be stacked by an overlay mount.
    #[default]
    Overlay,
    /// Flatten onto an existing root filesystem: whiteouts delete from it, an opaque marker
    /// clears its directory of what lower layers put there (entries of this layer stay, in any
    /// order: OCI whiteouts only apply to lower layers).
    Apply,
    /// Keep `.wh.*` files as regular files (the layer as it is, e.g. to repack it).
    Oci,
}

/// Caps checked while applying. All have defaults; all errors say which cap was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyLimits {
    /// Largest uncompressed stream (tar bytes); with sparse files, also the largest total size
    /// of the regular files (what extraction writes). Default 64 GiB.
    pub max_uncompressed_bytes: u64,
    /// Largest ratio of uncompressed to compressed bytes, checked once more than
    /// [`ratio_grace_bytes`](Self::ratio_grace_bytes) were produced. Default 1100: gzip cannot
    /// exceed about 1032 (so real gzip layers never trip it), zstd bombs can reach millions.
    pub max_ratio: u64,
    /// Uncompressed bytes produced before the ratio is checked. Default 64 MiB.
    pub ratio_grace_bytes: u64,
    /// Largest number of tar entries (whiteouts included). Default 4 Mi.
    pub max_entries: u64,
    /// Largest zstd window, as a power of two (zstd's own default cap is 27, 128 MiB).
    pub zstd_window_log_max: u32,
    /// Tar header caps (PAX records, GNU long names).
    pub tar: tar::Limits,
}

impl Default for ApplyLimits {
    fn default() -> Self {
        ApplyLimits {
            max_uncompressed_bytes: 64 << 30,
            max_ratio: 1100,
            ratio_grace_bytes: 64 << 20,
            max_entries: 4 << 20,
            zstd_window_log_max: 27,
            tar: tar::Limits::default(),
        }
    }
}

/// Options of [`apply_to`] (and `stevedore_fs::apply_layer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    pub mode: WhiteoutMode,
    /// Expected digest of the stream as read (compressed). Its algorithm is the one used.
    pub expected_digest: Option<Digest>,
    /// Expected diff_id (digest of the uncompressed tar). Its algorithm is the one used.
    pub expected_diff_id: Option<Digest>,
    /// Namespace of the overlay whiteout xattrs (`trusted.overlay.*`, or `user.overlay.*` for
    /// unprivileged `-o userxattr` mounts), and of the content xattrs that get escaped.
    pub xattr_namespace: XattrNamespace,
    /// What happens to `<ns>.overlay.*` xattrs that arrive inside layer content.
    pub private_xattrs: PrivateXattrPolicy,
    /// Set owners from the archive. `None`: when the filesystem is privileged (root).
    /// Otherwise entries get the caller's ids.
    pub preserve_owner: Option<bool>,
    /// When owners are not preserved, record the archive's ids in the `user.rootlesscontainers`
    /// xattr, as umoci's rootless unpack does (protobuf `{uid = 1; gid = 2}`, omitted for
    /// 0:0).
    pub record_owner: bool,
    pub limits: ApplyLimits,
    /// Decompress on a helper thread. Default: true, except on wasm.
    pub pipelined: bool,
    /// Record the layer's tar-split (Docker's `tar-split.json.gz`, see [`TarSplit`]) in the
    /// report: what rebuilds the exact tar from the extracted tree. Meant for a layer's own tree
    /// (`overlay` and `oci` modes); in `apply` mode it holds only until another layer changes
    /// the tree.
    pub tar_split: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            mode: WhiteoutMode::Overlay,
            expected_digest: None,
            expected_diff_id: None,
            xattr_namespace: XattrNamespace::Trusted,
            private_xattrs: PrivateXattrPolicy::Escape,
            preserve_owner: None,
            record_owner: false,
            limits: ApplyLimits::default(),
            pipelined: !cfg!(target_family = "wasm"),
            tar_split: false,
        }
    }
}

/// Something the engine did not do, and why (an entry skipped, an xattr not set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The entry's path as named in the archive (or in the source tree).
    pub path: String,
    pub message: String,
}

/// At most this many warnings are kept; the last one says how many more there were.
pub const MAX_WARNINGS: usize = 1000;

/// Progress reported while applying or creating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Applying: compressed bytes read from the input. Creating: compressed bytes written.
    pub compressed_in: u64,
    /// Uncompressed (tar) bytes produced (applying) or written (creating).
    pub uncompressed_out: u64,
    /// Tar entries processed so far.
    pub entries: u64,
}

/// What [`apply_to`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Digest of the stream as read (the blob digest: compressed bytes).
    pub digest: Digest,
    /// Digest of the uncompressed tar (the diff_id).
    pub diff_id: Digest,
    /// Bytes read from the input.
    pub compressed_size: u64,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed_size: u64,
    pub compression: Compression,
    /// Tar entries (whiteouts and markers included).
    pub entries: u64,
    /// Entries or attributes that were skipped, with the reason.
    pub skipped: Vec<Warning>,
    /// With [`ApplyOptions::tar_split`]: the recording, or why there is none.
    pub tar_split: Option<TarSplit>,
}

/// What tree [`create_from`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CreateMode {
    /// Every entry as content. Overlay-private xattrs are dropped (with a warning).
    #[default]
    Full,
    /// An overlay upper or diff dir using this xattr namespace: whiteouts and opaque
    /// directories are converted to the OCI form.
    OverlayDiff(XattrNamespace),
}

/// Compression of a created layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreateCompression {
    None,
    /// Level 0-9 (6 is gzip's default). The header has no name and mtime 0: deterministic.
    Gzip {
        level: u32,
    },
    /// Level 1-22 (3 is zstd's default); frames carry a checksum. Needs the `zstd` feature.
    Zstd {
        level: i32,
    },
}

impl Default for CreateCompression {
    fn default() -> Self {
        CreateCompression::Gzip { level: 6 }
    }
}

/// Entry mtimes in a created layer. Always whole seconds (as Docker and BuildKit write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MtimePolicy {
    /// The source's mtimes (sub-second part dropped).
    #[default]
    Preserve,
    /// `min(mtime, t)`: the `SOURCE_DATE_EPOCH` rewrite for reproducible layers.
    Clamp(i64),
}

/// Options of [`create_from`] (and `stevedore_fs::create_layer`). The format is PAX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    pub mode: CreateMode,
    pub compression: CreateCompression,
    pub mtime: MtimePolicy,
    /// Compress on a helper thread. Default: true, except on wasm.
    pub pipelined: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            mode: CreateMode::Full,
            compression: CreateCompression::default(),
            mtime: MtimePolicy::Preserve,
            pipelined: !cfg!(target_family = "wasm"),
        }
    }
}

/// What [`create_from`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateReport {
    /// Digest of the bytes written (compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    /// Tar entries written (whiteout and opaque markers included).
    pub entries: u64,
    /// Source entries that were skipped (sockets) or attributes dropped, with the reason.
    pub skipped: Vec<Warning>,
}

/// Collects warnings up to [`MAX_WARNINGS`].
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    list: Vec<Warning>,
    dropped: u64,
}

impl Warnings {
    pub(crate) fn push(&mut self, path: String, message: String) {
        if self.list.len() < MAX_WARNINGS - 1 {
            self.list.push(Warning { path, message });
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn into_vec(mut self) -> Vec<Warning> {
        if self.dropped > 0 {
            self.list.push(Warning {
                path: String::new(),
                message: format!("{} more warnings not listed", self.dropped),
            });
        }
        self.list
    }
}
