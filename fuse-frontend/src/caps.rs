//! Whether the process behind a FUSE request holds a capability.
//!
//! A FUSE request carries the caller's uid, gid and pid (the calling thread's id, in the
//! daemon's pid namespace), not its capabilities. The daemon reads the effective set from
//! `/proc/PID/status` (`CapEff:`, hexadecimal) of that thread. When that cannot be read (the
//! thread exited, a pid of 0 for a request the kernel makes itself, no /proc), the answer
//! falls back to "uid 0", the rule the other root-only ioctls here use. The kernel has
//! already checked the same capability before it passes the requests that use this
//! (FS_IOC_SETFLAGS and FS_IOC_FSSETXATTR go through vfs_fileattr_set), so this is the
//! daemon's own check of what it is told, not the only one; a pid reused between the
//! request and the read could only be answered for the wrong process in that window.

/// CAP_FOWNER: act as the owner of any file.
pub const CAP_FOWNER: u32 = 3;
/// CAP_LINUX_IMMUTABLE: set and clear the immutable and append-only flags.
pub const CAP_LINUX_IMMUTABLE: u32 = 9;
/// CAP_SYS_ADMIN: FITRIM and FS_IOC_SETFSLABEL.
pub const CAP_SYS_ADMIN: u32 = 21;

/// Whether the caller (thread `pid`, user `uid`) has capability `cap` in its effective set.
pub fn caller_has(pid: u32, uid: u32, cap: u32) -> bool {
    let status = if pid == 0 {
        None
    } else {
        std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
    };
    match status.as_deref().and_then(effective_set) {
        Some(set) => cap < 64 && set & (1u64 << cap) != 0,
        None => uid == 0,
    }
}

/// The `CapEff:` value of a `/proc/PID/status` text.
fn effective_set(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_parsed_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000000200\n";
        assert_eq!(effective_set(status), Some(0x200));
        assert_eq!(effective_set("Name:\tx\n"), None);
        assert_eq!(effective_set("CapEff:\tzz\n"), None);
    }

    #[test]
    fn this_process_is_read_and_a_missing_one_falls_back_to_uid_0() {
        let me = std::process::id();
        let status = std::fs::read_to_string(format!("/proc/{me}/status")).expect("status");
        let set = effective_set(&status).expect("CapEff");
        assert_eq!(
            caller_has(me, 12345, CAP_LINUX_IMMUTABLE),
            set & (1 << CAP_LINUX_IMMUTABLE) != 0
        );
        assert!(caller_has(0, 0, CAP_LINUX_IMMUTABLE));
        assert!(!caller_has(0, 1000, CAP_LINUX_IMMUTABLE));
    }
}
