//! Recording a layer's tar-split while it is applied: the metadata Docker keeps in
//! `layerdb/sha256/<chain>/tar-split.json.gz` to rebuild the exact layer tar from a diff dir.
//!
//! The format is that of vbatts/tar-split (`tar/storage`), as Docker reads and writes it: gzip'd
//! JSON lines, one per entry, numbered by `position` from 0:
//!
//! * `{"type":2,"payload":"<base64>","position":N}`: raw bytes of the tar stream (headers,
//!   extension headers, padding, the end-of-archive marker and what follows it);
//! * `{"type":1,"name":"<path>","size":S,"payload":"<base64 crc64>","position":N}`: an entry
//!   of the archive; when `size` is above 0, its `size` content bytes are the file `<path>` of
//!   the diff dir, and the payload is their CRC-64/ISO (Go's `hash/crc64`, big-endian). A name
//!   that is not UTF-8 is given as `name_raw` (base64) instead.
//!
//! Concatenating the segments and the named files in order gives the tar back byte for byte, so
//! its sha256 re-proves the diff dir against the diff_id. That only holds when every regular
//! file's content is still in the diff dir under its name when the layer is applied. It is not
//! when a later entry of the same layer replaces or deletes an earlier file (a path given
//! twice, a directory replaced, a whiteout of the layer's own file), or for GNU sparse entries
//! (the archive stores fragments, the dir the expanded file). Then the recording is
//! [`TarSplit::Unusable`], with the reason, and the caller keeps another proof.
//!
//! Regular files named `.wh.*` (whiteouts, opaque markers) are not files of the diff dir in
//! overlay form: their content, if any, stays in the segments.

use crate::crc64::Crc64Iso;
use crate::overlay::normalize_path;
use crate::tar::{EntryKind, Header};
use flate2::write::GzEncoder;
use std::collections::BTreeMap;
use std::io::Write;

/// The outcome of recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarSplit {
    /// `tar-split.json.gz`, ready to store.
    Recorded(Vec<u8>),
    /// The tar cannot be rebuilt from the diff dir; why.
    Unusable(String),
}

/// Segments are written out once this many raw bytes are pending (the content of files that
/// are not in the diff dir can be large).
const MAX_SEGMENT: usize = 1 << 20;

/// What the recorder knows of a path the layer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Dir,
    /// A regular file whose content the tar-split reads back from the diff dir.
    Backed,
    Other,
}

struct Current {
    name: Vec<u8>,
    backed: bool,
    crc: Crc64Iso,
    size: u64,
}

pub(crate) struct TarSplitRecorder {
    out: Option<GzEncoder<Vec<u8>>>,
    position: u64,
    raw: Vec<u8>,
    current: Option<Current>,
    paths: BTreeMap<Vec<u8>, Seen>,
    unusable: Option<String>,
    line: Vec<u8>,
}

impl TarSplitRecorder {
    pub(crate) fn new() -> Self {
        TarSplitRecorder {
            out: Some(GzEncoder::new(Vec::new(), flate2::Compression::fast())),
            position: 0,
            raw: Vec::new(),
            current: None,
            paths: BTreeMap::new(),
            unusable: None,
            line: Vec::with_capacity(1024),
        }
    }

    fn active(&self) -> bool {
        self.unusable.is_none()
    }

    fn give_up(&mut self, why: String) {
        if self.unusable.is_none() {
            self.unusable = Some(why);
            self.out = None;
            self.raw = Vec::new();
            self.paths = BTreeMap::new();
        }
    }

