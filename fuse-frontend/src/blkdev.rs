//! The block device a `fuseblk` mount names, so that the kernel waits for us at unmount.
//!
//! For a plain `fuse` mount the kernel does not send DESTROY at unmount: `umount` returns at
//! once while the daemon is still committing. For `fuseblk` it sends DESTROY and waits for
//! the reply (`fc->destroy` is set), so `umount` returns only once the daemon has committed,
//! flushed and released the image. `fuseblk` needs a block device as the mount source:
//! - an image that is a block device is named directly;
//! - an image that is a regular file gets a loop device attached to it
//!   (`LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE`) with `LO_FLAGS_AUTOCLEAR`, so it detaches by
//!   itself when the kernel releases it after the unmount.
//!
//! The device is only the token the kernel holds: the daemon never does I/O through it and
//! keeps using the image file. Attaching needs CAP_SYS_ADMIN and the loop driver; without them
//! the caller mounts plain `fuse` instead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// `ioctl` numbers from `<linux/loop.h>`.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// `lo_flags` bits.
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Free loop devices asked for before giving up: another process may take the free device
/// between `LOOP_CTL_GET_FREE` and `LOOP_CONFIGURE` (EBUSY); then we ask again.
const ATTACH_ATTEMPTS_MAX: usize = 8;

/// `struct loop_info64`.
#[repr(C)]
#[allow(dead_code)] // Read by the kernel, never by us.
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
#[allow(dead_code)] // Read by the kernel, never by us.
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

// The kernel's layout: a wrong size would make LOOP_CONFIGURE read garbage.
const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// The block device to mount `fuseblk` on. Holding it keeps an attached loop device alive
/// until the kernel has opened it for the mount; drop it once the mount is up (or failed),
/// and the loop device then lives exactly as long as the mount.
#[derive(Debug)]
pub struct BlockToken {
    path: PathBuf,
    /// The open loop device (None when the image is itself a block device).
    _loop_file: Option<File>,
}

impl BlockToken {
    /// The device path: the mount source.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A block device standing for `image`: the image itself if it is one, else a new
/// auto-clearing loop device on it (read-only when `read_only`).
pub fn token_for(image: &Path, read_only: bool) -> std::io::Result<BlockToken> {
    let meta = std::fs::metadata(image)?;
    if meta.file_type().is_block_device() {
        return Ok(BlockToken {
            path: image.to_path_buf(),
            _loop_file: None,
        });
    }
    attach_loop(image, read_only)
}

fn attach_loop(image: &Path, read_only: bool) -> std::io::Result<BlockToken> {
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(image)?;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let mut last = std::io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..ATTACH_ATTEMPTS_MAX {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)?;
        match configure(&device, &backing, read_only) {
            Ok(()) => {
                return Ok(BlockToken {
                    path,
                    _loop_file: Some(device),
                });
            }
            // Taken by someone else between the two calls: ask for another.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn configure(device: &File, backing: &File, read_only: bool) -> std::io::Result<()> {
    let fd = u32::try_from(backing.as_raw_fd())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    let mut flags = LO_FLAGS_AUTOCLEAR;
    if read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    // SAFETY: every field of both structs is an integer or an integer array, for which all
    // zero bytes is a valid value.
    let mut config: LoopConfig = unsafe { std::mem::zeroed() };
    config.fd = fd;
    config.info.lo_flags = flags;
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config` is (layout checked
    // above), and the descriptors it names are open for the duration of the call.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
