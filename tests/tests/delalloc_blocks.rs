//! Story: a backup tool stats a file the moment after it was written. `st_blocks` must
//! already count the new data (delayed allocation, as ext4 counts its reservations), or
//! `tar -S` archives the file as one big hole and `du` says 0. The count must not change
//! when the delta commits, overwrites of allocated blocks must not be counted twice, holes
//! must stay free, truncate must drop what it removes, and statfs must see the space go.

use std::sync::Arc;

use tuxfs_engine::fs::{Filesystem, MountOptions, SetAttr};
use tuxfs_tests::fixture::{SUPERUSER as ME, mem_device, mount};

const ROOT: u64 = 1;
const BS: u64 = 4096;
/// 512-byte sectors per block.
const SECTORS: u64 = BS / 512;

fn mounted() -> Arc<Filesystem> {
    let dev = mem_device(BS as u32, 4096);
    // A long commit interval: nothing commits unless the test asks.
    let opts = MountOptions {
        commit_interval: std::time::Duration::from_secs(3600),
        ..MountOptions::default()
    };
    mount(&dev, opts)
}

fn blocks(fs: &Filesystem, ino: u64) -> u64 {
    fs.getattr(ino).expect("getattr").blocks
}

#[test]
fn fresh_data_counts_before_commit_and_equals_after() {
    let fs = mounted();
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create").ino;
    let free_before = fs.statfs().expect("statfs").bfree;
    // 300,000 bytes: 74 blocks, the last one partial.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + 3) as u8).collect();
    fs.write(f, 0, &data, false).expect("write");
    let expected = 300_000u64.div_ceil(BS) * SECTORS;
    assert_eq!(blocks(&fs, f), expected, "st_blocks right after the write");
    let free_after = fs.statfs().expect("statfs").bfree;
    assert!(
        free_before - free_after >= 74,
        "statfs free must drop by the write's reservation: {free_before} -> {free_after}"
    );
    fs.sync().expect("sync");
    assert_eq!(blocks(&fs, f), expected, "st_blocks after the commit");
    fs.unmount().expect("unmount");
}

#[test]
fn overwrites_of_allocated_blocks_are_not_counted_twice() {
    let fs = mounted();
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create").ino;
    fs.write(f, 0, &vec![1u8; 8 * BS as usize], false)
        .expect("write");
    fs.sync().expect("sync");
    assert_eq!(blocks(&fs, f), 8 * SECTORS);
    // Rewrite blocks 2..6 and extend by two blocks: 10 blocks in all.
    fs.write(f, 2 * BS, &vec![2u8; 6 * BS as usize], false)
        .expect("overwrite");
    fs.write(f, 9 * BS + 100, b"tail", false).expect("write");
    // Block 8 is a hole: the file has blocks 0..8 and 9.
    assert_eq!(blocks(&fs, f), 9 * SECTORS, "before commit");
    fs.sync().expect("sync");
    assert_eq!(blocks(&fs, f), 9 * SECTORS, "after commit");
    // One write across extents and holes: blocks 0..8 and 9 are allocated, 8 and 10..14
    // are not. Writing 6..14 adds exactly 8, 10, 11, 12, 13.
    fs.write(f, 6 * BS, &vec![5u8; 8 * BS as usize], false)
        .expect("write across extents");
    assert_eq!(blocks(&fs, f), 14 * SECTORS, "before commit");
    fs.sync().expect("sync");
    assert_eq!(blocks(&fs, f), 14 * SECTORS, "after commit");
    fs.unmount().expect("unmount");
}

#[test]
fn one_write_over_two_extents_and_the_holes_between() {
    let fs = mounted();
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create").ino;
    // Two extents, 0..4 and 8..10, committed separately; a hole 4..8.
    fs.write(f, 0, &vec![1u8; 4 * BS as usize], false)
        .expect("write");
    fs.sync().expect("sync");
    fs.write(f, 8 * BS, &vec![1u8; 2 * BS as usize], false)
        .expect("write");
    fs.sync().expect("sync");
    assert_eq!(blocks(&fs, f), 6 * SECTORS);
    // 2..12: blocks 2, 3, 8, 9 are allocated already; 4..8, 10, 11 are new.
    fs.write(f, 2 * BS, &vec![2u8; 10 * BS as usize], false)
        .expect("write");
    assert_eq!(blocks(&fs, f), 12 * SECTORS, "before commit");
    fs.sync().expect("sync");
    assert_eq!(blocks(&fs, f), 12 * SECTORS, "after commit");
    fs.unmount().expect("unmount");
}

