//! Mount-time recovery: pick the newest valid superblock, load the trees and the bitmap as
//! of the last unify, and replay the log forward while deltas verify.
//!
//! **Which deltas count.** Delta D+1 is written only after D's flush completed. So if the
//! first log block of D+1 verifies, D is durable in full. The last complete delta of the
//! chain has no such witness: recovery reads every block its `Blocks` records list and
//! applies it only if every CRC matches; otherwise it was never acknowledged and is dropped.
//!
//! **Torn tail or damage.** Each delta's first log block is allocated two deltas early: the
//! superblock names where the chain's first two deltas start, and D's commit record names
//! where D+2 starts. So when delta D does not verify, recovery still knows where D+1 would
//! be. If D+1's first log block verifies there, D was durable and is damaged: a read-write
//! mount is refused, naming the block and fsck.tuxfs ([`LogDamage`]). Otherwise D is the
//! torn tail and is dropped.
//!
//! **An I/O error is not the end of the log.** Reading the superblocks, a log block, a
//! witness or a listed block with EIO fails the mount, which then writes nothing: ending the
//! log there would make the mount's unify drop fsync-acknowledged deltas for good.
//!
//! **Delta numbers are never reused.** Blocks of a dropped delta may still sit on disk
//! with its number. A read-write mount therefore continues at the dropped number + 1 and
//! unifies at once, so the new superblock's log never expects the dropped number.

use std::collections::{BTreeMap, BTreeSet};

use crate::alloc::Allocator;
use crate::btree::Tree;
use crate::dev::{BlockDevice, read_at};
use crate::format::btree::{Key, decode_block_ref};
use crate::format::log::{CommitInfo, LogBlock, LogRecord};
use crate::format::{BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, Superblock, TreeId, bitmap, data_crc};
use crate::io::{BlockIo, BlockReader};
use crate::state::{FsStats, LogPos, State};
use crate::{Error, Result};

