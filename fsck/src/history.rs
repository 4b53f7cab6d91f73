//! Log blocks of a lost newer history.
//!
//! Delta numbers are never reused (FORMAT.md §6): recovery tells a damaged delta from a
//! torn one by finding delta D+1 at the block allocated for it, which only works when no
//! block on the device already carries a number the next deltas will use. A crash never
//! leaves such blocks past the places recovery looks (`stale_delta_max_ahead`). Damage can:
//! when the newest superblock slot is damaged, the older slot wins and the log the newer
//! history wrote after it lies anywhere in what is now free space. A mount would then
//! number its deltas from the older slot's log, and a later recovery could take one of
//! those old blocks for the witness of a delta it is missing (a false "damaged, not torn")
//! or worse. So when a slot is damaged, fsck reads every block of the device once, in
//! batches, and reports the newest log block of this filesystem whose number the next
//! deltas would reuse; the repair numbers its deltas past it.

use tuxfs_engine::format::Kind;
use tuxfs_engine::format::header::{peek_delta, peek_kind};
use tuxfs_engine::format::log::LogBlock;
use tuxfs_engine::io::BlockReader;

use crate::salvage::SCAN_BATCH_BYTES;

/// The newest log block of filesystem `fs_id` on the device that verifies and carries a
/// delta number at or above `floor`, as (delta, block). Blocks that cannot be read are
/// skipped (the scan looks for what exists; an unreadable block is reported elsewhere if
/// it matters). Reads every block once.
pub(crate) fn newest_log_block(
    reader: &BlockReader<'_>,
    fs_id: u64,
    first_block: u64,
    floor: u64,
    blocks_read: &mut u64,
) -> Option<(u64, u64)> {
    let batch = (SCAN_BATCH_BYTES / reader.block_size as usize).max(1) as u64;
    let mut newest: Option<(u64, u64)> = None;
    let mut start = first_block;
    while start < reader.block_count {
        let end = (start + batch).min(reader.block_count);
        let blocks: Vec<u64> = (start..end).collect();
        *blocks_read += blocks.len() as u64;
        let bufs: Vec<_> = match reader.read_many(&blocks) {
            Ok(bufs) => bufs.into_iter().map(Some).collect(),
            Err(_) => blocks.iter().map(|&b| reader.read(b).ok()).collect(),
        };
        for (&block, buf) in blocks.iter().zip(bufs) {
            let Some(buf) = buf else { continue };
            if peek_kind(&buf) != Some(Kind::Log) {
                continue;
            }
            let Some(delta) = peek_delta(&buf) else {
                continue;
            };
            if delta < floor || newest.is_some_and(|(d, _)| d >= delta) {
                continue;
            }
            if LogBlock::decode(&buf, block, delta, fs_id).is_ok() {
                newest = Some((delta, block));
            }
        }
        start = end;
    }
    newest
}
