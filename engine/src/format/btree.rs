//! B+tree node layouts shared by every tree. Keys are two u64s compared as a pair; values
//! are opaque bytes whose codec belongs to the tree (inode, extent, dirent, ...).
//!
//! Interior node (`Kind::BtreeNode`, `level` >= 1, `owner` = tree id):
//! ```text
//! 48  4   count     entries, 1..=node_capacity
//! 52  4   reserved  zero
//! 56  24×count      entries: key.a u64, key.b u64, child block u64
//!                   keys strictly increasing; entry i covers [key_i, key_{i+1})
//! ..      zero
//! ```
//! Leaf (`Kind::BtreeLeaf`, `level` = 0, `owner` = tree id), slotted and canonical:
//! ```text
//! 48  4   count       entries
//! 52  4   data_start  offset of the lowest value byte (block size when count = 0)
//! 56  24×count        slots: key.a u64, key.b u64, offset u32, length u32
//! ..                  zero up to data_start
//! data_start..end     values, packed from the end of the block in slot order:
//!                     value 0 ends at the block end, value i+1 ends where value i starts
//! ```
//! Canonical packing makes validation linear and leaves no room for overlapping values.

use super::bytes::{all_zero, get_bytes, get_u32, get_u64, put_bytes, put_u32, put_u64};
use super::header::{BlockHeader, HEADER_SIZE, Kind, seal};
use super::superblock::TreeId;
use crate::{Error, Result};

/// A B+tree key: compared as (a, b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Key {
    pub a: u64,
    pub b: u64,
}

impl Key {
    /// The smallest key.
    pub const MIN: Key = Key { a: 0, b: 0 };

    /// Shorthand constructor.
    pub const fn new(a: u64, b: u64) -> Self {
        Key { a, b }
    }
}

const OFF_COUNT: usize = HEADER_SIZE;
const OFF_AUX: usize = HEADER_SIZE + 4;
const OFF_ENTRIES: usize = HEADER_SIZE + 8;
/// Bytes of one interior-node entry.
pub const NODE_ENTRY_SIZE: usize = 24;
/// Bytes of one leaf slot.
pub const LEAF_SLOT_SIZE: usize = 24;

/// Entries an interior node of `block_size` bytes holds.
pub const fn node_capacity(block_size: u32) -> usize {
    // Saturating: decoders call this with the length of untrusted input.
    (block_size as usize).saturating_sub(OFF_ENTRIES) / NODE_ENTRY_SIZE
}

/// Bytes a leaf of `block_size` bytes has for slots and values together.
pub const fn leaf_space(block_size: u32) -> usize {
    block_size as usize - OFF_ENTRIES
}

/// Bytes one entry with a value of `value_len` bytes takes in a leaf.
pub const fn leaf_entry_cost(value_len: usize) -> usize {
    LEAF_SLOT_SIZE + value_len
}

/// Largest value any tree may store: one such entry must fit in an empty leaf. (A leaf that
/// overflows on insert may then need a three-way split; the engine's B+tree handles that.)
pub const fn value_max(block_size: u32) -> usize {
    leaf_space(block_size) - LEAF_SLOT_SIZE
}

// The longest directory entry (a 255-byte name) fits in a leaf at the smallest block size.
const _: () =
    assert!(super::dirent::DIRENT_FIXED_SIZE + super::NAME_MAX <= value_max(super::BLOCK_SIZE_MIN));

// At the smallest block size an interior node must still branch.
const _: () = assert!(node_capacity(super::BLOCK_SIZE_MIN) >= 4);

/// A decoded interior node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub header: BlockHeader,
    pub entries: Vec<(Key, u64)>,
}

/// Checks the header of a tree block and that it belongs to `tree` at `level`.
fn tree_header(
    block: &[u8],
    blocknr: u64,
    kind: Kind,
    tree: TreeId,
    level: u8,
    fs_id: u64,
) -> Result<BlockHeader> {
    let h = BlockHeader::decode(block, blocknr, kind, Some(fs_id))?;
    if h.owner != tree as u64 {
        return Err(Error::corrupt(
            blocknr,
            format!(
                "belongs to tree {} but was reached from the {}",
                h.owner,
                tree.name()
            ),
        ));
    }
    if h.level != level {
        return Err(Error::corrupt(
            blocknr,
            format!("level {} where level {level} was expected", h.level),
        ));
    }
    Ok(h)
}

fn key_at(block: &[u8], off: usize) -> Option<Key> {
    Some(Key {
        a: get_u64(block, off)?,
        b: get_u64(block, off + 8)?,
    })
}

impl Node {
    /// Encodes an interior node. Panics if the entries do not fit or are not sorted: callers
    /// split before that.
    pub fn encode(block: &mut [u8], header: &BlockHeader, entries: &[(Key, u64)]) {
        assert_eq!(header.kind, Kind::BtreeNode);
        assert!(header.level >= 1, "interior nodes have level >= 1");
        assert!(!entries.is_empty() && entries.len() <= node_capacity(block.len() as u32));
        assert!(
            entries.is_sorted_by(|x, y| x.0 < y.0),
            "node keys must increase"
        );
        block.fill(0);
        header.encode(block);
        put_u32(block, OFF_COUNT, entries.len() as u32);
        for (i, (key, child)) in entries.iter().enumerate() {
            let off = OFF_ENTRIES + i * NODE_ENTRY_SIZE;
            put_u64(block, off, key.a);
            put_u64(block, off + 8, key.b);
            put_u64(block, off + 16, *child);
        }
        seal(block);
    }

