//! Free-space bitmap blocks (`Kind::Bitmap`, `owner` = chunk index). Bit `i` of chunk `c`
//! (byte i/8, bit i%8, least significant first) is block `c * bits_per_chunk + i`:
//! 1 = in use, 0 = free. Bits for blocks at or past the end of the filesystem are 0.
//! The free-space map tree maps chunk index → bitmap block number.
//!
//! ```text
//! 48   bits, to the end of the block
//! ```

use super::bytes::get_u8;
use super::header::{BlockHeader, HEADER_SIZE, Kind, seal};
use crate::{Error, Result};

/// Blocks one bitmap block describes.
pub const fn bits_per_chunk(block_size: u32) -> u64 {
    (block_size as u64 - HEADER_SIZE as u64) * 8
}

/// Chunks needed for a filesystem of `block_count` blocks.
pub const fn chunk_count(block_size: u32, block_count: u64) -> u64 {
    block_count.div_ceil(bits_per_chunk(block_size))
}

/// Encodes a bitmap block from `bits` (exactly the payload length).
pub fn encode(block: &mut [u8], header: &BlockHeader, bits: &[u8]) {
    assert_eq!(header.kind, Kind::Bitmap);
    assert_eq!(
        bits.len(),
        block.len() - HEADER_SIZE,
        "bitmap payload must fill the block"
    );
    block.fill(0);
    header.encode(block);
    super::bytes::put_bytes(block, HEADER_SIZE, bits);
    seal(block);
}

/// Decodes bitmap block `blocknr` for chunk `chunk` of a filesystem of `block_count` blocks,
/// returning its bits. Checks that bits past the end of the filesystem are zero.
pub fn decode(
    block: &[u8],
    blocknr: u64,
    chunk: u64,
    block_count: u64,
    fs_id: u64,
) -> Result<&[u8]> {
    let header = BlockHeader::decode(block, blocknr, Kind::Bitmap, Some(fs_id))?;
    if header.owner != chunk || header.level != 0 {
        return Err(Error::corrupt(
            blocknr,
            format!("bitmap for chunk {} reached as chunk {chunk}", header.owner),
        ));
    }
    let bits = block.get(HEADER_SIZE..).unwrap_or(&[]);
    let per = bits_per_chunk(block.len() as u32);
    let first = chunk.saturating_mul(per);
    let valid = block_count.saturating_sub(first).min(per);
    for i in valid..per {
        if bit(bits, i) == Some(true) {
            return Err(Error::corrupt(
                blocknr,
                format!(
                    "bit for block {} past the end is set",
                    u128::from(first) + u128::from(i)
                ),
            ));
        }
    }
    Ok(bits)
}

/// Bit `i` of a bitmap payload.
pub fn bit(bits: &[u8], i: u64) -> Option<bool> {
    get_u8(bits, usize::try_from(i / 8).ok()?).map(|byte| byte & (1 << (i % 8)) != 0)
}

/// Sets or clears bit `i`; panics when out of range (callers size the bitmap).
pub fn set_bit(bits: &mut [u8], i: u64, used: bool) {
    let Some(byte) = bits.get_mut((i / 8) as usize) else {
        panic!("bitmap bit {i} outside a payload of {} bytes", bits.len());
    };
    if used {
        *byte |= 1 << (i % 8);
    } else {
        *byte &= !(1 << (i % 8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tail_check() {
        let bs = 512u32;
        let per = bits_per_chunk(bs);
        let mut bits = vec![0u8; bs as usize - HEADER_SIZE];
        for i in [0, 1, 7, 8, 100] {
            set_bit(&mut bits, i, true);
        }
        let h = BlockHeader {
            kind: Kind::Bitmap,
            level: 0,
            blocknr: 5,
            owner: 1,
            delta: 1,
            fs_id: 3,
        };
        let mut blk = vec![0u8; bs as usize];
        encode(&mut blk, &h, &bits);
        let got = decode(&blk, 5, 1, per + 200, 3).expect("decodes");
        assert_eq!(bit(got, 100), Some(true));
        assert_eq!(bit(got, 99), Some(false));
        assert!(
            decode(&blk, 5, 1, per + 50, 3).is_err(),
            "bit 100 is past the end"
        );
        assert!(decode(&blk, 5, 0, per * 3, 3).is_err(), "wrong chunk");
        assert_eq!(chunk_count(bs, per * 2 + 1), 3);
    }
}
