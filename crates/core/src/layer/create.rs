//! Creating a layer from the tree of an [`Fs`]: a deterministic walk, PAX tar entries, hard
//! link detection, whiteout conversion for overlay diff dirs, and compression on a helper
//! thread.

use super::fs::{FileType, Fs, FsError, Target};
use super::stream::CHUNK;
use super::{
    CreateCompression, CreateMode, CreateOptions, CreateReport, MtimePolicy, Progress, Warnings,
};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::overlay::convert::FUSE_OVERLAYFS_OPAQUE;
use crate::overlay::whiteout::{OPAQUE_MARKER, OPAQUE_VALUE};
use crate::overlay::{is_overlay_private_xattr, Entry, EntryKind, LayerChange, XattrNamespace};
use crate::tar::{self, display_name, Format, Header, TarWriter, Timestamp};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

const SELINUX_XATTR: &str = "security.selinux";

/// Writes the tree of `fs` as a layer to `out`, as documented on the [module](super).
/// `progress` is called on the calling thread after each 1 MiB of tar and once at the end;
/// its `compressed_in` counts compressed bytes written so far.
///
/// Entries: every path below the root, depth first, names in byte order (the root itself is
/// not an entry, as in Docker and BuildKit layers); directories end in `/`; owners are
/// numeric (no user or group names); mtimes in whole seconds per [`MtimePolicy`]; xattrs in
/// name order (`security.selinux` left out: labels are the host's policy); sockets are
/// skipped with a warning. A file with several links is written once, later names as hard
/// links to the first.
pub fn create_from<F: Fs, W: Write + Send>(
    fs: &mut F,
    opts: &CreateOptions,
    out: W,
    progress: impl FnMut(Progress),
) -> Result<CreateReport> {
    let compression = opts.compression;
    if opts.pipelined {
        create_with(fs, opts, progress, move |walker, progress| {
            pipelined(walker, out, compression, progress)
        })
    } else {
        create_with(fs, opts, progress, move |walker, progress| {
            inline(walker, out, compression, progress)
        })
    }
}

/// [`create_from`] on the calling thread only, for writers that cannot move to another
/// thread (a JavaScript sink in the browser). [`CreateOptions::pipelined`] is ignored; the
/// bytes are the same.
pub fn create_from_local<F: Fs, W: Write>(
    fs: &mut F,
    opts: &CreateOptions,
    out: W,
    progress: impl FnMut(Progress),
) -> Result<CreateReport> {
    let compression = opts.compression;
    create_with(fs, opts, progress, move |walker, progress| {
        inline(walker, out, compression, progress)
    })
}

/// The result of the output side and the result of the walk.
type Outcome = (Result<Compressed>, Result<Walked>);

