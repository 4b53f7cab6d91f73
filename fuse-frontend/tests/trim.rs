//! Story: an administrator fills a tuxfs image file, deletes the big file and runs `fstrim`
//! on the mount, as on ext4: the kernel passes FITRIM on the mountpoint directory to the
//! daemon, which punches the free space out of the image, so the image file's allocated
//! size (st_blocks * 512) comes back to within a few MiB of what statfs says is in use.
//! The file that stays reads back after a remount and fsck is clean. With `-o discard` the
//! same happens without fstrim, once the delete is committed (here by an fsync of the
//! directory). Only root may trim.
//!
//! Sizes: 64 MiB of data by default; `TUXFS_TRIM_MIB=1024` for the 1 GiB check.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::Mount;

const MIB: u64 = 1 << 20;

/// MiB of data written and deleted.
fn data_mib() -> u64 {
    std::env::var("TUXFS_TRIM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

/// Bytes in use according to statfs on the mount.
fn used(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statvfs fills the struct we pass and reads the NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    assert_eq!(rc, 0, "statvfs: {}", std::io::Error::last_os_error());
    (s.f_blocks - s.f_bfree) * s.f_frsize
}

/// Writes a kept 2 MiB file and a big one of `data_mib()` MiB, both made durable.
fn fill(m: &Mount) {
    let keep: Vec<u8> = (0..2 * MIB).map(|i| (i % 251) as u8).collect();
    std::fs::write(m.path("keep"), &keep).expect("write keep");
    let chunk = vec![0xa5u8; MIB as usize];
    {
        use std::io::Write;
        let mut f = std::fs::File::create(m.path("big")).expect("create big");
        for _ in 0..data_mib() {
            f.write_all(&chunk).expect("write big");
        }
        f.sync_all().expect("fsync big");
    }
    let full = allocated(&m.image);
    assert!(full >= data_mib() * MIB, "the image holds the data: {full}");
}

fn keep_is_intact(m: &Mount) {
    let keep = std::fs::read(m.path("keep")).expect("read keep");
    assert_eq!(keep.len() as u64, 2 * MIB);
    assert!(keep.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

#[test]
fn fstrim_returns_deleted_space_to_the_image_file() {
    let size = (data_mib() + 128) * MIB;
    let Some(mut m) = Mount::new("fstrim", size) else {
        return;
    };
    fill(&m);
    std::fs::remove_file(m.path("big")).expect("rm big");
    let before = allocated(&m.image);
    // Right after the delete: fstrim commits first, so the freed blocks count.
    let out = common::run(Command::new("fstrim").arg("-v").arg(&m.dir));
    assert!(out.contains("trimmed"), "{out}");
    let (after, in_use) = (allocated(&m.image), used(&m.dir));
    eprintln!(
        "fstrim: allocated {} MiB -> {} MiB; statfs in use {} MiB; {}",
        before / MIB,
        after / MIB,
        in_use / MIB,
        out.trim()
    );
    assert!(
        after <= in_use + 4 * MIB,
        "after fstrim the image holds {after} bytes, {in_use} in use"
    );
    m.remount();
    keep_is_intact(&m);
    m.finish();
}

#[test]
fn the_discard_option_trims_as_deletes_commit_and_only_root_may_fstrim() {
    let size = (data_mib() + 128) * MIB;
    let Some(m) = Mount::with_options("discard", size, &["discard,allow_other"]) else {
        return;
    };
    fill(&m);
    std::fs::remove_file(m.path("big")).expect("rm big");
    // The kernel sends RELEASE for the closed file asynchronously: until it arrives the
    // unlinked file is still open and its blocks are not free. So fsync the directory
    // (which commits whatever is open) until the delete has freed the blocks, bounded.
    let mut tries = 0;
    let (after, in_use) = loop {
        std::fs::File::open(&m.dir)
            .and_then(|d| d.sync_all())
            .expect("fsync the directory");
        let (after, in_use) = (allocated(&m.image), used(&m.dir));
        tries += 1;
        if after < data_mib() * MIB || tries == 100 {
            break (after, in_use);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        after <= in_use + 4 * MIB,
        "with discard the image holds {after} bytes, {in_use} in use"
    );
    assert!(after < data_mib() * MIB, "{after}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::set_permissions(m.scratch(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "fstrim",
            ])
            .arg(&m.dir)
            .output()
            .expect("run setpriv");
        assert!(!out.status.success(), "nobody may not trim");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not permitted"), "{err}");
    }
    keep_is_intact(&m);
    m.finish();
}
