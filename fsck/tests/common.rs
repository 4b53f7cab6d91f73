//! Helpers shared by the fsck tests: fresh images made by the engine's mkfs in memory.

#![allow(dead_code)]

use std::process::Command;

use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::mkfs::{MkfsParams, format_device};

pub fn params(block_size: u32, block_count: u64) -> MkfsParams {
    MkfsParams {
        block_size,
        block_count,
        label: "fsck-test".into(),
        uuid: [0x5a; 16],
        hash_seed: [0x11; 16],
        now: Timestamp {
            sec: 1_763_000_000,
            nsec: 123,
        },
        uid: 1000,
        gid: 1000,
    }
}

/// Runs fsck.tuxfs with `args`: its exit code (-1 when killed), stdout and stderr.
pub fn fsck(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fsck-tuxfs"))
        .args(args)
        .output()
        .expect("runs fsck");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh filesystem image as bytes.
pub fn fresh_image(block_size: u32, block_count: u64) -> Vec<u8> {
    let dev = MemDevice::new((block_size as u64 * block_count) as usize);
    format_device(&dev, &params(block_size, block_count), false).expect("mkfs");
    dev.snapshot()
}

/// Block numbers of the blocks that are not all zeros.
pub fn nonzero_blocks(image: &[u8], block_size: u32) -> Vec<u64> {
    image
        .chunks(block_size as usize)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x != 0))
        .map(|(i, _)| i as u64)
        .collect()
}
