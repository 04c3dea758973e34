//! One entry at a time between the two whiteout forms, as pure decisions on metadata:
//!
//! * OCI form (layer tars): `.wh.<name>` regular files delete `<name>`, `dir/.wh..wh..opq`
//!   makes `dir` opaque; a character device 0/0 is ordinary content.
//! * Overlay form (what Docker's overlay2 driver and containerd's overlay snapshotter keep in a
//!   layer's diff dir, and what the kernel writes to an upper dir): a character device 0/0 is a
//!   whiteout, a directory with `trusted.overlay.opaque = "y"` (or `user.`) is opaque, and
//!   content xattrs in that namespace are stored escaped (`trusted.overlay.overlay.X`).
//!
//! Both decode to a [`LayerChange`], the form-independent meaning of the entry, which encodes
//! to either form. Nothing here touches a filesystem; an applier carries out the returned action.

use super::entry::{display, join, normalize_path, split_parent, Entry, EntryKind};
use super::whiteout::{
    classify_oci_name, escape_overlay_xattr, is_overlay_whiteout, is_unsupported_private,
    unescape_overlay_xattr, whiteout_name, OciName, PrivateXattrPolicy, XattrNamespace,
    OPAQUE_MARKER, OPAQUE_VALUE,
};
use crate::error::{Error, Result};

/// The meaning of one layer entry, whichever form it came in. Paths are normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerChange {
    /// Content. `entry.xattrs` are content xattrs (overlay markers removed, escaped names
    /// unescaped). `opaque` (directories only): the lower layers' contents of this directory
    /// are hidden.
    Entry { entry: Entry, opaque: bool },
    /// `path` and everything below it in the lower layers is deleted.
    Whiteout { path: Vec<u8> },
    /// The OCI opaque marker on its own: `dir` (which this layer contains, explicitly or
    /// implicitly) is opaque.
    Opaque { dir: Vec<u8> },
    /// Not content (aufs metadata such as `.wh..wh.plnk`); ignore.
    Skip,
}

/// What an applier writes into an overlay diff dir for one OCI entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToOverlay {
    /// Create `entry` with its xattrs as given (private ones already escaped or dropped; the
    /// opaque xattr included when the directory is opaque).
    Create(Entry),
    /// Create a whiteout, a character device 0/0, at `path` (mode 0, owner 0:0).
    Whiteout { path: Vec<u8> },
    /// Set `xattr = "y"` on directory `dir`, creating `dir` (mode 0755) if the layer has no
    /// entry for it yet.
    ///
    /// An OCI layer may list both `.wh.d` and a directory `d` (the directory replaces the
    /// lower one and hides its contents): an applier that already wrote the whiteout must
    /// replace it with the directory and mark the directory opaque.
    MarkOpaque { dir: Vec<u8>, xattr: &'static str },
    /// Write nothing.
    Skip,
}