    /// Decodes and validates an interior node of `tree` at `level` whose children must lie
    /// in `first_block..block_count`.
    pub fn decode(
        block: &[u8],
        blocknr: u64,
        tree: TreeId,
        level: u8,
        fs_id: u64,
        valid_blocks: std::ops::Range<u64>,
    ) -> Result<Node> {
        let header = tree_header(block, blocknr, Kind::BtreeNode, tree, level, fs_id)?;
        let bad = |what: String| Error::corrupt(blocknr, what);
        if level == 0 {
            return Err(bad("interior node with level 0".into()));
        }
        let count = get_u32(block, OFF_COUNT).ok_or_else(|| bad("truncated".into()))? as usize;
        let cap = node_capacity(block.len() as u32);
        if count == 0 || count > cap {
            return Err(bad(format!("entry count {count} outside 1..={cap}")));
        }
        if get_u32(block, OFF_AUX) != Some(0) {
            return Err(bad("reserved node field is not zero".into()));
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let off = OFF_ENTRIES + i * NODE_ENTRY_SIZE;
            let key = key_at(block, off).ok_or_else(|| bad("truncated".into()))?;
            let child = get_u64(block, off + 16).ok_or_else(|| bad("truncated".into()))?;
            if !valid_blocks.contains(&child) {
                return Err(bad(format!(
                    "entry {i}: child block {child} outside the filesystem"
                )));
            }
            if let Some((prev, _)) = entries.last()
                && *prev >= key
            {
                return Err(bad(format!("entry {i}: keys out of order")));
            }
            entries.push((key, child));
        }
        let tail = block
            .get(OFF_ENTRIES + count * NODE_ENTRY_SIZE..)
            .unwrap_or(&[]);
        if !all_zero(tail) {
            return Err(bad("bytes after the last entry are not zero".into()));
        }
        Ok(Node { header, entries })
    }
}

/// A decoded leaf; values borrow from the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf<'a> {
    pub header: BlockHeader,
    pub entries: Vec<(Key, &'a [u8])>,
}

/// Bytes the entries take in a leaf (slots plus values).
pub fn leaf_bytes<'v>(entries: impl IntoIterator<Item = (Key, &'v [u8])>) -> usize {
    entries
        .into_iter()
        .map(|(_, v)| leaf_entry_cost(v.len()))
        .sum()
}

impl<'a> Leaf<'a> {
    /// Encodes a leaf. Panics if the entries do not fit or are not sorted: callers split
    /// before that.
    pub fn encode(block: &mut [u8], header: &BlockHeader, entries: &[(Key, &[u8])]) {
        assert_eq!(header.kind, Kind::BtreeLeaf);
        assert_eq!(header.level, 0);
        let need = leaf_bytes(entries.iter().copied());
        assert!(
            need <= leaf_space(block.len() as u32),
            "leaf overflow: {need} bytes"
        );
        assert!(
            entries.is_sorted_by(|x, y| x.0 < y.0),
            "leaf keys must increase"
        );
        block.fill(0);
        header.encode(block);
        put_u32(block, OFF_COUNT, entries.len() as u32);
        let mut end = block.len();
        for (i, (key, value)) in entries.iter().enumerate() {
            let start = end - value.len();
            let off = OFF_ENTRIES + i * LEAF_SLOT_SIZE;
            put_u64(block, off, key.a);
            put_u64(block, off + 8, key.b);
            put_u32(block, off + 16, start as u32);
            put_u32(block, off + 20, value.len() as u32);
            put_bytes(block, start, value);
            end = start;
        }
        put_u32(block, OFF_AUX, end as u32);
        seal(block);
    }

