//! A push-style zstd decoder (sans I/O): the caller feeds compressed bytes as they arrive and
//! takes the decompressed bytes out in bounded pieces, so memory stays flat whatever the ratio.
//! For callers that cannot hand over a `Read` (a JavaScript stream in Node); the layer engine
//! itself reads through `zstd::stream::read`.

use crate::error::{Error, Result};
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

/// Decodes one or more concatenated zstd frames.
pub struct ZstdDecoder {
    raw: Decoder<'static>,
    buf: Vec<u8>,
    /// Inside a frame (some input read since the last frame ended).
    in_frame: bool,
    /// Compressed bytes used so far.
    read: u64,
}

fn error(offset: u64, reason: String) -> Error {
    Error::Decompress {
        format: "zstd",
        offset,
        reason,
    }
}

impl ZstdDecoder {
    /// A decoder refusing frames whose window exceeds `2^window_log_max` bytes (memory cap;
    /// zstd's own default is 27).
    pub fn new(window_log_max: u32) -> Result<Self> {
        let mut raw = Decoder::new().map_err(|e| error(0, e.to_string()))?;
        raw.set_parameter(DParameter::WindowLogMax(window_log_max))
            .map_err(|e| error(0, e.to_string()))?;
        Ok(ZstdDecoder {
            raw,
            buf: vec![0; 1 << 20],
            in_frame: false,
            read: 0,
        })
    }

    /// Decodes from `input`, appending at most 1 MiB to `out`. Returns how many input bytes
    /// were used; call again with the rest (and with an empty slice while it keeps producing
    /// output) until it uses everything and adds nothing.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        let mut src = InBuffer::around(input);
        let mut dst = OutBuffer::around(&mut self.buf[..]);
        let hint = self
            .raw
            .run(&mut src, &mut dst)
            .map_err(|e| error(self.read, e.to_string()))?;
        let produced = dst.pos();
        let used = src.pos();
        self.read += used as u64;
        out.extend_from_slice(&self.buf[..produced]);
        if used > 0 || produced > 0 {
            self.in_frame = true;
        }
        // A hint of 0: the frame is complete and fully flushed.
        if hint == 0 {
            self.in_frame = false;
        }
        Ok(used)
    }

    /// Ends the stream: an error if it stopped inside a frame (truncated input).
    pub fn finish(&self) -> Result<()> {
        if self.in_frame {
            return Err(error(
                self.read,
                "the stream ends inside a frame (truncated)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(data: &[u8], piece: usize) -> Result<Vec<u8>> {
        let mut d = ZstdDecoder::new(27)?;
        let mut out = Vec::new();
        for chunk in data.chunks(piece.max(1)) {
            let mut rest = chunk;
            loop {
                let before = out.len();
                let used = d.push(rest, &mut out)?;
                rest = &rest[used..];
                if rest.is_empty() && out.len() == before {
                    break;
                }
            }
        }
        loop {
            let before = out.len();
            d.push(&[], &mut out)?;
            if out.len() == before {
                break;
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn decodes_concatenated_frames_in_any_piece_size_and_refuses_truncation() {
        let a: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"second frame".to_vec();
        // Frames with checksums, as layer writers (and ours) make them.
        let frame = |d: &[u8], level: i32| {
            let mut e = zstd::stream::Encoder::new(Vec::new(), level).unwrap();
            e.include_checksum(true).unwrap();
            std::io::Write::write_all(&mut e, d).unwrap();
            e.finish().unwrap()
        };
        let mut data = frame(&a, 3);
        data.extend(frame(&b, 19));
        let mut want = a.clone();
        want.extend(&b);
        for piece in [1, 7, 4096, 1 << 20, data.len()] {
            assert_eq!(decode_all(&data, piece).unwrap(), want, "piece {piece}");
        }
        let cut = &data[..data.len() / 2];
        let e = decode_all(cut, 4096).unwrap_err();
        assert_eq!(e.code(), "ERR_DECOMPRESS");
        let mut bad = data.clone();
        bad[data.len() / 3] ^= 0xff;
        assert!(decode_all(&bad, 4096).is_err());
    }

    #[test]
    fn refuses_a_window_above_the_cap() {
        let data = {
            let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
            e.long_distance_matching(true).unwrap();
            e.window_log(28).unwrap();
            std::io::Write::write_all(&mut e, &vec![7u8; 1 << 20]).unwrap();
            e.finish().unwrap()
        };
        let mut d = ZstdDecoder::new(27).unwrap();
        let mut out = Vec::new();
        assert!(d.push(&data, &mut out).is_err());
    }
}
