//! The in-memory state of a mounted filesystem. The frontend (engine::fs) changes it under
//! the filesystem lock; the backend (commit) turns it into a durable delta.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::alloc::Allocator;
use crate::btree::Tree;
use crate::dev::AlignedBuf;
use crate::format::Superblock;
use crate::format::log::LogRecord;
use crate::io::BlockIo;

/// Where the log stands.
#[derive(Debug, Default)]
pub struct LogPos {
    /// Block allocated ahead for the first log block of the next delta.
    pub ahead: u64,
    /// Block allocated for the first log block of the delta after that one (two ahead):
    /// the next commit record names it, so recovery can look there for a witness.
    pub ahead_next: u64,
    /// Log blocks written since the last unify (freed by the next unify).
    pub chain: Vec<u64>,
}

/// Counters users can see.
#[derive(Debug, Clone, Default)]
pub struct FsStats {
    pub deltas_committed: u64,
    pub bytes_written: u64,
    pub blocks_written: u64,
    pub unifies: u64,
    pub flushes: u64,
    pub commit_latency_us_last: u64,
    pub commit_latency_us_max: u64,
    /// Time the last commit (and the largest one) held the state lock, in microseconds: its
    /// close, its finish and a unify's finish (commit is a freeze; the rest runs without it).
    pub commit_locked_us_last: u64,
    pub commit_locked_us_max: u64,
    pub orphans_destroyed: u64,
    /// Frontend writes that copied a page of the delta being flushed instead of waiting.
    pub pages_forked: u64,
    /// Blocks a write filled under the state lock (a block written in part, or a write
    /// whose pages were not built before the lock); whole blocks are built outside it.
    pub write_blocks_locked: u64,
    /// Data CRCs a commit computed under the state lock (pages a partial write left
    /// without one); the others are computed when the page is built.
    pub data_crcs_locked: u64,
    /// Time writers spent throttled at the dirty limit, in microseconds.
    pub writer_throttle_us: u64,
    /// Times the leaf cache passed its limit and clean leaves were dropped.
    pub leaf_evictions: u64,
    /// Commits made because an operation hit ENOSPC while the open delta held frees.
    pub space_pressure_commits: u64,
    pub data_checksum_errors: u64,
    /// Clean page cache: lookups that found the page, lookups that did not, bytes held now.
    pub data_cache_hits: u64,
    pub data_cache_misses: u64,
    pub data_cache_bytes: u64,
    /// Blocks the read path decided to read ahead.
    pub data_readahead_blocks: u64,
}

