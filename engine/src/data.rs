//! File data: dirty blocks of the open delta, extents on disk with per-block checksums,
//! holes, truncation, and (at commit) delayed allocation of contiguous runs.

use crate::dev::AlignedBuf;
use crate::format::btree::Key;
use crate::format::data_crc;
use crate::format::extent::{Extent, ExtentFlags, max_extent_blocks};
use crate::format::log::LogRecord;
use crate::state::State;

mod prealloc;
mod read;
mod write;
use crate::{Errno, Error, Result};
pub use prealloc::{clean_unwritten_blocks, count_blocks, preallocate, shift_blocks, split_at};
pub use read::{
    Done, Loaded, MAX_READAHEAD_BYTES, MAX_REQUEST_BYTES, READAHEAD_BATCH_BYTES, ReadMode,
    ReadPlan, ReadState, ReadStream, complete_read, end_readahead, load, plan_read, read,
};
pub use write::{DirtyPage, Prepared, PreparedCell, prepare, write, write_prepared};

/// The extent covering file block `fblock` of `inum`: (first file block, extent).
pub fn find_extent(st: &State, inum: u64, fblock: u64) -> Result<Option<(u64, Extent)>> {
    let Some((key, value)) = st
        .extents
        .prev(Key::new(inum, fblock), Key::new(inum, 0), &st.io)?
    else {
        return Ok(None);
    };
    let ext = decode_extent(st, key, &value)?;
    let end = extent_end(st, key, &ext)?;
    Ok((end > fblock).then_some((key.b, ext)))
}

/// Decodes the extent stored at `key`, naming its leaf if it is damaged.
fn decode_extent(st: &State, key: Key, value: &[u8]) -> Result<Extent> {
    Extent::decode(
        value,
        st.extents.leaf_block(key),
        st.bs(),
        st.sb.first_block..st.sb.block_count,
    )
}

/// The file block after the last one an extent covers; corruption if that overflows.
fn extent_end(st: &State, key: Key, ext: &Extent) -> Result<u64> {
    key.b.checked_add(ext.count()).ok_or_else(|| {
        Error::corrupt(
            st.extents.leaf_block(key),
            format!(
                "extent of inode {} at file block {} overflows",
                key.a, key.b
            ),
        )
    })
}

/// Reads file block `fblock` of `inum` as it is now (dirty data first, then in-flight
/// data, then the clean cache, then disk, holes as zeros). A checksum mismatch is EIO,
/// logged with the inode, offset and block, and counted.
pub fn read_block(st: &State, inum: u64, fblock: u64) -> Result<AlignedBuf> {
    if let Some(page) = st.pages.get(&(inum, fblock)) {
        return Ok(AlignedBuf::from_slice(page));
    }
    // Written by the delta being flushed: its bytes are here, and the device may not have
    // them yet (a read must not race the write).
    if let Some(page) = st.inflight.get(&(inum, fblock)) {
        return Ok(AlignedBuf::from_slice(page));
    }
    if let Some(page) = st.read.cache.get(inum, fblock) {
        return Ok(AlignedBuf::from_slice(&page));
    }
    let bs = st.bs();
    let Some((start, ext)) = find_extent(st, inum, fblock)? else {
        return Ok(AlignedBuf::zeroed(bs as usize));
    };
    if ext.flags.contains(ExtentFlags::UNWRITTEN) {
        return Ok(AlignedBuf::zeroed(bs as usize));
    }
    let i = (fblock - start) as usize;
    let phys = ext.phys + i as u64;
    let buf = st.io.read(phys)?;
    let want = ext.crcs.get(i).copied().unwrap_or(0);
    let got = data_crc(&buf);
    if got != want {
        return Err(checksum_error(st, inum, fblock, phys, want, got));
    }
    Ok(buf)
}

/// Counts and logs a data checksum mismatch; the error to return (EIO).
fn checksum_error(st: &State, inum: u64, fblock: u64, phys: u64, want: u32, got: u32) -> Error {
    st.read
        .checksum_errors
        .fetch_add(1, crate::sync::atomic::Ordering::Relaxed);
    crate::events::report(
        crate::events::Level::Error,
        &format!(
            "data checksum mismatch: inode {inum}, offset {}, block {phys}: stored {want:#010x}, read {got:#010x}",
            fblock * u64::from(st.bs())
        ),
    );
    Errno::Io.into()
}

/// The extent covering a file block, or the hole around it, as found by one tree lookup:
/// file blocks `[from, to)`.
#[derive(Debug)]
pub(crate) struct Span {
    pub from: u64,
    pub to: u64,
    /// First file block of the extent and the extent; None in a hole.
    pub ext: Option<(u64, Extent)>,
}

