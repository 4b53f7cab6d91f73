//! engine::cache: clean file-data pages, keyed by (inode, file block), shared by reference.
//!
//! A page here holds exactly what the device holds for committed data of that file block,
//! verified against the extent's CRC when it was loaded (or the bytes a flush just made
//! durable). Dirty and in-flight pages (in `State`) are the source of truth for modified
//! data and are looked up first; every change of a block (write, truncate, hole punch,
//! unlink, commit) drops the block's clean copy here, and a commit inserts the pages it made
//! durable. See docs/ARCHITECTURE.md, "Clean page cache".
//!
//! The map is split into shards, each under its own mutex, by a hash of the key. Each shard
//! keeps `budget / shards` bytes with a 2Q-style policy that resists a single large scan:
//! - a page enters the *probationary* queue (FIFO), with one reference when a read asked for
//!   it and none when it was read ahead or written back;
//! - a page referenced a second time moves to the *protected* queue (LRU);
//! - eviction takes the oldest probationary page while the probationary queue holds more
//!   than a quarter of the shard's budget (or the protected queue is empty), else the least
//!   recently used protected page.
//!
//! So a scan that reads every page once cycles through the probationary quarter and leaves
//! pages that were hit twice alone.
//!
//! Readers that load pages outside the state lock use [`PageCache::epoch`]: every
//! invalidation bumps the epoch of the inode's slot first, so a reader that saw the same
//! epoch before and after its device read knows no change touched that inode meanwhile.

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, MutexGuard};
use std::collections::BTreeMap;

use crate::dev::AlignedBuf;

/// A shared, immutable page.
pub type Page = Arc<AlignedBuf>;

/// Shards of a cache made with [`PageCache::new`].
pub const DEFAULT_SHARDS: usize = 16;

/// Evicted page buffers kept for reuse at most (outside the budget): reusing them spares
/// the allocator and the kernel a fresh, zeroed page per page loaded.
const SPARE_PAGES: usize = 512;

/// Slots of the per-inode epoch table (inodes share a slot by hash; sharing only costs a
/// spurious retry).
const EPOCH_SLOTS: usize = 64;

/// Which queue a page is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Probation,
    Protected,
}

#[derive(Debug)]
struct Entry {
    page: Page,
    queue: Queue,
    /// Position in its queue (smaller is older).
    seq: u64,
    /// References while on probation (a second one promotes the page).
    refs: u8,
}

#[derive(Debug, Default)]
struct Shard {
    map: BTreeMap<(u64, u64), Entry>,
    probation: BTreeMap<u64, (u64, u64)>,
    protected: BTreeMap<u64, (u64, u64)>,
    probation_bytes: u64,
    bytes: u64,
    next_seq: u64,
}

/// Counters of the clean page cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub inserted: u64,
    pub evicted: u64,
    pub invalidated: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// The clean page cache. Thread-safe; every method takes `&self`.
#[derive(Debug)]
pub struct PageCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: u64,
    epochs: Vec<AtomicU64>,
    hits: AtomicU64,
    misses: AtomicU64,
    inserted: AtomicU64,
    evicted: AtomicU64,
    invalidated: AtomicU64,
    /// Buffers of evicted pages nobody else referenced, for [`PageCache::page_from`].
    spare: Mutex<Vec<AlignedBuf>>,
}

impl PageCache {
    /// A cache of at most `budget` bytes of pages in [`DEFAULT_SHARDS`] shards.
    pub fn new(budget: u64) -> PageCache {
        PageCache::with_shards(budget, DEFAULT_SHARDS)
    }

