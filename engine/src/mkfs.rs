//! Creating an empty filesystem: the layout mkfs writes, computed as a list of blocks so it
//! can be checked without a device, and the ordered write of that list to a device.
//!
//! Layout (consecutive after the superblocks; only the superblock roots fix positions):
//! bitmap blocks (one per chunk), the free-space map tree (leaves then interior levels),
//! the inode-table leaf, the directory-index leaf, and the pre-allocated first log block.
//!
//! **Crash safety of mkfs itself.** The old superblocks are zeroed and flushed first, the new
//! metadata is written and flushed, and only then are the new superblocks written and
//! flushed: an interrupted mkfs leaves an image no tool mistakes for a filesystem.

use std::sync::Arc;

use crate::dev::{AlignedBuf, BlockDevice, WriteRequest};
use crate::format::btree::{Key, Leaf, Node, leaf_entry_cost, leaf_space, node_capacity};
use crate::format::dirent::{self, Dirent};
use crate::format::inode::{Inode, S_IFDIR, Timestamp};
use crate::format::superblock::{Features, STATE_CLEAN, TREE_SLOTS, TreeRoot};
use crate::format::{
    BlockHeader, FIRST_ALLOCATABLE_BLOCK, FIRST_USER_INUM, Kind, LOST_FOUND_INUM, MIN_BLOCK_COUNT,
    ROOT_INUM, SUPERBLOCK_SLOTS, Superblock, TreeId, bitmap, block_size_valid,
};
use crate::{Error, Result};

/// What the caller chooses about a new filesystem.
#[derive(Debug, Clone)]
pub struct MkfsParams {
    pub block_size: u32,
    pub block_count: u64,
    pub label: String,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    pub now: Timestamp,
    /// Owner of the root directory (the caller of mkfs).
    pub uid: u32,
    pub gid: u32,
}

/// The blocks of a new filesystem, superblocks last.
#[derive(Debug)]
pub struct Layout {
    pub superblock: Superblock,
    /// Every non-zero block other than the superblocks, in block order.
    pub blocks: Vec<(u64, AlignedBuf)>,
    /// The two superblock slots.
    pub superblocks: Vec<(u64, AlignedBuf)>,
}

/// Assigns consecutive block numbers from `next`.
struct Placer {
    next: u64,
}

impl Placer {
    fn take(&mut self, n: u64) -> u64 {
        let first = self.next;
        self.next += n;
        first
    }
}

/// Number of leaves and interior nodes a tree of `n` entries of `value_len` bytes needs, by
/// level from the leaves up.
fn tree_shape(block_size: u32, n: usize, value_len: usize) -> Vec<usize> {
    let per_leaf = leaf_space(block_size) / leaf_entry_cost(value_len);
    let mut levels = vec![n.div_ceil(per_leaf).max(1)];
    while let Some(&last) = levels.last()
        && last > 1
    {
        levels.push(last.div_ceil(node_capacity(block_size)));
    }
    levels
}

/// Builds a tree bottom-up from sorted entries whose values all have the same length,
/// placing its blocks from `first`. Returns the root and the encoded blocks.
fn build_tree(
    tree: TreeId,
    entries: &[(Key, Vec<u8>)],
    first: u64,
    header: BlockHeader,
    block_size: u32,
) -> (TreeRoot, Vec<(u64, AlignedBuf)>) {
    let value_len = entries.first().map_or(0, |(_, v)| v.len());
    assert!(
        entries.iter().all(|(_, v)| v.len() == value_len),
        "bulk build needs equal values"
    );
    let shape = tree_shape(block_size, entries.len(), value_len);
    let per_leaf = entries.len().div_ceil(shape[0]).max(1);
    let mut out = Vec::new();
    let mut blocknr = first;
    let mut level_keys: Vec<(Key, u64)> = Vec::new();
    let owner = tree as u64;
    let chunks: Vec<&[(Key, Vec<u8>)]> = if entries.is_empty() {
        vec![&[]]
    } else {
        entries.chunks(per_leaf).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let mut buf = AlignedBuf::zeroed(block_size as usize);
        let refs: Vec<(Key, &[u8])> = chunk.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let h = BlockHeader {
            kind: Kind::BtreeLeaf,
            level: 0,
            blocknr,
            owner,
            ..header
        };
        Leaf::encode(&mut buf, &h, &refs);
        // The leftmost subtree at every level starts at the smallest key.
        let low = if i == 0 {
            Key::MIN
        } else {
            chunk.first().map_or(Key::MIN, |(k, _)| *k)
        };
        level_keys.push((low, blocknr));
        out.push((blocknr, buf));
        blocknr += 1;
    }
    let mut level = 0u8;
    while level_keys.len() > 1 {
        level += 1;
        let per_node = level_keys
            .len()
            .div_ceil(level_keys.len().div_ceil(node_capacity(block_size)));
        let mut parents = Vec::new();
        for group in level_keys.chunks(per_node) {
            let mut buf = AlignedBuf::zeroed(block_size as usize);
            let h = BlockHeader {
                kind: Kind::BtreeNode,
                level,
                blocknr,
                owner,
                ..header
            };
            Node::encode(&mut buf, &h, group);
            parents.push((group.first().map_or(Key::MIN, |(k, _)| *k), blocknr));
            out.push((blocknr, buf));
            blocknr += 1;
        }
        level_keys = parents;
    }
    let root = level_keys.first().map_or(0, |(_, b)| *b);
    (
        TreeRoot {
            block: root,
            height: level,
        },
        out,
    )
}

