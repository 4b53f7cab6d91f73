//! Copy-on-write B+trees, held in memory as an ordered map of leaves by lower-bound key.
//!
//! On disk a tree is interior nodes over slotted leaves (format::btree). In memory the
//! engine keeps, per tree, the map `lower bound → leaf` — exactly what the log records
//! `LeafSet` and `LeafDel` express — and loads leaves on demand. Interior nodes are a pure
//! function of that map: recovery reads them once at mount to build it, and unify writes
//! them out afresh. Between unifies their changes live only in the log.
//!
//! **Invariants.**
//! - The leaf covering key `k` is the one with the greatest lower bound `<= k`; when the
//!   tree is not empty, a leaf with lower bound `Key::MIN` exists, so every key has a leaf.
//! - Every key stored in a leaf lies in `[its lower bound, the next leaf's lower bound)`.
//! - A dirty leaf is rewritten to a new block at commit; its old block is freed only when
//!   that commit is durable (the allocator defers it). Nothing durable is overwritten.
//! - Leaves may grow past a block in memory; commit splits them into as many blocks as
//!   their entries need. Leaves emptied by deletes are dropped at commit.
//! - A leaf's entries are shared (`Arc`) between the tree and a closed delta that still has
//!   to encode them (engine::delta): a change in the next delta copies them first (a leaf
//!   fork, as pages fork), so the closed delta always encodes exactly what it froze.
//!
//! **Lookups through `&self`.** [`Tree::get`], [`Tree::next`], [`Tree::prev`] and
//! [`Tree::range`] take `&self`, so readers holding the state lock shared (engine::fs)
//! look up in parallel. A leaf not loaded yet is loaded through its slot's `OnceLock`:
//! the block is read and decoded outside it, then set; a reader that lost the race drops
//! its copy and uses the one set first (both decoded the same block). Changes (insert,
//! remove, flush, eviction) take `&mut self`, so they never meet a reader.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use crate::format::btree::{Key, Leaf, Node, leaf_entry_cost, leaf_space};
use crate::format::{BlockHeader, Kind, TREE_HEIGHT_MAX, TreeId, TreeRoot};
use crate::io::BlockIo;
use crate::{Error, Result};

/// One leaf of a tree in memory.
#[derive(Debug, Default)]
struct LeafSlot {
    /// Where the leaf is on disk; 0 for a leaf never written.
    block: u64,
    /// The entries, once loaded; shared with a closed delta that has not encoded them yet.
    /// Filled through `&self` by the first lookup that needs them ([`Tree::loaded`]).
    entries: OnceLock<Arc<Entries>>,
    dirty: bool,
}

impl LeafSlot {
    /// A slot whose entries are read from `block` on first use.
    fn on_disk(block: u64) -> Self {
        LeafSlot {
            block,
            entries: OnceLock::new(),
            dirty: false,
        }
    }

    /// A slot holding `entries` already.
    fn with_entries(block: u64, entries: Arc<Entries>, dirty: bool) -> Self {
        LeafSlot {
            block,
            entries: OnceLock::from(entries),
            dirty,
        }
    }
}

/// The entries of one leaf.
pub type Entries = BTreeMap<Key, Vec<u8>>;

/// One leaf a commit writes: its new block and header, and its entries as frozen when the
/// delta closed. Encoding needs no lock ([`FrozenLeaf::encode`]).
#[derive(Debug)]
pub struct FrozenLeaf {
    pub block: u64,
    header: BlockHeader,
    entries: Arc<Entries>,
}

impl FrozenLeaf {
    /// The leaf block's bytes.
    pub fn encode(&self, block_size: u32) -> crate::dev::AlignedBuf {
        let mut buf = crate::dev::AlignedBuf::zeroed(block_size as usize);
        let refs: Vec<(Key, &[u8])> = self
            .entries
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        Leaf::encode(&mut buf, &self.header, &refs);
        buf
    }
}

/// What a commit did to one tree: the leaves to write and the log records to write.
#[derive(Debug, Default)]
pub struct TreeFlush {
    /// Leaves to encode, with their new block numbers.
    pub leaves: Vec<FrozenLeaf>,
    /// (lower bound, block) of each leaf written.
    pub set: Vec<(Key, u64)>,
    /// Lower bounds of leaves removed.
    pub deleted: Vec<Key>,
    /// Old blocks of rewritten or removed leaves, to free once the commit is durable.
    pub freed: Vec<u64>,
}

