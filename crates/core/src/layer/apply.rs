//! Applying a layer stream to an [`Fs`]: the per-entry decisions, the transaction of `apply`
//! mode, and the two-thread pipeline. See the [module documentation](super) for the contract.

use super::fs::{FileType, Fs, FsError, FsErrorKind, SetMeta, Special, Stat, Target};
use super::resolve::{Follow, Resolver, Step, WalkError};
use super::stream::{Compression, Source, StreamEnd};
use super::tar_split::TarSplitRecorder;
use super::{ApplyOptions, ApplyReport, Progress, Warnings, WhiteoutMode};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::overlay::whiteout::{escape_overlay_xattr, OPAQUE_VALUE};
use crate::overlay::{
    normalize_path, Entry, EntryKind, LayerChange, PrivateXattrPolicy, ToOverlay, XattrNamespace,
};
use crate::tar::{self, display_name, Event, Header, TarReader, Timestamp};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher as _};
use std::io::Read;
use std::sync::mpsc;

/// The xattr umoci's rootless unpack records foreign owners in.
const ROOTLESS_XATTR: &[u8] = b"user.rootlesscontainers";
/// Labels are the host's policy, not layer content: never cleared or copied.
const SELINUX_XATTR: &[u8] = b"security.selinux";
/// Prefix of the trash directory of `apply` mode (at the root of the tree).
pub(crate) const TRASH_PREFIX: &str = ".stevedore-apply-";

/// Applies the layer stream `reader` to the tree of `fs`, as documented on the
/// [module](super). `progress` is called on the calling thread after each 1 MiB chunk and
/// once at the end.
///
/// In `overlay` and `oci` modes the tree should be empty (a staging directory); on error it
/// holds partial output for the caller to discard. In `apply` mode an error leaves the tree as
/// it was (see "Failure guarantees").
pub fn apply_to<F: Fs, R: Read + Send>(
    reader: R,
    fs: &mut F,
    opts: &ApplyOptions,
    progress: impl FnMut(Progress),
) -> Result<ApplyReport> {
    let pipelined = opts.pipelined;
    apply_with(fs, opts, progress, move |sink, opts, alg, progress| {
        if pipelined {
            self::pipelined(reader, alg, opts, sink, progress)
        } else {
            inline(reader, alg, opts, sink, progress)
        }
    })
}

/// [`apply_to`] on the calling thread only, for readers that cannot move to another thread
/// (a JavaScript stream in the browser). [`ApplyOptions::pipelined`] is ignored.
pub fn apply_to_local<F: Fs, R: Read>(
    reader: R,
    fs: &mut F,
    opts: &ApplyOptions,
    progress: impl FnMut(Progress),
) -> Result<ApplyReport> {
    apply_with(fs, opts, progress, move |sink, opts, alg, progress| {
        inline(reader, alg, opts, sink, progress)
    })
}

fn apply_with<F: Fs, S>(
    fs: &mut F,
    opts: &ApplyOptions,
    mut progress: impl FnMut(Progress),
    stream: S,
) -> Result<ApplyReport>
where
    S: FnOnce(
        &mut Sink<'_, Applier<'_, F>>,
        &ApplyOptions,
        Algorithm,
        &mut dyn FnMut(Progress),
    ) -> Result<StreamEnd>,
{
    let mut applier = Applier::new(fs, opts)?;
    let outcome = run(stream, &mut applier, opts, &mut progress);
    let mut report = match outcome {
        Ok(report) => report,
        Err(e) => return Err(applier.abort(e)),
    };
    applier.commit()?;
    report.entries = applier.entries;
    report.skipped = std::mem::take(&mut applier.warnings).into_vec();
    progress(Progress {
        compressed_in: report.compressed_size,
        uncompressed_out: report.uncompressed_size,
        entries: report.entries,
    });
    Ok(report)
}

// --- the stream ------------------------------------------------------------------------------

enum Msg {
    Data {
        chunk: Vec<u8>,
        compressed: u64,
        produced: u64,
        plain: bool,
    },
    End(Result<StreamEnd>),
}

pub(crate) fn run<E: EntrySink, S>(
    stream: S,
    applier: &mut E,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ApplyReport>
where
    S: FnOnce(
        &mut Sink<'_, E>,
        &ApplyOptions,
        Algorithm,
        &mut dyn FnMut(Progress),
    ) -> Result<StreamEnd>,
{
    let digest_alg = opts
        .expected_digest
        .as_ref()
        .map_or(Algorithm::Sha256, Digest::algorithm);
    let diff_alg = opts
        .expected_diff_id
        .as_ref()
        .map_or(Algorithm::Sha256, Digest::algorithm);
    let mut sink = Sink {
        reader: TarReader::new(opts.limits.tar),
        hasher: Some(Hasher::new(diff_alg)),
        same_alg: digest_alg == diff_alg,
        ended: false,
        trailing: 0,
        split: opts.tar_split.then(TarSplitRecorder::new),
        applier,
    };
    let end = stream(&mut sink, opts, digest_alg, progress)?;
    sink.finish()?;
    let tar_split = sink.split.take().map(TarSplitRecorder::finish);
    // A plain tar: the digest of the stream is the diff_id, hashed once on the reading side.
    let diff_id = match sink.hasher.take() {
        Some(h) => h.finish(),
        None => end.digest.clone(),
    };
    for (what, expected, actual) in [
        ("digest", &opts.expected_digest, &end.digest),
        ("diff_id", &opts.expected_diff_id, &diff_id),
    ] {
        if let Some(expected) = expected {
            if expected != actual {
                return Err(Error::LayerDigestMismatch {
                    what,
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                    digest: end.digest.to_string(),
                    diff_id: diff_id.to_string(),
                });
            }
        }
    }
    Ok(ApplyReport {
        digest: end.digest,
        diff_id,
        compressed_size: end.compressed_size,
        uncompressed_size: end.uncompressed_size,
        compression: end.compression,
        entries: 0,
        skipped: Vec::new(),
        tar_split,
    })
}

/// Decompression on a helper thread, tar and files on this one.
pub(crate) fn pipelined<E: EntrySink, R: Read + Send>(
    reader: R,
    algorithm: Algorithm,
    opts: &ApplyOptions,
    sink: &mut Sink<'_, E>,
    progress: &mut dyn FnMut(Progress),
) -> Result<StreamEnd> {
    let limits = opts.limits;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Msg>(4);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            let mut source = match Source::new(reader, algorithm, limits) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Msg::End(Err(e)));
                    return;
                }
            };
            loop {
                let mut chunk = free_rx.try_recv().unwrap_or_default();
                match source.fill(&mut chunk) {
                    Ok(more) => {
                        if !chunk.is_empty() {
                            let msg = Msg::Data {
                                chunk,
                                compressed: source.compressed(),
                                produced: source.produced(),
                                plain: source.compression() == Compression::None,
                            };
                            if tx.send(msg).is_err() {
                                return; // the tar side gave up
                            }
                        }
                        if !more {
                            let _ = tx.send(Msg::End(Ok(source.finish())));
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::End(Err(e)));
                        return;
                    }
                }
            }
        });
        // Returning (with an error or not) drops `rx`, which stops the helper at its next send.
        for msg in rx {
            match msg {
                Msg::Data {
                    chunk,
                    compressed,
                    produced,
                    plain,
                } => {
                    sink.plain(plain);
                    sink.feed(&chunk)?;
                    progress(Progress {
                        compressed_in: compressed,
                        uncompressed_out: produced,
                        entries: sink.applier.entries(),
                    });
                    let _ = free_tx.send(chunk);
                }
                Msg::End(end) => return end,
            }
        }
        Err(internal(
            "the decompression thread stopped without a result",
        ))
    })
}

