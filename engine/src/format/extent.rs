//! Extents: the values of the extent tree, key (inum, first file block). A file's blocks
//! with no extent are holes and read as zeros.
//!
//! ```text
//!  0  8  phys    first physical block
//!  8  4  count   blocks, 1..=max_extent_blocks(block size)
//! 12  4  flags   ExtentFlags
//! 16  4×count    CRC32 of each block's data, in order (zero for unwritten extents)
//! ```
//! Storing the data checksums with the extent means a read verifies data with the same
//! leaf lookup that found it, and a commit's leaves cover its data.

use bitflags::bitflags;

use super::btree::{LEAF_SLOT_SIZE, leaf_space};
use super::bytes::{get_u32, get_u64, put_u32, put_u64};
use crate::{Error, Result};

/// Bytes of an extent value before the checksums.
pub const EXTENT_FIXED_SIZE: usize = 16;
/// Upper bound on extent length regardless of block size (1 MiB at 4 KiB blocks).
pub const EXTENT_BLOCKS_CAP: u32 = 256;

bitflags! {
    /// Per-extent flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct ExtentFlags: u32 {
        /// Allocated but never written (fallocate): reads as zeros; checksums are zero.
        const UNWRITTEN = 1 << 0;
    }
}

/// Longest extent for `block_size`: bounded so that two maximal extents fit in one leaf.
pub const fn max_extent_blocks(block_size: u32) -> u32 {
    let half = leaf_space(block_size) / 2 - LEAF_SLOT_SIZE;
    let fit = ((half - EXTENT_FIXED_SIZE) / 4) as u32;
    if fit < EXTENT_BLOCKS_CAP {
        fit
    } else {
        EXTENT_BLOCKS_CAP
    }
}
const _: () = assert!(max_extent_blocks(super::BLOCK_SIZE_MIN) >= 16);

/// A decoded extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub phys: u64,
    pub flags: ExtentFlags,
    /// One checksum per block; its length is the extent's block count.
    pub crcs: Vec<u32>,
}

impl Extent {
    /// Blocks the extent covers.
    pub fn count(&self) -> u64 {
        self.crcs.len() as u64
    }

    /// Encodes the extent for a filesystem of `block_size`.
    pub fn encode(&self, block_size: u32) -> Vec<u8> {
        let max = max_extent_blocks(block_size) as usize;
        assert!(
            !self.crcs.is_empty() && self.crcs.len() <= max,
            "extent of {} blocks",
            self.crcs.len()
        );
        let mut b = vec![0u8; EXTENT_FIXED_SIZE];
        put_u64(&mut b, 0, self.phys);
        put_u32(&mut b, 8, self.crcs.len() as u32);
        put_u32(&mut b, 12, self.flags.bits());
        for crc in &self.crcs {
            b.extend_from_slice(&crc.to_le_bytes());
        }
        b
    }

    /// Decodes and validates an extent stored in leaf `blocknr` of a filesystem with
    /// `block_size` whose data blocks lie in `valid`.
    pub fn decode(
        v: &[u8],
        blocknr: u64,
        block_size: u32,
        valid: std::ops::Range<u64>,
    ) -> Result<Extent> {
        let bad = |what: String| Error::corrupt(blocknr, format!("extent: {what}"));
        let truncated = || bad(format!("{} bytes is too short", v.len()));
        let phys = get_u64(v, 0).ok_or_else(truncated)?;
        let count = get_u32(v, 8).ok_or_else(truncated)?;
        let flags_raw = get_u32(v, 12).ok_or_else(truncated)?;
        let flags = ExtentFlags::from_bits(flags_raw)
            .ok_or_else(|| bad(format!("unknown flags {flags_raw:#x}")))?;
        let max = max_extent_blocks(block_size);
        if count == 0 || count > max {
            return Err(bad(format!("block count {count} outside 1..={max}")));
        }
        if v.len() != EXTENT_FIXED_SIZE + 4 * count as usize {
            return Err(bad(format!("{} bytes for {count} blocks", v.len())));
        }
        let end = phys.checked_add(u64::from(count));
        if !valid.contains(&phys) || end.is_none_or(|e| e > valid.end) {
            return Err(bad(format!("blocks {phys}+{count} outside the filesystem")));
        }
        let crcs: Vec<u32> = (0..count as usize)
            .map(|i| get_u32(v, EXTENT_FIXED_SIZE + 4 * i).ok_or_else(truncated))
            .collect::<Result<_>>()?;
        if flags.contains(ExtentFlags::UNWRITTEN) && crcs.iter().any(|&c| c != 0) {
            return Err(bad("unwritten extent with non-zero checksums".into()));
        }
        Ok(Extent { phys, flags, crcs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let e = Extent {
            phys: 100,
            flags: ExtentFlags::empty(),
            crcs: vec![1, 2, 3],
        };
        let b = e.encode(4096);
        assert_eq!(Extent::decode(&b, 9, 4096, 2..1000).expect("decodes"), e);
        assert!(Extent::decode(&b, 9, 4096, 2..102).is_err(), "past the end");
        for len in 0..b.len() {
            assert!(Extent::decode(&b[..len], 9, 4096, 2..1000).is_err());
        }
        let mut c = b.clone();
        c[8] = 200; // count disagrees with length
        assert!(Extent::decode(&c, 9, 4096, 2..1000).is_err());
        let mut c = b.clone();
        c[..8].copy_from_slice(&(u64::MAX - 1).to_le_bytes()); // phys + count overflows
        assert!(Extent::decode(&c, 9, 4096, 2..u64::MAX).is_err());
    }

    #[test]
    fn unwritten_extents_decode_only_with_zero_checksums() {
        let e = Extent {
            phys: 100,
            flags: ExtentFlags::UNWRITTEN,
            crcs: vec![0; 4],
        };
        let b = e.encode(4096);
        assert_eq!(Extent::decode(&b, 9, 4096, 2..1000).expect("decodes"), e);
        let mut c = b.clone();
        c[EXTENT_FIXED_SIZE + 4] = 1; // a checksum on a block never written
        let err = Extent::decode(&c, 9, 4096, 2..1000).expect_err("corrupt");
        assert!(err.to_string().contains("block 9"), "{err}");
        let mut c = b;
        c[12] = 0b10; // an unknown flag
        assert!(Extent::decode(&c, 9, 4096, 2..1000).is_err());
    }

    #[test]
    fn limits_per_block_size() {
        assert_eq!(max_extent_blocks(4096), 256);
        assert!(max_extent_blocks(512) < 256);
    }
}
