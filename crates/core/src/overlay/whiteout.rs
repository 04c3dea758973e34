//! The whiteout vocabulary, defined once: OCI names (`.wh.<name>`, `.wh..wh..opq`) and the
//! overlayfs-native forms (character device 0/0, `*.overlay.opaque = "y"`), plus the
//! overlay-private extended attributes that must never be taken from layer content.

use super::entry::{display, EntryKind};
use crate::error::{Error, Result};

/// OCI whiteout prefix: `.wh.<name>` deletes `<name>` from the lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of whiteout *metadata* names (`.wh..wh.*`): the opaque marker and aufs leftovers
/// (`.wh..wh.plnk`, `.wh..wh.aufs`) that carry no content.
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// OCI opaque marker: `dir/.wh..wh..opq` hides everything the lower layers have below `dir`.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Overlay-native whiteout: a character device with this major/minor.
pub const WHITEOUT_DEVICE: (u32, u32) = (0, 0);
/// Value of the opaque xattr that makes a directory opaque.
pub const OPAQUE_VALUE: &[u8] = b"y";

/// Prefix of overlayfs's private xattrs in the `trusted` namespace (the default mount).
pub const TRUSTED_OVERLAY_PREFIX: &str = "trusted.overlay.";
/// Prefix of overlayfs's private xattrs in the `user` namespace (`-o userxattr`, rootless).
pub const USER_OVERLAY_PREFIX: &str = "user.overlay.";

pub const TRUSTED_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";
pub const TRUSTED_REDIRECT_XATTR: &str = "trusted.overlay.redirect";
pub const USER_REDIRECT_XATTR: &str = "user.overlay.redirect";
pub const TRUSTED_METACOPY_XATTR: &str = "trusted.overlay.metacopy";
pub const USER_METACOPY_XATTR: &str = "user.overlay.metacopy";
/// xwhiteout marker on a regular file (kernel 6.7+, inside an `opaque = "x"` directory).
pub const TRUSTED_WHITEOUT_XATTR: &str = "trusted.overlay.whiteout";
pub const USER_WHITEOUT_XATTR: &str = "user.overlay.whiteout";

/// Which xattr namespace an overlay mount keeps its private state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum XattrNamespace {
    /// `trusted.overlay.*`: the default, needs CAP_SYS_ADMIN.
    #[default]
    Trusted,
    /// `user.overlay.*`: mounts with `-o userxattr` (unprivileged overlay).
    User,
}

impl XattrNamespace {
    /// `trusted.overlay.` or `user.overlay.`.
    pub fn prefix(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => TRUSTED_OVERLAY_PREFIX,
            XattrNamespace::User => USER_OVERLAY_PREFIX,
        }
    }

    pub fn opaque_xattr(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => TRUSTED_OPAQUE_XATTR,
            XattrNamespace::User => USER_OPAQUE_XATTR,
        }
    }

    /// True when `name` is private to overlay mounts using this namespace.
    pub fn is_private(self, name: &str) -> bool {
        name.starts_with(self.prefix())
    }
}

/// What to do with overlay-private xattrs that arrive inside layer content when the layer is
/// written in overlay form (SECURITY.md rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PrivateXattrPolicy {
    /// Store `trusted.overlay.X` as `trusted.overlay.overlay.X`: overlayfs (Linux 6.7+) shows
    /// the escaped name as `trusted.overlay.X` in the merged view; older kernels hide it.
    #[default]
    Escape,
    /// Leave them out.
    Drop,
}

/// True when `name` starts with `.wh.`: the name is reserved for whiteouts in OCI layers
/// (a plain whiteout, the opaque marker or whiteout metadata).
pub fn is_whiteout(name: &[u8]) -> bool {
    name.starts_with(WHITEOUT_PREFIX.as_bytes())
}

/// True for the opaque marker name `.wh..wh..opq`.
pub fn is_opaque_marker(name: &[u8]) -> bool {
    name == OPAQUE_MARKER.as_bytes()
}

/// True for `.wh..wh.*` names other than the opaque marker (aufs metadata, not content).
pub fn is_whiteout_meta(name: &[u8]) -> bool {
    name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) && !is_opaque_marker(name)
}

