//! `-o uring`: FUSE over io_uring (the vendored fuser's transport, vendor/fuser/src/uring.rs).
//!
//! The kernel hands requests to per-CPU queues of io_uring entries instead of waking a
//! /dev/fuse reader for each one. It is a host-wide administrator setting (the `fuse` module
//! parameter `enable_uring`, off by default), so the option is off by default, and asking
//! for it on a kernel where it is off is refused with what to set: tuxfs never changes the
//! parameter itself. The daemon counts the requests that came through the ring, the
//! `fuse_uring_requests` line of `-o stats=FILE`.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The module parameter that allows FUSE over io_uring.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Entries per queue (one queue per CPU): requests each queue can have in flight at once,
/// enough for a queue depth of 32 of reads answered by the read pool.
pub const QUEUE_DEPTH: u16 = 32;

/// Requests received through the ring.
#[derive(Debug)]
pub struct UringCounts(AtomicU64);

/// The daemon's count.
pub static URING_REQUESTS: UringCounts = UringCounts(AtomicU64::new(0));

impl UringCounts {
    /// Counts one request.
    pub fn record(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl fmt::Display for UringCounts {
    /// `fuse_uring_requests N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fuse_uring_requests {}", self.get())
    }
}

/// Checks that the kernel allows FUSE over io_uring, reading `param` (normally
/// [`ENABLE_URING`]); the error says what the administrator must set.
pub fn check_kernel(param: &Path) -> Result<(), String> {
    match std::fs::read_to_string(param) {
        Ok(v) if v.trim() == "Y" || v.trim() == "1" => Ok(()),
        Ok(v) => Err(format!(
            "-o uring: FUSE over io_uring is off on this machine ({} is {}). It is a \
             host-wide setting for the administrator: `echo Y > {}` (or boot with \
             fuse.enable_uring=1) turns it on; or mount without -o uring",
            param.display(),
            v.trim(),
            param.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "-o uring: this kernel has no FUSE over io_uring ({} does not exist; Linux 6.14 \
             or later built with CONFIG_FUSE_IO_URING is needed); mount without -o uring",
            param.display()
        )),
        Err(e) => Err(format!("-o uring: cannot read {}: {e}", param.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_parameter_decides() {
        let dir = tempfile::tempdir().unwrap();
        let param = dir.path().join("enable_uring");
        std::fs::write(&param, "N\n").unwrap();
        let err = check_kernel(&param).unwrap_err();
        assert!(err.contains("is N") && err.contains("echo Y >"), "{err}");
        std::fs::write(&param, "Y\n").unwrap();
        assert_eq!(check_kernel(&param), Ok(()));
        let missing = dir.path().join("missing");
        assert!(
            check_kernel(&missing)
                .unwrap_err()
                .contains("does not exist")
        );
    }

    #[test]
    fn the_count_is_printed() {
        let counts = UringCounts(AtomicU64::new(0));
        counts.record();
        counts.record();
        assert_eq!(counts.to_string(), "fuse_uring_requests 2\n");
    }
}
