//! The superblock: two slots (blocks 0 and 1) that alternate, each a complete copy with its
//! own sequence number and checksum. The newest slot that verifies wins.
//!
//! The payload (after the 48-byte common header, `kind` = Super, `owner` = 0, `delta` = the
//! last delta included) is laid out below; it fits in 512 bytes so every block size can hold
//! it, and the rest of the block is zero (covered by the header checksum).
//!
//! ```text
//! offset size field
//!  48    2    version_major       must equal VERSION_MAJOR
//!  50    2    version_minor
//!  52    4    block_size          power of two, 512..=65536
//!  56    8    block_count         blocks in the filesystem
//!  64    8    feature_compat      unknown bits: ignored
//!  72    8    feature_ro_compat   unknown bits: mount read-only only
//!  80    8    feature_incompat    unknown bits: refuse to mount
//!  88   16    uuid
//! 104   64    label               UTF-8, NUL padded
//! 168   16    hash_seed           SipHash key for directory name hashes
//! 184    8    created_sec         i64 seconds since the epoch (UTC)
//! 192    4    created_nsec
//! 196    4    state               1 = clean (unmounted), 2 = mounted / not cleanly unmounted
//! 200    8    sequence            incremented at every superblock write; newest valid wins
//! 208    8    unify_seq           number of unifies so far
//! 216    8    log_head            block of the first log block after this unify
//! 224    8    log_delta           delta sequence expected in that log block
//! 232    8    next_inum           next inode number to hand out
//! 240   64    roots[8]            root block of each tree (TreeId order), 0 = empty tree
//! 304    8    heights[8]          height of each tree (0 = the root is a leaf)
//! 312    8    free_blocks         free blocks as of this unify (informative)
//! 320    8    inode_count         inodes as of this unify (informative)
//! 328    4    mount_count
//! 332    4    reserved            zero
//! 336    8    last_mount_sec
//! 344    8    last_write_sec
//! 352    8    first_block         first allocatable block (FIRST_ALLOCATABLE_BLOCK)
//! 360    8    log_next            block allocated for the first log block of delta
//!                                 log_delta + 1 (0 = not recorded)
//! 368    8    log_next_of         the log_head that log_next was allocated with; log_next
//!                                 counts only when this equals log_head
//! 376  136    reserved            zero
//! ```

use bitflags::bitflags;

use super::bytes::{
    all_zero, get_array, get_bytes, get_i64, get_u8, get_u16, get_u32, get_u64, put_bytes, put_i64,
    put_u8, put_u16, put_u32, put_u64,
};
use super::hash::NameHasher;
use super::header::{BlockHeader, HEADER_SIZE, Kind, seal};
use super::{MIN_BLOCK_COUNT, VERSION_MAJOR, block_size_valid};
use crate::{Error, Result};

/// Bytes of the superblock that carry fields; the rest of the block is zero.
pub const SUPERBLOCK_SIZE: usize = 512;
/// Bytes of the label field.
pub const LABEL_MAX: usize = 64;
/// Number of tree root slots.
pub const TREE_SLOTS: usize = 8;