/// Everything on the calling thread (wasm, or when asked).
pub(crate) fn inline<E: EntrySink, R: Read>(
    reader: R,
    algorithm: Algorithm,
    opts: &ApplyOptions,
    sink: &mut Sink<'_, E>,
    progress: &mut dyn FnMut(Progress),
) -> Result<StreamEnd> {
    let mut source = Source::new(reader, algorithm, opts.limits)?;
    let mut chunk = Vec::new();
    loop {
        let more = source.fill(&mut chunk)?;
        sink.plain(source.compression() == Compression::None);
        sink.feed(&chunk)?;
        progress(Progress {
            compressed_in: source.compressed(),
            uncompressed_out: source.produced(),
            entries: sink.applier.entries(),
        });
        if !more {
            return Ok(source.finish());
        }
    }
}

/// What the tar side drives: the [`Applier`], or the stager of a flatten
/// (`layer/staged.rs`).
pub(crate) trait EntrySink {
    fn entry(&mut self, h: &Header) -> Result<()>;
    fn data(&mut self, data: &[u8]) -> Result<()>;
    fn end_entry(&mut self) -> Result<()>;
    /// Entries seen so far.
    fn entries(&self) -> u64;
    /// Whether a regular file is open (the archive must not end there).
    fn in_file(&self) -> bool;
}

impl<F: Fs> EntrySink for Applier<'_, F> {
    fn entry(&mut self, h: &Header) -> Result<()> {
        Applier::entry(self, h)
    }
    fn data(&mut self, data: &[u8]) -> Result<()> {
        Applier::data(self, data)
    }
    fn end_entry(&mut self) -> Result<()> {
        Applier::end_entry(self)
    }
    fn entries(&self) -> u64 {
        self.entries
    }
    fn in_file(&self) -> bool {
        self.current.is_some()
    }
}

/// The tar side: hashes the uncompressed bytes, parses them, drives the applier.
pub(crate) struct Sink<'a, E: EntrySink> {
    reader: TarReader,
    /// The diff_id hasher; dropped for a plain tar when the algorithms agree.
    hasher: Option<Hasher>,
    same_alg: bool,
    ended: bool,
    /// Zero bytes read after the end marker.
    trailing: u64,
    /// The tar-split being recorded, when asked: every consumed byte goes to it.
    split: Option<TarSplitRecorder>,
    applier: &'a mut E,
}

impl<E: EntrySink> Sink<'_, E> {
    /// Told with every chunk whether the stream is a plain tar (always before the first
    /// bytes are hashed).
    fn plain(&mut self, plain: bool) {
        if plain && self.same_alg && self.reader.offset() == 0 {
            self.hasher = None;
        }
    }

    fn feed(&mut self, mut input: &[u8]) -> Result<()> {
        if let Some(h) = &mut self.hasher {
            h.update(input);
        }
        // Until `NeedMore` (which comes with all input consumed), not until the input is used
        // up: the holes of a sparse file, and the end of an entry, may come after its last byte.
        loop {
            if self.ended {
                // Only zero padding may follow the end marker: a second archive hidden after
                // it would be extracted by some readers (GNU tar -i) and not by others.
                if let Some(i) = input.iter().position(|&b| b != 0) {
                    return Err(Error::TarMalformed {
                        entry: None,
                        offset: self.reader.offset() + self.trailing + i as u64,
                        reason: "non-zero data after the end-of-archive marker".into(),
                    });
                }
                self.trailing += input.len() as u64;
                if let Some(s) = &mut self.split {
                    s.raw(input);
                }
                return Ok(());
            }
            let (used, event) = self.reader.next_event(input)?;
            let consumed = &input[..used];
            match event {
                Event::NeedMore => {
                    if let Some(s) = &mut self.split {
                        s.raw(consumed);
                    }
                    return Ok(());
                }
                Event::Entry(header) => {
                    if let Some(s) = &mut self.split {
                        s.entry(header, consumed);
                    }
                    self.applier.entry(header)?
                }
                // Holes of sparse files arrive as zeros and are written as such (the `Fs` has
                // no hole punching; the extracted file takes its full logical size on disk).
                Event::Data(data) => {
                    if let Some(s) = &mut self.split {
                        s.data(consumed, data);
                    }
                    self.applier.data(data)?
                }
                Event::EntryEnd => {
                    if let Some(s) = &mut self.split {
                        s.end_entry();
                        s.raw(consumed);
                    }
                    self.applier.end_entry()?
                }
                Event::End => {
                    if let Some(s) = &mut self.split {
                        s.raw(consumed);
                    }
                    self.ended = true
                }
            }
            input = &input[used..];
        }
    }

    fn finish(&mut self) -> Result<()> {
        if !self.ended {
            self.reader.finish()?;
        }
        if self.applier.in_file() {
            return Err(internal("the archive ended inside a file"));
        }
        Ok(())
    }
}

pub(crate) fn internal(what: &str) -> Error {
    Error::Io {
        op: "apply layer".into(),
        path: String::new(),
        errno: None,
        reason: format!("internal error: {what}"),
    }
}

// --- the applier -----------------------------------------------------------------------------

pub(crate) fn io_error(op: &str, path: &str, e: FsError) -> Error {
    Error::Io {
        op: op.to_string(),
        path: path.to_string(),
        errno: e.errno,
        reason: e.message,
    }
}

fn walk_error(entry: &str, e: WalkError) -> Error {
    match e {
        WalkError::Symlink { at } => Error::UnsafePath {
            path: entry.to_string(),
            reason: format!(
                "{:?} is a symlink: in this mode nothing is written through a symlink",
                display_name(&at)
            ),
        },
        WalkError::NotADirectory { at, kind } => Error::EntryConflict {
            path: entry.to_string(),
            reason: format!(
                "{:?} is a {}, not a directory",
                display_name(&at),
                kind.name()
            ),
        },
        WalkError::Loop { at } => Error::UnsafePath {
            path: entry.to_string(),
            reason: format!(
                "too many levels of symbolic links (or an empty link) at {:?}",
                display_name(&at)
            ),
        },
        WalkError::Fs { at, error } => Error::Io {
            op: format!("open directory {:?} for", display_name(&at)),
            path: entry.to_string(),
            errno: error.errno,
            reason: error.message,
        },
    }
}

fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !parent.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Whether `set` holds a path strictly below `path`.
fn has_below(set: &BTreeSet<Vec<u8>>, path: &[u8]) -> bool {
    let mut prefix = path.to_vec();
    if !prefix.is_empty() {
        prefix.push(b'/');
    }
    set.range(prefix.clone()..)
        .next()
        .is_some_and(|p| p.starts_with(&prefix) && p.len() > prefix.len())
}

fn is_whiteout_device(st: &Stat) -> bool {
    st.kind == FileType::CharDevice && st.rdev_major == 0 && st.rdev_minor == 0
}

/// protobuf `{ uint32 uid = 1; uint32 gid = 2; }` as umoci writes it (zero fields omitted).
fn rootless_value(uid: u32, gid: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, mut v) in [(0x08u8, uid), (0x10u8, gid)] {
        if v == 0 {
            continue;
        }
        out.push(tag);
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    out
}

