//! Story: a file's stored POSIX ACL is damaged on disk in a way every structure check
//! passes (the leaf's checksum was re-sealed: a bad write of the right block, or a bug), or
//! a file carries a default ACL, which only directories may have. `fsck.tuxfs -n` must
//! report it, naming the inode and its leaf block (exit 4); `-y` drops that ACL xattr and
//! nothing else (the mode stays; exit 1); then `-n` finds the image clean and the engine
//! mounts it.

mod common;
mod damage_map;

use std::sync::Arc;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::acl::{
    ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_UNDEFINED_ID as U, ACL_USER, ACL_USER_OBJ, AclEntry,
    XATTR_ACL_ACCESS, XATTR_ACL_DEFAULT, encode,
};
use tuxfs_engine::format::xattr::XattrEntry;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions, XattrFlags};
use tuxfs_engine::mkfs::format_device;

use damage_map::{edit_inode, fsck, judge_and_repair};

const ROOT: u64 = 1;
const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 1,
};
const BS: u32 = 4096;

fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
    AclEntry { tag, perm, id }
}

/// u::rw-, u:4242:r--, g::r--, m::r--, o::---
fn named_reads() -> Vec<AclEntry> {
    vec![
        e(ACL_USER_OBJ, 6, U),
        e(ACL_USER, 4, 4242),
        e(ACL_GROUP_OBJ, 4, U),
        e(ACL_MASK, 4, U),
        e(ACL_OTHER, 0, U),
    ]
}

fn mount(image: Vec<u8>) -> Arc<Filesystem> {
    Filesystem::mount(
        Arc::new(MemDevice::from_bytes(image)) as Arc<dyn BlockDevice>,
        MountOptions::default(),
    )
    .expect("mount")
}

/// A cleanly unmounted image with file `f` (access ACL, mode 0640, a user xattr) and
/// directory `d` (default ACL). Returns it with the inode numbers of f and d.
fn image() -> (Vec<u8>, u64, u64) {
    let dev = Arc::new(MemDevice::new((BS * 1024) as usize));
    format_device(dev.as_ref(), &common::params(BS, 1024), false).expect("mkfs");
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, MountOptions::default())
        .expect("mount");
    let f = fs.create(ROOT, b"f", 0o600, ME).expect("create").ino;
    fs.release(f).expect("release");
    fs.setxattr(f, b"user.keep", b"kept", XattrFlags::default())
        .expect("user xattr");
    fs.setxattr(
        f,
        XATTR_ACL_ACCESS,
        &encode(&named_reads()),
        XattrFlags::default(),
    )
    .expect("access ACL");
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir").ino;
    fs.setxattr(
        d,
        XATTR_ACL_DEFAULT,
        &encode(&named_reads()),
        XattrFlags::default(),
    )
    .expect("default ACL");
    assert_eq!(fs.getattr(f).unwrap().perm, 0o640);
    fs.unmount().expect("unmount");
    (dev.snapshot(), f, d)
}

#[test]
fn undamaged_acls_are_clean() {
    let (image, _, _) = image();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fs.img");
    std::fs::write(&path, &image).unwrap();
    let (code, out) = fsck(&["-n"], &path);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn damaged_access_acl_is_found_and_dropped_keeping_the_mode() {
    let (mut image, f, _) = image();
    // Version 9 instead of 2: the record and the leaf still decode.
    let leaf = edit_inode(&mut image, f, |i| {
        let x = i
            .inline_xattrs
            .iter_mut()
            .find(|x| x.name == XATTR_ACL_ACCESS)
            .expect("stored ACL");
        x.value[0] = 9;
    });
    let repaired = judge_and_repair(&image, f, leaf, "system.posix_acl_access: not a valid ACL");
    let fs = mount(repaired);
    let err = fs.getxattr(f, XATTR_ACL_ACCESS).unwrap_err();
    assert_eq!(err.errno(), Errno::NoData);
    assert_eq!(fs.getxattr(f, b"user.keep").unwrap(), b"kept");
    assert_eq!(fs.getattr(f).unwrap().perm, 0o640, "the mode changed");
    fs.unmount().unwrap();
}

#[test]
fn default_acl_on_a_file_is_found_and_dropped() {
    let (mut image, f, d) = image();
    let leaf = edit_inode(&mut image, f, |i| {
        i.inline_xattrs.push(XattrEntry {
            name: XATTR_ACL_DEFAULT.to_vec(),
            value: encode(&named_reads()),
        });
    });
    let repaired = judge_and_repair(
        &image,
        f,
        leaf,
        "system.posix_acl_default: a default ACL on a non-directory",
    );
    let fs = mount(repaired);
    let err = fs.getxattr(f, XATTR_ACL_DEFAULT).unwrap_err();
    assert_eq!(err.errno(), Errno::NoData);
    // The file's access ACL and the directory's default ACL stay.
    assert!(fs.getxattr(f, XATTR_ACL_ACCESS).is_ok());
    assert!(fs.getxattr(d, XATTR_ACL_DEFAULT).is_ok());
    assert_eq!(fs.getattr(f).unwrap().perm, 0o640);
    fs.unmount().unwrap();
}