/// A B+tree.
#[derive(Debug)]
pub struct Tree {
    pub id: TreeId,
    leaves: BTreeMap<Key, LeafSlot>,
    /// Interior node blocks on disk as of the last unify; freed by the next unify.
    pub interior_blocks: Vec<u64>,
    fs_id: u64,
}

impl Tree {
    /// An empty tree.
    pub fn empty(id: TreeId, fs_id: u64) -> Self {
        Tree {
            id,
            leaves: BTreeMap::new(),
            interior_blocks: Vec::new(),
            fs_id,
        }
    }

    /// Loads the leaf map of a tree from its root: reads every interior node (not leaves).
    pub fn load(id: TreeId, root: TreeRoot, io: &BlockIo, fs_id: u64) -> Result<Self> {
        let mut tree = Tree::empty(id, fs_id);
        if root.block == 0 {
            return Ok(tree);
        }
        if root.height > TREE_HEIGHT_MAX {
            return Err(Error::corrupt(
                root.block,
                format!("{} height {} too large", id.name(), root.height),
            ));
        }
        // Breadth-first over interior levels, one batched read per level.
        let mut level: Vec<(Key, u64)> = vec![(Key::MIN, root.block)];
        for height in (1..=root.height).rev() {
            let blocks: Vec<u64> = level.iter().map(|(_, b)| *b).collect();
            let bufs = io.read_many(&blocks)?;
            let mut next = Vec::new();
            for ((lo, block), buf) in level.iter().zip(bufs.iter()) {
                let node = Node::decode(buf, *block, id, height, fs_id, 2..io.block_count)?;
                if node.entries.first().map(|(k, _)| *k) != Some(*lo) {
                    return Err(Error::corrupt(
                        *block,
                        format!("{} node does not start at its lower bound", id.name()),
                    ));
                }
                tree.interior_blocks.push(*block);
                next.extend(node.entries);
            }
            level = next;
        }
        for (lo, block) in level {
            tree.leaves.insert(lo, LeafSlot::on_disk(block));
        }
        Ok(tree)
    }

    /// Applies a logged leaf move (recovery).
    pub fn replay_set(&mut self, key: Key, block: u64) {
        self.leaves.insert(key, LeafSlot::on_disk(block));
    }

    /// Applies a logged leaf removal (recovery).
    pub fn replay_del(&mut self, key: Key) {
        self.leaves.remove(&key);
    }

    /// (lower bound, block) of every leaf, for unify.
    pub fn leaf_blocks(&self) -> Vec<(Key, u64)> {
        self.leaves.iter().map(|(k, s)| (*k, s.block)).collect()
    }

    /// The on-disk block of the leaf covering `key` (0 if none, or never written), for
    /// error messages about values stored there.
    pub fn leaf_block(&self, key: Key) -> u64 {
        self.covering(key)
            .and_then(|lo| self.leaves.get(&lo))
            .map_or(0, |s| s.block)
    }

    /// True when any leaf changed since the last commit.
    pub fn is_dirty(&self) -> bool {
        self.leaves.values().any(|s| s.dirty)
    }

    /// Lower bound of the leaf covering `key`.
    fn covering(&self, key: Key) -> Option<Key> {
        self.leaves.range(..=key).next_back().map(|(k, _)| *k)
    }

    /// The loaded entries of the leaf with lower bound `lo`, loading them through `&self`
    /// when needed: read and decoded outside the slot, then set (a racing loader's copy
    /// is dropped).
    fn loaded(&self, lo: Key, io: &BlockIo) -> Result<&Entries> {
        let slot = self
            .leaves
            .get(&lo)
            .ok_or_else(|| Error::invalid("leaf vanished"))?;
        if let Some(entries) = slot.entries.get() {
            return Ok(entries);
        }
        let entries = Arc::new(self.read_leaf(lo, slot.block, io)?);
        // Set, or keep what a racing loader set first: both decoded the same block.
        let _ = slot.entries.set(entries);
        slot.entries
            .get()
            .map(|e| &**e)
            .ok_or_else(|| Error::invalid("leaf not loaded"))
    }