const OFF_VERSION_MAJOR: usize = 48;
const OFF_VERSION_MINOR: usize = 50;
const OFF_BLOCK_SIZE: usize = 52;
const OFF_BLOCK_COUNT: usize = 56;
const OFF_COMPAT: usize = 64;
const OFF_RO_COMPAT: usize = 72;
const OFF_INCOMPAT: usize = 80;
const OFF_UUID: usize = 88;
const OFF_LABEL: usize = 104;
const OFF_HASH_SEED: usize = 168;
const OFF_CREATED_SEC: usize = 184;
const OFF_CREATED_NSEC: usize = 192;
const OFF_STATE: usize = 196;
const OFF_SEQUENCE: usize = 200;
const OFF_UNIFY_SEQ: usize = 208;
const OFF_LOG_HEAD: usize = 216;
const OFF_LOG_DELTA: usize = 224;
const OFF_NEXT_INUM: usize = 232;
const OFF_ROOTS: usize = 240;
const OFF_HEIGHTS: usize = 304;
const OFF_FREE_BLOCKS: usize = 312;
const OFF_INODE_COUNT: usize = 320;
const OFF_MOUNT_COUNT: usize = 328;
const OFF_RESERVED_A: usize = 332;
const OFF_LAST_MOUNT: usize = 336;
const OFF_LAST_WRITE: usize = 344;
const OFF_FIRST_BLOCK: usize = 352;
const OFF_LOG_NEXT: usize = 360;
const OFF_LOG_NEXT_OF: usize = 368;
const OFF_RESERVED_TAIL: usize = 376;
const _: () = assert!(OFF_ROOTS + 8 * TREE_SLOTS == OFF_HEIGHTS);
const _: () = assert!(OFF_HEIGHTS + TREE_SLOTS == OFF_FREE_BLOCKS);
const _: () = assert!(OFF_RESERVED_TAIL <= SUPERBLOCK_SIZE);
const _: () = assert!(SUPERBLOCK_SIZE <= super::BLOCK_SIZE_MIN as usize);
const _: () = assert!(OFF_VERSION_MAJOR == HEADER_SIZE);

bitflags! {
    /// Features a reader may ignore.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CompatFeatures: u64 {}
}

bitflags! {
    /// Features a reader that does not know them may only mount read-only.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RoCompatFeatures: u64 {}
}

bitflags! {
    /// Features a reader that does not know them must refuse. Declared now so that images
    /// that use them are refused by this version; implemented by later versions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct IncompatFeatures: u64 {
        /// Snapshots: the SNAPSHOTS tree root is live (format reserved, not implemented).
        const SNAPSHOTS = 1 << 0;
        /// Shared extents: the REFCOUNT tree counts references to shared blocks
        /// (format reserved, not implemented).
        const SHARED_EXTENTS = 1 << 1;
        /// Test filesystems only (never set by mkfs.tuxfs): every directory name hashes
        /// to 0 (format::hash::NameHasher), so tests can make any number of names share
        /// a hash.
        const CONSTANT_NAME_HASH = 1 << 2;
    }
}

/// The three feature masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub compat: u64,
    pub ro_compat: u64,
    pub incompat: u64,
}

impl Features {
    /// Incompat bits this build implements.
    pub const SUPPORTED_INCOMPAT: u64 = IncompatFeatures::CONSTANT_NAME_HASH.bits();
    /// Ro-compat bits this build implements.
    pub const SUPPORTED_RO_COMPAT: u64 = 0;

    /// Incompat bits this build does not implement (non-zero: refuse to mount).
    pub fn unknown_incompat(&self) -> u64 {
        self.incompat & !Self::SUPPORTED_INCOMPAT
    }

    /// Ro-compat bits this build does not implement (non-zero: read-only mount only).
    pub fn unknown_ro_compat(&self) -> u64 {
        self.ro_compat & !Self::SUPPORTED_RO_COMPAT
    }
}

/// The trees of a filesystem, in superblock slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TreeId {
    /// Inode table: key (inum, 0) → inode record.
    Inodes = 0,
    /// File data: key (inum, file block) → extent.
    Extents = 1,
    /// Directory index: key (directory inum, hash position) → entry.
    Dirs = 2,
    /// Free-space map index: key (chunk, 0) → bitmap block number.
    Freemap = 3,
    /// Orphans (unlinked while open): key (inum, 0) → empty value.
    Orphans = 4,
    /// Reserved for snapshots (IncompatFeatures::SNAPSHOTS); always empty in version 1.
    Snapshots = 5,
    /// Reserved for shared-extent reference counts (IncompatFeatures::SHARED_EXTENTS);
    /// always empty in version 1.
    Refcounts = 6,
}