fn create_with<F: Fs, S>(
    fs: &mut F,
    opts: &CreateOptions,
    mut progress: impl FnMut(Progress),
    output: S,
) -> Result<CreateReport>
where
    S: FnOnce(&mut Walker<'_, F>, &mut dyn FnMut(Progress)) -> Outcome,
{
    if let CreateCompression::Gzip { level } = opts.compression {
        if level > 9 {
            return Err(Error::Io {
                op: "create layer".into(),
                path: String::new(),
                errno: None,
                reason: format!("gzip level {level} is not in 0-9"),
            });
        }
    }
    let plain = opts.compression == CreateCompression::None;
    let mut walker = Walker {
        fs,
        opts,
        writer: TarWriter::new(Format::Pax),
        buf: Vec::with_capacity(CHUNK),
        // Uncompressed, the digest is the diff_id: the output side hashes it once.
        diff: (!plain).then(|| Hasher::new(Algorithm::Sha256)),
        total: 0,
        entries: 0,
        links: HashMap::new(),
        warnings: Warnings::default(),
        compressed: Arc::new(AtomicU64::new(0)),
    };
    let (end, walked) = output(&mut walker, &mut progress);
    // A walk error is the cause; a write error then is only its consequence.
    let walked = walked?;
    let end = end?;
    let report = CreateReport {
        diff_id: walked.diff_id.unwrap_or_else(|| end.digest.clone()),
        digest: end.digest,
        compressed_size: end.size,
        uncompressed_size: walked.size,
        entries: walked.entries,
        skipped: walked.warnings,
    };
    progress(Progress {
        compressed_in: report.compressed_size,
        uncompressed_out: report.uncompressed_size,
        entries: report.entries,
    });
    Ok(report)
}

/// The walk on this thread, compression (and output) on helper threads.
fn pipelined<F: Fs, W: Write + Send>(
    walker: &mut Walker<'_, F>,
    out: W,
    compression: CreateCompression,
    progress: &mut dyn FnMut(Progress),
) -> Outcome {
    let counter = walker.compressed.clone();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        let consumer = scope.spawn(move || -> Result<Compressed> {
            match compression {
                CreateCompression::Gzip { level } => {
                    parallel_gzip(rx, free_tx, out, level, &counter)
                }
                _ => {
                    let mut enc = Encoder::new(out, compression)?;
                    for chunk in rx {
                        enc.write_all(&chunk).map_err(write_error)?;
                        counter.store(enc.count(), Ordering::Relaxed);
                        let _ = free_tx.send(chunk);
                    }
                    enc.finish()
                }
            }
        });
        let mut emit = |chunk: Vec<u8>| -> Result<Vec<u8>> {
            tx.send(chunk)
                .map_err(|_| write_error(io::ErrorKind::BrokenPipe.into()))?;
            Ok(free_rx.try_recv().unwrap_or_default())
        };
        let walked = walker.run(&mut emit, progress);
        drop(tx);
        let end = consumer
            .join()
            .unwrap_or_else(|_| Err(write_error(io::Error::other_msg("compressor panicked"))));
        (end, walked)
    })
}

/// Everything on this thread.
fn inline<F: Fs, W: Write>(
    walker: &mut Walker<'_, F>,
    out: W,
    compression: CreateCompression,
    progress: &mut dyn FnMut(Progress),
) -> Outcome {
    let counter = walker.compressed.clone();
    let mut enc = match Encoder::new(out, compression) {
        Ok(e) => Some(e),
        Err(e) => return (Err(e.clone()), Err(e)),
    };
    let mut emit = |chunk: Vec<u8>| -> Result<Vec<u8>> {
        let e = enc
            .as_mut()
            .ok_or_else(|| write_error(io::ErrorKind::Other.into()))?;
        e.write_all(&chunk).map_err(write_error)?;
        counter.store(e.count(), Ordering::Relaxed);
        let mut chunk = chunk;
        chunk.clear();
        Ok(chunk)
    };
    let walked = walker.run(&mut emit, progress);
    let end = match enc.take() {
        Some(e) => e.finish(),
        None => Err(write_error(io::ErrorKind::Other.into())),
    };
    (end, walked)
}

// --- gzip in independent blocks --------------------------------------------------------------
//
// miniz_oxide (flate2's pure-Rust backend, the one that also builds for wasm) deflates at
// about half zlib's speed. Like pigz, the tar is cut into 1 MiB blocks that are deflated
// independently (on all cores when pipelined), each ending with a sync flush (an empty stored
// block, so they concatenate into one valid deflate stream), followed by an empty final block
// and the gzip trailer with the CRC of the whole. The blocks are cut at fixed offsets of the
// tar, so the bytes are the same with one thread or many: deterministic. Without a preset
// dictionary per block (zlib-only in flate2) the output is about 0.1% larger.

/// `1f 8b`, deflate, no flags, mtime 0, no extra flags, OS "unknown".
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block with fixed Huffman codes (BFINAL=1, BTYPE=01, end-of-block).
const DEFLATE_END: [u8; 2] = [0x03, 0x00];