    /// The entries of the leaf with lower bound `lo`, to change: copied first if a closed
    /// delta still shares them (a leaf fork).
    fn loaded_mut(&mut self, lo: Key, io: &BlockIo) -> Result<&mut Entries> {
        self.loaded(lo, io)?;
        let slot = self
            .leaves
            .get_mut(&lo)
            .ok_or_else(|| Error::invalid("leaf vanished"))?;
        slot.entries
            .get_mut()
            .map(Arc::make_mut)
            .ok_or_else(|| Error::invalid("leaf not loaded"))
    }

    /// Reads and decodes the leaf at `block` with lower bound `lo`.
    fn read_leaf(&self, lo: Key, block: u64, io: &BlockIo) -> Result<Entries> {
        let (id, fs_id) = (self.id, self.fs_id);
        let buf = io.read(block)?;
        let leaf = Leaf::decode(&buf, block, id, fs_id)?;
        let hi_ok = leaf.entries.iter().all(|(k, _)| *k >= lo);
        if !hi_ok {
            return Err(Error::corrupt(
                block,
                format!("{} leaf holds a key below its lower bound", id.name()),
            ));
        }
        Ok(leaf
            .entries
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect())
    }

    /// The value stored at `key`.
    pub fn get(&self, key: Key, io: &BlockIo) -> Result<Option<Vec<u8>>> {
        let Some(lo) = self.covering(key) else {
            return Ok(None);
        };
        Ok(self.loaded(lo, io)?.get(&key).cloned())
    }

    /// Stores `value` at `key`, replacing any value there.
    pub fn insert(&mut self, key: Key, value: Vec<u8>, io: &BlockIo) -> Result<()> {
        let lo = match self.covering(key) {
            Some(lo) => lo,
            None => {
                self.leaves.insert(
                    Key::MIN,
                    LeafSlot::with_entries(0, Arc::new(BTreeMap::new()), true),
                );
                Key::MIN
            }
        };
        self.loaded_mut(lo, io)?.insert(key, value);
        self.mark_dirty(lo);
        Ok(())
    }

    /// Removes the value at `key`, returning it.
    pub fn remove(&mut self, key: Key, io: &BlockIo) -> Result<Option<Vec<u8>>> {
        let Some(lo) = self.covering(key) else {
            return Ok(None);
        };
        if !self.loaded(lo, io)?.contains_key(&key) {
            return Ok(None);
        }
        let old = self.loaded_mut(lo, io)?.remove(&key);
        if old.is_some() {
            self.mark_dirty(lo);
        }
        Ok(old)
    }

    fn mark_dirty(&mut self, lo: Key) {
        if let Some(slot) = self.leaves.get_mut(&lo) {
            slot.dirty = true;
        }
    }

    /// The first entry with key `>= from` and `< to`.
    pub fn next(&self, from: Key, to: Key, io: &BlockIo) -> Result<Option<(Key, Vec<u8>)>> {
        if from >= to {
            return Ok(None);
        }
        let mut lo = match self.covering(from) {
            Some(lo) => lo,
            None => match self.leaves.keys().next() {
                Some(first) => *first,
                None => return Ok(None),
            },
        };
        loop {
            if lo >= to {
                return Ok(None);
            }
            let found = self
                .loaded(lo, io)?
                .range(from..to)
                .next()
                .map(|(k, v)| (*k, v.clone()));
            if found.is_some() {
                return Ok(found);
            }
            match self
                .leaves
                .range((Bound::Excluded(lo), Bound::Unbounded))
                .next()
            {
                Some((k, _)) => lo = *k,
                None => return Ok(None),
            }
        }
    }

    /// The last entry with key `<= at` and `>= floor`.
    pub fn prev(&self, at: Key, floor: Key, io: &BlockIo) -> Result<Option<(Key, Vec<u8>)>> {
        let Some(mut lo) = self.covering(at) else {
            return Ok(None);
        };
        loop {
            let found = self
                .loaded(lo, io)?
                .range(floor..=at)
                .next_back()
                .map(|(k, v)| (*k, v.clone()));
            if found.is_some() {
                return Ok(found);
            }
            if lo <= floor {
                return Ok(None);
            }
            match self.leaves.range(..lo).next_back() {
                Some((k, _)) => lo = *k,
                None => return Ok(None),
            }
        }
    }

