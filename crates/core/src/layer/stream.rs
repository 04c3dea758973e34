//! The compressed side of a layer stream: magic-byte detection, decompression drained to the
//! end, the digest of the bytes as read, and the size and ratio caps. Pure computation over a
//! caller-supplied `Read`.

use super::ApplyLimits;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use std::io::{self, BufReader, Read};

/// Size of the chunks passed from the decompressor to the tar side.
pub(crate) const CHUNK: usize = 1 << 20;

/// Compression of a layer stream, as detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// Bytes [`detect_compression`] looks at (xz has the longest magic).
pub(crate) const MAGIC_LEN: usize = 6;

/// Detects the compression from the first bytes of a stream (at most 6 are looked at): gzip
/// (`1f 8b`), zstd (a frame, `28 b5 2f fd`, or a skippable frame, `5? 2a 4d 18`), anything
/// else is a plain tar. bzip2, xz and lz4 are recognized and refused with
/// [`Error::UnsupportedCompression`] instead of failing later as a malformed tar.
pub fn detect_compression(magic: &[u8]) -> Result<Compression> {
    let refuse = |format: &str| {
        Err(Error::UnsupportedCompression {
            format: format.to_string(),
        })
    };
    if magic.starts_with(&[0x1f, 0x8b]) {
        return Ok(Compression::Gzip);
    }
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (magic.len() >= 4 && magic[0] & 0xf0 == 0x50 && magic[1..4] == [0x2a, 0x4d, 0x18])
    {
        return if cfg!(feature = "zstd") {
            Ok(Compression::Zstd)
        } else {
            refuse("zstd (this build of stevedore-core has no zstd support)")
        };
    }
    if magic.starts_with(b"BZh") {
        return refuse("bzip2");
    }
    if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return refuse("xz");
    }
    if magic.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        return refuse("lz4");
    }
    Ok(Compression::None)
}

/// Counts and hashes the bytes read from the input, serving the peeked magic bytes first.
pub(crate) struct Tap<R> {
    inner: R,
    peek: [u8; MAGIC_LEN],
    peek_pos: usize,
    peek_len: usize,
    hasher: Hasher,
    count: u64,
    /// The input's own read error (as opposed to corrupt compressed data).
    error: Option<String>,
}

impl<R: Read> Tap<R> {
    fn new(mut inner: R, algorithm: Algorithm) -> Result<Self> {
        let mut peek = [0u8; MAGIC_LEN];
        let mut len = 0;
        while len < MAGIC_LEN {
            match inner.read(&mut peek[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(&e.to_string())),
            }
        }
        Ok(Tap {
            inner,
            peek,
            peek_pos: 0,
            peek_len: len,
            hasher: Hasher::new(algorithm),
            count: 0,
            error: None,
        })
    }

    fn magic(&self) -> &[u8] {
        &self.peek[..self.peek_len]
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = if self.peek_pos < self.peek_len {
            let n = buf.len().min(self.peek_len - self.peek_pos);
            buf[..n].copy_from_slice(&self.peek[self.peek_pos..self.peek_pos + n]);
            self.peek_pos += n;
            n
        } else {
            match self.inner.read(buf) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::Interrupted {
                        self.error = Some(e.to_string());
                    }
                    return Err(e);
                }
            }
        };
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

fn read_error(reason: &str) -> Error {
    Error::Io {
        op: "read layer stream".into(),
        path: String::new(),
        errno: None,
        reason: reason.to_string(),
    }
}

const INPUT_BUFFER: usize = 128 << 10;

enum Decoder<R: Read> {
    Plain(Box<Tap<R>>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<Tap<R>>>>),
    #[cfg(feature = "zstd")]
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Tap<R>>>>),
}

impl<R: Read> Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            #[cfg(feature = "zstd")]
            Decoder::Zstd(r) => r.read(buf),
        }
    }

    fn tap(&self) -> &Tap<R> {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(r) => r.get_ref().get_ref(),
            #[cfg(feature = "zstd")]
            Decoder::Zstd(r) => r.get_ref().get_ref(),
        }
    }

    fn into_tap(self) -> Tap<R> {
        match self {
            Decoder::Plain(r) => *r,
            Decoder::Gzip(r) => r.into_inner().into_inner(),
            #[cfg(feature = "zstd")]
            Decoder::Zstd(r) => r.finish().into_inner(),
        }
    }
}

