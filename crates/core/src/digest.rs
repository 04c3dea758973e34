//! Content digests as typed values (`sha256:<64 hex>`), and streaming hashers.
//!
//! The grammar follows the OCI image spec: `algorithm ":" encoded`, where we accept the two
//! registered algorithms, lowercase hex only, with the exact length each algorithm produces.

use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the raw digest in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(Error::UnsupportedAlgorithm {
                name: name.to_string(),
            }),
        }
    }
}

/// A validated digest. Only constructed by hashing or by parsing a well-formed string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    bytes: [u8; 64],
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw digest bytes (32 for sha256, 64 for sha512).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algorithm.output_len()]
    }

    /// Lowercase hex of the digest bytes (the "encoded" part).
    pub fn hex(&self) -> String {
        to_hex(self.as_bytes())
    }

    fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Self {
        let mut bytes = [0u8; 64];
        bytes[..raw.len()].copy_from_slice(raw);
        Digest { algorithm, bytes }
    }

    /// Compare with an expected digest; the error carries both sides.
    pub fn verify(&self, expected: &Digest) -> Result<()> {
        if self == expected {
            Ok(())
        } else {
            Err(Error::DigestMismatch {
                expected: expected.to_string(),
                actual: self.to_string(),
            })
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(input: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidDigest {
            input: truncate_for_message(input),
            reason,
        };
        let (alg, encoded) = input
            .split_once(':')
            .ok_or_else(|| invalid("missing ':' between algorithm and hex".into()))?;
        if alg.is_empty() {
            return Err(invalid("empty algorithm".into()));
        }
        let algorithm = alg.parse::<Algorithm>().map_err(|_| {
            invalid(format!(
                "unsupported algorithm {alg:?} (expected sha256 or sha512)"
            ))
        })?;
        let want = algorithm.output_len() * 2;
        if encoded.len() != want {
            return Err(invalid(format!(
                "{} needs {want} hex characters, got {}",
                algorithm.name(),
                encoded.len()
            )));
        }
        let mut raw = [0u8; 64];
        for (i, pair) in encoded.as_bytes().chunks(2).enumerate() {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => raw[i] = (h << 4) | l,
                _ => {
                    let pos = alg.len() + 1 + i * 2 + usize::from(hi.is_some());
                    return Err(invalid(format!(
                        "character at offset {pos} is not lowercase hex"
                    )));
                }
            }
        }
        Ok(Digest::from_raw(algorithm, &raw[..algorithm.output_len()]))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 160;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// A streaming hasher: `update` any number of times, then `finish`.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_raw(Algorithm::Sha256, &h.finalize()),
            Hasher::Sha512(h) => Digest::from_raw(Algorithm::Sha512, &h.finalize()),
        }
    }
}

/// One-shot hash of a byte slice.
pub fn hash(algorithm: Algorithm, data: &[u8]) -> Digest {
    let mut h = Hasher::new(algorithm);
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn empty_input_matches_known_vector() {
        assert_eq!(hash(Algorithm::Sha256, b"").to_string(), EMPTY_SHA256);
        assert_eq!(
            hash(Algorithm::Sha512, b"abc").hex(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn streaming_equals_one_shot_at_every_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let whole = hash(alg, &data);
            for split in 0..data.len() {
                let mut h = Hasher::new(alg);
                h.update(&data[..split]);
                h.update(&data[split..]);
                assert_eq!(h.finish(), whole, "split at {split}");
            }
        }
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_input() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        let cases = [
            ("", "missing ':'"),
            (":abc", "empty algorithm"),
            ("md5:abc", "unsupported algorithm"),
            ("sha256:abc", "needs 64 hex characters, got 3"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "offset 7 is not lowercase hex",
            ),
        ];
        for (input, want) in cases {
            let err = input.parse::<Digest>().unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_DIGEST");
            assert!(err.to_string().contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn verify_reports_both_sides() {
        let a = hash(Algorithm::Sha256, b"a");
        let b = hash(Algorithm::Sha256, b"b");
        let err = a.verify(&b).unwrap_err();
        assert_eq!(err.code(), "ERR_DIGEST_MISMATCH");
        assert!(err.to_string().contains(&a.hex()) && err.to_string().contains(&b.hex()));
    }
}
