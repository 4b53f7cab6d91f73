//! Helpers shared by the mkfs.tuxfs and tune-tuxfs tests: running mkfs.tuxfs, and fsck of
//! an image file.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_fsck::{Mode, Options, Report, check};

/// Runs mkfs.tuxfs with `args`: its exit code (-1 when killed) and its stdout then stderr.
pub fn mkfs(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mkfs-tuxfs"))
        .args(args)
        .output()
        .expect("runs mkfs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Checks the image file at `path` (data included, nothing repaired); panics unless clean.
pub fn fsck_clean(path: &Path) -> Report {
    let dev = MemDevice::from_bytes(std::fs::read(path).expect("read image"));
    let report = check(
        &dev,
        &Options {
            mode: Mode::Check,
            check_data: true,
        },
    )
    .expect("fsck runs");
    assert_eq!(report.exit_code(), 0, "{:?}", report.findings);
    report
}