    /// Bytes of the stream that are not file content in the diff dir.
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        if !self.active() || bytes.is_empty() {
            return;
        }
        self.raw.extend_from_slice(bytes);
        if self.raw.len() >= MAX_SEGMENT {
            self.flush_raw();
        }
    }

    fn flush_raw(&mut self) {
        if self.raw.is_empty() {
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        line.extend_from_slice(b"{\"type\":2,\"payload\":\"");
        base64_encode(&self.raw, &mut line);
        line.extend_from_slice(b"\",\"position\":");
        self.finish_line(line);
        self.raw.clear();
    }

    /// Ends a line with its position and writes it.
    fn finish_line(&mut self, mut line: Vec<u8>) {
        line.extend_from_slice(self.position.to_string().as_bytes());
        line.extend_from_slice(b"}\n");
        self.position += 1;
        if let Some(out) = &mut self.out {
            // Writing into a Vec cannot fail.
            let _ = out.write_all(&line);
        }
        self.line = line;
    }

    fn file_line(&mut self, name: &[u8], size: u64, crc: Option<[u8; 8]>) {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        line.extend_from_slice(b"{\"type\":1,");
        match std::str::from_utf8(name) {
            Ok(s) => {
                line.extend_from_slice(b"\"name\":\"");
                json_escape(s, &mut line);
            }
            Err(_) => {
                line.extend_from_slice(b"\"name_raw\":\"");
                base64_encode(name, &mut line);
            }
        }
        line.push(b'"');
        if size > 0 {
            line.extend_from_slice(b",\"size\":");
            line.extend_from_slice(size.to_string().as_bytes());
        }
        match crc {
            Some(c) => {
                line.extend_from_slice(b",\"payload\":\"");
                base64_encode(&c, &mut line);
                line.extend_from_slice(b"\",\"position\":");
            }
            None => line.extend_from_slice(b",\"payload\":null,\"position\":"),
        }
        self.finish_line(line);
    }

    /// A new entry; `consumed` are the bytes read with its header (raw).
    pub(crate) fn entry(&mut self, h: &Header, consumed: &[u8]) {
        self.end_entry();
        self.raw(consumed);
        if !self.active() {
            return;
        }
        self.flush_raw();
        if h.sparse {
            return self.give_up(format!(
                "{:?} is a GNU sparse file (the archive holds fragments, the diff dir the whole file)",
                crate::tar::display_name(&h.path)
            ));
        }
        let regular = h.kind == EntryKind::Regular;
        let whiteout = base_name(&h.path).starts_with(b".wh.");
        let backed = regular && !whiteout;
        if let Err(why) = self.track(&h.path, &h.kind, backed, whiteout) {
            return self.give_up(why);
        }
        if backed {
            self.current = Some(Current {
                name: h.path.clone(),
                backed,
                crc: Crc64Iso::new(),
                size: 0,
            });
        } else {
            // Not in the diff dir: the entry is named, and whatever content it has stays raw.
            self.file_line(&h.path, 0, None);
        }
    }

    /// Records what the applier will do with the path, refusing what would make the diff dir
    /// disagree with the archive (see the module documentation).
    fn track(
        &mut self,
        path: &[u8],
        kind: &EntryKind,
        backed: bool,
        whiteout: bool,
    ) -> Result<(), String> {
        let Ok(norm) = normalize_path(path) else {
            return Ok(()); // the applier refuses it
        };
        let norm = norm.into_owned();
        let shown = crate::tar::display_name(path);
        if whiteout {
            let (dir, name) = split_last(&norm);
            // An opaque marker only marks its directory (overlay form): nothing is removed.
            let target: Vec<u8> = if name == b".wh..wh..opq" {
                return Ok(());
            } else if let Some(rest) = name.strip_prefix(b".wh.") {
                if rest.starts_with(b".wh.") {
                    return Ok(()); // aufs metadata, skipped
                }
                join(dir, rest)
            } else {
                return Ok(());
            };
            if self.paths.get(&target) == Some(&Seen::Backed) {
                return Err(format!("{shown:?} whites out a file of the same layer"));
            }
            if self.has_backed_below(&target) {
                return Err(format!("{shown:?} whites out files of the same layer"));
            }
            return Ok(());
        }
        let is_dir = matches!(kind, EntryKind::Directory);
        if let Some(prev) = self.paths.get(&norm) {
            if !(is_dir && *prev == Seen::Dir) {
                return Err(format!(
                    "{shown:?} appears twice in the layer (the later entry replaces the earlier)"
                ));
            }
        }
        if !is_dir && self.has_backed_below(&norm) {
            return Err(format!(
                "{shown:?} replaces a directory holding files of the same layer"
            ));
        }
        let seen = if is_dir {
            Seen::Dir
        } else if backed {
            Seen::Backed
        } else {
            Seen::Other
        };
        self.paths.insert(norm, seen);
        Ok(())
    }

    fn has_backed_below(&self, dir: &[u8]) -> bool {
        let mut from = dir.to_vec();
        if !from.is_empty() {
            from.push(b'/');
        }
        let mut to = from.clone();
        if to.is_empty() {
            return self.paths.values().any(|s| *s == Seen::Backed);
        }
        *to.last_mut().unwrap() = b'/' + 1;
        self.paths.range(from..to).any(|(_, s)| *s == Seen::Backed)
    }

    /// The bytes consumed with a `Data` event, of which `data` (a sub-slice, unless it is a
    /// hole of a sparse file) is the entry's content.
    pub(crate) fn data(&mut self, consumed: &[u8], data: &[u8]) {
        if !self.active() {
            return;
        }
        let start = consumed.as_ptr() as usize;
        let at = data.as_ptr() as usize;
        if at < start || at + data.len() > start + consumed.len() {
            return self.give_up("sparse content in the archive".into());
        }
        let off = at - start;
        let backed = self.current.as_ref().is_some_and(|c| c.backed);
        if !backed {
            return self.raw(consumed);
        }
        self.raw(&consumed[..off]);
        self.flush_raw();
        if let Some(c) = &mut self.current {
            c.crc.update(data);
            c.size += data.len() as u64;
        }
        self.raw(&consumed[off + data.len()..]);
    }

    /// The end of the current entry's content.
    pub(crate) fn end_entry(&mut self) {
        let Some(c) = self.current.take() else { return };
        if !self.active() {
            return;
        }
        self.flush_raw();
        let crc = (c.size > 0).then(|| c.crc.to_be_bytes());
        self.file_line(&c.name, c.size, crc);
    }

    pub(crate) fn finish(mut self) -> TarSplit {
        self.end_entry();
        self.flush_raw();
        if let Some(why) = self.unusable.take() {
            return TarSplit::Unusable(why);
        }
        match self.out.take().map(GzEncoder::finish) {
            Some(Ok(bytes)) => TarSplit::Recorded(bytes),
            Some(Err(e)) => TarSplit::Unusable(format!("compressing the tar-split: {e}")),
            None => TarSplit::Unusable("no output".into()),
        }
    }
}

fn base_name(path: &[u8]) -> &[u8] {
    let trimmed = match path.iter().rposition(|&b| b != b'/') {
        Some(i) => &path[..=i],
        None => return b"",
    };
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = dir.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go's `encoding/json` form of `[]byte`).
pub(crate) fn base64_encode(input: &[u8], out: &mut Vec<u8>) {
    out.reserve((input.len() + 2) / 3 * 4);
    let mut chunks = input.chunks_exact(3);
    for c in &mut chunks {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        out.extend_from_slice(&[
            B64[(n >> 18) as usize & 63],
            B64[(n >> 12) as usize & 63],
            B64[(n >> 6) as usize & 63],
            B64[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[B64[(n >> 18) as usize & 63], B64[(n >> 12) as usize & 63]]);
            out.extend_from_slice(b"==");
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.extend_from_slice(&[
                B64[(n >> 18) as usize & 63],
                B64[(n >> 12) as usize & 63],
                B64[(n >> 6) as usize & 63],
            ]);
            out.push(b'=');
        }
        _ => {}
    }
}

/// A JSON string body (without the quotes).
fn json_escape(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
}
