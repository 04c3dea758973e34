//! Flattening in two phases, so that several layers decompress at once.
//!
//! Applying layers one after the other keeps one core busy per layer (decompression is
//! serial within a gzip stream). A flatten instead *stages* every layer independently — which
//! can run on as many threads as there are layers — and then *replays* them in order onto the
//! root filesystem:
//!
//! 1. [`stage_layer`]: one pass over the stream, as in [`apply_to`](super::apply_to): digests,
//!    limits and paths are checked, and the content of each regular file is written, with its
//!    final owner, xattrs, mode and mtime, into a flat staging directory under a name of its
//!    own. Every header is kept (no data), in archive order.
//! 2. [`apply_staged`]: the `apply`-mode applier runs over the kept headers exactly as it would
//!    over the stream — same resolver, same whiteout and replacement rules, same transaction —
//!    except that a regular file is *moved* in from the staging directory instead of written.
//!
//! The result is the tree `apply_to` gives, entry for entry. Phase 2 only does metadata
//! operations (renames, links, mkdirs), so its cost is small next to phase 1.

use super::apply::{self, meta_for, to_entry, Applier, Cfg, EntrySink, Open};
use super::fs::{Fs, SetMeta, Target};
use super::{ApplyOptions, ApplyReport, Progress, Warnings, WhiteoutMode};
use crate::error::Result;
use crate::overlay::{EntryKind, LayerChange};
use crate::tar::{self, display_name, Header};
use std::io::Read;

/// A layer staged by [`stage_layer`]: its headers in archive order and what the stream was.
#[derive(Debug, Clone)]
pub struct StagedLayer {
    headers: Vec<Header>,
    /// For each header, the staging name of its content (regular files only).
    staged: Vec<Option<u64>>,
    /// Digests, sizes and compression of the stream; `skipped` holds phase 1's warnings.
    pub report: ApplyReport,
}

impl StagedLayer {
    /// Whether a header names the root directory (`./`): then the layer sets the root's
    /// metadata itself.
    pub fn sets_root(&self) -> bool {
        self.headers.iter().any(|h| {
            h.kind == tar::EntryKind::Directory
                && h.path
                    .split(|&b| b == b'/')
                    .all(|c| c.is_empty() || c == b".")
        })
    }
}

/// The staging name of the `n`th staged file.
fn staged_name(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// Phase 1: reads the layer stream `reader`, writing regular files' contents under flat names
/// into the empty directory `dir` of `fs`. `opts.mode` must be [`WhiteoutMode::Apply`] and
/// the same options must be given to [`apply_staged`]. Errors (digests, limits, unsafe paths)
/// are those of [`apply_to`](super::apply_to); on error the tree holds partial output for the
/// caller to discard.
pub fn stage_layer<F: Fs, R: Read + Send>(
    reader: R,
    fs: &mut F,
    dir: &F::Dir,
    opts: &ApplyOptions,
    mut progress: impl FnMut(Progress),
) -> Result<StagedLayer> {
    if opts.mode != WhiteoutMode::Apply {
        return Err(apply::internal("only apply mode can be staged"));
    }
    let dir = dir.clone();
    let cfg = Cfg::new(opts, fs.privileged());
    let mut stager = Stager {
        fs,
        dir,
        cfg,
        headers: Vec::new(),
        staged: Vec::new(),
        next: 0,
        current: None,
        warnings: Warnings::default(),
    };
    let pipelined = opts.pipelined;
    let outcome = apply::run(
        move |sink, opts, alg, progress| {
            if pipelined {
                apply::pipelined(reader, alg, opts, sink, progress)
            } else {
                apply::inline(reader, alg, opts, sink, progress)
            }
        },
        &mut stager,
        opts,
        &mut progress,
    );
    if let Some(open) = stager.current.take() {
        let _ = stager.fs.close_file(open.file);
    }
    let mut report = outcome?;
    report.entries = stager.headers.len() as u64;
    report.skipped = stager.warnings.into_vec();
    progress(Progress {
        compressed_in: report.compressed_size,
        uncompressed_out: report.uncompressed_size,
        entries: report.entries,
    });
    Ok(StagedLayer {
        headers: stager.headers,
        staged: stager.staged,
        report,
    })
}

/// Phase 2: applies a staged layer to the root filesystem of `fs` in `apply` mode, moving
/// its files in from `staging` (a directory of the same `fs`, holding what [`stage_layer`]
/// wrote; emptied of this layer's files on success). On error every change is undone, as with
/// [`apply_to`](super::apply_to); staged files already moved in are then gone (discard the
/// staging directory).
pub fn apply_staged<F: Fs>(
    fs: &mut F,
    staging: &F::Dir,
    layer: &StagedLayer,
    opts: &ApplyOptions,
) -> Result<ApplyReport> {
    if opts.mode != WhiteoutMode::Apply {
        return Err(apply::internal("only apply mode can be staged"));
    }
    let mut applier = Applier::new(fs, opts)?;
    applier.set_staging(staging.clone());
    for (h, staged) in layer.headers.iter().zip(&layer.staged) {
        applier.set_next_staged(staged.map(staged_name));
        if let Err(e) = EntrySink::entry(&mut applier, h) {
            return Err(applier.abort(e));
        }
    }
    applier.commit()?;
    let mut report = layer.report.clone();
    report.skipped.extend(applier.take_warnings());
    Ok(report)
}

/// Phase 1's entry sink: keeps the headers, writes regular files' contents.
struct Stager<'f, F: Fs> {
    fs: &'f mut F,
    dir: F::Dir,
    cfg: Cfg,
    headers: Vec<Header>,
    staged: Vec<Option<u64>>,
    next: u64,
    current: Option<Open<F::File>>,
    warnings: Warnings,
}