    /// A cache of at most `budget` bytes in `shards` shards (each holds `budget / shards`).
    pub fn with_shards(budget: u64, shards: usize) -> PageCache {
        let shards = shards.max(1);
        PageCache {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_budget: budget / shards as u64,
            epochs: (0..EPOCH_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            invalidated: AtomicU64::new(0),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// A page holding a copy of `bytes`, in a recycled buffer when one of that size is kept.
    pub fn page_from(&self, bytes: &[u8]) -> Page {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match spare {
            Some(mut buf) if buf.len() == bytes.len() => {
                buf.copy_from_slice(bytes);
                Arc::new(buf)
            }
            _ => Arc::new(AlignedBuf::from_slice(bytes)),
        }
    }

    /// Keeps the buffers of dropped pages that nobody else holds, up to [`SPARE_PAGES`].
    fn recycle(&self, pages: Vec<Page>) {
        if pages.is_empty() {
            return;
        }
        let mut spare = self
            .spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for page in pages {
            if spare.len() >= SPARE_PAGES {
                break;
            }
            if let Ok(buf) = Arc::try_unwrap(page) {
                spare.push(buf);
            }
        }
    }

    /// The most bytes of pages the cache holds.
    pub fn budget(&self) -> u64 {
        self.shard_budget * self.shards.len() as u64
    }

    fn shard_of(&self, inum: u64, fblock: u64) -> MutexGuard<'_, Shard> {
        // SplitMix64 finaliser of both halves of the key: neighbouring blocks spread out.
        let mut x = inum.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ fblock;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let i = (x % self.shards.len() as u64) as usize;
        lock(&self.shards[i])
    }

    fn epoch_slot(&self, inum: u64) -> &AtomicU64 {
        &self.epochs[(inum.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % EPOCH_SLOTS]
    }

    /// The invalidation epoch of `inum`: it changes whenever any page of `inum` is
    /// invalidated.
    pub fn epoch(&self, inum: u64) -> u64 {
        self.epoch_slot(inum).load(Ordering::Acquire)
    }

    /// The cached page of file block `fblock` of `inum`, counting a reference (a second one
    /// moves it to the protected queue).
    pub fn get(&self, inum: u64, fblock: u64) -> Option<Page> {
        let mut guard = self.shard_of(inum, fblock);
        let sh = &mut *guard;
        let Some(e) = sh.map.get_mut(&(inum, fblock)) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.hits.fetch_add(1, Ordering::Relaxed);
        let page = e.page.clone();
        let len = page.len() as u64;
        let seq = sh.next_seq;
        sh.next_seq += 1;
        match e.queue {
            Queue::Probation => {
                e.refs = e.refs.saturating_add(1);
                if e.refs >= 2 {
                    sh.probation.remove(&e.seq);
                    sh.probation_bytes -= len;
                    e.queue = Queue::Protected;
                    e.seq = seq;
                    sh.protected.insert(seq, (inum, fblock));
                }
            }
            Queue::Protected => {
                sh.protected.remove(&e.seq);
                e.seq = seq;
                sh.protected.insert(seq, (inum, fblock));
            }
        }
        Some(page)
    }

    /// True when the page is cached (without counting a reference).
    pub fn contains(&self, inum: u64, fblock: u64) -> bool {
        self.shard_of(inum, fblock)
            .map
            .contains_key(&(inum, fblock))
    }

    /// Caches `page` as the clean contents of file block `fblock` of `inum`, replacing any
    /// copy; `referenced` when a read asked for it (not read-ahead, not writeback). Evicts
    /// down to the shard's budget.
    pub fn insert(&self, inum: u64, fblock: u64, page: Page, referenced: bool) {
        if page.len() as u64 > self.shard_budget {
            // Nothing fits: keep nothing (and no older copy either).
            self.remove_one(inum, fblock);
            return;
        }
        let guard = self.shard_of(inum, fblock);
        self.insert_locked(guard, inum, fblock, page, referenced);
    }

    /// [`PageCache::insert`] for a reader that loaded `page` outside every lock that orders
    /// it with invalidations: caches it only if the epoch of `inum` is still `epoch` (read
    /// before the load), and returns whether it did. The check runs under the shard's lock,
    /// so an invalidation that bumped the epoch first makes it fail, and one that bumps it
    /// after the check removes the page when it takes the shard (tests/tests/shuttle.rs).
    pub fn insert_if_epoch(
        &self,
        inum: u64,
        fblock: u64,
        page: Page,
        referenced: bool,
        epoch: u64,
    ) -> bool {
        if page.len() as u64 > self.shard_budget {
            self.remove_one(inum, fblock);
            return false;
        }
        let guard = self.shard_of(inum, fblock);
        if self.epoch(inum) != epoch {
            return false;
        }
        self.insert_locked(guard, inum, fblock, page, referenced);
        true
    }

    /// The body of the inserts, under the shard's lock (released here before recycling).
    fn insert_locked(
        &self,
        mut guard: MutexGuard<'_, Shard>,
        inum: u64,
        fblock: u64,
        page: Page,
        referenced: bool,
    ) {
        let len = page.len() as u64;
        let sh = &mut *guard;
        let mut dropped = Vec::new();
        if let Some(old) = sh.map.remove(&(inum, fblock)) {
            sh.unlink(&old);
            dropped.push(old.page);
        }
        let seq = sh.next_seq;
        sh.next_seq += 1;
        sh.map.insert(
            (inum, fblock),
            Entry {
                page,
                queue: Queue::Probation,
                seq,
                refs: u8::from(referenced),
            },
        );
        sh.probation.insert(seq, (inum, fblock));
        sh.probation_bytes += len;
        sh.bytes += len;
        self.inserted.fetch_add(1, Ordering::Relaxed);
        let evicted = sh.evict_to(self.shard_budget, &mut dropped);
        drop(guard);
        self.evicted.fetch_add(evicted, Ordering::Relaxed);
        self.recycle(dropped);
    }

    fn remove_one(&self, inum: u64, fblock: u64) {
        let mut guard = self.shard_of(inum, fblock);
        if let Some(old) = guard.map.remove(&(inum, fblock)) {
            guard.unlink(&old);
            drop(guard);
            self.invalidated.fetch_add(1, Ordering::Relaxed);
            self.recycle(vec![old.page]);
        }
    }

    /// Drops the cached pages of file blocks `[from, to)` of `inum` (a write, truncate,
    /// hole punch or unlink changed them). Bumps the inode's epoch first.
    pub fn invalidate(&self, inum: u64, from: u64, to: u64) {
        if from >= to {
            return;
        }
        self.epoch_slot(inum).fetch_add(1, Ordering::AcqRel);
        if to - from <= 4 {
            for b in from..to {
                self.remove_one(inum, b);
            }
            return;
        }
        for shard in &self.shards {
            let mut guard = lock(shard);
            let keys: Vec<(u64, u64)> = guard
                .map
                .range((inum, from)..(inum, to))
                .map(|(k, _)| *k)
                .collect();
            let mut dropped = Vec::with_capacity(keys.len());
            for k in &keys {
                if let Some(old) = guard.map.remove(k) {
                    guard.unlink(&old);
                    dropped.push(old.page);
                }
            }
            drop(guard);
            self.invalidated
                .fetch_add(keys.len() as u64, Ordering::Relaxed);
            self.recycle(dropped);
        }
    }

    /// Counters and the bytes held now.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserted: self.inserted.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            invalidated: self.invalidated.load(Ordering::Relaxed),
            bytes: self.shards.iter().map(|s| lock(s).bytes).sum(),
        }
    }

    /// Pages held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// True when no page is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    /// Takes a removed entry off its queue and out of the byte counts.
    fn unlink(&mut self, e: &Entry) {
        let len = e.page.len() as u64;
        self.bytes -= len;
        match e.queue {
            Queue::Probation => {
                self.probation.remove(&e.seq);
                self.probation_bytes -= len;
            }
            Queue::Protected => {
                self.protected.remove(&e.seq);
            }
        }
    }

    /// Evicts until the shard holds at most `budget` bytes, adding the pages to `dropped`;
    /// returns how many.
    fn evict_to(&mut self, budget: u64, dropped: &mut Vec<Page>) -> u64 {
        let mut n = 0;
        while self.bytes > budget {
            let from_probation = self.protected.is_empty()
                || (self.probation_bytes > budget / 4 && !self.probation.is_empty());
            let queue = if from_probation {
                &mut self.probation
            } else {
                &mut self.protected
            };
            let Some((_, key)) = queue.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&key) {
                let len = e.page.len() as u64;
                self.bytes -= len;
                if from_probation {
                    self.probation_bytes -= len;
                }
                dropped.push(e.page);
            }
            n += 1;
        }
        n
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A shard is consistent between statements that hold it; a panic elsewhere while it was
    // held leaves it usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(byte: u8) -> Page {
        Arc::new(AlignedBuf::from_slice(&[byte; 4096]))
    }