fn random_suffix() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5ec0_5eed);
    format!("{:016x}", h.finish())
}

/// The tar header as an overlay entry (path not yet normalized).
pub(crate) fn to_entry(h: &Header, shown: &str) -> Result<Entry> {
    let kind = match h.kind {
        tar::EntryKind::Regular => EntryKind::File,
        tar::EntryKind::Directory => EntryKind::Dir,
        tar::EntryKind::Symlink => EntryKind::Symlink {
            target: h.link_name.clone(),
        },
        tar::EntryKind::Hardlink => EntryKind::Hardlink {
            target: h.link_name.clone(),
        },
        tar::EntryKind::CharDevice => EntryKind::CharDevice {
            major: h.dev_major,
            minor: h.dev_minor,
        },
        tar::EntryKind::BlockDevice => EntryKind::BlockDevice {
            major: h.dev_major,
            minor: h.dev_minor,
        },
        tar::EntryKind::Fifo => EntryKind::Fifo,
    };
    let id = |value: u64, field: &'static str| {
        u32::try_from(value).map_err(|_| Error::TarOverflow {
            entry: Some(shown.to_string()),
            offset: h.offset,
            field,
            found: value.to_string(),
            max: u32::MAX.to_string(),
        })
    };
    let mut xattrs = Vec::with_capacity(h.xattrs.len());
    for (name, value) in &h.xattrs {
        let name = String::from_utf8(name.clone()).map_err(|_| Error::TarMalformed {
            entry: Some(shown.to_string()),
            offset: h.offset,
            reason: format!("xattr name {:?} is not UTF-8", display_name(name)),
        })?;
        xattrs.push((name, value.clone()));
    }
    Ok(Entry {
        path: h.path.clone(),
        kind,
        mode: h.mode & 0o7777,
        uid: id(h.uid, "uid")?,
        gid: id(h.gid, "gid")?,
        size: h.size,
        mtime: h.mtime.secs,
        content: None,
        xattrs,
    })
}

/// Extended attributes to set, `(name, value)`.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// A regular file being written.
pub(crate) struct Open<W> {
    pub(crate) file: W,
    pub(crate) shown: String,
    pub(crate) owner: Option<(u32, u32)>,
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) mode: u32,
    pub(crate) mtime: Timestamp,
}

impl<W> Open<W> {
    pub(crate) fn new(
        file: W,
        shown: String,
        owner: Option<(u32, u32)>,
        xattrs: Xattrs,
        mode: u32,
        mtime: Timestamp,
    ) -> Self {
        Open {
            file,
            shown,
            owner,
            xattrs,
            mode,
            mtime,
        }
    }
}

/// Directory metadata set at the end, after the directory's contents.
struct Deferred {
    path: Vec<u8>,
    mode: u32,
    mtime: Option<Timestamp>,
}

/// One step to undo in `apply` mode.
enum Undo {
    /// This layer created `path`.
    Created(Vec<u8>),
    /// What was at `path` now sits in the trash as `trash`.
    Moved { path: Vec<u8>, trash: Vec<u8> },
    /// A pre-existing directory's metadata before this layer changed it.
    Meta {
        path: Vec<u8>,
        stat: Stat,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

/// The transaction of `apply` mode.
struct Txn<D> {
    trash_name: Vec<u8>,
    trash: D,
    next: u64,
    journal: Vec<Undo>,
    /// Canonical paths this layer wrote (entries and the directories it implied).
    upper: BTreeSet<Vec<u8>>,
    /// Canonical paths this layer created (a subset of what it wrote).
    created: HashSet<Vec<u8>>,
    /// Pre-existing directories whose contents changed, with their mtime before.
    touched: HashMap<Vec<u8>, Timestamp>,
}

/// Owner and xattrs to set for an entry with these archive values.
pub(crate) fn meta_for(cfg: &Cfg, entry: &Entry) -> (Option<(u32, u32)>, Xattrs) {
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(entry.xattrs.len());
    for (name, value) in &entry.xattrs {
        let name = match cfg.mode {
            // Overlay mode: `to_overlay` already escaped or dropped them.
            WhiteoutMode::Overlay => name.clone(),
            _ => match escape_overlay_xattr(cfg.ns, name) {
                None => name.clone(),
                Some(escaped) if cfg.policy == PrivateXattrPolicy::Escape => escaped,
                Some(_) => continue,
            },
        };
        if name.as_bytes() == SELINUX_XATTR {
            continue;
        }
        xattrs.push((name.into_bytes(), value.clone()));
    }
    if cfg.preserve_owner {
        return (Some((entry.uid, entry.gid)), xattrs);
    }
    if cfg.record_owner && (entry.uid, entry.gid) != (0, 0) {
        xattrs.retain(|(n, _)| n != ROOTLESS_XATTR);
        xattrs.push((
            ROOTLESS_XATTR.to_vec(),
            rootless_value(entry.uid, entry.gid),
        ));
    }
    (None, xattrs)
}

/// How metadata is set, resolved from the options once.
pub(crate) struct Cfg {
    mode: WhiteoutMode,
    ns: XattrNamespace,
    policy: PrivateXattrPolicy,
    preserve_owner: bool,
    record_owner: bool,
    max_entries: u64,
    max_entry_size: u64,
    /// Sizes of the regular files so far. Without sparse files the stream is longer than
    /// this; a sparse file's holes are written as zeros but cost no stream bytes, so its
    /// logical size is what the layer-size cap holds against.
    file_bytes: u64,
}

impl Cfg {
    pub(crate) fn new(opts: &ApplyOptions, privileged: bool) -> Cfg {
        Cfg {
            mode: opts.mode,
            ns: opts.xattr_namespace,
            policy: opts.private_xattrs,
            preserve_owner: opts.preserve_owner.unwrap_or(privileged),
            record_owner: opts.record_owner,
            max_entries: opts.limits.max_entries,
            max_entry_size: opts.limits.max_uncompressed_bytes,
            file_bytes: 0,
        }
    }

    /// The entry-count and entry-size caps, checked on every header; for sparse entries also
    /// the total of file sizes (the bytes extraction writes), against the layer-size cap.
    pub(crate) fn check_entry(&mut self, h: &Header, entries: u64, shown: &str) -> Result<()> {
        if entries > self.max_entries {
            return Err(Error::LayerLimit {
                entry: Some(shown.to_string()),
                what: "number of entries",
                limit: self.max_entries,
                found: entries,
            });
        }
        if h.size > self.max_entry_size {
            return Err(Error::LayerLimit {
                entry: Some(shown.to_string()),
                what: "entry size",
                limit: self.max_entry_size,
                found: h.size,
            });
        }
        self.file_bytes = self.file_bytes.saturating_add(h.size);
        // Only sparse entries can push the total past the stream size; checking them alone
        // leaves the errors of other oversized layers as they were.
        if h.sparse && self.file_bytes > self.max_entry_size {
            return Err(Error::LayerLimit {
                entry: Some(shown.to_string()),
                what: "uncompressed layer size (sparse files expanded)",
                limit: self.max_entry_size,
                found: self.file_bytes,
            });
        }
        Ok(())
    }
}

pub(crate) struct Applier<'f, F: Fs> {
    fs: &'f mut F,
    cfg: Cfg,
    resolver: Resolver<F::Dir>,
    follow: Follow,
    current: Option<Open<F::File>>,
    entries: u64,
    warnings: Warnings,
    deferred: Vec<Deferred>,
    deferred_at: HashMap<Vec<u8>, usize>,
    tx: Option<Txn<F::Dir>>,
    /// Replaying a staged layer (`layer/staged.rs`): the directory holding the regular files'
    /// contents, already written with their metadata, and the name of the next one to move in.
    staged: Option<(F::Dir, Option<Vec<u8>>)>,
}

impl<'f, F: Fs> Applier<'f, F> {
    pub(crate) fn new(fs: &'f mut F, opts: &ApplyOptions) -> Result<Self> {
        let root = fs
            .root()
            .map_err(|e| io_error("open the target root", "", e))?;
        let cfg = Cfg::new(opts, fs.privileged());
        let mut tx = None;
        if opts.mode == WhiteoutMode::Apply {
            let root_mtime = fs
                .stat_dir(&root)
                .map_err(|e| io_error("stat the target root", "", e))?
                .mtime;
            let mut attempt = 0;
            let trash_name = loop {
                let name = format!("{TRASH_PREFIX}{}", random_suffix()).into_bytes();
                match fs.mkdir(&root, &name, 0o700) {
                    Ok(()) => break name,
                    Err(e) if e.kind == FsErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                    Err(e) => return Err(io_error("create the trash directory", "", e)),
                }
            };
            let trash = fs
                .open_dir(&root, &trash_name)
                .map_err(|e| io_error("open the trash directory", "", e))?;
            let mut touched = HashMap::new();
            touched.insert(Vec::new(), root_mtime);
            tx = Some(Txn {
                trash_name,
                trash,
                next: 0,
                journal: Vec::new(),
                upper: BTreeSet::new(),
                created: HashSet::new(),
                touched,
            });
        }
        Ok(Applier {
            fs,
            cfg,
            resolver: Resolver::new(root),
            follow: if opts.mode == WhiteoutMode::Apply {
                Follow::InRoot
            } else {
                Follow::Never
            },
            current: None,
            entries: 0,
            warnings: Warnings::default(),
            deferred: Vec::new(),
            deferred_at: HashMap::new(),
            tx,
            staged: None,
        })
    }

