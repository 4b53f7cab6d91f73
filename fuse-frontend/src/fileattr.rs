//! The file-flag ioctls, as the kernel passes them to a FUSE daemon (Linux 6.18).
//!
//! FS_IOC_GETFLAGS/SETFLAGS and FS_IOC_FSGETXATTR/FSSETXATTR never reach the daemon as the
//! caller's ioctl: the VFS handles them (`vfs_fileattr_get`/`vfs_fileattr_set`, also behind
//! the `file_getattr`/`file_setattr` syscalls) and FUSE's `fuse_fileattr_get/set` opens the
//! inode (FUSE_OPEN O_RDONLY or FUSE_OPENDIR, on regular files and directories only) and
//! sends its own FUSE_IOCTL with a fixed size, FUSE_IOCTL_UNRESTRICTED or not:
//! - the flags are an `unsigned int` (4 bytes), although the command number encodes a
//!   `long` (8): FS_IOC_GETFLAGS asks 4 bytes out, FS_IOC_SETFLAGS sends 4 in. A 32-bit
//!   caller's FS_IOC32_* arrive as the same 64-bit numbers (FUSE_IOCTL_COMPAT set). The
//!   width the command encodes (8) is accepted too, should a kernel send it;
//! - `struct fsxattr` is 28 bytes both ways;
//! - before a SETFLAGS or FSSETXATTR the kernel reads the old value with FSGETXATTR, and
//!   checks ownership (or CAP_FOWNER) and CAP_LINUX_IMMUTABLE for changes of i and a; the
//!   engine checks both again with what [`crate::caps`] finds for the request's pid.
//!
//! The flags mean what [`tuxfs_engine::fs::flags`] says; a flag tuxfs does not store is
//! EOPNOTSUPP (chattr then prints "Operation not supported", as on ext4 for flags it does
//! not know). fsxattr's extent-size hints and extent count are not kept: read as zero, and
//! setting the flags that enable them is EOPNOTSUPP.

use tuxfs_engine::fs::Caller;
use tuxfs_engine::fs::Filesystem;
use tuxfs_engine::fs::flags::{
    FS_APPEND_FL, FS_IMMUTABLE_FL, FS_NOATIME_FL, FS_NODUMP_FL, FS_PROJINHERIT_FL, FS_SYNC_FL,
    FlagsCaller, FlagsChange, OpenIntent,
};

use crate::caps;
use crate::errno;
use crate::ioctl::Answer;

/// `_IOR('f', 1, long)`.
pub const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
/// `_IOW('f', 2, long)`.
pub const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
/// `_IOR('X', 31, struct fsxattr)`.
pub const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
/// `_IOW('X', 32, struct fsxattr)`.
pub const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// Bytes of `struct fsxattr`: xflags, extsize, nextents, projid, cowextsize, 8 of padding.
const FSXATTR_BYTES: usize = 28;
/// Offset of `fsx_projid` in `struct fsxattr`.
const FSX_PROJID: usize = 12;

/// FS_XFLAG_* values and the FS_*_FL each stands for (the kernel's common set, which is
/// what fsxattr can express; DIRSYNC has no xflag and is kept by FSSETXATTR).
const XFLAGS: [(u32, u32); 6] = [
    (0x0000_0008, FS_IMMUTABLE_FL),
    (0x0000_0010, FS_APPEND_FL),
    (0x0000_0020, FS_SYNC_FL),
    (0x0000_0040, FS_NOATIME_FL),
    (0x0000_0080, FS_NODUMP_FL),
    (0x0000_0200, FS_PROJINHERIT_FL),
];

/// FS_IOC_GETFLAGS: the flags of `ino` as an int of `out_size` bytes (4, or 8).
pub fn get_flags(fs: &Filesystem, ino: u64, out_size: u32) -> Answer {
    let flags = fs.file_flags(ino).map_err(engine)?.flags;
    Ok((0, int_bytes(u64::from(flags), out_size as usize)?))
}

/// FS_IOC_SETFLAGS: every flag of `ino` from the int in `in_data` (4 or 8 bytes).
pub fn set_flags(fs: &Filesystem, who: Caller, ino: u64, in_data: &[u8]) -> Answer {
    // A flags word wider than 32 bits with high bits set names flags no one has.
    let flags = u32::try_from(int_value(in_data)?).map_err(|_| fuser::Errno::EOPNOTSUPP)?;
    let change = FlagsChange {
        flags,
        mask: u32::MAX,
        projid: None,
    };
    fs.set_file_flags(ino, change, privileges(who))
        .map_err(engine)?;
    Ok((0, Vec::new()))
}

