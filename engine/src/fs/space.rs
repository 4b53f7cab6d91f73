//! Space management: `fallocate` in every mode Linux defines for it, over unwritten extents
//! (engine/src/data/prealloc.rs), and `lseek` SEEK_DATA / SEEK_HOLE. The errors are ext4's
//! (and the VFS's, which checks before a filesystem sees the call): see docs/SEMANTICS.md.
//!
//! Every mode reserves the blocks it may need before it changes anything, so ENOSPC leaves
//! the file as it was. Preallocation allocates at once (in the open delta, with an Alloc log
//! record), so `st_blocks` counts preallocated blocks from the call on, as on ext4.

use crate::format::extent::ExtentFlags;
use crate::format::inode::{Inode, S_IFREG};
use crate::state::State;
use crate::{Errno, Result, data, inode};

use super::posix::{FILE_SIZE_MAX, now};

/// fallocate mode bits (linux/falloc.h).
pub const FALLOC_FL_KEEP_SIZE: u32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: u32 = 0x02;
pub const FALLOC_FL_COLLAPSE_RANGE: u32 = 0x08;
pub const FALLOC_FL_ZERO_RANGE: u32 = 0x10;
pub const FALLOC_FL_INSERT_RANGE: u32 = 0x20;

/// Where `lseek` looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekWhence {
    /// SEEK_DATA: the first byte at or after the offset that is data.
    Data,
    /// SEEK_HOLE: the first byte at or after the offset in a hole (the end of file counts).
    Hole,
}

/// Tree and log blocks reserved per this many blocks a call changes (as a write reserves).
const META_PER: u64 = 16;

/// The operation a mode asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Allocate { keep_size: bool },
    Punch,
    Zero { keep_size: bool },
    Collapse,
    Insert,
}

/// The operation of `mode`, refused as the VFS refuses it (EOPNOTSUPP) before ext4 runs.
fn op_of(mode: u32) -> Result<Op> {
    let keep_size = mode & FALLOC_FL_KEEP_SIZE != 0;
    Ok(match mode & !FALLOC_FL_KEEP_SIZE {
        0 => Op::Allocate { keep_size },
        FALLOC_FL_PUNCH_HOLE if keep_size => Op::Punch,
        FALLOC_FL_ZERO_RANGE => Op::Zero { keep_size },
        FALLOC_FL_COLLAPSE_RANGE if !keep_size => Op::Collapse,
        FALLOC_FL_INSERT_RANGE if !keep_size => Op::Insert,
        _ => return Err(Errno::NotSupported.into()),
    })
}

pub(super) fn fallocate(st: &mut State, ino: u64, offset: u64, len: u64, mode: u32) -> Result<()> {
    let op = op_of(mode)?;
    // Offsets arrive as the kernel's signed loff_t: "negative" is past i64::MAX here.
    if len == 0 || offset > i64::MAX as u64 || len > i64::MAX as u64 {
        return Err(Errno::Invalid.into());
    }
    let end = offset + len;
    if end > FILE_SIZE_MAX {
        return Err(Errno::FileTooBig.into());
    }
    let mut i = inode::get(st, ino)?;
    if i.is_dir() {
        return Err(Errno::IsDir.into());
    }
    if i.file_type() != S_IFREG {
        return Err(Errno::NoDevice.into());
    }
    super::flags::check_fallocate(&i, mode)?;
    let t = now();
    match op {
        Op::Allocate { keep_size } => {
            allocate(st, ino, &mut i, offset, end)?;
            if !keep_size && end > i.size {
                i.size = end;
                i.mtime = t;
            }
        }
        Op::Punch => {
            // ext4: nothing past the end of file; the hole stops at the end of its last block.
            if offset >= i.size {
                return Ok(());
            }
            let bs = u64::from(st.bs());
            let stop = end.min(i.size.div_ceil(bs) * bs);
            zero_out(st, ino, &mut i, offset, stop)?;
            i.mtime = t;
        }
        Op::Zero { keep_size } => {
            zero_range(st, ino, &mut i, offset, end)?;
            if !keep_size && end > i.size {
                i.size = end;
            }
            i.mtime = t;
        }
        Op::Collapse => {
            collapse(st, ino, &mut i, offset, len)?;
            i.mtime = t;
        }
        Op::Insert => {
            insert(st, ino, &mut i, offset, len)?;
            i.mtime = t;
        }
    }
    i.ctime = t;
    inode::put(st, ino, &i)
}

/// Reserves `now` blocks that the call allocates at once (the caller unreserves them as it
/// allocates) and `kept` blocks that the commit allocates (released by it); ENOSPC before
/// anything changes.
fn reserve(st: &mut State, now: u64, kept: u64) -> Result<()> {
    st.alloc.reserve(now + kept)?;
    st.delta_reserved += kept;
    Ok(())
}