impl LayerChange {
    /// Decode an entry of an OCI layer (tar). Only regular files are whiteout markers;
    /// `.wh.`, `.wh..`, `.wh...` and directories named `.wh.*` are rejected.
    pub fn from_oci(mut entry: Entry) -> Result<LayerChange> {
        let path = normalize_path(&entry.path)?.into_owned();
        if path.is_empty() {
            entry.path = path;
            check_root(&entry)?;
            return Ok(LayerChange::Entry {
                entry,
                opaque: false,
            });
        }
        let (parent, name) = split_parent(&path);
        for comp in parent.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            match classify_oci_name(comp)? {
                OciName::Plain => {}
                OciName::Meta => return Ok(LayerChange::Skip),
                OciName::Whiteout(_) | OciName::Opaque => {
                    return Err(Error::InvalidWhiteout {
                        path: display(&path),
                        reason: "a whiteout marker cannot be a directory".into(),
                    })
                }
            }
        }
        let marker_must_be_file = |entry: &Entry| {
            if entry.kind == EntryKind::File {
                Ok(())
            } else {
                Err(Error::InvalidWhiteout {
                    path: display(&path),
                    reason: format!(
                        "only regular files are whiteout markers, this is a {}",
                        entry.kind.name()
                    ),
                })
            }
        };
        match classify_oci_name(name)? {
            OciName::Plain => {
                entry.path = path;
                Ok(LayerChange::Entry {
                    entry,
                    opaque: false,
                })
            }
            OciName::Meta => Ok(LayerChange::Skip),
            OciName::Opaque => {
                marker_must_be_file(&entry)?;
                Ok(LayerChange::Opaque {
                    dir: parent.to_vec(),
                })
            }
            OciName::Whiteout(target) => {
                marker_must_be_file(&entry)?;
                Ok(LayerChange::Whiteout {
                    path: join(parent, target),
                })
            }
        }
    }

    /// Decode an entry of a layer in overlay form (a diff dir or an upper dir walked by the
    /// caller). Character devices 0/0 are whiteouts; the opaque xattr of `ns` marks a
    /// directory opaque; other private xattrs of `ns` are driver state and are dropped, escaped
    /// ones are unescaped. `redirect`, `metacopy` and xwhiteout xattrs are refused: with them
    /// the directory alone is not the layer (SECURITY.md rule 9).
    pub fn from_overlay(mut entry: Entry, ns: XattrNamespace) -> Result<LayerChange> {
        entry.path = normalize_path(&entry.path)?.into_owned();
        check_root(&entry)?;
        if is_overlay_whiteout(&entry.kind) {
            return Ok(LayerChange::Whiteout { path: entry.path });
        }
        overlay_xattrs(entry, ns)
    }

    /// Encode for an OCI layer: the entries to write, in order (a directory before its
    /// opaque marker). Names starting with `.wh.` cannot be represented and are an error.
    pub fn to_oci(self) -> Result<Vec<Entry>> {
        match self {
            LayerChange::Entry { entry, opaque } => {
                check_oci_representable(&entry.path)?;
                let mut out = Vec::with_capacity(1 + usize::from(opaque));
                if opaque && entry.kind.is_dir() {
                    let marker = marker_entry(join(&entry.path, OPAQUE_MARKER.as_bytes()), &entry);
                    out.push(entry);
                    out.push(marker);
                } else {
                    out.push(entry);
                }
                Ok(out)
            }
            LayerChange::Whiteout { path } => {
                let (parent, name) = split_parent(&path);
                if name.is_empty() {
                    return Err(Error::InvalidWhiteout {
                        path: display(&path),
                        reason: "the layer root cannot be whited out".into(),
                    });
                }
                check_oci_representable(parent)?;
                let name = whiteout_name(name)?;
                Ok(vec![marker_entry(join(parent, &name), &Entry::file(""))])
            }
            LayerChange::Opaque { dir } => {
                check_oci_representable(&dir)?;
                let marker = join(&dir, OPAQUE_MARKER.as_bytes());
                Ok(vec![marker_entry(marker, &Entry::file(""))])
            }
            LayerChange::Skip => Ok(Vec::new()),
        }
    }

    /// Encode for an overlay diff dir using namespace `ns`; content xattrs private to `ns`
    /// are escaped or dropped per `policy`. A character device 0/0 in the content cannot be
    /// represented (it would read back as a whiteout) and is an error.
    pub fn to_overlay(self, ns: XattrNamespace, policy: PrivateXattrPolicy) -> Result<ToOverlay> {
        match self {
            LayerChange::Entry { mut entry, opaque } => {
                if is_overlay_whiteout(&entry.kind) {
                    return Err(Error::InvalidWhiteout {
                        path: display(&entry.path),
                        reason: "a character device 0/0 reads as a whiteout in overlay form".into(),
                    });
                }
                let mut xattrs = Vec::with_capacity(entry.xattrs.len() + 1);
                for (name, value) in entry.xattrs {
                    match escape_overlay_xattr(ns, &name) {
                        None => xattrs.push((name, value)),
                        Some(escaped) => {
                            if policy == PrivateXattrPolicy::Escape {
                                xattrs.push((escaped, value));
                            }
                        }
                    }
                }
                if opaque && entry.kind.is_dir() {
                    xattrs.push((ns.opaque_xattr().to_string(), OPAQUE_VALUE.to_vec()));
                }
                entry.xattrs = xattrs;
                Ok(ToOverlay::Create(entry))
            }
            LayerChange::Whiteout { path } => Ok(ToOverlay::Whiteout { path }),
            LayerChange::Opaque { dir } => Ok(ToOverlay::MarkOpaque {
                dir,
                xattr: ns.opaque_xattr(),
            }),
            LayerChange::Skip => Ok(ToOverlay::Skip),
        }
    }
}

