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
    /// A POSIX operation failed for a reason the caller must see as an errno.
    Posix(Errno),
}

/// The POSIX failures the filesystem API reports. The FUSE adapter maps each to its libc
/// errno in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Errno {
    /// ENOENT: no such file or directory.
    NoEntry,
    /// EEXIST: the name exists.
    Exists,
    /// ENOTDIR: a directory was expected.
    NotDir,
    /// EISDIR: not allowed on a directory.
    IsDir,
    /// ENOTEMPTY: directory not empty.
    NotEmpty,
    /// ENAMETOOLONG: name longer than 255 bytes.
    NameTooLong,
    /// ENOSPC: no space left.
    NoSpace,
    /// EINVAL: invalid argument.
    Invalid,
    /// EROFS: read-only filesystem (mounted read-only, or turned read-only by an I/O error).
    ReadOnly,
    /// EMLINK: too many links.
    TooManyLinks,
    /// ENODATA: no such extended attribute.
    NoData,
    /// ERANGE: buffer too small.
    Range,
    /// EIO: I/O error or damaged data.
    Io,
    /// EOPNOTSUPP: operation not supported.
    NotSupported,
    /// EPERM: operation not permitted.
    Perm,
    /// EFBIG: file too large.
    FileTooBig,
    /// EBADF: bad file handle.
    BadHandle,
    /// E2BIG: an extended attribute value is too large.
    TooBig,
    /// EXDEV: not on this filesystem.
    CrossDevice,
    /// EACCES: permission denied (a default ACL on a non-directory).
    Access,
    /// ESTALE: a file handle names an inode that was freed or reused (engine::fs::export).
    Stale,
    /// ENODEV: fallocate on a file that is neither regular nor a directory.
    NoDevice,
    /// ENXIO: SEEK_DATA / SEEK_HOLE at or past the end of the file (or no data after it).
    NoSuchAddress,
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Self {
        Error::Posix(e)
    }
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

    /// The errno a caller of the POSIX API sees for this error: damage and I/O failures are
    /// EIO, a device that failed earlier makes the filesystem read-only.
    pub fn errno(&self) -> Errno {
        match self {
            Error::Posix(e) => *e,
            Error::DeviceFailed { .. } => Errno::ReadOnly,
            Error::Invalid { .. } => Errno::Invalid,
            Error::Unsupported { .. } => Errno::NotSupported,
            Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::ChecksumMismatch { .. }
            | Error::NotTuxfs { .. } => Errno::Io,
        }
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
            Error::Posix(e) => write!(f, "{e:?}"),
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