/// Reads both superblock slots and returns the newest that verifies, with its slot.
pub fn read_superblock(dev: &dyn BlockDevice) -> Result<(Superblock, u64)> {
    let size = dev.size_bytes();
    // Whole units of the device's alignment (O_DIRECT), and of 512 bytes: an image whose
    // size is not a multiple of it has an unusable tail, never read.
    let unit = dev.alignment().max(512) as u64;
    let len = size.min(2 * u64::from(BLOCK_SIZE_MAX)) / unit * unit;
    if len < 2 * u64::from(BLOCK_SIZE_MIN) {
        return Err(Error::NotTuxfs {
            what: format!("the device is only {size} bytes"),
        });
    }
    let probe = read_at(dev, 0, len as usize).map_err(|e| match e {
        Error::Io { context, source } => Error::io(
            format!("reading the superblocks (blocks 0 and 1, {len} bytes): {context}"),
            source,
        ),
        other => other,
    })?;
    let mut found: Vec<(Superblock, u64)> = Vec::new();
    let mut errors = Vec::new();
    let bs0 = Superblock::peek_block_size(&probe);
    if let Some(bs) = bs0 {
        match probe.get(..bs as usize).map(|b| Superblock::decode(b, 0)) {
            Some(Ok(sb)) => found.push((sb, 0)),
            Some(Err(e)) => errors.push(e.to_string()),
            None => errors.push("slot 0 is cut off".into()),
        }
    }
    let mut bs = BLOCK_SIZE_MIN;
    while bs <= BLOCK_SIZE_MAX {
        let slot1 = probe.get(bs as usize..2 * bs as usize);
        if let Some(bytes) = slot1
            && Superblock::peek_block_size(bytes) == Some(bs)
        {
            match Superblock::decode(bytes, 1) {
                Ok(sb) => found.push((sb, 1)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        bs *= 2;
    }
    found.sort_by_key(|(sb, slot)| (std::cmp::Reverse(sb.sequence), *slot));
    match found.into_iter().next() {
        Some(best) => Ok(best),
        None if errors.is_empty() => Err(Error::NotTuxfs {
            what: "no superblock in block 0 or block 1".into(),
        }),
        None => Err(Error::NotTuxfs {
            what: format!(
                "no valid superblock: {}; if this is a damaged tuxfs image, {FSCK_HINT}",
                errors.join("; ")
            ),
        }),
    }
}

/// One complete delta read from the log.
#[derive(Debug)]
pub struct LoggedDelta {
    pub delta: u64,
    pub blocks: Vec<u64>,
    pub records: Vec<LogRecord>,
    pub commit: CommitInfo,
    /// The block the commit names for the next delta's first log block.
    pub next: u64,
}

/// A log block that does not verify although a later delta does: the delta it belongs to
/// was durable (the next one is only written after its flush), so this is damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDamage {
    /// The delta that cannot be read.
    pub delta: u64,
    /// Its log block that does not verify.
    pub block: u64,
    /// What was wrong with that block.
    pub what: String,
    /// Where the first log block of `delta + 1` verifies.
    pub witness: u64,
}

impl LogDamage {
    /// The error a read-write mount reports.
    pub fn to_error(&self) -> Error {
        Error::corrupt(
            self.block,
            format!(
                "log block of delta {} does not verify ({}), but delta {} at block {} does: \
                 the log is damaged, not torn; run fsck.tuxfs on the image",
                self.delta,
                self.what,
                self.delta + 1,
                self.witness
            ),
        )
    }
}

/// The log after the last unify: the deltas that count, and where the next delta goes.
#[derive(Debug)]
pub struct LogReplay {
    pub deltas: Vec<LoggedDelta>,
    /// Where the next log block would go: the block allocated ahead by the last delta.
    pub ahead: u64,
    /// Where the first log block of the delta after that one would go (allocated two
    /// ahead), when the superblock or the last commit record names it.
    pub ahead_next: Option<u64>,
    /// The number the next delta would have had (it may exist on disk, dropped).
    pub next_delta: u64,
    /// True when a complete last delta was dropped because its blocks did not verify.
    pub dropped_unverified: bool,
    /// Set when the chain stops at a delta that was durable: the deltas after it are lost
    /// to replay, and a read-write mount must refuse.
    pub damage: Option<LogDamage>,
}

/// How reading one delta ended.
enum DeltaRead {
    Complete(LoggedDelta),
    /// The chain stops at `block`: it does not decode as the expected log block.
    Broken {
        block: u64,
        what: String,
    },
}

/// An I/O error names the log block; every other error is the block not verifying.
fn io_error(e: Error, what: String) -> Result<String> {
    match e {
        Error::Io { context, source } => Err(Error::io(format!("{what} ({context})"), source)),
        Error::DeviceFailed { .. } => Err(e),
        other => Ok(other.to_string()),
    }
}

/// Reads delta `delta` starting at `block`. An I/O error fails (recovery must not take a
/// transient error for the end of the log); a block that does not verify ends the chain.
fn read_delta(io: &BlockReader<'_>, fs_id: u64, mut block: u64, delta: u64) -> Result<DeltaRead> {
    let mut blocks = Vec::new();
    let mut records = Vec::new();
    for index in 0..io.block_count {
        let broken = |what: String| Ok(DeltaRead::Broken { block, what });
        let buf = match io.read(block) {
            Ok(buf) => buf,
            Err(e) => {
                return broken(io_error(
                    e,
                    format!("reading log block {block} of delta {delta}"),
                )?);
            }
        };
        let log = match LogBlock::decode(&buf, block, delta, fs_id) {
            Ok(log) => log,
            Err(e) => return broken(e.to_string()),
        };
        if u64::from(log.index) != index {
            return broken(format!(
                "block {block}: log block {} of delta {delta} where block {index} belongs",
                log.index
            ));
        }
        blocks.push(block);
        let commit = log.commit();
        records.extend(log.records);
        if let Some(commit) = commit {
            records.pop();
            return Ok(DeltaRead::Complete(LoggedDelta {
                delta,
                blocks,
                records,
                commit,
                next: log.next,
            }));
        }
        block = log.next;
    }
    Ok(DeltaRead::Broken {
        block,
        what: format!("delta {delta} has more log blocks than the filesystem"),
    })
}

/// True when every block a delta lists reads back with its CRC. An I/O error fails.
fn delta_verifies(io: &BlockReader<'_>, d: &LoggedDelta) -> Result<bool> {
    let mut listed = 0u64;
    for r in &d.records {
        if let LogRecord::Blocks { start, crcs } = r {
            let blocks: Vec<u64> = (0..crcs.len() as u64).map(|i| start + i).collect();
            let bufs = match io.read_many(&blocks) {
                Ok(bufs) => bufs,
                Err(e) => {
                    io_error(
                        e,
                        format!(
                            "reading blocks {start}..{} that delta {} wrote",
                            start + crcs.len() as u64,
                            d.delta
                        ),
                    )?;
                    return Ok(false);
                }
            };
            if bufs.iter().zip(crcs).any(|(b, c)| data_crc(b) != *c) {
                return Ok(false);
            }
            listed += crcs.len() as u64;
        }
    }
    Ok(listed == d.commit.blocks)
}

/// Reads the log chain from the superblock (pure reading: fsck uses this too). An I/O
/// error fails; the chain ends at the first delta that does not verify, and
/// [`LogReplay::damage`] says when that delta was durable (a later one verifies).
pub fn read_log(io: &BlockReader<'_>, sb: &Superblock) -> Result<LogReplay> {
    let fs_id = sb.fs_id();
    let (mut block, mut delta) = (sb.log_head, sb.log_delta);
    // Where delta + 1 starts, as named before `delta` was written (None: not recorded).
    let mut after = sb.log_next();
    let mut deltas = Vec::new();
    let mut dropped_unverified = false;
    let mut damage = None;
    loop {
        let d = match read_delta(io, fs_id, block, delta)? {
            DeltaRead::Complete(d) => d,
            DeltaRead::Broken { block: bad, what } => {
                if let Some(witness) = after
                    && read_delta_first(io, fs_id, witness, delta + 1)?
                {
                    damage = Some(LogDamage {
                        delta,
                        block: bad,
                        what,
                        witness,
                    });
                }
                break;
            }
        };
        if let Some(expected) = after
            && d.next != expected
        {
            // The commit block verifies but chains elsewhere than the block allocated for
            // the next delta: nothing written by tuxfs looks like that, so it is damage
            // whether or not a later delta exists.
            return Err(Error::corrupt(
                d.blocks.last().copied().unwrap_or(block),
                format!(
                    "the commit record of delta {delta} chains to block {} instead of block \
                     {expected}, allocated for delta {}; run fsck.tuxfs on the image",
                    d.next,
                    delta + 1
                ),
            ));
        }
        let witnessed = read_delta_first(io, fs_id, d.next, delta + 1)?;
        if !witnessed && !delta_verifies(io, &d)? {
            dropped_unverified = true;
            break;
        }
        block = d.next;
        after = (d.commit.after_next != 0).then_some(d.commit.after_next);
        delta += 1;
        deltas.push(d);
        if deltas.len() as u64 > io.block_count {
            break;
        }
    }
    Ok(LogReplay {
        deltas,
        ahead: block,
        ahead_next: after,
        next_delta: delta,
        dropped_unverified,
        damage,
    })
}

/// The highest delta number carried by the log blocks that verify (each against the number
/// in its own header) on the chain from `block`: blocks that a dropped delta or an older
/// history left behind, for instance after damage made an older superblock win. A writer
/// must number its deltas past them (FORMAT.md §6). Pure reading: fsck uses it too. An
/// I/O error fails: a block that cannot be read might carry a number to skip.
pub fn stale_delta_max(io: &BlockReader<'_>, fs_id: u64, mut block: u64) -> Result<Option<u64>> {
    let mut max = None;
    let mut seen = BTreeSet::new();
    // Each block is visited once, so this ends within block_count reads.
    while seen.insert(block) {
        let buf = match io.read(block) {
            Ok(buf) => buf,
            Err(e) => {
                io_error(e, format!("reading block {block} after the end of the log"))?;
                break;
            }
        };
        let Some(delta) = crate::format::header::peek_delta(&buf) else {
            break;
        };
        let Ok(log) = LogBlock::decode(&buf, block, delta, fs_id) else {
            break;
        };
        max = max.max(Some(delta));
        block = log.next;
    }
    Ok(max)
}

/// [`stale_delta_max`] over both places the end of a replayed log points at: the block
/// allocated ahead for the next delta and, when recorded, the one allocated two ahead.
/// Recovery numbers the next delta past it; fsck's repair does the same.
pub fn stale_delta_max_ahead(
    io: &BlockReader<'_>,
    fs_id: u64,
    replay: &LogReplay,
) -> Result<Option<u64>> {
    let ahead = stale_delta_max(io, fs_id, replay.ahead)?;
    let ahead_next = match replay.ahead_next {
        Some(block) => stale_delta_max(io, fs_id, block)?,
        None => None,
    };
    Ok(ahead.max(ahead_next))
}

/// True when the first log block of `delta` at `block` verifies. An I/O error fails.
fn read_delta_first(io: &BlockReader<'_>, fs_id: u64, block: u64, delta: u64) -> Result<bool> {
    match io.read(block) {
        Ok(buf) => Ok(LogBlock::decode(&buf, block, delta, fs_id).is_ok_and(|l| l.index == 0)),
        Err(e) => {
            io_error(
                e,
                format!("reading block {block}, where the log of delta {delta} would start"),
            )?;
            Ok(false)
        }
    }
}

/// Loads the free-space map: (chunk → bitmap block, tree blocks, allocator).
fn load_freemap(io: &BlockIo, sb: &Superblock) -> Result<(Vec<u64>, Vec<u64>, Allocator)> {
    let fs_id = sb.fs_id();
    let tree = Tree::load(TreeId::Freemap, sb.root(TreeId::Freemap), io, fs_id)?;
    let mut tree_blocks: Vec<u64> = tree.interior_blocks.clone();
    tree_blocks.extend(tree.leaf_blocks().into_iter().map(|(_, b)| b));
    let chunks = bitmap::chunk_count(sb.block_size, sb.block_count);
    let entries = tree.range(Key::MIN, Key::new(u64::MAX, u64::MAX), usize::MAX, io)?;
    let mut chunk_blocks = vec![0u64; chunks as usize];
    for (key, value) in &entries {
        let block = decode_block_ref(value, tree.leaf_block(*key))?;
        match chunk_blocks.get_mut(key.a as usize) {
            Some(slot) if key.b == 0 => *slot = block,
            _ => {
                return Err(Error::corrupt(
                    tree.leaf_block(*key),
                    format!("free-space map entry for chunk {} is out of range", key.a),
                ));
            }
        }
    }
    if let Some(missing) = chunk_blocks.iter().position(|&b| b == 0) {
        return Err(Error::corrupt(
            sb.root(TreeId::Freemap).block,
            format!("free-space map has no bitmap for chunk {missing}"),
        ));
    }
    let mut alloc = Allocator::new(sb.block_count, sb.first_block, sb.block_size);
    let bufs = io.read_many(&chunk_blocks)?;
    for (chunk, (buf, &block)) in bufs.iter().zip(&chunk_blocks).enumerate() {
        let bits = bitmap::decode(buf, block, chunk as u64, sb.block_count, fs_id)?;
        alloc.load_chunk(chunk as u64, bits);
    }
    alloc.take_dirty_chunks();
    Ok((chunk_blocks, tree_blocks, alloc))
}

/// Loads the orphan list: (inodes, tree blocks).
fn load_orphans(io: &BlockIo, sb: &Superblock) -> Result<(BTreeSet<u64>, Vec<u64>)> {
    let tree = Tree::load(TreeId::Orphans, sb.root(TreeId::Orphans), io, sb.fs_id())?;
    let mut blocks = tree.interior_blocks.clone();
    blocks.extend(tree.leaf_blocks().into_iter().map(|(_, b)| b));
    let entries = tree.range(Key::MIN, Key::new(u64::MAX, u64::MAX), usize::MAX, io)?;
    Ok((entries.into_iter().map(|(k, _)| k.a).collect(), blocks))
}

/// Applies one replayed delta to the state being rebuilt.
fn apply(st: &mut State, d: &LoggedDelta) -> Result<()> {
    for r in &d.records {
        match r {
            LogRecord::Alloc { start, count } => st.alloc.mark_used(*start, u64::from(*count))?,
            LogRecord::Free { start, count } => st.alloc.mark_free(*start, u64::from(*count))?,
            LogRecord::LeafSet { tree, key, block } => {
                tree_mut(st, *tree, d)?.replay_set(*key, *block)
            }
            LogRecord::LeafDel { tree, key } => tree_mut(st, *tree, d)?.replay_del(*key),
            LogRecord::OrphanAdd { inum } => {
                st.orphans.insert(*inum);
            }
            LogRecord::OrphanDel { inum } => {
                st.orphans.remove(inum);
            }
            LogRecord::Blocks { .. } | LogRecord::Commit(_) => {}
        }
    }
    st.next_inum = d.commit.next_inum;
    st.inode_count = d.commit.inode_count;
    Ok(())
}

fn tree_mut<'a>(st: &'a mut State, id: TreeId, d: &LoggedDelta) -> Result<&'a mut Tree> {
    match id {
        TreeId::Inodes => Ok(&mut st.inodes),
        TreeId::Extents => Ok(&mut st.extents),
        TreeId::Dirs => Ok(&mut st.dirs),
        other => Err(Error::corrupt(
            d.blocks.first().copied().unwrap_or(0),
            format!("log names the {} in a leaf record", other.name()),
        )),
    }
}

