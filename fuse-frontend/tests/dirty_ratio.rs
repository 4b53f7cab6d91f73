//! Story: the kernel caps a FUSE mount's dirty pages at 1% of the machine's dirty budget;
//! tuxfs-mount raises its own mount's share to `dirty_ratio=` percent (default 20), so a
//! writer is not throttled to the daemon's speed while its data still fits in memory (see
//! fuse-frontend/src/bdi.rs). The share is read back from the mount's backing device in
//! sysfs; `dirty_ratio=1` leaves the kernel's cap.

mod common;

use common::Mount;

fn max_ratio(m: &Mount) -> u32 {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = tuxfs_fuse::bdi::bdi_dir(&info, &m.dir).expect("the mount's backing device");
    std::fs::read_to_string(dir.join("max_ratio"))
        .expect("max_ratio")
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn the_mount_takes_its_dirty_share_and_the_option_sets_it() {
    let Some(m) = Mount::new("dirty-ratio", 64 << 20) else {
        return;
    };
    assert_eq!(max_ratio(&m), tuxfs_fuse::bdi::DEFAULT_DIRTY_RATIO);
    drop(m);
    let Some(m) = Mount::with_options("dirty-ratio-1", 64 << 20, &["dirty_ratio=1"]) else {
        return;
    };
    assert_eq!(max_ratio(&m), 1, "dirty_ratio=1 keeps the kernel's cap");
    drop(m);
    let Some(m) = Mount::with_options("dirty-ratio-50", 64 << 20, &["dirty_ratio=50"]) else {
        return;
    };
    assert_eq!(max_ratio(&m), 50);
}
