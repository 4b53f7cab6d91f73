//! The kernel's writeback limit for the mount's page cache.
//!
//! The kernel gives every FUSE mount a backing device (`/sys/class/bdi/MAJ:MIN`, with
//! `-fuseblk` appended for a `fuseblk` mount) whose share of the machine's dirty-page
//! budget is capped at 1% with a strict limit (fs/fuse/inode.c, `bdi_set_max_ratio(.., 1)`):
//! a safeguard against unprivileged daemons that never write back. With the writeback
//! cache on, a writer past that small share is throttled to the daemon's speed even when
//! all it writes would fit in memory, where ext4 lets it fill its page cache up to the
//! global dirty limits. tuxfs is mounted by root and is the image's only writer, so the
//! daemon raises the share to `dirty_ratio=` percent (default [`DEFAULT_DIRTY_RATIO`]);
//! durability is unchanged (dirty pages are volatile until fsync or sync on every
//! filesystem), and `dirty_ratio=1` keeps the kernel's cap.

use std::path::{Path, PathBuf};

/// Percent of the machine's dirty-page budget the mount may hold by default.
pub const DEFAULT_DIRTY_RATIO: u32 = 20;

/// The sysfs directory of the backing device of the FUSE mount at `mountpoint`, from the
/// mount table (`/proc/self/mountinfo` text): its `MAJ:MIN` field, `-fuseblk` added for a
/// `fuseblk` mount. None when the mount is not listed or is not FUSE.
pub fn bdi_dir(mountinfo: &str, mountpoint: &Path) -> Option<PathBuf> {
    let want = mountpoint.to_str()?;
    // The last mount on the point is the one in force (mounts stack).
    mountinfo.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let (dev, point) = (*fields.get(2)?, *fields.get(4)?);
        if tuxfs_engine::dev::lock::unescape(point) != want {
            return None;
        }
        let fstype = right.split(' ').next()?;
        let suffix = if fstype == "fuseblk" || fstype.starts_with("fuseblk.") {
            "-fuseblk"
        } else if fstype == "fuse" || fstype.starts_with("fuse.") {
            ""
        } else {
            return None;
        };
        Some(PathBuf::from(format!("/sys/class/bdi/{dev}{suffix}")))
    })
}

/// Sets the mount's share of the dirty-page budget to `ratio` percent; returns the sysfs
/// file written.
pub fn set_dirty_ratio(mountpoint: &Path, ratio: u32) -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let dir = bdi_dir(&mountinfo, mountpoint)
        .ok_or_else(|| format!("{} is not a FUSE mount here", mountpoint.display()))?;
    let file = dir.join("max_ratio");
    std::fs::write(&file, format!("{ratio}\n"))
        .map_err(|e| format!("writing {}: {e}", file.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
80 22 7:3 / /mnt/a\\040b rw,nosuid shared:40 - fuseblk.tuxfs /dev/loop3 rw,user_id=0
81 22 0:55 / /mnt/plain rw shared:41 - fuse.tuxfs img rw,user_id=0
82 22 0:56 / /mnt/plain rw shared:42 - fuse.tuxfs img2 rw,user_id=0
";

    #[test]
    fn the_backing_device_is_found_by_mountpoint_and_type() {
        assert_eq!(
            bdi_dir(INFO, Path::new("/mnt/a b")),
            Some(PathBuf::from("/sys/class/bdi/7:3-fuseblk"))
        );
        // Stacked mounts: the last one is in force.
        assert_eq!(
            bdi_dir(INFO, Path::new("/mnt/plain")),
            Some(PathBuf::from("/sys/class/bdi/0:56"))
        );
        assert_eq!(bdi_dir(INFO, Path::new("/")), None, "not FUSE");
        assert_eq!(bdi_dir(INFO, Path::new("/mnt/none")), None);
        assert_eq!(bdi_dir("garbage\n\n - \n", Path::new("/")), None);
    }
}