    /// Up to `max` entries with keys in `[from, to)`, in order.
    pub fn range(
        &self,
        from: Key,
        to: Key,
        max: usize,
        io: &BlockIo,
    ) -> Result<Vec<(Key, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut at = from;
        while out.len() < max {
            let Some((k, v)) = self.next(at, to, io)? else {
                break;
            };
            out.push((k, v));
            match k.b.checked_add(1) {
                Some(b) => at = Key::new(k.a, b),
                None => match k.a.checked_add(1) {
                    Some(a) => at = Key::new(a, 0),
                    None => break,
                },
            }
        }
        Ok(out)
    }

    /// Leaves whose entries are in memory.
    pub fn loaded_leaves(&self) -> usize {
        self.leaves
            .values()
            .filter(|s| s.entries.get().is_some())
            .count()
    }

    /// Drops the entries of clean leaves from memory (they are read again on demand). Call
    /// only when no write of a clean leaf is in flight (after a commit's flush).
    pub fn evict_clean(&mut self) {
        for slot in self.leaves.values_mut() {
            if !slot.dirty && slot.block != 0 {
                slot.entries = OnceLock::new();
            }
        }
    }

    /// Writes every dirty leaf to new blocks from `alloc_block`, splitting leaves that
    /// outgrew a block and dropping empty ones. Returns what to write and log.
    pub fn flush_dirty(
        &mut self,
        block_size: u32,
        delta: u64,
        alloc_block: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<TreeFlush> {
        let mut out = TreeFlush::default();
        let dirty: Vec<Key> = self
            .leaves
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(k, _)| *k)
            .collect();
        for lo in dirty {
            let Some(mut slot) = self.leaves.remove(&lo) else {
                continue;
            };
            if slot.block != 0 {
                out.freed.push(slot.block);
            }
            let entries = slot.entries.take().unwrap_or_default();
            if entries.is_empty() {
                out.deleted.push(lo);
                continue;
            }
            let chunks = split_for_leaves(&entries, block_size);
            // One block holds it (the common case): the tree and the closed delta share
            // the entries; only a leaf that outgrew its block is copied into pieces.
            let pieces: Vec<(Key, Arc<Entries>)> = if chunks.len() == 1 {
                vec![(lo, Arc::clone(&entries))]
            } else {
                chunks
                    .iter()
                    .enumerate()
                    .map(|(i, chunk)| {
                        let chunk_lo = if i == 0 {
                            lo
                        } else {
                            chunk.first().map_or(lo, |(k, _)| **k)
                        };
                        let map: Entries = chunk.iter().map(|(k, v)| (**k, (*v).clone())).collect();
                        (chunk_lo, Arc::new(map))
                    })
                    .collect()
            };
            for (chunk_lo, piece) in pieces {
                let block = alloc_block()?;
                let header = BlockHeader {
                    kind: Kind::BtreeLeaf,
                    level: 0,
                    blocknr: block,
                    owner: self.id as u64,
                    delta,
                    fs_id: self.fs_id,
                };
                out.leaves.push(FrozenLeaf {
                    block,
                    header,
                    entries: Arc::clone(&piece),
                });
                out.set.push((chunk_lo, block));
                self.leaves
                    .insert(chunk_lo, LeafSlot::with_entries(block, piece, false));
            }
        }
        self.fix_lowest(&mut out);
        // A removed leaf's lower bound may have been re-added by a split of its neighbour.
        out.deleted.retain(|k| !self.leaves.contains_key(k));
        Ok(out)
    }

    /// Keeps the invariant that a non-empty tree has a leaf at `Key::MIN`: when the first
    /// leaf was dropped, the next leaf takes over its lower bound (only the map changes).
    fn fix_lowest(&mut self, out: &mut TreeFlush) {
        if self.leaves.contains_key(&Key::MIN) {
            return;
        }
        let Some((&first, _)) = self.leaves.iter().next() else {
            return;
        };
        if let Some(slot) = self.leaves.remove(&first) {
            out.set.retain(|(k, _)| *k != first);
            out.deleted.push(first);
            out.set.push((Key::MIN, slot.block));
            self.leaves.insert(Key::MIN, slot);
        }
    }
}

