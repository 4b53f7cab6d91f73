//! The backend: committing a delta and unifying.
//!
//! Commit of delta D (see docs/CRASH_SAFETY.md for the numbered sequence):
//! 1. allocate and write the dirty data blocks of every file (delayed allocation);
//! 2. write the new xattr spill chains (engine::xattr), then every dirty B+tree leaf, to
//!    new blocks;
//! 3. write D's log blocks: Alloc/Free/LeafSet/LeafDel/Orphan records, `Blocks` records
//!    with the CRC of every block of steps 1–2, and the commit record, chained from the
//!    block D-1 allocated ahead, chaining to the block D-1 allocated for D+1 and naming the
//!    block it allocates for D+2 (two ahead: recovery looks there for a witness of D+1);
//! 4. one flush (the device reaps every write before it flushes);
//! 5. only now release the blocks D freed.
//!
//! Unify (after a commit, when the log is long, at mount and at unmount) writes interior
//! nodes, the bitmap blocks that changed, the free-space map tree and the orphan tree to new
//! blocks, flushes, writes the older superblock slot pointing at them with a new log head,
//! flushes, and only then frees the blocks the old roots and the old log chain used.

use crate::sync::Arc;
use std::collections::BTreeSet;
use std::time::Instant;

use crate::btree::{FrozenLeaf, build_interior};
use crate::delta::{Closed, DeltaWrites, Frozen, LogPlan};
use crate::dev::AlignedBuf;
use crate::format::btree::{Key, Leaf, leaf_entry_cost, leaf_space};
use crate::format::log::{CommitInfo, LogRecord, blocks_record_max, log_capacity};
use crate::format::superblock::STATE_MOUNTED;
use crate::format::{BlockHeader, HEADER_SIZE, Kind, Superblock, TreeId, TreeRoot, bitmap};
use crate::io::BlockIo;
use crate::state::State;
use crate::{Error, Result};

/// Refuses to write after a failure (fail-stop) and on a read-only mount.
pub fn check_writable(st: &State) -> Result<()> {
    if let Some(what) = &st.failed {
        return Err(Error::DeviceFailed { what: what.clone() });
    }
    if st.read_only {
        return Err(crate::Errno::ReadOnly.into());
    }
    Ok(())
}

/// Marks the filesystem failed (read-only from now on) and passes the error on.
fn fail(st: &mut State, e: Error) -> Error {
    if st.failed.is_none() {
        crate::events::report(
            crate::events::Level::Error,
            &format!("write failed, the filesystem is now read-only: {e}"),
        );
        st.failed = Some(e.to_string());
    }
    e
}

/// Commits the open delta if it has changes, synchronously: on return the delta is durable
/// (and unified when the log is long). Mount, unmount and tests use this, holding the
/// state lock throughout; the frontend's path is [`close`] under the lock and [`complete`]
/// outside it.
pub fn commit(st: &mut State) -> Result<()> {
    check_writable(st)?;
    if !st.has_changes() {
        return Ok(());
    }
    let result = close(st).and_then(|(frozen, unify)| {
        let io = st.io.clone();
        complete(&io, frozen, unify, &mut |step| step(st))
    });
    result.map_err(|e| fail(st, e))
}

/// A step of a commit that needs the state.
pub type StateStep<'a> = dyn FnMut(&mut State) -> Result<()> + 'a;

/// Runs a step under the state lock (taking it, or with it held already).
pub type Locked<'a> = dyn FnMut(&mut StateStep<'_>) -> Result<()> + 'a;

