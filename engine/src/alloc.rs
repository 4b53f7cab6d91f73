//! Free space: the in-memory bitmap, allocation goals that keep files contiguous,
//! reservations that decide ENOSPC up front, and frees deferred until durable.
//!
//! **Invariants.**
//! - A block freed by delta D is not handed out again until D is durable: frees go to
//!   `deferred`, are taken with the delta when it closes, and are applied by
//!   [`Allocator::release`] after its flush. So no block reachable from the last durable
//!   state is ever overwritten.
//! - `free + used == block_count - first_block` for the blocks the allocator manages.
//! - Reservations never exceed what is free beyond the metadata reserve: a write the
//!   frontend accepted always finds its blocks at commit.

use std::collections::BTreeSet;

use crate::format::bitmap;
use crate::{Errno, Error, Result};

/// The free-space map in memory.
#[derive(Debug)]
pub struct Allocator {
    words: Vec<u64>,
    block_count: u64,
    first_block: u64,
    free: u64,
    /// Where the next search for a free block starts when no goal is given.
    cursor: u64,
    /// Blocks freed by the delta being built; free once it is durable.
    deferred: Vec<(u64, u64)>,
    /// Bitmap chunks changed since the last unify.
    dirty_chunks: BTreeSet<u64>,
    bits_per_chunk: u64,
    /// Blocks promised to accepted writes that are not yet allocated.
    reserved: u64,
    /// Blocks kept back for commits, unify and deletes on a full filesystem.
    pub metadata_reserve: u64,
    /// The `discard` mount option: a delta's frees are discarded on the device when they
    /// are released (see `fs::trim::discard_released`).
    pub discard_freed: bool,
}

impl Allocator {
    /// An allocator where every block is free (callers then mark what is used).
    pub fn new(block_count: u64, first_block: u64, block_size: u32) -> Self {
        let mut a = Allocator {
            words: vec![0; block_count.div_ceil(64) as usize],
            block_count,
            first_block,
            free: block_count - first_block,
            cursor: first_block,
            deferred: Vec::new(),
            dirty_chunks: BTreeSet::new(),
            bits_per_chunk: bitmap::bits_per_chunk(block_size),
            reserved: 0,
            metadata_reserve: (block_count / 64).max(32),
            discard_freed: false,
        };
        for b in 0..first_block {
            a.set(b, true);
        }
        a.dirty_chunks.clear();
        a
    }

    /// Whether `block` is in use.
    pub fn is_used(&self, block: u64) -> bool {
        self.words
            .get((block / 64) as usize)
            .is_some_and(|w| w & (1 << (block % 64)) != 0)
    }

    fn set(&mut self, block: u64, used: bool) {
        if let Some(w) = self.words.get_mut((block / 64) as usize) {
            if used {
                *w |= 1 << (block % 64);
            } else {
                *w &= !(1 << (block % 64));
            }
            self.dirty_chunks.insert(block / self.bits_per_chunk);
        }
    }

    /// Marks a range used (mount, replay). Errors if a block is outside the filesystem.
    pub fn mark_used(&mut self, start: u64, count: u64) -> Result<()> {
        self.check_range(start, count)?;
        for b in start..start + count {
            if !self.is_used(b) {
                self.set(b, true);
                self.free -= 1;
            }
        }
        Ok(())
    }

    /// Marks a range free now (replay of a durable delta's frees).
    pub fn mark_free(&mut self, start: u64, count: u64) -> Result<()> {
        self.check_range(start, count)?;
        for b in start..start + count {
            if self.is_used(b) {
                self.set(b, false);
                self.free += 1;
            }
        }
        Ok(())
    }

    fn check_range(&self, start: u64, count: u64) -> Result<()> {
        let end = start.checked_add(count);
        if start < self.first_block || end.is_none_or(|e| e > self.block_count) {
            return Err(Error::corrupt(
                start,
                format!("block range {start}+{count} outside the filesystem"),
            ));
        }
        Ok(())
    }

    /// Loads one bitmap chunk's bits (mount).
    pub fn load_chunk(&mut self, chunk: u64, bits: &[u8]) {
        let first = chunk * self.bits_per_chunk;
        let end = self.block_count.min(first + self.bits_per_chunk);
        for b in first.max(self.first_block)..end {
            if bitmap::bit(bits, b - first) == Some(true) && !self.is_used(b) {
                self.set(b, true);
                self.free -= 1;
            }
        }
    }