/// One block: raw deflate ending in a sync flush, its CRC32 and length.
///
/// As zlib does per deflate block, each piece that deflate does not make smaller than storing
/// it (already-compressed files, random bytes) is stored instead: miniz_oxide would code it as
/// literals, larger than the data and inflating at half the speed of a copy. The pieces end in
/// sync flushes, so a stored piece can replace its deflated form: back-references of later
/// pieces point into the uncompressed history, which is the same either way.
fn deflate_block(level: u32, data: &[u8]) -> io::Result<(Vec<u8>, u32, u64)> {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 1024);
    for piece in data.chunks(PIECE) {
        let start = out.len();
        let before = c.total_in();
        loop {
            let done = (c.total_in() - before) as usize;
            c.compress_vec(&piece[done..], &mut out, flate2::FlushCompress::Sync)
                .map_err(|e| io::Error::new(io::ErrorKind::Other, e))?;
            if (c.total_in() - before) as usize == piece.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(64 << 10);
        }
        if out.len() - start > stored_len(piece.len()) {
            out.truncate(start);
            push_stored(&mut out, piece);
        }
    }
    Ok((out, crc32fast::hash(data), data.len() as u64))
}

/// The unit of the deflate-or-store choice.
const PIECE: usize = 64 << 10;

/// The largest payload of one stored deflate block.
const STORED_MAX: usize = 65_535;

/// Bytes taken by `n` bytes as stored blocks (a 5-byte header each; one empty block for 0).
fn stored_len(n: usize) -> usize {
    n + 5 * ((n + STORED_MAX - 1) / STORED_MAX).max(1)
}

/// `data` as non-final stored blocks. They start at a byte boundary (the previous block ended
/// with a sync flush, or this is the first), so each header is BFINAL=0, BTYPE=00 and padding:
/// one zero byte, then LEN and its complement.
fn push_stored(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(stored_len(data.len()));
    let mut pieces = data.chunks(STORED_MAX).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
    }
    for piece in pieces {
        let len = piece.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
}