    /// Decodes and validates a leaf of `tree`.
    pub fn decode(block: &'a [u8], blocknr: u64, tree: TreeId, fs_id: u64) -> Result<Leaf<'a>> {
        let header = tree_header(block, blocknr, Kind::BtreeLeaf, tree, 0, fs_id)?;
        let bad = |what: String| Error::corrupt(blocknr, what);
        let truncated = || bad("truncated".into());
        let count = get_u32(block, OFF_COUNT).ok_or_else(truncated)? as usize;
        let data_start = get_u32(block, OFF_AUX).ok_or_else(truncated)? as usize;
        let slots_end = count
            .checked_mul(LEAF_SLOT_SIZE)
            .and_then(|n| n.checked_add(OFF_ENTRIES))
            .filter(|&n| n <= block.len())
            .ok_or_else(|| bad(format!("entry count {count} does not fit in the block")))?;
        if data_start < slots_end || data_start > block.len() {
            return Err(bad(format!(
                "value area start {data_start} overlaps the slots or the end"
            )));
        }
        let mut entries: Vec<(Key, &[u8])> = Vec::with_capacity(count);
        let mut end = block.len();
        for i in 0..count {
            let off = OFF_ENTRIES + i * LEAF_SLOT_SIZE;
            let key = key_at(block, off).ok_or_else(truncated)?;
            let start = get_u32(block, off + 16).ok_or_else(truncated)? as usize;
            let len = get_u32(block, off + 20).ok_or_else(truncated)? as usize;
            if start.checked_add(len) != Some(end) || start < data_start {
                return Err(bad(format!(
                    "entry {i}: value at {start}+{len} is not packed canonically"
                )));
            }
            if let Some((prev, _)) = entries.last()
                && *prev >= key
            {
                return Err(bad(format!("entry {i}: keys out of order")));
            }
            entries.push((key, get_bytes(block, start, len).ok_or_else(truncated)?));
            end = start;
        }
        if end != data_start {
            return Err(bad(format!(
                "value area starts at {data_start} but values start at {end}"
            )));
        }
        if !all_zero(block.get(slots_end..data_start).unwrap_or(&[])) {
            return Err(bad("free space between slots and values is not zero".into()));
        }
        Ok(Leaf { header, entries })
    }
}

/// Encodes the freemap tree's value: the block number of one bitmap block.
pub fn encode_block_ref(block: u64) -> Vec<u8> {
    block.to_le_bytes().to_vec()
}

/// The freemap tree's value: the block number of one bitmap block.
pub fn decode_block_ref(value: &[u8], blocknr: u64) -> Result<u64> {
    match value.try_into() {
        Ok(bytes) => Ok(u64::from_le_bytes(bytes)),
        Err(_) => Err(Error::corrupt(
            blocknr,
            format!("block reference of {} bytes, expected 8", value.len()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(kind: Kind, level: u8) -> BlockHeader {
        BlockHeader {
            kind,
            level,
            blocknr: 10,
            owner: TreeId::Dirs as u64,
            delta: 1,
            fs_id: 99,
        }
    }

    #[test]
    fn node_round_trip_and_limits() {
        for bs in [512u32, 4096, 65536] {
            let mut b = vec![0u8; bs as usize];
            let cap = node_capacity(bs);
            let entries: Vec<(Key, u64)> = (0..cap as u64)
                .map(|i| (Key::new(i, i * 3), 100 + i))
                .collect();
            Node::encode(&mut b, &hdr(Kind::BtreeNode, 2), &entries);
            let n = Node::decode(&b, 10, TreeId::Dirs, 2, 99, 2..1_000_000).expect("decodes");
            assert_eq!(n.entries, entries);
            assert!(
                Node::decode(&b, 10, TreeId::Dirs, 1, 99, 2..1_000_000).is_err(),
                "wrong level"
            );
            assert!(
                Node::decode(&b, 10, TreeId::Inodes, 2, 99, 2..1_000_000).is_err(),
                "wrong tree"
            );
            assert!(
                Node::decode(&b, 10, TreeId::Dirs, 2, 99, 2..101).is_err(),
                "child out of range"
            );
        }
    }

    #[test]
    fn leaf_round_trip_and_every_flip() {
        let values: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; i as usize * 3]).collect();
        let entries: Vec<(Key, &[u8])> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (Key::new(7, i as u64 * 10), v.as_slice()))
            .collect();
        let mut b = vec![0u8; 4096];
        Leaf::encode(&mut b, &hdr(Kind::BtreeLeaf, 0), &entries);
        let leaf = Leaf::decode(&b, 10, TreeId::Dirs, 99).expect("decodes");
        assert_eq!(leaf.entries, entries);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x04;
            assert!(
                Leaf::decode(&c, 10, TreeId::Dirs, 99).is_err(),
                "flip at {i}"
            );
        }
        let mut empty = vec![0u8; 512];
        Leaf::encode(&mut empty, &hdr(Kind::BtreeLeaf, 0), &[]);
        assert!(
            Leaf::decode(&empty, 10, TreeId::Dirs, 99)
                .expect("empty leaf")
                .entries
                .is_empty()
        );
    }

    /// Structural checks must hold even when an attacker recomputes the checksum.
    #[test]
    fn resealed_garbage_is_rejected_without_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let mut b = vec![0u8; 512];
            BlockHeader {
                kind: Kind::BtreeLeaf,
                level: 0,
                blocknr: 10,
                owner: 2,
                delta: 1,
                fs_id: 99,
            }
            .encode(&mut b);
            for byte in b[48..].iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = if seed.is_multiple_of(4) {
                    seed as u8
                } else {
                    0
                };
            }
            seal(&mut b);
            let _ = Leaf::decode(&b, 10, TreeId::Dirs, 99);
            let _ = Node::decode(&b, 10, TreeId::Dirs, 1, 99, 0..u64::MAX);
        }
    }

    #[test]
    fn value_max_fits_once() {
        for bs in [512u32, 1024, 4096, 65536] {
            assert!(leaf_entry_cost(value_max(bs)) <= leaf_space(bs));
            assert!(leaf_entry_cost(value_max(bs) + 1) > leaf_space(bs));
        }
    }
}
