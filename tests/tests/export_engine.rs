//! Story: a file server keeps (inode number, generation) handles and decodes them later
//! through the engine (`Filesystem::inode_by_handle`, and the "." / ".." lookups FUSE sends
//! when the kernel decodes a handle). A live file or directory is found by number alone, a
//! directory's ".." is its parent (also after a rename), the root is its own parent. A
//! deleted file, a removed directory and an unlinked file still open are stale. After a
//! crash that lost the delta which created a file, its inode number goes to the next new
//! file, with another generation: the old handle is stale, the new one decodes.

use std::sync::Arc;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::MountOptions;
use tuxfs_tests::fixture::{SUPERUSER as ME, fsck_clean, mem_device, mount};

const ROOT: u64 = 1;

fn errno<T: std::fmt::Debug>(r: tuxfs_engine::Result<T>) -> Errno {
    r.expect_err("an error").errno()
}

#[test]
fn live_inodes_decode_by_number_and_dead_ones_are_stale() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev, MountOptions::default());
    let a = fs.mkdir(ROOT, b"a", 0o755, ME).expect("mkdir a");
    let b = fs.mkdir(a.ino, b"b", 0o755, ME).expect("mkdir b");
    let f = fs.create(b.ino, b"f", 0o644, ME).expect("create");

    assert_eq!(fs.lookup_self(f.ino).expect("file by number").ino, f.ino);
    assert_eq!(fs.lookup_self(b.ino).expect("dir by number").ino, b.ino);
    assert_eq!(fs.lookup_parent(b.ino).expect("..").ino, a.ino);
    assert_eq!(fs.lookup_parent(a.ino).expect("..").ino, ROOT);
    assert_eq!(fs.lookup_parent(ROOT).expect("root's ..").ino, ROOT);
    assert_eq!(errno(fs.lookup_parent(f.ino)), Errno::NotDir);
    let got = fs.inode_by_handle(f.ino, f.generation).expect("decode");
    assert_eq!((got.ino, got.generation), (f.ino, f.generation));
    assert_eq!(
        errno(fs.inode_by_handle(f.ino, f.generation.wrapping_add(1))),
        Errno::Stale
    );
    assert_eq!(errno(fs.inode_by_handle(999_999, 0)), Errno::Stale);

    // ".." follows a rename to another parent.
    fs.rename(a.ino, b"b", ROOT, b"b", Default::default())
        .expect("rename");
    assert_eq!(fs.lookup_parent(b.ino).expect("..").ino, ROOT);

    // Unlinked but open: no handle reaches it; freed: the same.
    fs.open(f.ino).expect("open");
    fs.unlink(b.ino, b"f").expect("unlink");
    assert_eq!(errno(fs.lookup_self(f.ino)), Errno::NoEntry);
    assert_eq!(errno(fs.inode_by_handle(f.ino, f.generation)), Errno::Stale);
    fs.release(f.ino).expect("release");
    assert_eq!(errno(fs.inode_by_handle(f.ino, f.generation)), Errno::Stale);
    fs.rmdir(ROOT, b"b").expect("rmdir");
    assert_eq!(errno(fs.inode_by_handle(b.ino, b.generation)), Errno::Stale);
    assert_eq!(errno(fs.lookup_parent(b.ino)), Errno::NoEntry);

    // Generations are stored: the same after a remount.
    fs.unmount().expect("unmount");
    let fs = mount(&dev, MountOptions::default());
    let got = fs
        .inode_by_handle(a.ino, a.generation)
        .expect("after remount");
    assert_eq!(got.generation, a.generation);
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

#[test]
fn an_inode_number_reused_after_a_crash_gets_another_generation() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev, MountOptions::default());
    fs.create(ROOT, b"kept", 0o644, ME).expect("create");
    fs.sync().expect("sync");
    let lost = fs.create(ROOT, b"lost", 0o644, ME).expect("create");
    // The crash: the image as the device holds it now, without the open delta.
    let crashed = Arc::new(MemDevice::from_bytes(dev.snapshot()));
    fs.unmount().expect("unmount");

    let fs = mount(&crashed, MountOptions::default());
    assert_eq!(errno(fs.lookup(ROOT, b"lost")), Errno::NoEntry);
    let new = fs.create(ROOT, b"new", 0o644, ME).expect("create");
    assert_eq!(new.ino, lost.ino, "the number was to be handed out again");
    assert_ne!(new.generation, lost.generation);
    assert_eq!(
        errno(fs.inode_by_handle(lost.ino, lost.generation)),
        Errno::Stale
    );
    assert_eq!(
        fs.inode_by_handle(new.ino, new.generation)
            .expect("new handle")
            .ino,
        new.ino
    );
    fs.unmount().expect("unmount");
    fsck_clean(crashed.as_ref());
}