/// Rebuilds the state of the filesystem on `dev` as of its last durable delta. An I/O
/// error fails (it is not the end of the log); an error caused by damage tells the user to
/// run fsck.tuxfs.
pub fn recover(io: BlockIo, sb: Superblock, read_only: bool) -> Result<State> {
    recover_inner(io, sb, read_only).map_err(with_fsck_hint)
}

/// The advice every mount error caused by damage carries.
pub const FSCK_HINT: &str = "run fsck.tuxfs on the image";

/// Adds [`FSCK_HINT`] to an error that reports damage.
pub fn with_fsck_hint(e: Error) -> Error {
    let hint = |what: String| {
        if what.contains("fsck.tuxfs") {
            what
        } else {
            format!("{what}; {FSCK_HINT}")
        }
    };
    match e {
        Error::Corrupt { block, what } => Error::Corrupt {
            block,
            what: hint(what),
        },
        Error::ChecksumMismatch {
            block,
            expected,
            got,
        } => Error::Corrupt {
            block,
            what: hint(format!(
                "checksum mismatch (stored {expected:#010x}, computed {got:#010x})"
            )),
        },
        other => other,
    }
}

fn recover_inner(io: BlockIo, sb: Superblock, read_only: bool) -> Result<State> {
    let fs_id = sb.fs_id();
    let inodes = Tree::load(TreeId::Inodes, sb.root(TreeId::Inodes), &io, fs_id)?;
    let extents = Tree::load(TreeId::Extents, sb.root(TreeId::Extents), &io, fs_id)?;
    let dirs = Tree::load(TreeId::Dirs, sb.root(TreeId::Dirs), &io, fs_id)?;
    let (chunk_blocks, freemap_tree_blocks, alloc) = load_freemap(&io, &sb)?;
    let (orphans, orphan_tree_blocks) = load_orphans(&io, &sb)?;
    let replay = read_log(&io.reader(), &sb)?;
    if let Some(damage) = &replay.damage {
        if !read_only {
            return Err(damage.to_error());
        }
        crate::events::report(
            crate::events::Level::Warning,
            &format!(
                "{}; serving the state before delta {} read-only: later changes are not shown",
                damage.to_error(),
                damage.delta
            ),
        );
    }
    // The next delta is numbered past the last one read and past any stale log block at
    // the head of the next chain (or at the block allocated two ahead), so the chain the
    // mount's unify starts never expects a number that a block already on disk carries.
    let stale = stale_delta_max_ahead(&io.reader(), fs_id, &replay)?.unwrap_or(0);
    let next_delta = replay.next_delta.max(stale.saturating_add(1));
    let mut st = State {
        io,
        fs_id,
        inodes,
        extents,
        dirs,
        orphans,
        orphan_tree_blocks,
        freemap_tree_blocks,
        chunk_blocks,
        rewritten_chunks: BTreeSet::new(),
        alloc,
        delta: next_delta + 1,
        durable_delta: replay.next_delta.saturating_sub(1),
        log: LogPos {
            ahead: replay.ahead,
            ahead_next: 0,
            chain: Vec::new(),
        },
        records: Vec::new(),
        pages: BTreeMap::new(),
        inflight: BTreeMap::new(),
        read: Default::default(),
        delta_reserved: 0,
        delalloc: BTreeSet::new(),
        next_inum: sb.next_inum,
        next_generation: crate::fs::generation_seed(),
        inode_count: sb.inode_count,
        read_only,
        failed: None,
        unmounted: false,
        unify_log_blocks: crate::fs::MountOptions::default().unify_log_blocks,
        leaf_cache_bytes: crate::fs::MountOptions::default().leaf_cache_bytes,
        debug_ack_before_data: false,
        opens: Default::default(),
        spills: Default::default(),
        linkable: BTreeSet::new(),
        tombstones: Default::default(),
        stats: FsStats::default(),
        sb,
    };
    for d in &replay.deltas {
        apply(&mut st, d)?;
        st.log.chain.extend(&d.blocks);
    }
    // The log chain and the block allocated ahead are in use until the next unify.
    let chain = st.log.chain.clone();
    for b in chain.into_iter().chain([st.log.ahead]) {
        st.alloc.mark_used(b, 1)?;
    }
    // The block two ahead: the one the superblock or the last commit named, or a new one
    // when neither did (an image from before the field, or one fsck rebuilt).
    st.log.ahead_next = match replay.ahead_next {
        Some(b) if b != st.log.ahead => {
            st.alloc.mark_used(b, 1)?;
            b
        }
        _ => st.alloc.alloc_one(Some(st.log.ahead + 1))?,
    };
    if replay.dropped_unverified {
        crate::events::report(
            crate::events::Level::Warning,
            &format!(
                "recovery dropped delta {}: its blocks did not all reach the disk",
                replay.next_delta
            ),
        );
    }
    Ok(st)
}
