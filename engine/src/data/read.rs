//! The read path: plan under the state lock held shared, load from the device without it,
//! complete under the lock held shared again.
//!
//! Plan and completion take `&State`: readers run them in parallel with each other and
//! never beside a change (which holds the lock exclusive, engine::fs). What they record
//! lives behind locks of its own in [`ReadState`]: the read streams and the pending
//! read-ahead table behind one small mutex (`ReadTables`, lock rank `ReadTables`, taken
//! only for a few map operations and never while loading), the counters as atomics, the
//! clean cache behind its sharded locks (inserts by [`PageCache::insert_if_epoch`], which
//! compares the epoch under the shard lock).
//!
//! 1. [`plan_read`] (locked shared) fills the reply from dirty pages, in-flight pages, the clean
//!    cache and holes, and lists the blocks to load: those of the request that nothing
//!    holds, plus read-ahead when the inode is being read sequentially. It notes the inode's
//!    cache epoch.
//! 2. [`load`] (no lock) reads them, one request per run of contiguous blocks (at most
//!    [`MAX_REQUEST_BYTES`]), all in one batch, and verifies each block's CRC once.
//! 3. [`complete_read`] (locked shared) checks the epoch: if a write, truncate, punch, unlink or
//!    commit touched the inode meanwhile, the loaded pages may be stale (or their blocks
//!    freed and reused), so nothing is kept and the caller plans again. Otherwise it caches
//!    the verified pages and copies the requested bytes; a requested block whose CRC did
//!    not match is EIO, counted once per read.
//!
//! The reply is the file as of step 1 (the read is ordered at its plan).

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::collections::HashMap;

use super::{Span, span_at};
use crate::cache::{Page, PageCache};
use crate::dev::{AlignedBuf, ReadRequest};
use crate::format::data_crc;
use crate::format::extent::ExtentFlags;
use crate::io::BlockIo;
use crate::lockorder::{Rank, Ranked};
use crate::state::State;
use crate::{Error, Result};

/// Largest single device request of the read path.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;

/// Largest read-ahead window: two batches of [`READAHEAD_BATCH_BYTES`], so up to four
/// requests in flight. A larger window (16 MiB was measured) costs more than it gains here:
/// every read checks each block of the window after it under the state lock
/// (`plan_readahead`). It is also bounded by a quarter of the clean cache, so read-ahead
/// never evicts itself before it is read.
pub const MAX_READAHEAD_BYTES: u64 = 4 << 20;

/// Read-ahead is handed over once this much of the window is missing: one batch of two
/// [`MAX_REQUEST_BYTES`] requests in flight together, and with the read-ahead threads
/// (engine::fs::readahead) as many batches as the window holds. Larger batches keep as many in flight but
/// make a reader that caught up wait for a whole batch to be loaded and cached.
pub const READAHEAD_BATCH_BYTES: u64 = 2 << 20;

/// Inodes whose read streams are remembered at most (past it the table starts over).
const MAX_STREAMS: usize = 4096;

/// Sequential-read detection for one inode.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadStream {
    /// The file block after the last one read.
    next: u64,
    /// Read-ahead window in blocks (0: not sequential).
    window: u64,
}

/// A read-ahead under way on the read-ahead thread: file blocks `[from, to)` of an inode.
#[derive(Debug, Clone)]
pub struct Pending {
    from: u64,
    to: u64,
    done: Arc<Done>,
}

/// Set once a read-ahead finished (loaded and cached, or given up).
#[derive(Debug, Default)]
pub struct Done {
    finished: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    /// Marks it finished and wakes the readers waiting for it.
    pub fn finish(&self) {
        *self
            .finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.cv.notify_all();
    }

