//! How many requests of each kind the kernel sent: the `fuse_*` lines of `-o stats=FILE`.
//!
//! Every request after INIT is counted once, by opcode, when a worker picks it up (the
//! vendored fuser's `Filesystem::request_received`, vendor/fuser/TUXFS_CHANGES.md entry 11),
//! with one relaxed atomic add: nothing is allocated and no lock is taken. The figures show
//! what each system call costs in round trips (docs/BENCHMARKS.md, "Requests per system
//! call") and let tests hold the kernel to a request budget (tests/request_counts.rs).
//!
//! The counts are process-wide: one daemon serves one mount, and a test that mounts the
//! adapter in its own process reads differences, never absolute values.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Opcodes below this are counted each on its own; the rest (none exist today: the largest
/// is FUSE_STATX, 52) together under [`OTHER`].
const SLOTS: usize = 64;
/// The slot of opcodes at or past [`SLOTS`].
const OTHER: usize = SLOTS - 1;

/// Requests received per opcode.
#[derive(Debug)]
pub struct RequestCounts([AtomicU64; SLOTS]);

/// The daemon's counts.
pub static COUNTS: RequestCounts = RequestCounts([const { AtomicU64::new(0) }; SLOTS]);

impl RequestCounts {
    /// Counts one request of `opcode`.
    pub fn record(&self, opcode: u32) {
        let slot = usize::try_from(opcode).map_or(OTHER, |o| o.min(OTHER));
        self.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `opcode` so far.
    pub fn get(&self, opcode: u32) -> u64 {
        let slot = usize::try_from(opcode).map_or(OTHER, |o| o.min(OTHER));
        self.0[slot].load(Ordering::Relaxed)
    }
}

/// The lower-case name of a FUSE opcode (fuse.h without `FUSE_`), for the stats lines.
fn name(opcode: usize) -> Option<&'static str> {
    const NAMES: [&str; 53] = [
        "",
        "lookup",
        "forget",
        "getattr",
        "setattr",
        "readlink",
        "symlink",
        "",
        "mknod",
        "mkdir",
        "unlink",
        "rmdir",
        "rename",
        "link",
        "open",
        "read",
        "write",
        "statfs",
        "release",
        "",
        "fsync",
        "setxattr",
        "getxattr",
        "listxattr",
        "removexattr",
        "flush",
        "init",
        "opendir",
        "readdir",
        "releasedir",
        "fsyncdir",
        "getlk",
        "setlk",
        "setlkw",
        "access",
        "create",
        "interrupt",
        "bmap",
        "destroy",
        "ioctl",
        "poll",
        "notify_reply",
        "batch_forget",
        "fallocate",
        "readdirplus",
        "rename2",
        "lseek",
        "copy_file_range",
        "setupmapping",
        "removemapping",
        "syncfs",
        "tmpfile",
        "statx",
    ];
    NAMES.get(opcode).copied().filter(|n| !n.is_empty())
}

impl fmt::Display for RequestCounts {
    /// `fuse_requests TOTAL`, then `fuse_NAME COUNT` for each opcode received at least
    /// once (`fuse_opcode_N` for one without a name here, `fuse_other` past the table).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        writeln!(f, "fuse_requests {}", counts.iter().sum::<u64>())?;
        for (opcode, &count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            match (opcode, name(opcode)) {
                (OTHER, _) => writeln!(f, "fuse_other {count}")?,
                (_, Some(name)) => writeln!(f, "fuse_{name} {count}")?,
                (_, None) => writeln!(f, "fuse_opcode_{opcode} {count}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernel_opcodes() {
        assert_eq!(name(1), Some("lookup"));
        assert_eq!(name(25), Some("flush"));
        assert_eq!(name(35), Some("create"));
        assert_eq!(name(42), Some("batch_forget"));
        assert_eq!(name(52), Some("statx"));
        assert_eq!(name(7), None);
        assert_eq!(name(53), None);
    }

    #[test]
    fn counts_are_kept_per_opcode_and_printed_when_nonzero() {
        let counts = RequestCounts([const { AtomicU64::new(0) }; SLOTS]);
        counts.record(1);
        counts.record(1);
        counts.record(25);
        counts.record(7);
        counts.record(4096); // CUSE_INIT: past the table
        assert_eq!(counts.get(1), 2);
        assert_eq!(counts.get(25), 1);
        assert_eq!(counts.get(3), 0);
        let text = counts.to_string();
        assert_eq!(
            text,
            "fuse_requests 5\nfuse_lookup 2\nfuse_opcode_7 1\nfuse_flush 1\nfuse_other 1\n"
        );
    }
}