/// Runs a closed delta to durability: seals and submits it (engine::delta), flushes, then
/// [`finish`]es it, and runs the unify planned with it. Only `finish` and `finish_unify`
/// need the state: `locked` runs them under the lock (the caller may hold it already).
pub fn complete(
    io: &BlockIo,
    frozen: Frozen,
    unify: Option<UnifyPlan>,
    locked: &mut Locked<'_>,
) -> Result<()> {
    let closed = crate::delta::submit(io, frozen.seal()?)?;
    io.flush()?;
    let mut closed = Some(closed);
    locked(&mut |st| match closed.take() {
        Some(c) => finish(st, c),
        None => Err(Error::invalid("a delta finished twice")),
    })?;
    if let Some(plan) = unify {
        run_unify(io, &plan)?;
        let mut plan = Some(plan);
        locked(&mut |st| {
            let entered = Instant::now();
            let p = plan
                .take()
                .ok_or_else(|| Error::invalid("a unify finished twice"))?;
            finish_unify(st, p)?;
            add_locked_us(st, entered.elapsed().as_micros() as u64, false);
            Ok(())
        })?;
    }
    Ok(())
}

/// True when the delta closing now must also unify: the log holds `unify_log_blocks` log
/// blocks once its own are added.
fn unify_due(st: &State, added: usize) -> bool {
    (st.log.chain.len() + added) as u64 >= st.unify_log_blocks
}

/// Closes the open delta under the state lock: moves its dirty pages, spill chains, records
/// and frees out of `State`, allocates its blocks, updates the leaf maps, plans its log,
/// and opens the next delta; when the log is then long, plans a unify of exactly this state
/// too. Encoding and I/O are left to [`complete`]. The delta's pages stay readable in
/// `st.inflight` until [`finish`]; a frontend write to one of them forks it (data.rs), a
/// change to one of its leaves forks the leaf (btree.rs). Call only when `has_changes`.
pub fn close(st: &mut State) -> Result<(Frozen, Option<UnifyPlan>)> {
    let started = Instant::now();
    let delta = st.delta;
    st.alloc.unreserve(std::mem::take(&mut st.delta_reserved));
    let mut writes = DeltaWrites::default();
    let mut leaves: Vec<FrozenLeaf> = Vec::new();
    let mut records: Vec<LogRecord> = Vec::new();
    crate::data::flush_pages(st, &mut writes, &mut records)?;
    // Before the leaves: it points inode records at their new xattr spill chains.
    crate::xattr::flush(st, delta, &mut writes, &mut records)?;
    flush_trees(st, delta, &mut leaves, &mut records)?;
    let freed = st.alloc.take_deferred();
    // Blocks the frontend allocated in this delta (fallocate) are logged before its frees:
    // one preallocated and freed again within the delta must replay as free.
    let (allocs, rest): (Vec<LogRecord>, Vec<LogRecord>) = std::mem::take(&mut st.records)
        .into_iter()
        .partition(|r| matches!(r, LogRecord::Alloc { .. }));
    records.extend(allocs);
    for &(start, count) in &freed {
        push_range(&mut records, start, count, false);
    }
    records.extend(rest);
    let mut listed: Vec<u64> = writes
        .block_numbers()
        .chain(leaves.iter().map(|l| l.block))
        .collect();
    listed.sort_unstable();
    list_blocks(&listed, st.bs(), &mut records);
    let log = plan_log(st, records, listed.len() as u64)?;
    st.delta = delta + 1;
    let mut closed = Closed {
        delta,
        log_blocks: log.blocks.clone(),
        freed,
        started,
        close_us: 0,
        blocks_written: 0,
        late: Vec::new(),
    };
    let unify = if unify_due(st, closed.log_blocks.len()) {
        Some(plan_unify(st, STATE_MOUNTED, Some(&mut closed))?)
    } else {
        None
    };
    closed.close_us = started.elapsed().as_micros() as u64;
    let frozen = Frozen {
        delta,
        block_size: st.bs(),
        fs_id: st.fs_id,
        writes,
        leaves,
        log,
        listed,
        ack_before_data: st.debug_ack_before_data,
        closed,
    };
    Ok((frozen, unify))
}

