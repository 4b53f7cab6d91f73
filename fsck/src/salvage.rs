//! Salvage: finding again the leaves that damaged blocks cut off, before repair drops
//! anything.
//!
//! The walk records a [`Hole`] for every key range of a tree that no reachable, verifying
//! leaf describes: below a damaged (or unreadable, or twice-used) interior node, the range
//! the parent gave it; for a damaged leaf, the range from its lower bound to the next
//! leaf's. Every tree block says what it is (magic, kind, its own number, owner tree,
//! filesystem id, delta; FORMAT.md §2), so the leaves that were below a damaged node, and
//! older versions of a damaged leaf in blocks freed since, can be found by reading the
//! device.
//!
//! **The scan** reads every block not already proved to be reachable metadata or referenced
//! by the current state, in batches of [`SCAN_BATCH_BYTES`]. A block is a *candidate* when
//! it verifies as a leaf (checksum, its own block number) of this filesystem (fs id), of a
//! tree with holes (owner), written no later than the last delta recovery replays
//! (`delta <= last_delta`: a newer leaf belongs to a delta that was never acknowledged),
//! and its keys `[first, last]` meet a hole. Only `(tree, first, last, delta, block)` of a
//! candidate is kept, so memory is bounded by the number of candidates (at most one per
//! block), never by their contents.
//!
//! **The choice**, per tree: candidates in order of delta, newest first (ties: the higher
//! block number). A candidate gets the part of the holes its key span covers that no newer
//! candidate covered already; a candidate whose span is already covered gets nothing. So
//! the newest verifying leaf wins each key range, an older version is used only where no
//! newer one was found, and keys outside the holes (described by reachable, verifying
//! leaves) are never replaced. What no candidate covers is lost; it is reported per file
//! by repair.
//!
//! **Using a choice.** The chosen blocks are read again and their entries inside the granted
//! ranges are visited like any reachable leaf's (codec checks, claims of data blocks). The
//! chosen block is claimed, so a repair never overwrites it. Repair then resolves what an
//! old version may bring back: extents compete for data blocks and file ranges newest leaf
//! first (the first owner keeps a block), entries naming missing inodes are dropped, and
//! the free-space map is rebuilt from what is kept.

use std::collections::{BTreeMap, HashMap};

use tuxfs_engine::dev::AlignedBuf;
use tuxfs_engine::format::btree::{Key, Leaf};
use tuxfs_engine::format::header::peek_kind;
use tuxfs_engine::format::{BlockHeader, Kind, ROOT_INUM, TreeId};
use tuxfs_engine::io::BlockReader;

use crate::walk::{Checker, EntryInfo, Hole};

/// Bytes read per batch by the salvage scan.
pub(crate) const SCAN_BATCH_BYTES: usize = 4 << 20;

/// The deepest directory path fsck spells out (a longer chain is a loop or damage).
const PATH_DEPTH_MAX: usize = 4096;

/// A leaf found by the scan: only what is needed to choose it.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    tree: TreeId,
    first: Key,
    last: Key,
    delta: u64,
    block: u64,
}

/// A key for reports: `(a, b)`.
pub(crate) fn show_key(k: Key) -> String {
    format!("({}, {})", k.a, k.b)
}

/// The key after `k`, or None when `k` is the largest key.
pub(crate) fn successor(k: Key) -> Option<Key> {
    if k.b < u64::MAX {
        Some(Key::new(k.a, k.b + 1))
    } else if k.a < u64::MAX {
        Some(Key::new(k.a + 1, 0))
    } else {
        None
    }
}

/// `a < b` where None is past every key.
fn below(a: Key, b: Option<Key>) -> bool {
    b.is_none_or(|b| a < b)
}

fn min_end(a: Option<Key>, b: Option<Key>) -> Option<Key> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Keys `[lo, hi)`; hi None = no end.
type Range = (Key, Option<Key>);

/// Key ranges `[lo, hi)` not yet covered: a set of disjoint intervals.
#[derive(Debug, Default)]
struct Uncovered(BTreeMap<Key, Option<Key>>);

