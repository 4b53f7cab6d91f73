//! Story: an administrator mounts images with the default options. The daemon opens the
//! image with O_DIRECT (no second copy of the data in the host's page cache, no buffered
//! writes to the image), unless told `direct_io=off`; an image on a filesystem that offers
//! no direct I/O (tmpfs in /dev/shm) still mounts, buffered, and the log says so once. The
//! flags are read from the daemon's own descriptor in /proc/PID/fdinfo. Data written
//! through each mount reads back after a remount, and fsck finds every image clean.
//!
//! The host's temporary directory must offer O_DIRECT (ext4 here) for the first test;
//! otherwise it is skipped, and under CI=true fails.

mod common;

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use common::{Mount, mkfs, skip};

const IMAGE_BYTES: u64 = 64 << 20;

/// The open flags of every descriptor the daemon `pid` holds on `image`.
fn image_fd_flags(pid: u32, image: &Path) -> Vec<i32> {
    let image = fs::canonicalize(image).expect("canonical image path");
    let mut flags = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd") {
        let entry = entry.expect("fd entry");
        if fs::read_link(entry.path()).ok().as_deref() != Some(image.as_path()) {
            continue;
        }
        let fd = entry.file_name().to_string_lossy().into_owned();
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).expect("fdinfo");
        let octal = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .expect("flags line in fdinfo")
            .trim();
        flags.push(i32::from_str_radix(octal, 8).expect("octal flags"));
    }
    flags
}

fn has_direct(flags: &[i32]) -> bool {
    flags.iter().any(|f| f & libc::O_DIRECT != 0)
}

/// Writes a file larger than a read-ahead window, remounts, and reads it back.
fn round_trip(m: &mut Mount) {
    let data: Vec<u8> = (0..(20 << 20)).map(|i: u32| (i % 253) as u8).collect();
    fs::write(m.path("f"), &data).expect("write");
    m.remount();
    assert!(fs::read(m.path("f")).expect("read") == data, "bytes differ");
}

fn offers_direct_io(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = fs::remove_file(probe);
    ok
}

#[test]
fn the_image_is_opened_with_o_direct_by_default_and_buffered_when_asked() {
    let Some(mut m) = Mount::new("direct-default", IMAGE_BYTES) else {
        return;
    };
    if !offers_direct_io(m.scratch()) {
        skip(&format!("{} offers no O_DIRECT", m.scratch().display()));
        return;
    }
    let flags = image_fd_flags(m.pid(), &m.image);
    assert!(
        !flags.is_empty(),
        "the daemon holds no descriptor of the image"
    );
    assert!(has_direct(&flags), "no O_DIRECT among {flags:?}");
    assert!(!m.log().contains("buffered I/O"), "{}", m.log());
    round_trip(&mut m);
    assert!(has_direct(&image_fd_flags(m.pid(), &m.image)));
    m.finish();

    let Some(mut m) = Mount::with_options("direct-off", IMAGE_BYTES, &["direct_io=off"]) else {
        return;
    };
    let flags = image_fd_flags(m.pid(), &m.image);
    assert!(
        !flags.is_empty(),
        "the daemon holds no descriptor of the image"
    );
    assert!(
        !has_direct(&flags),
        "O_DIRECT among {flags:?} with direct_io=off"
    );
    round_trip(&mut m);
    m.finish();
}

#[test]
fn an_image_on_tmpfs_mounts_buffered_and_says_so() {
    let Ok(tmp) = tempfile::Builder::new()
        .prefix("tuxfs-e2e-direct-shm-")
        .tempdir_in("/dev/shm")
    else {
        skip("no /dev/shm to hold an image");
        return;
    };
    let image = tmp.path().join("image");
    let dir = tmp.path().join("mnt");
    fs::create_dir(&dir).expect("mountpoint");
    mkfs(&image, IMAGE_BYTES);
    let Some(mut m) = Mount::adopt(tmp, image, dir) else {
        return;
    };
    let log = m.log();
    let notices = log.matches("using buffered I/O").count();
    assert_eq!(notices, 1, "one fallback line wanted: {log}");
    assert!(log.contains("O_DIRECT"), "{log}");
    assert!(!has_direct(&image_fd_flags(m.pid(), &m.image)));
    round_trip(&mut m);
    m.finish();
}