fn directory_inode(mode: u32, nlink: u32, parent: u64, p: &MkfsParams) -> Inode {
    Inode {
        mode: S_IFDIR | mode,
        uid: p.uid,
        gid: p.gid,
        nlink,
        parent,
        atime: p.now,
        mtime: p.now,
        ctime: p.now,
        btime: p.now,
        ..Inode::default()
    }
}

/// Computes every block of a new filesystem.
pub fn layout(p: &MkfsParams) -> Result<Layout> {
    layout_with_incompat(p, 0)
}

/// Computes every block of a new filesystem whose superblock carries the `incompat`
/// feature bits (tests use `CONSTANT_NAME_HASH`; mkfs.tuxfs sets none).
pub fn layout_with_incompat(p: &MkfsParams, incompat: u64) -> Result<Layout> {
    if !block_size_valid(p.block_size) {
        return Err(Error::invalid(format!(
            "block size {} is not a power of two in 512..=65536",
            p.block_size
        )));
    }
    if p.block_count < MIN_BLOCK_COUNT {
        return Err(Error::invalid(format!(
            "{} blocks is too small: at least {MIN_BLOCK_COUNT} blocks are needed",
            p.block_count
        )));
    }
    if p.label.len() > crate::format::superblock::LABEL_MAX || p.label.contains('\0') {
        return Err(Error::invalid(
            "label must be at most 64 bytes without NUL".to_string(),
        ));
    }
    let bs = p.block_size;
    let fs_id = crate::format::superblock::fs_id_of(&p.uuid, &p.hash_seed);
    let header = BlockHeader {
        kind: Kind::BtreeLeaf,
        level: 0,
        blocknr: 0,
        owner: 0,
        delta: 0,
        fs_id,
    };
    let chunks = bitmap::chunk_count(bs, p.block_count);
    let mut place = Placer {
        next: FIRST_ALLOCATABLE_BLOCK,
    };
    let bitmap_first = place.take(chunks);
    let freemap_entries: Vec<(Key, Vec<u8>)> = (0..chunks)
        .map(|c| {
            (
                Key::new(c, 0),
                crate::format::btree::encode_block_ref(bitmap_first + c),
            )
        })
        .collect();
    let freemap_blocks: usize = tree_shape(bs, freemap_entries.len(), 8).iter().sum();
    let freemap_first = place.take(freemap_blocks as u64);
    let inode_leaf = place.take(1);
    let dir_leaf = place.take(1);
    let log_head = place.take(1);
    let used = place.next;
    if used + 8 > p.block_count {
        return Err(Error::invalid(format!(
            "{} blocks leave no room for data after {used} blocks of metadata",
            p.block_count
        )));
    }

    let (freemap_root, mut blocks) =
        build_tree(TreeId::Freemap, &freemap_entries, freemap_first, header, bs);
    debug_assert_eq!(blocks.len(), freemap_blocks);

    let root = directory_inode(0o755, 3, ROOT_INUM, p);
    let lost_found = directory_inode(0o700, 2, ROOT_INUM, p);
    let inodes = [
        (Key::new(ROOT_INUM, 0), root.encode()),
        (Key::new(LOST_FOUND_INUM, 0), lost_found.encode()),
    ];
    let refs: Vec<(Key, &[u8])> = inodes.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    let mut buf = AlignedBuf::zeroed(bs as usize);
    Leaf::encode(
        &mut buf,
        &BlockHeader {
            blocknr: inode_leaf,
            owner: TreeId::Inodes as u64,
            ..header
        },
        &refs,
    );
    blocks.push((inode_leaf, buf));

    let name = b"lost+found";
    let entry = Dirent {
        inum: LOST_FOUND_INUM,
        dtype: dirent::DT_DIR,
        name: name.to_vec(),
    }
    .encode();
    let hasher = crate::format::superblock::name_hasher_of(incompat, p.hash_seed);
    let key = Key::new(ROOT_INUM, dirent::position(&hasher, name, 0));
    let mut buf = AlignedBuf::zeroed(bs as usize);
    Leaf::encode(
        &mut buf,
        &BlockHeader {
            blocknr: dir_leaf,
            owner: TreeId::Dirs as u64,
            ..header
        },
        &[(key, &entry)],
    );
    blocks.push((dir_leaf, buf));

    let per_chunk = bitmap::bits_per_chunk(bs);
    for c in 0..chunks {
        let mut bits = vec![0u8; bs as usize - crate::format::HEADER_SIZE];
        let first = c * per_chunk;
        for b in first..used.min(first + per_chunk) {
            bitmap::set_bit(&mut bits, b - first, true);
        }
        let mut buf = AlignedBuf::zeroed(bs as usize);
        let h = BlockHeader {
            kind: Kind::Bitmap,
            blocknr: bitmap_first + c,
            owner: c,
            ..header
        };
        bitmap::encode(&mut buf, &h, &bits);
        blocks.push((bitmap_first + c, buf));
    }
    blocks.sort_by_key(|(b, _)| *b);

    let mut roots = [TreeRoot::default(); TREE_SLOTS];
    roots[TreeId::Freemap as usize] = freemap_root;
    roots[TreeId::Inodes as usize] = TreeRoot {
        block: inode_leaf,
        height: 0,
    };
    roots[TreeId::Dirs as usize] = TreeRoot {
        block: dir_leaf,
        height: 0,
    };
    let sb = Superblock {
        version_minor: crate::format::VERSION_MINOR,
        block_size: bs,
        block_count: p.block_count,
        features: Features {
            compat: 0,
            ro_compat: 0,
            incompat,
        },
        uuid: p.uuid,
        label: p.label.clone(),
        hash_seed: p.hash_seed,
        created_sec: p.now.sec,
        created_nsec: p.now.nsec,
        state: STATE_CLEAN,
        sequence: 1,
        unify_seq: 0,
        delta: 0,
        log_head,
        log_delta: 1,
        // The first read-write mount allocates the second log block and records it.
        log_next: 0,
        log_next_of: 0,
        next_inum: FIRST_USER_INUM,
        roots,
        free_blocks: p.block_count - used,
        inode_count: 2,
        mount_count: 0,
        last_mount_sec: 0,
        last_write_sec: p.now.sec,
        first_block: FIRST_ALLOCATABLE_BLOCK,
    };
    sb.validate(0)?;
    assert_eq!(
        sb.fs_id(),
        fs_id,
        "mkfs stamps blocks with the superblock's fs_id"
    );
    let superblocks = SUPERBLOCK_SLOTS
        .iter()
        .map(|&slot| {
            let mut buf = AlignedBuf::zeroed(bs as usize);
            sb.encode(&mut buf, slot);
            (slot, buf)
        })
        .collect();
    Ok(Layout {
        superblock: sb,
        blocks,
        superblocks,
    })
}

