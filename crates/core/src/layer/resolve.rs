//! Path resolution below the root of an [`Fs`], the only place where paths are walked.
//!
//! A walk starts at the root handle and takes one component at a time with
//! [`Fs::open_dir`], which never follows a symlink. What happens at a symlink depends on
//! [`Follow`]:
//! * [`Follow::Never`] (modes `overlay` and `oci`, and every walk over paths this layer wrote):
//!   the walk fails. A layer that lists `a -> /` and then `a/etc/passwd` is contradictory (an
//!   entry below a non-directory of the same layer), and nothing is written through the link.
//! * [`Follow::InRoot`] (mode `apply`, parents of entries and targets of hard links and
//!   whiteouts): the link's target is read and walked as if the root were `/`: an absolute
//!   target restarts at the root, `..` never goes above it (the walk keeps its own stack of
//!   directory handles and pops it; no `..` is ever opened). This is what umoci's
//!   `SecureJoin` and containerd's `fs.RootPath` do, and what `openat2(RESOLVE_IN_ROOT)` does.
//!   At most [`MAX_SYMLINKS`] links are followed per walk.
//!
//! The last directory reached is kept as a cursor (its canonical components and their
//! handles), so that consecutive entries in one directory, the common case in a tar stream,
//! cost one `open_dir` or none. The cursor is dropped whenever anything is removed or renamed.
//! When the remaining components are plain, the walk first tries [`Fs::open_path`] (one
//! `openat2` call on Linux) and falls back to single steps when it fails.

use super::fs::{FileType, Fs, FsError, FsErrorKind};
use crate::overlay::MAX_SYMLINKS;
use std::collections::VecDeque;

/// What to do at a symlink in a directory path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    Never,
    InRoot,
}

/// Why a walk stopped. `at` is the canonical path (components as really found, after
/// following links) of the component that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// A component is a symlink and [`Follow::Never`] was asked for.
    Symlink { at: Vec<u8> },
    /// A component is neither a directory nor a symlink.
    NotADirectory { at: Vec<u8>, kind: FileType },
    /// More than [`MAX_SYMLINKS`] symlinks, or a symlink with an empty target.
    Loop { at: Vec<u8> },
    /// A filesystem call failed.
    Fs { at: Vec<u8>, error: FsError },
}

/// Result of [`Resolver::step`].
pub(crate) enum Step<D> {
    /// The whole path was resolved to this directory.
    Done(D),
    /// Component `name` is missing in `parent` (canonical path `parent_path`). Create it (or
    /// give up) and call `step` again: the walk continues with `name`.
    Missing {
        parent: D,
        parent_path: Vec<u8>,
        name: Vec<u8>,
    },
}

/// An ongoing walk.
pub(crate) struct Walk<D> {
    /// Canonical components reached so far with their handles; `[0]` is the root (name "").
    /// A handle is `None` when a fast-path open skipped over the component.
    stack: Vec<(Vec<u8>, Option<D>)>,
    queue: VecDeque<Vec<u8>>,
    links: u32,
    fast: bool,
}

impl<D> Walk<D> {
    /// The canonical path of what the walk reached, `/`-joined.
    pub(crate) fn path(&self) -> Vec<u8> {
        join_stack(&self.stack)
    }
}

/// The canonical path of component `comp` of the walk's current directory.
fn at<D>(walk: &Walk<D>, comp: &[u8]) -> Vec<u8> {
    let mut p = walk.path();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(comp);
    p
}

