//! Walking everything reachable from the superblock: trees, log chain, bitmap, xattr
//! chains, and (with `--data`) data blocks. Each block is marked referenced once; a block
//! reached twice is reported and not descended into again, which also stops loops. (A
//! leaf reached twice is still decoded: it cannot lead anywhere, and if it verifies its
//! entries are real; entries outside the range it was reached with are dropped.)
//!
//! With `-p`/`-y` the walk also keeps what survives ([`Kept`]): every entry that decodes,
//! in the state recovery would produce (after the log), so that `repair` can write it out
//! afresh. Memory is then bounded by the filesystem's metadata: the decoded entries of the
//! trees (about the size of their leaves) plus three bitsets of one bit per block.
//!
//! Where a node or leaf does not verify (or cannot be read, or is reached twice), the key
//! range it was reached with is recorded as a [`Hole`]; with `-p`/`-y`, `salvage` then looks
//! for the leaves of those ranges on the device before anything is dropped.

use std::collections::BTreeMap;

use tuxfs_engine::dev::{AlignedBuf, BlockDevice, read_at};
use tuxfs_engine::format::acl::{self, XATTR_ACL_ACCESS, XATTR_ACL_DEFAULT};
use tuxfs_engine::format::btree::{Key, Leaf, Node, decode_block_ref};
use tuxfs_engine::format::dirent::Dirent;
use tuxfs_engine::format::extent::{Extent, ExtentFlags};
use tuxfs_engine::format::inode::Inode;
use tuxfs_engine::format::inode::{S_IFDIR, S_IFMT};
use tuxfs_engine::format::log::LogRecord;
use tuxfs_engine::format::xattr::{SpillReader, XattrEntry};
use tuxfs_engine::format::{SUPERBLOCK_SLOTS, Superblock, TreeId, bitmap, data_crc};
use tuxfs_engine::io::BlockReader;
use tuxfs_engine::recovery::{LogReplay, read_log, stale_delta_max_ahead};

use crate::bitset::Bitset;
use tuxfs_engine::Error;

use crate::{Finding, Fix, Mode, OperationalError, Options, Stats};

/// Names of a damaged xattr chain that fsck lists (the count says how many there were).
const XATTR_NAMES_REPORTED: usize = 16;

/// What survives the walk, for repair: every entry that decodes, as recovery would see it.
#[derive(Debug)]
pub(crate) struct Kept {
    pub inodes: BTreeMap<u64, Inode>,
    /// Extents that decode, cut to the part inside the filesystem, with the delta of the
    /// leaf they came from (a newer leaf's claim on a data block wins over an older one's).
    pub extents: BTreeMap<Key, (Extent, u64)>,
    /// Per inode with a spill chain: its blocks if the whole chain verifies.
    pub xattr_chains: BTreeMap<u64, Option<Vec<u64>>>,
    /// Blocks whose header proved them metadata (nodes, leaves, xattr blocks, the log
    /// chain): a data extent that points at one of them loses that block.
    pub metadata: Bitset,
    /// The highest delta number seen in the superblock, the log and any block header.
    pub max_delta: u64,
}

/// Where a tree's leaf map says a leaf starts: a leaf block, or a subtree or leaf that was
/// lost (the damaged block), whose keys a salvage scan may find again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A leaf; `lost` names the damaged block when the log put this leaf inside a lost
    /// subtree: only the keys it holds are known, the rest of its range stays lost.
    Leaf {
        block: u64,
        lost: Option<u64>,
    },
    Lost(u64),
}

impl Slot {
    /// The damaged block whose lost range this slot lies in, if any.
    fn lost(self) -> Option<u64> {
        match self {
            Slot::Leaf { lost, .. } => lost,
            Slot::Lost(b) => Some(b),
        }
    }
}

/// Keys of a tree that no reachable, verifying leaf describes: [lo, hi), hi None = no end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hole {
    pub tree: TreeId,
    pub lo: Key,
    pub hi: Option<Key>,
    /// The damaged block the keys were lost with.
    pub block: u64,
}