/// The gzip stream of blocks, written in order.
struct GzipBlocks<W: Write> {
    out: CountHash<W>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> GzipBlocks<W> {
    fn new(out: W) -> io::Result<Self> {
        let mut out = CountHash {
            inner: out,
            hasher: Hasher::new(Algorithm::Sha256),
            count: 0,
        };
        out.write_all(&GZIP_HEADER)?;
        Ok(GzipBlocks {
            out,
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    fn block(&mut self, deflated: &[u8], crc: u32, len: u64) -> io::Result<()> {
        self.out.write_all(deflated)?;
        self.crc
            .combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
        self.len += len;
        Ok(())
    }

    fn finish(mut self) -> io::Result<CountHash<W>> {
        self.out.write_all(&DEFLATE_END)?;
        self.out.write_all(&self.crc.finalize().to_le_bytes())?;
        self.out.write_all(&(self.len as u32).to_le_bytes())?;
        Ok(self.out)
    }
}

type Deflated = io::Result<(u64, Vec<u8>, u32, u64)>;

/// Deflates the blocks from `rx` on all cores and writes them in order to `out`.
fn parallel_gzip<W: Write>(
    rx: mpsc::Receiver<Vec<u8>>,
    free_tx: mpsc::Sender<Vec<u8>>,
    out: W,
    level: u32,
    counter: &AtomicU64,
) -> Result<Compressed> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    std::thread::scope(|scope| {
        let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(workers * 2);
        let work_rx = Arc::new(std::sync::Mutex::new(work_rx));
        let (done_tx, done_rx) = mpsc::sync_channel::<Deflated>(workers * 2);
        for _ in 0..workers {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            let free_tx = free_tx.clone();
            scope.spawn(move || loop {
                let next = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((seq, block)) = next else {
                    return;
                };
                let result = deflate_block(level, &block).map(|(z, crc, len)| (seq, z, crc, len));
                let _ = free_tx.send(block);
                if done_tx.send(result).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        // Hand out the blocks, tagged with their position.
        scope.spawn(move || {
            for (seq, block) in rx.into_iter().enumerate() {
                if work_tx.send((seq as u64, block)).is_err() {
                    return;
                }
            }
        });
        let mut gz = GzipBlocks::new(out).map_err(write_error)?;
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0u64;
        for done in done_rx {
            let (seq, z, crc, len) = done.map_err(write_error)?;
            pending.insert(seq, (z, crc, len));
            while let Some((z, crc, len)) = pending.remove(&next) {
                gz.block(&z, crc, len).map_err(write_error)?;
                counter.store(gz.out.count, Ordering::Relaxed);
                next += 1;
            }
        }
        if !pending.is_empty() {
            return Err(write_error(io::Error::other_msg(
                "a compression worker stopped",
            )));
        }
        let mut sink = gz.finish().map_err(write_error)?;
        sink.flush().map_err(write_error)?;
        Ok(Compressed {
            digest: sink.hasher.finish(),
            size: sink.count,
        })
    })
}

trait OtherMsg {
    fn other_msg(msg: &str) -> io::Error;
}

impl OtherMsg for io::Error {
    fn other_msg(msg: &str) -> io::Error {
        io::Error::new(io::ErrorKind::Other, msg.to_string())
    }
}

fn write_error(e: io::Error) -> Error {
    Error::Io {
        op: "write layer".into(),
        path: String::new(),
        errno: e.raw_os_error(),
        reason: e.to_string(),
    }
}

fn fs_error(op: &str, path: &[u8], e: FsError) -> Error {
    Error::Io {
        op: op.to_string(),
        path: display_name(path),
        errno: e.errno,
        reason: e.message,
    }
}

// --- output ----------------------------------------------------------------------------------

/// Counts and hashes what is written through it.
struct CountHash<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> Write for CountHash<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder<W: Write> {
    Plain(CountHash<W>),
    Gzip(GzipBlocks<W>, u32),
    #[cfg(feature = "zstd")]
    Zstd(zstd::stream::write::Encoder<'static, CountHash<W>>),
}

struct Compressed {
    digest: Digest,
    size: u64,
}

impl<W: Write> Encoder<W> {
    fn new(out: W, compression: CreateCompression) -> Result<Self> {
        let sink = CountHash {
            inner: out,
            hasher: Hasher::new(Algorithm::Sha256),
            count: 0,
        };
        match compression {
            CreateCompression::None => Ok(Encoder::Plain(sink)),
            CreateCompression::Gzip { level } => Ok(Encoder::Gzip(
                GzipBlocks::new(sink.inner).map_err(write_error)?,
                level,
            )),
            #[cfg(feature = "zstd")]
            CreateCompression::Zstd { level } => {
                let mut e = zstd::stream::write::Encoder::new(sink, level).map_err(write_error)?;
                e.include_checksum(true).map_err(write_error)?;
                Ok(Encoder::Zstd(e))
            }
            #[cfg(not(feature = "zstd"))]
            CreateCompression::Zstd { .. } => Err(Error::UnsupportedCompression {
                format: "zstd (this build of stevedore-core has no zstd support)".into(),
            }),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(data),
            Encoder::Gzip(w, level) => {
                // The walker hands over whole blocks (CHUNK bytes, the last one shorter).
                let (z, crc, len) = deflate_block(*level, data)?;
                w.block(&z, crc, len)
            }
            #[cfg(feature = "zstd")]
            Encoder::Zstd(w) => w.write_all(data),
        }
    }

    fn count(&self) -> u64 {
        match self {
            Encoder::Plain(w) => w.count,
            Encoder::Gzip(w, _) => w.out.count,
            #[cfg(feature = "zstd")]
            Encoder::Zstd(w) => w.get_ref().count,
        }
    }

    fn finish(self) -> Result<Compressed> {
        let mut sink = match self {
            Encoder::Plain(w) => w,
            Encoder::Gzip(w, _) => w.finish().map_err(write_error)?,
            #[cfg(feature = "zstd")]
            Encoder::Zstd(w) => w.finish().map_err(write_error)?,
        };
        sink.flush().map_err(write_error)?;
        Ok(Compressed {
            digest: sink.hasher.finish(),
            size: sink.count,
        })
    }
}

// --- the walk --------------------------------------------------------------------------------

struct Walked {
    /// `None` when the output side hashed the same bytes (no compression).
    diff_id: Option<Digest>,
    size: u64,
    entries: u64,
    warnings: Vec<super::Warning>,
}

struct Frame<D> {
    dir: D,
    path: Vec<u8>,
    names: Vec<Vec<u8>>,
    next: usize,
}

struct Walker<'a, F: Fs> {
    fs: &'a mut F,
    opts: &'a CreateOptions,
    writer: TarWriter,
    buf: Vec<u8>,
    diff: Option<Hasher>,
    total: u64,
    entries: u64,
    /// First path of each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    warnings: Warnings,
    compressed: Arc<AtomicU64>,
}

type Emit<'e> = dyn FnMut(Vec<u8>) -> Result<Vec<u8>> + 'e;

impl<F: Fs> Walker<'_, F> {
    fn run(&mut self, emit: &mut Emit<'_>, progress: &mut dyn FnMut(Progress)) -> Result<Walked> {
        let root = self
            .fs
            .root()
            .map_err(|e| fs_error("open the source root", b"", e))?;
        let mut stack = vec![self.frame(root, Vec::new())?];
        while let Some(frame) = stack.last_mut() {
            if frame.next == frame.names.len() {
                stack.pop();
                continue;
            }
            let name = std::mem::take(&mut frame.names[frame.next]);
            frame.next += 1;
            let dir = frame.dir.clone();
            let path = join(&frame.path, &name);
            if let Some(sub) = self.entry(&dir, &name, &path, emit, progress)? {
                let frame = self.frame(sub, path)?;
                stack.push(frame);
            }
        }
        let end = self
            .writer
            .finish()
            .map_err(|e| Error::TarWrite {
                entry: String::new(),
                reason: e.to_string(),
            })?
            .to_vec();
        self.put(&end, emit, progress)?;
        self.flush(emit, progress)?;
        let diff_id = self.diff.take().map(Hasher::finish);
        Ok(Walked {
            diff_id,
            size: self.total,
            entries: self.entries,
            warnings: std::mem::take(&mut self.warnings).into_vec(),
        })
    }

    fn frame(&mut self, dir: F::Dir, path: Vec<u8>) -> Result<Frame<F::Dir>> {
        let mut names = self
            .fs
            .read_dir(&dir)
            .map_err(|e| fs_error("read directory", &path, e))?;
        names.sort();
        Ok(Frame {
            dir,
            path,
            names,
            next: 0,
        })
    }

    /// Whether `name` is one of the markers fuse-overlayfs puts into an opaque directory of its
    /// upper dir — `.wh..opq` (a 0/0 character device) or `.wh..wh..opq` (an empty file) — in a
    /// directory that is opaque by xattr. The directory's own entry already carries the
    /// opacity (the OCI marker follows it), so these are skipped.
    fn fuse_opaque_marker(
        &mut self,
        dir: &F::Dir,
        name: &[u8],
        st: &super::fs::Stat,
        ns: XattrNamespace,
    ) -> Result<bool> {
        let device = st.kind == FileType::CharDevice && st.rdev_major == 0 && st.rdev_minor == 0;
        let empty_file = st.kind == FileType::File && st.size == 0;
        if !((name == b".wh..opq" && device) || (name == OPAQUE_MARKER.as_bytes() && empty_file)) {
            return Ok(false);
        }
        let xattrs = self
            .fs
            .xattrs(Target::Dir(dir))
            .map_err(|e| fs_error("list xattrs of the parent of", name, e))?;
        Ok(xattrs.iter().any(|(n, v)| {
            (n == FUSE_OVERLAYFS_OPAQUE.as_bytes() || n == ns.opaque_xattr().as_bytes())
                && v == OPAQUE_VALUE
        }))
    }

    /// Writes the entries for `name`; returns the directory handle to descend into.
    fn entry(
        &mut self,
        dir: &F::Dir,
        name: &[u8],
        path: &[u8],
        emit: &mut Emit<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<F::Dir>> {
        let Some(st) = self
            .fs
            .lstat(dir, name)
            .map_err(|e| fs_error("lstat", path, e))?
        else {
            return Ok(None); // removed while we walked
        };
        if let CreateMode::OverlayDiff(ns) = self.opts.mode {
            if self.fuse_opaque_marker(dir, name, &st, ns)? {
                return Ok(None);
            }
        }
        let mut sub = None;
        let kind = match st.kind {
            FileType::Socket => {
                self.warnings.push(
                    display_name(path),
                    "sockets cannot be archived: skipped".into(),
                );
                return Ok(None);
            }
            FileType::Dir => {
                sub = Some(
                    self.fs
                        .open_dir(dir, name)
                        .map_err(|e| fs_error("open directory", path, e))?,
                );
                EntryKind::Dir
            }
            FileType::File => {
                let key = (st.dev, st.ino);
                match self.links.get(&key) {
                    Some(first) => EntryKind::Hardlink {
                        target: first.clone(),
                    },
                    None => {
                        if st.nlink > 1 {
                            self.links.insert(key, path.to_vec());
                        }
                        EntryKind::File
                    }
                }
            }
            FileType::Symlink => EntryKind::Symlink {
                target: self
                    .fs
                    .read_link(dir, name)
                    .map_err(|e| fs_error("read link", path, e))?,
            },
            FileType::CharDevice => EntryKind::CharDevice {
                major: st.rdev_major,
                minor: st.rdev_minor,
            },
            FileType::BlockDevice => EntryKind::BlockDevice {
                major: st.rdev_major,
                minor: st.rdev_minor,
            },
            FileType::Fifo => EntryKind::Fifo,
        };
        let raw = match &sub {
            Some(d) => self.fs.xattrs(Target::Dir(d)),
            None => self.fs.xattrs(Target::At(dir, name)),
        }
        .map_err(|e| fs_error("list xattrs of", path, e))?;
        let mut xattrs = Vec::with_capacity(raw.len());
        for (xname, value) in raw {
            let xname = String::from_utf8(xname).map_err(|n| Error::Io {
                op: "archive xattrs of".into(),
                path: display_name(path),
                errno: None,
                reason: format!(
                    "xattr name {:?} is not UTF-8 (PAX records are)",
                    display_name(n.as_bytes())
                ),
            })?;
            if xname == SELINUX_XATTR {
                continue;
            }
            xattrs.push((xname, value));
        }
        xattrs.sort();
        let is_file = kind == EntryKind::File;
        let entry = Entry {
            path: path.to_vec(),
            kind,
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
            size: if is_file { st.size } else { 0 },
            mtime: st.mtime.secs,
            content: None,
            xattrs,
        };
        let entries = match self.opts.mode {
            CreateMode::Full => {
                let mut entry = entry;
                let before = entry.xattrs.len();
                entry.xattrs.retain(|(n, _)| !is_overlay_private_xattr(n));
                if entry.xattrs.len() != before {
                    self.warnings.push(
                        display_name(path),
                        "overlay-private xattrs are not content: dropped".into(),
                    );
                }
                LayerChange::Entry {
                    entry,
                    opaque: false,
                }
                .to_oci()?
            }
            CreateMode::OverlayDiff(ns) => {
                let mut out = LayerChange::from_overlay(entry, ns)?.to_oci()?;
                docker_marker_metadata(&mut out, path, &st);
                out
            }
        };
        for e in entries {
            let with_content = is_file && e.kind == EntryKind::File && e.path == path;
            let header = self.header(&e);
            let bytes = self.writer.header(&header)?.to_vec();
            self.put(&bytes, emit, progress)?;
            if with_content {
                self.content(dir, name, path, e.size, emit, progress)?;
            }
            let pad = self.writer.end_entry()?;
            self.put(pad, emit, progress)?;
            self.entries += 1;
        }
        Ok(sub)
    }

    fn header(&self, e: &Entry) -> Header {
        let (kind, link_name, dev) = match &e.kind {
            EntryKind::File => (tar::EntryKind::Regular, Vec::new(), (0, 0)),
            EntryKind::Dir => (tar::EntryKind::Directory, Vec::new(), (0, 0)),
            EntryKind::Symlink { target } => (tar::EntryKind::Symlink, target.clone(), (0, 0)),
            EntryKind::Hardlink { target } => (tar::EntryKind::Hardlink, target.clone(), (0, 0)),
            EntryKind::CharDevice { major, minor } => {
                (tar::EntryKind::CharDevice, Vec::new(), (*major, *minor))
            }
            EntryKind::BlockDevice { major, minor } => {
                (tar::EntryKind::BlockDevice, Vec::new(), (*major, *minor))
            }
            EntryKind::Fifo => (tar::EntryKind::Fifo, Vec::new(), (0, 0)),
        };
        let mut path = e.path.clone();
        if kind == tar::EntryKind::Directory {
            path.push(b'/');
        }
        let secs = match self.opts.mtime {
            MtimePolicy::Preserve => e.mtime,
            MtimePolicy::Clamp(t) => e.mtime.min(t),
        };
        Header {
            path,
            link_name,
            kind,
            mode: e.mode,
            uid: u64::from(e.uid),
            gid: u64::from(e.gid),
            size: if kind == tar::EntryKind::Regular {
                e.size
            } else {
                0
            },
            mtime: Timestamp::new(secs, 0),
            dev_major: dev.0,
            dev_minor: dev.1,
            xattrs: e
                .xattrs
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.clone()))
                .collect(),
            ..Header::default()
        }
    }

    /// Streams `size` bytes of file `name` into the archive, reading straight into the chunk.
    fn content(
        &mut self,
        dir: &F::Dir,
        name: &[u8],
        path: &[u8],
        size: u64,
        emit: &mut Emit<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let mut reader = self
            .fs
            .open_file(dir, name)
            .map_err(|e| fs_error("open", path, e))?;
        let changed = |what: &str| Error::Io {
            op: "read".into(),
            path: display_name(path),
            errno: None,
            reason: format!("the file {what} while it was archived"),
        };
        let mut left = size;
        while left > 0 {
            if self.buf.len() >= CHUNK {
                self.flush(emit, progress)?;
            }
            let start = self.buf.len();
            let want = (CHUNK - start).min(usize::try_from(left).unwrap_or(usize::MAX));
            self.buf.resize(start + want, 0);
            let n = loop {
                match reader.read(&mut self.buf[start..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.truncate(start);
                        return Err(Error::Io {
                            op: "read".into(),
                            path: display_name(path),
                            errno: e.raw_os_error(),
                            reason: e.to_string(),
                        });
                    }
                }
            };
            self.buf.truncate(start + n);
            if n == 0 {
                return Err(changed("shrank"));
            }
            self.writer.data(&self.buf[start..])?;
            if let Some(h) = &mut self.diff {
                h.update(&self.buf[start..]);
            }
            self.total += n as u64;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        loop {
            match reader.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(changed("grew")),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(()),
            }
        }
    }

    /// Appends archive bytes (hashed for the diff_id).
    fn put(
        &mut self,
        bytes: &[u8],
        emit: &mut Emit<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        if let Some(h) = &mut self.diff {
            h.update(bytes);
        }
        self.total += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.buf.len() >= CHUNK {
                self.flush(emit, progress)?;
            }
            // Blocks are cut at fixed offsets of the tar (the gzip output depends on them).
            let n = rest.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == CHUNK {
                self.flush(emit, progress)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, emit: &mut Emit<'_>, progress: &mut dyn FnMut(Progress)) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::take(&mut self.buf);
        let mut next = emit(full)?;
        next.clear();
        if next.capacity() < CHUNK {
            next.reserve(CHUNK);
        }
        self.buf = next;
        progress(Progress {
            compressed_in: self.compressed.load(Ordering::Relaxed),
            uncompressed_out: self.total,
            entries: self.entries,
        });
        Ok(())
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

/// Gives the whiteout and opaque markers made from overlay entry `path` (stat `st`) the
/// metadata Docker's overlay2 driver writes (moby's overlay whiteout converter), so that a
/// layer made from an upper dir is the same tar Docker makes: `.wh.x` is mode 0600 with the
/// 0/0 device's owner and mtime; `.wh..wh..opq` has its directory's owner and permission bits
/// and mtime 0 (Go's zero time).
fn docker_marker_metadata(entries: &mut [Entry], path: &[u8], st: &super::fs::Stat) {
    for e in entries.iter_mut().filter(|e| e.path != path) {
        let opaque = e
            .path
            .ends_with(crate::overlay::whiteout::OPAQUE_MARKER.as_bytes());
        if opaque {
            e.mode = st.mode & 0o777;
            e.mtime = 0;
        } else {
            e.mode = 0o600;
            e.mtime = st.mtime.secs;
        }
        e.uid = st.uid;
        e.gid = st.gid;
    }
}
