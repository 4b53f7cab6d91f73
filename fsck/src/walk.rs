//! Walking everything reachable from the superblock: trees, log chain, bitmap, xattr
//! chains, and (with `--data`) data blocks. Each block is read once and marked referenced;
//! a block reached twice is reported and not descended into again, which also stops loops.

use std::collections::BTreeMap;

use tuxfs_engine::dev::{AlignedBuf, BlockDevice, read_at};
use tuxfs_engine::format::btree::{Key, Leaf, Node, decode_block_ref};
use tuxfs_engine::format::dirent::Dirent;
use tuxfs_engine::format::extent::{Extent, ExtentFlags};
use tuxfs_engine::format::inode::Inode;
use tuxfs_engine::format::log::LogBlock;
use tuxfs_engine::format::xattr::XattrBlock;
use tuxfs_engine::format::{SUPERBLOCK_SLOTS, Superblock, TreeId, bitmap, data_crc};

use crate::bitset::Bitset;
use crate::{Finding, Options, Stats};

/// What fsck remembers of an inode for the cross-checks.
#[derive(Debug, Clone)]
pub(crate) struct InodeInfo {
    pub mode: u32,
    pub nlink: u32,
    pub parent: u64,
    pub blocks: u64,
    pub xattr_block: u64,
}

/// One directory entry, as fsck remembers it.
#[derive(Debug, Clone)]
pub(crate) struct EntryInfo {
    pub dir: u64,
    pub inum: u64,
    pub dtype: u8,
    pub name: Vec<u8>,
}

