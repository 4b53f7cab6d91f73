//! The common header at the start of every metadata block.
//!
//! ```text
//! offset size field
//!  0     4    magic     per kind (see Kind::magic), little-endian u32
//!  4     1    kind      Kind as u8; must agree with magic
//!  5     1    level     B+tree level (0 = leaf); 0 for other kinds
//!  6     2    reserved  zero
//!  8     8    blocknr   the block's own number: catches misdirected writes
//! 16     8    owner     tree id (B+tree nodes), chunk index (bitmap), inode (xattr), 0 (log, super)
//! 24     8    delta     delta sequence number that wrote the block
//! 32     8    fs_id     Superblock::fs_id (UUID and hash seed): catches blocks of an older mkfs
//! 40     4    checksum  CRC32 of the whole block with these 4 bytes taken as zero
//! 44     4    reserved  zero
//! 48          payload
//! ```

use super::bytes::{get_u8, get_u16, get_u32, get_u64, put_u8, put_u16, put_u32, put_u64};
use crate::{Error, Result};

/// Bytes of the common header; payloads start here.
pub const HEADER_SIZE: usize = 48;

const OFF_MAGIC: usize = 0;
const OFF_KIND: usize = 4;
const OFF_LEVEL: usize = 5;
const OFF_RESERVED_A: usize = 6;
const OFF_BLOCKNR: usize = 8;
const OFF_OWNER: usize = 16;
const OFF_DELTA: usize = 24;
const OFF_FS_ID: usize = 32;
const OFF_CHECKSUM: usize = 40;
const OFF_RESERVED_B: usize = 44;
const _: () = assert!(OFF_RESERVED_B + 4 == HEADER_SIZE);

/// What a metadata block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Super = 1,
    BtreeNode = 2,
    BtreeLeaf = 3,
    Bitmap = 4,
    Log = 5,
    Xattr = 6,
}

impl Kind {
    /// All kinds, for iteration in tests and fsck reports.
    pub const ALL: [Kind; 6] = [
        Kind::Super,
        Kind::BtreeNode,
        Kind::BtreeLeaf,
        Kind::Bitmap,
        Kind::Log,
        Kind::Xattr,
    ];

    /// The magic number that starts a block of this kind (ASCII, read little-endian).
    pub const fn magic(self) -> u32 {
        match self {
            Kind::Super => u32::from_le_bytes(*b"TXSB"),
            Kind::BtreeNode => u32::from_le_bytes(*b"TXBN"),
            Kind::BtreeLeaf => u32::from_le_bytes(*b"TXBL"),
            Kind::Bitmap => u32::from_le_bytes(*b"TXBM"),
            Kind::Log => u32::from_le_bytes(*b"TXLG"),
            Kind::Xattr => u32::from_le_bytes(*b"TXXA"),
        }
    }

    /// Human-readable name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Super => "superblock",
            Kind::BtreeNode => "btree node",
            Kind::BtreeLeaf => "btree leaf",
            Kind::Bitmap => "bitmap",
            Kind::Log => "log block",
            Kind::Xattr => "xattr block",
        }
    }
}

impl TryFrom<u8> for Kind {
    type Error = u8;
    fn try_from(v: u8) -> std::result::Result<Self, u8> {
        Kind::ALL.into_iter().find(|k| *k as u8 == v).ok_or(v)
    }
}

/// The decoded common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub kind: Kind,
    pub level: u8,
    pub blocknr: u64,
    pub owner: u64,
    pub delta: u64,
    pub fs_id: u64,
}

/// CRC32 of `block` with the checksum field taken as zero.
pub fn block_checksum(block: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(block.get(..OFF_CHECKSUM).unwrap_or(block));
    h.update(&[0u8; 4]);
    h.update(block.get(OFF_CHECKSUM + 4..).unwrap_or(&[]));
    h.finalize()
}

impl BlockHeader {
    /// Writes the header into `block` (zeroing the checksum field); call [`seal`] after the
    /// payload is complete.
    pub fn encode(&self, block: &mut [u8]) {
        assert!(block.len() >= HEADER_SIZE, "block shorter than its header");
        put_u32(block, OFF_MAGIC, self.kind.magic());
        put_u8(block, OFF_KIND, self.kind as u8);
        put_u8(block, OFF_LEVEL, self.level);
        put_u16(block, OFF_RESERVED_A, 0);
        put_u64(block, OFF_BLOCKNR, self.blocknr);
        put_u64(block, OFF_OWNER, self.owner);
        put_u64(block, OFF_DELTA, self.delta);
        put_u64(block, OFF_FS_ID, self.fs_id);
        put_u32(block, OFF_CHECKSUM, 0);
        put_u32(block, OFF_RESERVED_B, 0);
    }