fn join_stack<D>(stack: &[(Vec<u8>, Option<D>)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (name, _) in &stack[1..] {
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
    }
    p
}

pub(crate) struct Resolver<D> {
    root: D,
    cursor: Vec<(Vec<u8>, Option<D>)>,
}

impl<D: Clone> Resolver<D> {
    pub(crate) fn new(root: D) -> Self {
        Resolver {
            cursor: vec![(Vec::new(), Some(root.clone()))],
            root,
        }
    }

    pub(crate) fn root(&self) -> &D {
        &self.root
    }

    /// Forget the cached directory chain (after anything was removed or renamed).
    pub(crate) fn invalidate(&mut self) {
        self.cursor.truncate(1);
    }

    /// Starts a walk to directory `path` (a normalized layer path: no `.`, `..` or empty
    /// components), reusing the cursor's common prefix.
    pub(crate) fn start(&self, path: &[u8]) -> Walk<D> {
        let comps: Vec<&[u8]> = if path.is_empty() {
            Vec::new()
        } else {
            path.split(|&b| b == b'/').collect()
        };
        let mut keep = 1;
        while keep < self.cursor.len()
            && keep - 1 < comps.len()
            && self.cursor[keep].0 == comps[keep - 1]
        {
            keep += 1;
        }
        Walk {
            stack: self.cursor[..keep].to_vec(),
            queue: comps[keep - 1..].iter().map(|c| c.to_vec()).collect(),
            links: 0,
            fast: true,
        }
    }

    /// Keeps a finished walk's chain as the cursor.
    pub(crate) fn finish(&mut self, walk: Walk<D>) {
        self.cursor = walk.stack;
    }

    /// Continues `walk` until it reaches its end or a missing component.
    pub(crate) fn step<F: Fs<Dir = D>>(
        &mut self,
        fs: &mut F,
        walk: &mut Walk<D>,
        follow: Follow,
    ) -> Result<Step<D>, WalkError> {
        loop {
            let top = self.top(fs, walk)?;
            // Fast path: several plain components in one call.
            if walk.fast {
                let plain = walk
                    .queue
                    .iter()
                    .take_while(|c| !matches!(c.as_slice(), b"" | b"." | b".."))
                    .count();
                if plain >= 2 {
                    let joined = walk
                        .queue
                        .iter()
                        .take(plain)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(&b'/');
                    match fs.open_path(&top, &joined) {
                        Some(Ok(dir)) => {
                            for i in 0..plain {
                                let name = walk.queue.pop_front().unwrap_or_default();
                                let handle = if i + 1 == plain {
                                    Some(dir.clone())
                                } else {
                                    None
                                };
                                walk.stack.push((name, handle));
                            }
                            continue;
                        }
                        // Missing components, symlinks, races: decide one step at a time.
                        Some(Err(_)) | None => walk.fast = false,
                    }
                }
            }
            let Some(comp) = walk.queue.pop_front() else {
                return Ok(Step::Done(top));
            };
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if walk.stack.len() > 1 {
                        walk.stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            match fs.open_dir(&top, &comp) {
                Ok(dir) => {
                    walk.stack.push((comp, Some(dir)));
                    continue;
                }
                Err(e) if e.kind == FsErrorKind::NotFound => {
                    let parent_path = walk.path();
                    walk.queue.push_front(comp.clone());
                    return Ok(Step::Missing {
                        parent: top,
                        parent_path,
                        name: comp,
                    });
                }
                Err(open_error) => {
                    let st = fs.lstat(&top, &comp).map_err(|error| WalkError::Fs {
                        at: at(walk, &comp),
                        error,
                    })?;
                    match st.map(|s| s.kind) {
                        None => {
                            // Removed since: report it missing.
                            let parent_path = walk.path();
                            walk.queue.push_front(comp.clone());
                            return Ok(Step::Missing {
                                parent: top,
                                parent_path,
                                name: comp,
                            });
                        }
                        Some(FileType::Symlink) => {
                            if follow == Follow::Never {
                                return Err(WalkError::Symlink {
                                    at: at(walk, &comp),
                                });
                            }
                            walk.links += 1;
                            let target =
                                fs.read_link(&top, &comp).map_err(|error| WalkError::Fs {
                                    at: at(walk, &comp),
                                    error,
                                })?;
                            if walk.links > MAX_SYMLINKS || target.is_empty() {
                                return Err(WalkError::Loop {
                                    at: at(walk, &comp),
                                });
                            }
                            if target[0] == b'/' {
                                walk.stack.truncate(1);
                            }
                            for c in target.split(|&b| b == b'/').rev() {
                                walk.queue.push_front(c.to_vec());
                            }
                            walk.fast = true;
                        }
                        Some(FileType::Dir) => {
                            return Err(WalkError::Fs {
                                at: at(walk, &comp),
                                error: open_error,
                            })
                        }
                        Some(kind) => {
                            return Err(WalkError::NotADirectory {
                                at: at(walk, &comp),
                                kind,
                            })
                        }
                    }
                }
            }
        }
    }

    /// The handle of the walk's current directory, opening it if a fast path skipped it.
    fn top<F: Fs<Dir = D>>(&self, fs: &mut F, walk: &mut Walk<D>) -> Result<D, WalkError> {
        let last = walk.stack.len() - 1;
        if let Some(h) = &walk.stack[last].1 {
            return Ok(h.clone());
        }
        // The nearest ancestor with a handle, then plain components that were verified as
        // directories a moment ago: open them one by one, never following.
        let base = (0..last)
            .rev()
            .find(|&i| walk.stack[i].1.is_some())
            .unwrap_or(0);
        let mut dir = walk.stack[base]
            .1
            .clone()
            .unwrap_or_else(|| self.root.clone());
        for i in base + 1..=last {
            let name = walk.stack[i].0.clone();
            dir = fs.open_dir(&dir, &name).map_err(|error| WalkError::Fs {
                at: join_stack(&walk.stack[..=i]),
                error,
            })?;
            walk.stack[i].1 = Some(dir.clone());
        }
        Ok(dir)
    }
}
