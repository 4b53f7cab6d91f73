//! The image lock: one exclusive, non-blocking `flock` on the image file, taken through a
//! descriptor of its own by every process that writes the image outside a mount's control.
//! `tuxfs-mount` holds it for as long as it serves the image, and `fsck.tuxfs -p`/`-y` for
//! the whole repair, so neither can write under the other. `fsck.tuxfs -n` only probes it
//! ([`image_in_use`]) to warn that what it reads may be stale.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held image lock; dropping it (closing the descriptor) releases it. Across `fork` the
/// child shares the open file description, so the lock stays held while either lives.
#[derive(Debug)]
pub struct ImageLock {
    file: File,
}

impl ImageLock {
    /// The locked file: the lock lasts as long as it (or a descriptor duplicated from it)
    /// stays open.
    pub fn into_file(self) -> File {
        self.file
    }
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock: the image is mounted or being repaired.
    InUse,
    /// The image could not be opened or locked.
    Io(io::Error),
}

/// Takes the exclusive lock on `image` without waiting.
pub fn lock_image(image: &Path) -> Result<ImageLock, LockError> {
    let file = File::open(image).map_err(LockError::Io)?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            LockError::InUse
        } else {
            LockError::Io(err)
        });
    }
    Ok(ImageLock { file })
}

/// True when another process holds the image lock. The probe takes and at once releases
/// the lock, so it never blocks and leaves nothing held.
pub fn image_in_use(image: &Path) -> io::Result<bool> {
    match lock_image(image) {
        Ok(lock) => {
            drop(lock);
            Ok(false)
        }
        Err(LockError::InUse) => Ok(true),
        Err(LockError::Io(e)) => Err(e),
    }
}

/// The mountpoints of FUSE mounts in this process's mount namespace whose source is
/// `image`: a plain `fuse` mount names the canonical image path (unless `fsname=` says
/// otherwise), a `fuseblk` mount the block device, which is the image itself or a loop
/// device backed by it. Empty when none is found or /proc/self/mountinfo cannot be read.
pub fn mounts_of(image: &Path) -> Vec<PathBuf> {
    let Ok(image) = image.canonicalize() else {
        return Vec::new();
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER"
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let source = right.next()?;
            (fstype.starts_with("fuse") && source_is(&unescape(source), &image))
                .then(|| PathBuf::from(unescape(mountpoint)))
        })
        .collect()
}

/// True when a mount `source` is `image`, or a loop device whose backing file is `image`.
fn source_is(source: &str, image: &Path) -> bool {
    if Path::new(source) == image {
        return true;
    }
    let Some(name) = source
        .strip_prefix("/dev/")
        .filter(|n| n.starts_with("loop"))
    else {
        return false;
    };
    let backing = format!("/sys/block/{name}/loop/backing_file");
    std::fs::read_to_string(backing).is_ok_and(|b| {
        Path::new(b.trim_end_matches('\n'))
            .canonicalize()
            .ok()
            .as_deref()
            == Some(image)
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')));
        match octal {
            Some(v) if v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_the_probe_sees_the_first() {
        let dir = tempdir();
        let image = dir.join("img");
        std::fs::write(&image, b"x").expect("write");
        assert!(!image_in_use(&image).expect("probe"));
        let first = lock_image(&image).expect("first lock");
        assert!(matches!(lock_image(&image), Err(LockError::InUse)));
        assert!(image_in_use(&image).expect("probe"));
        drop(first);
        assert!(!image_in_use(&image).expect("probe"));
        lock_image(&image).expect("lock after release");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_missing_image_is_an_io_error() {
        assert!(matches!(
            lock_image(Path::new("/nonexistent/tuxfs.img")),
            Err(LockError::Io(_))
        ));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape(r"/bad\9"), r"/bad\9");
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tuxfs-imagelock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