fn write_all(dev: &dyn BlockDevice, bs: u32, blocks: Vec<(u64, AlignedBuf)>) -> Result<()> {
    let reqs = blocks
        .into_iter()
        .map(|(b, data)| WriteRequest {
            offset: b * u64::from(bs),
            data: Arc::new(data),
        })
        .collect();
    dev.submit_writes(reqs)?;
    dev.flush()
}

/// Writes a new filesystem to `dev` (see the module comment for the order). With
/// `discard`, tells the device first that every block is unused.
pub fn format_device(dev: &dyn BlockDevice, p: &MkfsParams, discard: bool) -> Result<Superblock> {
    format_device_with_incompat(dev, p, discard, 0)
}

/// [`format_device`] with `incompat` feature bits in the superblock (see
/// [`layout_with_incompat`]).
pub fn format_device_with_incompat(
    dev: &dyn BlockDevice,
    p: &MkfsParams,
    discard: bool,
    incompat: u64,
) -> Result<Superblock> {
    let need = p.block_count.checked_mul(u64::from(p.block_size));
    if need.is_none_or(|n| n > dev.size_bytes()) {
        return Err(Error::invalid(format!(
            "{} blocks of {} bytes do not fit on a device of {} bytes",
            p.block_count,
            p.block_size,
            dev.size_bytes()
        )));
    }
    let layout = layout_with_incompat(p, incompat)?;
    if discard {
        dev.discard(0, p.block_count * u64::from(p.block_size))?;
    }
    let bs = p.block_size;
    // Zero the old superblocks (as many bytes as the largest block size could have used).
    let old = (0..2)
        .map(|i| (i, AlignedBuf::zeroed(bs as usize)))
        .collect();
    write_all(dev, bs, old)?;
    if bs < crate::format::BLOCK_SIZE_MAX {
        // A previous filesystem with a larger block size kept its slot 1 further out.
        let mut reqs = Vec::new();
        let mut other = bs * 2;
        while other <= crate::format::BLOCK_SIZE_MAX {
            if u64::from(other) + 512 <= dev.size_bytes() {
                reqs.push(WriteRequest {
                    offset: u64::from(other),
                    data: Arc::new(AlignedBuf::zeroed(512.max(dev.alignment()))),
                });
            }
            other *= 2;
        }
        dev.submit_writes(reqs)?;
    }
    // The first log block is allocated but holds no log yet: zero it, so whatever an
    // earlier use of the device left there is gone (its fs_id would not match anyway).
    let mut blocks = layout.blocks;
    blocks.push((layout.superblock.log_head, AlignedBuf::zeroed(bs as usize)));
    write_all(dev, bs, blocks)?;
    write_all(dev, bs, layout.superblocks)?;
    Ok(layout.superblock)
}