/// FS_IOC_FSGETXATTR: a `struct fsxattr` with the xflags and project id of `ino`.
pub fn get_fsxattr(fs: &Filesystem, ino: u64, out_size: u32) -> Answer {
    if out_size as usize != FSXATTR_BYTES {
        return Err(fuser::Errno::EINVAL);
    }
    let f = fs.file_flags(ino).map_err(engine)?;
    Ok((0, fsxattr_bytes(to_xflags(f.flags), f.projid)))
}

/// FS_IOC_FSSETXATTR: the flags fsxattr can express (DIRSYNC is kept) and the project id.
pub fn set_fsxattr(fs: &Filesystem, who: Caller, ino: u64, in_data: &[u8]) -> Answer {
    let (xflags, projid) = fsxattr_fields(in_data)?;
    let change = FlagsChange {
        flags: from_xflags(xflags)?,
        mask: XFLAGS.iter().fold(0, |m, (_, fl)| m | fl),
        projid: Some(projid),
    };
    fs.set_file_flags(ino, change, privileges(who))
        .map_err(engine)?;
    Ok((0, Vec::new()))
}

/// Whether ioctl `cmd` with `in_data` would set immutable or append-only on `ino` where it
/// is not set yet. The kernel's page cache may then still hold pages written through a
/// descriptor opened before, which the flag would refuse at writeback: the adapter has the
/// kernel write them back first (see `Adapter::ioctl`). Any doubt (a bad argument, an
/// inode that is gone) is false: the change itself then reports it.
pub fn sets_guard(fs: &Filesystem, ino: u64, cmd: u32, in_data: &[u8]) -> bool {
    const GUARD: u32 = FS_IMMUTABLE_FL | FS_APPEND_FL;
    let new = match cmd {
        FS_IOC_SETFLAGS => int_value(in_data).map(|v| v as u32),
        FS_IOC_FSSETXATTR => fsxattr_fields(in_data).and_then(|(x, _)| from_xflags(x)),
        _ => return false,
    };
    match (new, fs.file_flags(ino)) {
        (Ok(new), Ok(old)) => new & GUARD & !old.flags != 0,
        _ => false,
    }
}

fn engine(e: tuxfs_engine::Error) -> fuser::Errno {
    errno::to_fuser(&e)
}

/// How an open(2) with `flags` uses the file, for the flags' open rules. O_TRUNC reaches
/// the daemon only with FUSE_ATOMIC_O_TRUNC (not asked for: the kernel truncates with a
/// setattr instead, which the flags refuse on their own).
pub fn open_intent(flags: i32) -> OpenIntent {
    OpenIntent {
        write: flags & libc::O_ACCMODE != libc::O_RDONLY,
        append: flags & libc::O_APPEND != 0,
        truncate: flags & libc::O_TRUNC != 0,
    }
}

/// What the engine needs to know of the caller for a flags change.
fn privileges(who: Caller) -> FlagsCaller {
    FlagsCaller {
        uid: who.uid,
        fowner: caps::caller_has(who.pid, who.uid, caps::CAP_FOWNER),
        linux_immutable: caps::caller_has(who.pid, who.uid, caps::CAP_LINUX_IMMUTABLE),
    }
}

// The ioctl arguments are the caller's values in its own memory: host byte order is the
// right one here (this is not an on-disk format).
#[allow(clippy::host_endian_bytes)]
fn int_bytes(value: u64, width: usize) -> Result<Vec<u8>, fuser::Errno> {
    match width {
        4 => Ok((value as u32).to_ne_bytes().to_vec()),
        8 => Ok(value.to_ne_bytes().to_vec()),
        _ => Err(fuser::Errno::EINVAL),
    }
}

/// A `struct fsxattr` with `xflags` and `projid` (extent hints and count zero).
#[allow(clippy::host_endian_bytes)]
fn fsxattr_bytes(xflags: u32, projid: u32) -> Vec<u8> {
    let mut out = vec![0u8; FSXATTR_BYTES];
    out[..4].copy_from_slice(&xflags.to_ne_bytes());
    out[FSX_PROJID..FSX_PROJID + 4].copy_from_slice(&projid.to_ne_bytes());
    out
}