    /// The bits of one chunk as the bitmap block stores them, with the `pending` blocks
    /// (freed by the unify being written) shown free. Whole words are copied (a unify plans
    /// this under the state lock, for every chunk that changed).
    pub fn chunk_bits(&self, chunk: u64, payload_len: usize, pending: &BTreeSet<u64>) -> Vec<u8> {
        let first = chunk * self.bits_per_chunk;
        if !first.is_multiple_of(64) {
            return self.chunk_bits_by_block(chunk, payload_len, pending);
        }
        let mut bits = vec![0u8; payload_len];
        let end = self.block_count.min(first + self.bits_per_chunk);
        let mut b = first;
        while b < end {
            let word = self.words.get((b / 64) as usize).copied().unwrap_or(0);
            let n = (end - b).min(64);
            let word = if n < 64 {
                word & ((1u64 << n) - 1)
            } else {
                word
            };
            let at = ((b - first) / 8) as usize;
            for (i, byte) in word.to_le_bytes().into_iter().enumerate() {
                if let Some(slot) = bits.get_mut(at + i) {
                    *slot = byte;
                }
            }
            b += 64;
        }
        for &p in pending.range(first..end) {
            bitmap::set_bit(&mut bits, p - first, false);
        }
        bits
    }

    /// [`Allocator::chunk_bits`] one block at a time (chunks that do not start on a word).
    fn chunk_bits_by_block(
        &self,
        chunk: u64,
        payload_len: usize,
        pending: &BTreeSet<u64>,
    ) -> Vec<u8> {
        let mut bits = vec![0u8; payload_len];
        let first = chunk * self.bits_per_chunk;
        let end = self.block_count.min(first + self.bits_per_chunk);
        for b in first..end {
            if self.is_used(b) && !pending.contains(&b) {
                bitmap::set_bit(&mut bits, b - first, true);
            }
        }
        bits
    }

    /// Chunks changed since the last unify; clears the set.
    pub fn take_dirty_chunks(&mut self) -> BTreeSet<u64> {
        std::mem::take(&mut self.dirty_chunks)
    }

    /// Free blocks (not counting deferred frees).
    pub fn free_blocks(&self) -> u64 {
        self.free
    }

    /// Free blocks a writer may still reserve.
    pub fn available(&self) -> u64 {
        self.free
            .saturating_sub(self.reserved + self.metadata_reserve)
    }

    /// Blocks reserved by accepted writes and not allocated yet.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Reserves `n` blocks for an accepted write; ENOSPC when they are not there.
    pub fn reserve(&mut self, n: u64) -> Result<()> {
        if n > self.available() {
            return Err(Errno::NoSpace.into());
        }
        self.reserved += n;
        Ok(())
    }

    /// Gives reservations back (at commit, when the real allocations replace them).
    pub fn unreserve(&mut self, n: u64) {
        self.reserved = self.reserved.saturating_sub(n);
    }

    /// Allocates up to `max` contiguous blocks, searching from `goal` (or the cursor) and
    /// wrapping around. Returns (start, count) with count >= 1.
    pub fn alloc_run(&mut self, goal: Option<u64>, max: u64) -> Result<(u64, u64)> {
        if self.free == 0 || max == 0 {
            return Err(Errno::NoSpace.into());
        }
        let start_at = goal
            .filter(|g| *g >= self.first_block && *g < self.block_count)
            .unwrap_or(self.cursor);
        let start = self
            .find_free(start_at)
            .or_else(|| self.find_free(self.first_block))
            .ok_or(Errno::NoSpace)?;
        let mut count = 1;
        while count < max && start + count < self.block_count && !self.is_used(start + count) {
            count += 1;
        }
        for b in start..start + count {
            self.set(b, true);
        }
        self.free -= count;
        self.cursor = start + count;
        Ok((start, count))
    }

    /// Allocates one block near `goal`.
    pub fn alloc_one(&mut self, goal: Option<u64>) -> Result<u64> {
        self.alloc_run(goal, 1).map(|(b, _)| b)
    }

    /// The first free block at or after `from`, skipping whole used words.
    fn find_free(&self, from: u64) -> Option<u64> {
        let mut b = from.max(self.first_block);
        while b < self.block_count {
            let w = self
                .words
                .get((b / 64) as usize)
                .copied()
                .unwrap_or(u64::MAX);
            if w == u64::MAX && b.is_multiple_of(64) {
                b += 64;
                continue;
            }
            if w & (1 << (b % 64)) == 0 {
                return Some(b);
            }
            b += 1;
        }
        None
    }

    /// Free runs of at least `min` blocks within `from..end`, in order, at most `max_runs`
    /// of them, and where to resume the scan (`end` when it got there). A free block here is
    /// referenced by nothing durable, nothing being flushed and nothing in the open delta
    /// (frees wait in `deferred` until durable; allocations set the bit at once), so its
    /// content may be discarded for as long as the caller holds the allocator.
    pub fn free_runs(
        &self,
        from: u64,
        end: u64,
        min: u64,
        max_runs: usize,
    ) -> (Vec<(u64, u64)>, u64) {
        let end = end.min(self.block_count);
        let mut runs = Vec::new();
        let mut b = from.max(self.first_block);
        while b < end && runs.len() < max_runs {
            let Some(start) = self.find_free(b).filter(|s| *s < end) else {
                return (runs, end);
            };
            let mut stop = start + 1;
            while stop < end && !self.is_used(stop) {
                stop += 1;
            }
            if stop - start >= min.max(1) {
                runs.push((start, stop - start));
            }
            b = stop;
        }
        (runs, b.min(end))
    }