impl Uncovered {
    /// The intervals that meet `[lo, hi)` (a range query: they are disjoint and sorted).
    fn meeting(&self, lo: Key, hi: Option<Key>) -> Vec<Range> {
        let mut out = Vec::new();
        if let Some((s, e)) = self.0.range(..=lo).next_back()
            && e.is_none_or(|e| lo < e)
        {
            out.push((*s, *e));
        }
        let after = (std::ops::Bound::Excluded(lo), std::ops::Bound::Unbounded);
        for (s, e) in self.0.range(after) {
            if !below(*s, hi) {
                break;
            }
            out.push((*s, *e));
        }
        out
    }

    /// Removes `[lo, hi)` and returns the parts of it that were uncovered.
    fn take(&mut self, lo: Key, hi: Option<Key>) -> Vec<Range> {
        let mut got = Vec::new();
        for (s, e) in self.meeting(lo, hi) {
            self.0.remove(&s);
            got.push((s.max(lo), min_end(e, hi)));
            if s < lo {
                self.0.insert(s, Some(lo));
            }
            if let Some(h) = hi
                && below(h, e)
            {
                self.0.insert(h, e);
            }
        }
        got
    }

    fn meets(&self, lo: Key, hi: Option<Key>) -> bool {
        !self.meeting(lo, hi).is_empty()
    }
}