impl TreeId {
    /// Trees in use by version 1.
    pub const ACTIVE: [TreeId; 5] = [
        TreeId::Inodes,
        TreeId::Extents,
        TreeId::Dirs,
        TreeId::Freemap,
        TreeId::Orphans,
    ];
    /// Every tree slot that has a meaning.
    pub const ALL: [TreeId; 7] = [
        TreeId::Inodes,
        TreeId::Extents,
        TreeId::Dirs,
        TreeId::Freemap,
        TreeId::Orphans,
        TreeId::Snapshots,
        TreeId::Refcounts,
    ];

    /// Name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            TreeId::Inodes => "inode table",
            TreeId::Extents => "extent tree",
            TreeId::Dirs => "directory index",
            TreeId::Freemap => "free-space map",
            TreeId::Orphans => "orphan list",
            TreeId::Snapshots => "snapshot tree",
            TreeId::Refcounts => "refcount tree",
        }
    }
}

impl TryFrom<u64> for TreeId {
    type Error = u64;
    fn try_from(v: u64) -> std::result::Result<Self, u64> {
        TreeId::ALL.into_iter().find(|t| *t as u64 == v).ok_or(v)
    }
}

/// Where a tree starts: its root block (0 for an empty tree) and its height (0 = the root
/// is a leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeRoot {
    pub block: u64,
    pub height: u8,
}

/// The name hasher the `incompat` features and `hash_seed` ask for.
pub fn name_hasher_of(incompat: u64, hash_seed: [u8; 16]) -> NameHasher {
    if incompat & IncompatFeatures::CONSTANT_NAME_HASH.bits() != 0 {
        NameHasher::constant_for_tests(hash_seed)
    } else {
        NameHasher::siphash(hash_seed)
    }
}

/// The filesystem id of a filesystem with this UUID and hash seed (see [`Superblock::fs_id`]).
pub fn fs_id_of(uuid: &[u8; 16], hash_seed: &[u8; 16]) -> u64 {
    let word = |b: &[u8; 16]| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    word(uuid) ^ word(hash_seed)
}

/// Superblock state field values.
pub const STATE_CLEAN: u32 = 1;
/// The filesystem was mounted and not cleanly unmounted since.
pub const STATE_MOUNTED: u32 = 2;

/// A decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version_minor: u16,
    pub block_size: u32,
    pub block_count: u64,
    pub features: Features,
    pub uuid: [u8; 16],
    pub label: String,
    pub hash_seed: [u8; 16],
    pub created_sec: i64,
    pub created_nsec: u32,
    pub state: u32,
    pub sequence: u64,
    pub unify_seq: u64,
    /// Delta sequence of the last delta this superblock includes (the header's `delta`).
    pub delta: u64,
    pub log_head: u64,
    pub log_delta: u64,
    /// Block allocated for the first log block of delta `log_delta + 1`; counts only when
    /// `log_next_of == log_head` (see [`Superblock::log_next`]).
    pub log_next: u64,
    /// The `log_head` that `log_next` was allocated with. A writer that moves `log_head`
    /// without knowing `log_next` leaves the pair unequal, so a stale `log_next` is ignored.
    pub log_next_of: u64,
    pub next_inum: u64,
    pub roots: [TreeRoot; TREE_SLOTS],
    pub free_blocks: u64,
    pub inode_count: u64,
    pub mount_count: u32,
    pub last_mount_sec: i64,
    pub last_write_sec: i64,
    pub first_block: u64,
}

impl Superblock {
    /// The 64-bit id stamped into every block header: the first 8 bytes of the UUID XOR the
    /// first 8 bytes of the hash seed. The seed is random at every mkfs and cannot be chosen,
    /// so even `mkfs --uuid` with an old filesystem's UUID gets a new id, and no block of
    /// the old filesystem (a stale log block, say) ever verifies as one of the new one's.
    pub fn fs_id(&self) -> u64 {
        fs_id_of(&self.uuid, &self.hash_seed)
    }