/// How the compressed side ended.
#[derive(Debug, Clone)]
pub(crate) struct StreamEnd {
    pub digest: Digest,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub compression: Compression,
}

/// The decompressing, hashing, capped reader of a layer stream.
pub(crate) struct Source<R: Read> {
    dec: Decoder<R>,
    compression: Compression,
    produced: u64,
    limits: ApplyLimits,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(reader: R, algorithm: Algorithm, limits: ApplyLimits) -> Result<Self> {
        let tap = Tap::new(reader, algorithm)?;
        let compression = detect_compression(tap.magic())?;
        let dec = match compression {
            Compression::None => Decoder::Plain(Box::new(tap)),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(
                BufReader::with_capacity(INPUT_BUFFER, tap),
            ))),
            #[cfg(feature = "zstd")]
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                    INPUT_BUFFER,
                    tap,
                ))
                .map_err(|e| decompress_error("zstd", 0, &e))?;
                d.window_log_max(limits.zstd_window_log_max)
                    .map_err(|e| decompress_error("zstd", 0, &e))?;
                Decoder::Zstd(Box::new(d))
            }
            #[cfg(not(feature = "zstd"))]
            Compression::Zstd => {
                unreachable!("detect_compression refuses zstd without the feature")
            }
        };
        Ok(Source {
            dec,
            compression,
            produced: 0,
            limits,
        })
    }

    pub(crate) fn compression(&self) -> Compression {
        self.compression
    }

    /// Compressed bytes read so far.
    pub(crate) fn compressed(&self) -> u64 {
        self.dec.tap().count
    }

    /// Uncompressed bytes produced so far.
    pub(crate) fn produced(&self) -> u64 {
        self.produced
    }

    /// Fills `buf` with up to [`CHUNK`] uncompressed bytes (fewer only at the end). Returns
    /// false once the stream is exhausted (decompressor drained, checksums verified).
    pub(crate) fn fill(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        buf.resize(CHUNK, 0);
        let mut n = 0;
        let mut more = true;
        while n < CHUNK {
            match self.dec.read(&mut buf[n..]) {
                Ok(0) => {
                    more = false;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.truncate(n);
                    return Err(self.error(&e));
                }
            }
        }
        buf.truncate(n);
        self.produced += n as u64;
        self.check_limits()?;
        Ok(more)
    }

    fn check_limits(&self) -> Result<()> {
        let limits = &self.limits;
        if self.produced > limits.max_uncompressed_bytes {
            return Err(Error::LayerLimit {
                entry: None,
                what: "uncompressed layer size",
                limit: limits.max_uncompressed_bytes,
                found: self.produced,
            });
        }
        if self.compression != Compression::None && self.produced > limits.ratio_grace_bytes {
            let compressed = self.compressed().max(1);
            if self.produced > compressed.saturating_mul(limits.max_ratio) {
                return Err(Error::DecompressionRatio {
                    compressed,
                    uncompressed: self.produced,
                    max_ratio: limits.max_ratio,
                });
            }
        }
        Ok(())
    }

    fn error(&self, e: &io::Error) -> Error {
        let tap = self.dec.tap();
        match &tap.error {
            Some(reason) => read_error(reason),
            None => decompress_error(self.compression.name(), tap.count, e),
        }
    }

    pub(crate) fn finish(self) -> StreamEnd {
        let compression = self.compression;
        let uncompressed_size = self.produced;
        let tap = self.dec.into_tap();
        StreamEnd {
            digest: tap.hasher.finish(),
            compressed_size: tap.count,
            uncompressed_size,
            compression,
        }
    }
}

fn decompress_error(format: &'static str, offset: u64, e: &io::Error) -> Error {
    let reason = match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("stream truncated ({e})"),
        _ => e.to_string(),
    };
    Error::Decompress {
        format,
        offset,
        reason,
    }
}
