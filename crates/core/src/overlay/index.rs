//! The entry index of one layer, normalized to one whiteout vocabulary whichever form the
//! layer came in.

use super::convert::LayerChange;
use super::entry::{display, is_normal, normalize_path, split_parent, Entry, EntryKind};
use super::whiteout::XattrNamespace;
use crate::error::{Error, Result};
use std::collections::HashMap;

/// How a layer expresses deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WhiteoutForm {
    /// OCI layer tar: `.wh.<name>` and `.wh..wh..opq` regular files.
    Oci,
    /// overlayfs diff/upper dir: character device 0/0 and `<ns>.overlay.opaque = "y"`.
    Overlay(XattrNamespace),
}

/// Longest chain of hardlinks to hardlinks that is followed inside one layer.
const MAX_HARDLINK_CHAIN: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// For a whiteout: a placeholder (character device 0/0, mode 0) carrying the path.
    pub entry: Entry,
    pub whiteout: bool,
    pub opaque: bool,
    pub implicit: bool,
    /// The node of the inode this name refers to: itself, or the final target of a hardlink.
    pub link: u32,
    /// Names of this inode in the layer (1 + hardlinks to it); meaningful on `link` targets.
    pub nlink: u32,
}

/// One node of a layer index as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexed<'a> {
    /// The layer deletes `path` (and everything below it) from the layers beneath.
    Whiteout { path: &'a [u8] },
    /// The layer has `entry`. `opaque`: a directory hiding the lower layers' contents.
    /// `implicit`: a directory the layer only implies (it lists `a/b` but not `a`); its
    /// metadata is the default of an extractor creating it (0755, 0:0, mtime 0).
    Entry {
        entry: &'a Entry,
        opaque: bool,
        implicit: bool,
    },
}

/// Every path of one layer, whiteouts and opaque directories normalized, parents implied,
/// hardlinks checked. Build with [`LayerIndex::from_entries`] from a tar listing or a
/// directory walk; entries may come in any order.
///
/// Rules (OCI image spec, "Whiteouts"): a whiteout only affects lower layers, so a layer with
/// both `.wh.a` and `a` has `a`; if `a` is a directory it becomes opaque. Duplicate entries,
/// entries below a non-directory of the same layer, and hardlinks whose target is not a
/// non-directory of the same layer are errors.
#[derive(Debug, Clone)]
pub struct LayerIndex {
    pub(crate) nodes: Vec<Node>,
    by_path: HashMap<Box<[u8]>, u32>,
}