    #[test]
    fn stays_within_its_budget() {
        let c = PageCache::with_shards(64 * 4096, 4);
        for b in 0..10_000 {
            c.insert(7, b, page(b as u8), b % 3 == 0);
            if b % 5 == 0 {
                c.get(7, b / 2);
            }
            assert!(c.stats().bytes <= c.budget(), "over budget after block {b}");
        }
        assert!(!c.is_empty());
        assert_eq!(c.stats().bytes, c.len() as u64 * 4096);
        assert!(c.stats().evicted > 0);
    }

    #[test]
    fn a_scan_does_not_evict_pages_hit_twice() {
        let c = PageCache::with_shards(100 * 4096, 1);
        // A working set of 40 pages, each read twice: protected.
        for b in 0..40 {
            c.insert(1, b, page(1), true);
            assert!(c.get(1, b).is_some());
        }
        // One scan of 1000 pages of another file, each read once (read ahead, then read).
        for b in 0..1000 {
            c.insert(2, b, page(2), false);
            c.get(2, b);
        }
        for b in 0..40 {
            assert!(c.contains(1, b), "hot page {b} was evicted by the scan");
        }
        assert!(c.stats().bytes <= c.budget());
        // Without the second hit the same pages would have gone: plain FIFO behaviour.
        let d = PageCache::with_shards(100 * 4096, 1);
        for b in 0..40 {
            d.insert(1, b, page(1), true);
        }
        for b in 0..1000 {
            d.insert(2, b, page(2), false);
        }
        assert!((0..40).all(|b| !d.contains(1, b)));
    }