/// Finishes a closed delta once its flush returned: marks it durable, releases the blocks
/// it freed and drops its in-flight pages. It never unifies (see [`complete`]).
pub fn finish(st: &mut State, closed: Closed) -> Result<()> {
    let entered = Instant::now();
    if !closed.late.is_empty() {
        st.io.write(closed.late)?;
    }
    let bytes = closed.blocks_written * u64::from(st.bs());
    st.stats.blocks_written += closed.blocks_written;
    st.stats.bytes_written += bytes;
    st.stats.flushes += 1;
    st.stats.deltas_committed += 1;
    st.log.chain.extend(closed.log_blocks);
    st.durable_delta = closed.delta;
    crate::xattr::flushed(st);
    // The pages this delta made durable are the files' committed contents now: they become
    // clean cached pages, unless the open delta changed them again.
    for ((inum, fblock), page) in std::mem::take(&mut st.inflight) {
        if !st.pages.contains_key(&(inum, fblock)) {
            st.read.cache.insert(inum, fblock, page, false);
        }
    }
    let discard = st.alloc.discard_freed.then(|| closed.freed.clone());
    st.alloc.release(closed.freed)?;
    if let Some(freed) = discard {
        crate::fs::discard_released(st, &freed);
    }
    evict_leaves_over_budget(st);
    let us = closed.started.elapsed().as_micros() as u64;
    st.stats.commit_latency_us_last = us;
    st.stats.commit_latency_us_max = st.stats.commit_latency_us_max.max(us);
    add_locked_us(
        st,
        closed.close_us + entered.elapsed().as_micros() as u64,
        true,
    );
    Ok(())
}

/// Counts time a commit held the state lock: `first` starts the commit's figure, later
/// sections (a unify's finish) add to it.
fn add_locked_us(st: &mut State, us: u64, first: bool) {
    if first {
        st.stats.commit_locked_us_last = us;
    } else {
        st.stats.commit_locked_us_last += us;
    }
    st.stats.commit_locked_us_max = st
        .stats
        .commit_locked_us_max
        .max(st.stats.commit_locked_us_last);
}

/// Bounded memory: when the loaded leaves pass `leaf_cache_bytes`, drop every clean one.
/// Runs after a flush, so no clean leaf has a write in flight and reading it back is safe.
fn evict_leaves_over_budget(st: &mut State) {
    let loaded = st.inodes.loaded_leaves() + st.extents.loaded_leaves() + st.dirs.loaded_leaves();
    if loaded as u64 * u64::from(st.bs()) > st.leaf_cache_bytes {
        st.inodes.evict_clean();
        st.extents.evict_clean();
        st.dirs.evict_clean();
        st.stats.leaf_evictions += 1;
    }
}

/// Marks the filesystem failed after an error on the asynchronous path.
pub fn fail_with(st: &mut State, e: Error) -> Error {
    fail(st, e)
}

/// Alloc/Free records for a range, split so each count fits its u32.
fn push_range(records: &mut Vec<LogRecord>, start: u64, count: u64, alloc: bool) {
    let mut at = start;
    let end = start + count;
    while at < end {
        let n = (end - at).min(u64::from(u32::MAX)) as u32;
        records.push(if alloc {
            LogRecord::Alloc {
                start: at,
                count: n,
            }
        } else {
            LogRecord::Free {
                start: at,
                count: n,
            }
        });
        at += u64::from(n);
    }
}

