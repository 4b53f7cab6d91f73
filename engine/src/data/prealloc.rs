//! Unwritten extents: preallocation (fallocate), the in-place conversion a commit does when
//! dirty blocks land on unwritten blocks, and shifting a file's blocks (collapse and insert
//! range).
//!
//! **Invariant (crash safety).** The blocks of an unwritten extent were free, or unwritten
//! in the same file, in every durable state since they were last written. Unwritten extents
//! are made only by [`preallocate`], from freshly allocated blocks (a block freed by delta D
//! is not allocatable before D is durable), and a written extent never becomes unwritten
//! (zero range reallocates instead). So a commit may write data into an unwritten block in
//! place: no durable state reads that block's bytes, because until the delta that converts
//! the extent is durable, every durable tree still reads the block as zeros (or does not
//! reference it at all). Stale contents of a reused block are never visible.

use super::{decode_extent, extent_end, extent_or_hole, find_extent, slice};
use crate::format::btree::Key;
use crate::format::extent::{Extent, ExtentFlags, max_extent_blocks};
use crate::format::log::LogRecord;
use crate::state::State;
use crate::{Error, Result};

/// Allocates unwritten extents over every hole in file blocks `[from, to)` of `inum`
/// (blocks some extent already backs stay as they are). Returns the blocks allocated; the
/// caller reserved them (and adds them to the inode's `blocks`). Dirty blocks of the open
/// delta in those holes stop being delayed allocations: the commit writes them in place.
pub fn preallocate(st: &mut State, inum: u64, from: u64, to: u64) -> Result<u64> {
    let max = u64::from(max_extent_blocks(st.bs()));
    let mut added = 0;
    let mut at = from;
    while at < to {
        let (end, ext) = extent_or_hole(st, inum, at)?;
        let end = end.min(to);
        if ext.is_some() {
            at = end;
            continue;
        }
        // Goal: right after the block before the hole, to keep the file contiguous.
        let mut goal = match at.checked_sub(1) {
            Some(prev) => find_extent(st, inum, prev)?.map(|(s, e)| e.phys + (prev - s) + 1),
            None => None,
        };
        while at < end {
            let (phys, n) = st.alloc.alloc_run(goal, (end - at).min(max))?;
            st.records.push(LogRecord::Alloc {
                start: phys,
                count: n as u32,
            });
            let ext = Extent {
                phys,
                flags: ExtentFlags::UNWRITTEN,
                crcs: vec![0; n as usize],
            };
            st.extents
                .insert(Key::new(inum, at), ext.encode(st.bs()), &st.io)?;
            let backed: Vec<(u64, u64)> = st
                .delalloc
                .range((inum, at)..(inum, at + n))
                .copied()
                .collect();
            for k in backed {
                st.delalloc.remove(&k);
            }
            added += n;
            at += n;
            goal = Some(phys + n);
        }
    }
    Ok(added)
}

/// Blocks of `[from, to)` of `inum` whose extent (None for a hole) satisfies `counted`.
pub fn count_blocks(
    st: &mut State,
    inum: u64,
    from: u64,
    to: u64,
    counted: impl Fn(Option<&Extent>) -> bool,
) -> Result<u64> {
    let mut count = 0;
    let mut at = from;
    while at < to {
        let (end, ext) = extent_or_hole(st, inum, at)?;
        let end = end.min(to);
        if counted(ext.as_ref().map(|(_, e)| e)) {
            count += end - at;
        }
        at = end;
    }
    Ok(count)
}

/// Blocks of `[from, to)` of `inum` that an unwritten extent backs and no dirty page covers:
/// a write there needs no new block (the commit writes it in place).
pub fn clean_unwritten_blocks(st: &mut State, inum: u64, from: u64, to: u64) -> Result<u64> {
    let unwritten = count_blocks(st, inum, from, to, |ext| {
        ext.is_some_and(|e| e.flags.contains(ExtentFlags::UNWRITTEN))
    })?;
    if unwritten == 0 {
        return Ok(0);
    }
    // Dirty pages on unwritten blocks: the write reserved nothing new for them either.
    let mut dirty_on_unwritten = 0;
    let dirty: Vec<u64> = st
        .pages
        .range((inum, from)..(inum, to))
        .map(|(k, _)| k.1)
        .collect();
    for b in dirty {
        if find_extent(st, inum, b)?.is_some_and(|(_, e)| e.flags.contains(ExtentFlags::UNWRITTEN))
        {
            dirty_on_unwritten += 1;
        }
    }
    Ok(unwritten - dirty_on_unwritten)
}

