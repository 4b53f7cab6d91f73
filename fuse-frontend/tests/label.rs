//! Story: the label of a mounted filesystem is read and changed through the mount with
//! FS_IOC_GETFSLABEL / FS_IOC_SETFSLABEL (what `btrfs filesystem label MNT` and similar
//! tools use), on the mountpoint directory and on a file; the change is durable (it is
//! there after a remount, fsck clean); a label over 64 bytes is EINVAL and changes nothing.

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;

use common::Mount;

const GETFSLABEL: libc::c_ulong = 0x8100_9431;
const SETFSLABEL: libc::c_ulong = 0x4100_9432;

fn get_label(path: &Path) -> String {
    let f = std::fs::File::open(path).expect("open");
    let mut buf = [0u8; 256];
    // SAFETY: the ioctl writes at most 256 bytes into the buffer we own.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), GETFSLABEL, buf.as_mut_ptr()) };
    assert_eq!(rc, 0, "GETFSLABEL: {}", std::io::Error::last_os_error());
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).expect("utf-8")
}

fn set_label(path: &Path, label: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    let mut buf = [0u8; 256];
    buf[..label.len()].copy_from_slice(label.as_bytes());
    // SAFETY: the ioctl reads 256 bytes from the buffer we own.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), SETFSLABEL, buf.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn label_ioctls_read_and_change_the_superblock_label() {
    let Some(mut m) = Mount::new("label", 64 << 20) else {
        return;
    };
    std::fs::write(m.path("file"), b"x").expect("write");
    set_label(&m.dir, "data-disk").expect("SETFSLABEL");
    assert_eq!(get_label(&m.dir), "data-disk");
    assert_eq!(get_label(&m.path("file")), "data-disk", "on a file too");
    let err = set_label(&m.dir, &"y".repeat(65)).expect_err("too long");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    assert_eq!(get_label(&m.dir), "data-disk", "unchanged");
    m.remount();
    assert_eq!(get_label(&m.dir), "data-disk", "durable");
    m.finish();
}
