//! The one error type of the core. Each variant carries what was expected and what was found,
//! so a binding can print a useful message without more context.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A digest string did not follow `algorithm:hex` grammar.
    InvalidDigest { input: String, reason: String },
    /// An algorithm name we do not implement.
    UnsupportedAlgorithm { name: String },
    /// Content hashed to something other than what was expected.
    DigestMismatch { expected: String, actual: String },
}

impl Error {
    /// Stable, machine-readable code; bindings attach it to the JS `Error` as `err.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidDigest { .. } => "ERR_INVALID_DIGEST",
            Error::UnsupportedAlgorithm { .. } => "ERR_UNSUPPORTED_ALGORITHM",
            Error::DigestMismatch { .. } => "ERR_DIGEST_MISMATCH",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidDigest { input, reason } => {
                write!(f, "invalid digest {input:?}: {reason}")
            }
            Error::UnsupportedAlgorithm { name } => {
                write!(f, "unsupported digest algorithm {name:?} (expected sha256 or sha512)")
            }
            Error::DigestMismatch { expected, actual } => {
                write!(f, "digest mismatch: expected {expected}, got {actual}")
            }
        }
    }
}

impl std::error::Error for Error {}