    #[test]
    fn protected_pages_go_least_recently_used_first() {
        let c = PageCache::with_shards(8 * 4096, 1);
        for b in 0..8 {
            c.insert(1, b, page(b as u8), true);
            c.get(1, b);
        }
        // Touch 0..4 again: 4..8 are now the least recently used.
        for b in 0..4 {
            c.get(1, b);
        }
        for b in 100..104 {
            c.insert(1, b, page(9), true);
            c.get(1, b);
        }
        for b in 0..4 {
            assert!(c.contains(1, b), "recently used page {b} evicted");
        }
        assert!((4..8).filter(|&b| c.contains(1, b)).count() < 4);
    }

    #[test]
    fn invalidation_is_exact_and_bumps_the_epoch() {
        let c = PageCache::new(1 << 20);
        for inum in [3, 4] {
            for b in 0..50 {
                c.insert(inum, b, page(b as u8), true);
            }
        }
        let e = c.epoch(3);
        c.invalidate(3, 10, 20);
        assert!(c.epoch(3) != e);
        for b in 0..50 {
            assert_eq!(c.contains(3, b), !(10..20).contains(&b), "block {b}");
            assert!(c.contains(4, b));
        }
        c.invalidate(3, 12, 13);
        c.invalidate(3, 30, u64::MAX);
        assert!((30..50).all(|b| !c.contains(3, b)));
        assert!((0..10).all(|b| c.contains(3, b)));
        // Replacing a page keeps one copy, the new one.
        c.insert(4, 0, page(0xee), false);
        assert_eq!(c.get(4, 0).map(|p| p[0]), Some(0xee));
        assert_eq!(c.stats().bytes, c.len() as u64 * 4096);
    }

    #[test]
    fn evicted_buffers_are_reused_only_when_nobody_holds_them() {
        let c = PageCache::with_shards(2 * 4096, 1);
        let held = page(1);
        c.insert(1, 0, held.clone(), true);
        c.insert(1, 1, page(2), true);
        // Evicts block 0 (still held by `held`) and block 1 (held by nobody).
        c.insert(1, 2, page(3), true);
        c.insert(1, 3, page(4), true);
        assert_eq!(lock_spare(&c), 1, "only the unreferenced buffer is kept");
        let p = c.page_from(&[7u8; 4096]);
        assert!(p.iter().all(|&b| b == 7));
        assert_eq!(lock_spare(&c), 0);
        assert!(held.iter().all(|&b| b == 1), "a held page is never reused");
    }

    fn lock_spare(c: &PageCache) -> usize {
        c.spare.lock().map(|s| s.len()).unwrap_or(0)
    }

    #[test]
    fn a_budget_smaller_than_a_page_keeps_nothing() {
        let c = PageCache::with_shards(4095, 1);
        c.insert(1, 1, page(1), true);
        assert!(c.is_empty());
        assert_eq!(c.stats().bytes, 0);
    }
}
