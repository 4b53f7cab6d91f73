//! Story: a shared project directory is made set-group-ID (mode 2775, group 100). Whatever
//! a user (uid 1000, gid 1000) creates in it (a file, a device node, a FIFO, a symlink, a
//! subdirectory) belongs to group 100, not to the user's group; the subdirectory is
//! set-group-ID too, so the rule reaches its own children. Outside such a directory new
//! inodes keep the creator's group, and a default ACL does not change either rule. The
//! groups and modes survive a remount and fsck finds the image clean.

use tuxfs_engine::fs::{FileKind, SetAttr, XattrFlags};
use tuxfs_tests::fixture::{SUPERUSER, USER, fsck_clean, mem_device, mount_default};

const ROOT: u64 = 1;
const S_ISGID: u16 = 0o2000;
const GROUP: u32 = 100;

#[test]
fn set_group_id_directories_pass_on_group_and_bit() {
    let dev = mem_device(4096, 4096);
    let fs = mount_default(&dev);
    let open = fs.mkdir(ROOT, b"open", 0o777, SUPERUSER).expect("mkdir");
    let shared = fs.mkdir(ROOT, b"shared", 0o775, SUPERUSER).expect("mkdir");
    fs.setattr(
        shared.ino,
        &SetAttr {
            mode: Some(0o2775),
            gid: Some(GROUP),
            ..SetAttr::default()
        },
    )
    .expect("chmod g+s, chgrp");

    let file = fs.create(shared.ino, b"f", 0o644, USER).expect("create");
    fs.release(file.ino).expect("close");
    let fifo = fs
        .mknod(shared.ino, b"p", 0o010644, 0, USER)
        .expect("mkfifo");
    let node = fs
        .mknod(shared.ino, b"c", 0o020600, 0x0103, USER)
        .expect("mknod");
    let link = fs.symlink(shared.ino, b"l", b"f", USER).expect("symlink");
    let sub = fs.mkdir(shared.ino, b"sub", 0o755, USER).expect("mkdir");
    let deeper = fs.mkdir(sub.ino, b"deeper", 0o700, USER).expect("mkdir");
    let leaf = fs
        .mknod(deeper.ino, b"leaf", 0o100640, 0, USER)
        .expect("mknod");
    // A set-group-ID bit asked for by a non-directory's create mode stays (the kernel
    // strips it before the request when the caller may not have it).
    let asked = fs
        .mknod(shared.ino, b"sgid", 0o102755, 0, USER)
        .expect("mknod");
    let plain = fs
        .mknod(open.ino, b"plain", 0o100644, 0, USER)
        .expect("mknod");
    let plain_dir = fs.mkdir(open.ino, b"d", 0o755, USER).expect("mkdir");

    let check = |fs: &tuxfs_engine::fs::Filesystem| {
        for (ino, kind, perm) in [
            (file.ino, FileKind::Regular, 0o644),
            (fifo.ino, FileKind::Fifo, 0o644),
            (node.ino, FileKind::CharDevice, 0o600),
            (link.ino, FileKind::Symlink, 0o777),
            (sub.ino, FileKind::Directory, 0o2755),
            (deeper.ino, FileKind::Directory, 0o2700),
            (leaf.ino, FileKind::Regular, 0o640),
            (asked.ino, FileKind::Regular, 0o2755),
        ] {
            let a = fs.getattr(ino).expect("getattr");
            assert_eq!(
                (a.kind, a.perm, a.uid, a.gid),
                (kind, perm, USER.uid, GROUP),
                "inode {ino}"
            );
        }
        for ino in [plain.ino, plain_dir.ino] {
            let a = fs.getattr(ino).expect("getattr");
            assert_eq!(
                (a.gid, a.perm & S_ISGID),
                (USER.gid, 0),
                "outside: inode {ino}"
            );
        }
    };
    check(&fs);

    // With a default ACL on the set-group-ID directory both rules apply.
    let default_acl: Vec<u8> = [
        &[2u8, 0, 0, 0][..],
        &[1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff],
        &[4, 0, 5, 0, 0xff, 0xff, 0xff, 0xff],
        &[0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
    ]
    .concat();
    fs.setxattr(
        shared.ino,
        b"system.posix_acl_default",
        &default_acl,
        XattrFlags::default(),
    )
    .expect("default ACL");
    let acl_dir = fs.mkdir(shared.ino, b"acl", 0o777, USER).expect("mkdir");
    let a = fs.getattr(acl_dir.ino).expect("getattr");
    assert_eq!((a.perm, a.gid), (0o2750, GROUP));

    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
    let fs = mount_default(&dev);
    check(&fs);
    fs.unmount().expect("unmount");
}