/// The extent covering `fblock`, or the hole around it up to the next extent (at least
/// `fblock` itself, so a caller walking spans always moves on).
pub(crate) fn span_at(st: &State, inum: u64, fblock: u64) -> Result<Span> {
    if let Some((start, ext)) = find_extent(st, inum, fblock)? {
        let to = extent_end(st, Key::new(inum, start), &ext)?;
        return Ok(Span {
            from: start,
            to,
            ext: Some((start, ext)),
        });
    }
    let next = st
        .extents
        .next(Key::new(inum, fblock), Key::new(inum, u64::MAX), &st.io)?;
    Ok(Span {
        from: fblock,
        to: next.map_or(u64::MAX, |(k, _)| k.b.max(fblock + 1)),
        ext: None,
    })
}

/// What backs file block `fblock` of `inum` on disk: the extent covering it (its first file
/// block and the extent), or a hole; and the file block where that answer ends (the
/// extent's end, or the next extent's start; `u64::MAX` past the last extent).
pub fn extent_or_hole(st: &State, inum: u64, fblock: u64) -> Result<(u64, Option<(u64, Extent)>)> {
    let span = span_at(st, inum, fblock)?;
    Ok((span.to, span.ext))
}

/// Blocks in `[offset, offset + len)` of `inum` not yet dirty: what a write must reserve.
pub fn new_dirty_blocks(st: &State, inum: u64, offset: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    let bs = u64::from(st.bs());
    let (first, last) = (offset / bs, (offset + len - 1) / bs);
    let already = st.pages.range((inum, first)..=(inum, last)).count() as u64;
    (last - first + 1) - already
}

/// Removes the entries for file blocks `[from, to)` of `inum` from a page map.
fn drop_range<V>(
    map: &mut std::collections::BTreeMap<(u64, u64), V>,
    inum: u64,
    from: u64,
    to: u64,
) {
    let keys: Vec<(u64, u64)> = map
        .range((inum, from)..(inum, to))
        .map(|(k, _)| *k)
        .collect();
    for k in keys {
        map.remove(&k);
    }
}

/// Forgets the cached, dirty and in-flight pages of file blocks `[from, to)` of `inum` (and
/// their delayed allocations); the extents stay.
pub fn discard_pages(st: &mut State, inum: u64, from: u64, to: u64) {
    st.read.cache.invalidate(inum, from, to);
    drop_range(&mut st.pages, inum, from, to);
    let delalloc: Vec<(u64, u64)> = st
        .delalloc
        .range((inum, from)..(inum, to))
        .copied()
        .collect();
    for k in delalloc {
        st.delalloc.remove(&k);
    }
    // Truncate never waits for writeback: it drops the in-flight copies (the device keeps
    // its own references until the writes complete).
    drop_range(&mut st.inflight, inum, from, to);
}

/// Removes file blocks `[from, to)` of `inum`: drops dirty blocks, trims and splits
/// extents, frees their blocks once durable. Returns the number of disk blocks freed.
pub fn punch(st: &mut State, inum: u64, from: u64, to: u64) -> Result<u64> {
    discard_pages(st, inum, from, to);
    let mut freed = 0;
    let mut at = from;
    // Start with an extent that began before `from` and reaches into the range.
    if let Some((start, _)) = find_extent(st, inum, from)? {
        at = start;
    }
    while let Some((key, value)) =
        st.extents
            .next(Key::new(inum, at), Key::new(inum, to), &st.io)?
    {
        let ext = decode_extent(st, key, &value)?;
        let (start, end) = (key.b, extent_end(st, key, &ext)?);
        at = end;
        if end <= from {
            continue;
        }
        st.extents.remove(key, &st.io)?;
        let cut_from = from.max(start);
        let cut_to = to.min(end);
        if start < cut_from {
            let left = slice(&ext, 0, cut_from - start);
            st.extents
                .insert(Key::new(inum, start), left.encode(st.bs()), &st.io)?;
        }
        if cut_to < end {
            let right = slice(&ext, cut_to - start, end - start);
            st.extents
                .insert(Key::new(inum, cut_to), right.encode(st.bs()), &st.io)?;
        }
        let n = cut_to - cut_from;
        st.alloc.free_later(ext.phys + (cut_from - start), n);
        freed += n;
    }
    Ok(freed)
}

/// Blocks `[a, b)` (relative to the extent start) of an extent.
fn slice(ext: &Extent, a: u64, b: u64) -> Extent {
    Extent {
        phys: ext.phys + a,
        flags: ext.flags,
        crcs: ext.crcs[a as usize..b as usize].to_vec(),
    }
}