    /// Frees a range once the delta being built is durable.
    pub fn free_later(&mut self, start: u64, count: u64) {
        if count > 0 {
            self.deferred.push((start, count));
        }
    }

    /// The deferred frees of the delta being built, for its log records.
    pub fn deferred(&self) -> &[(u64, u64)] {
        &self.deferred
    }

    /// Frees the ranges a delta released, once that delta is durable (they came from
    /// [`Allocator::take_deferred`] when the delta closed).
    pub fn release(&mut self, freed: Vec<(u64, u64)>) -> Result<()> {
        for (start, count) in freed {
            self.mark_free(start, count)?;
        }
        Ok(())
    }

    /// Takes the deferred frees of the delta being closed: they stay in use until
    /// [`Allocator::release`] after its flush (frees made later wait for the next delta).
    pub fn take_deferred(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.deferred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_goals_deferral_and_reservations() {
        let mut a = Allocator::new(1000, 2, 512);
        assert_eq!(a.free_blocks(), 998);
        let (s, n) = a.alloc_run(Some(100), 50).expect("run");
        assert_eq!((s, n), (100, 50));
        let (s2, _) = a.alloc_run(Some(120), 10).expect("run");
        assert_eq!(s2, 150, "continues after the used range");
        a.free_later(100, 50);
        assert!(a.is_used(100), "deferred frees stay used");
        let freed = a.take_deferred();
        a.release(freed).expect("release");
        assert!(!a.is_used(100));
        assert_eq!(a.free_blocks(), 998 - 10);
        let avail = a.available();
        assert!(a.reserve(avail).is_ok());
        assert!(a.reserve(1).is_err(), "ENOSPC past the reserve");
        a.unreserve(avail);
        assert!(a.mark_used(999, 2).is_err(), "past the end");
    }

    #[test]
    fn free_runs_skip_used_and_short_runs_and_resume() {
        let mut a = Allocator::new(1000, 2, 512);
        a.mark_used(2, 98).expect("used");
        a.mark_used(103, 97).expect("used");
        a.mark_used(210, 790).expect("used");
        // Free: 100..103 (3 blocks), 200..210 (10 blocks).
        assert_eq!(
            a.free_runs(0, 1000, 1, 8),
            (vec![(100, 3), (200, 10)], 1000)
        );
        assert_eq!(a.free_runs(0, 1000, 4, 8), (vec![(200, 10)], 1000));
        assert_eq!(a.free_runs(0, 1000, 1, 1), (vec![(100, 3)], 103));
        assert_eq!(a.free_runs(103, 1000, 1, 1), (vec![(200, 10)], 210));
        assert_eq!(a.free_runs(205, 208, 1, 8), (vec![(205, 3)], 208));
        a.alloc_run(Some(200), 10).expect("alloc");
        assert_eq!(a.free_runs(150, 1000, 1, 8), (vec![], 1000));
        a.free_later(200, 10);
        assert_eq!(
            a.free_runs(150, 1000, 1, 8).0,
            vec![],
            "deferred frees stay"
        );
    }

    /// Word-wise chunk bits equal the block-by-block ones, partial last chunk and pending
    /// blocks included (seeded; the seed is printed on failure).
    #[test]
    fn chunk_bits_by_word_match_by_block() {
        let seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut x = seed;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for block_size in [512u32, 4096] {
            let per = bitmap::bits_per_chunk(block_size);
            let count = per * 2 + 77;
            let mut a = Allocator::new(count, 2, block_size);
            for _ in 0..200 {
                let start = 2 + rnd() % (count - 2);
                let n = 1 + rnd() % 90;
                let _ = a.mark_used(start, n.min(count - start));
            }
            let pending: BTreeSet<u64> = (0..300).map(|_| rnd() % count).collect();
            let payload = (per / 8) as usize;
            for chunk in 0..3 {
                assert!(
                    a.chunk_bits(chunk, payload, &pending)
                        == a.chunk_bits_by_block(chunk, payload, &pending),
                    "chunk {chunk} at block size {block_size} differs (seed {seed:#x})"
                );
            }
        }
    }

    #[test]
    fn exhaustion_is_enospc() {
        let mut a = Allocator::new(70, 2, 512);
        let mut got = 0;
        while let Ok((_, n)) = a.alloc_run(None, 7) {
            got += n;
        }
        assert_eq!(got, 68);
        assert_eq!(
            a.alloc_one(None).map_err(|e| e.errno()),
            Err(Errno::NoSpace)
        );
    }
}
