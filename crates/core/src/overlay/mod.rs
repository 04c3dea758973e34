//! Overlay semantics: whiteouts in both forms, defined once, and the merged view of a stack of
//! layers.
//!
//! * [`whiteout`]: the names and xattrs (`.wh.`, `.wh..wh..opq`, char device 0/0,
//!   `trusted.overlay.opaque`, ...) and pure checks on them.
//! * [`convert`]: one entry at a time between the OCI form (layer tars) and the overlay form
//!   (diff/upper dirs), as decisions an applier carries out.
//! * [`LayerIndex`]: the entries of one layer (from a tar listing or a directory walk,
//!   in either form), normalized.
//! * [`LayerStack`]: the merged view of layers given base first, answering
//!   [`resolve`](LayerStack::resolve), [`readdir`](LayerStack::readdir),
//!   [`stat`](LayerStack::stat) and [`lstat`](LayerStack::lstat) without touching a filesystem.
//!
//! ```
//! use stevedore_core::overlay::{Entry, LayerIndex, LayerStack, Resolution, WhiteoutForm};
//!
//! let base = LayerIndex::from_entries(WhiteoutForm::Oci, [
//!     Entry::file_with("etc/motd", "hello"),
//!     Entry::file_with("etc/issue", "v1"),
//! ])?;
//! let top = LayerIndex::from_entries(WhiteoutForm::Oci, [Entry::file("etc/.wh.issue")])?;
//! let stack = LayerStack::new(vec![base, top]);
//! assert_eq!(stack.readdir(b"etc")?, vec![&b"motd"[..]]);
//! assert_eq!(stack.resolve(b"etc/issue")?, Resolution::Whiteout { layer: 1 });
//! # Ok::<(), stevedore_core::Error>(())
//! ```

pub mod convert;
mod entry;
mod index;
mod stack;
pub mod whiteout;

pub use convert::{oci_to_overlay, overlay_to_oci, LayerChange, ToOverlay};
pub use entry::{normalize_path, Entry, EntryKind};
pub use index::{Indexed, LayerIndex, WhiteoutForm};
pub use stack::{LayerStack, Resolution, Stat, MAX_SYMLINKS};
pub use whiteout::{
    is_opaque_marker, is_overlay_private_xattr, is_overlay_whiteout, is_whiteout, whiteout_name,
    whiteout_target, PrivateXattrPolicy, XattrNamespace, OPAQUE_MARKER, WHITEOUT_PREFIX,
};

#[cfg(test)]
mod tests;