/// Commit: writes the dirty blocks of every file to newly allocated, contiguous blocks,
/// replacing the extents they cover. Returns the writes and the allocations to log.
pub fn flush_pages(
    st: &mut State,
    writes: &mut crate::delta::DeltaWrites,
    records: &mut Vec<LogRecord>,
) -> Result<()> {
    let pages = std::mem::take(&mut st.pages);
    // Every dirty page gets its blocks now and is counted in its inode's `blocks`.
    st.delalloc.clear();
    let max_run = u64::from(max_extent_blocks(st.bs()));
    let mut iter = pages.into_iter().peekable();
    while let Some(((inum, first), page)) = iter.next() {
        // Gather the run of consecutive dirty blocks of this inode starting at `first`.
        let mut run = vec![page];
        while let Some(((i, b), _)) = iter.peek() {
            if *i != inum || *b != first + run.len() as u64 || run.len() as u64 >= max_run {
                break;
            }
            if let Some((_, p)) = iter.next() {
                run.push(p);
            }
        }
        write_run(st, inum, first, run, writes, records)?;
    }
    Ok(())
}

/// Writes one run of consecutive dirty blocks. Blocks that land on an unwritten extent are
/// written in place and that part of the extent becomes written, in this delta
/// (data/prealloc.rs says why that is crash safe); the others go to new blocks.
fn write_run(
    st: &mut State,
    inum: u64,
    first: u64,
    run: Vec<DirtyPage>,
    writes: &mut crate::delta::DeltaWrites,
    records: &mut Vec<LogRecord>,
) -> Result<()> {
    let mut inode = crate::inode::get(st, inum)?;
    let end = first + run.len() as u64;
    let mut pages = run.into_iter();
    let mut cow: Vec<DirtyPage> = Vec::new();
    let mut cow_first = first;
    let mut at = first;
    while at < end {
        let (to, ext) = extent_or_hole(st, inum, at)?;
        let to = to.min(end);
        let n = (to - at) as usize;
        match ext {
            Some((start, ext)) if ext.flags.contains(ExtentFlags::UNWRITTEN) => {
                if !cow.is_empty() {
                    write_cow(
                        st,
                        inum,
                        cow_first,
                        std::mem::take(&mut cow),
                        writes,
                        records,
                        &mut inode,
                    )?;
                }
                let chunk: Vec<DirtyPage> = pages.by_ref().take(n).collect();
                prealloc::convert(st, inum, at, chunk, start, &ext, writes)?;
                cow_first = to;
            }
            _ => cow.extend(pages.by_ref().take(n)),
        }
        at = to;
    }
    if !cow.is_empty() {
        write_cow(st, inum, cow_first, cow, writes, records, &mut inode)?;
    }
    crate::inode::put(st, inum, &inode)
}

/// Writes `run` (dirty blocks from file block `first`, none on an unwritten extent) to newly
/// allocated blocks, replacing the extents that covered them.
fn write_cow(
    st: &mut State,
    inum: u64,
    first: u64,
    run: Vec<DirtyPage>,
    writes: &mut crate::delta::DeltaWrites,
    records: &mut Vec<LogRecord>,
    inode: &mut crate::format::inode::Inode,
) -> Result<()> {
    let freed = punch(st, inum, first, first + run.len() as u64)?;
    inode.blocks = inode.blocks.saturating_sub(freed);
    // Goal: right after the extent that ends where this run begins, to keep files contiguous.
    let goal = match first.checked_sub(1) {
        Some(prev) => find_extent(st, inum, prev)?.map(|(s, e)| e.phys + (prev - s) + 1),
        None => None,
    };
    let total = run.len();
    let mut pages = run.into_iter();
    let mut done = 0usize;
    let mut goal = goal;
    while done < total {
        let (phys, n) = st.alloc.alloc_run(goal, (total - done) as u64)?;
        records.push(LogRecord::Alloc {
            start: phys,
            count: n as u32,
        });
        let mut crcs = Vec::with_capacity(n as usize);
        for (i, page) in pages.by_ref().take(n as usize).enumerate() {
            // The one CRC of this block (computed when the page was built, unless a partial
            // write changed it under the lock): the extent keeps it and the log lists it.
            // The buffer is the page itself: the device writes it without another copy.
            let (page, crc) = page.into_write(st);
            crcs.push(crc);
            // Readable (and forkable) until the flush completes; the write holds its own Arc.
            st.inflight
                .insert((inum, first + done as u64 + i as u64), page.clone());
            writes.data(phys + i as u64, page, crc);
        }
        let ext = Extent {
            phys,
            flags: ExtentFlags::empty(),
            crcs,
        };
        st.extents.insert(
            Key::new(inum, first + done as u64),
            ext.encode(st.bs()),
            &st.io,
        )?;
        inode.blocks += n;
        done += n as usize;
        goal = Some(phys + n);
    }
    if done != total {
        return Err(Error::invalid("short allocation"));
    }
    Ok(())
}
