//! Trim: giving free space back to the device (FITRIM / `fstrim`) and, with the `discard`
//! mount option, each delta's freed extents as soon as the delta is durable. On an image
//! file a discard punches a hole (`FALLOC_FL_PUNCH_HOLE`), so the file's allocated size
//! shrinks back; on a block device it is BLKDISCARD (engine::dev).
//!
//! **Safety.** Only blocks that are free in the allocator are discarded, and only while the
//! state lock is held, so nothing can allocate them in between. A block free in the
//! allocator is referenced by nothing durable (a delta's frees stay in use until that delta
//! is durable; blocks the last unify's superblock still names stay in use until the next
//! unify is written), by no delta being flushed and by nothing in the open delta
//! (allocations take the bit at once). Recovery never reads a free block, so a crash in the
//! middle of a trim, or of a discard after a commit, loses nothing: the image then simply
//! holds zeros or old bytes in blocks nobody reads.
//!
//! **Bounded.** A trim works in batches of at most [`TRIM_RUNS_PER_BATCH`] free runs, each
//! batch under the state lock and the lock released in between, so other operations wait
//! for at most one batch; the whole call is bounded by the size of the range asked for.

use super::Filesystem;
use crate::events::{Level, report};
use crate::state::State;
use crate::{Errno, Result};

/// Free runs discarded per hold of the state lock.
pub const TRIM_RUNS_PER_BATCH: usize = 64;

impl Filesystem {
    /// FITRIM: commits the open delta, then discards the free runs of at least `min_bytes` within `start_bytes ..
    /// start_bytes + len_bytes` (whole blocks inside the range). Returns the bytes
    /// discarded. EROFS on a filesystem mounted read-only (its device is open read-only)
    /// or after a write failure.
    pub fn trim(&self, start_bytes: u64, len_bytes: u64, min_bytes: u64) -> Result<u64> {
        if self.mounted_read_only {
            return Err(Errno::ReadOnly.into());
        }
        let (mut pos, end, min_blocks, bs) = {
            let st = self.shared.lock();
            if st.unmounted {
                return Err(Errno::Io.into());
            }
            let bs = u64::from(st.bs());
            let end = start_bytes.saturating_add(len_bytes) / bs;
            (
                start_bytes.div_ceil(bs),
                end,
                min_bytes.div_ceil(bs).max(1),
                bs,
            )
        };
        // Blocks freed in the open delta become free once it is durable: commit it first, so
        // a trim right after a delete gives that space back too.
        self.sync_open_delta()?;
        let mut trimmed_bytes = 0u64;
        while pos < end {
            let st = self.shared.lock();
            if st.unmounted {
                return Err(Errno::Io.into());
            }
            if st.failed.is_some() {
                return Err(Errno::ReadOnly.into());
            }
            let (runs, next) = st
                .alloc
                .free_runs(pos, end, min_blocks, TRIM_RUNS_PER_BATCH);
            for (start, count) in runs {
                st.io.dev.discard(start * bs, count * bs)?;
                trimmed_bytes += count * bs;
            }
            drop(st);
            if next <= pos {
                break;
            }
            pos = next;
        }
        Ok(trimmed_bytes)
    }
}

/// The `discard` mount option: discards the ranges a durable delta just released. Runs
/// under the state lock right after [`crate::alloc::Allocator::release`]; a failure is
/// reported and otherwise ignored (the blocks stay free either way).
pub(crate) fn discard_released(st: &State, freed: &[(u64, u64)]) {
    let bs = u64::from(st.bs());
    for &(start, count) in freed {
        // Released blocks are free now; check anyway, a used one must keep its bytes.
        if (start..start + count).any(|b| st.alloc.is_used(b)) {
            continue;
        }
        if let Err(e) = st.io.dev.discard(start * bs, count * bs) {
            report(
                Level::Warning,
                &format!("discard of blocks {start}+{count} failed: {e}"),
            );
        }
    }
}