    /// Replay mode (`layer/staged.rs`): regular files are moved in from `dir`.
    pub(crate) fn set_staging(&mut self, dir: F::Dir) {
        self.staged = Some((dir, None));
    }

    /// Replay mode: the staged name of the next entry's content, if it is a regular file.
    pub(crate) fn set_next_staged(&mut self, name: Option<Vec<u8>>) {
        if let Some((_, next)) = &mut self.staged {
            *next = name;
        }
    }

    pub(crate) fn take_warnings(&mut self) -> Vec<super::Warning> {
        std::mem::take(&mut self.warnings).into_vec()
    }

    // --- per entry ---------------------------------------------------------------------------

    fn entry(&mut self, h: &Header) -> Result<()> {
        self.entries += 1;
        let shown = display_name(&h.path);
        self.cfg.check_entry(h, self.entries, &shown)?;
        let entry = to_entry(h, &shown)?;
        let mtime = h.mtime;
        match self.cfg.mode {
            WhiteoutMode::Oci => {
                let original = entry.clone();
                match LayerChange::from_oci(entry)? {
                    LayerChange::Skip => self.skip_meta(shown),
                    LayerChange::Entry { entry, .. } => self.put(entry, mtime, &shown),
                    LayerChange::Whiteout { .. } | LayerChange::Opaque { .. } => {
                        let mut marker = original;
                        marker.path = normalize_path(&marker.path)?.into_owned();
                        self.put(marker, mtime, &shown)
                    }
                }
            }
            WhiteoutMode::Overlay => {
                match LayerChange::from_oci(entry)?.to_overlay(self.cfg.ns, self.cfg.policy)? {
                    ToOverlay::Create(entry) => self.put(entry, mtime, &shown),
                    ToOverlay::Whiteout { path } => self.overlay_whiteout(&path, mtime, &shown),
                    ToOverlay::MarkOpaque { dir, xattr } => {
                        self.overlay_opaque(&dir, xattr.as_bytes(), &shown)
                    }
                    ToOverlay::Skip => self.skip_meta(shown),
                }
            }
            WhiteoutMode::Apply => match LayerChange::from_oci(entry)? {
                LayerChange::Entry { entry, .. } => self.put(entry, mtime, &shown),
                LayerChange::Whiteout { path } => self.apply_whiteout(&path, &shown),
                LayerChange::Opaque { dir } => self.apply_opaque(&dir, &shown),
                LayerChange::Skip => self.skip_meta(shown),
            },
        }
    }

    fn skip_meta(&mut self, shown: String) -> Result<()> {
        self.warnings.push(
            shown,
            "whiteout metadata (`.wh..wh.*`, aufs) is not content: skipped".into(),
        );
        Ok(())
    }

    fn data(&mut self, data: &[u8]) -> Result<()> {
        let open = self
            .current
            .as_mut()
            .ok_or_else(|| internal("file data without an open file"))?;
        self.fs
            .write_file(&mut open.file, data)
            .map_err(|e| io_error("write", &open.shown, e))
    }

    fn end_entry(&mut self) -> Result<()> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        let meta = SetMeta {
            owner: open.owner,
            xattrs: &open.xattrs,
            mode: Some(open.mode),
            mtime: Some(open.mtime),
        };
        let refused = self
            .fs
            .set_meta(Target::File(&open.file), &meta)
            .map_err(|e| io_error("set metadata of", &open.shown, e));
        let closed = self
            .fs
            .close_file(open.file)
            .map_err(|e| io_error("close", &open.shown, e));
        let refused = refused?;
        closed?;
        self.refused(&open.shown, refused);
        Ok(())
    }

    fn refused(&mut self, shown: &str, refused: Vec<(Vec<u8>, FsError)>) {
        for (name, e) in refused {
            self.warnings.push(
                shown.to_string(),
                format!("xattr {} not set: {e}", display_name(&name)),
            );
        }
    }

    /// Owner and xattrs to set for an entry with these archive values.
    fn meta_for(&self, entry: &Entry) -> (Option<(u32, u32)>, Xattrs) {
        meta_for(&self.cfg, entry)
    }