/// Blocks a filesystem of `size_bytes` bytes has at `block_size`.
pub fn blocks_for_size(size_bytes: u64, block_size: u32) -> u64 {
    size_bytes / u64::from(block_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn params(bs: u32, count: u64) -> MkfsParams {
        MkfsParams {
            block_size: bs,
            block_count: count,
            label: "t".into(),
            uuid: [0x42; 16],
            hash_seed: [5; 16],
            now: Timestamp {
                sec: 1_700_000_000,
                nsec: 0,
            },
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn layouts_decode_for_many_geometries() {
        for (bs, count) in [
            (512, 64),
            (512, 100_000),
            (4096, 262_144),
            (65536, 1000),
            (1024, 5_000_000),
        ] {
            let l = layout(&params(bs, count)).expect("layout");
            let sb = &l.superblock;
            for (slot, buf) in &l.superblocks {
                assert_eq!(&Superblock::decode(buf, *slot).expect("superblock"), sb);
            }
            let fm = sb.root(TreeId::Freemap);
            let fm_block = &l
                .blocks
                .iter()
                .find(|(b, _)| *b == fm.block)
                .expect("freemap root")
                .1;
            if fm.height == 0 {
                Leaf::decode(fm_block, fm.block, TreeId::Freemap, sb.fs_id())
                    .expect("freemap leaf");
            } else {
                Node::decode(
                    fm_block,
                    fm.block,
                    TreeId::Freemap,
                    fm.height,
                    sb.fs_id(),
                    2..count,
                )
                .expect("freemap node");
            }
            let used = l.blocks.len() as u64 + 2 + 1; // + superblocks + unwritten log head
            assert_eq!(sb.free_blocks, count - used, "bs {bs} count {count}");
        }
    }

    #[test]
    fn rejects_bad_geometry() {
        assert!(layout(&params(3000, 1000)).is_err());
        assert!(layout(&params(4096, 10)).is_err());
        let mut p = params(4096, 1000);
        p.label = "x".repeat(65);
        assert!(layout(&p).is_err());
    }
}