impl Checker<'_> {
    /// Fills the holes the walk found with the best leaves on the device (module comment).
    pub(crate) fn salvage(&mut self, reader: &BlockReader<'_>) {
        // The free-space map is rebuilt from what is reachable, never salvaged.
        let holes: Vec<Hole> = std::mem::take(&mut self.holes)
            .into_iter()
            .filter(|h| h.tree != TreeId::Freemap)
            .collect();
        if holes.is_empty() {
            return;
        }
        let mut open: HashMap<TreeId, Uncovered> = HashMap::new();
        for h in &holes {
            open.entry(h.tree).or_default().0.insert(h.lo, h.hi);
        }
        let mut candidates = self.scan(reader, &open);
        candidates.sort_by_key(|c| std::cmp::Reverse((c.delta, c.block)));
        let mut chosen: Vec<(Candidate, Vec<Range>)> = Vec::new();
        for c in candidates {
            let Some(set) = open.get_mut(&c.tree) else {
                continue;
            };
            let parts = set.take(c.first, successor(c.last));
            if !parts.is_empty() {
                chosen.push((c, parts));
            }
        }
        // Visit in tree and key order, as the walk does. Every chosen block is claimed
        // first, so that an extent visited before it cannot take it as data.
        chosen.sort_by_key(|(c, _)| (c.tree as u8, c.first));
        for (c, _) in &chosen {
            self.referenced.set(c.block);
            self.proved(c.block, c.delta);
        }
        self.salvaging = true;
        for batch in chosen.chunks(self.batch_blocks()) {
            let blocks: Vec<u64> = batch.iter().map(|(c, _)| c.block).collect();
            let bufs = self.read_batch(reader, &blocks);
            for ((c, parts), buf) in batch.iter().zip(bufs) {
                let Some(buf) = buf else { continue };
                self.use_candidate(c, parts, &buf, &holes);
            }
        }
        self.salvaging = false;
        for (tree, set) in open {
            for (lo, hi) in set.0 {
                let block = holes
                    .iter()
                    .find(|h| h.tree == tree && h.lo <= lo && below(lo, h.hi))
                    .map_or(0, |h| h.block);
                self.lost.push(Hole {
                    tree,
                    lo,
                    hi,
                    block,
                });
            }
        }
        self.lost.sort_by_key(|h| (h.tree as u8, h.lo));
        // Not findings: the damaged block is one already, and a range left here may hold no
        // key at all (the gap between two leaves' first and last keys). What was really
        // lost is reported per file by repair.
        for tree in TreeId::ACTIVE {
            let ranges: Vec<&Hole> = self.lost.iter().filter(|h| h.tree == tree).collect();
            let Some(h) = ranges.first() else { continue };
            let end = h.hi.map_or("the end".to_string(), show_key);
            let what = format!(
                "{}: {} key ranges found in no leaf (the first: {} to {end}, lost with block {}); what they held is reported per file",
                tree.name(),
                ranges.len(),
                show_key(h.lo),
                h.block
            );
            self.notes.push(what);
        }
    }

    fn batch_blocks(&self) -> usize {
        (SCAN_BATCH_BYTES / self.sb.block_size as usize).max(1)
    }

    /// Reads `blocks` in one batch; when the batch fails, block by block (an unreadable
    /// block gives None).
    fn read_batch(&mut self, reader: &BlockReader<'_>, blocks: &[u64]) -> Vec<Option<AlignedBuf>> {
        self.stats.blocks_read += blocks.len() as u64;
        match reader.read_many(blocks) {
            Ok(bufs) => bufs.into_iter().map(Some).collect(),
            Err(_) => blocks.iter().map(|&b| reader.read(b).ok()).collect(),
        }
    }

    /// Reads every block that nothing reachable uses and keeps the leaves that could fill a
    /// hole.
    fn scan(
        &mut self,
        reader: &BlockReader<'_>,
        open: &HashMap<TreeId, Uncovered>,
    ) -> Vec<Candidate> {
        let fs_id = self.sb.fs_id();
        let mut found = Vec::new();
        let mut too_new = 0u64;
        let step = self.batch_blocks() as u64;
        let mut start = self.sb.first_block;
        while start < self.sb.block_count {
            let end = start.saturating_add(step).min(self.sb.block_count);
            let blocks: Vec<u64> = (start..end).filter(|&b| !self.referenced.get(b)).collect();
            start = end;
            if blocks.is_empty() {
                continue;
            }
            let bufs = self.read_batch(reader, &blocks);
            for (&block, buf) in blocks.iter().zip(bufs) {
                let Some(buf) = buf else { continue };
                if peek_kind(&buf) != Some(Kind::BtreeLeaf) {
                    continue;
                }
                let Ok(h) = BlockHeader::decode(&buf, block, Kind::BtreeLeaf, Some(fs_id)) else {
                    continue;
                };
                let Some(&tree) = open.keys().find(|t| **t as u64 == h.owner) else {
                    continue;
                };
                let Ok(leaf) = Leaf::decode(&buf, block, tree, fs_id) else {
                    continue;
                };
                let (Some(first), Some(last)) = (leaf.entries.first(), leaf.entries.last()) else {
                    continue;
                };
                let (first, last) = (first.0, last.0);
                let meets = open
                    .get(&tree)
                    .is_some_and(|set| set.meets(first, successor(last)));
                if !meets {
                    continue;
                }
                if h.delta > self.last_delta {
                    too_new += 1;
                    continue;
                }
                found.push(Candidate {
                    tree,
                    first,
                    last,
                    delta: h.delta,
                    block,
                });
            }
        }
        self.notes.push(format!(
            "salvage scan: {} candidate leaves for the lost key ranges ({too_new} newer than delta {} ignored)",
            found.len(),
            self.last_delta
        ));
        found
    }

    /// Visits the entries of a chosen leaf inside the ranges it was granted.
    fn use_candidate(&mut self, c: &Candidate, parts: &[Range], buf: &AlignedBuf, holes: &[Hole]) {
        let Ok(leaf) = Leaf::decode(buf, c.block, c.tree, self.sb.fs_id()) else {
            // It verified during the scan; the device changed under fsck.
            return;
        };
        self.stats.tree_blocks += 1;
        self.leaf_delta = c.delta;
        let mut used = 0usize;
        for (key, value) in &leaf.entries {
            if parts.iter().any(|(lo, hi)| *lo <= *key && below(*key, *hi)) {
                used += 1;
                self.visit(c.tree, c.block, *key, value);
            }
        }
        let from = holes
            .iter()
            .find(|h| {
                h.tree == c.tree && parts.iter().any(|(lo, _)| h.lo <= *lo && below(*lo, h.hi))
            })
            .map_or(0, |h| h.block);
        self.notes.push(format!(
            "salvaged {used} {} entries ({} to {}) from leaf block {} (delta {}), cut off by damaged block {from}",
            c.tree.name(),
            show_key(c.first),
            show_key(c.last),
            c.block,
            c.delta
        ));
    }

    /// Reports every data block whose checksum failed, with the file's path and offset.
    pub(crate) fn report_bad_data(&mut self) {
        if self.bad_data.is_empty() {
            return;
        }
        let names = Names::new(&self.entries);
        let bs = u64::from(self.sb.block_size);
        for d in std::mem::take(&mut self.bad_data) {
            let path = names.path(d.inum);
            let offset = d.file_block * bs;
            self.finding_as(
                crate::Fix::Never,
                Some(d.phys),
                format!(
                    "data block {} of {path} (inode {}, bytes {offset}..{}) is damaged: checksum {:#010x}, extent says {:#010x}",
                    d.phys,
                    d.inum,
                    offset + bs,
                    d.got,
                    d.want
                ),
            );
        }
    }
}

