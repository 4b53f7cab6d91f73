//! The ioctls the mount answers. The kernel passes an ioctl on a FUSE regular file or
//! directory to the daemon (FUSE_IOCTL, "restricted": the kernel copies in and out the
//! sizes the command number encodes); generic ones it handles itself never get here.
//!
//! - `FITRIM` (`fstrim MNT`, on the mountpoint directory): a `struct fstrim_range { u64
//!   start, len, minlen }` in and out; the engine discards the free runs of at least
//!   `minlen` bytes in `start..start+len` ([`tuxfs_engine::fs::Filesystem::trim`]) and the
//!   answer's `len` is the number of bytes discarded. Only a caller with CAP_SYS_ADMIN may,
//!   as the kernel rules ([`crate::caps::caller_has`]).
//!
//! - `FS_IOC_GETFSLABEL` / `FS_IOC_SETFSLABEL` (`char[256]` out / in, NUL-terminated): the
//!   superblock's label ([`Filesystem::label`], [`Filesystem::set_label`], durable when the
//!   call returns). Setting needs CAP_SYS_ADMIN, as the kernel rules; a label
//!   over 64 bytes, not UTF-8 or not NUL-terminated is EINVAL.
//!
//! - `FS_IOC_GETFLAGS`/`SETFLAGS`, `FS_IOC_FSGETXATTR`/`FSSETXATTR` (chattr, lsattr):
//!   [`crate::fileattr`].
//!
//! Anything else gets ENOTTY, which is what tools like lsattr and fstrim expect for "not
//! supported here".

use tuxfs_engine::fs::{Caller, Filesystem};

use crate::errno;
use crate::fileattr;

/// `_IOWR('X', 121, struct fstrim_range)`.
pub const FITRIM: u32 = 0xc018_5879;
/// Size of `struct fstrim_range`.
const FSTRIM_RANGE_BYTES: usize = 24;

/// `_IOR(0x94, 49, char[FSLABEL_MAX])`.
pub const FS_IOC_GETFSLABEL: u32 = 0x8100_9431;
/// `_IOW(0x94, 50, char[FSLABEL_MAX])`.
pub const FS_IOC_SETFSLABEL: u32 = 0x4100_9432;
/// The label buffer of the label ioctls (FSLABEL_MAX).
const FSLABEL_BYTES: usize = 256;

/// What an ioctl answers: the result value and the bytes copied out to the caller.
pub type Answer = Result<(i32, Vec<u8>), fuser::Errno>;

/// Whether [`dispatch`] of `cmd` depends on who asks (its uid and capabilities): the ioctls
/// that change something. The others may be given the ids the request carries as they are.
pub fn needs_caller(cmd: u32) -> bool {
    matches!(
        cmd,
        fileattr::FS_IOC_SETFLAGS | fileattr::FS_IOC_FSSETXATTR | FITRIM | FS_IOC_SETFSLABEL
    )
}

/// Runs ioctl `cmd` on inode `ino` for `who`.
pub fn dispatch(
    fs: &Filesystem,
    who: Caller,
    ino: u64,
    cmd: u32,
    in_data: &[u8],
    out_size: u32,
) -> Answer {
    let admin = || crate::caps::caller_has(who.pid, who.uid, crate::caps::CAP_SYS_ADMIN);
    match cmd {
        fileattr::FS_IOC_GETFLAGS => fileattr::get_flags(fs, ino, out_size),
        fileattr::FS_IOC_SETFLAGS => fileattr::set_flags(fs, who, ino, in_data),
        fileattr::FS_IOC_FSGETXATTR => fileattr::get_fsxattr(fs, ino, out_size),
        fileattr::FS_IOC_FSSETXATTR => fileattr::set_fsxattr(fs, who, ino, in_data),
        FITRIM => fitrim(fs, admin(), in_data, out_size),
        FS_IOC_GETFSLABEL => get_label(fs, out_size),
        FS_IOC_SETFSLABEL => set_label(fs, admin(), in_data),
        _ => Err(fuser::Errno::from_i32(libc::ENOTTY)),
    }
}

fn get_label(fs: &Filesystem, out_size: u32) -> Answer {
    if out_size as usize != FSLABEL_BYTES {
        return Err(fuser::Errno::EINVAL);
    }
    let mut out = fs.label().into_bytes();
    out.resize(FSLABEL_BYTES, 0);
    Ok((0, out))
}

fn set_label(fs: &Filesystem, admin: bool, in_data: &[u8]) -> Answer {
    if !admin {
        return Err(fuser::Errno::EPERM);
    }
    if in_data.len() != FSLABEL_BYTES {
        return Err(fuser::Errno::EINVAL);
    }
    let Some(end) = in_data.iter().position(|&b| b == 0) else {
        return Err(fuser::Errno::EINVAL);
    };
    let label = std::str::from_utf8(&in_data[..end]).map_err(|_| fuser::Errno::EINVAL)?;
    fs.set_label(label).map_err(|e| errno::to_fuser(&e))?;
    Ok((0, Vec::new()))
}

// The ioctl argument is the caller's struct in its own memory, so host byte order is the
// right one here (this is not an on-disk format).
#[allow(clippy::host_endian_bytes)]
fn fitrim(fs: &Filesystem, admin: bool, in_data: &[u8], out_size: u32) -> Answer {
    if !admin {
        return Err(fuser::Errno::EPERM);
    }
    if in_data.len() != FSTRIM_RANGE_BYTES || out_size as usize != FSTRIM_RANGE_BYTES {
        return Err(fuser::Errno::EINVAL);
    }
    let field = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&in_data[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(b)
    };
    let (start, len, minlen) = (field(0), field(1), field(2));
    let trimmed = fs
        .trim(start, len, minlen)
        .map_err(|e| errno::to_fuser(&e))?;
    let mut out = Vec::with_capacity(FSTRIM_RANGE_BYTES);
    out.extend_from_slice(&start.to_ne_bytes());
    out.extend_from_slice(&trimmed.to_ne_bytes());
    out.extend_from_slice(&minlen.to_ne_bytes());
    Ok((0, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_ioctls_are_the_kernels_numbers() {
        assert_eq!(
            FS_IOC_GETFSLABEL,
            (2u32 << 30) | (256 << 16) | (0x94 << 8) | 49
        );
        assert_eq!(
            FS_IOC_SETFSLABEL,
            (1u32 << 30) | (256 << 16) | (0x94 << 8) | 50
        );
    }

    #[test]
    fn only_ioctls_that_change_something_need_the_caller() {
        for cmd in [
            fileattr::FS_IOC_SETFLAGS,
            fileattr::FS_IOC_FSSETXATTR,
            FITRIM,
            FS_IOC_SETFSLABEL,
        ] {
            assert!(needs_caller(cmd), "{cmd:#x}");
        }
        let tcgets = 0x5401;
        for cmd in [
            fileattr::FS_IOC_GETFLAGS,
            fileattr::FS_IOC_FSGETXATTR,
            FS_IOC_GETFSLABEL,
            tcgets,
        ] {
            assert!(!needs_caller(cmd), "{cmd:#x}");
        }
    }

    #[test]
    fn fitrim_is_the_kernels_number() {
        // _IOWR: direction 3 in bits 30-31, size 24 in bits 16-29, type 'X', number 121.
        let expected = (3u32 << 30) | (24 << 16) | (u32::from(b'X') << 8) | 121;
        assert_eq!(FITRIM, expected);
    }
}