#[test]
fn holes_are_free_and_truncate_drops_dirty_blocks() {
    let fs = mounted();
    let f = fs.create(ROOT, b"sparse", 0o644, ME).expect("create").ino;
    // One block at 1 MiB: a hole before it.
    fs.write(f, 1 << 20, b"x", false).expect("write");
    assert_eq!(blocks(&fs, f), SECTORS);
    // Dirty blocks 0..4, then truncate to 2.5 blocks: blocks 0..3 stay.
    fs.write(f, 0, &vec![3u8; 4 * BS as usize], false)
        .expect("write");
    assert_eq!(blocks(&fs, f), 5 * SECTORS);
    let set = SetAttr {
        size: Some(2 * BS + BS / 2),
        ..SetAttr::default()
    };
    fs.setattr(f, &set).expect("truncate");
    assert_eq!(blocks(&fs, f), 3 * SECTORS, "truncate of dirty blocks");
    fs.sync().expect("sync");
    assert_eq!(blocks(&fs, f), 3 * SECTORS, "after commit");
    // Truncate of committed blocks, then new dirty data over a part of them.
    fs.setattr(
        f,
        &SetAttr {
            size: Some(BS),
            ..SetAttr::default()
        },
    )
    .expect("truncate");
    assert_eq!(blocks(&fs, f), SECTORS);
    fs.write(f, 0, &vec![4u8; 2 * BS as usize], false)
        .expect("write");
    assert_eq!(blocks(&fs, f), 2 * SECTORS);
    fs.sync().expect("sync");
    assert_eq!(blocks(&fs, f), 2 * SECTORS);
    // Deleting a file with dirty blocks leaves nothing counted for a later inode.
    fs.write(f, 5 * BS, b"y", false).expect("write");
    fs.unlink(ROOT, b"sparse").expect("unlink");
    let g = fs.create(ROOT, b"g", 0o644, ME).expect("create").ino;
    assert_eq!(blocks(&fs, g), 0);
    fs.unmount().expect("unmount");
}

/// Regression (found by the differential suite against ext4): shrinking a file to a size
/// inside a hole allocated that block (to zero its tail), so `st_blocks` showed a block
/// ext4 does not have. The hole reads as zeros already; data after it must still go, and a
/// new end inside a written block must still zero that block's tail.
#[test]
fn truncate_into_a_hole_allocates_nothing() {
    let fs = mounted();
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create").ino;
    let size = |s: u64| SetAttr {
        size: Some(s),
        ..SetAttr::default()
    };
    // Committed data at 1 GiB, then a truncate to 1 byte: block 0 is a hole.
    fs.write(f, 1 << 30, b"x", false).expect("write");
    fs.sync().expect("sync");
    fs.setattr(f, &size(1)).expect("truncate");
    assert_eq!(blocks(&fs, f), 0, "truncate into a hole after a commit");
    // Grown and shrunk inside holes only, nothing written.
    fs.setattr(f, &size(100_000)).expect("grow");
    fs.setattr(f, &size(5000)).expect("shrink");
    assert_eq!(blocks(&fs, f), 0, "shrink inside a hole");
    assert_eq!(fs.read(f, 0, 5000).expect("read"), vec![0u8; 5000]);
    // Dirty data in block 0, then shrink into it: the tail is zeroed as before.
    fs.write(f, 0, &vec![9u8; 3000], false).expect("write");
    fs.setattr(f, &size(10)).expect("shrink");
    fs.setattr(f, &size(3000)).expect("grow");
    let back = fs.read(f, 0, 3000).expect("read");
    assert_eq!(&back[..10], &[9u8; 10]);
    assert!(
        back[10..].iter().all(|&b| b == 0),
        "the tail past the end reads zeros"
    );
    assert_eq!(blocks(&fs, f), SECTORS);
    fs.sync().expect("sync");
    assert_eq!(blocks(&fs, f), SECTORS);
    fs.unmount().expect("unmount");
}
