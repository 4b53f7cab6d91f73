//! Story: mkfs writes a fresh filesystem; fsck finds it clean. Then every single byte of
//! every block that is not all zeros is flipped, one at a time: fsck must report an error
//! naming that block (exit 4), never panic, and never call the image unusable while one
//! superblock survives. A damaged superblock slot is repaired by `-y` from the other.

mod common;

use common::{fresh_image, nonzero_blocks};
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::dev::{read_at, write_at};
use tuxfs_fsck::{Mode, Options, check};

const CHECK: Options = Options {
    mode: Mode::Check,
    check_data: true,
};

#[test]
fn fresh_images_are_clean_at_every_block_size() {
    for (bs, count) in [
        (512, 64),
        (512, 40_000),
        (1024, 3000),
        (4096, 4096),
        (4096, 300_000),
        (65536, 128),
    ] {
        let dev = MemDevice::from_bytes(fresh_image(bs, count));
        let report = check(&dev, &CHECK).expect("fsck runs");
        assert!(
            report.findings.is_empty(),
            "bs {bs} count {count}: {:?}",
            report.findings
        );
        assert_eq!(report.exit_code(), 0);
        assert_eq!(report.stats.inodes, 2);
        assert_eq!(
            report.stats.used_blocks,
            count - report.superblock.free_blocks
        );
    }
}

/// Flips byte `i` of block `b` (xor `mask`) in place, checks that fsck names the block,
/// and restores the byte (no image copy per flip: images here are up to tens of MiB).
fn flip_is_caught(dev: &MemDevice, bs: u32, b: u64, i: usize, mask: u8) {
    let offset = b * u64::from(bs);
    let original = read_at(dev, offset, bs as usize).expect("read block");
    let mut damaged = original.clone();
    damaged[i] ^= mask;
    write_at(dev, offset, damaged).expect("damage block");
    let report = match check(dev, &CHECK) {
        Ok(r) => r,
        Err(e) => panic!("block {b} byte {i}: operational error with a superblock surviving: {e}"),
    };
    assert_eq!(
        report.exit_code(),
        4,
        "block {b} byte {i} mask {mask:#x}: {:?}",
        report.findings
    );
    assert!(
        report.findings.iter().any(|f| f.block == Some(b)),
        "block {b} byte {i} mask {mask:#x}: no finding names the block: {:?}",
        report.findings
    );
    write_at(dev, offset, original).expect("restore block");
}

#[test]
fn every_byte_flip_of_every_nonzero_block_is_reported_512() {
    let bs = 512;
    let image = fresh_image(bs, 2000);
    let blocks = nonzero_blocks(&image, bs);
    let dev = MemDevice::from_bytes(image);
    assert!(
        blocks.len() >= 6,
        "superblocks, bitmap, freemap, inode and dir leaves: {blocks:?}"
    );
    for &b in &blocks {
        for i in 0..bs as usize {
            flip_is_caught(&dev, bs, b, i, 0x01);
            flip_is_caught(&dev, bs, b, i, 0xff);
        }
    }
}

#[test]
fn every_byte_flip_of_every_nonzero_block_is_reported_4096() {
    let bs = 4096;
    let image = fresh_image(bs, 1024);
    let blocks = nonzero_blocks(&image, bs);
    let dev = MemDevice::from_bytes(image);
    for b in blocks {
        for i in 0..bs as usize {
            flip_is_caught(&dev, bs, b, i, 0x80);
        }
    }
}

#[test]
fn sampled_byte_flips_at_64k_blocks() {
    let bs = 65536;
    let image = fresh_image(bs, 80);
    let blocks = nonzero_blocks(&image, bs);
    let dev = MemDevice::from_bytes(image);
    for b in blocks {
        for i in (0..bs as usize).step_by(97).chain([0, 47, 48, 511, 65535]) {
            flip_is_caught(&dev, bs, b, i, 0x04);
        }
    }
}

/// A filesystem large enough that the free-space map has interior nodes.
#[test]
fn sampled_byte_flips_in_a_multi_level_tree() {
    let bs = 512;
    // 15 chunks of 3712 blocks need 15 free-space map entries: more than one 512-byte
    // leaf holds (14), so the map gets an interior node.
    let image = fresh_image(bs, 15 * 3712);
    let blocks = nonzero_blocks(&image, bs);
    let dev = MemDevice::from_bytes(image);
    let sb = check(&dev, &CHECK).expect("clean").superblock;
    assert!(sb.root(tuxfs_engine::format::TreeId::Freemap).height >= 1);
    for b in blocks {
        for i in (0..bs as usize).step_by(7) {
            flip_is_caught(&dev, bs, b, i, 0x02);
        }
    }
}

#[test]
fn damaged_superblock_slot_is_repaired_by_yes() {
    for (bs, slot) in [(4096u32, 0u64), (4096, 1), (512, 1), (65536, 0)] {
        let mut image = fresh_image(bs, 100);
        image[slot as usize * bs as usize + 100] ^= 0x55;
        let dev = MemDevice::from_bytes(image);
        let before = check(&dev, &CHECK).expect("fsck -n runs");
        assert_eq!(before.exit_code(), 4);
        assert_eq!(before.findings.len(), 1, "{:?}", before.findings);
        let repaired = check(
            &dev,
            &Options {
                mode: Mode::Yes,
                check_data: false,
            },
        )
        .expect("fsck -y runs");
        assert_eq!(repaired.exit_code(), 1, "{:?}", repaired.findings);
        let after = check(&dev, &CHECK).expect("fsck -n runs");
        assert_eq!(
            after.exit_code(),
            0,
            "slot {slot} bs {bs}: {:?}",
            after.findings
        );
    }
}

#[test]
fn check_mode_changes_nothing() {
    let mut image = fresh_image(4096, 100);
    image[4096 + 7] ^= 1;
    let dev = MemDevice::from_bytes(image.clone());
    check(&dev, &CHECK).expect("runs");
    assert!(dev.snapshot() == image, "fsck -n wrote to the image");
}

#[test]
fn both_superblocks_gone_is_operational() {
    let mut image = fresh_image(4096, 100);
    image[100] ^= 1;
    image[4096 + 100] ^= 1;
    let err = check(&MemDevice::from_bytes(image), &CHECK).expect_err("no superblock survives");
    assert!(err.to_string().contains("no valid superblock"), "{err}");
}
