//! Idmapped mounts (FUSE_ALLOW_IDMAP, Linux 6.12+): what changes for the daemon.
//!
//! With FUSE_ALLOW_IDMAP granted (it needs `default_permissions`, which tuxfs always sets)
//! the kernel lets `mount_setattr(MOUNT_ATTR_IDMAP)` make idmapped bind mounts of the
//! mount, and maps ids itself in both directions: requests that create an inode (create,
//! mknod, mkdir, symlink) carry the caller's fsuid/fsgid mapped through the mount's idmap
//! into the filesystem's ids, setattr carries the new owner already mapped, and attributes
//! the daemon returns are mapped on their way to the caller. The daemon stores what it
//! gets, as before.
//!
//! The one change: every other request (lookup, getattr, ioctl, ...) then carries
//! [`FUSE_INVALID_UIDGID`] as uid and gid, on every mount of the filesystem, idmapped or
//! not, because the kernel cannot say which of the caller's ids is meant. The only place
//! the daemon decides by the caller's uid outside inode creation is an ioctl's "root only"
//! rule and the xattr namespace rules; there [`caller_ids`] asks the kernel's process table for the caller's fsuid (the
//! caller is blocked in its ioctl while the request is served, so its process id cannot
//! be reused meanwhile). fuser's own owner check (`noallow_other`, `allow_root`) would
//! refuse such requests, so FUSE_ALLOW_IDMAP is asked for only on a mount open to every
//! user (`allow_other`, the default for a root mount); see `Adapter::with_idmap`.
//!
//! Both `fuseblk` (the default for a root mount) and `fuse` mounts accept idmapped bind
//! mounts once FUSE_ALLOW_IDMAP is granted (tests/idmap.rs); without it `mount_setattr`
//! says EINVAL.

/// The uid and gid of a request that does not carry the caller's ids.
pub const FUSE_INVALID_UIDGID: u32 = u32::MAX;

/// The uid and gid to judge a non-creating request by: `uid` and `gid` as the request
/// carries them, or, for each that is [`FUSE_INVALID_UIDGID`], the fsuid / fsgid of process
/// `pid`, read from `/proc/PID/status`; [`FUSE_INVALID_UIDGID`] (nobody) when that cannot
/// be read.
pub fn caller_ids(uid: u32, gid: u32, pid: u32) -> (u32, u32) {
    if (uid != FUSE_INVALID_UIDGID && gid != FUSE_INVALID_UIDGID) || pid == 0 {
        return (uid, gid);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let from_status = |key: &str, carried: u32| {
        if carried != FUSE_INVALID_UIDGID {
            return carried;
        }
        status
            .as_deref()
            .and_then(|s| fs_id_from_status(s, key))
            .unwrap_or(FUSE_INVALID_UIDGID)
    };
    (from_status("Uid:", uid), from_status("Gid:", gid))
}

/// The filesystem id (fourth value of the `Uid:` or `Gid:` line: real, effective, saved,
/// filesystem) of a `/proc/PID/status` text.
fn fs_id_from_status(status: &str, key: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fsuid_is_the_fourth_uid() {
        let status = "Name:\tx\nUmask:\t0022\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t5\t5\t5\n";
        assert_eq!(fs_id_from_status(status, "Uid:"), Some(1003));
        assert_eq!(fs_id_from_status(status, "Gid:"), Some(5));
        assert_eq!(fs_id_from_status("Uid:\t1\t2\n", "Uid:"), None);
        assert_eq!(fs_id_from_status("Gid:\t1\t2\t3\t4\n", "Uid:"), None);
    }

    #[test]
    fn carried_uids_are_kept_and_missing_ones_come_from_the_process() {
        const NONE: u32 = FUSE_INVALID_UIDGID;
        assert_eq!(caller_ids(1000, 7, 1), (1000, 7));
        assert_eq!(caller_ids(NONE, NONE, 0), (NONE, NONE));
        let me = std::process::id();
        // SAFETY: getuid and getgid have no preconditions (the test's fs ids are its ids).
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!(caller_ids(NONE, NONE, me), (uid, gid));
        assert_eq!(caller_ids(NONE, 7, me), (uid, 7));
        // A process that does not exist: nobody.
        assert_eq!(caller_ids(NONE, NONE, u32::MAX - 1), (NONE, NONE));
    }
}