    /// How this filesystem hashes directory names.
    pub fn name_hasher(&self) -> NameHasher {
        name_hasher_of(self.features.incompat, self.hash_seed)
    }

    /// The block allocated for the first log block of delta `log_delta + 1`, when this
    /// superblock records one for its own `log_head` (FORMAT.md §6: recovery reads it to
    /// tell a damaged first delta from a torn one).
    pub fn log_next(&self) -> Option<u64> {
        (self.log_next != 0 && self.log_next_of == self.log_head).then_some(self.log_next)
    }

    /// Sets the log head and the block allocated for the delta after it.
    pub fn set_log_heads(&mut self, head: u64, next: u64) {
        self.log_head = head;
        self.log_next = next;
        self.log_next_of = head;
    }

    /// The root of `tree`.
    pub fn root(&self, tree: TreeId) -> TreeRoot {
        self.roots.get(tree as usize).copied().unwrap_or_default()
    }

    /// Sets the root of `tree`.
    pub fn set_root(&mut self, tree: TreeId, root: TreeRoot) {
        if let Some(slot) = self.roots.get_mut(tree as usize) {
            *slot = root;
        }
    }

    /// Encodes into a full block for superblock slot `blocknr`.
    pub fn encode(&self, block: &mut [u8], blocknr: u64) {
        assert_eq!(
            block.len(),
            self.block_size as usize,
            "superblock buffer must be one block"
        );
        assert!(
            self.label.len() <= LABEL_MAX,
            "label longer than {LABEL_MAX} bytes"
        );
        block.fill(0);
        BlockHeader {
            kind: Kind::Super,
            level: 0,
            blocknr,
            owner: 0,
            delta: self.delta,
            fs_id: self.fs_id(),
        }
        .encode(block);
        put_u16(block, OFF_VERSION_MAJOR, VERSION_MAJOR);
        put_u16(block, OFF_VERSION_MINOR, self.version_minor);
        put_u32(block, OFF_BLOCK_SIZE, self.block_size);
        put_u64(block, OFF_BLOCK_COUNT, self.block_count);
        put_u64(block, OFF_COMPAT, self.features.compat);
        put_u64(block, OFF_RO_COMPAT, self.features.ro_compat);
        put_u64(block, OFF_INCOMPAT, self.features.incompat);
        put_bytes(block, OFF_UUID, &self.uuid);
        put_bytes(block, OFF_LABEL, self.label.as_bytes());
        put_bytes(block, OFF_HASH_SEED, &self.hash_seed);
        put_i64(block, OFF_CREATED_SEC, self.created_sec);
        put_u32(block, OFF_CREATED_NSEC, self.created_nsec);
        put_u32(block, OFF_STATE, self.state);
        put_u64(block, OFF_SEQUENCE, self.sequence);
        put_u64(block, OFF_UNIFY_SEQ, self.unify_seq);
        put_u64(block, OFF_LOG_HEAD, self.log_head);
        put_u64(block, OFF_LOG_DELTA, self.log_delta);
        put_u64(block, OFF_LOG_NEXT, self.log_next);
        put_u64(block, OFF_LOG_NEXT_OF, self.log_next_of);
        put_u64(block, OFF_NEXT_INUM, self.next_inum);
        for (i, root) in self.roots.iter().enumerate() {
            put_u64(block, OFF_ROOTS + 8 * i, root.block);
            put_u8(block, OFF_HEIGHTS + i, root.height);
        }
        put_u64(block, OFF_FREE_BLOCKS, self.free_blocks);
        put_u64(block, OFF_INODE_COUNT, self.inode_count);
        put_u32(block, OFF_MOUNT_COUNT, self.mount_count);
        put_u32(block, OFF_RESERVED_A, 0);
        put_i64(block, OFF_LAST_MOUNT, self.last_mount_sec);
        put_i64(block, OFF_LAST_WRITE, self.last_write_sec);
        put_u64(block, OFF_FIRST_BLOCK, self.first_block);
        seal(block);
    }

