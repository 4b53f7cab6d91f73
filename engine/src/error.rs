//! The engine's one error type.

use std::fmt;

/// Every failure the engine reports. Corrupt input always names the block and what was wrong.
#[derive(Debug)]
pub enum Error {
    /// The operating system refused an I/O; `context` says what we were doing.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A block's bytes do not decode: `block` is its number (in filesystem blocks),
    /// `what` says which check failed.
    Corrupt { block: u64, what: String },
    /// A checksum did not match.
    ChecksumMismatch { block: u64, expected: u32, got: u32 },
    /// The image is not a tuxfs filesystem at all (no superblock magic in either slot).
    NotTuxfs { what: String },
    /// The image needs a feature this build does not implement.
    Unsupported { what: String },
    /// A request was malformed (bad geometry, out-of-range block, misaligned buffer).
    Invalid { what: String },
    /// A device that failed a write or flush refuses everything after it (fail-stop).
    DeviceFailed { what: String },
}

/// Shorthand used across the engine.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an OS error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A decoding failure at `block`.
    pub fn corrupt(block: u64, what: impl Into<String>) -> Self {
        Error::Corrupt {
            block,
            what: what.into(),
        }
    }

    /// A bad request.
    pub fn invalid(what: impl Into<String>) -> Self {
        Error::Invalid { what: what.into() }
    }

    /// The block this error is about, when it is about one.
    pub fn block(&self) -> Option<u64> {
        match self {
            Error::Corrupt { block, .. } | Error::ChecksumMismatch { block, .. } => Some(*block),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "I/O error while {context}: {source}"),
            Error::Corrupt { block, what } => write!(f, "block {block}: {what}"),
            Error::ChecksumMismatch {
                block,
                expected,
                got,
            } => write!(
                f,
                "block {block}: checksum mismatch (stored {expected:#010x}, computed {got:#010x})"
            ),
            Error::NotTuxfs { what } => write!(f, "not a tuxfs filesystem: {what}"),
            Error::Unsupported { what } => write!(f, "unsupported: {what}"),
            Error::Invalid { what } => write!(f, "invalid request: {what}"),
            Error::DeviceFailed { what } => {
                write!(f, "device failed earlier, refusing I/O: {what}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