    /// Waits until it finished.
    pub fn wait(&self) {
        let mut f = self
            .finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while !*f {
            f = self
                .cv
                .wait(f)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// What readers record while planning, behind [`ReadState::tables`].
#[derive(Debug, Default)]
pub struct ReadTables {
    pub streams: HashMap<u64, ReadStream>,
    /// Read-aheads handed to the thread and not finished, per inode.
    pub pending: HashMap<u64, Vec<Pending>>,
}

/// What the read path keeps in `State`. Readers change it through `&State` (the state lock
/// held shared): the tables behind their own mutex, the counters atomic.
#[derive(Debug)]
pub struct ReadState {
    pub cache: Arc<PageCache>,
    /// True when a read-ahead thread runs: unlocked reads hand their read-ahead to it.
    /// Set at mount under the exclusive lock.
    pub async_readahead: bool,
    /// Read streams and pending read-aheads ([`ReadState::tables`]).
    tables: Mutex<ReadTables>,
    /// Blocks planned for read-ahead (counted in `FsStats`).
    pub readahead_blocks: AtomicU64,
    /// Data blocks whose CRC did not match when read (counted in `FsStats`).
    pub checksum_errors: AtomicU64,
}

impl ReadState {
    /// The read streams and pending read-aheads. Rank `ReadTables` (above the state lock):
    /// held for a few map operations only, never while loading or taking another lock.
    pub fn tables(&self) -> Ranked<MutexGuard<'_, ReadTables>> {
        Ranked::take(Rank::ReadTables, || {
            self.tables
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }
}

impl Default for ReadState {
    fn default() -> Self {
        ReadState {
            cache: Arc::new(PageCache::new(
                crate::fs::MountOptions::default().data_cache_bytes,
            )),
            async_readahead: false,
            tables: Mutex::new(ReadTables::default()),
            readahead_blocks: AtomicU64::new(0),
            checksum_errors: AtomicU64::new(0),
        }
    }
}

/// One block to load from the device.
#[derive(Debug, Clone, Copy)]
struct Load {
    fblock: u64,
    phys: u64,
    crc: u32,
    /// Where its bytes go in the reply: (offset in the reply, offset in the block, length);
    /// None for read-ahead.
    dest: Option<(usize, usize, usize)>,
}

/// A read planned under the lock (see the module documentation).
#[derive(Debug)]
pub struct ReadPlan {
    inum: u64,
    out: Vec<u8>,
    loads: Vec<Load>,
    epoch: u64,
    io: BlockIo,
    block_size: u32,
    /// The cache the loaded pages go to (their buffers may be recycled ones).
    cache: Arc<PageCache>,
    /// A read-ahead of a block this read needs is under way: wait for it, then plan again.
    wait: Option<Arc<Done>>,
    /// Read-ahead to hand to the read-ahead thread (registered in `pending`).
    ahead: Option<Box<ReadPlan>>,
}

/// How a read is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Everything under the state lock: read-ahead joins the read's own batch.
    Locked,
    /// Loads without the lock ([`load`]); read-ahead goes to the read-ahead thread when
    /// one runs, and a read waits for a read-ahead under way rather than load twice.
    Unlocked,
}

impl ReadPlan {
    /// True when nothing has to be loaded: [`ReadPlan::into_bytes`] is the reply (unless
    /// [`ReadPlan::take_wait`] says to wait and plan again).
    pub fn is_complete(&self) -> bool {
        self.loads.is_empty()
    }

    /// The read-ahead to wait for before planning again, if any.
    pub fn take_wait(&mut self) -> Option<Arc<Done>> {
        self.wait.take()
    }

    /// The read-ahead for the read-ahead thread, and what to signal when it is finished.
    pub fn take_ahead(&mut self) -> Option<(ReadPlan, Arc<Done>)> {
        let ahead = self.ahead.take()?;
        let done = ahead.wait.clone()?;
        Some((*ahead, done))
    }

    /// The inode read.
    pub fn inum(&self) -> u64 {
        self.inum
    }

    /// The reply of a complete plan.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// Blocks to load (requested and read ahead).
    pub fn blocks_to_load(&self) -> usize {
        self.loads.len()
    }
}

/// The blocks a [`ReadPlan`] loaded: each verified page, or its stored and computed CRC.
#[derive(Debug)]
pub struct Loaded {
    pages: Vec<std::result::Result<Page, (u32, u32)>>,
}

/// Where the committed bytes of `fblock` are: Some((block, crc)), or None for zeros.
fn locate(
    st: &State,
    inum: u64,
    fblock: u64,
    span: &mut Option<Span>,
) -> Result<Option<(u64, u32)>> {
    let known = span
        .as_ref()
        .is_some_and(|s| s.from <= fblock && fblock < s.to);
    if !known {
        *span = Some(span_at(st, inum, fblock)?);
    }
    let Some(Span {
        ext: Some((start, ext)),
        ..
    }) = span.as_ref()
    else {
        return Ok(None);
    };
    if ext.flags.contains(ExtentFlags::UNWRITTEN) {
        return Ok(None);
    }
    let i = (fblock - start) as usize;
    Ok(Some((
        ext.phys + i as u64,
        ext.crcs.get(i).copied().unwrap_or(0),
    )))
}

/// Step 1: plans a read of `size` bytes at `offset` of `inum`, stopping at `file_size`.
pub fn plan_read(
    st: &State,
    inum: u64,
    offset: u64,
    size: u32,
    file_size: u64,
    mode: ReadMode,
) -> Result<ReadPlan> {
    let bs = u64::from(st.bs());
    let mut plan = ReadPlan {
        inum,
        out: Vec::new(),
        loads: Vec::new(),
        epoch: st.read.cache.epoch(inum),
        io: st.io.clone(),
        block_size: st.bs(),
        cache: st.read.cache.clone(),
        wait: None,
        ahead: None,
    };
    if offset >= file_size || size == 0 {
        return Ok(plan);
    }
    let end = file_size.min(offset + u64::from(size));
    plan.out = vec![0u8; (end - offset) as usize];
    let (first, last) = (offset / bs, (end - 1) / bs);
    let mut span = None;
    // The read-aheads under way for this inode, as of now (one that starts later loads
    // what this read loads too; both cache the same verified bytes).
    let pending = if mode == ReadMode::Unlocked {
        st.read
            .tables()
            .pending
            .get(&inum)
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    for fblock in first..=last {
        let from = (fblock * bs).max(offset);
        let to = ((fblock + 1) * bs).min(end);
        let within = (from - fblock * bs) as usize;
        let n = (to - from) as usize;
        let at = (from - offset) as usize;
        let dst = &mut plan.out[at..at + n];
        if let Some(page) = st.pages.get(&(inum, fblock)) {
            dst.copy_from_slice(&page[within..within + n]);
        } else if let Some(page) = st.inflight.get(&(inum, fblock)) {
            dst.copy_from_slice(&page[within..within + n]);
        } else if let Some(page) = st.read.cache.get(inum, fblock) {
            dst.copy_from_slice(&page[within..within + n]);
        } else if let Some((phys, crc)) = locate(st, inum, fblock, &mut span)? {
            if mode == ReadMode::Unlocked
                && plan.wait.is_none()
                && let Some(p) = pending_at(&pending, fblock)
            {
                plan.wait = Some(p.done.clone());
            }
            plan.loads.push(Load {
                fblock,
                phys,
                crc,
                dest: Some((at, within, n)),
            });
        }
        // Otherwise a hole: the reply is zeros already.
    }
    if plan.wait.is_some() {
        // Planned again after the read-ahead: loads nothing now.
        plan.loads.clear();
        return Ok(plan);
    }
    let to_thread = mode == ReadMode::Unlocked && st.read.async_readahead;
    if to_thread {
        let mut ahead = ReadPlan {
            inum,
            out: Vec::new(),
            loads: Vec::new(),
            epoch: plan.epoch,
            io: plan.io.clone(),
            block_size: plan.block_size,
            cache: plan.cache.clone(),
            wait: None,
            ahead: None,
        };
        plan_readahead(
            st,
            &mut ahead,
            first,
            last + 1,
            file_size.div_ceil(bs),
            span,
        )?;
        if let (Some(a), Some(b)) = (ahead.loads.first(), ahead.loads.last()) {
            let done = Arc::new(Done::default());
            st.read
                .tables()
                .pending
                .entry(inum)
                .or_default()
                .push(Pending {
                    from: a.fblock,
                    to: b.fblock + 1,
                    done: done.clone(),
                });
            ahead.wait = Some(done);
            plan.ahead = Some(Box::new(ahead));
        }
    } else {
        plan_readahead(st, &mut plan, first, last + 1, file_size.div_ceil(bs), span)?;
    }
    Ok(plan)
}

/// The read-ahead among `pending` (one inode's) that covers `fblock`.
fn pending_at(pending: &[Pending], fblock: u64) -> Option<&Pending> {
    pending.iter().find(|p| p.from <= fblock && fblock < p.to)
}

/// Forgets a read-ahead handed to the thread (it finished, or could not be handed over)
/// and wakes its waiters.
pub fn end_readahead(st: &State, inum: u64, done: &Arc<Done>) {
    {
        let mut tables = st.read.tables();
        if let Some(list) = tables.pending.get_mut(&inum) {
            list.retain(|p| !Arc::ptr_eq(&p.done, done));
            if list.is_empty() {
                tables.pending.remove(&inum);
            }
        }
    }
    done.finish();
}

/// Read-ahead: a read that starts where the last one of the inode ended doubles the window
/// (from the request's size, up to [`MAX_READAHEAD_BYTES`]); any other read resets it. The
/// blocks of the window after the request that nothing holds are loaded with it, once at
/// least half the window is missing (so loads come in large batches).
fn plan_readahead(
    st: &State,
    plan: &mut ReadPlan,
    first: u64,
    end: u64,
    file_blocks: u64,
    mut span: Option<Span>,
) -> Result<()> {
    let inum = plan.inum;
    let max = (MAX_READAHEAD_BYTES.min(st.read.cache.budget() / 4) / u64::from(st.bs())).max(1);
    let (window, pending) = {
        let mut tables = st.read.tables();
        if tables.streams.len() >= MAX_STREAMS && !tables.streams.contains_key(&inum) {
            tables.streams.clear();
        }
        let s = tables.streams.entry(inum).or_default();
        // A read from the start of a file is the usual start of a stream.
        let sequential = first == s.next || first == 0;
        s.window = if sequential {
            (s.window * 2).max(end - first).min(max)
        } else {
            0
        };
        s.next = end;
        let window = s.window;
        let pending = tables.pending.get(&inum).cloned().unwrap_or_default();
        (window, pending)
    };
    let ra_end = end.saturating_add(window).min(file_blocks);
    if ra_end <= end {
        return Ok(());
    }
    let held = |st: &State, b: u64| {
        st.pages.contains_key(&(inum, b))
            || st.inflight.contains_key(&(inum, b))
            || st.read.cache.contains(inum, b)
            || pending_at(&pending, b).is_some()
    };
    // Wait until a whole request's worth (or half the window, if smaller) is missing at the
    // end of the window, or the window reaches the end of the file: loads come in large
    // batches, several of them ahead of the reader.
    let mut start = end;
    while start < ra_end && held(st, start) {
        start += 1;
    }
    let batch = (READAHEAD_BATCH_BYTES / u64::from(st.bs()))
        .min(window / 2)
        .max(1);
    if plan.loads.is_empty() && ra_end - start < batch && ra_end < file_blocks {
        return Ok(());
    }
    for fblock in start..ra_end {
        if held(st, fblock) {
            continue;
        }
        if let Some((phys, crc)) = locate(st, inum, fblock, &mut span)? {
            plan.loads.push(Load {
                fblock,
                phys,
                crc,
                dest: None,
            });
            st.read.readahead_blocks.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Step 2 (no lock): reads the plan's blocks, one request per run of contiguous blocks,
/// all in one batch, and verifies each block's CRC.
pub fn load(plan: &ReadPlan) -> Result<Loaded> {
    let bs = u64::from(plan.block_size);
    let per_request = (MAX_REQUEST_BYTES / bs).max(1);
    // Runs of consecutive loads whose blocks are contiguous on disk.
    let mut runs: Vec<(usize, u64)> = Vec::new(); // (first load, blocks)
    for (i, l) in plan.loads.iter().enumerate() {
        if l.phys >= plan.io.block_count {
            return Err(Error::corrupt(
                l.phys,
                format!(
                    "data block {} of inode {} is past the end ({} blocks)",
                    l.fblock, plan.inum, plan.io.block_count
                ),
            ));
        }
        match runs.last_mut() {
            Some((start, n)) if *n < per_request && plan.loads[*start].phys + *n == l.phys => {
                *n += 1;
            }
            _ => runs.push((i, 1)),
        }
    }
    let mut bufs: Vec<AlignedBuf> = runs
        .iter()
        .map(|&(_, n)| bounce_buffer((n * bs) as usize))
        .collect();
    let mut reqs: Vec<ReadRequest<'_>> = runs
        .iter()
        .zip(bufs.iter_mut())
        .map(|(&(start, _), buf)| ReadRequest {
            offset: plan.loads[start].phys * bs,
            buf,
        })
        .collect();
    plan.io.dev.read_batch(&mut reqs)?;
    drop(reqs);
    let mut pages = Vec::with_capacity(plan.loads.len());
    for (&(start, n), buf) in runs.iter().zip(&bufs) {
        for (k, chunk) in buf.chunks_exact(bs as usize).enumerate().take(n as usize) {
            let want = plan.loads[start + k].crc;
            let got = data_crc(chunk);
            pages.push(if got == want {
                Ok(plan.cache.page_from(chunk))
            } else {
                Err((want, got))
            });
        }
    }
    BOUNCE.with(|pool| {
        let mut pool = pool.borrow_mut();
        for buf in bufs {
            if pool.len() < BOUNCE_KEPT && buf.capacity() as u64 == MAX_REQUEST_BYTES {
                pool.push(buf);
            }
        }
    });
    Ok(Loaded { pages })
}

/// Request-sized buffers a thread keeps between loads at most (allocating and faulting in
/// a fresh megabyte per request costs more than the copy out of it): two read-ahead batches.
const BOUNCE_KEPT: usize = 2 * (READAHEAD_BATCH_BYTES / MAX_REQUEST_BYTES) as usize;

thread_local! {
    static BOUNCE: std::cell::RefCell<Vec<AlignedBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `len` bytes for a device read: a kept one, shortened to `len`, or a new one
/// of the request size that can be kept afterwards (runs are at most a request long).
fn bounce_buffer(len: usize) -> AlignedBuf {
    let request = MAX_REQUEST_BYTES as usize;
    if len > request {
        return AlignedBuf::zeroed(len);
    }
    let mut buf = BOUNCE
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| AlignedBuf::zeroed(request));
    buf.set_len(len);
    buf
}

/// Step 3: finishes a read under the lock (held shared). `None` when the inode changed
/// since the plan (plan again); otherwise the reply, or EIO when a requested block failed
/// its CRC.
pub fn complete_read(
    st: &State,
    mut plan: ReadPlan,
    loaded: Result<Loaded>,
) -> Result<Option<Vec<u8>>> {
    if st.read.cache.epoch(plan.inum) != plan.epoch {
        return Ok(None);
    }
    let loaded = loaded?;
    let inum = plan.inum;
    let mut bad = None;
    for (l, page) in plan.loads.iter().zip(loaded.pages) {
        match page {
            Ok(page) => {
                if let Some((at, within, n)) = l.dest {
                    plan.out[at..at + n].copy_from_slice(&page[within..within + n]);
                }
                // The epoch was checked above under the state lock, which every invalidation
                // holds exclusive; checking it again under the shard's lock keeps this
                // right for inserts that no lock orders with it (the read-ahead thread).
                st.read
                    .cache
                    .insert_if_epoch(inum, l.fblock, page, l.dest.is_some(), plan.epoch);
            }
            // A read-ahead block that fails is left alone: a read of it reports it.
            Err((want, got)) if l.dest.is_some() && bad.is_none() => {
                bad = Some((l.fblock, l.phys, want, got));
            }
            Err(_) => {}
        }
    }
    if let Some((fblock, phys, want, got)) = bad {
        return Err(super::checksum_error(st, inum, fblock, phys, want, got));
    }
    Ok(Some(plan.out))
}

/// A whole read under the lock (symlinks, and readers that lost the race too often).
pub fn read(st: &State, inum: u64, offset: u64, size: u32, file_size: u64) -> Result<Vec<u8>> {
    let plan = plan_read(st, inum, offset, size, file_size, ReadMode::Locked)?;
    if plan.is_complete() {
        return Ok(plan.into_bytes());
    }
    let loaded = load(&plan);
    match complete_read(st, plan, loaded)? {
        Some(out) => Ok(out),
        None => Err(Error::invalid("the inode changed during a locked read")),
    }
}