    /// Reads the block size a superblock claims, before anything is verified, so the caller
    /// knows how many bytes to read for the full check. `None` when the magic is absent or
    /// the size is not a supported block size.
    pub fn peek_block_size(first_bytes: &[u8]) -> Option<u32> {
        if get_u32(first_bytes, 0)? != Kind::Super.magic() {
            return None;
        }
        let bs = get_u32(first_bytes, OFF_BLOCK_SIZE)?;
        block_size_valid(bs).then_some(bs)
    }

    /// Decodes and validates a full superblock block read from slot `blocknr`.
    pub fn decode(block: &[u8], blocknr: u64) -> Result<Self> {
        let header = BlockHeader::decode(block, blocknr, Kind::Super, None)?;
        let bad = |what: String| Error::corrupt(blocknr, what);
        let short = || bad("superblock truncated".into());
        if header.level != 0 || header.owner != 0 {
            return Err(bad("superblock header has non-zero level or owner".into()));
        }
        let major = get_u16(block, OFF_VERSION_MAJOR).ok_or_else(short)?;
        if major != VERSION_MAJOR {
            return Err(Error::Unsupported {
                what: format!(
                    "block {blocknr}: format version {major}, this build reads {VERSION_MAJOR}"
                ),
            });
        }
        let block_size = get_u32(block, OFF_BLOCK_SIZE).ok_or_else(short)?;
        if !block_size_valid(block_size) || block_size as usize != block.len() {
            return Err(bad(format!(
                "block size {block_size} invalid or not the size read"
            )));
        }
        let label_bytes = get_bytes(block, OFF_LABEL, LABEL_MAX).ok_or_else(short)?;
        let label_len = label_bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(LABEL_MAX);
        let (label, label_pad) = label_bytes.split_at(label_len);
        if !all_zero(label_pad) {
            return Err(bad("label is not NUL padded".into()));
        }
        let label = std::str::from_utf8(label)
            .map_err(|_| bad("label is not UTF-8".into()))?
            .to_string();
        let mut roots = [TreeRoot::default(); TREE_SLOTS];
        for (i, root) in roots.iter_mut().enumerate() {
            root.block = get_u64(block, OFF_ROOTS + 8 * i).ok_or_else(short)?;
            root.height = get_u8(block, OFF_HEIGHTS + i).ok_or_else(short)?;
        }
        let u64_at = |off| get_u64(block, off).ok_or_else(short);
        let sb = Superblock {
            version_minor: get_u16(block, OFF_VERSION_MINOR).ok_or_else(short)?,
            block_size,
            block_count: u64_at(OFF_BLOCK_COUNT)?,
            features: Features {
                compat: u64_at(OFF_COMPAT)?,
                ro_compat: u64_at(OFF_RO_COMPAT)?,
                incompat: u64_at(OFF_INCOMPAT)?,
            },
            uuid: get_array(block, OFF_UUID).ok_or_else(short)?,
            label,
            hash_seed: get_array(block, OFF_HASH_SEED).ok_or_else(short)?,
            created_sec: get_i64(block, OFF_CREATED_SEC).ok_or_else(short)?,
            created_nsec: get_u32(block, OFF_CREATED_NSEC).ok_or_else(short)?,
            state: get_u32(block, OFF_STATE).ok_or_else(short)?,
            sequence: u64_at(OFF_SEQUENCE)?,
            unify_seq: u64_at(OFF_UNIFY_SEQ)?,
            delta: header.delta,
            log_head: u64_at(OFF_LOG_HEAD)?,
            log_delta: u64_at(OFF_LOG_DELTA)?,
            log_next: u64_at(OFF_LOG_NEXT)?,
            log_next_of: u64_at(OFF_LOG_NEXT_OF)?,
            next_inum: u64_at(OFF_NEXT_INUM)?,
            roots,
            free_blocks: u64_at(OFF_FREE_BLOCKS)?,
            inode_count: u64_at(OFF_INODE_COUNT)?,
            mount_count: get_u32(block, OFF_MOUNT_COUNT).ok_or_else(short)?,
            last_mount_sec: get_i64(block, OFF_LAST_MOUNT).ok_or_else(short)?,
            last_write_sec: get_i64(block, OFF_LAST_WRITE).ok_or_else(short)?,
            first_block: u64_at(OFF_FIRST_BLOCK)?,
        };
        if get_u32(block, OFF_RESERVED_A) != Some(0)
            || !all_zero(block.get(OFF_RESERVED_TAIL..).unwrap_or(&[]))
        {
            return Err(bad("reserved superblock bytes are not zero".into()));
        }
        if header.fs_id != sb.fs_id() {
            return Err(bad("header filesystem id disagrees with the UUID".into()));
        }
        sb.validate(blocknr)?;
        Ok(sb)
    }