/// Commit: writes `pages` (file blocks from `fblock`) into the unwritten extent `ext` that
/// starts at file block `start` and covers them, in place, and marks that part written
/// (splitting the extent). Its blocks stay the file's, so `blocks` does not change.
pub(super) fn convert(
    st: &mut State,
    inum: u64,
    fblock: u64,
    pages: Vec<super::DirtyPage>,
    start: u64,
    ext: &Extent,
    writes: &mut crate::delta::DeltaWrites,
) -> Result<()> {
    let end = extent_end(st, Key::new(inum, start), ext)?;
    let n = pages.len() as u64;
    if fblock < start || fblock + n > end {
        return Err(Error::invalid(format!(
            "conversion of blocks {fblock}+{n} outside the extent at {start}"
        )));
    }
    let (a, b) = (fblock - start, fblock - start + n);
    let phys = ext.phys + a;
    let mut crcs = Vec::with_capacity(pages.len());
    for (i, page) in pages.into_iter().enumerate() {
        // The page's own buffer and CRC (engine::data::write), written in place.
        let (page, crc) = page.into_write(st);
        crcs.push(crc);
        // Readable (and forkable) until the flush completes, like any written page.
        st.inflight.insert((inum, fblock + i as u64), page.clone());
        writes.data(phys + i as u64, page, crc);
    }
    st.extents.remove(Key::new(inum, start), &st.io)?;
    if a > 0 {
        let left = slice(ext, 0, a);
        st.extents
            .insert(Key::new(inum, start), left.encode(st.bs()), &st.io)?;
    }
    let written = Extent {
        phys,
        flags: ExtentFlags::empty(),
        crcs,
    };
    st.extents
        .insert(Key::new(inum, fblock), written.encode(st.bs()), &st.io)?;
    if end - start > b {
        let right = slice(ext, b, end - start);
        st.extents
            .insert(Key::new(inum, start + b), right.encode(st.bs()), &st.io)?;
    }
    Ok(())
}

/// Splits the extent covering file block `fblock` of `inum` so that one starts there.
pub fn split_at(st: &mut State, inum: u64, fblock: u64) -> Result<()> {
    let Some((start, ext)) = find_extent(st, inum, fblock)? else {
        return Ok(());
    };
    if start == fblock {
        return Ok(());
    }
    let end = extent_end(st, Key::new(inum, start), &ext)?;
    let (left, right) = (
        slice(&ext, 0, fblock - start),
        slice(&ext, fblock - start, end - start),
    );
    st.extents.remove(Key::new(inum, start), &st.io)?;
    st.extents
        .insert(Key::new(inum, start), left.encode(st.bs()), &st.io)?;
    st.extents
        .insert(Key::new(inum, fblock), right.encode(st.bs()), &st.io)?;
    Ok(())
}

/// Moves every block of `inum` at file block `from` or later to `from - by` (`up` false,
/// collapse: the caller emptied `[from - by, from)`) or to `from + by` (`up` true, insert:
/// the caller split the extent covering `from`). Extents, dirty pages, delayed allocations
/// and in-flight pages all move; the clean cache of the file from there on is dropped.
pub fn shift_blocks(st: &mut State, inum: u64, from: u64, by: u64, up: bool) -> Result<()> {
    let moved = |b: u64| if up { b + by } else { b - by };
    // Every extent from `from` on: removed first, then inserted at the new keys, so no
    // key ever collides with one not yet moved.
    let mut extents = Vec::new();
    let mut at = from;
    while let Some((key, value)) =
        st.extents
            .next(Key::new(inum, at), Key::new(inum, u64::MAX), &st.io)?
    {
        let ext = decode_extent(st, key, &value)?;
        at = extent_end(st, key, &ext)?;
        if up && at.checked_add(by).is_none() {
            return Err(Error::invalid("insert range past the largest file block"));
        }
        extents.push((key, value));
    }
    for (key, _) in &extents {
        st.extents.remove(*key, &st.io)?;
    }
    for (key, value) in extents {
        st.extents
            .insert(Key::new(inum, moved(key.b)), value, &st.io)?;
    }
    let low = if up { from } else { from - by };
    st.read.cache.invalidate(inum, low, u64::MAX);
    rekey(&mut st.pages, inum, from, &moved);
    rekey(&mut st.inflight, inum, from, &moved);
    let mut tail = st.delalloc.split_off(&(inum, from));
    let mut rest = tail.split_off(&(inum.saturating_add(1), 0));
    st.delalloc
        .extend(tail.into_iter().map(|(i, b)| (i, moved(b))));
    st.delalloc.append(&mut rest);
    Ok(())
}

/// Moves the entries of `inum` at file block `from` or later of a page map to `moved(b)`.
fn rekey<V>(
    map: &mut std::collections::BTreeMap<(u64, u64), V>,
    inum: u64,
    from: u64,
    moved: &impl Fn(u64) -> u64,
) {
    let mut tail = map.split_off(&(inum, from));
    let mut rest = tail.split_off(&(inum.saturating_add(1), 0));
    map.extend(tail.into_iter().map(|((i, b), v)| ((i, moved(b)), v)));
    map.append(&mut rest);
}