/// Everything a mounted filesystem keeps in memory.
#[derive(Debug)]
pub struct State {
    pub io: BlockIo,
    /// The superblock as of the last unify (roots, sequence).
    pub sb: Superblock,
    pub fs_id: u64,
    pub inodes: Tree,
    pub extents: Tree,
    pub dirs: Tree,
    pub orphans: BTreeSet<u64>,
    /// On-disk blocks of the orphan tree as of the last unify.
    pub orphan_tree_blocks: Vec<u64>,
    /// On-disk blocks of the free-space map tree as of the last unify.
    pub freemap_tree_blocks: Vec<u64>,
    /// Bitmap block of each chunk.
    pub chunk_blocks: Vec<u64>,
    /// Chunks that get a new bitmap block in the unify under way.
    pub rewritten_chunks: BTreeSet<u64>,
    pub alloc: Allocator,
    /// The delta being built (the open delta).
    pub delta: u64,
    /// The last durable delta.
    pub durable_delta: u64,
    pub log: LogPos,
    /// Logical records of the open delta that are not derived at commit (orphans).
    pub records: Vec<LogRecord>,
    /// Dirty file data of the open delta: (inode, file block) → block contents.
    pub pages: BTreeMap<(u64, u64), crate::data::DirtyPage>,
    /// Dirty pages of the delta being flushed, readable until its flush completes; the
    /// device holds its own references until each write completes.
    pub inflight: BTreeMap<(u64, u64), std::sync::Arc<AlignedBuf>>,
    /// The clean page cache and read-ahead state (engine::data::read).
    pub read: crate::data::ReadState,
    /// Blocks reserved by the open delta's writes.
    pub delta_reserved: u64,
    /// Delayed allocation: dirty pages of the open delta that no extent backs yet, so
    /// their blocks are counted in `st_blocks` before the commit allocates them (as ext4
    /// counts delalloc reservations). A subset of `pages`; emptied when the delta closes.
    pub delalloc: BTreeSet<(u64, u64)>,
    pub next_inum: u64,
    /// Generation of the next inode created; seeded at random at every mount
    /// (engine::fs::export).
    pub next_generation: u32,
    pub inode_count: u64,
    pub read_only: bool,
    /// Set when a write or flush failed: the filesystem is read-only from then on.
    pub failed: Option<String>,
    pub unmounted: bool,
    /// Memory for loaded B+tree leaves; past it, clean leaves are dropped after a commit.
    pub leaf_cache_bytes: u64,
    /// Log blocks after which a commit also unifies (bounds replay time after a crash).
    pub unify_log_blocks: u64,
    /// TEST ONLY: `MountOptions::debug_ack_before_data` (commits out of order on purpose).
    pub debug_ack_before_data: bool,
    /// Open handles per inode.
    pub opens: HashMap<u64, u32>,
    /// xattr spill chains changed in the open delta or being flushed (engine::xattr).
    pub spills: crate::xattr::Spills,
    /// O_TMPFILE inodes not linked yet: the only inodes without links that `link` may
    /// give a name (engine::fs::tmpfile).
    pub linkable: BTreeSet<u64>,
    /// Freed inodes' last attributes until the kernel forgets them (engine::fs::tombstone).
    pub tombstones: crate::fs::Tombstones,
    pub stats: FsStats,
}

impl State {
    /// Block size in bytes.
    pub fn bs(&self) -> u32 {
        self.io.block_size
    }

    /// Blocks of `inum` written in the open delta and not allocated yet.
    pub fn delalloc_blocks(&self, inum: u64) -> u64 {
        self.delalloc.range((inum, 0)..=(inum, u64::MAX)).count() as u64
    }

    /// Dirty data bytes of the open delta.
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * u64::from(self.bs())
    }

    /// True when the open delta has anything to commit.
    pub fn has_changes(&self) -> bool {
        !self.pages.is_empty()
            || !self.records.is_empty()
            || self.inodes.is_dirty()
            || self.extents.is_dirty()
            || self.dirs.is_dirty()
            || !self.alloc.deferred().is_empty()
    }
}

impl std::fmt::Display for FsStats {
    /// One `name value` line per figure, for people and scripts alike.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = [
            ("deltas_committed", self.deltas_committed),
            ("bytes_written", self.bytes_written),
            ("blocks_written", self.blocks_written),
            ("flushes", self.flushes),
            ("unifies", self.unifies),
            ("pages_forked", self.pages_forked),
            ("write_blocks_locked", self.write_blocks_locked),
            ("data_crcs_locked", self.data_crcs_locked),
            ("writer_throttle_us", self.writer_throttle_us),
            ("commit_latency_us_last", self.commit_latency_us_last),
            ("commit_latency_us_max", self.commit_latency_us_max),
            ("commit_locked_us_last", self.commit_locked_us_last),
            ("commit_locked_us_max", self.commit_locked_us_max),
            ("orphans_destroyed", self.orphans_destroyed),
            ("leaf_evictions", self.leaf_evictions),
            ("space_pressure_commits", self.space_pressure_commits),
            ("data_checksum_errors", self.data_checksum_errors),
            ("data_cache_hits", self.data_cache_hits),
            ("data_cache_misses", self.data_cache_misses),
            ("data_cache_bytes", self.data_cache_bytes),
            ("data_readahead_blocks", self.data_readahead_blocks),
        ];
        for (name, value) in rows {
            writeln!(f, "{name} {value}")?;
        }
        Ok(())
    }
}
