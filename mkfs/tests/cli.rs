//! Story: a user creates filesystems with mkfs.tuxfs on new and existing image files, is
//! protected from overwriting an existing filesystem, and gets clear errors for bad input.

mod common;

use std::process::Command;

use common::{fsck_clean, mkfs};

#[test]
fn create_refuse_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("fs.img");
    let p = img.to_str().expect("utf-8 path");
    let (code, out) = mkfs(&[p]);
    assert_ne!(code, 0, "missing file without --size: {out}");
    assert!(out.contains("--size"), "{out}");

    let (code, out) = mkfs(&["--size", "64M", "--label", "data", p]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("16384 blocks of 4096 bytes"), "{out}");
    assert_eq!(std::fs::metadata(&img).expect("image").len(), 64 << 20);
    let report = fsck_clean(&img);
    assert_eq!(report.superblock.label, "data");

    let (code, out) = mkfs(&[p]);
    assert_eq!(code, 1, "second mkfs must refuse: {out}");
    assert!(out.contains("tuxfs") && out.contains("--force"), "{out}");
    let (code, out) = mkfs(&[
        "--force",
        "--block-size",
        "1024",
        "--uuid",
        "01234567-89ab-cdef-0123-456789abcdef",
        p,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("01234567-89ab-cdef-0123-456789abcdef"),
        "{out}"
    );
    assert_eq!(fsck_clean(&img).superblock.block_size, 1024);
}

#[test]
fn refuses_other_filesystems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("ext4.img");
    let p = img.to_str().expect("utf-8 path");
    std::fs::write(&img, vec![0u8; 8 << 20]).expect("image");
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", p])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        println!("mkfs.ext4 unavailable: writing the ext4 magic by hand instead");
        let mut bytes = std::fs::read(&img).expect("read");
        bytes[1080..1082].copy_from_slice(&[0x53, 0xef]);
        std::fs::write(&img, bytes).expect("write");
    }
    let (code, out) = mkfs(&[p]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ext2/ext3/ext4"), "{out}");
    let (code, out) = mkfs(&["-f", p]);
    assert_eq!(code, 0, "{out}");
    fsck_clean(&img);
}

#[test]
fn geometry_and_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, bs) in ["512", "2048", "65536"].iter().enumerate() {
        let img = dir.path().join(format!("bs{i}.img"));
        let (code, out) = mkfs(&["-s", "32M", "-b", bs, img.to_str().expect("path")]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(fsck_clean(&img).superblock.block_size.to_string(), *bs);
    }
    let img = dir.path().join("bad.img");
    let p = img.to_str().expect("path");
    for (args, expect) in [
        (vec!["-s", "32M", "-b", "3000", p], "block size"),
        (vec!["-s", "32M", "-b", "131072", p], "block size"),
        (vec!["-s", "10K", p], "too small"),
        (vec!["-s", "12Q", p], "unknown unit"),
        (vec!["-s", "32M", "-U", "not-a-uuid", p], "UUID"),
        (vec!["-s", "32M", "-L", &"x".repeat(65), p], "label"),
    ] {
        let (code, out) = mkfs(&args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(out.contains(expect), "{args:?}: {out}");
    }
    // An existing file is formatted at its own size.
    let existing = dir.path().join("existing.img");
    std::fs::write(&existing, vec![0u8; 3 << 20]).expect("image");
    let (code, out) = mkfs(&[existing.to_str().expect("path")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fsck_clean(&existing).superblock.block_count, 768);
}