/// Allocates new blocks for every dirty leaf and freezes the leaves' entries (encoded
/// later, without the lock, by engine::delta).
fn flush_trees(
    st: &mut State,
    delta: u64,
    leaves: &mut Vec<FrozenLeaf>,
    records: &mut Vec<LogRecord>,
) -> Result<()> {
    let bs = st.bs();
    let State {
        inodes,
        extents,
        dirs,
        alloc,
        ..
    } = st;
    for tree in [inodes, extents, dirs] {
        let mut allocated = Vec::new();
        let flushed = tree.flush_dirty(bs, delta, &mut || {
            let b = alloc.alloc_one(None)?;
            allocated.push(b);
            Ok(b)
        })?;
        for b in allocated {
            records.push(LogRecord::Alloc { start: b, count: 1 });
        }
        for b in flushed.freed {
            alloc.free_later(b, 1);
        }
        for key in flushed.deleted {
            records.push(LogRecord::LeafDel { tree: tree.id, key });
        }
        for (key, block) in flushed.set {
            records.push(LogRecord::LeafSet {
                tree: tree.id,
                key,
                block,
            });
        }
        leaves.extend(flushed.leaves);
    }
    Ok(())
}

/// `Blocks` records for every block the delta writes outside the log (`sorted` by block),
/// with zero CRCs: [`Frozen::seal`] fills them once the blocks are encoded.
fn list_blocks(sorted: &[u64], block_size: u32, records: &mut Vec<LogRecord>) {
    let max = blocks_record_max(block_size);
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut n = 1;
        while i + n < sorted.len() && n < max && sorted[i + n] == start + n as u64 {
            n += 1;
        }
        i += n;
        records.push(LogRecord::Blocks {
            start,
            crcs: vec![0; n],
        });
    }
}

/// Plans the log: groups the records into log blocks chained from `st.log.ahead` to
/// `st.log.ahead_next` (the next delta's first log block, allocated by the previous commit
/// or unify), allocates the block for the first log block of the delta after the next one
/// and names it in the commit record. The records' sizes are final (a `Blocks` record's
/// CRCs are filled later without changing its size).
fn plan_log(st: &mut State, mut records: Vec<LogRecord>, listed: u64) -> Result<LogPlan> {
    let cap = log_capacity(st.bs());
    // The commit record goes last; reserve its room in the last block.
    let commit_len = LogRecord::Commit(CommitInfo::default()).encoded_len();
    let mut groups: Vec<Vec<LogRecord>> = vec![Vec::new()];
    let mut used = 0usize;
    for r in records.drain(..) {
        let len = r.encoded_len();
        if used + len > cap {
            groups.push(Vec::new());
            used = 0;
        }
        used += len;
        if let Some(g) = groups.last_mut() {
            g.push(r);
        }
    }
    if used + commit_len > cap {
        groups.push(Vec::new());
    }
    let mut blocks = vec![st.log.ahead];
    for _ in 1..groups.len() {
        blocks.push(st.alloc.alloc_one(Some(st.log.ahead))?);
    }
    let ahead = st.log.ahead_next;
    let after_next = st.alloc.alloc_one(Some(ahead + 1))?;
    let info = CommitInfo {
        log_blocks: blocks.len() as u32,
        blocks: listed,
        next_inum: st.next_inum,
        inode_count: st.inode_count,
        free_blocks: st.alloc.free_blocks(),
        after_next,
    };
    st.log.ahead = ahead;
    st.log.ahead_next = after_next;
    Ok(LogPlan {
        groups,
        blocks,
        next: ahead,
        info,
    })
}

/// Sizes of the trees unify rebuilds from scratch.
fn leaves_for(entries: usize, value_len: usize, block_size: u32) -> usize {
    let per = leaf_space(block_size) / leaf_entry_cost(value_len);
    entries.div_ceil(per)
}

