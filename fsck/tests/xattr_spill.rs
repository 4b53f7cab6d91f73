//! Story: a file's extended attributes outgrew its inode record and spilled into a chain
//! of spill blocks. An image with such chains is clean, and fsck counts their blocks as
//! used. Then one spill block is flipped on disk: `fsck.tuxfs -n` reports it naming the
//! inode and the block (exit 4); `-y` drops the damaged chain, reports the file's path and
//! the attributes it lost (exit 1), keeps the attributes in the record, and the image is
//! then clean and mounts.

mod common;

use std::process::Command;
use std::sync::Arc;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions, XattrFlags};
use tuxfs_engine::mkfs::format_device;

const ROOT: u64 = 1;
const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 1,
};
const BS: u32 = 4096;

fn mount(image: Vec<u8>) -> Arc<Filesystem> {
    Filesystem::mount(
        Arc::new(MemDevice::from_bytes(image)) as Arc<dyn BlockDevice>,
        MountOptions::default(),
    )
    .expect("mount")
}

/// A cleanly unmounted image with `/d/f`: `user.keep` in its record, then small spilled
/// names and a 30,000-byte value in its chain. Returns it with f's inode number.
fn image() -> (Vec<u8>, u64) {
    let dev = Arc::new(MemDevice::new((BS * 1024) as usize));
    format_device(dev.as_ref(), &common::params(BS, 1024), false).expect("mkfs");
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, MountOptions::default())
        .expect("mount");
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir").ino;
    let f = fs.create(d, b"f", 0o644, ME).expect("create").ino;
    fs.release(f).expect("release");
    let set = |name: &[u8], value: &[u8]| {
        fs.setxattr(f, name, value, XattrFlags::default())
            .expect("setxattr")
    };
    set(b"user.keep", b"kept");
    set(b"user.fill", &[7; 1500]);
    set(b"user.first", &[1; 3000]);
    set(b"user.second", &[2; 100]);
    set(b"user.big", &[3; 30_000]);
    fs.unmount().expect("unmount");
    (dev.snapshot(), f)
}

/// Blocks of `image` that are spill blocks (magic "TXXA"), in block order.
fn spill_blocks(image: &[u8]) -> Vec<u64> {
    image
        .chunks(BS as usize)
        .enumerate()
        .filter(|(_, b)| b.starts_with(b"TXXA"))
        .map(|(i, _)| i as u64)
        .collect()
}

fn fsck(args: &[&str], path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fsck-tuxfs"))
        .args(args)
        .arg(path)
        .output()
        .expect("runs fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn spill_chains_are_clean_and_counted() {
    let (image, _) = image();
    let spill = spill_blocks(&image);
    assert!(spill.len() >= 8, "the chain has {} blocks", spill.len());
    let report = tuxfs_fsck::check(
        &MemDevice::from_bytes(image),
        &tuxfs_fsck::Options {
            mode: tuxfs_fsck::Mode::Check,
            check_data: true,
        },
    )
    .expect("fsck runs");
    assert_eq!(report.exit_code(), 0, "{:#?}", report.findings);
    assert_eq!(report.stats.xattr_blocks, spill.len() as u64);
}

#[test]
fn a_flipped_spill_block_is_found_and_dropped_reporting_what_was_lost() {
    let (mut image, f) = image();
    let spill = spill_blocks(&image);
    // The chain is allocated in order: its fourth block is inside user.big's value, after
    // the small spilled entries.
    let victim = spill[3];
    image[victim as usize * BS as usize + 2000] ^= 0x04;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fs.img");
    std::fs::write(&path, &image).expect("write image");
    let (code, out) = fsck(&["-n"], &path);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!("inode {f}")) && out.contains(&format!("block {victim}")),
        "the finding does not name inode {f} and block {victim}:\n{out}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), image, "fsck -n wrote");
    let (code, out) = fsck(&["-y"], &path);
    assert_eq!(code, 1, "{out}");
    let lost = out
        .lines()
        .find(|l| l.contains("lost xattrs: /d/f"))
        .unwrap_or_else(|| panic!("no report of the lost attributes:\n{out}"));
    assert!(
        lost.contains(&format!("inode {f}")) && lost.contains(&format!("block {victim}")),
        "{lost}"
    );
    assert!(lost.contains("user.first") && lost.contains("spilled attributes in all"), "{lost}");
    let (code, out) = fsck(&["-n"], &path);
    assert_eq!(code, 0, "{out}");
    let fs = mount(std::fs::read(&path).unwrap());
    assert_eq!(fs.getxattr(f, b"user.keep").unwrap(), b"kept");
    let err = fs.getxattr(f, b"user.big").unwrap_err();
    assert_eq!(err.errno(), Errno::NoData);
    // The file takes new attributes again (a new chain).
    fs.setxattr(f, b"user.big", &[4; 20_000], XattrFlags::default())
        .expect("setxattr after repair");
    fs.unmount().unwrap();
}