/// The xflags and project id of a `struct fsxattr`; EINVAL when it is not 28 bytes.
#[allow(clippy::host_endian_bytes)]
fn fsxattr_fields(bytes: &[u8]) -> Result<(u32, u32), fuser::Errno> {
    if bytes.len() != FSXATTR_BYTES {
        return Err(fuser::Errno::EINVAL);
    }
    let word = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_ne_bytes(b)
    };
    Ok((word(0), word(FSX_PROJID)))
}

#[allow(clippy::host_endian_bytes)]
fn int_value(bytes: &[u8]) -> Result<u64, fuser::Errno> {
    match bytes.len() {
        4 => {
            let mut b = [0u8; 4];
            b.copy_from_slice(bytes);
            Ok(u64::from(u32::from_ne_bytes(b)))
        }
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            Ok(u64::from_ne_bytes(b))
        }
        _ => Err(fuser::Errno::EINVAL),
    }
}

/// FS_*_FL flags as FS_XFLAG_* (DIRSYNC has none and is not shown there).
fn to_xflags(flags: u32) -> u32 {
    XFLAGS
        .iter()
        .filter(|(_, fl)| flags & fl != 0)
        .fold(0, |x, (xf, _)| x | xf)
}

/// FS_XFLAG_* as FS_*_FL; EOPNOTSUPP for an xflag tuxfs does not store.
fn from_xflags(xflags: u32) -> Result<u32, fuser::Errno> {
    let known = XFLAGS.iter().fold(0, |m, (xf, _)| m | xf);
    if xflags & !known != 0 {
        return Err(fuser::Errno::EOPNOTSUPP);
    }
    Ok(XFLAGS
        .iter()
        .filter(|(xf, _)| xflags & xf != 0)
        .fold(0, |f, (_, fl)| f | fl))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `_IOC(dir, type, nr, size)` as the kernel computes it.
    const fn ioc(dir: u32, ty: u8, nr: u32, size: u32) -> u32 {
        (dir << 30) | (size << 16) | ((ty as u32) << 8) | nr
    }

    #[test]
    fn the_commands_are_the_kernels_numbers() {
        assert_eq!(FS_IOC_GETFLAGS, ioc(2, b'f', 1, 8));
        assert_eq!(FS_IOC_SETFLAGS, ioc(1, b'f', 2, 8));
        assert_eq!(FS_IOC_FSGETXATTR, ioc(2, b'X', 31, FSXATTR_BYTES as u32));
        assert_eq!(FS_IOC_FSSETXATTR, ioc(1, b'X', 32, FSXATTR_BYTES as u32));
    }

    #[test]
    fn xflags_map_both_ways_and_unknown_ones_are_eopnotsupp() {
        let all = FS_IMMUTABLE_FL
            | FS_APPEND_FL
            | FS_SYNC_FL
            | FS_NOATIME_FL
            | FS_NODUMP_FL
            | FS_PROJINHERIT_FL;
        assert_eq!(from_xflags(to_xflags(all)), Ok(all));
        assert_eq!(to_xflags(FS_IMMUTABLE_FL | FS_PROJINHERIT_FL), 0x208);
        // FS_XFLAG_EXTSIZE (0x800) and FS_XFLAG_DAX (0x8000) are not stored.
        assert_eq!(from_xflags(0x800), Err(fuser::Errno::EOPNOTSUPP));
        assert_eq!(from_xflags(0x8000), Err(fuser::Errno::EOPNOTSUPP));
    }

    #[test]
    // The caller's flags word is in host byte order.
    #[allow(clippy::host_endian_bytes)]
    fn the_flags_word_is_4_bytes_or_the_8_the_command_encodes() {
        assert_eq!(int_value(&0x10u32.to_ne_bytes()), Ok(0x10));
        assert_eq!(int_value(&0x10u64.to_ne_bytes()), Ok(0x10));
        assert_eq!(int_value(&[0; 3]), Err(fuser::Errno::EINVAL));
        assert_eq!(int_bytes(0x10, 4), Ok(0x10u32.to_ne_bytes().to_vec()));
        assert_eq!(int_bytes(0x10, 2), Err(fuser::Errno::EINVAL));
    }

    #[test]
    fn fsxattr_round_trips_and_other_sizes_are_einval() {
        let b = fsxattr_bytes(0x208, 42);
        assert_eq!(b.len(), FSXATTR_BYTES);
        assert_eq!(fsxattr_fields(&b), Ok((0x208, 42)));
        assert_eq!(fsxattr_fields(&b[..27]), Err(fuser::Errno::EINVAL));
    }
}