/// Builds a whole small tree (orphans, free-space map) from entries with equal-size values.
fn build_small_tree(
    st: &mut State,
    tree: TreeId,
    entries: &[(Key, Vec<u8>)],
    blocks: &mut Vec<u64>,
    out: &mut Vec<(u64, Arc<AlignedBuf>)>,
) -> Result<TreeRoot> {
    let bs = st.bs();
    if entries.is_empty() {
        return Ok(TreeRoot::default());
    }
    let value_len = entries.first().map_or(0, |(_, v)| v.len());
    let n = leaves_for(entries.len(), value_len, bs);
    let per = entries.len().div_ceil(n);
    let mut leaves = Vec::new();
    for (i, chunk) in entries.chunks(per).enumerate() {
        let block = blocks.pop().map_or_else(|| st.alloc.alloc_one(None), Ok)?;
        let header = BlockHeader {
            kind: Kind::BtreeLeaf,
            level: 0,
            blocknr: block,
            owner: tree as u64,
            delta: st.delta,
            fs_id: st.fs_id,
        };
        let refs: Vec<(Key, &[u8])> = chunk.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let mut buf = AlignedBuf::zeroed(bs as usize);
        Leaf::encode(&mut buf, &header, &refs);
        out.push((block, Arc::new(buf)));
        let lo = if i == 0 {
            Key::MIN
        } else {
            chunk.first().map_or(Key::MIN, |(k, _)| *k)
        };
        leaves.push((lo, block));
    }
    let (delta, fs_id) = (st.delta, st.fs_id);
    let (root, nodes) = build_interior(
        tree,
        &leaves,
        bs,
        delta,
        fs_id,
        &mut || match blocks.pop() {
            Some(b) => Ok(b),
            None => st.alloc.alloc_one(None),
        },
    )?;
    out.extend(nodes.into_iter().map(|(b, d)| (b, Arc::new(d))));
    Ok(if leaves.len() == 1 {
        TreeRoot {
            block: leaves[0].1,
            height: 0,
        }
    } else {
        root
    })
}

/// Blocks a tree built by `build_small_tree` over `entries` entries of `value_len` bytes
/// takes, so that they can be allocated before the bitmap is encoded.
fn small_tree_blocks(entries: usize, value_len: usize, block_size: u32) -> usize {
    let mut level = leaves_for(entries, value_len, block_size);
    let mut total = level;
    let cap = crate::format::btree::node_capacity(block_size);
    while level > 1 {
        level = level.div_ceil(cap);
        total += level;
    }
    total
}

/// Writes everything the log describes into the trees, then a new superblock.
/// `state` is STATE_MOUNTED or STATE_CLEAN.
/// Synchronous: the state lock is held throughout (mount, unmount, remount, label).
pub fn unify(st: &mut State, state: u32) -> Result<()> {
    check_writable(st)?;
    let result = plan_unify(st, state, None).and_then(|plan| {
        run_unify(&st.io, &plan)?;
        finish_unify(st, plan)
    });
    result.map_err(|e| fail(st, e))
}

/// A unify planned under the state lock: every block it writes, encoded, and the
/// superblock that makes them current.
#[derive(Debug)]
pub struct UnifyPlan {
    out: Vec<(u64, Arc<AlignedBuf>)>,
    sb: Superblock,
    /// The superblock slot and its encoded block.
    sb_write: (u64, Arc<AlignedBuf>),
    /// Blocks free once the new superblock is durable (old roots, old log chain).
    pending: BTreeSet<u64>,
}

/// Writes a planned unify: its blocks, a flush, the superblock, a flush. No lock held.
fn run_unify(io: &BlockIo, plan: &UnifyPlan) -> Result<()> {
    io.write(plan.out.clone())?;
    io.flush()?;
    io.write(vec![plan.sb_write.clone()])?;
    io.flush()
}

/// After the new superblock is durable: it is the current one, and the blocks the old
/// roots and log chain used are free.
fn finish_unify(st: &mut State, plan: UnifyPlan) -> Result<()> {
    st.sb = plan.sb;
    for b in plan.pending {
        st.alloc.mark_free(b, 1)?;
    }
    st.stats.flushes += 2;
    st.stats.unifies += 1;
    Ok(())
}