/// A data block whose checksum does not match its extent (with `--data`).
#[derive(Debug, Clone)]
pub(crate) struct BadData {
    pub phys: u64,
    pub inum: u64,
    pub file_block: u64,
    pub got: u32,
    pub want: u32,
}

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
    pub pos: u64,
    pub inum: u64,
    pub dtype: u8,
    pub name: Vec<u8>,
}

pub(crate) struct Checker<'a> {
    dev: &'a dyn BlockDevice,
    pub sb: Superblock,
    /// A superblock slot did not verify: the one in use may be older than the history on
    /// the device ([`crate::history`]).
    pub slot_damaged: bool,
    pub opts: Options,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
    pub stats: Stats,
    /// Every block something refers to.
    pub referenced: Bitset,
    /// What survives, kept only when repairing.
    pub kept: Option<Kept>,
    /// (inode, end) of the last extent visited, to catch overlaps.
    last_extent: Option<(u64, u64)>,
    pub inodes: BTreeMap<u64, InodeInfo>,
    pub entries: Vec<EntryInfo>,
    pub orphans: Vec<u64>,
    /// Data blocks counted per inode from its extents.
    pub extent_blocks: BTreeMap<u64, u64>,
    chunks: BTreeMap<u64, (u64, u64)>,
    /// The next inode number as of the state being checked.
    pub next_inum: u64,
    /// Key ranges lost with damaged nodes and leaves (before salvage).
    pub holes: Vec<Hole>,
    /// Key ranges that salvage could not find again (set by `salvage`).
    pub lost: Vec<Hole>,
    /// Per inode whose xattr spill chain is damaged: what it loses, for the repair report.
    pub xattr_damage: BTreeMap<u64, String>,
    /// The delta of the leaf being visited.
    pub(crate) leaf_delta: u64,
    /// The last delta recovery replays: salvaged leaves must not be newer.
    pub last_delta: u64,
    pub bad_data: Vec<BadData>,
    /// True while salvaged leaves are visited.
    pub(crate) salvaging: bool,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(dev: &'a dyn BlockDevice, sb: Superblock, opts: Options) -> Self {
        let referenced = Bitset::new(sb.block_count);
        let next_inum = sb.next_inum;
        let kept = (opts.mode != Mode::Check).then(|| Kept {
            inodes: BTreeMap::new(),
            extents: BTreeMap::new(),
            xattr_chains: BTreeMap::new(),
            metadata: Bitset::new(sb.block_count),
            max_delta: sb.delta.max(sb.log_delta),
        });
        Checker {
            dev,
            sb,
            opts,
            findings: Vec::new(),
            notes: Vec::new(),
            stats: Stats::default(),
            referenced,
            kept,
            slot_damaged: false,
            last_extent: None,
            inodes: BTreeMap::new(),
            entries: Vec::new(),
            orphans: Vec::new(),
            extent_blocks: BTreeMap::new(),
            chunks: BTreeMap::new(),
            next_inum,
            holes: Vec::new(),
            lost: Vec::new(),
            leaf_delta: 0,
            xattr_damage: BTreeMap::new(),
            last_delta: 0,
            bad_data: Vec::new(),
            salvaging: false,
        }
    }

    /// Records a problem whose repair drops or moves something (only `-y` repairs it).
    pub(crate) fn finding(&mut self, block: Option<u64>, what: impl Into<String>) {
        self.finding_as(Fix::Lossy, block, what);
    }

    /// Records a problem whose repair loses nothing (`-p` repairs it too).
    pub(crate) fn finding_safe(&mut self, block: Option<u64>, what: impl Into<String>) {
        self.finding_as(Fix::Safe, block, what);
    }

    pub(crate) fn finding_as(&mut self, fix: Fix, block: Option<u64>, what: impl Into<String>) {
        self.findings.push(Finding {
            block,
            what: what.into(),
            fixed: false,
            fix,
        });
    }

    /// With a damaged superblock slot: a log block on the device whose delta number the
    /// next deltas would reuse is a finding, and the repair numbers past it
    /// ([`crate::history`]).
    fn newer_history(
        &mut self,
        reader: &BlockReader<'_>,
        replay: &LogReplay,
    ) -> Result<(), OperationalError> {
        let stale = stale_delta_max_ahead(reader, self.sb.fs_id(), replay)
            .map_err(|e| OperationalError(format!("cannot read the log: {e}")))?
            .unwrap_or(0);
        let floor = replay.next_delta.max(stale.saturating_add(1));
        let found = crate::history::newest_log_block(
            reader,
            self.sb.fs_id(),
            self.sb.first_block,
            floor,
            &mut self.stats.blocks_read,
        );
        if let Some((delta, block)) = found {
            self.finding_as(
                Fix::Safe,
                Some(block),
                format!(
                    "log block of delta {delta} from a newer history than the superblock in \
                     use (a damaged slot may have been newer): the next deltas would reuse \
                     numbers from {floor}, so the repair numbers them past {delta}"
                ),
            );
            if let Some(k) = &mut self.kept {
                k.max_delta = k.max_delta.max(delta);
            }
        }
        Ok(())
    }

    /// Notes that `block` proved to be metadata, written by `delta`.
    pub(crate) fn proved(&mut self, block: u64, delta: u64) {
        if let Some(k) = &mut self.kept {
            k.metadata.set(block);
            k.max_delta = k.max_delta.max(delta);
        }
    }

    /// Runs every check. An I/O error reading the log is operational (exit 8): fsck must
    /// not take a block it could not read for the end of the log.
    pub(crate) fn run(&mut self) -> Result<(), OperationalError> {
        for slot in SUPERBLOCK_SLOTS {
            self.referenced.set(slot);
        }
        let reader = BlockReader {
            dev: self.dev,
            block_size: self.sb.block_size,
            block_count: self.sb.block_count,
        };
        // The same log reader recovery uses: fsck judges the state a mount would produce.
        let replay = match read_log(&reader, &self.sb) {
            Ok(replay) => replay,
            Err(e @ (Error::Io { .. } | Error::DeviceFailed { .. })) => {
                return Err(OperationalError(format!("cannot read the log: {e}")));
            }
            Err(e) => {
                // A log that cannot be replayed at all: recovery refuses it too. Only -y
                // repairs it, keeping the state of the last unify.
                self.finding_as(Fix::Lossy, e.block(), format!("log: {e}"));
                LogReplay {
                    deltas: Vec::new(),
                    ahead: self.sb.log_head,
                    ahead_next: self.sb.log_next(),
                    next_delta: self.sb.log_delta,
                    dropped_unverified: false,
                    damage: None,
                }
            }
        };
        self.last_delta = replay.deltas.last().map_or(self.sb.delta, |d| d.delta);
        if let Some(d) = &replay.damage {
            // Durable deltas from the damaged one on are lost to replay, and a read-write
            // mount refuses. Only -y repairs it, by keeping the state before the damage
            // (what a read-only mount serves): the later deltas are dropped.
            self.finding_as(
                Fix::Lossy,
                Some(d.block),
                format!(
                    "log block of delta {} does not verify ({}), but delta {} at block {} \
                     does: the log is damaged, not torn, and the deltas from {} on are lost \
                     to replay",
                    d.delta,
                    d.what,
                    d.delta + 1,
                    d.witness,
                    d.delta
                ),
            );
        }
        self.claim_log(&replay);
        if self.slot_damaged {
            self.newer_history(&reader, &replay)?;
        }
        if let Some(k) = &mut self.kept {
            // Stale log blocks after the end of the log (and at the block allocated two
            // ahead) carry numbers a repair must not reuse either.
            let stale = stale_delta_max_ahead(&reader, self.sb.fs_id(), &replay)
                .map_err(|e| OperationalError(format!("cannot read the log: {e}")))?
                .unwrap_or(0);
            k.max_delta = k.max_delta.max(stale).max(replay.next_delta);
        }
        for tree in TreeId::ACTIVE {
            let root = self.sb.root(tree);
            let mut leaves = BTreeMap::new();
            if root.block != 0 {
                self.collect_leaves(
                    tree,
                    root.block,
                    root.height,
                    Key::MIN,
                    None,
                    "the superblock",
                    &mut leaves,
                );
            }
            for record in replay.deltas.iter().flat_map(|d| &d.records) {
                match record {
                    LogRecord::LeafSet {
                        tree: t,
                        key,
                        block,
                    } if *t == tree => {
                        // A leaf the log puts inside a lost range (the range runs on to
                        // the next known leaf) leaves the rest of that range lost.
                        let lost = leaves
                            .range(..=*key)
                            .next_back()
                            .and_then(|(_, s)| s.lost());
                        leaves.insert(
                            *key,
                            Slot::Leaf {
                                block: *block,
                                lost,
                            },
                        );
                    }
                    LogRecord::LeafDel { tree: t, key } if *t == tree => {
                        // Inside a lost range, the other leaves of the lost subtree may
                        // still start after this key: the range stays lost.
                        if let Some(damaged) = leaves.remove(key).and_then(Slot::lost) {
                            leaves.insert(*key, Slot::Lost(damaged));
                        }
                    }
                    _ => {}
                }
            }
            self.check_leaves(tree, &leaves);
        }
        if self.opts.mode == Mode::Yes {
            // Leaves cut off by damaged blocks are looked for before anything is dropped.
            // (-p never repairs what they cut off: dropping entries is not safe.)
            self.salvage(&reader);
        } else if !self.holes.is_empty() {
            self.notes.push(format!(
                "{} key ranges of the trees were cut off by damaged blocks; fsck -y looks for their leaves on the device before it drops anything",
                self.holes.len()
            ));
        }
        for record in replay.deltas.iter().flat_map(|d| &d.records) {
            match record {
                LogRecord::OrphanAdd { inum } => self.orphans.push(*inum),
                LogRecord::OrphanDel { inum } => self.orphans.retain(|i| i != inum),
                _ => {}
            }
        }
        if let Some(last) = replay.deltas.last() {
            self.next_inum = last.commit.next_inum;
        }
        self.check_xattr_chains();
        self.check_bitmap(&replay);
        self.report_bad_data();
        self.cross_check();
        Ok(())
    }

    /// Claims the log blocks of every delta recovery would replay, and the block allocated
    /// ahead for the next one.
    fn claim_log(&mut self, replay: &LogReplay) {
        for d in &replay.deltas {
            for &b in &d.blocks {
                self.stats.log_blocks += 1;
                self.claim(b, "the log chain");
                self.proved(b, d.delta);
            }
        }
        // read_log read every chain block and the block after it.
        self.stats.blocks_read += self.stats.log_blocks + 1;
        self.claim(replay.ahead, "the log (block allocated ahead)");
        self.proved(replay.ahead, replay.next_delta);
        if let Some(b) = replay.ahead_next.filter(|&b| b != replay.ahead) {
            self.claim(b, "the log (block allocated two ahead)");
        }
        self.stats.log_deltas = replay.deltas.len() as u64;
        if !replay.deltas.is_empty() {
            self.notes.push(format!(
                "the log holds {} deltas after the last unify ({} log blocks); checked the state recovery produces",
                replay.deltas.len(),
                self.stats.log_blocks
            ));
        }
        if replay.dropped_unverified {
            self.notes.push(format!(
                "delta {} is in the log but not all its blocks reached the disk; recovery drops it",
                replay.next_delta
            ));
        }
    }

    pub(crate) fn in_fs(&self, block: u64) -> bool {
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

    pub(crate) fn read(&mut self, block: u64) -> Option<AlignedBuf> {
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

    /// Walks the interior nodes of the subtree at `block` (keys in [lo, hi)) and collects
    /// its leaves by lower bound. Leaves are checked later, after the log is applied.
    #[allow(clippy::too_many_arguments)]
    fn collect_leaves(
        &mut self,
        tree: TreeId,
        block: u64,
        level: u8,
        lo: Key,
        hi: Option<Key>,
        by: &str,
        leaves: &mut BTreeMap<Key, Slot>,
    ) {
        if level == 0 {
            leaves.insert(lo, Slot::Leaf { block, lost: None });
            return;
        }
        // Whatever stops the descent loses the keys [lo, hi) below this node: a hole in
        // the leaf map, which salvage tries to fill from the rest of the device.
        if !self.claim(block, by) {
            leaves.insert(lo, Slot::Lost(block));
            return;
        }
        let Some(buf) = self.read(block) else {
            leaves.insert(lo, Slot::Lost(block));
            return;
        };
        self.stats.tree_blocks += 1;
        let valid = self.sb.first_block..self.sb.block_count;
        let node = match Node::decode(&buf, block, tree, level, self.sb.fs_id(), valid) {
            Ok(node) => node,
            Err(e) => {
                leaves.insert(lo, Slot::Lost(block));
                return self.finding(Some(block), format!("{}: {e}", tree.name()));
            }
        };
        self.proved(block, node.header.delta);
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
            if *key < lo || hi.is_some_and(|h| *key >= h) {
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
            self.collect_leaves(tree, *child, level - 1, *key, next, &by, leaves);
        }
    }

    /// Checks every leaf of a tree: its block, its structure, that its keys lie between its
    /// lower bound and the next leaf's, and every value.
    fn check_leaves(&mut self, tree: TreeId, leaves: &BTreeMap<Key, Slot>) {
        if !leaves.is_empty() && !leaves.contains_key(&Key::MIN) {
            self.finding(
                None,
                format!("the {} has no leaf for its smallest keys", tree.name()),
            );
        }
        let bounds: Vec<(Key, Slot)> = leaves.iter().map(|(k, b)| (*k, *b)).collect();
        for (i, &(lo, slot)) in bounds.iter().enumerate() {
            let hi = bounds.get(i + 1).map(|(k, _)| *k);
            let hole = Hole {
                tree,
                lo,
                hi,
                block: 0,
            };
            let (block, inside) = match slot {
                Slot::Leaf { block, lost } => (block, lost),
                Slot::Lost(block) => {
                    self.holes.push(Hole { block, ..hole });
                    continue;
                }
            };
            let first = self.claim(block, &format!("{} leaf", tree.name()));
            if !first && !self.in_fs(block) {
                self.holes.push(Hole { block, ..hole });
                continue;
            }
            let Some(buf) = self.read(block) else {
                self.holes.push(Hole { block, ..hole });
                continue;
            };
            self.stats.tree_blocks += 1;
            let leaf = match Leaf::decode(&buf, block, tree, self.sb.fs_id()) {
                Ok(leaf) => leaf,
                Err(e) => {
                    if first {
                        self.finding(Some(block), format!("{}: {e}", tree.name()));
                    }
                    self.holes.push(Hole { block, ..hole });
                    continue;
                }
            };
            self.proved(block, leaf.header.delta);
            self.leaf_delta = leaf.header.delta;
            if let Some(damaged) = inside {
                self.holes_around(&hole, damaged, &leaf);
            }
            if leaf.entries.is_empty() && bounds.len() > 1 {
                self.finding_safe(
                    Some(block),
                    format!(
                        "block {block}: empty {} leaf in a tree of several leaves",
                        tree.name()
                    ),
                );
            }
            for (key, value) in leaf.entries {
                if key < lo || hi.is_some_and(|h| key >= h) {
                    self.finding(
                        Some(block),
                        format!(
                            "block {block}: {} key {key:?} outside the leaf's range",
                            tree.name()
                        ),
                    );
                    continue;
                }
                self.visit(tree, block, key, value);
            }
        }
    }

    /// Records as lost the parts of `hole`'s range that a leaf the log put inside a lost
    /// subtree does not span (before its first key, after its last).
    fn holes_around(&mut self, hole: &Hole, damaged: u64, leaf: &Leaf<'_>) {
        let (Some((first, _)), Some((last, _))) = (leaf.entries.first(), leaf.entries.last())
        else {
            self.holes.push(Hole {
                block: damaged,
                ..hole.clone()
            });
            return;
        };
        if hole.lo < *first {
            self.holes.push(Hole {
                hi: Some(*first),
                block: damaged,
                ..hole.clone()
            });
        }
        if let Some(after) = crate::salvage::successor(*last)
            && hole.hi.is_none_or(|hi| after < hi)
        {
            self.holes.push(Hole {
                lo: after,
                block: damaged,
                ..hole.clone()
            });
        }
    }

    /// Checks one leaf entry with its tree's codec and remembers what cross-checks need.
    pub(crate) fn visit(&mut self, tree: TreeId, block: u64, key: Key, value: &[u8]) {
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
        let mut inode = match Inode::decode(value, block) {
            Ok(inode) => inode,
            Err(e) => {
                let Some((inode, how)) = salvage_inode(value, block) else {
                    return Err(e.to_string());
                };
                self.finding(
                    Some(block),
                    format!(
                        "block {block}: inode {}: the record decodes only {how} ({e})",
                        key.a
                    ),
                );
                inode
            }
        };
        self.check_acls(block, key.a, &mut inode);
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
        if let Some(k) = &mut self.kept {
            k.inodes.insert(key.a, inode);
        }
        Ok(())
    }

    /// The ACL xattrs of inode `inum` (in the leaf `block`) must decode as ACLs, and a
    /// default ACL belongs to a directory only (the engine refuses others, SEMANTICS.md).
    /// Either problem is a finding; the ACL is dropped from the kept inode, so `-y` writes
    /// it without that xattr (the mode stays).
    fn check_acls(&mut self, block: u64, inum: u64, inode: &mut Inode) {
        let mut drop_names = Vec::new();
        for x in &inode.inline_xattrs {
            let name = x.name.as_slice();
            if name != XATTR_ACL_ACCESS && name != XATTR_ACL_DEFAULT {
                continue;
            }
            let shown = String::from_utf8_lossy(name);
            let problem = match acl::decode(&x.value) {
                Err(e) => Some(format!("not a valid ACL: {e}")),
                Ok(_) if name == XATTR_ACL_DEFAULT && !inode.is_dir() => Some(format!(
                    "a default ACL on a non-directory (mode {:#o})",
                    inode.mode
                )),
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                drop_names.push(x.name.clone());
                self.finding(
                    Some(block),
                    format!(
                        "block {block}: inode {inum}: {shown}: {problem}; repair drops it (the mode stays)"
                    ),
                );
            }
        }
        if self.kept.is_some() {
            inode
                .inline_xattrs
                .retain(|x| !drop_names.contains(&x.name));
        }
    }

    fn visit_extent(&mut self, block: u64, key: Key, value: &[u8]) -> Result<(), String> {
        // Salvaged leaves come from several versions; repair settles overlaps between
        // them (newest leaf first), so they are not findings here.
        let salvaging = self.salvaging;
        let valid = self.sb.first_block..self.sb.block_count;
        let extent = match Extent::decode(value, block, self.sb.block_size, valid.clone()) {
            Ok(extent) => extent,
            Err(e) => {
                // An extent that is well formed but runs off the device keeps its part
                // inside the filesystem (the claims below report the rest).
                let anywhere = Extent::decode(value, block, self.sb.block_size, 0..u64::MAX);
                match anywhere {
                    Ok(x) if valid.contains(&x.phys) => x,
                    _ => return Err(e.to_string()),
                }
            }
        };
        self.stats.extents += 1;
        let Some(end) = key.b.checked_add(extent.count()) else {
            return Err("file block range overflows".into());
        };
        if let Some((inum, prev_end)) = self.last_extent
            && !salvaging
            && inum == key.a
            && key.b < prev_end
        {
            return Err(format!(
                "overlaps the previous extent, which ends at file block {prev_end}"
            ));
        }
        self.last_extent = Some((key.a, end));
        *self.extent_blocks.entry(key.a).or_default() += extent.count();
        let by = format!("extent of inode {} at file block {}", key.a, key.b);
        if let Some(k) = &mut self.kept {
            k.extents.insert(key, (extent.clone(), self.leaf_delta));
        }
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
            // Reported with the file's path once the directories are known.
            self.bad_data.push(BadData {
                phys,
                inum,
                file_block,
                got,
                want: crc,
            });
        }
    }

    fn visit_dirent(&mut self, block: u64, key: Key, value: &[u8]) -> Result<(), String> {
        let d = Dirent::decode(value, block, key.b, Some(&self.sb.name_hasher()))
            .map_err(|e| e.to_string())?;
        self.stats.dirents += 1;
        self.entries.push(EntryInfo {
            dir: key.a,
            pos: key.b,
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
    /// Walks every inode's xattr spill chain: each block is claimed (a block used twice is a
    /// finding), read and verified; the chain must decode whole. What a damaged chain
    /// loses is remembered for the repair's report.
    fn check_xattr_chains(&mut self) {
        let heads: Vec<(u64, u64)> = self
            .inodes
            .iter()
            .filter(|(_, i)| i.xattr_block != 0)
            .map(|(n, i)| (*n, i.xattr_block))
            .collect();
        for (inum, head) in heads {
            let mut reader = SpillReader::new(inum, self.sb.fs_id(), head);
            let mut by = format!("xattr chain of inode {inum}");
            let mut failed: Option<u64> = None;
            while let Some(block) = reader.next_block() {
                if !self.claim(block, &by) {
                    failed = Some(block);
                    break;
                }
                let Some(buf) = self.read(block) else {
                    failed = Some(block);
                    break;
                };
                match reader.push(&buf) {
                    Ok(delta) => self.proved(block, delta),
                    Err(e) => {
                        self.finding(Some(block), format!("inode {inum}: {e}"));
                        failed = Some(block);
                        break;
                    }
                }
                self.stats.xattr_blocks += 1;
                by = format!("xattr block {block} of inode {inum}");
            }
            let names = reader.names_so_far(XATTR_NAMES_REPORTED);
            let count = reader.count();
            let blocks = reader.blocks().to_vec();
            if failed.is_none() {
                match reader.finish(self.sb.block_size) {
                    Ok(entries) => {
                        if let Some(what) = self.bad_spilled_acl(inum, &entries) {
                            self.finding(Some(head), format!("block {head}: inode {inum}: {what}"));
                            failed = Some(head);
                        }
                    }
                    Err(e) => {
                        let block = e.block().unwrap_or(head);
                        self.finding(Some(block), format!("inode {inum}: {e}"));
                        failed = Some(block);
                    }
                }
            }
            if let Some(block) = failed {
                let mut what = format!("its spill chain is damaged at block {block}");
                if !names.is_empty() {
                    let shown: Vec<String> = names
                        .iter()
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .collect();
                    what.push_str(&format!(", names read before it: {}", shown.join(", ")));
                }
                if let Some(count) = count {
                    what.push_str(&format!(" ({count} spilled attributes in all)"));
                }
                self.xattr_damage.insert(inum, what);
            }
            if let Some(k) = &mut self.kept {
                k.xattr_chains
                    .insert(inum, failed.is_none().then_some(blocks));
            }
        }
    }

    /// What is wrong with an ACL among the spilled entries of inode `inum`, if anything (as
    /// `check_acls` judges inline ones).
    fn bad_spilled_acl(&self, inum: u64, entries: &[XattrEntry]) -> Option<String> {
        let is_dir = self
            .inodes
            .get(&inum)
            .is_some_and(|i| i.mode & S_IFMT == S_IFDIR);
        for x in entries {
            let name = x.name.as_slice();
            if name != XATTR_ACL_ACCESS && name != XATTR_ACL_DEFAULT {
                continue;
            }
            let shown = String::from_utf8_lossy(name);
            match acl::decode(&x.value) {
                Err(e) => return Some(format!("spilled {shown}: not a valid ACL: {e}")),
                Ok(_) if name == XATTR_ACL_DEFAULT && !is_dir => {
                    return Some(format!("spilled {shown}: a default ACL on a non-directory"));
                }
                Ok(_) => {}
            }
        }
        None
    }

    /// Reads every bitmap block, applies the log's allocations and frees, and compares the
    /// result with what is referenced.
    fn check_bitmap(&mut self, replay: &LogReplay) {
        let chunks = bitmap::chunk_count(self.sb.block_size, self.sb.block_count);
        let per = bitmap::bits_per_chunk(self.sb.block_size);
        let found: Vec<(u64, (u64, u64))> = self.chunks.iter().map(|(c, v)| (*c, *v)).collect();
        for (chunk, (_, leaf)) in found.iter().filter(|(c, _)| *c >= chunks) {
            self.finding_safe(
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
                self.finding_safe(
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
                        self.finding_safe(Some(target), e.to_string());
                        continue;
                    }
                };
            all_bits.push((chunk, bits));
        }
        if all_bits.len() as u64 != chunks {
            return;
        }
        for record in replay.deltas.iter().flat_map(|d| &d.records) {
            let (start, count, used) = match record {
                LogRecord::Alloc { start, count } => (*start, *count, true),
                LogRecord::Free { start, count } => (*start, *count, false),
                _ => continue,
            };
            for b in start
                ..start
                    .saturating_add(u64::from(count))
                    .min(self.sb.block_count)
            {
                if let Some((_, bits)) = all_bits.get_mut((b / per) as usize) {
                    bitmap::set_bit(bits, b % per, used);
                }
            }
        }
        // Log blocks are not in Alloc records: recovery marks the chain (and the blocks
        // allocated ahead and two ahead) in use by walking it, and so does fsck.
        let chain = replay
            .deltas
            .iter()
            .flat_map(|d| d.blocks.iter().copied())
            .chain([replay.ahead])
            .chain(replay.ahead_next);
        for b in chain.filter(|b| *b < self.sb.block_count) {
            if let Some((_, bits)) = all_bits.get_mut((b / per) as usize) {
                bitmap::set_bit(bits, b % per, true);
            }
        }
        for (chunk, bits) in all_bits {
            self.compare_chunk(chunk * per, &bits, per);
        }
        self.stats.used_blocks = self.referenced.count();
    }

    fn compare_chunk(&mut self, first: u64, bits: &[u8], per: u64) {
        let end = self.sb.block_count.min(first + per);
        for b in first..end {
            let marked = bitmap::bit(bits, b - first).unwrap_or(false);
            let used = self.referenced.get(b);
            if marked && !used {
                self.finding_safe(
                    Some(b),
                    format!("block {b} is marked in use but nothing refers to it (leaked)"),
                );
            } else if used && !marked {
                self.finding_safe(Some(b), format!("block {b} is in use but marked free"));
            }
        }
    }
}

/// An inode record that does not decode, repaired as far as the format allows: its flags
/// cleared of bits this version does not know (or that its file type cannot carry), then
/// without its inline xattrs. Returns the inode and how it was obtained, for the finding.
fn salvage_inode(value: &[u8], block: u64) -> Option<(Inode, &'static str)> {
    use tuxfs_engine::format::inode::{with_valid_flags, without_inline_xattrs};
    let flags_fixed = with_valid_flags(value);
    if let Some(v) = &flags_fixed
        && let Ok(inode) = Inode::decode(v, block)
    {
        return Some((inode, "with the flag bits it may not carry cleared"));
    }
    let base = flags_fixed.as_deref().unwrap_or(value);
    let inode = Inode::decode(&without_inline_xattrs(base)?, block).ok()?;
    Some(match flags_fixed {
        Some(_) => (
            inode,
            "with the flag bits it may not carry cleared and without its inline xattrs",
        ),
        None => (inode, "without its inline xattrs"),
    })
}
