//! The ioctls the mount answers. The kernel passes an ioctl on a FUSE regular file or
//! directory to the daemon (FUSE_IOCTL, "restricted": the kernel copies in and out the
//! sizes the command number encodes); generic ones it handles itself never get here.
//!
//! - `FITRIM` (`fstrim MNT`, on the mountpoint directory): a `struct fstrim_range { u64
//!   start, len, minlen }` in and out; the engine discards the free runs of at least
//!   `minlen` bytes in `start..start+len` ([`tuxfs_engine::fs::Filesystem::trim`]) and the
//!   answer's `len` is the number of bytes discarded. Only root may (the kernel's rule is
//!   CAP_SYS_ADMIN; the daemon sees only the caller's uid).
//!
//! Anything else gets ENOTTY, which is what tools like lsattr and fstrim expect for "not
//! supported here".

use tuxfs_engine::fs::Filesystem;

use crate::errno;

/// `_IOWR('X', 121, struct fstrim_range)`.
pub const FITRIM: u32 = 0xc018_5879;
/// Size of `struct fstrim_range`.
const FSTRIM_RANGE_BYTES: usize = 24;

/// What an ioctl answers: the result value and the bytes copied out to the caller.
pub type Answer = Result<(i32, Vec<u8>), fuser::Errno>;

/// Runs ioctl `cmd` for a caller with user id `uid`.
pub fn dispatch(fs: &Filesystem, uid: u32, cmd: u32, in_data: &[u8], out_size: u32) -> Answer {
    match cmd {
        FITRIM => fitrim(fs, uid, in_data, out_size),
        _ => Err(fuser::Errno::from_i32(libc::ENOTTY)),
    }
}

// The ioctl argument is the caller's struct in its own memory, so host byte order is the
// right one here (this is not an on-disk format).
#[allow(clippy::host_endian_bytes)]
fn fitrim(fs: &Filesystem, uid: u32, in_data: &[u8], out_size: u32) -> Answer {
    if uid != 0 {
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
    fn fitrim_is_the_kernels_number() {
        // _IOWR: direction 3 in bits 30-31, size 24 in bits 16-29, type 'X', number 121.
        let expected = (3u32 << 30) | (24 << 16) | (u32::from(b'X') << 8) | 121;
        assert_eq!(FITRIM, expected);
    }
}