/// Plans a unify of the state as it is now. `closing` is the delta just closed when the
/// unify runs right after it ([`close`]): its log blocks are behind the new log head, so
/// they are freed with the old chain, and the blocks it frees are free in the bitmap the
/// unify writes (the superblock is written only once that delta is durable, and its
/// `Free` records lie before the new log head, never replayed again).
fn plan_unify(st: &mut State, state: u32, closing: Option<&mut Closed>) -> Result<UnifyPlan> {
    let bs = st.bs();
    let delta = st.delta;
    let mut pending: BTreeSet<u64> = BTreeSet::new();
    let mut released: BTreeSet<u64> = BTreeSet::new();
    if let Some(closed) = closing {
        pending.extend(std::mem::take(&mut closed.log_blocks));
        for &(start, count) in &closed.freed {
            released.extend(start..start + count);
        }
    }
    let mut out: Vec<(u64, Arc<AlignedBuf>)> = Vec::new();
    // Interior nodes of the three big trees, all new.
    let mut roots = st.sb.roots;
    for id in [TreeId::Inodes, TreeId::Extents, TreeId::Dirs] {
        let tree = match id {
            TreeId::Inodes => &mut st.inodes,
            TreeId::Extents => &mut st.extents,
            _ => &mut st.dirs,
        };
        pending.extend(tree.interior_blocks.drain(..));
        let leaves = tree.leaf_blocks();
        let alloc = &mut st.alloc;
        let (root, nodes) = build_interior(id, &leaves, bs, delta, st.fs_id, &mut || {
            alloc.alloc_one(None)
        })?;
        let root = if leaves.len() == 1 {
            TreeRoot {
                block: leaves[0].1,
                height: 0,
            }
        } else {
            root
        };
        let tree = match id {
            TreeId::Inodes => &mut st.inodes,
            TreeId::Extents => &mut st.extents,
            _ => &mut st.dirs,
        };
        tree.interior_blocks = nodes.iter().map(|(b, _)| *b).collect();
        out.extend(nodes.into_iter().map(|(b, d)| (b, Arc::new(d))));
        roots[id as usize] = root;
    }
    // Orphan tree and free-space map tree: rebuilt whole; their blocks are allocated before
    // the bitmap is encoded so that the bitmap includes them.
    pending.extend(st.orphan_tree_blocks.drain(..));
    pending.extend(st.freemap_tree_blocks.drain(..));
    let chunks = st.chunk_blocks.len();
    let n_orphan = if st.orphans.is_empty() {
        0
    } else {
        small_tree_blocks(st.orphans.len(), 0, bs)
    };
    let n_freemap = small_tree_blocks(chunks, 8, bs);
    let mut orphan_blocks: Vec<u64> = (0..n_orphan)
        .map(|_| st.alloc.alloc_one(None))
        .collect::<Result<_>>()?;
    let mut freemap_blocks: Vec<u64> = (0..n_freemap)
        .map(|_| st.alloc.alloc_one(None))
        .collect::<Result<_>>()?;
    st.orphan_tree_blocks = orphan_blocks.clone();
    st.freemap_tree_blocks = freemap_blocks.clone();
    // The old log chain is free once the new superblock is durable; the block allocated
    // ahead becomes the new log head.
    pending.extend(st.log.chain.drain(..));
    new_bitmap_blocks(st, &mut pending, &released)?;
    let orphan_entries: Vec<(Key, Vec<u8>)> = st
        .orphans
        .iter()
        .map(|&i| (Key::new(i, 0), Vec::new()))
        .collect();
    roots[TreeId::Orphans as usize] = build_small_tree(
        st,
        TreeId::Orphans,
        &orphan_entries,
        &mut orphan_blocks,
        &mut out,
    )?;
    let chunk_entries: Vec<(Key, Vec<u8>)> = st
        .chunk_blocks
        .iter()
        .enumerate()
        .map(|(c, b)| {
            (
                Key::new(c as u64, 0),
                crate::format::btree::encode_block_ref(*b),
            )
        })
        .collect();
    roots[TreeId::Freemap as usize] = build_small_tree(
        st,
        TreeId::Freemap,
        &chunk_entries,
        &mut freemap_blocks,
        &mut out,
    )?;
    if !orphan_blocks.is_empty() || !freemap_blocks.is_empty() {
        return Err(Error::invalid(
            "unify allocated more tree blocks than it used",
        ));
    }
    let mut shown_free = released;
    shown_free.extend(pending.iter().copied());
    encode_bitmaps(st, &shown_free, &mut out)?;
    let (sb, sb_write) = new_superblock(st, roots, state, shown_free.len() as u64)?;
    Ok(UnifyPlan {
        out,
        sb,
        sb_write,
        pending,
    })
}