impl<F: Fs> EntrySink for Stager<'_, F> {
    fn entry(&mut self, h: &Header) -> Result<()> {
        let shown = display_name(&h.path);
        self.cfg
            .check_entry(h, self.headers.len() as u64 + 1, &shown)?;
        // The same decision the applier makes on replay: only content regular files with a
        // path get a staged file (whiteouts, markers and links are replayed from the header).
        let entry = to_entry(h, &shown)?;
        let file = match LayerChange::from_oci(entry)? {
            LayerChange::Entry { entry, .. }
                if matches!(entry.kind, EntryKind::File) && !entry.path.is_empty() =>
            {
                Some(entry)
            }
            _ => None,
        };
        let mut header = h.clone();
        header.xattrs.shrink_to_fit();
        self.headers.push(header);
        let Some(entry) = file else {
            self.staged.push(None);
            return Ok(());
        };
        let n = self.next;
        self.next += 1;
        self.staged.push(Some(n));
        let (owner, xattrs) = meta_for(&self.cfg, &entry);
        let file = self
            .fs
            .create_file(&self.dir, &staged_name(n), 0o600)
            .map_err(|e| apply::io_error("create the staged file for", &shown, e))?;
        self.current = Some(Open::new(file, shown, owner, xattrs, entry.mode, h.mtime));
        Ok(())
    }

    fn data(&mut self, data: &[u8]) -> Result<()> {
        let open = self
            .current
            .as_mut()
            .ok_or_else(|| apply::internal("file data without an open file"))?;
        self.fs
            .write_file(&mut open.file, data)
            .map_err(|e| apply::io_error("write", &open.shown, e))
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
            .map_err(|e| apply::io_error("set metadata of", &open.shown, e));
        let closed = self
            .fs
            .close_file(open.file)
            .map_err(|e| apply::io_error("close", &open.shown, e));
        let refused = refused?;
        closed?;
        for (name, e) in refused {
            self.warnings.push(
                open.shown.clone(),
                format!("xattr {} not set: {e}", display_name(&name)),
            );
        }
        Ok(())
    }

    fn entries(&self) -> u64 {
        self.headers.len() as u64
    }

    fn in_file(&self) -> bool {
        self.current.is_some()
    }
}

/// Reads a layer stream to its end without writing anything: the digests (checked against
/// `opts.expected_*`), sizes, compression and entry count, with the same limits and tar checks
/// as applying it (decompression on a helper thread when `opts.pipelined`). For verifying a
/// stored layer (its diff_id needs the decompressed bytes) off the JS thread.
pub fn verify_layer<R: Read + Send>(
    reader: R,
    opts: &ApplyOptions,
    mut progress: impl FnMut(Progress),
) -> Result<ApplyReport> {
    let cfg = Cfg::new(opts, false);
    let mut sink = Counter {
        cfg,
        entries: 0,
        in_file: false,
    };
    let pipelined = opts.pipelined;
    let mut report = apply::run(
        move |sink, opts, alg, progress| {
            if pipelined {
                apply::pipelined(reader, alg, opts, sink, progress)
            } else {
                apply::inline(reader, alg, opts, sink, progress)
            }
        },
        &mut sink,
        opts,
        &mut progress,
    )?;
    report.entries = sink.entries;
    Ok(report)
}

/// [`verify_layer`]'s sink: counts entries and checks their caps and paths.
struct Counter {
    cfg: Cfg,
    entries: u64,
    in_file: bool,
}

impl EntrySink for Counter {
    fn entry(&mut self, h: &Header) -> Result<()> {
        self.entries += 1;
        let shown = display_name(&h.path);
        self.cfg.check_entry(h, self.entries, &shown)?;
        LayerChange::from_oci(to_entry(h, &shown)?)?;
        self.in_file = h.kind == tar::EntryKind::Regular;
        Ok(())
    }

    fn data(&mut self, _data: &[u8]) -> Result<()> {
        Ok(())
    }

    fn end_entry(&mut self) -> Result<()> {
        self.in_file = false;
        Ok(())
    }

    fn entries(&self) -> u64 {
        self.entries
    }

    fn in_file(&self) -> bool {
        self.in_file
    }
}
