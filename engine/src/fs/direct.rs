//! Direct I/O (`O_DIRECT`) and the setuid/setgid kill of unprivileged writes: the rules the
//! kernel leaves to a FUSE filesystem, given as ext4 gives them (docs/SEMANTICS.md,
//! "Direct I/O").
//!
//! - **Alignment.** ext4 refuses an `O_DIRECT` read or write whose file offset or length
//!   is not a multiple of the device's logical block size with EINVAL; on the machines
//!   tuxfs runs on (virtio and loop devices) that is [`DIRECT_IO_ALIGN_BYTES`], which is
//!   also what ext4 reports in `statx(STATX_DIOALIGN)` there. A read that starts at or past
//!   the end of the file returns 0 bytes before any check, as on ext4. The kernel does not
//!   pass the user buffer's address to a FUSE daemon, so its alignment is not checked here
//!   (the kernel accepts any, and FUSE reports no `STATX_DIOALIGN`).
//! - **Coherence with the daemon's cache.** A direct read is served like any read: dirty
//!   and in-flight pages first, then engine::cache, then the device, so it sees data
//!   written (buffered or direct) and not yet committed; a direct write is a write, which
//!   drops the block's clean copy from engine::cache before it returns. The kernel's own
//!   page cache is kept coherent by the kernel (it writes back and invalidates the range
//!   around each direct request).
//! - **Setuid/setgid kill.** With `FUSE_HANDLE_KILLPRIV_V2` the kernel no longer clears
//!   S_ISUID/S_ISGID itself when a caller without CAP_FSETID writes or truncates a file,
//!   or when anyone changes its owner: the request carries a "kill" flag and
//!   [`Filesystem::kill_suidgid`] applies the kernel's rule. (The kernel still removes
//!   `security.capability` itself.)

use super::{Attr, Filesystem, SetAttr};
use crate::{Error, Result};

/// File offsets and lengths of `O_DIRECT` reads and writes must be multiples of this: the
/// logical block size of the devices ext4 runs on here (512-byte sectors).
pub const DIRECT_IO_ALIGN_BYTES: u64 = 512;

/// EINVAL, naming the misaligned request, when `offset` or `len` is not a multiple of
/// [`DIRECT_IO_ALIGN_BYTES`].
fn check_aligned(ino: u64, offset: u64, len: u64) -> Result<()> {
    if offset.is_multiple_of(DIRECT_IO_ALIGN_BYTES) && len.is_multiple_of(DIRECT_IO_ALIGN_BYTES) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "O_DIRECT request on inode {ino} at offset {offset}, {len} bytes: not a multiple of \
         {DIRECT_IO_ALIGN_BYTES}"
    )))
}

/// The mode left after a kill: S_ISUID goes; S_ISGID goes when the group may execute
/// (without group execute it marks mandatory locking, which the kernel leaves alone).
pub fn killed_mode(mode: u32) -> u32 {
    let mut out = mode & !0o4000;
    if mode & 0o010 != 0 {
        out &= !0o2000;
    }
    out
}

impl Filesystem {
    /// An `O_DIRECT` read: 0 bytes at or past the end of the file, EINVAL when `offset` or
    /// `size` is misaligned, otherwise [`Filesystem::read`].
    pub fn read_direct(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let file_size = self.getattr(ino)?.size;
        if offset >= file_size {
            return Ok(Vec::new());
        }
        check_aligned(ino, offset, u64::from(size))?;
        self.read(ino, offset, size)
    }

    /// An `O_DIRECT` write: EINVAL when its offset (the end of the file when `append`) or
    /// length is misaligned, checked under the same lock as the write itself; otherwise
    /// [`Filesystem::write`].
    pub fn write_direct(&self, ino: u64, offset: u64, data: &[u8], append: bool) -> Result<u32> {
        // Aligned, so every block is whole: built before the lock as in `write`.
        let prepared = crate::data::PreparedCell::new(
            (!append).then(|| crate::data::prepare(self.block_size, offset, data)),
        );
        self.change(|st| {
            let at = if append {
                crate::inode::get(st, ino)?.size
            } else {
                offset
            };
            check_aligned(ino, at, data.len() as u64)?;
            super::posix::write_prepared(st, ino, offset, data, append, prepared.take())
        })
    }

    /// Clears S_ISUID, and S_ISGID when the group may execute ([`killed_mode`]), as the
    /// kernel does for an unprivileged write or truncate and for a change of owner. Returns
    /// the new attributes, or `None` when neither bit was to go (nothing changes then, not
    /// even ctime).
    pub fn kill_suidgid(&self, ino: u64) -> Result<Option<Attr>> {
        self.change(|st| {
            let mode = crate::inode::get(st, ino)?.mode;
            let killed = killed_mode(mode);
            if killed == mode {
                return Ok(None);
            }
            let set = SetAttr {
                mode: Some(killed & 0o7777),
                ..SetAttr::default()
            };
            super::posix::setattr(st, ino, &set).map(Some)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_takes_setuid_always_and_setgid_only_with_group_execute() {
        assert_eq!(killed_mode(0o104755), 0o100755);
        assert_eq!(killed_mode(0o106755), 0o100755);
        assert_eq!(killed_mode(0o102745), 0o102745, "setgid without g+x stays");
        assert_eq!(killed_mode(0o106745), 0o102745);
        assert_eq!(killed_mode(0o100644), 0o100644);
    }

    #[test]
    fn alignment_is_checked_on_offset_and_length() {
        assert!(check_aligned(1, 0, 4096).is_ok());
        assert!(check_aligned(1, 512, 512).is_ok());
        for (offset, len) in [(0, 100), (1, 4096), (100, 4096), (4096, 1000)] {
            let e = check_aligned(7, offset, len).unwrap_err();
            assert_eq!(e.errno(), crate::Errno::Invalid);
            assert!(e.to_string().contains("inode 7"), "{e}");
        }
    }
}