    /// Writes one content entry (normalized path), replacing whatever is there.
    fn put(&mut self, entry: Entry, mtime: Timestamp, shown: &str) -> Result<()> {
        let (owner, xattrs) = self.meta_for(&entry);
        if entry.path.is_empty() {
            return self.put_root(owner, &xattrs, entry.mode, mtime, shown);
        }
        let (parent, name) = split(&entry.path);
        let (pdir, pcanon) = self
            .dir(parent, true, shown)?
            .ok_or_else(|| internal("a parent directory could not be created"))?;
        let canon = join(&pcanon, name);
        let mut link = match &entry.kind {
            EntryKind::Hardlink { target } => Some(self.link_source(target, shown)?),
            _ => None,
        };
        let existing = self
            .fs
            .lstat(&pdir, name)
            .map_err(|e| io_error("lstat", shown, e))?;
        let mut opaque = false;
        if let Some(st) = existing {
            if st.kind == FileType::Dir && entry.kind.is_dir() {
                return self.merge_dir(
                    &pdir, &canon, name, owner, &xattrs, entry.mode, mtime, shown,
                );
            }
            if let Some((_, _, lst)) = &link {
                if (lst.dev, lst.ino) == (st.dev, st.ino) {
                    // Already a link to the target (`a` linked to itself, or applied twice).
                    self.wrote(&canon, false);
                    return Ok(());
                }
            }
            if self.cfg.mode == WhiteoutMode::Overlay
                && entry.kind.is_dir()
                && is_whiteout_device(&st)
            {
                // `.wh.d` and `d/` in one layer: the directory replaces the lower one.
                opaque = true;
            }
            self.remove(&pdir, &pcanon, name, shown)?;
            if let (Some(_), EntryKind::Hardlink { target }) = (&link, &entry.kind) {
                // The removal may have taken the target with it.
                link = Some(self.link_source(target, shown)?);
            }
        }
        self.before_change(&pdir, &pcanon, shown)?;
        match entry.kind {
            EntryKind::File => {
                if let Some((sdir, next)) = &mut self.staged {
                    let from = next
                        .take()
                        .ok_or_else(|| internal("a staged file is missing"))?;
                    self.fs
                        .rename(sdir, &from, &pdir, name)
                        .map_err(|e| io_error("move the staged file to", shown, e))?;
                    self.wrote(&canon, true);
                    return Ok(());
                }
                let file = self
                    .fs
                    .create_file(&pdir, name, 0o600)
                    .map_err(|e| io_error("create file", shown, e))?;
                self.wrote(&canon, true);
                self.current = Some(Open {
                    file,
                    shown: shown.to_string(),
                    owner,
                    xattrs,
                    mode: entry.mode,
                    mtime,
                });
            }
            EntryKind::Dir => {
                self.fs
                    .mkdir(&pdir, name, 0o700)
                    .map_err(|e| io_error("create directory", shown, e))?;
                self.wrote(&canon, true);
                let dir = self
                    .fs
                    .open_dir(&pdir, name)
                    .map_err(|e| io_error("open directory", shown, e))?;
                let mut xattrs = xattrs;
                if opaque {
                    xattrs.push((self.cfg.ns.opaque_xattr().into(), OPAQUE_VALUE.to_vec()));
                }
                let meta = SetMeta {
                    owner,
                    xattrs: &xattrs,
                    mode: None,
                    mtime: None,
                };
                let refused = self
                    .fs
                    .set_meta(Target::Dir(&dir), &meta)
                    .map_err(|e| io_error("set metadata of", shown, e))?;
                self.check_opaque_set(&refused, shown)?;
                self.refused(shown, refused);
                self.defer(canon, entry.mode, Some(mtime));
            }
            EntryKind::Symlink { target } => {
                self.fs
                    .symlink(&pdir, name, &target)
                    .map_err(|e| io_error("create symlink", shown, e))?;
                self.wrote(&canon, true);
                let meta = SetMeta {
                    owner,
                    xattrs: &xattrs,
                    mode: None,
                    mtime: Some(mtime),
                };
                self.set_at(&pdir, name, &meta, shown)?;
            }
            EntryKind::Hardlink { .. } => {
                let (ldir, lname, _) = link.ok_or_else(|| internal("hard link without target"))?;
                self.fs
                    .hardlink(&ldir, &lname, &pdir, name)
                    .map_err(|e| io_error("create hard link", shown, e))?;
                // The inode's metadata is the target's (GNU tar and umoci leave it alone).
                self.wrote(&canon, true);
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let node = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    Special::CharDevice { major, minor }
                } else {
                    Special::BlockDevice { major, minor }
                };
                match self.fs.mknod(&pdir, name, node, entry.mode) {
                    Ok(()) => {}
                    Err(e) if e.kind == FsErrorKind::PermissionDenied => {
                        self.warnings.push(
                            shown.to_string(),
                            format!(
                                "{} {major}:{minor} not created: creating devices needs \
                                 privilege ({e})",
                                entry.kind.name()
                            ),
                        );
                        return Ok(());
                    }
                    Err(e) => return Err(io_error("create device", shown, e)),
                }
                self.wrote(&canon, true);
                self.set_node_meta(&pdir, name, owner, &xattrs, entry.mode, mtime, shown)?;
            }
            EntryKind::Fifo => {
                self.fs
                    .mknod(&pdir, name, Special::Fifo, entry.mode)
                    .map_err(|e| io_error("create fifo", shown, e))?;
                self.wrote(&canon, true);
                self.set_node_meta(&pdir, name, owner, &xattrs, entry.mode, mtime, shown)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn set_node_meta(
        &mut self,
        dir: &F::Dir,
        name: &[u8],
        owner: Option<(u32, u32)>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        mode: u32,
        mtime: Timestamp,
        shown: &str,
    ) -> Result<()> {
        let meta = SetMeta {
            owner,
            xattrs,
            mode: Some(mode),
            mtime: Some(mtime),
        };
        self.set_at(dir, name, &meta, shown)
    }

    fn set_at(&mut self, dir: &F::Dir, name: &[u8], meta: &SetMeta<'_>, shown: &str) -> Result<()> {
        let refused = self
            .fs
            .set_meta(Target::At(dir, name), meta)
            .map_err(|e| io_error("set metadata of", shown, e))?;
        self.refused(shown, refused);
        Ok(())
    }

    /// An opaque xattr that could not be set would silently resurrect lower contents.
    fn check_opaque_set(&self, refused: &[(Vec<u8>, FsError)], shown: &str) -> Result<()> {
        let opaque = self.cfg.ns.opaque_xattr().as_bytes();
        match refused.iter().find(|(n, _)| n == opaque) {
            Some((_, e)) => Err(Error::Io {
                op: format!("set {} on", self.cfg.ns.opaque_xattr()),
                path: shown.to_string(),
                errno: e.errno,
                reason: e.message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A directory entry over an existing directory: they merge, the entry's metadata wins
    /// (xattrs not in the entry are removed, as umoci does and as an overlay upper dir shows).
    #[allow(clippy::too_many_arguments)]
    fn merge_dir(
        &mut self,
        pdir: &F::Dir,
        canon: &[u8],
        name: &[u8],
        owner: Option<(u32, u32)>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        mode: u32,
        mtime: Timestamp,
        shown: &str,
    ) -> Result<()> {
        let dir = self
            .fs
            .open_dir(pdir, name)
            .map_err(|e| io_error("open directory", shown, e))?;
        self.set_dir_meta(&dir, canon, owner, xattrs, shown)?;
        self.wrote(canon, false);
        self.defer(canon.to_vec(), mode, Some(mtime));
        Ok(())
    }

    fn put_root(
        &mut self,
        owner: Option<(u32, u32)>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        mode: u32,
        mtime: Timestamp,
        shown: &str,
    ) -> Result<()> {
        let root = self.resolver.root().clone();
        self.set_dir_meta(&root, b"", owner, xattrs, shown)?;
        self.defer(Vec::new(), mode, Some(mtime));
        Ok(())
    }

    /// Replaces an existing directory's owner and xattrs (journaled in `apply` mode).
    fn set_dir_meta(
        &mut self,
        dir: &F::Dir,
        canon: &[u8],
        owner: Option<(u32, u32)>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        shown: &str,
    ) -> Result<()> {
        let old = self
            .fs
            .xattrs(Target::Dir(dir))
            .map_err(|e| io_error("list xattrs of", shown, e))?;
        if let Some(tx) = &mut self.tx {
            if !tx.created.contains(canon) {
                let stat = self
                    .fs
                    .stat_dir(dir)
                    .map_err(|e| io_error("stat", shown, e))?;
                tx.journal.push(Undo::Meta {
                    path: canon.to_vec(),
                    stat,
                    xattrs: old.clone(),
                });
            }
        }
        let keep_opaque = self.cfg.mode == WhiteoutMode::Overlay;
        for (name, _) in &old {
            let protected = name == SELINUX_XATTR
                || (keep_opaque && name == self.cfg.ns.opaque_xattr().as_bytes());
            if protected || xattrs.iter().any(|(n, _)| n == name) {
                continue;
            }
            match self.fs.remove_xattr(Target::Dir(dir), name) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind,
                        FsErrorKind::PermissionDenied | FsErrorKind::Unsupported
                    ) =>
                {
                    self.warnings.push(
                        shown.to_string(),
                        format!("xattr {} not removed: {e}", display_name(name)),
                    )
                }
                Err(e) => return Err(io_error("remove xattr of", shown, e)),
            }
        }
        let meta = SetMeta {
            owner,
            xattrs,
            mode: None,
            mtime: None,
        };
        let refused = self
            .fs
            .set_meta(Target::Dir(dir), &meta)
            .map_err(|e| io_error("set metadata of", shown, e))?;
        self.refused(shown, refused);
        Ok(())
    }

    fn defer(&mut self, path: Vec<u8>, mode: u32, mtime: Option<Timestamp>) {
        match self.deferred_at.get(&path) {
            Some(&i) => {
                self.deferred[i].mode = mode;
                if mtime.is_some() {
                    self.deferred[i].mtime = mtime;
                }
            }
            None => {
                self.deferred_at.insert(path.clone(), self.deferred.len());
                self.deferred.push(Deferred { path, mode, mtime });
            }
        }
    }

    /// Records that this layer wrote `canon` (and created it, when `created`).
    fn wrote(&mut self, canon: &[u8], created: bool) {
        if let Some(tx) = &mut self.tx {
            tx.upper.insert(canon.to_vec());
            if created {
                tx.created.insert(canon.to_vec());
                tx.journal.push(Undo::Created(canon.to_vec()));
            }
        }
    }

    /// Before changing the contents of directory `dir` (canonical `canon`): remember its mtime
    /// if it existed before this layer.
    fn before_change(&mut self, dir: &F::Dir, canon: &[u8], shown: &str) -> Result<()> {
        if let Some(tx) = &mut self.tx {
            if !tx.created.contains(canon) && !tx.touched.contains_key(canon) {
                let st = self
                    .fs
                    .stat_dir(dir)
                    .map_err(|e| io_error("stat the parent of", shown, e))?;
                tx.touched.insert(canon.to_vec(), st.mtime);
            }
        }
        Ok(())
    }

    /// Removes `name` from `dir`: into the trash in `apply` mode, for good otherwise.
    fn remove(&mut self, dir: &F::Dir, dir_canon: &[u8], name: &[u8], shown: &str) -> Result<()> {
        self.before_change(dir, dir_canon, shown)?;
        self.resolver.invalidate();
        match &mut self.tx {
            Some(tx) => {
                let trash = tx.next.to_string().into_bytes();
                tx.next += 1;
                self.fs
                    .rename(dir, name, &tx.trash, &trash)
                    .map_err(|e| io_error("move aside (to the trash)", shown, e))?;
                tx.journal.push(Undo::Moved {
                    path: join(dir_canon, name),
                    trash,
                });
                Ok(())
            }
            None => remove_tree(self.fs, dir, name).map_err(|e| io_error("remove", shown, e)),
        }
    }

    /// Resolves directory `path` below the root. With `create`, missing components are
    /// created (implied directories, mode 0755) and, where the layer format says so, a
    /// non-directory in the way is replaced. Without, `None` when it is missing or not a
    /// directory.
    fn dir(&mut self, path: &[u8], create: bool, shown: &str) -> Result<Option<(F::Dir, Vec<u8>)>> {
        let mut walk = self.resolver.start(path);
        loop {
            match self.resolver.step(self.fs, &mut walk, self.follow) {
                Ok(Step::Done(dir)) => {
                    let canon = walk.path();
                    self.resolver.finish(walk);
                    return Ok(Some((dir, canon)));
                }
                Ok(Step::Missing {
                    parent,
                    parent_path,
                    name,
                }) => {
                    if !create {
                        return Ok(None);
                    }
                    self.implicit_dir(&parent, &parent_path, &name, false, shown)?;
                }
                Err(WalkError::NotADirectory { at, kind }) => {
                    if !create {
                        return Ok(None);
                    }
                    self.replace_blocker(&at, kind, shown)?;
                    walk = self.resolver.start(path);
                }
                Err(e) => return Err(walk_error(shown, e)),
            }
        }
    }

    /// A non-directory where this entry needs a directory. In overlay mode a whiteout device
    /// of this layer becomes an opaque directory (the layer deleted the lower `d` and has
    /// contents for a new one). In apply mode a non-directory of a lower layer is replaced by
    /// the implied directory, as in the overlay view. Anything this layer wrote itself is a
    /// conflict.
    fn replace_blocker(&mut self, at: &[u8], kind: FileType, shown: &str) -> Result<()> {
        let conflict = || {
            walk_error(
                shown,
                WalkError::NotADirectory {
                    at: at.to_vec(),
                    kind,
                },
            )
        };
        let (parent, name) = split(at);
        // `at` is canonical: its parent resolves without following anything.
        let (pdir, pcanon) = self.exact_dir(parent).ok_or_else(conflict)?;
        let st = self
            .fs
            .lstat(&pdir, name)
            .map_err(|e| io_error("lstat", shown, e))?
            .ok_or_else(conflict)?;
        let opaque = match self.cfg.mode {
            WhiteoutMode::Overlay if is_whiteout_device(&st) => true,
            WhiteoutMode::Apply if !self.tx.as_ref().is_some_and(|tx| tx.upper.contains(at)) => {
                false
            }
            _ => return Err(conflict()),
        };
        self.remove(&pdir, &pcanon, name, shown)?;
        self.implicit_dir(&pdir, &pcanon, name, opaque, shown)
    }

    fn implicit_dir(
        &mut self,
        parent: &F::Dir,
        parent_canon: &[u8],
        name: &[u8],
        opaque: bool,
        shown: &str,
    ) -> Result<()> {
        self.before_change(parent, parent_canon, shown)?;
        self.fs
            .mkdir(parent, name, 0o755)
            .map_err(|e| io_error("create parent directory for", shown, e))?;
        let canon = join(parent_canon, name);
        self.wrote(&canon, true);
        if opaque {
            let xattrs = [(
                self.cfg.ns.opaque_xattr().as_bytes().to_vec(),
                OPAQUE_VALUE.to_vec(),
            )];
            let dir = self
                .fs
                .open_dir(parent, name)
                .map_err(|e| io_error("open directory", shown, e))?;
            let refused = self
                .fs
                .set_meta(
                    Target::Dir(&dir),
                    &SetMeta {
                        xattrs: &xattrs,
                        ..SetMeta::default()
                    },
                )
                .map_err(|e| io_error("set metadata of", shown, e))?;
            self.check_opaque_set(&refused, shown)?;
        }
        // Implied directories: 0755 whatever the umask; owner and mtime as created.
        if !self.deferred_at.contains_key(&canon) {
            self.defer(canon, 0o755, None);
        }
        Ok(())
    }

    /// A canonical directory path, without following anything; `None` if it is not one now.
    fn exact_dir(&mut self, path: &[u8]) -> Option<(F::Dir, Vec<u8>)> {
        let mut walk = self.resolver.start(path);
        match self.resolver.step(self.fs, &mut walk, Follow::Never) {
            Ok(Step::Done(dir)) => {
                let canon = walk.path();
                self.resolver.finish(walk);
                Some((dir, canon))
            }
            _ => None,
        }
    }

    /// The existing entry a hard link points at: (its directory, its name, its stat).
    fn link_source(&mut self, target: &[u8], shown: &str) -> Result<(F::Dir, Vec<u8>, Stat)> {
        let conflict = |reason: String| Error::EntryConflict {
            path: shown.to_string(),
            reason,
        };
        let shown_target = display_name(target);
        let target = normalize_path(target).map_err(|_| {
            conflict(format!(
                "hard link target {shown_target:?} leaves the layer root"
            ))
        })?;
        if target.is_empty() {
            return Err(conflict("a hard link cannot point at the root".into()));
        }
        let (parent, name) = split(&target);
        let missing = || {
            conflict(format!(
                "hard link target {shown_target:?} does not exist (it must be an earlier entry)"
            ))
        };
        let (dir, _) = self.dir(parent, false, shown)?.ok_or_else(missing)?;
        let st = self
            .fs
            .lstat(&dir, name)
            .map_err(|e| io_error("lstat hard link target of", shown, e))?
            .ok_or_else(missing)?;
        if st.kind == FileType::Dir {
            return Err(conflict(format!(
                "hard link target {shown_target:?} is a directory"
            )));
        }
        if self.cfg.mode == WhiteoutMode::Overlay && is_whiteout_device(&st) {
            // A link to it would be one more whiteout, not content.
            return Err(conflict(format!(
                "hard link target {shown_target:?} is whited out by this layer"
            )));
        }
        Ok((dir, name.to_vec(), st))
    }

    // --- whiteouts ---------------------------------------------------------------------------

    /// Overlay mode: a whiteout device, unless this layer has its own entry there (then a
    /// directory becomes opaque, anything else stays).
    fn overlay_whiteout(&mut self, path: &[u8], mtime: Timestamp, shown: &str) -> Result<()> {
        let (parent, name) = split(path);
        let (pdir, pcanon) = self
            .dir(parent, true, shown)?
            .ok_or_else(|| internal("a parent directory could not be created"))?;
        match self
            .fs
            .lstat(&pdir, name)
            .map_err(|e| io_error("lstat", shown, e))?
        {
            None => {
                self.before_change(&pdir, &pcanon, shown)?;
                self.fs
                    .mknod(&pdir, name, Special::CharDevice { major: 0, minor: 0 }, 0)
                    .map_err(|e| io_error("create whiteout device for", shown, e))?;
                let meta = SetMeta {
                    owner: self.cfg.preserve_owner.then_some((0, 0)),
                    xattrs: &[],
                    mode: Some(0),
                    mtime: Some(mtime),
                };
                self.set_at(&pdir, name, &meta, shown)
            }
            Some(st) if st.kind == FileType::Dir => {
                let dir = self
                    .fs
                    .open_dir(&pdir, name)
                    .map_err(|e| io_error("open directory", shown, e))?;
                self.mark_opaque(&dir, shown)
            }
            Some(_) => Ok(()),
        }
    }

    /// Overlay mode: `dir/.wh..wh..opq`.
    fn overlay_opaque(&mut self, dir: &[u8], _xattr: &[u8], shown: &str) -> Result<()> {
        let (handle, _) = self
            .dir(dir, true, shown)?
            .ok_or_else(|| internal("a directory could not be created"))?;
        self.mark_opaque(&handle, shown)
    }

    fn mark_opaque(&mut self, dir: &F::Dir, shown: &str) -> Result<()> {
        let xattrs = [(
            self.cfg.ns.opaque_xattr().as_bytes().to_vec(),
            OPAQUE_VALUE.to_vec(),
        )];
        let refused = self
            .fs
            .set_meta(
                Target::Dir(dir),
                &SetMeta {
                    xattrs: &xattrs,
                    ..SetMeta::default()
                },
            )
            .map_err(|e| io_error("set metadata of", shown, e))?;
        self.check_opaque_set(&refused, shown)
    }

    /// Apply mode: `.wh.<name>` deletes what lower layers have at `path`.
    fn apply_whiteout(&mut self, path: &[u8], shown: &str) -> Result<()> {
        let (parent, name) = split(path);
        let Some((pdir, pcanon)) = self.dir(parent, false, shown)? else {
            return Ok(()); // nothing there to delete
        };
        let Some(st) = self
            .fs
            .lstat(&pdir, name)
            .map_err(|e| io_error("lstat", shown, e))?
        else {
            return Ok(());
        };
        self.delete_lower(&pdir, &pcanon, name, st, shown)
    }

    /// Apply mode: `dir/.wh..wh..opq` empties `dir` of what lower layers put there.
    fn apply_opaque(&mut self, dir: &[u8], shown: &str) -> Result<()> {
        let Some((handle, canon)) = self.dir(dir, false, shown)? else {
            return Ok(());
        };
        self.wrote(&canon, false);
        self.delete_children(&handle, &canon, shown)
    }

    fn delete_children(&mut self, dir: &F::Dir, canon: &[u8], shown: &str) -> Result<()> {
        let mut names = self
            .fs
            .read_dir(dir)
            .map_err(|e| io_error("read directory for", shown, e))?;
        names.sort();
        for child in names {
            if canon.is_empty() && self.tx.as_ref().is_some_and(|tx| tx.trash_name == child) {
                continue;
            }
            let st = self
                .fs
                .lstat(dir, &child)
                .map_err(|e| io_error("lstat", shown, e))?;
            if let Some(st) = st {
                self.delete_lower(dir, canon, &child, st, shown)?;
            }
        }
        Ok(())
    }

    /// Deletes `name` and everything below it, except what this layer wrote (OCI: whiteouts
    /// only apply to lower layers), as umoci does.
    fn delete_lower(
        &mut self,
        dir: &F::Dir,
        dir_canon: &[u8],
        name: &[u8],
        st: Stat,
        shown: &str,
    ) -> Result<()> {
        let canon = join(dir_canon, name);
        let (mine, below) = match &self.tx {
            Some(tx) => (tx.upper.contains(&canon), has_below(&tx.upper, &canon)),
            None => (false, false),
        };
        if !mine && !below {
            return self.remove(dir, dir_canon, name, shown);
        }
        if st.kind != FileType::Dir {
            return Ok(());
        }
        let child = self
            .fs
            .open_dir(dir, name)
            .map_err(|e| io_error("open directory", shown, e))?;
        self.delete_children(&child, &canon, shown)
    }

    // --- the end -----------------------------------------------------------------------------

    /// After a verified stream: directory metadata, then the trash (apply mode).
    pub(crate) fn commit(&mut self) -> Result<()> {
        if self.current.is_some() {
            return Err(self.abort(internal("a file was still open at the end")));
        }
        if let Err(e) = self.finish_dirs(false) {
            return Err(self.abort(e));
        }
        if let Some(tx) = self.tx.take() {
            let root = self.resolver.root().clone();
            remove_tree(self.fs, &root, &tx.trash_name).map_err(|e| Error::Io {
                op: "remove the trash directory (the layer itself was applied)".into(),
                path: display_name(&tx.trash_name),
                errno: e.errno,
                reason: e.message,
            })?;
            if !self.deferred_at.contains_key(&Vec::new()) {
                if let Some(&mtime) = tx.touched.get(&Vec::new()) {
                    self.set_dir_times(&root, mtime, "")?;
                }
            }
        }
        self.finish_dirs(true)
    }

    /// Sets deferred directory metadata (children before parents), and in apply mode restores
    /// the mtime of pre-existing directories the layer changed without listing them. The root
    /// is done separately (`root`), after the trash is gone.
    fn finish_dirs(&mut self, root: bool) -> Result<()> {
        if root {
            match self.deferred_at.get(&Vec::new()) {
                Some(&i) => {
                    let (mode, mtime) = (self.deferred[i].mode, self.deferred[i].mtime);
                    let dir = self.resolver.root().clone();
                    let meta = SetMeta {
                        mode: Some(mode),
                        mtime,
                        ..SetMeta::default()
                    };
                    self.fs
                        .set_meta(Target::Dir(&dir), &meta)
                        .map_err(|e| io_error("set metadata of", "", e))?;
                }
                None if self.cfg.mode != WhiteoutMode::Apply => {
                    let dir = self.resolver.root().clone();
                    let meta = SetMeta {
                        mode: Some(0o755),
                        ..SetMeta::default()
                    };
                    self.fs
                        .set_meta(Target::Dir(&dir), &meta)
                        .map_err(|e| io_error("set metadata of", "", e))?;
                }
                None => {}
            }
            return Ok(());
        }
        self.resolver.invalidate();
        let deferred = std::mem::take(&mut self.deferred);
        for d in deferred.iter().rev() {
            if d.path.is_empty() {
                continue;
            }
            let Some((dir, _)) = self.exact_dir(&d.path) else {
                continue; // replaced by a later entry
            };
            let meta = SetMeta {
                mode: Some(d.mode),
                mtime: d.mtime,
                ..SetMeta::default()
            };
            let shown = display_name(&d.path);
            self.fs
                .set_meta(Target::Dir(&dir), &meta)
                .map_err(|e| io_error("set metadata of", &shown, e))?;
        }
        self.deferred = deferred;
        if let Some(tx) = &self.tx {
            let touched: Vec<(Vec<u8>, Timestamp)> = tx
                .touched
                .iter()
                .filter(|(p, _)| !p.is_empty() && !self.deferred_at.contains_key(*p))
                .map(|(p, t)| (p.clone(), *t))
                .collect();
            for (path, mtime) in touched {
                if let Some((dir, _)) = self.exact_dir(&path) {
                    self.set_dir_times(&dir, mtime, &display_name(&path))?;
                }
            }
        }
        Ok(())
    }

    fn set_dir_times(&mut self, dir: &F::Dir, mtime: Timestamp, shown: &str) -> Result<()> {
        let meta = SetMeta {
            mtime: Some(mtime),
            ..SetMeta::default()
        };
        self.fs
            .set_meta(Target::Dir(dir), &meta)
            .map(|_| ())
            .map_err(|e| io_error("set mtime of", shown, e))
    }

    /// On any error: close the open file and, in apply mode, undo everything.
    pub(crate) fn abort(&mut self, error: Error) -> Error {
        if let Some(open) = self.current.take() {
            let _ = self.fs.close_file(open.file);
        }
        let Some(tx) = self.tx.take() else {
            return error;
        };
        match self.rollback(tx) {
            Ok(()) => error,
            Err(rollback) => Error::RollbackFailed {
                error: error.to_string(),
                rollback,
            },
        }
    }

    fn rollback(&mut self, tx: Txn<F::Dir>) -> std::result::Result<(), String> {
        self.resolver.invalidate();
        let mut failures = Vec::new();
        let root = self.resolver.root().clone();
        for undo in tx.journal.into_iter().rev() {
            let result = match undo {
                Undo::Created(path) => {
                    let (parent, name) = split(&path);
                    match self.exact_dir(parent) {
                        Some((dir, _)) => remove_tree(self.fs, &dir, name)
                            .map_err(|e| format!("remove {:?}: {e}", display_name(&path))),
                        None => Ok(()),
                    }
                }
                Undo::Moved { path, trash } => {
                    let (parent, name) = split(&path);
                    match self.exact_dir(parent) {
                        Some((dir, _)) => self
                            .fs
                            .rename(&tx.trash, &trash, &dir, name)
                            .map_err(|e| format!("restore {:?}: {e}", display_name(&path))),
                        None => Err(format!(
                            "restore {:?}: its directory is gone",
                            display_name(&path)
                        )),
                    }
                }
                Undo::Meta { path, stat, xattrs } => self.restore_meta(&path, &stat, &xattrs),
            };
            if let Err(e) = result {
                failures.push(e);
            }
            self.resolver.invalidate();
        }
        if let Err(e) = remove_tree(self.fs, &root, &tx.trash_name) {
            failures.push(format!("remove the trash directory: {e}"));
        }
        for (path, mtime) in &tx.touched {
            if let Some((dir, _)) = self.exact_dir(path) {
                if let Err(e) = self.fs.set_meta(
                    Target::Dir(&dir),
                    &SetMeta {
                        mtime: Some(*mtime),
                        ..SetMeta::default()
                    },
                ) {
                    failures.push(format!("restore mtime of {:?}: {e}", display_name(path)));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    fn restore_meta(
        &mut self,
        path: &[u8],
        stat: &Stat,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> std::result::Result<(), String> {
        let shown = display_name(path);
        let Some((dir, _)) = self.exact_dir(path) else {
            return Err(format!("restore metadata of {shown:?}: it is gone"));
        };
        let fail = |e: FsError| format!("restore metadata of {shown:?}: {e}");
        let now = self.fs.xattrs(Target::Dir(&dir)).map_err(fail)?;
        for (name, _) in now {
            if name != SELINUX_XATTR && !xattrs.iter().any(|(n, _)| *n == name) {
                self.fs
                    .remove_xattr(Target::Dir(&dir), &name)
                    .map_err(fail)?;
            }
        }
        let meta = SetMeta {
            owner: self.cfg.preserve_owner.then_some((stat.uid, stat.gid)),
            xattrs,
            mode: Some(stat.mode),
            mtime: Some(stat.mtime),
        };
        self.fs
            .set_meta(Target::Dir(&dir), &meta)
            .map(|_| ())
            .map_err(fail)
    }
}

/// Removes `name` from `dir` and, if it is a directory, everything below it, never following
/// a symlink. Missing is not an error. Without privilege, directories are made writable
/// (0700) before they are emptied.
pub fn remove_tree<F: Fs>(fs: &mut F, dir: &F::Dir, name: &[u8]) -> Result<(), FsError> {
    let Some(st) = fs.lstat(dir, name)? else {
        return Ok(());
    };
    if st.kind != FileType::Dir {
        return match fs.remove(dir, name, false) {
            Err(e) if e.kind == FsErrorKind::NotFound => Ok(()),
            other => other,
        };
    }
    let sub = fs.open_dir(dir, name)?;
    if !fs.privileged() && st.mode & 0o700 != 0o700 {
        fs.set_meta(
            Target::Dir(&sub),
            &SetMeta {
                mode: Some(0o700),
                ..SetMeta::default()
            },
        )?;
    }
    for child in fs.read_dir(&sub)? {
        remove_tree(fs, &sub, &child)?;
    }
    match fs.remove(dir, name, true) {
        Err(e) if e.kind == FsErrorKind::NotFound => Ok(()),
        other => other,
    }
}
