//! stevedore-core: the pure logic shared by the Node addon and the WebAssembly build.
//!
//! Nothing here knows about Node, the DOM or a particular filesystem: inputs are byte slices
//! and small traits, outputs are plain values and one [`Error`] enum whose [`Error::code`] is
//! the stable identifier the bindings expose to JavaScript.

pub mod crc64;
pub mod digest;
pub mod error;
pub mod layer;
pub mod overlay;
pub mod tar;
pub mod wire;
#[cfg(feature = "zstd")]
pub mod zstd_stream;

pub use digest::{Algorithm, Digest, Hasher};
pub use error::{Error, Result};