pub(crate) struct Checker<'a> {
    dev: &'a dyn BlockDevice,
    pub sb: Superblock,
    opts: Options,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
    pub stats: Stats,
    /// Every block something refers to.
    referenced: Bitset,
    pub inodes: BTreeMap<u64, InodeInfo>,
    pub entries: Vec<EntryInfo>,
    pub orphans: Vec<u64>,
    /// Data blocks counted per inode from its extents.
    pub extent_blocks: BTreeMap<u64, u64>,
    chunks: BTreeMap<u64, (u64, u64)>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(dev: &'a dyn BlockDevice, sb: Superblock, opts: Options) -> Self {
        let referenced = Bitset::new(sb.block_count);
        Checker {
            dev,
            sb,
            opts,
            findings: Vec::new(),
            notes: Vec::new(),
            stats: Stats::default(),
            referenced,
            inodes: BTreeMap::new(),
            entries: Vec::new(),
            orphans: Vec::new(),
            extent_blocks: BTreeMap::new(),
            chunks: BTreeMap::new(),
        }
    }

    pub(crate) fn finding(&mut self, block: Option<u64>, what: impl Into<String>) {
        self.findings.push(Finding {
            block,
            what: what.into(),
            fixed: false,
        });
    }

    /// Runs every check.
    pub(crate) fn run(&mut self) {
        for slot in SUPERBLOCK_SLOTS {
            self.referenced.set(slot);
        }
        for tree in TreeId::ACTIVE {
            let root = self.sb.root(tree);
            if root.block != 0 {
                self.walk(
                    tree,
                    root.block,
                    root.height,
                    Key::MIN,
                    None,
                    "the superblock",
                );
            }
        }
        self.check_xattr_chains();
        let log_deltas = self.walk_log();
        self.check_bitmap(log_deltas == 0);
        self.cross_check();
    }

    fn in_fs(&self, block: u64) -> bool {
        block >= self.sb.first_block && block < self.sb.block_count
    }

    /// Marks `block` referenced by `by`; false (with a finding) if it was already.
    fn claim(&mut self, block: u64, by: &str) -> bool {
        if !self.in_fs(block) {
            self.finding(
                Some(block),
                format!("{by} refers to block {block}, outside the filesystem"),
            );
            return false;
        }
        if self.referenced.set(block) {
            self.finding(
                Some(block),
                format!("block {block} is used twice (again by {by})"),
            );
            return false;
        }
        true
    }

    fn read(&mut self, block: u64) -> Option<AlignedBuf> {
        let bs = self.sb.block_size;
        self.stats.blocks_read += 1;
        match read_at(self.dev, block * u64::from(bs), bs as usize) {
            Ok(buf) => Some(buf),
            Err(e) => {
                self.finding(Some(block), format!("block {block} cannot be read: {e}"));
                None
            }
        }
    }

    /// Walks the subtree at `block` of `tree`, whose keys must lie in [lo, hi).
    fn walk(&mut self, tree: TreeId, block: u64, level: u8, lo: Key, hi: Option<Key>, by: &str) {
        if !self.claim(block, by) {
            return;
        }
        let Some(buf) = self.read(block) else { return };
        self.stats.tree_blocks += 1;
        let fs_id = self.sb.fs_id();
        let in_key_range = |k: Key| k >= lo && hi.is_none_or(|h| k < h);
        if level == 0 {
            let leaf = match Leaf::decode(&buf, block, tree, fs_id) {
                Ok(leaf) => leaf,
                Err(e) => return self.finding(Some(block), format!("{}: {e}", tree.name())),
            };
            if leaf.entries.is_empty() && self.sb.root(tree).block != block {
                self.finding(
                    Some(block),
                    format!("block {block}: empty {} leaf below the root", tree.name()),
                );
            }
            for (key, value) in leaf.entries {
                if !in_key_range(key) {
                    self.finding(
                        Some(block),
                        format!(
                            "block {block}: {} key {key:?} outside its parent's range",
                            tree.name()
                        ),
                    );
                    continue;
                }
                self.visit(tree, block, key, value);
            }
            return;
        }
        let valid = self.sb.first_block..self.sb.block_count;
        let node = match Node::decode(&buf, block, tree, level, fs_id, valid) {
            Ok(node) => node,
            Err(e) => return self.finding(Some(block), format!("{}: {e}", tree.name())),
        };
        if node.entries.first().map(|(k, _)| *k) != Some(lo) {
            self.finding(
                Some(block),
                format!(
                    "block {block}: {} node does not start at its lower bound {lo:?}",
                    tree.name()
                ),
            );
        }
        let by = format!("{} node {block}", tree.name());
        for (i, (key, child)) in node.entries.iter().enumerate() {
            if !in_key_range(*key) {
                self.finding(
                    Some(block),
                    format!(
                        "block {block}: {} key {key:?} outside its parent's range",
                        tree.name()
                    ),
                );
                continue;
            }
            let next = node.entries.get(i + 1).map(|(k, _)| *k).or(hi);
            self.walk(tree, *child, level - 1, *key, next, &by);
        }
    }

    /// Checks one leaf entry with its tree's codec and remembers what cross-checks need.
    fn visit(&mut self, tree: TreeId, block: u64, key: Key, value: &[u8]) {
        let result = match tree {
            TreeId::Inodes => self.visit_inode(block, key, value),
            TreeId::Extents => self.visit_extent(block, key, value),
            TreeId::Dirs => self.visit_dirent(block, key, value),
            TreeId::Freemap => self.visit_chunk(block, key, value),
            TreeId::Orphans => self.visit_orphan(block, key, value),
            TreeId::Snapshots | TreeId::Refcounts => Err(format!("{} is reserved", tree.name())),
        };
        if let Err(what) = result {
            self.finding(
                Some(block),
                format!("block {block}: {} entry {key:?}: {what}", tree.name()),
            );
        }
    }

    fn visit_inode(&mut self, block: u64, key: Key, value: &[u8]) -> Result<(), String> {
        if key.b != 0 || key.a == 0 {
            return Err("inode keys are (inum, 0) with inum >= 1".into());
        }
        let inode = Inode::decode(value, block).map_err(|e| e.to_string())?;
        self.stats.inodes += 1;
        self.inodes.insert(
            key.a,
            InodeInfo {
                mode: inode.mode,
                nlink: inode.nlink,
                parent: inode.parent,
                blocks: inode.blocks,
                xattr_block: inode.xattr_block,
            },
        );
        Ok(())
    }

    fn visit_extent(&mut self, block: u64, key: Key, value: &[u8]) -> Result<(), String> {
        let valid = self.sb.first_block..self.sb.block_count;
        let extent =
            Extent::decode(value, block, self.sb.block_size, valid).map_err(|e| e.to_string())?;
        self.stats.extents += 1;
        if key.b.checked_add(extent.count()).is_none() {
            return Err("file block range overflows".into());
        }
        *self.extent_blocks.entry(key.a).or_default() += extent.count();
        let by = format!("extent of inode {} at file block {}", key.a, key.b);
        for (i, crc) in extent.crcs.iter().enumerate() {
            let phys = extent.phys + i as u64;
            self.stats.data_blocks += 1;
            if !self.claim(phys, &by) {
                continue;
            }
            if self.opts.check_data && !extent.flags.contains(ExtentFlags::UNWRITTEN) {
                self.verify_data(phys, *crc, key.a, key.b + i as u64);
            }
        }
        Ok(())
    }

    fn verify_data(&mut self, phys: u64, crc: u32, inum: u64, file_block: u64) {
        let Some(buf) = self.read(phys) else { return };
        self.stats.data_blocks_verified += 1;
        let got = data_crc(&buf);
        if got != crc {
            self.finding(
                Some(phys),
                format!("data block {phys} (inode {inum}, file block {file_block}): checksum {got:#010x}, extent says {crc:#010x}"),
            );
        }
    }

    fn visit_dirent(&mut self, block: u64, key: Key, value: &[u8]) -> Result<(), String> {
        let d = Dirent::decode(value, block, key.b, Some(&self.sb.hash_seed))
            .map_err(|e| e.to_string())?;
        self.stats.dirents += 1;
        self.entries.push(EntryInfo {
            dir: key.a,
            inum: d.inum,
            dtype: d.dtype,
            name: d.name,
        });
        Ok(())
    }

    fn visit_chunk(&mut self, block: u64, key: Key, value: &[u8]) -> Result<(), String> {
        if key.b != 0 {
            return Err("free-space map keys are (chunk, 0)".into());
        }
        let target = decode_block_ref(value, block).map_err(|e| e.to_string())?;
        self.chunks.insert(key.a, (target, block));
        Ok(())
    }

    fn visit_orphan(&mut self, _block: u64, key: Key, value: &[u8]) -> Result<(), String> {
        if key.b != 0 || !value.is_empty() {
            return Err("orphan entries are (inum, 0) with an empty value".into());
        }
        self.orphans.push(key.a);
        Ok(())
    }

    /// Follows every inode's xattr spill chain.
    fn check_xattr_chains(&mut self) {
        let heads: Vec<(u64, u64)> = self
            .inodes
            .iter()
            .filter(|(_, i)| i.xattr_block != 0)
            .map(|(n, i)| (*n, i.xattr_block))
            .collect();
        for (inum, mut next) in heads {
            let mut by = format!("xattr chain of inode {inum}");
            while next != 0 {
                let block = next;
                if !self.claim(block, &by) {
                    break;
                }
                let Some(buf) = self.read(block) else { break };
                match XattrBlock::decode(&buf, block, inum, self.sb.fs_id()) {
                    Ok(x) => next = x.next,
                    Err(e) => {
                        self.finding(Some(block), e.to_string());
                        break;
                    }
                }
                by = format!("xattr block {block} of inode {inum}");
            }
        }
    }

    /// Walks the log chain from the superblock; returns how many deltas it holds.
    fn walk_log(&mut self) -> u64 {
        let (mut block, mut delta) = (self.sb.log_head, self.sb.log_delta);
        let mut index = 0u32;
        let fs_id = self.sb.fs_id();
        // The chain cannot be longer than the filesystem; the bound also stops loops.
        for _ in 0..self.sb.block_count {
            if !self.claim(block, "the log chain") {
                break;
            }
            let Some(buf) = self.read(block) else { break };
            let Ok(log) = LogBlock::decode(&buf, block, delta, fs_id) else {
                // The block allocated ahead for the next log block: the end of the log.
                break;
            };
            self.stats.log_blocks += 1;
            if log.index != index {
                self.finding(
                    Some(block),
                    format!(
                        "log block {block} has index {} in its delta, expected {index}",
                        log.index
                    ),
                );
            }
            index += 1;
            if log.commit().is_some() {
                self.stats.log_deltas += 1;
                delta += 1;
                index = 0;
            }
            block = log.next;
        }
        if self.stats.log_deltas > 0 {
            self.notes.push(format!(
                "the log holds {} deltas after the last unify ({} log blocks); the free-space bitmap on disk predates them, so it is not compared",
                self.stats.log_deltas, self.stats.log_blocks
            ));
        }
        self.stats.log_deltas
    }

    /// Reads every bitmap block and compares it with what is referenced.
    fn check_bitmap(&mut self, compare: bool) {
        let chunks = bitmap::chunk_count(self.sb.block_size, self.sb.block_count);
        let per = bitmap::bits_per_chunk(self.sb.block_size);
        let found: Vec<(u64, (u64, u64))> = self.chunks.iter().map(|(c, v)| (*c, *v)).collect();
        for (chunk, (_, leaf)) in found.iter().filter(|(c, _)| *c >= chunks) {
            self.finding(
                Some(*leaf),
                format!(
                    "block {leaf}: free-space map has chunk {chunk} past the last chunk {}",
                    chunks - 1
                ),
            );
        }
        // Claim every bitmap block before comparing any chunk: the bitmap blocks of one
        // chunk may lie in the range another chunk describes.
        let mut all_bits = Vec::new();
        for chunk in 0..chunks {
            let Some(&(target, leaf)) = self.chunks.get(&chunk) else {
                self.finding(
                    None,
                    format!("free-space map has no bitmap for chunk {chunk}"),
                );
                continue;
            };
            if !self.claim(target, &format!("free-space map leaf {leaf}")) {
                continue;
            }
            let Some(buf) = self.read(target) else {
                continue;
            };
            let bits =
                match bitmap::decode(&buf, target, chunk, self.sb.block_count, self.sb.fs_id()) {
                    Ok(bits) => bits.to_vec(),
                    Err(e) => {
                        self.finding(Some(target), e.to_string());
                        continue;
                    }
                };
            all_bits.push((chunk, bits));
        }
        if compare {
            for (chunk, bits) in all_bits {
                self.compare_chunk(chunk * per, &bits, per);
            }
        }
        self.stats.used_blocks = self.referenced.count();
    }

    fn compare_chunk(&mut self, first: u64, bits: &[u8], per: u64) {
        let end = self.sb.block_count.min(first + per);
        for b in first..end {
            let marked = bitmap::bit(bits, b - first).unwrap_or(false);
            let used = self.referenced.get(b);
            if marked && !used {
                self.finding(
                    Some(b),
                    format!("block {b} is marked in use but nothing refers to it (leaked)"),
                );
            } else if used && !marked {
                self.finding(Some(b), format!("block {b} is in use but marked free"));
            }
        }
    }
}
