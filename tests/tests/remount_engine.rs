//! Story: a mounted filesystem is switched to read-only (as `mount -o remount,ro` asks):
//! everything written before is then on the image and the image is clean (a copy taken at
//! that moment passes fsck and holds the data), every change gets EROFS; switched back to
//! read-write it accepts changes again, and the unmount leaves a clean image. A read-only
//! mount cannot switch to read-write. A new commit interval applies at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tuxfs_engine::Errno;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{MountOptions, Reconfigure};
use tuxfs_tests::fixture::{SUPERUSER as ME, fsck_clean, mem_device, mount};

const ROOT: u64 = 1;

/// A copy of the image as it is on the device now, mounted read-only: the file `name`
/// must hold `data`.
fn copy_holds(dev: &MemDevice, name: &[u8], data: &[u8]) -> bool {
    let copy = Arc::new(MemDevice::from_bytes(dev.snapshot()));
    let fs = mount(
        &copy,
        MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    );
    let found = match fs.lookup(ROOT, name) {
        Ok(attr) => fs.read(attr.ino, 0, 1 << 20).expect("read") == data,
        Err(_) => false,
    };
    fs.unmount().expect("unmount the copy");
    found
}

#[test]
fn read_only_commits_everything_refuses_changes_and_switches_back() {
    let dev = mem_device(4096, 8192);
    let fs = mount(&dev, MountOptions::default());
    let a = fs.create(ROOT, b"before", 0o644, ME).expect("create");
    fs.write(a.ino, 0, b"written before the remount", false)
        .expect("write");
    assert!(!copy_holds(&dev, b"before", b"written before the remount"));

    fs.set_read_only(true).expect("to read-only");
    assert!(fs.is_read_only());
    // The image alone is complete and clean now.
    fsck_clean(dev.as_ref());
    assert!(copy_holds(&dev, b"before", b"written before the remount"));
    let refused = |r: tuxfs_engine::Result<_>| matches!(r, Err(e) if e.errno() == Errno::ReadOnly);
    assert!(refused(fs.create(ROOT, b"during", 0o644, ME).map(drop)));
    assert!(refused(fs.write(a.ino, 0, b"x", false).map(drop)));
    assert!(refused(fs.unlink(ROOT, b"before")));
    fs.fsync(a.ino, false).expect("fsync has nothing to do");
    fs.set_read_only(true).expect("again: nothing to do");

    fs.set_read_only(false).expect("back to read-write");
    assert!(!fs.is_read_only());
    let b = fs.create(ROOT, b"after", 0o644, ME).expect("create again");
    fs.write(b.ino, 0, b"written after", false).expect("write");
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
    assert!(copy_holds(&dev, b"after", b"written after"));
    assert!(copy_holds(&dev, b"before", b"written before the remount"));
}

#[test]
fn a_read_only_mount_cannot_switch_to_read_write() {
    let dev = mem_device(4096, 8192);
    let fs = mount(
        &dev,
        MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    );
    fs.set_read_only(true).expect("already read-only");
    let err = fs.set_read_only(false).expect_err("refused");
    assert!(err.to_string().contains("unmount"), "{err}");
    assert!(fs.is_read_only());
    fs.unmount().expect("unmount");
}

#[test]
fn a_new_commit_interval_applies_at_once() {
    let dev = mem_device(4096, 8192);
    let fs = mount(
        &dev,
        MountOptions {
            commit_interval: Duration::from_secs(3600),
            ..MountOptions::default()
        },
    );
    let a = fs.create(ROOT, b"f", 0o644, ME).expect("create");
    fs.write(a.ino, 0, b"soon durable", false).expect("write");
    fs.reconfigure(&Reconfigure {
        commit_interval: Some(Duration::from_millis(50)),
        ..Reconfigure::default()
    });
    assert_eq!(fs.commit_interval(), Duration::from_millis(50));
    let start = Instant::now();
    while !copy_holds(&dev, b"f", b"soon durable") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the new interval did not apply: nothing committed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}