/// Tree and log blocks to keep for a call that changes `changed` blocks' mapping.
fn meta(changed: u64) -> u64 {
    changed.div_ceil(META_PER) + 1
}

/// Preallocates unwritten blocks over the holes of bytes `[offset, end)`.
fn allocate(st: &mut State, ino: u64, i: &mut Inode, offset: u64, end: u64) -> Result<()> {
    let bs = u64::from(st.bs());
    let (from, to) = (offset / bs, end.div_ceil(bs));
    let need = hole_blocks(st, ino, from, to)?;
    reserve(st, need, meta(need))?;
    let added = data::preallocate(st, ino, from, to)?;
    st.alloc.unreserve(need);
    i.blocks += added;
    Ok(())
}

/// Blocks of `[from, to)` that no extent backs.
fn hole_blocks(st: &mut State, ino: u64, from: u64, to: u64) -> Result<u64> {
    data::count_blocks(st, ino, from, to, |ext| ext.is_none())
}

/// Blocks of `[from, to)` that an unwritten extent backs.
fn unwritten_blocks(st: &mut State, ino: u64, from: u64, to: u64) -> Result<u64> {
    data::count_blocks(st, ino, from, to, |ext| {
        ext.is_some_and(|e| e.flags.contains(ExtentFlags::UNWRITTEN))
    })
}

/// The blocks of bytes `[start, end)` that the range covers only in part: (block, first
/// byte, end byte), at most two.
fn partial_blocks(bs: u64, start: u64, end: u64) -> Vec<(u64, u64, u64)> {
    let mut partial: Vec<(u64, u64, u64)> = Vec::new();
    for b in [start / bs, end / bs] {
        let (a, z) = ((b * bs).max(start), ((b + 1) * bs).min(end));
        if a < z && z - a < bs && partial.iter().all(|&(p, _, _)| p != b) {
            partial.push((b, a, z));
        }
    }
    partial
}

/// Whether file block `b` holds data (a dirty or in-flight page, or a written extent), and
/// the block where that answer may change.
pub(super) fn classify(st: &State, ino: u64, b: u64) -> Result<(bool, u64)> {
    if st.pages.contains_key(&(ino, b)) || st.inflight.contains_key(&(ino, b)) {
        return Ok((true, b + 1));
    }
    let (end, ext) = data::extent_or_hole(st, ino, b)?;
    if ext.is_some_and(|(_, e)| !e.flags.contains(ExtentFlags::UNWRITTEN)) {
        return Ok((true, end));
    }
    // A hole or an unwritten extent: not data up to the next page the frontend holds.
    let next_page = |m: &std::collections::BTreeMap<(u64, u64), _>| {
        m.range((ino, b)..(ino, end)).next().map(|(k, _)| k.1)
    };
    let dirty = next_page(&st.pages).unwrap_or(end);
    let flying = st
        .inflight
        .range((ino, b)..(ino, end))
        .next()
        .map_or(end, |(k, _)| k.1);
    Ok((false, end.min(dirty).min(flying)))
}

/// Makes bytes `[start, end)` of `ino` read as zeros and frees the whole blocks among them
/// (punch hole; copy_file_range of a hole). Partial blocks that hold data get zeros written.
pub(super) fn zero_out(
    st: &mut State,
    ino: u64,
    i: &mut Inode,
    start: u64,
    end: u64,
) -> Result<()> {
    if start >= end {
        return Ok(());
    }
    let bs = u64::from(st.bs());
    let (full_from, full_to) = (start.div_ceil(bs), end / bs);
    let partial = partial_blocks(bs, start, end);
    let mut writes = Vec::new();
    for (b, a, z) in partial {
        if classify(st, ino, b)?.0 {
            writes.push((b, a, z));
        }
    }
    let fresh = writes
        .iter()
        .filter(|(b, _, _)| !st.pages.contains_key(&(ino, *b)))
        .count() as u64;
    // Only blocks the file has can change mapping: a huge punch over holes reserves little.
    let mapped = full_to
        .saturating_sub(full_from)
        .min(i.blocks + st.delalloc_blocks(ino));
    reserve(st, 0, fresh + meta(mapped + 2))?;
    for (_, a, z) in writes {
        data::write(st, ino, a, &vec![0u8; (z - a) as usize])?;
    }
    if full_from < full_to {
        let freed = data::punch(st, ino, full_from, full_to)?;
        i.blocks = i.blocks.saturating_sub(freed);
    }
    Ok(())
}

