//! Story: an inode record's flags field is damaged on disk in a way every structure check
//! passes (the leaf was re-sealed): a bit no version of the format defines, or a
//! directory-only flag (dirsync) on a regular file. The engine refuses the record; `fsck.tuxfs
//! -n` reports it naming the inode and its leaf block (exit 4); `-y` clears the bad bits and
//! keeps the rest (the immutable and nodump flags set through the API, the project id, the
//! data; exit 1); then `-n` is clean and the engine mounts and reads the file.

mod common;
mod damage_map;

use std::sync::Arc;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::inode::InodeFlags;
use tuxfs_engine::fs::flags::{FS_IMMUTABLE_FL, FS_NODUMP_FL, FileFlags, FlagsCaller, FlagsChange};
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::mkfs::format_device;

use damage_map::{edit_inode, judge_and_repair};

const ROOT: u64 = 1;
const BS: u32 = 4096;
const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 1,
};
const KEPT: FileFlags = FileFlags {
    flags: FS_IMMUTABLE_FL | FS_NODUMP_FL,
    projid: 77,
};

/// A cleanly unmounted image with file `f` ("data", immutable and nodump, project 77).
fn image() -> (Vec<u8>, u64) {
    let dev = Arc::new(MemDevice::new((BS * 1024) as usize));
    format_device(dev.as_ref(), &common::params(BS, 1024), false).expect("mkfs");
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, MountOptions::default())
        .expect("mount");
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create").ino;
    fs.write(f, 0, b"data", false).expect("write");
    fs.release(f).expect("release");
    let root = FlagsCaller {
        uid: 0,
        fowner: true,
        linux_immutable: true,
    };
    let change = FlagsChange {
        flags: KEPT.flags,
        mask: u32::MAX,
        projid: Some(KEPT.projid),
    };
    fs.set_file_flags(f, change, root).expect("chattr");
    fs.unmount().expect("unmount");
    (dev.snapshot(), f)
}

fn check_repaired(image: Vec<u8>, f: u64) {
    let fs = Filesystem::mount(
        Arc::new(MemDevice::from_bytes(image)) as Arc<dyn BlockDevice>,
        MountOptions::default(),
    )
    .expect("mount the repaired image");
    assert_eq!(fs.file_flags(f).expect("flags"), KEPT);
    assert_eq!(fs.read(f, 0, 100).expect("read"), b"data");
    fs.unmount().expect("unmount");
}

#[test]
fn an_unknown_flag_bit_is_found_and_cleared() {
    let (mut image, f) = image();
    let leaf = edit_inode(&mut image, f, |i| {
        i.flags = InodeFlags::from_bits_retain(i.flags.bits() | 1 << 30);
    });
    let repaired = judge_and_repair(
        &image,
        f,
        leaf,
        "the record decodes only with the flag bits it may not carry cleared",
    );
    check_repaired(repaired, f);
}

#[test]
fn a_directory_only_flag_on_a_file_is_found_and_cleared() {
    let (mut image, f) = image();
    let leaf = edit_inode(&mut image, f, |i| i.flags |= InodeFlags::DIRSYNC);
    let repaired = judge_and_repair(
        &image,
        f,
        leaf,
        "the record decodes only with the flag bits it may not carry cleared",
    );
    check_repaired(repaired, f);
}