/// Splits sorted entries into runs that each fit in one leaf.
fn split_for_leaves(
    entries: &BTreeMap<Key, Vec<u8>>,
    block_size: u32,
) -> Vec<Vec<(&Key, &Vec<u8>)>> {
    let space = leaf_space(block_size);
    let mut out: Vec<Vec<(&Key, &Vec<u8>)>> = vec![Vec::new()];
    let mut used = 0usize;
    for (k, v) in entries {
        let cost = leaf_entry_cost(v.len());
        if used + cost > space && out.last().is_some_and(|c| !c.is_empty()) {
            out.push(Vec::new());
            used = 0;
        }
        if let Some(last) = out.last_mut() {
            last.push((k, v));
        }
        used += cost;
    }
    out
}

/// Builds the interior levels over `leaves` (sorted by lower bound, the first at
/// `Key::MIN`) with blocks from `alloc_block`. Returns the root and the encoded nodes.
pub fn build_interior(
    tree: TreeId,
    leaves: &[(Key, u64)],
    block_size: u32,
    delta: u64,
    fs_id: u64,
    alloc_block: &mut dyn FnMut() -> Result<u64>,
) -> Result<(TreeRoot, Vec<(u64, crate::dev::AlignedBuf)>)> {
    let mut out = Vec::new();
    let mut level: Vec<(Key, u64)> = leaves.to_vec();
    let mut height = 0u8;
    let cap = crate::format::btree::node_capacity(block_size);
    if level.is_empty() {
        return Ok((TreeRoot::default(), out));
    }
    while level.len() > 1 {
        height += 1;
        let per = level.len().div_ceil(level.len().div_ceil(cap));
        let mut parents = Vec::new();
        for group in level.chunks(per) {
            let block = alloc_block()?;
            let mut buf = crate::dev::AlignedBuf::zeroed(block_size as usize);
            let header = BlockHeader {
                kind: Kind::BtreeNode,
                level: height,
                blocknr: block,
                owner: tree as u64,
                delta,
                fs_id,
            };
            Node::encode(&mut buf, &header, group);
            parents.push((group.first().map_or(Key::MIN, |(k, _)| *k), block));
            out.push((block, buf));
        }
        level = parents;
    }
    let root = level.first().map_or(0, |(_, b)| *b);
    Ok((
        TreeRoot {
            block: root,
            height,
        },
        out,
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dev::mem::MemDevice;

    fn io() -> BlockIo {
        BlockIo {
            dev: Arc::new(MemDevice::new(512 * 4096)),
            block_size: 512,
            block_count: 4096,
        }
    }

    /// Writes `tree`'s dirty leaves to `io` (blocks from `alloc`); returns how many.
    fn write_dirty(tree: &mut Tree, io: &BlockIo, alloc: &mut dyn FnMut() -> Result<u64>) -> usize {
        let f = tree.flush_dirty(512, 1, alloc).expect("flush");
        let bufs: Vec<_> = f
            .leaves
            .iter()
            .map(|l| (l.block, Arc::new(l.encode(512))))
            .collect();
        io.write(bufs).expect("write");
        f.leaves.len()
    }

    /// Writes `tree`'s interior nodes and loads it again from them (no leaf in memory).
    fn reload(tree: &Tree, io: &BlockIo, alloc: &mut dyn FnMut() -> Result<u64>) -> Tree {
        let (root, nodes) =
            build_interior(tree.id, &tree.leaf_blocks(), 512, 1, 7, alloc).expect("build");
        io.write(nodes.into_iter().map(|(b, d)| (b, Arc::new(d))).collect())
            .expect("write");
        Tree::load(tree.id, root, io, 7).expect("load")
    }

    /// A leaf frozen by a commit is shared with the tree; a change after the freeze copies
    /// it (a leaf fork), so the frozen leaf still encodes what the commit froze.
    #[test]
    fn frozen_leaves_fork_on_change() {
        let io = io();
        let mut tree = Tree::empty(TreeId::Inodes, 7);
        for i in 0..10u64 {
            tree.insert(Key::new(i, 0), vec![i as u8; 8], &io)
                .expect("insert");
        }
        let mut next = 100u64;
        let f = tree
            .flush_dirty(512, 1, &mut || {
                next += 1;
                Ok(next)
            })
            .expect("flush");
        assert_eq!(f.leaves.len(), 1);
        let before = f.leaves[0].encode(512);
        tree.insert(Key::new(3, 0), vec![0xee; 8], &io)
            .expect("change");
        tree.remove(Key::new(4, 0), &io).expect("remove");
        tree.insert(Key::new(50, 0), vec![1; 8], &io).expect("add");
        assert!(
            f.leaves[0].encode(512)[..] == before[..],
            "the frozen leaf changed"
        );
        let leaf = Leaf::decode(&before, 101, TreeId::Inodes, 7).expect("decode");
        assert_eq!(leaf.entries.len(), 10);
        assert_eq!(
            tree.get(Key::new(3, 0), &io).expect("get"),
            Some(vec![0xee; 8])
        );
        assert_eq!(tree.get(Key::new(4, 0), &io).expect("get"), None);
    }

    /// Inserts and removes many keys, committing now and then, and compares with a model;
    /// then writes the tree out, reloads it from its interior nodes and compares again.
    #[test]
    fn model_check_with_commits_and_reload() {
        let io = io();
        let mut tree = Tree::empty(TreeId::Dirs, 7);
        let mut model = BTreeMap::new();
        let mut next_block = 10u64;
        let mut alloc = || {
            next_block += 1;
            Ok(next_block)
        };
        let mut seed = 0x1234_5678u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..3000u64 {
            let key = Key::new(rnd() % 7, rnd() % 500);
            if rnd() % 3 == 0 {
                assert_eq!(tree.remove(key, &io).expect("remove"), model.remove(&key));
            } else {
                let v = vec![step as u8; (rnd() % 60) as usize];
                tree.insert(key, v.clone(), &io).expect("insert");
                model.insert(key, v);
            }
            if step % 250 == 0 {
                write_dirty(&mut tree, &io, &mut alloc);
                tree.evict_clean();
            }
        }
        write_dirty(&mut tree, &io, &mut alloc);
        let all = tree
            .range(Key::MIN, Key::new(u64::MAX, u64::MAX), usize::MAX, &io)
            .expect("range");
        assert_eq!(
            all,
            model
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect::<Vec<_>>()
        );
        let again = reload(&tree, &io, &mut alloc);
        let all2 = again
            .range(Key::MIN, Key::new(u64::MAX, u64::MAX), usize::MAX, &io)
            .expect("range");
        assert_eq!(all2, all);
        for (k, v) in model.iter().take(50) {
            assert_eq!(again.get(*k, &io).expect("get").as_ref(), Some(v));
            assert_eq!(
                again
                    .prev(*k, Key::MIN, &io)
                    .expect("prev")
                    .map(|(k2, _)| k2),
                Some(*k)
            );
        }
    }

    /// Lookups take `&self`: threads sharing one tree load its leaves on first use, in
    /// parallel, and all see the stored values; each leaf ends up loaded once.
    #[test]
    fn parallel_lookups_load_leaves_through_shared_refs() {
        let io = io();
        let mut tree = Tree::empty(TreeId::Inodes, 7);
        let mut next_block = 10u64;
        let mut alloc = || {
            next_block += 1;
            Ok(next_block)
        };
        for i in 0..400u64 {
            tree.insert(Key::new(i, 0), vec![i as u8; 40], &io)
                .expect("insert");
        }
        let leaves = write_dirty(&mut tree, &io, &mut alloc);
        assert!(leaves > 4, "{leaves} leaves");
        let tree = reload(&tree, &io, &mut alloc);
        assert_eq!(tree.loaded_leaves(), 0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (tree, io) = (&tree, &io);
                s.spawn(move || {
                    for n in 0..400u64 {
                        let i = (n * 7 + t * 101) % 400;
                        assert_eq!(
                            tree.get(Key::new(i, 0), io).expect("get"),
                            Some(vec![i as u8; 40])
                        );
                        let (k, _) = tree
                            .next(Key::new(i, 0), Key::new(u64::MAX, 0), io)
                            .expect("next")
                            .expect("an entry");
                        assert_eq!(k, Key::new(i, 0));
                    }
                });
            }
        });
        assert_eq!(tree.loaded_leaves(), leaves);
    }
}