impl LayerIndex {
    /// Index `entries`, decoding whiteouts according to `form`.
    pub fn from_entries<I>(form: WhiteoutForm, entries: I) -> Result<LayerIndex>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut index = LayerIndex::empty();
        for entry in entries {
            let change = match form {
                WhiteoutForm::Oci => LayerChange::from_oci(entry)?,
                WhiteoutForm::Overlay(ns) => LayerChange::from_overlay(entry, ns)?,
            };
            index.apply(change)?;
        }
        index.finish()?;
        Ok(index)
    }

    /// Index already-decoded changes (see [`LayerChange`]).
    pub fn from_changes<I>(changes: I) -> Result<LayerIndex>
    where
        I: IntoIterator<Item = LayerChange>,
    {
        let mut index = LayerIndex::empty();
        for change in changes {
            index.apply(change)?;
        }
        index.finish()?;
        Ok(index)
    }

    /// Number of nodes, including the root and implied directories.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: the root is always present.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node at `path` (normalized first); `None` if the layer says nothing about it.
    pub fn get(&self, path: &[u8]) -> Option<Indexed<'_>> {
        let path = normalize_path(path).ok()?;
        self.by_path
            .get(path.as_ref())
            .map(|&i| self.indexed(i as usize))
    }

    /// All nodes, root first, then in the order they were first mentioned.
    pub fn iter(&self) -> impl Iterator<Item = Indexed<'_>> + '_ {
        (0..self.nodes.len()).map(|i| self.indexed(i))
    }

    fn indexed(&self, i: usize) -> Indexed<'_> {
        let n = &self.nodes[i];
        if n.whiteout {
            Indexed::Whiteout {
                path: &n.entry.path,
            }
        } else {
            Indexed::Entry {
                entry: &n.entry,
                opaque: n.opaque,
                implicit: n.implicit,
            }
        }
    }

    fn empty() -> LayerIndex {
        let mut index = LayerIndex {
            nodes: Vec::new(),
            by_path: HashMap::new(),
        };
        index.push(Entry::implicit_dir(Vec::new()), false, true);
        index
    }

    fn push(&mut self, entry: Entry, whiteout: bool, implicit: bool) -> u32 {
        let id = self.nodes.len() as u32;
        self.by_path
            .insert(entry.path.clone().into_boxed_slice(), id);
        self.nodes.push(Node {
            entry,
            whiteout,
            opaque: false,
            implicit,
            link: id,
            nlink: 1,
        });
        id
    }

    fn lookup(&self, path: &[u8]) -> Option<usize> {
        self.by_path.get(path).map(|&i| i as usize)
    }

    fn apply(&mut self, change: LayerChange) -> Result<()> {
        match change {
            LayerChange::Entry { mut entry, opaque } => {
                if !is_normal(&entry.path) {
                    entry.path = normalize_path(&entry.path)?.into_owned();
                }
                if entry.path.is_empty() && !entry.kind.is_dir() {
                    return Err(Error::InvalidEntryPath {
                        path: String::new(),
                        reason: format!(
                            "the layer root must be a directory, not a {}",
                            entry.kind.name()
                        ),
                    });
                }
                let (parent, _) = split_parent(&entry.path);
                self.ensure_dirs(parent, &entry.path)?;
                match self.lookup(&entry.path) {
                    None => {
                        let id = self.push(entry, false, false) as usize;
                        self.nodes[id].opaque = opaque;
                    }
                    Some(i) => {
                        let node = &mut self.nodes[i];
                        let is_dir = entry.kind.is_dir();
                        if node.whiteout {
                            // `.wh.a` and `a` in one layer: `a` exists, lower `a` is hidden.
                            node.whiteout = false;
                            node.opaque = is_dir;
                        } else if node.implicit && is_dir {
                            node.implicit = false;
                            node.opaque |= opaque;
                        } else if node.implicit {
                            return Err(conflict(
                                &entry.path,
                                format!(
                                    "a {} where the layer has entries below",
                                    entry.kind.name()
                                ),
                            ));
                        } else {
                            return Err(conflict(&entry.path, "duplicate entry".into()));
                        }
                        node.entry = entry;
                    }
                }
            }
            LayerChange::Whiteout { path } => {
                let path = normalize_path(&path)?.into_owned();
                if path.is_empty() {
                    return Err(Error::InvalidWhiteout {
                        path: String::new(),
                        reason: "the layer root cannot be whited out".into(),
                    });
                }
                let (parent, _) = split_parent(&path);
                self.ensure_dirs(parent, &path)?;
                match self.lookup(&path) {
                    None => {
                        let placeholder =
                            Entry::new(path, EntryKind::CharDevice { major: 0, minor: 0 })
                                .with_mode(0);
                        self.push(placeholder, true, false);
                    }
                    Some(i) => {
                        let node = &mut self.nodes[i];
                        if !node.whiteout && node.entry.kind.is_dir() {
                            node.opaque = true;
                        }
                        // A repeated whiteout, or one next to a non-directory that already
                        // hides the lower path: nothing to add.
                    }
                }
            }
            LayerChange::Opaque { dir } => {
                let dir = normalize_path(&dir)?.into_owned();
                self.ensure_dirs(&dir, &dir)?;
                let i = self.lookup(&dir).expect("ensure_dirs created it");
                self.nodes[i].opaque = true;
            }
            LayerChange::Skip => {}
        }
        Ok(())
    }

    /// Make every prefix of `dir` (and `dir` itself) a directory of this layer, implying the
    /// missing ones. `for_path` is the entry being added, for messages.
    fn ensure_dirs(&mut self, dir: &[u8], for_path: &[u8]) -> Result<()> {
        if dir.is_empty() || self.lookup(dir).is_some_and(|i| self.is_dir(i)) {
            return Ok(());
        }
        let ends = dir
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| i)
            .chain(std::iter::once(dir.len()));
        for end in ends {
            let prefix = &dir[..end];
            match self.lookup(prefix) {
                None => {
                    self.push(Entry::implicit_dir(prefix.to_vec()), false, true);
                }
                Some(i) if self.nodes[i].whiteout => {
                    // `.wh.a` next to `a/b`: `a` is a directory of this layer hiding lower `a`.
                    let node = &mut self.nodes[i];
                    node.whiteout = false;
                    node.implicit = true;
                    node.opaque = true;
                    node.entry = Entry::implicit_dir(prefix.to_vec());
                }
                Some(i) if self.nodes[i].entry.kind.is_dir() => {}
                Some(i) => {
                    return Err(conflict(
                        for_path,
                        format!(
                            "{:?} is a {} in the same layer",
                            display(prefix),
                            self.nodes[i].entry.kind.name()
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    fn is_dir(&self, i: usize) -> bool {
        !self.nodes[i].whiteout && self.nodes[i].entry.kind.is_dir()
    }

    /// Resolve hardlinks to the node of their inode and count names per inode.
    fn finish(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            let EntryKind::Hardlink { target } = &self.nodes[i].entry.kind else {
                continue;
            };
            let from = self.nodes[i].entry.path.clone();
            let mut target = normalize_path(target)?.into_owned();
            let mut hops = 0;
            let final_id = loop {
                let Some(t) = self.lookup(&target).filter(|&t| !self.nodes[t].whiteout) else {
                    return Err(conflict(
                        &from,
                        format!(
                            "hardlink target {:?} is not in this layer",
                            display(&target)
                        ),
                    ));
                };
                match &self.nodes[t].entry.kind {
                    EntryKind::Dir => {
                        return Err(conflict(
                            &from,
                            format!("hardlink to directory {:?}", display(&target)),
                        ))
                    }
                    EntryKind::Hardlink { target: next } => {
                        hops += 1;
                        if hops > MAX_HARDLINK_CHAIN || t == i {
                            return Err(conflict(&from, "hardlink cycle".into()));
                        }
                        target = normalize_path(next)?.into_owned();
                    }
                    _ => break t,
                }
            };
            let final_path = self.nodes[final_id].entry.path.clone();
            if let EntryKind::Hardlink { target: stored } = &mut self.nodes[i].entry.kind {
                *stored = final_path;
            }
            self.nodes[i].link = final_id as u32;
            self.nodes[final_id].nlink += 1;
        }
        Ok(())
    }
}

fn conflict(path: &[u8], reason: String) -> Error {
    Error::EntryConflict {
        path: display(path),
        reason,
    }
}