/// Paths of inodes, from directory entries.
pub(crate) struct Names {
    /// One naming entry per inode: (directory, name).
    up: HashMap<u64, (u64, Vec<u8>)>,
}

impl Names {
    pub(crate) fn new(entries: &[EntryInfo]) -> Self {
        let mut up = HashMap::new();
        for e in entries {
            up.entry(e.inum).or_insert_with(|| (e.dir, e.name.clone()));
        }
        Names { up }
    }

    pub(crate) fn from_pairs(pairs: impl Iterator<Item = (u64, u64, Vec<u8>)>) -> Self {
        let mut up = HashMap::new();
        for (dir, inum, name) in pairs {
            up.entry(inum).or_insert((dir, name));
        }
        Names { up }
    }

    /// `/a/b/c`, or `(inode N)/...` from the first inode whose name is unknown.
    pub(crate) fn path(&self, inum: u64) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = inum;
        for _ in 0..PATH_DEPTH_MAX {
            if cur == ROOT_INUM {
                return format!("/{}", parts.into_iter().rev().collect::<Vec<_>>().join("/"));
            }
            match self.up.get(&cur) {
                Some((dir, name)) => {
                    parts.push(String::from_utf8_lossy(name).into_owned());
                    cur = *dir;
                }
                None => break,
            }
        }
        parts.push(format!("(inode {cur})"));
        parts.into_iter().rev().collect::<Vec<_>>().join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_take_splits_and_grants_once() {
        let k = |a| Key::new(a, 0);
        let mut u = Uncovered::default();
        u.0.insert(k(10), Some(k(20)));
        u.0.insert(k(30), None);
        assert_eq!(u.take(k(12), Some(k(15))), vec![(k(12), Some(k(15)))]);
        assert_eq!(u.take(k(12), Some(k(15))), vec![]);
        let got = u.take(k(5), Some(k(35)));
        assert_eq!(
            got,
            vec![
                (k(10), Some(k(12))),
                (k(15), Some(k(20))),
                (k(30), Some(k(35)))
            ]
        );
        assert!(!u.meets(k(0), Some(k(35))));
        assert!(u.meets(k(40), Some(k(41))));
        assert_eq!(u.take(k(100), None), vec![(k(100), None)]);
        assert_eq!(u.0.get(&k(35)), Some(&Some(k(100))));
    }

    #[test]
    fn successor_carries() {
        assert_eq!(successor(Key::new(1, 2)), Some(Key::new(1, 3)));
        assert_eq!(successor(Key::new(1, u64::MAX)), Some(Key::new(2, 0)));
        assert_eq!(successor(Key::new(u64::MAX, u64::MAX)), None);
    }

    #[test]
    fn paths_end_at_the_root_or_say_where_they_break() {
        let n = Names::from_pairs(
            [
                (1, 5, b"a".to_vec()),
                (5, 6, b"b".to_vec()),
                (9, 7, b"c".to_vec()),
            ]
            .into_iter(),
        );
        assert_eq!(n.path(6), "/a/b");
        assert_eq!(n.path(7), "(inode 9)/c");
        assert_eq!(n.path(1), "/");
    }
}