    /// Geometry and field ranges, checked on decode and asserted before encode by callers.
    pub fn validate(&self, blocknr: u64) -> Result<()> {
        let bad = |what: String| Err(Error::corrupt(blocknr, what));
        if self.block_count < MIN_BLOCK_COUNT {
            return bad(format!(
                "block count {} is below the minimum {MIN_BLOCK_COUNT}",
                self.block_count
            ));
        }
        if self
            .block_count
            .checked_mul(u64::from(self.block_size))
            .is_none()
        {
            return bad(format!(
                "block count {} overflows the byte size",
                self.block_count
            ));
        }
        if self.first_block != super::FIRST_ALLOCATABLE_BLOCK {
            return bad(format!(
                "first allocatable block {} is not {}",
                self.first_block,
                super::FIRST_ALLOCATABLE_BLOCK
            ));
        }
        if self.state != STATE_CLEAN && self.state != STATE_MOUNTED {
            return bad(format!("unknown state {}", self.state));
        }
        if self.created_nsec >= 1_000_000_000 {
            return bad(format!(
                "creation nanoseconds {} out of range",
                self.created_nsec
            ));
        }
        let in_range = |b: u64| b >= self.first_block && b < self.block_count;
        if !in_range(self.log_head) {
            return bad(format!("log head {} outside the filesystem", self.log_head));
        }
        if self.log_delta == 0 {
            return bad("log delta is zero".into());
        }
        if let Some(next) = self.log_next()
            && (!in_range(next) || next == self.log_head)
        {
            return bad(format!(
                "block {next} named for the second delta of the log is not a free-standing block of the filesystem"
            ));
        }
        for (i, root) in self.roots.iter().enumerate() {
            let name = TreeId::try_from(i as u64)
                .map(TreeId::name)
                .unwrap_or("unused tree slot");
            if root.block == 0 && root.height != 0 {
                return bad(format!("{name}: empty tree with height {}", root.height));
            }
            if root.block != 0 && !in_range(root.block) {
                return bad(format!(
                    "{name}: root block {} outside the filesystem",
                    root.block
                ));
            }
            if root.height > super::TREE_HEIGHT_MAX {
                return bad(format!(
                    "{name}: height {} exceeds {}",
                    root.height,
                    super::TREE_HEIGHT_MAX
                ));
            }
            if i >= TreeId::ACTIVE.len() && root.block != 0 {
                return bad(format!("{name}: reserved tree slot is not empty"));
            }
        }
        if self.root(TreeId::Inodes).block == 0 || self.root(TreeId::Freemap).block == 0 {
            return bad("inode table or free-space map has no root".into());
        }
        if self.next_inum < super::FIRST_USER_INUM {
            return bad(format!(
                "next inode number {} is in the reserved range",
                self.next_inum
            ));
        }
        if self.free_blocks > self.block_count {
            return bad(format!(
                "free block count {} exceeds block count",
                self.free_blocks
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(bs: u32) -> Superblock {
        let mut roots = [TreeRoot::default(); TREE_SLOTS];
        roots[TreeId::Inodes as usize] = TreeRoot {
            block: 2,
            height: 0,
        };
        roots[TreeId::Dirs as usize] = TreeRoot {
            block: 3,
            height: 0,
        };
        roots[TreeId::Freemap as usize] = TreeRoot {
            block: 4,
            height: 1,
        };
        Superblock {
            version_minor: 0,
            block_size: bs,
            block_count: 1000,
            features: Features {
                compat: 0,
                ro_compat: 0,
                incompat: 0,
            },
            uuid: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
            label: "tuxfs-test".into(),
            hash_seed: [7; 16],
            created_sec: 1_700_000_000,
            created_nsec: 5,
            state: STATE_CLEAN,
            sequence: 3,
            unify_seq: 1,
            delta: 4,
            log_head: 9,
            log_delta: 5,
            log_next: 0,
            log_next_of: 0,
            next_inum: 16,
            roots,
            free_blocks: 900,
            inode_count: 2,
            mount_count: 0,
            last_mount_sec: 0,
            last_write_sec: 0,
            first_block: 2,
        }
    }

    #[test]
    fn round_trip_every_block_size() {
        let mut bs = super::super::BLOCK_SIZE_MIN;
        while bs <= super::super::BLOCK_SIZE_MAX {
            let sb = sample(bs);
            let mut b = vec![0u8; bs as usize];
            sb.encode(&mut b, 1);
            assert_eq!(Superblock::peek_block_size(&b), Some(bs));
            assert_eq!(Superblock::decode(&b, 1).expect("decodes"), sb);
            bs *= 2;
        }
    }

    #[test]
    fn corruption_is_an_error_never_a_panic() {
        let sb = sample(512);
        let mut b = vec![0u8; 512];
        sb.encode(&mut b, 0);
        for i in 0..b.len() {
            for bit in [0x01u8, 0x80] {
                let mut c = b.clone();
                c[i] ^= bit;
                assert!(Superblock::decode(&c, 0).is_err(), "flip at byte {i}");
            }
        }
        for len in [0, 10, 47, 48, 511] {
            assert!(Superblock::decode(&b[..len], 0).is_err());
        }
        assert!(
            Superblock::decode(&b, 1).is_err(),
            "slot 0 block read as slot 1"
        );
    }

    #[test]
    fn log_next_counts_only_with_its_own_log_head() {
        let mut sb = sample(4096);
        assert_eq!(sb.log_next(), None, "not recorded");
        sb.set_log_heads(9, 12);
        assert_eq!(sb.log_next(), Some(12));
        let mut b = vec![0u8; 4096];
        sb.encode(&mut b, 0);
        let back = Superblock::decode(&b, 0).expect("decodes");
        assert_eq!((back.log_head, back.log_next()), (9, Some(12)));
        // A writer that moves log_head alone (an older fsck repair) leaves log_next stale:
        // it no longer counts.
        sb.log_head = 20;
        assert_eq!(sb.log_next(), None);
        assert!(sb.validate(0).is_ok());
        // When it counts it must be a block of its own inside the filesystem.
        sb.set_log_heads(20, 20);
        assert!(sb.validate(0).is_err());
        sb.set_log_heads(20, 5000);
        assert!(sb.validate(0).is_err());
    }

    #[test]
    fn field_validation() {
        let mut sb = sample(4096);
        sb.set_root(
            TreeId::Inodes,
            TreeRoot {
                block: 5000,
                height: 0,
            },
        );
        assert!(sb.validate(0).is_err());
        let mut sb = sample(4096);
        sb.set_root(
            TreeId::Snapshots,
            TreeRoot {
                block: 7,
                height: 0,
            },
        );
        assert!(sb.validate(0).is_err());
        let mut sb = sample(4096);
        sb.features.incompat = IncompatFeatures::SNAPSHOTS.bits() | (1 << 40);
        assert_ne!(sb.features.unknown_incompat(), 0);
    }
}