/// ZERO_RANGE: bytes `[start, end)` read as zeros and stay allocated: whole blocks become
/// unwritten (newly allocated ones where they were not unwritten already), partial blocks
/// that hold data get zeros written, partial blocks in a hole are preallocated.
fn zero_range(st: &mut State, ino: u64, i: &mut Inode, start: u64, end: u64) -> Result<()> {
    let bs = u64::from(st.bs());
    let (full_from, full_to) = (start.div_ceil(bs), end / bs);
    let partial = partial_blocks(bs, start, end);
    // Plan and reserve before changing anything.
    let full = full_to.saturating_sub(full_from);
    let mut need = full - unwritten_blocks(st, ino, full_from, full_to.max(full_from))?;
    let mut fresh = 0;
    let mut writes = Vec::new();
    let mut holes = Vec::new();
    for &(b, a, z) in &partial {
        if classify(st, ino, b)?.0 {
            if !st.pages.contains_key(&(ino, b)) {
                fresh += 1;
            }
            writes.push((b, a, z));
        } else if data::extent_or_hole(st, ino, b)?.1.is_none() {
            need += 1;
            holes.push(b);
        }
    }
    let mapped = full.min(i.blocks + st.delalloc_blocks(ino));
    reserve(st, need, fresh + meta(need + mapped + 2))?;
    // Whole blocks: unwritten ones lose their dirty pages; the rest are freed (once durable)
    // and preallocated anew, so no block that held data becomes unwritten (prealloc.rs).
    let mut allocated = 0;
    let mut at = full_from;
    while at < full_to {
        let (to, ext) = data::extent_or_hole(st, ino, at)?;
        let to = to.min(full_to);
        if ext.is_some_and(|(_, e)| e.flags.contains(ExtentFlags::UNWRITTEN)) {
            data::discard_pages(st, ino, at, to);
        } else {
            let freed = data::punch(st, ino, at, to)?;
            i.blocks = i.blocks.saturating_sub(freed);
            allocated += data::preallocate(st, ino, at, to)?;
        }
        at = to;
    }
    for b in holes {
        allocated += data::preallocate(st, ino, b, b + 1)?;
    }
    i.blocks += allocated;
    st.alloc.unreserve(need);
    for (_, a, z) in writes {
        data::write(st, ino, a, &vec![0u8; (z - a) as usize])?;
    }
    Ok(())
}

/// COLLAPSE_RANGE: removes bytes `[offset, offset + len)` and moves the rest of the file
/// down over them.
fn collapse(st: &mut State, ino: u64, i: &mut Inode, offset: u64, len: u64) -> Result<()> {
    let bs = u64::from(st.bs());
    if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
        return Err(Errno::Invalid.into());
    }
    if offset + len >= i.size {
        return Err(Errno::Invalid.into());
    }
    let (from, by) = (offset / bs, len / bs);
    let moved = (i.size.div_ceil(bs) - from).min(i.blocks + st.delalloc_blocks(ino));
    reserve(st, 0, meta(moved))?;
    let freed = data::punch(st, ino, from, from + by)?;
    i.blocks = i.blocks.saturating_sub(freed);
    data::shift_blocks(st, ino, from + by, by, false)?;
    i.size -= len;
    Ok(())
}

/// INSERT_RANGE: moves bytes from `offset` on up by `len`, leaving a hole.
fn insert(st: &mut State, ino: u64, i: &mut Inode, offset: u64, len: u64) -> Result<()> {
    let bs = u64::from(st.bs());
    if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
        return Err(Errno::Invalid.into());
    }
    if len > FILE_SIZE_MAX - i.size.min(FILE_SIZE_MAX) {
        return Err(Errno::FileTooBig.into());
    }
    if offset >= i.size {
        return Err(Errno::Invalid.into());
    }
    let (from, by) = (offset / bs, len / bs);
    let moved = (i.size.div_ceil(bs) - from).min(i.blocks + st.delalloc_blocks(ino));
    reserve(st, 0, meta(moved + 2))?;
    data::split_at(st, ino, from)?;
    data::shift_blocks(st, ino, from, by, true)?;
    i.size += len;
    Ok(())
}

/// SEEK_DATA / SEEK_HOLE from `offset`. Dirty and in-flight pages are data; unwritten
/// extents without them are holes (as ext4 answers). ENXIO at or past the end of file, and
/// for SEEK_DATA when only holes follow.
pub(super) fn seek(st: &State, ino: u64, offset: i64, whence: SeekWhence) -> Result<u64> {
    let i = inode::get(st, ino)?;
    if i.is_dir() {
        return Err(Errno::IsDir.into());
    }
    let Ok(offset) = u64::try_from(offset) else {
        return Err(Errno::NoSuchAddress.into());
    };
    if offset >= i.size {
        return Err(Errno::NoSuchAddress.into());
    }
    let bs = u64::from(st.bs());
    let last = i.size.div_ceil(bs);
    let want_data = whence == SeekWhence::Data;
    let mut b = offset / bs;
    while b < last {
        let (is_data, until) = classify(st, ino, b)?;
        if is_data == want_data {
            return Ok((b * bs).max(offset).min(i.size));
        }
        b = until.max(b + 1);
    }
    match whence {
        SeekWhence::Data => Err(Errno::NoSuchAddress.into()),
        SeekWhence::Hole => Ok(i.size),
    }
}