/// Gives every chunk whose bits change a new bitmap block. Allocating those blocks changes
/// more chunks, so this runs until no new chunk changes (it converges: allocations cluster).
fn new_bitmap_blocks(
    st: &mut State,
    pending: &mut BTreeSet<u64>,
    released: &BTreeSet<u64>,
) -> Result<()> {
    let per = bitmap::bits_per_chunk(st.bs());
    let mut done: BTreeSet<u64> = BTreeSet::new();
    let mut todo: BTreeSet<u64> = st.alloc.take_dirty_chunks();
    todo.extend(pending.iter().chain(released).map(|b| b / per));
    while !todo.is_empty() {
        for chunk in std::mem::take(&mut todo) {
            if !done.insert(chunk) {
                continue;
            }
            let old = st.chunk_blocks[chunk as usize];
            pending.insert(old);
            let new = st.alloc.alloc_one(Some(old))?;
            st.chunk_blocks[chunk as usize] = new;
            todo.insert(old / per);
        }
        todo.extend(st.alloc.take_dirty_chunks());
        todo.retain(|c| !done.contains(c));
    }
    st.rewritten_chunks = done;
    Ok(())
}

/// Encodes the rewritten chunks' bitmap blocks, showing the `shown_free` blocks free.
fn encode_bitmaps(
    st: &mut State,
    shown_free: &BTreeSet<u64>,
    out: &mut Vec<(u64, Arc<AlignedBuf>)>,
) -> Result<()> {
    let bs = st.bs();
    for &chunk in &std::mem::take(&mut st.rewritten_chunks) {
        let block = st.chunk_blocks[chunk as usize];
        let bits = st
            .alloc
            .chunk_bits(chunk, bs as usize - HEADER_SIZE, shown_free);
        let header = BlockHeader {
            kind: Kind::Bitmap,
            level: 0,
            blocknr: block,
            owner: chunk,
            delta: st.delta,
            fs_id: st.fs_id,
        };
        let mut buf = AlignedBuf::zeroed(bs as usize);
        bitmap::encode(&mut buf, &header, &bits);
        out.push((block, Arc::new(buf)));
    }
    Ok(())
}

/// The superblock a unify writes (and its encoded slot block); `shown_free` blocks are
/// still used in the allocator but free once it is durable.
fn new_superblock(
    st: &State,
    roots: [TreeRoot; 8],
    state: u32,
    shown_free: u64,
) -> Result<(Superblock, (u64, Arc<AlignedBuf>))> {
    let mut sb = st.sb.clone();
    sb.roots = roots;
    sb.sequence += 1;
    sb.unify_seq += 1;
    sb.delta = st.delta.saturating_sub(1);
    sb.set_log_heads(st.log.ahead, st.log.ahead_next);
    sb.log_delta = st.delta;
    sb.next_inum = st.next_inum;
    sb.inode_count = st.inode_count;
    sb.free_blocks = st.alloc.free_blocks() + shown_free;
    sb.state = state;
    sb.last_write_sec = now_sec();
    sb.validate(0)?;
    let slot = sb.sequence % 2;
    let mut buf = AlignedBuf::zeroed(st.bs() as usize);
    sb.encode(&mut buf, slot);
    Ok((sb, (slot, Arc::new(buf))))
}

/// Seconds since the epoch.
pub fn now_sec() -> i64 {
    crate::fs::now().sec
}
