//! Story: overlayfs deletes and renames in its upper layer with RENAME_WHITEOUT. A file
//! renamed that way is at its new name with its content, and its old name is a whiteout:
//! a character device 0/0 with mode 0, owned by the caller. A directory too. With
//! RENAME_NOREPLACE over an existing name nothing changes (EEXIST, no whiteout); a missing
//! source is ENOENT with nothing created. Renaming a name onto another link of the same
//! inode changes nothing. All of it survives a remount and fsck finds the image clean.

use tuxfs_engine::Errno;
use tuxfs_engine::fs::{Caller, FileKind};
use tuxfs_tests::fixture::{SUPERUSER as ME, USER, fsck_clean, mem_device, mount_default};

const ROOT: u64 = 1;

#[test]
fn rename_whiteout_leaves_a_whiteout_at_the_source() {
    let dev = mem_device(4096, 4096);
    let fs = mount_default(&dev);
    let d = fs.mkdir(ROOT, b"d", 0o777, ME).expect("mkdir").ino;
    let f = fs.create(d, b"a", 0o644, ME).expect("create");
    fs.write(f.ino, 0, b"content", false).expect("write");
    fs.release(f.ino).expect("close");
    let caller = Caller { pid: 7, ..USER };
    fs.rename_whiteout((d, b"a"), (ROOT, b"b"), false, caller)
        .expect("rename with whiteout");
    let check = |fs: &tuxfs_engine::fs::Filesystem| {
        let moved = fs.lookup(ROOT, b"b").expect("moved");
        assert_eq!(moved.ino, f.ino);
        assert_eq!(fs.read(f.ino, 0, 100).expect("read"), b"content");
        let w = fs.lookup(d, b"a").expect("whiteout");
        assert_eq!(
            (w.kind, w.perm, w.rdev, w.uid, w.gid, w.nlink),
            (FileKind::CharDevice, 0, 0, USER.uid, USER.gid, 1)
        );
    };
    check(&fs);

    let sub = fs.mkdir(d, b"sub", 0o755, ME).expect("mkdir");
    fs.rename_whiteout((d, b"sub"), (d, b"sub2"), true, ME)
        .expect("a directory, NOREPLACE to a free name");
    assert_eq!(fs.lookup(d, b"sub2").expect("moved").ino, sub.ino);
    assert_eq!(
        fs.lookup(d, b"sub").expect("whiteout").kind,
        FileKind::CharDevice
    );

    // NOREPLACE over an existing name, or a missing source: nothing changes.
    let c = fs.create(d, b"c", 0o644, ME).expect("create");
    fs.release(c.ino).expect("close");
    let err = fs
        .rename_whiteout((d, b"c"), (ROOT, b"b"), true, ME)
        .unwrap_err();
    assert_eq!(err.errno(), Errno::Exists);
    assert_eq!(fs.lookup(d, b"c").expect("still there").ino, c.ino);
    let err = fs
        .rename_whiteout((d, b"none"), (ROOT, b"x"), false, ME)
        .unwrap_err();
    assert_eq!(err.errno(), Errno::NoEntry);
    assert!(fs.lookup(d, b"none").is_err());
    // Two links of one inode: nothing changes.
    fs.link(c.ino, d, b"c2").expect("link");
    fs.rename_whiteout((d, b"c"), (d, b"c2"), false, ME)
        .expect("no-op");
    assert_eq!(fs.lookup(d, b"c").expect("c").ino, c.ino);
    assert_eq!(fs.getattr(c.ino).expect("attr").nlink, 2);

    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
    let fs = mount_default(&dev);
    check(&fs);
    fs.unmount().expect("unmount");
}