/// One OCI tar entry → what to write into an overlay diff dir (Docker overlay2 `ApplyDiff`).
pub fn oci_to_overlay(
    entry: Entry,
    ns: XattrNamespace,
    policy: PrivateXattrPolicy,
) -> Result<ToOverlay> {
    LayerChange::from_oci(entry)?.to_overlay(ns, policy)
}

/// One entry of an overlay upper/diff dir → the OCI tar entries that express it (a whiteout
/// becomes a `.wh.<name>` file, an opaque directory is followed by `.wh..wh..opq`).
pub fn overlay_to_oci(entry: Entry, ns: XattrNamespace) -> Result<Vec<Entry>> {
    LayerChange::from_overlay(entry, ns)?.to_oci()
}

fn check_root(entry: &Entry) -> Result<()> {
    if entry.path.is_empty() && !entry.kind.is_dir() {
        return Err(Error::InvalidEntryPath {
            path: String::new(),
            reason: format!(
                "the layer root must be a directory, not a {}",
                entry.kind.name()
            ),
        });
    }
    Ok(())
}

/// The opaque-directory xattr of fuse-overlayfs's upper dirs (with `.wh..opq` and
/// `.wh..wh..opq` files inside the directory, which layer creation skips).
pub const FUSE_OVERLAYFS_OPAQUE: &str = "user.fuseoverlayfs.opaque";

fn overlay_xattrs(mut entry: Entry, ns: XattrNamespace) -> Result<LayerChange> {
    let mut opaque = false;
    let mut kept = Vec::with_capacity(entry.xattrs.len());
    for (name, value) in std::mem::take(&mut entry.xattrs) {
        if name == FUSE_OVERLAYFS_OPAQUE {
            // fuse-overlayfs (unprivileged) marks opaque directories with its own xattr.
            opaque |= entry.kind.is_dir() && value == OPAQUE_VALUE;
        } else if !ns.is_private(&name) {
            kept.push((name, value));
        } else if is_unsupported_private(ns, &name) {
            return Err(Error::UnsupportedOverlayFeature {
                path: display(&entry.path),
                xattr: name,
            });
        } else if name == ns.opaque_xattr() {
            // "y": opaque. "x" (6.7+: may hold xwhiteouts) and anything else: not opaque.
            opaque |= entry.kind.is_dir() && value == OPAQUE_VALUE;
        } else if let Some(original) = unescape_overlay_xattr(ns, &name) {
            kept.push((original, value));
        }
        // Any other private xattr (origin, impure, nlink, upper, uuid, whiteouts, protattr)
        // is state of the mount that produced the directory, not content.
    }
    entry.xattrs = kept;
    Ok(LayerChange::Entry { entry, opaque })
}

fn check_oci_representable(path: &[u8]) -> Result<()> {
    for comp in path.split(|&b| b == b'/') {
        if super::whiteout::is_whiteout(comp) {
            return Err(Error::InvalidWhiteout {
                path: display(path),
                reason: "names starting with `.wh.` cannot be represented in an OCI layer".into(),
            });
        }
    }
    Ok(())
}

/// A whiteout/opaque marker: an empty regular file, mode 0, owner 0:0, mtime of `like`.
fn marker_entry(path: Vec<u8>, like: &Entry) -> Entry {
    Entry::file(path).with_mode(0).with_mtime(like.mtime)
}
