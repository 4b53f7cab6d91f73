//! Every on-disk structure of tuxfs: explicit little-endian encode/decode at named offsets,
//! checksums and version constants. Pure: no I/O, no state. `docs/FORMAT.md` draws each
//! structure byte by byte; the two must change together.
//!
//! **Invariant (decoding never panics).** Every decoder takes untrusted bytes and returns
//! `Err(Error::Corrupt { block, what })` naming the block and the failed check. Decoders do
//! not index without a bound check (`clippy::indexing_slicing` is denied here), never loop
//! more times than the block has bytes, and never allocate more than a small constant
//! multiple of the input's size (the decoder fuzzer measures it: at most 64 × input + 16 KiB).
//!
//! **Invariant (self-describing blocks).** Every metadata block begins with a [`BlockHeader`]:
//! magic and kind, its own block number, owner, delta sequence, filesystem id and a CRC32
//! over the whole block. A block that fails any of these checks is never trusted.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod acl;
pub mod bitmap;
pub mod btree;
mod bytes;
pub mod dirent;
pub mod extent;
pub mod hash;
pub mod header;
pub mod inode;
pub mod log;
pub mod superblock;
pub mod xattr;

pub use header::{BlockHeader, HEADER_SIZE, Kind};
pub use superblock::{Features, Superblock, TreeId, TreeRoot};

/// Major format version: a reader refuses any other major version.
pub const VERSION_MAJOR: u16 = 1;
/// Minor format version: additions a version-1 reader may ignore.
pub const VERSION_MINOR: u16 = 0;

/// Smallest supported block size in bytes.
pub const BLOCK_SIZE_MIN: u32 = 512;
/// Largest supported block size in bytes.
pub const BLOCK_SIZE_MAX: u32 = 65536;
/// Default block size in bytes.
pub const BLOCK_SIZE_DEFAULT: u32 = 4096;

/// Block numbers of the two superblock slots.
pub const SUPERBLOCK_SLOTS: [u64; 2] = [0, 1];
/// The first block the allocator may hand out: everything before it is the superblocks.
pub const FIRST_ALLOCATABLE_BLOCK: u64 = 2;
/// Smallest filesystem mkfs accepts, in blocks: superblocks, the initial trees, a bitmap
/// block, the first log block and a little room for data.
pub const MIN_BLOCK_COUNT: u64 = 64;

/// Inode number of the root directory (FUSE's FUSE_ROOT_ID).
pub const ROOT_INUM: u64 = 1;
/// Inode number of `lost+found`, created by mkfs.
pub const LOST_FOUND_INUM: u64 = 2;
/// The first inode number handed to user files; those below are reserved.
pub const FIRST_USER_INUM: u64 = 16;

/// Longest file name in bytes, as on ext4.
pub const NAME_MAX: usize = 255;
/// Deepest B+tree the decoder will walk (a 64 KiB-block tree of this height addresses
/// far more than 2^64 keys; anything deeper is corruption, and the bound stops loops).
pub const TREE_HEIGHT_MAX: u8 = 16;

/// True when `bs` is a supported block size.
pub fn block_size_valid(bs: u32) -> bool {
    bs.is_power_of_two() && (BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&bs)
}

/// CRC32 (IEEE 802.3 polynomial, as computed by `crc32fast`) of a data block.
pub fn data_crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

// Compile-time ties between constants.
const _: () = assert!(BLOCK_SIZE_MIN.is_power_of_two() && BLOCK_SIZE_MAX.is_power_of_two());
const _: () = assert!(BLOCK_SIZE_DEFAULT >= BLOCK_SIZE_MIN && BLOCK_SIZE_DEFAULT <= BLOCK_SIZE_MAX);
const _: () = assert!(SUPERBLOCK_SLOTS[1] < FIRST_ALLOCATABLE_BLOCK);
const _: () = assert!(LOST_FOUND_INUM < FIRST_USER_INUM && ROOT_INUM < LOST_FOUND_INUM);
