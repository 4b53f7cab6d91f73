//! The one place where engine errors become errno values.
//!
//! The engine reports POSIX failures as [`tuxfs_engine::Errno`] and every other failure as a
//! richer [`tuxfs_engine::Error`] whose [`Error::errno`] already decides what a caller sees
//! (damage and I/O failures are EIO, a failed device makes the filesystem read-only). This
//! module only turns those into the numbers `libc` and the kernel use; no other module of the
//! frontend may spell an errno for an engine failure.

use tuxfs_engine::{Errno, Error};

/// The libc errno value for an engine errno.
pub fn to_libc(e: Errno) -> i32 {
    match e {
        Errno::NoEntry => libc::ENOENT,
        Errno::Exists => libc::EEXIST,
        Errno::NotDir => libc::ENOTDIR,
        Errno::IsDir => libc::EISDIR,
        Errno::NotEmpty => libc::ENOTEMPTY,
        Errno::NameTooLong => libc::ENAMETOOLONG,
        Errno::NoSpace => libc::ENOSPC,
        Errno::Invalid => libc::EINVAL,
        Errno::ReadOnly => libc::EROFS,
        Errno::TooManyLinks => libc::EMLINK,
        Errno::NoData => libc::ENODATA,
        Errno::Range => libc::ERANGE,
        Errno::Io => libc::EIO,
        Errno::NotSupported => libc::EOPNOTSUPP,
        Errno::Perm => libc::EPERM,
        Errno::FileTooBig => libc::EFBIG,
        Errno::BadHandle => libc::EBADF,
        Errno::TooBig => libc::E2BIG,
        Errno::CrossDevice => libc::EXDEV,
        Errno::Access => libc::EACCES,
        Errno::Stale => libc::ESTALE,
        Errno::NoDevice => libc::ENODEV,
        Errno::NoSuchAddress => libc::ENXIO,
    }
}

/// The libc errno value a caller sees for an engine error.
pub fn error_to_libc(err: &Error) -> i32 {
    to_libc(err.errno())
}

/// The errno to send to the kernel for an engine error.
pub fn to_fuser(err: &Error) -> fuser::Errno {
    fuser::Errno::from_i32(error_to_libc(err))
}

/// A one-line description for messages: the engine's own text, and for POSIX failures the
/// system's wording of the errno (`NotSupported` alone means little to a user).
pub fn describe(err: &Error) -> String {
    match err {
        Error::Posix(e) => {
            let os = std::io::Error::from_raw_os_error(to_libc(*e));
            format!("{os}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, so that a new one added to the engine shows up here as a failing count.
    const ALL: [(Errno, i32); 22] = [
        (Errno::NoEntry, libc::ENOENT),
        (Errno::Exists, libc::EEXIST),
        (Errno::NotDir, libc::ENOTDIR),
        (Errno::IsDir, libc::EISDIR),
        (Errno::NotEmpty, libc::ENOTEMPTY),
        (Errno::NameTooLong, libc::ENAMETOOLONG),
        (Errno::NoSpace, libc::ENOSPC),
        (Errno::Invalid, libc::EINVAL),
        (Errno::ReadOnly, libc::EROFS),
        (Errno::TooManyLinks, libc::EMLINK),
        (Errno::NoData, libc::ENODATA),
        (Errno::Range, libc::ERANGE),
        (Errno::Io, libc::EIO),
        (Errno::NotSupported, libc::EOPNOTSUPP),
        (Errno::Perm, libc::EPERM),
        (Errno::FileTooBig, libc::EFBIG),
        (Errno::BadHandle, libc::EBADF),
        (Errno::TooBig, libc::E2BIG),
        (Errno::CrossDevice, libc::EXDEV),
        (Errno::Stale, libc::ESTALE),
        (Errno::NoDevice, libc::ENODEV),
        (Errno::NoSuchAddress, libc::ENXIO),
    ];

    #[test]
    fn every_errno_maps_to_its_libc_value() {
        for (e, want) in ALL {
            assert_eq!(to_libc(e), want, "{e:?}");
            assert_eq!(to_fuser(&Error::Posix(e)).code(), want, "{e:?}");
        }
    }

    #[test]
    fn libc_values_are_distinct() {
        let mut seen: Vec<i32> = ALL.iter().map(|(e, _)| to_libc(*e)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), ALL.len());
    }

    #[test]
    fn non_posix_errors_follow_the_engine_rules() {
        let io = Error::io("reading", std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(error_to_libc(&io), libc::EIO);
        assert_eq!(error_to_libc(&Error::corrupt(7, "bad magic")), libc::EIO);
        let sum = Error::ChecksumMismatch {
            block: 3,
            expected: 1,
            got: 2,
        };
        assert_eq!(error_to_libc(&sum), libc::EIO);
        let failed = Error::DeviceFailed {
            what: "write".into(),
        };
        assert_eq!(error_to_libc(&failed), libc::EROFS);
        assert_eq!(error_to_libc(&Error::invalid("x")), libc::EINVAL);
        let unsupported = Error::Unsupported { what: "x".into() };
        assert_eq!(error_to_libc(&unsupported), libc::EOPNOTSUPP);
    }

    #[test]
    fn descriptions_use_system_wording_for_posix_errors() {
        let text = describe(&Error::Posix(Errno::NotSupported));
        assert!(text.contains("not supported"), "{text}");
        assert_eq!(describe(&Error::corrupt(9, "bad")), "block 9: bad");
    }
}