    /// Decodes and verifies the header of a block read from `blocknr`, expecting `kind`.
    /// Checks, in order: length, magic, kind, reserved fields, the checksum over the whole
    /// block, its own block number, and the filesystem id (skipped when `fs_id` is `None`,
    /// as when reading a superblock to learn it).
    pub fn decode(block: &[u8], blocknr: u64, kind: Kind, fs_id: Option<u64>) -> Result<Self> {
        let bad = |what: String| Error::corrupt(blocknr, what);
        let field = |v: Option<u64>| v.ok_or_else(|| bad("block shorter than its header".into()));
        if block.len() < HEADER_SIZE {
            return Err(bad(format!(
                "block of {} bytes is shorter than its header",
                block.len()
            )));
        }
        let magic = field(get_u32(block, OFF_MAGIC).map(u64::from))? as u32;
        if magic != kind.magic() {
            return Err(bad(
                match Kind::ALL.into_iter().find(|k| k.magic() == magic) {
                    Some(other) => format!(
                        "expected a {}, found the magic of a {}",
                        kind.name(),
                        other.name()
                    ),
                    None => format!("bad magic {magic:#010x} for a {}", kind.name()),
                },
            ));
        }
        let kind_byte = field(get_u8(block, OFF_KIND).map(u64::from))? as u8;
        if kind_byte != kind as u8 {
            return Err(bad(format!(
                "kind byte {kind_byte} disagrees with {} magic",
                kind.name()
            )));
        }
        let reserved_a = field(get_u16(block, OFF_RESERVED_A).map(u64::from))?;
        let reserved_b = field(get_u32(block, OFF_RESERVED_B).map(u64::from))?;
        if reserved_a != 0 || reserved_b != 0 {
            return Err(bad("reserved header bytes are not zero".into()));
        }
        let header = BlockHeader {
            kind,
            level: field(get_u8(block, OFF_LEVEL).map(u64::from))? as u8,
            blocknr: field(get_u64(block, OFF_BLOCKNR))?,
            owner: field(get_u64(block, OFF_OWNER))?,
            delta: field(get_u64(block, OFF_DELTA))?,
            fs_id: field(get_u64(block, OFF_FS_ID))?,
        };
        let stored = field(get_u32(block, OFF_CHECKSUM).map(u64::from))? as u32;
        let computed = block_checksum(block);
        if stored != computed {
            return Err(Error::ChecksumMismatch {
                block: blocknr,
                expected: stored,
                got: computed,
            });
        }
        if header.blocknr != blocknr {
            return Err(bad(format!(
                "header says block {} (misdirected write?)",
                header.blocknr
            )));
        }
        if let Some(expected) = fs_id
            && header.fs_id != expected
        {
            return Err(bad(format!(
                "filesystem id {:#018x} is not this filesystem's {expected:#018x} (stale block?)",
                header.fs_id
            )));
        }
        Ok(header)
    }
}

/// Computes and stores the checksum of a fully encoded block. The last step of every encoder.
pub fn seal(block: &mut [u8]) {
    assert!(block.len() >= HEADER_SIZE, "block shorter than its header");
    let crc = block_checksum(block);
    put_u32(block, OFF_CHECKSUM, crc);
}

/// Reads the magic of a block without verifying anything (fsck uses it to say what a
/// damaged block seems to be).
pub fn peek_kind(block: &[u8]) -> Option<Kind> {
    let magic = get_u32(block, OFF_MAGIC)?;
    Kind::ALL.into_iter().find(|k| k.magic() == magic)
}

/// Reads the delta number of a block without verifying anything.
pub fn peek_delta(block: &[u8]) -> Option<u64> {
    get_u64(block, OFF_DELTA)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: Kind) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        BlockHeader {
            kind,
            level: 2,
            blocknr: 77,
            owner: 5,
            delta: 9,
            fs_id: 0xabcd,
        }
        .encode(&mut b);
        b[100] = 42;
        seal(&mut b);
        b
    }

    #[test]
    fn round_trip_every_kind() {
        for kind in Kind::ALL {
            let b = sample(kind);
            let h = BlockHeader::decode(&b, 77, kind, Some(0xabcd)).expect("decodes");
            assert_eq!(h.kind, kind);
            assert_eq!((h.level, h.blocknr, h.owner, h.delta), (2, 77, 5, 9));
            assert_eq!(Kind::try_from(kind as u8), Ok(kind));
            assert_eq!(peek_kind(&b), Some(kind));
        }
        assert_eq!(Kind::try_from(0), Err(0));
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let b = sample(Kind::BtreeLeaf);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(
                BlockHeader::decode(&c, 77, Kind::BtreeLeaf, Some(0xabcd)).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn misdirected_stale_and_wrong_kind() {
        let b = sample(Kind::Log);
        let e = BlockHeader::decode(&b, 78, Kind::Log, Some(0xabcd)).unwrap_err();
        assert!(
            e.to_string().contains("block 78") && e.to_string().contains("misdirected"),
            "{e}"
        );
        let e = BlockHeader::decode(&b, 77, Kind::Log, Some(1)).unwrap_err();
        assert!(e.to_string().contains("stale"), "{e}");
        let e = BlockHeader::decode(&b, 77, Kind::Bitmap, None).unwrap_err();
        assert!(e.to_string().contains("log block"), "{e}");
        assert!(BlockHeader::decode(&b[..10], 77, Kind::Log, None).is_err());
    }
}