/// What an OCI path component means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciName<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh.<target>`: deletes `<target>` (validated: not empty, `.`, `..`, no `/` or NUL).
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`.
    Opaque,
    /// `.wh..wh.<anything else>`: aufs metadata, skipped.
    Meta,
}

/// Classify one OCI path component (a name, not a path). Errors for names with `/` or NUL and
/// for `.wh.`, `.wh..`, `.wh...`, which name nothing that could be deleted.
pub fn classify_oci_name(name: &[u8]) -> Result<OciName<'_>> {
    if name.contains(&b'/') || name.contains(&0) {
        return Err(Error::InvalidWhiteout {
            path: display(name),
            reason: "a name must not contain '/' or NUL".into(),
        });
    }
    if !is_whiteout(name) {
        return Ok(OciName::Plain);
    }
    if is_opaque_marker(name) {
        return Ok(OciName::Opaque);
    }
    if is_whiteout_meta(name) {
        return Ok(OciName::Meta);
    }
    whiteout_target(name).map(OciName::Whiteout)
}

/// The name a `.wh.<name>` whiteout deletes. Errors for names without the prefix, for the
/// opaque marker and metadata names, and for `.wh.`, `.wh..`, `.wh...` and names with `/`.
pub fn whiteout_target(name: &[u8]) -> Result<&[u8]> {
    let invalid = |reason: &str| Error::InvalidWhiteout {
        path: display(name),
        reason: reason.into(),
    };
    if name.contains(&b'/') || name.contains(&0) {
        return Err(invalid("a whiteout name must not contain '/' or NUL"));
    }
    let target = name
        .strip_prefix(WHITEOUT_PREFIX.as_bytes())
        .ok_or_else(|| invalid("not a whiteout name (no `.wh.` prefix)"))?;
    if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
        return Err(invalid("`.wh..wh.` names are markers, not whiteouts"));
    }
    match target {
        b"" | b"." | b".." => Err(invalid("the whiteout names no deletable entry")),
        _ => Ok(target),
    }
}

/// `.wh.<target>`, validating `target` the same way [`whiteout_target`] does.
pub fn whiteout_name(target: &[u8]) -> Result<Vec<u8>> {
    let mut name = WHITEOUT_PREFIX.as_bytes().to_vec();
    name.extend_from_slice(target);
    if is_whiteout(target) {
        // `.wh..wh.x` would read back as metadata, not as a whiteout of `.wh.x`.
        return Err(Error::InvalidWhiteout {
            path: display(target),
            reason: "a name starting with `.wh.` cannot be whited out in an OCI layer".into(),
        });
    }
    whiteout_target(&name)?;
    Ok(name)
}

/// True for the overlay-native whiteout: a character device 0/0.
pub fn is_overlay_whiteout(kind: &EntryKind) -> bool {
    matches!(kind, EntryKind::CharDevice { major: 0, minor: 0 })
}

/// True when `name = value` marks a directory opaque in the overlay form of `ns`.
pub fn is_opaque_xattr(ns: XattrNamespace, name: &str, value: &[u8]) -> bool {
    name == ns.opaque_xattr() && value == OPAQUE_VALUE
}

/// True for xattrs private to overlayfs in either namespace (`trusted.overlay.*`,
/// `user.overlay.*`). Such xattrs arriving inside layer content must be dropped or escaped
/// before the content is written where an overlay mount will read it.
pub fn is_overlay_private_xattr(name: &str) -> bool {
    name.starts_with(TRUSTED_OVERLAY_PREFIX) || name.starts_with(USER_OVERLAY_PREFIX)
}

/// `<ns>.overlay.X` → `<ns>.overlay.overlay.X` (the kernel's escaping); `None` when `name` is
/// not private to `ns`.
pub fn escape_overlay_xattr(ns: XattrNamespace, name: &str) -> Option<String> {
    let rest = name.strip_prefix(ns.prefix())?;
    Some(format!("{}overlay.{rest}", ns.prefix()))
}

/// `<ns>.overlay.overlay.X` → `<ns>.overlay.X`; `None` when `name` is not escaped.
pub fn unescape_overlay_xattr(ns: XattrNamespace, name: &str) -> Option<String> {
    let rest = name.strip_prefix(ns.prefix())?.strip_prefix("overlay.")?;
    Some(format!("{}{rest}", ns.prefix()))
}

/// Overlay-private xattrs that carry state the resolver does not model (SECURITY.md rule 9):
/// a directory redirect, a metadata-only copy-up, an xwhiteout.
pub(crate) fn is_unsupported_private(ns: XattrNamespace, name: &str) -> bool {
    match name.strip_prefix(ns.prefix()) {
        Some(rest) => matches!(rest, "redirect" | "metacopy" | "whiteout"),
        None => false,
    }
}
